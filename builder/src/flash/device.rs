//! Facts about disks and the decision whether one may be overwritten.
//!
//! Facts come from sysfs and /proc (side effects, `DiskFacts::read`); the decision
//! (`refusals`) is a pure function over those facts so every refusal is tested
//! without real devices.

use std::fmt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::host::progress::human_bytes;

/// Mount points whose disk runs this system: overwriting it would wreck the host.
const SYSTEM_MOUNT_POINTS: [&str; 6] = ["/", "/usr", "/boot", "/boot/efi", "/efi", "/var"];

/// Sector size the images' partition tables are laid out for.
const IMAGE_SECTOR_SIZE: u64 = 512;

/// Something on the disk that is in use right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskUse {
    /// A file system from `source` (the disk, a partition or a device stacked on it) is mounted.
    Mount { source: String, mount_point: String },
    /// `source` is active swap.
    Swap { source: String },
}

/// What the kernel says about one block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskFacts {
    /// Kernel name, e.g. `sda`.
    pub name: String,
    pub size_bytes: u64,
    pub read_only: bool,
    /// The kernel's removable-media flag (USB sticks, card readers).
    pub removable: bool,
    pub logical_block_size: u64,
    pub model: Option<String>,
    pub serial: Option<String>,
    /// Bus the disk hangs on: usb, nvme, sata, virtio, mmc, scsi, loop, virtual...
    pub transport: String,
    /// The whole disk this device is a partition of, if it is one.
    pub partition_of: Option<String>,
    /// Mounts and swap living on the disk, its partitions or devices stacked on them.
    pub uses: Vec<DiskUse>,
    /// Devices (LVM, RAID, device-mapper) built on the disk or its partitions.
    pub holders: Vec<String>,
}

/// Why a disk must not be flashed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    Partition { disk: String },
    RunningSystem { source: String, mount_point: String },
    Mounted { source: String, mount_point: String },
    Swap { source: String },
    HeldBy { holders: Vec<String> },
    ReadOnly,
    TooSmall { need: u64, have: u64 },
    SectorSize { size: u64 },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Partition { disk } => write!(
                f,
                "it is a partition; an image needs the whole disk: use /dev/{disk}"
            ),
            Refusal::RunningSystem {
                source,
                mount_point,
            } => write!(
                f,
                "it holds the running system ({source} is mounted at {mount_point})"
            ),
            Refusal::Mounted {
                source,
                mount_point,
            } => write!(
                f,
                "{source} is mounted at {mount_point}; unmount it first (umount {mount_point})"
            ),
            Refusal::Swap { source } => {
                write!(f, "{source} is active swap; run swapoff /dev/{source} first")
            }
            Refusal::HeldBy { holders } => write!(
                f,
                "it is in use by {} (LVM, RAID or device-mapper); stop those devices first",
                holders.join(", ")
            ),
            Refusal::ReadOnly => write!(
                f,
                "it is read-only (check a write-protect switch, or blockdev --setrw)"
            ),
            Refusal::TooSmall { need, have } => write!(
                f,
                "it is too small: the image needs {} ({need} bytes), the disk has {} ({have} bytes)",
                human_bytes(*need),
                human_bytes(*have)
            ),
            Refusal::SectorSize { size } => write!(
                f,
                "it has {size}-byte logical sectors; the image's partition table is laid out for \
                 {IMAGE_SECTOR_SIZE}-byte sectors and would not be found"
            ),
        }
    }
}

/// Every reason not to flash `disk`; `image_size` is checked when given (listing has none).
pub fn refusals(disk: &DiskFacts, image_size: Option<u64>) -> Vec<Refusal> {
    let mut reasons = Vec::new();
    if let Some(parent) = &disk.partition_of {
        reasons.push(Refusal::Partition {
            disk: parent.clone(),
        });
    }
    for disk_use in &disk.uses {
        reasons.push(match disk_use {
            DiskUse::Mount {
                source,
                mount_point,
            } if SYSTEM_MOUNT_POINTS.contains(&mount_point.as_str()) => Refusal::RunningSystem {
                source: source.clone(),
                mount_point: mount_point.clone(),
            },
            DiskUse::Mount {
                source,
                mount_point,
            } => Refusal::Mounted {
                source: source.clone(),
                mount_point: mount_point.clone(),
            },
            DiskUse::Swap { source } => Refusal::Swap {
                source: source.clone(),
            },
        });
    }
    if !disk.holders.is_empty() {
        reasons.push(Refusal::HeldBy {
            holders: disk.holders.clone(),
        });
    }
    if disk.read_only {
        reasons.push(Refusal::ReadOnly);
    }
    if let Some(need) = image_size {
        if disk.size_bytes < need {
            reasons.push(Refusal::TooSmall {
                need,
                have: disk.size_bytes,
            });
        }
    }
    if disk.logical_block_size != IMAGE_SECTOR_SIZE {
        reasons.push(Refusal::SectorSize {
            size: disk.logical_block_size,
        });
    }
    reasons
}

/// The bus a disk hangs on, from its canonical sysfs path
/// (e.g. `/sys/devices/pci0000:00/.../usb2/.../block/sdb`).
pub fn transport_from_sysfs_path(path: &str, name: &str) -> String {
    let has = |part: &str| path.split('/').any(|c| c.starts_with(part));
    let transport = if has("usb") {
        "usb"
    } else if has("nvme") {
        "nvme"
    } else if has("mmc") {
        "mmc"
    } else if has("ata") {
        "sata"
    } else if has("virtio") {
        "virtio"
    } else if has("host") || has("target") {
        "scsi"
    } else if name.starts_with("loop") {
        "loop"
    } else if path.contains("/virtual/") {
        "virtual"
    } else {
        "unknown"
    };
    transport.to_string()
}

/// A mounted file system's device number and mount point, from /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    pub device: (u32, u32),
    pub mount_point: String,
}

/// Parses /proc/self/mountinfo (field 3 is major:minor, field 5 the mount point).
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let device = fields.nth(2)?;
            let mount_point = fields.nth(1)?;
            let (major, minor) = device.split_once(':')?;
            Some(MountEntry {
                device: (major.parse().ok()?, minor.parse().ok()?),
                mount_point: unescape_mount_path(mount_point),
            })
        })
        .collect()
}

/// Paths of active swap areas, from /proc/swaps.
pub fn parse_swaps(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().next())
        .map(unescape_mount_path)
        .collect()
}

/// Undoes the octal escapes (`\040` for a space) the kernel uses in mount tables.
fn unescape_mount_path(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(value)) => {
                out.push(value);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Where the kernel describes block devices.
const SYS_BLOCK: &str = "/sys/block";
const SYS_DEV_BLOCK: &str = "/sys/dev/block";

/// The in-use state of the whole machine, read once and shared by every disk.
struct SystemUse {
    /// (device kernel name, mount point)
    mounts: Vec<(String, String)>,
    /// Kernel names of active swap devices.
    swaps: Vec<String>,
}

impl SystemUse {
    fn read() -> Result<SystemUse> {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
            .context("cannot read /proc/self/mountinfo to see what is mounted")?;
        let mounts = parse_mountinfo(&mountinfo)
            .into_iter()
            .filter_map(|m| Some((kernel_name_of(m.device)?, m.mount_point)))
            .collect();
        // /proc/swaps is absent when the kernel has no swap support: nothing is swap then.
        let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
        let swaps = parse_swaps(&swaps)
            .iter()
            .filter_map(|path| {
                let meta = std::fs::metadata(path).ok()?;
                meta.file_type()
                    .is_block_device()
                    .then(|| kernel_name_of(dev_numbers(meta.rdev())))?
            })
            .collect();
        Ok(SystemUse { mounts, swaps })
    }
}

fn dev_numbers(rdev: u64) -> (u32, u32) {
    (libc::major(rdev), libc::minor(rdev))
}

/// Kernel name (`sda1`, `dm-0`) of a block device number; None for virtual file systems.
fn kernel_name_of((major, minor): (u32, u32)) -> Option<String> {
    let link = std::fs::canonicalize(format!("{SYS_DEV_BLOCK}/{major}:{minor}")).ok()?;
    Some(link.file_name()?.to_string_lossy().into_owned())
}

/// Canonical sysfs directory of a block device by kernel name (disk or partition).
fn sysfs_dir(name: &str) -> Option<PathBuf> {
    std::fs::canonicalize(format!("/sys/class/block/{name}")).ok()
}

/// The whole disks a device sits on: itself, a partition's parent, or the
/// disks under a stacked device (following `slaves/`).
fn underlying_disks(name: &str, depth: usize) -> Vec<String> {
    let Some(dir) = sysfs_dir(name) else {
        return Vec::new();
    };
    if dir.join("partition").exists() {
        return dir
            .parent()
            .and_then(|p| p.file_name())
            .map(|n| vec![n.to_string_lossy().into_owned()])
            .unwrap_or_default();
    }
    let slaves = list_dir(&dir.join("slaves"));
    if slaves.is_empty() || depth > 8 {
        return vec![name.to_string()];
    }
    slaves
        .iter()
        .flat_map(|slave| underlying_disks(slave, depth + 1))
        .collect()
}

fn list_dir(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn read_trimmed(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    let text = text.trim();
    (!text.is_empty()).then(|| text.to_string())
}

impl DiskFacts {
    /// Reads the facts of the block device with kernel name `name`.
    fn read(name: &str, system: &SystemUse) -> Result<DiskFacts> {
        let dir = sysfs_dir(name)
            .with_context(|| format!("block device {name} is not in /sys/class/block"))?;
        let sectors: u64 = read_trimmed(&dir.join("size"))
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("cannot read the size of {name} from sysfs"))?;
        let partition_of = dir
            .join("partition")
            .exists()
            .then(|| dir.parent().and_then(|p| p.file_name()))
            .flatten()
            .map(|n| n.to_string_lossy().into_owned());
        let disk_dir = match &partition_of {
            Some(_) => dir.parent().unwrap_or(&dir).to_path_buf(),
            None => dir.clone(),
        };
        let disk_name = partition_of.clone().unwrap_or_else(|| name.to_string());
        let logical_block_size = read_trimmed(&disk_dir.join("queue/logical_block_size"))
            .and_then(|s| s.parse().ok())
            .unwrap_or(IMAGE_SECTOR_SIZE);
        // Vendor names only help next to a model; virtio's "vendor" is a PCI id.
        let model = read_trimmed(&disk_dir.join("device/model")).map(|model| {
            match read_trimmed(&disk_dir.join("device/vendor")) {
                Some(vendor) if !vendor.starts_with("0x") && !model.starts_with(&vendor) => {
                    format!("{vendor} {model}")
                }
                _ => model,
            }
        });
        let path = disk_dir.to_string_lossy().into_owned();

        // Everything built on the disk or any of its partitions counts.
        let partitions = list_dir(&disk_dir)
            .into_iter()
            .filter(|entry| disk_dir.join(entry).join("partition").exists());
        let holders = partitions
            .flat_map(|partition| list_dir(&disk_dir.join(partition).join("holders")))
            .chain(list_dir(&disk_dir.join("holders")))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let on_this_disk = |source: &str| underlying_disks(source, 0).contains(&disk_name);
        let mut uses: Vec<DiskUse> = system
            .mounts
            .iter()
            .filter(|(source, _)| on_this_disk(source))
            .map(|(source, mount_point)| DiskUse::Mount {
                source: source.clone(),
                mount_point: mount_point.clone(),
            })
            .collect();
        uses.extend(
            system
                .swaps
                .iter()
                .filter(|source| on_this_disk(source))
                .map(|source| DiskUse::Swap {
                    source: source.clone(),
                }),
        );

        Ok(DiskFacts {
            name: name.to_string(),
            size_bytes: sectors * 512,
            read_only: read_trimmed(&dir.join("ro")).as_deref() == Some("1"),
            removable: read_trimmed(&disk_dir.join("removable")).as_deref() == Some("1"),
            logical_block_size,
            model,
            serial: read_serial(&disk_dir),
            transport: transport_from_sysfs_path(&path, &disk_name),
            partition_of,
            uses,
            holders,
        })
    }

    /// One line for listings and confirmation prompts.
    pub fn describe(&self) -> String {
        format!(
            "/dev/{}: {} {}, {} ({} bytes), serial {}",
            self.name,
            self.transport,
            self.model.as_deref().unwrap_or("(no model)"),
            human_bytes(self.size_bytes),
            self.size_bytes,
            self.serial.as_deref().unwrap_or("(none)"),
        )
    }
}

/// Serial number: the disk's or its device's own `serial`, its `wwid`, or (USB) the nearest
/// parent device's `serial`.
fn read_serial(disk_dir: &Path) -> Option<String> {
    let device = disk_dir.join("device");
    // virtio-blk keeps it beside the disk, not under its device.
    read_trimmed(&disk_dir.join("serial"))
        .or_else(|| read_trimmed(&device.join("serial")))
        .or_else(|| read_trimmed(&device.join("wwid")))
        .or_else(|| {
            let device = std::fs::canonicalize(&device).ok()?;
            device
                .ancestors()
                .skip(1)
                .take_while(|dir| dir.starts_with("/sys/devices"))
                .find_map(|dir| read_trimmed(&dir.join("serial")))
        })
}

/// What a flash target path turned out to be.
pub enum Target {
    /// A block device with its facts.
    Disk(DiskFacts),
    /// A regular file, or a path where one will be created.
    File,
}

/// Looks at the target path: block devices get their facts read, regular files
/// (existing or not) are fine, anything else is refused.
pub fn inspect_target(path: &Path) -> Result<Target> {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Target::File),
        Err(err) => return Err(err).with_context(|| format!("cannot inspect {}", path.display())),
    };
    if meta.file_type().is_block_device() {
        let name = kernel_name_of(dev_numbers(meta.rdev()))
            .with_context(|| format!("{} is a block device unknown to sysfs", path.display()))?;
        let system = SystemUse::read()?;
        return Ok(Target::Disk(DiskFacts::read(&name, &system)?));
    }
    anyhow::ensure!(
        meta.is_file(),
        "{} is neither a block device nor a regular file; give a disk (e.g. /dev/sdb) \
         or a file path",
        path.display()
    );
    Ok(Target::File)
}

/// All disks with a medium (size above zero), sorted by name.
pub fn list_disks() -> Result<Vec<DiskFacts>> {
    let system = SystemUse::read()?;
    let mut disks = Vec::new();
    for name in list_dir(Path::new(SYS_BLOCK)) {
        let disk = DiskFacts::read(&name, &system)?;
        if disk.size_bytes > 0 {
            disks.push(disk);
        }
    }
    Ok(disks)
}

#[cfg(test)]
#[path = "device_tests.rs"]
mod tests;
