//! The root file system: ext4 made by `mke2fs -d` from an unpacked root tree, written
//! straight into the root partition of the image (`-E offset=`), so the image stays
//! sparse and no second copy of the file system is needed.
//!
//! Reproducible: the file system is the same bytes for the same tree content, however
//! often and whenever the tree was unpacked. mke2fs takes its clock from
//! `E2FSPROGS_FAKE_TIME`, its UUID and directory hash seed from the layout and its
//! defaults from a configuration written here (not the host's `/etc/mke2fs.conf`); the
//! inode change and access times it copies from the tree (which differ for every unpack)
//! are then set to SOURCE_DATE_EPOCH with debugfs.

use std::io::Write;
use std::ops::RangeInclusive;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::disk::layout::DiskLayout;
use crate::host::command::{self, CommandRunExt};
use crate::host::progress;

/// ext4 block size.
const BLOCK_SIZE: u64 = 4096;
/// Blocks reserved for root, in percent: enough for root's daemons (journald) to keep
/// writing when services fill the disk, small enough not to waste a grown disk.
const RESERVED_PERCENT: u32 = 2;
/// File system label.
const LABEL: &str = "root";

/// mke2fs defaults, fixed here so the host's configuration cannot change the result.
///
/// The ext4 feature set is the one Debian 12 and Ubuntu 24.04 use: GRUB 2.06 refuses
/// file systems with the incompatible `metadata_csum_seed` feature (its ext2 driver
/// ignores it only from 2.12 on), and `orphan_file` needs e2fsprogs 1.47 to check, so
/// both newer upstream defaults stay off. Everything listed works with GRUB 2.06/2.12
/// (which ignores the read-only-compatible `metadata_csum`) and Linux 6.1/6.8.
const MKE2FS_CONF: &str = "\
[defaults]
\tbase_features = sparse_super,large_file,filetype,resize_inode,dir_index,ext_attr
\tdefault_mntopts = acl,user_xattr
\tenable_periodic_fsck = 0
\tblocksize = 4096
\tinode_size = 256
\tinode_ratio = 16384

[fs_types]
\text4 = {
\t\tfeatures = has_journal,extent,huge_file,flex_bg,metadata_csum,64bit,dir_nlink,extra_isize
\t}
\tsmall = {
\t\tinode_ratio = 4096
\t}
\tfloppy = {
\t\tinode_ratio = 8192
\t}
\tbig = {
\t\tinode_ratio = 32768
\t}
\thuge = {
\t\tinode_ratio = 65536
\t}
";

/// Environment variables that change what mke2fs writes; cleared for reproducibility.
const MKE2FS_ENV_OVERRIDES: &[&str] = &[
    "MKE2FS_SYNC",
    "MKE2FS_FIRST_META_BG",
    "MKE2FS_DEVICE_SECTSIZE",
    "MKE2FS_DEVICE_PHYS_SECTSIZE",
    "E2FSPROGS_LIBMAGIC_SUPPRESS",
];

/// Makes the ext4 root file system from `tree` inside the root partition of the image
/// at `image` (created and partitioned beforehand), with every timestamp mke2fs would
/// take from the clock or the unpacked tree's ctimes set to `source_date_epoch`.
pub fn make_root_fs(
    tree: &Path,
    image: &Path,
    layout: &DiskLayout,
    source_date_epoch: u64,
) -> Result<()> {
    if !tree.is_dir() {
        bail!(
            "root tree {} is not a directory; unpack the root file system first",
            tree.display()
        );
    }
    let image_len = std::fs::metadata(image)
        .with_context(|| format!("cannot read image file {}", image.display()))?
        .len();
    if image_len != layout.image_size_bytes {
        bail!(
            "image file {} is {image_len} bytes but the layout plans {}; create it from the same layout",
            image.display(),
            layout.image_size_bytes
        );
    }

    let mut conf = tempfile::NamedTempFile::new().context("cannot create a mke2fs.conf")?;
    conf.write_all(MKE2FS_CONF.as_bytes())
        .context("cannot write the mke2fs.conf")?;

    progress::detail(format!(
        "mke2fs: {} of ext4 from {}",
        progress::human_bytes(layout.root.len_bytes()),
        tree.display()
    ));
    let mut mke2fs = e2fs_command("mke2fs", source_date_epoch);
    mke2fs
        .env("MKE2FS_CONFIG", conf.path())
        .args(mke2fs_args(layout))
        .arg("-d")
        .arg(tree)
        .arg(image)
        .arg((layout.root.len_bytes() / BLOCK_SIZE).to_string());
    for variable in MKE2FS_ENV_OVERRIDES {
        mke2fs.env_remove(variable);
    }
    let output = mke2fs.run_unchecked()?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        if stderr.contains("Could not allocate block") || stderr.contains("No space left") {
            bail!(
                "the root tree does not fit in the {} root partition; raise the image size\n{}",
                progress::human_bytes(layout.root.len_bytes()),
                stderr.trim()
            );
        }
        bail!("mke2fs failed ({}):\n{}", output.status, stderr.trim());
    }

    // The file system inside the image, as e2fsprogs' unix I/O manager addresses it.
    let device = format!("{}?offset={}", image.display(), layout.root.offset_bytes());
    let output = e2fs_command("dumpe2fs", source_date_epoch)
        .arg(&device)
        .run_captured()?;
    let used = used_inodes(&String::from_utf8_lossy(&output.stdout))?;
    let script = inode_time_script(&used, source_date_epoch);
    run_debugfs(&device, &script, source_date_epoch)
}

/// Runs `script` through `debugfs -w` on `device`; any line it prints but its banner fails.
fn run_debugfs(device: &str, script: &str, source_date_epoch: u64) -> Result<()> {
    let mut debugfs_command = e2fs_command("debugfs", source_date_epoch);
    debugfs_command
        .args(["-w", "-f", "-"])
        .arg(device)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut debugfs = debugfs_command
        .spawn()
        .map_err(|err| command::not_started(&debugfs_command, err))?;
    debugfs
        .stdin
        .take()
        .context("debugfs has no stdin")?
        .write_all(script.as_bytes())
        .context("cannot send commands to debugfs")?;
    let output = debugfs
        .wait_with_output()
        .context("cannot wait for debugfs")?;
    // debugfs exits 0 even when a command fails; anything but its banner is an error.
    let stderr = String::from_utf8_lossy(&output.stderr);
    let problems: Vec<&str> = stderr
        .lines()
        .filter(|line| !line.starts_with("debugfs ") && !line.trim().is_empty())
        .collect();
    if !output.status.success() || !problems.is_empty() {
        bail!(
            "debugfs could not set inode times ({}):\n{}",
            output.status,
            problems.join("\n")
        );
    }
    Ok(())
}

/// mke2fs options for the layout's root partition (all but the tree, image and size).
fn mke2fs_args(layout: &DiskLayout) -> Vec<String> {
    let extended = [
        format!("offset={}", layout.root.offset_bytes()),
        format!("hash_seed={}", layout.root_hash_seed),
        // Leave inode tables to the kernel's lazy init: a flashed image's unwritten
        // (sparse) ranges may hold old data, and the kernel zeroes them on first mount.
        "lazy_itable_init=1".to_string(),
        "lazy_journal_init=0".to_string(),
        // Discarding a fresh sparse file is pointless and host-dependent.
        "nodiscard".to_string(),
    ];
    vec![
        "-q".into(),
        // The image starts with a partition table; mke2fs would stop to ask.
        "-F".into(),
        "-t".into(),
        "ext4".into(),
        "-b".into(),
        BLOCK_SIZE.to_string(),
        "-m".into(),
        RESERVED_PERCENT.to_string(),
        "-L".into(),
        LABEL.into(),
        "-U".into(),
        layout.root_fs_uuid.to_string(),
        "-E".into(),
        extended.join(","),
    ]
}

/// In-use inode numbers, from dumpe2fs's per-group "Free inodes:" lists.
fn used_inodes(dumpe2fs: &str) -> Result<Vec<RangeInclusive<u32>>> {
    let inode_count: u32 = dumpe2fs
        .lines()
        .find_map(|line| line.strip_prefix("Inode count:"))
        .context("dumpe2fs printed no inode count")?
        .trim()
        .parse()
        .context("dumpe2fs printed an unreadable inode count")?;
    let mut free = Vec::new();
    for line in dumpe2fs.lines() {
        let Some(list) = line.trim_start().strip_prefix("Free inodes: ") else {
            continue;
        };
        for item in list
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
        {
            let (first, last) = item.split_once('-').unwrap_or((item, item));
            let parse = |text: &str| {
                text.trim().parse::<u32>().with_context(|| {
                    format!("dumpe2fs printed an unreadable free inode range {item:?}")
                })
            };
            free.push(parse(first)?..=parse(last)?);
        }
    }
    free.sort_by_key(|range| *range.start());
    let mut used = Vec::new();
    let mut next = 1u32;
    for range in free {
        if *range.start() > next {
            used.push(next..=range.start() - 1);
        }
        next = next.max(range.end() + 1);
    }
    if next <= inode_count {
        used.push(next..=inode_count);
    }
    Ok(used)
}

/// debugfs commands setting the change and access time of every used inode to `epoch`
/// (modification times stay as the packages shipped them; creation times already come
/// from `E2FSPROGS_FAKE_TIME`).
fn inode_time_script(used: &[RangeInclusive<u32>], epoch: u64) -> String {
    let mut script = String::new();
    for inode in used.iter().flat_map(|range| range.clone()) {
        for field in ["ctime", "atime"] {
            script.push_str(&format!("sif <{inode}> {field} @{epoch}\n"));
        }
    }
    script
}

/// An e2fsprogs command with the fixed clock and no locale surprises in its output.
fn e2fs_command(tool: &str, source_date_epoch: u64) -> Command {
    let mut command = Command::new(tool);
    command
        .env("E2FSPROGS_FAKE_TIME", source_date_epoch.to_string())
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    command
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disk::gpt::{create_sparse_image, write_partition_table};
    use std::os::unix::fs::MetadataExt;
    use std::path::PathBuf;

    const MIB: u64 = 1024 * 1024;
    const EPOCH: u64 = 1_700_000_000;

    #[test]
    fn used_inodes_are_the_complement_of_free_ranges() {
        let dumpe2fs = "Inode count:              40\n\
                        Group 0: (Blocks 0-99)\n  Free inodes: 14-16, 18\n\
                        Group 1: (Blocks 100-199)\n  Free inodes: \n\
                        Group 2: (Blocks 200-299)\n  Free inodes: 31-38\n";
        assert_eq!(
            used_inodes(dumpe2fs).unwrap(),
            vec![1..=13, 17..=17, 19..=30, 39..=40]
        );
        assert!(used_inodes("no count here").is_err());
    }

    #[test]
    fn script_sets_ctime_and_atime_of_each_used_inode() {
        let script = inode_time_script(&[2..=3], 42);
        assert_eq!(
            script,
            "sif <2> ctime @42\nsif <2> atime @42\nsif <3> ctime @42\nsif <3> atime @42\n"
        );
    }

    #[test]
    fn mke2fs_gets_layout_identifiers_and_offset() {
        let layout = DiskLayout::plan(512 * MIB, 64 * MIB, b"ext4").unwrap();
        let args = mke2fs_args(&layout).join(" ");
        assert!(
            args.contains(&format!("-U {}", layout.root_fs_uuid)),
            "{args}"
        );
        assert!(args.contains(&format!("offset={}", 65 * MIB)), "{args}");
        assert!(
            args.contains(&format!("hash_seed={}", layout.root_hash_seed)),
            "{args}"
        );
        assert!(!MKE2FS_CONF.contains("metadata_csum_seed"));
        assert!(!MKE2FS_CONF.contains("orphan_file"));
    }

    /// A small tree with the kinds of entries a root file system has, created in the
    /// given order so the two trees differ in creation order and times.
    fn make_tree(dir: &Path, reverse: bool) {
        let mut names: Vec<usize> = (0..40).collect();
        if reverse {
            names.reverse();
        }
        std::fs::create_dir_all(dir.join("etc/sub")).unwrap();
        std::fs::create_dir_all(dir.join("usr/bin")).unwrap();
        for n in names {
            let path = dir.join(format!("etc/sub/file{n:02}"));
            std::fs::write(&path, format!("content {n}\n").repeat(n * 50)).unwrap();
            let mtime =
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000 + n as u64);
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(mtime)
                .unwrap();
        }
        std::fs::write(dir.join("usr/bin/tool"), vec![0x7fu8; 70_000]).unwrap();
        std::fs::hard_link(dir.join("usr/bin/tool"), dir.join("usr/bin/tool-link")).unwrap();
        std::os::unix::fs::symlink("../etc/sub/file01", dir.join("usr/link")).unwrap();
        let fixed = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_600_000_000);
        std::fs::File::options()
            .write(true)
            .open(dir.join("usr/bin/tool"))
            .unwrap()
            .set_modified(fixed)
            .unwrap();
        // Unpacking a tarball restores every mtime, symlinks' too; do the same here.
        set_symlink_mtime(&dir.join("usr/link"), 1_600_000_000);
        // Directory mtimes depend on creation order; pin them like an unpacked tarball does.
        for sub in ["etc/sub", "etc", "usr/bin", "usr", ""] {
            std::fs::File::open(dir.join(sub))
                .unwrap()
                .set_modified(fixed)
                .unwrap();
        }
    }

    fn set_symlink_mtime(path: &Path, seconds: i64) {
        use std::os::unix::ffi::OsStrExt;
        let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
        let time = libc::timespec {
            tv_sec: seconds,
            tv_nsec: 0,
        };
        let times = [time, time];
        // SAFETY: a valid NUL-terminated path and two timespecs, as utimensat requires.
        let rc = unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c_path.as_ptr(),
                times.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        assert_eq!(rc, 0, "utimensat {}", path.display());
    }

    fn build(dir: &Path, name: &str, tree: &Path) -> (PathBuf, DiskLayout) {
        let layout = DiskLayout::plan(200 * MIB, 40 * MIB, b"ext4-test").unwrap();
        let path = dir.join(name);
        let image = create_sparse_image(&path, &layout).unwrap();
        write_partition_table(&image, &layout).unwrap();
        make_root_fs(tree, &path, &layout, EPOCH).unwrap();
        (path, layout)
    }

    fn e2fsprogs_available() -> bool {
        ["mke2fs", "debugfs", "dumpe2fs", "e2fsck"]
            .iter()
            .all(|tool| crate::host::test_tools::tool_available(tool, "e2fsprogs"))
    }

    #[test]
    fn same_content_unpacked_at_different_times_gives_identical_images() {
        if !e2fsprogs_available() {
            return;
        }
        let work = tempfile::tempdir().unwrap();
        let first = work.path().join("first");
        let second = work.path().join("second");
        make_tree(&first, false);
        let (a, layout) = build(work.path(), "a.img", &first);
        std::thread::sleep(std::time::Duration::from_millis(1100));
        make_tree(&second, true);
        let (b, _) = build(work.path(), "b.img", &second);

        let (a_bytes, b_bytes) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        let differing: Vec<usize> = (0..a_bytes.len())
            .filter(|&i| a_bytes[i] != b_bytes[i])
            .collect();
        assert!(
            differing.is_empty(),
            "{} bytes differ, first at image offsets {:?} (partition at {})",
            differing.len(),
            &differing[..differing.len().min(8)],
            layout.root.offset_bytes()
        );

        // Written into the partition only, and sparse.
        let start = layout.root.offset_bytes() as usize;
        assert!(a_bytes[34 * 512..start].iter().all(|&byte| byte == 0));
        let allocated = std::fs::metadata(&a).unwrap().blocks() * 512;
        assert!(
            allocated < 40 * MIB,
            "image not sparse: {allocated} bytes allocated"
        );
    }

    #[test]
    fn e2fsck_finds_the_file_system_clean_with_the_planned_identity() {
        if !e2fsprogs_available() {
            return;
        }
        let work = tempfile::tempdir().unwrap();
        let tree = work.path().join("tree");
        make_tree(&tree, false);
        let (path, layout) = build(work.path(), "disk.img", &tree);
        let device = format!("{}?offset={}", path.display(), layout.root.offset_bytes());

        let check = Command::new("e2fsck")
            .args(["-fn", &device])
            .output()
            .unwrap();
        assert!(
            check.status.success(),
            "e2fsck -fn: {}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );

        let header = Command::new("dumpe2fs")
            .args(["-h", &device])
            .output()
            .unwrap();
        let header = String::from_utf8_lossy(&header.stdout);
        assert!(
            header.contains(&format!(
                "Filesystem UUID:          {}",
                layout.root_fs_uuid
            )),
            "{header}"
        );
        assert!(
            header.contains("Filesystem volume name:   root"),
            "{header}"
        );
        assert!(
            !header.contains("metadata_csum_seed") && !header.contains("orphan_file"),
            "{header}"
        );

        let cat = Command::new("debugfs")
            .args(["-R", "cat /etc/sub/file07", &device])
            .output()
            .unwrap();
        assert_eq!(cat.stdout, "content 7\n".repeat(350).into_bytes());
        let stat = Command::new("debugfs")
            .args(["-R", "stat /usr/bin/tool-link", &device])
            .output()
            .unwrap();
        let stat = String::from_utf8_lossy(&stat.stdout);
        assert!(stat.contains("Links: 2"), "{stat}");
        assert!(stat.contains(&format!("ctime: 0x{EPOCH:08x}")), "{stat}");
        assert!(
            stat.contains(&format!("mtime: 0x{:08x}", 1_600_000_000)),
            "{stat}"
        );
    }

    #[test]
    fn a_tree_too_big_for_the_partition_is_a_clear_error() {
        if !e2fsprogs_available() {
            return;
        }
        let work = tempfile::tempdir().unwrap();
        let tree = work.path().join("tree");
        std::fs::create_dir(&tree).unwrap();
        let layout = DiskLayout::plan(110 * MIB, 40 * MIB, b"small").unwrap();
        // Incompressible content larger than the 68 MiB root partition.
        let mut block = vec![0u8; MIB as usize];
        for i in 0..80u32 {
            for (j, byte) in block.iter_mut().enumerate() {
                *byte = (j as u32)
                    .wrapping_mul(2_654_435_761)
                    .wrapping_add(i)
                    .to_le_bytes()[3];
            }
            std::fs::write(tree.join(format!("blob{i}")), &block).unwrap();
        }
        let path = work.path().join("disk.img");
        let image = create_sparse_image(&path, &layout).unwrap();
        write_partition_table(&image, &layout).unwrap();
        let err = make_root_fs(&tree, &path, &layout, EPOCH).unwrap_err();
        assert!(err.to_string().contains("does not fit"), "{err:#}");
    }
}
