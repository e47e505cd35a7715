//! `meetbox flash` end to end: files, larger files, loop devices, refusals.

mod support;

use std::fs::File;
use std::process::Command;
use std::sync::atomic::AtomicBool;

use meetbox::artifact::blockmap::BlockMap;
use meetbox::artifact::seek_table::SeekTable;
use meetbox::flash::{device, run, writer, FlashArgs};
use meetbox::verify::{check_signatures, VerifiedBuild};
use support::flash::{
    assert_no_partition_table, have_tool, pattern, signed_build, signed_build_as, Format,
    LoopDevice, FRAME_SIZE, IMAGE_SIZE, MIB,
};

fn error_of(args: &FlashArgs) -> String {
    format!("{:#}", run(args).expect_err("flash must be refused"))
}

#[test]
fn flashes_to_a_new_file() {
    let Some(build) = signed_build() else { return };
    let target = build.dir.path().join("out.raw");
    run(&build.args(&target)).unwrap();
    assert!(std::fs::read(&target).unwrap() == build.raw_bytes());
}

#[test]
fn flashes_an_image_of_one_zstd_frame() {
    // Images built before the frames have no seek table: one stream, one thread.
    let Some(build) = signed_build_as(Format::SingleFrame) else {
        return;
    };
    let len = std::fs::metadata(&build.zst).unwrap().len();
    let file = File::open(&build.zst).unwrap();
    assert_eq!(SeekTable::read(&file, len).unwrap(), None);
    let target = build.dir.path().join("out.raw");
    run(&build.args(&target)).unwrap();
    assert!(std::fs::read(&target).unwrap() == build.raw_bytes());
}

/// Checks the signatures of the build's image, then flips a byte in the middle of
/// frame `index` (as if the file changed after the check) and flashes it.
fn flash_with_damaged_frame(index: usize) -> (support::flash::Build, std::path::PathBuf, String) {
    let build = signed_build().expect("sgdisk is checked by the caller");
    let verified = check_signatures(&build.zst, Some(&build.pubkey)).unwrap();
    let mut bytes = std::fs::read(&build.zst).unwrap();
    let file = File::open(&build.zst).unwrap();
    let table = SeekTable::read(&file, bytes.len() as u64).unwrap().unwrap();
    assert_eq!(table.frames.len() as u64, IMAGE_SIZE / FRAME_SIZE);
    let frame = table.frames[index];
    bytes[(frame.compressed_offset + frame.compressed_size / 2) as usize] ^= 0x55;
    std::fs::write(&build.zst, bytes).unwrap();

    let (path, outcome) = write_over_old_disk(&build, &verified, false);
    (build, path, outcome.err().unwrap_or_default())
}

/// Writes the checked build over a copy of its own raw image (an old disk with a
/// partition table), through the pipeline that follows the signature check;
/// `stop_at_once` is Ctrl-C before the first buffer. The target and the error.
fn write_over_old_disk(
    build: &support::flash::Build,
    verified: &VerifiedBuild,
    stop_at_once: bool,
) -> (std::path::PathBuf, Result<(), String>) {
    let path = build.dir.path().join("target.raw");
    std::fs::copy(&build.raw, &path).unwrap();
    let map = &verified.block_map;
    let target = writer::TargetFile::open_file(&path, map.image_size).unwrap();
    let stop = AtomicBool::new(stop_at_once);
    let job = writer::FlashJob {
        input: writer::Input::Compressed {
            image_zst: &build.zst,
            frames: verified.frames.as_ref(),
        },
        map,
        stop: &stop,
        corrupt_after_write: None,
    };
    let outcome = writer::write_image(&job, &target)
        .map(drop)
        .map_err(|err| format!("{err:#}"));
    (path, outcome)
}

#[test]
fn frames_without_mapped_data_are_not_read() {
    if !have_tool("sgdisk", "gdisk") {
        return;
    }
    // Frame 12 (48-52 MiB) holds no data in the fixture: damage there goes unseen.
    let (build, target, err) = flash_with_damaged_frame(12);
    assert_eq!(err, "");
    assert!(std::fs::read(&target).unwrap() == build.raw_bytes());
}

#[test]
fn a_damaged_frame_stops_the_flash_and_leaves_no_partition_table() {
    if !have_tool("sgdisk", "gdisk") {
        return;
    }
    // Frame 8 (32-36 MiB) is all data.
    let (_build, target, err) = flash_with_damaged_frame(8);
    assert!(
        err.contains("changed after its signature was checked"),
        "{err}"
    );
    assert!(err.contains("corrupt"), "{err}");
    assert!(err.contains("will not boot"), "{err}");
    assert_no_partition_table(&target, "the old partition table survived");
}

#[test]
fn flashes_over_old_content_and_moves_the_backup_gpt() {
    let Some(build) = signed_build() else { return };
    let target = build.dir.path().join("big.raw");
    let target_size = IMAGE_SIZE + 40 * MIB;
    // Old content everywhere, including an old "backup GPT" area at the end.
    std::fs::write(&target, pattern(9, target_size as usize)).unwrap();
    run(&build.args(&target)).unwrap();

    // Every mapped range holds the image's bytes.
    let map = BlockMap::read(&build.dir.path().join("meetbox-test.img.bmap")).unwrap();
    let written = std::fs::read(&target).unwrap();
    let raw = build.raw_bytes();
    assert_eq!(written.len() as u64, target_size);
    for range in &map.ranges {
        let (start, end) = map.byte_span(range);
        // The partition table in the first MiB was rewritten for the larger disk,
        // and the image's old backup header (its last sector) was cleared.
        let start = start.max(MIB) as usize;
        let end = end.min(IMAGE_SIZE - 512) as usize;
        assert!(
            start >= end || written[start..end] == raw[start..end],
            "range {range:?} differs"
        );
    }
    let old_backup = &written[(IMAGE_SIZE - 512) as usize..IMAGE_SIZE as usize];
    assert!(
        old_backup.iter().all(|&b| b == 0),
        "stale backup GPT header left"
    );

    let verify = Command::new("sgdisk")
        .arg("-v")
        .arg(&target)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&verify.stdout);
    assert!(verify.status.success(), "{report}");
    assert!(report.contains("No problems found"), "{report}");

    let disk = gpt::GptConfig::new().open(&target).unwrap();
    let last_lba = target_size / 512 - 1;
    assert_eq!(disk.primary_header().unwrap().backup_lba, last_lba);
    assert_eq!(disk.backup_header().unwrap().current_lba, last_lba);
    assert_eq!(disk.partitions().len(), 2);
}

#[test]
fn corrupted_image_is_refused_before_any_write() {
    let Some(build) = signed_build() else { return };
    let mut bytes = std::fs::read(&build.zst).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x40;
    std::fs::write(&build.zst, bytes).unwrap();
    let target = build.dir.path().join("untouched.raw");
    let before = pattern(7, 4 * MIB as usize);
    std::fs::write(&target, &before).unwrap();
    let err = error_of(&build.args(&target));
    assert!(err.to_lowercase().contains("signature"), "{err}");
    assert!(
        std::fs::read(&target).unwrap() == before,
        "target was written"
    );
}

#[test]
fn corrupted_signature_is_refused_before_any_write() {
    let Some(build) = signed_build() else { return };
    let signature = build.dir.path().join("meetbox-test.img.zst.minisig");
    let text = std::fs::read_to_string(&signature).unwrap();
    let mut lines: Vec<String> = text.lines().map(String::from).collect();
    // Line 2 is the base64 signature: change one character.
    let sig = &mut lines[1];
    let flipped = if sig.as_bytes()[20] == b'A' { "B" } else { "A" };
    sig.replace_range(20..21, flipped);
    std::fs::write(&signature, lines.join("\n") + "\n").unwrap();
    let target = build.dir.path().join("never.raw");
    let err = error_of(&build.args(&target));
    assert!(err.to_lowercase().contains("signature"), "{err}");
    assert!(
        std::fs::metadata(&target).is_err(),
        "target was created before the signature check"
    );
}

#[test]
fn tampered_block_map_is_refused_before_any_write() {
    let Some(build) = signed_build() else { return };
    let bmap = build.dir.path().join("meetbox-test.img.bmap");
    let map = BlockMap::read(&bmap).unwrap();
    let mut other = map.clone();
    other.ranges.pop();
    other.write(&bmap).unwrap();
    let target = build.dir.path().join("never.raw");
    assert!(run(&build.args(&target)).is_err());
    assert!(std::fs::metadata(&target).is_err());
}

#[test]
fn interrupted_flash_leaves_no_partition_table() {
    let Some(build) = signed_build() else { return };
    let verified = check_signatures(&build.zst, Some(&build.pubkey)).unwrap();
    // As if Ctrl-C came at once.
    let (path, outcome) = write_over_old_disk(&build, &verified, true);
    let err = outcome.unwrap_err();
    assert!(err.contains("will not boot"), "{err}");
    assert_no_partition_table(&path, "the old partition table survived");
}

#[test]
fn flashes_to_a_loop_device_and_lists_it() {
    let Some(build) = signed_build() else { return };
    let Some(disk) = LoopDevice::new(IMAGE_SIZE + 8 * MIB, &[]) else {
        return;
    };
    run(&build.args(&disk.path)).unwrap();
    let written = disk.read(IMAGE_SIZE);
    let raw = build.raw_bytes();
    // Beyond the first MiB (rewritten for the larger disk) the image is unchanged.
    assert!(
        written[MIB as usize..IMAGE_SIZE as usize - MIB as usize]
            == raw[MIB as usize..IMAGE_SIZE as usize - MIB as usize]
    );
    let verify = Command::new("sgdisk")
        .arg("-v")
        .arg(&disk.path)
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&verify.stdout).contains("No problems found"),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );

    let name = disk
        .path
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let listed = device::list_disks().unwrap();
    let facts = listed
        .iter()
        .find(|d| d.name == name)
        .expect("loop device listed");
    assert_eq!(facts.transport, "loop");
    assert_eq!(facts.size_bytes, IMAGE_SIZE + 8 * MIB);
    assert!(device::refusals(facts, Some(IMAGE_SIZE)).is_empty());
}

#[test]
fn refuses_a_read_only_loop_device() {
    let Some(build) = signed_build() else { return };
    let Some(disk) = LoopDevice::new(IMAGE_SIZE, &["--read-only"]) else {
        return;
    };
    let err = error_of(&build.args(&disk.path));
    assert!(err.contains("read-only"), "{err}");
}

#[test]
fn refuses_a_loop_device_smaller_than_the_image() {
    let Some(build) = signed_build() else { return };
    let Some(disk) = LoopDevice::new(IMAGE_SIZE - MIB, &[]) else {
        return;
    };
    let err = error_of(&build.args(&disk.path));
    assert!(err.contains("too small"), "{err}");
}

#[test]
fn refuses_a_mounted_loop_device_and_its_partition() {
    let Some(build) = signed_build() else { return };
    if !have_tool("mkfs.ext4", "e2fsprogs") {
        return;
    }
    let Some(disk) = LoopDevice::new(IMAGE_SIZE, &["--partscan"]) else {
        return;
    };
    let sgdisk = Command::new("sgdisk")
        .args(["-n", "1:2048:0"])
        .arg(&disk.path)
        .output()
        .unwrap();
    assert!(sgdisk.status.success());
    let _ = Command::new("partx").arg("-u").arg(&disk.path).status();
    let partition = format!("{}p1", disk.path.display());
    for _ in 0..50 {
        if std::path::Path::new(&partition).exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(Command::new("mkfs.ext4")
        .args(["-q", &partition])
        .status()
        .unwrap()
        .success());
    let mount_point = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .arg(&partition)
        .arg(mount_point.path())
        .status()
        .unwrap();
    let cannot_mount = (!mounted.success()).then(|| "cannot mount a file system here".to_string());
    if !meetbox::host::test_tools::can_run("flash refuses a mounted target", cannot_mount) {
        return;
    }
    let err = error_of(&build.args(&disk.path));
    let partition_err = error_of(&build.args(std::path::Path::new(&partition)));
    let _ = Command::new("umount").arg(mount_point.path()).status();
    assert!(err.contains("is mounted at"), "{err}");
    assert!(
        partition_err.contains("it is a partition"),
        "{partition_err}"
    );
}

#[test]
fn refuses_a_loop_device_held_by_device_mapper() {
    let Some(build) = signed_build() else { return };
    if !have_tool("dmsetup", "dmsetup") {
        return;
    }
    let Some(disk) = LoopDevice::new(IMAGE_SIZE, &[]) else {
        return;
    };
    let name = format!("meetbox-test-{}", std::process::id());
    let table = format!("0 {} linear {} 0", IMAGE_SIZE / 512, disk.path.display());
    let created = Command::new("dmsetup")
        .args(["create", &name, "--table", &table])
        .status()
        .unwrap();
    if !created.success() {
        // A kernel capability, like loop devices: containers often lack it.
        eprintln!("skipped: the kernel's device-mapper is not available here");
        return;
    }
    let err = error_of(&build.args(&disk.path));
    let _ = Command::new("dmsetup").args(["remove", &name]).status();
    assert!(err.contains("in use by dm-"), "{err}");
}

#[test]
fn the_disk_of_the_running_system_is_refused() {
    let root_dev = std::fs::metadata("/").unwrap();
    let disks = device::list_disks().unwrap();
    let root_disks: Vec<_> = disks
        .iter()
        .filter(|d| {
            d.uses.iter().any(
                |u| matches!(u, device::DiskUse::Mount { mount_point, .. } if mount_point == "/"),
            )
        })
        .collect();
    if root_disks.is_empty() {
        use std::os::unix::fs::MetadataExt;
        eprintln!(
            "skipped: / (device {:#x}) is not on a block device here (container or network root)",
            root_dev.dev()
        );
        return;
    }
    for disk in root_disks {
        let reasons = device::refusals(disk, None);
        assert!(
            reasons
                .iter()
                .any(|r| r.to_string().contains("holds the running system")),
            "{reasons:?}"
        );
    }
}
