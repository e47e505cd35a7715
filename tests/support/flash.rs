//! Shared fixtures for the flash tests: a small signed GPT image in the build's
//! artifact layout, and tool checks.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use meetbox::artifact::files::BuildFiles;
use meetbox::artifact::manifest::{Disk, Partition};
use meetbox::flash::FlashArgs;
use meetbox::publish::{publish, Description, Framing};
use meetbox::sign::keys::{load_signing_key, write_key_pair};

pub const MIB: u64 = 1 << 20;
/// Size of the test image.
pub const IMAGE_SIZE: u64 = 64 * MIB;

/// Whether `tool` runs here; under CI a missing tool fails the test (the one gate).
pub use meetbox::host::test_tools::tool_available as have_tool;

/// A signed build in a temporary directory.
pub struct Build {
    pub dir: tempfile::TempDir,
    pub raw: PathBuf,
    pub zst: PathBuf,
    pub pubkey: PathBuf,
}

impl Build {
    pub fn args(&self, target: &Path) -> FlashArgs {
        FlashArgs {
            image: Some(self.zst.clone()),
            device: Some(target.to_path_buf()),
            pubkey: Some(self.pubkey.clone()),
            yes: true,
            list: false,
        }
    }

    pub fn raw_bytes(&self) -> Vec<u8> {
        std::fs::read(&self.raw).unwrap()
    }
}

fn run(command: &mut Command) {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Content that differs at every offset, so misplaced blocks are caught.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect()
}

/// How the fixture's image is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Independent frames and a seek table, as `meetbox build` writes (with 4 MiB
    /// frames, so the 64 MiB image has frames without data and ranges across frames).
    Frames,
    /// One zstd frame, as images built before the frames.
    SingleFrame,
}

/// Raw bytes per frame of the fixture.
pub const FRAME_SIZE: u64 = 4 * MIB;

/// [`signed_build_as`] in the format `meetbox build` writes.
pub fn signed_build() -> Option<Build> {
    signed_build_as(Format::Frames)
}

/// Builds a 64 MiB sparse GPT image (ESP + root) with data scattered in both
/// partitions, then compresses, maps, describes and signs it as `meetbox build`
/// does. None (test skipped) when sgdisk is missing.
pub fn signed_build_as(format: Format) -> Option<Build> {
    if !have_tool("sgdisk", "gdisk") {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let files = BuildFiles::new(dir.path(), NAME);
    let raw = dir.path().join(format!("{NAME}.img"));
    File::create(&raw).unwrap().set_len(IMAGE_SIZE).unwrap();
    run(Command::new("sgdisk")
        .args([
            "-n",
            "1:2048:+16M",
            "-t",
            "1:ef00",
            "-n",
            "2:0:0",
            "-t",
            "2:8300",
        ])
        .arg(&raw));
    let file = File::options().write(true).open(&raw).unwrap();
    for (seed, offset, len) in [
        (1, MIB, 4096),
        (2, 2 * MIB, 3 * MIB),
        (3, 20 * MIB + 4096, 8192),
        (4, 30 * MIB, 9 * MIB + 12288),
        (5, 62 * MIB, 512 * 1024),
    ] {
        file.write_all_at(&pattern(seed, len as usize), offset)
            .unwrap();
    }
    file.sync_all().unwrap();
    drop(file);

    let secret = dir.path().join("test.key");
    write_key_pair(&secret, None, false).unwrap();
    let key = load_signing_key(&secret, None).unwrap();
    let framing = match format {
        Format::Frames => Framing::Frames {
            size: FRAME_SIZE,
            cache: None,
        },
        Format::SingleFrame => Framing::Single,
    };
    publish(&raw, dir.path(), description(&raw), &key, 3, framing).unwrap();
    Some(Build {
        raw,
        zst: files.image_zst(),
        pubkey: key.public_key_path.clone(),
        dir,
    })
}

/// Build name of the fixture.
pub const NAME: &str = "meetbox-test";

/// What the manifest says about the fixture image, with its partitions as the crate reads them.
fn description(raw: &Path) -> Description {
    let disk = gpt::GptConfig::new().open(raw).unwrap();
    let partitions = disk
        .partitions()
        .iter()
        .map(|(&number, p)| Partition {
            number,
            name: p.name.clone(),
            type_guid: uuid::Uuid::parse_str(&p.part_type_guid.guid.to_string()).unwrap(),
            partition_guid: uuid::Uuid::from_bytes(*p.part_guid.as_bytes()),
            first_lba: p.first_lba,
            last_lba: p.last_lba,
            size_bytes: (p.last_lba - p.first_lba + 1) * 512,
            filesystem: if number == 1 { "vfat" } else { "ext4" }.into(),
            filesystem_uuid: String::new(),
        })
        .collect();
    Description {
        name: NAME.into(),
        base: "debian-12".into(),
        profile: serde_json::json!({ "name": "flash-test" }),
        packages: Vec::new(),
        disk: Disk {
            size_bytes: IMAGE_SIZE,
            disk_guid: uuid::Uuid::from_bytes(*disk.guid().as_bytes()),
            sector_size: 512,
            partitions,
        },
        source_date_epoch: 1_700_000_000,
        updates: Default::default(),
    }
}

/// A loop device over a sparse file of `size` bytes, detached on drop.
pub struct LoopDevice {
    pub path: PathBuf,
    _backing: tempfile::NamedTempFile,
}

impl LoopDevice {
    /// None (test skipped, with the reason printed) when loop devices are unavailable.
    pub fn new(size: u64, extra_args: &[&str]) -> Option<LoopDevice> {
        if !have_tool("losetup", "mount") {
            return None;
        }
        let backing = tempfile::NamedTempFile::new().unwrap();
        backing.as_file().set_len(size).unwrap();
        let output = Command::new("losetup")
            .args(["--find", "--show"])
            .args(extra_args)
            .arg(backing.path())
            .output()
            .unwrap();
        if !output.status.success() {
            // Loop devices need root and a kernel that allows them; CI runs as root.
            eprintln!(
                "skipped: cannot attach a loop device here: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
            return None;
        }
        let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        Some(LoopDevice {
            path,
            _backing: backing,
        })
    }

    pub fn read(&self, len: u64) -> Vec<u8> {
        let mut buf = vec![0u8; len as usize];
        File::open(&self.path)
            .unwrap()
            .read_exact_at(&mut buf, 0)
            .unwrap();
        buf
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.path).status();
    }
}

/// Asserts that the target's first MiB is zero: a failed or interrupted flash leaves no
/// partition table, so the disk does not boot half an image.
pub fn assert_no_partition_table(target: &Path, why: &str) {
    let mut head = vec![0u8; MIB as usize];
    File::open(target)
        .unwrap()
        .read_exact_at(&mut head, 0)
        .unwrap();
    assert!(head.iter().all(|&b| b == 0), "{why}");
}
