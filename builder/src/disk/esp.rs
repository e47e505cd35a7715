//! The EFI System Partition: a FAT32 file system written in place into the image, holding
//! the distribution's signed boot chain (shim, GRUB, MokManager) and the small GRUB
//! configuration that finds the root file system by UUID.
//!
//! Output is reproducible: fixed volume id from the layout and every timestamp taken
//! from SOURCE_DATE_EPOCH.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{bail, Context, Result};
use fatfs::{FatType, FileSystem, FormatVolumeOptions, FsOptions, TimeProvider};
use uuid::Uuid;

use crate::disk::layout::DiskLayout;

/// FAT volume label of the ESP (11 bytes, space padded).
const VOLUME_LABEL: &[u8; 11] = b"ESP        ";

/// Signed shim candidates inside the root tree, in order of preference. Debian ships the
/// signed shim as a file; Ubuntu makes the first an alternatives symlink to `.latest`.
const SHIM_SOURCES: &[&str] = &[
    "usr/lib/shim/shimx64.efi.signed",
    "usr/lib/shim/shimx64.efi.signed.latest",
];
/// Signed GRUB (Debian and Ubuntu alike).
const GRUB_SOURCES: &[&str] = &["usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed"];
/// Signed MokManager: `.signed` on Debian, plain name (already signed) on Ubuntu.
const MOK_MANAGER_SOURCES: &[&str] = &["usr/lib/shim/mmx64.efi.signed", "usr/lib/shim/mmx64.efi"];

/// One file to put on the ESP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EspFile {
    /// Path inside the ESP, '/'-separated, e.g. `EFI/BOOT/BOOTX64.EFI`.
    pub path: String,
    pub contents: Vec<u8>,
}

/// The GRUB stub the signed GRUB reads from `EFI/<vendor>/grub.cfg` (its built-in prefix):
/// it finds the root file system and hands over to `/boot/grub/grub.cfg` there.
pub fn grub_stub(root_fs_uuid: &Uuid) -> String {
    format!(
        "search --no-floppy --fs-uuid --set=root {root_fs_uuid}\n\
         set prefix=($root)/boot/grub\n\
         configfile $prefix/grub.cfg\n"
    )
}

/// Collects the ESP's files from an unpacked root tree: shim as the removable-media
/// default loader `EFI/BOOT/BOOTX64.EFI` with GRUB beside it, the same pair (plus the
/// GRUB stub) under `EFI/<vendor>/` as the distributions install them, and MokManager
/// next to each shim when the tree has it. `vendor` is "debian" or "ubuntu".
pub fn esp_files(root_tree: &Path, vendor: &str, root_fs_uuid: &Uuid) -> Result<Vec<EspFile>> {
    if !matches!(vendor, "debian" | "ubuntu") {
        bail!("unknown boot vendor {vendor:?}: the signed GRUB looks for its configuration in EFI/debian or EFI/ubuntu");
    }
    let shim = read_first(root_tree, SHIM_SOURCES, "shim-signed")?;
    let grub = read_first(root_tree, GRUB_SOURCES, "grub-efi-amd64-signed")?;
    let mok_manager = match find_first(root_tree, MOK_MANAGER_SOURCES) {
        Some(path) => Some(read_file(&path)?),
        None => None,
    };

    let mut files = Vec::new();
    for dir in ["EFI/BOOT".to_string(), format!("EFI/{vendor}")] {
        let shim_name = if dir == "EFI/BOOT" {
            "BOOTX64.EFI"
        } else {
            "shimx64.efi"
        };
        files.push(EspFile {
            path: format!("{dir}/{shim_name}"),
            contents: shim.clone(),
        });
        files.push(EspFile {
            path: format!("{dir}/grubx64.efi"),
            contents: grub.clone(),
        });
        if let Some(mok_manager) = &mok_manager {
            files.push(EspFile {
                path: format!("{dir}/mmx64.efi"),
                contents: mok_manager.clone(),
            });
        }
    }
    files.push(EspFile {
        path: format!("EFI/{vendor}/grub.cfg"),
        contents: grub_stub(root_fs_uuid).into_bytes(),
    });
    Ok(files)
}

/// Formats the layout's ESP region of `image` as FAT32 and writes `files` into it, with
/// every timestamp at `source_date_epoch`.
pub fn write_esp(
    image: &File,
    layout: &DiskLayout,
    files: &[EspFile],
    source_date_epoch: u64,
) -> Result<()> {
    let region = || -> Result<PartitionSlice> {
        Ok(PartitionSlice {
            file: image.try_clone().context("cannot reopen the image file")?,
            start: layout.esp.offset_bytes(),
            len: layout.esp.len_bytes(),
            pos: 0,
        })
    };
    fatfs::format_volume(
        region()?,
        FormatVolumeOptions::new()
            .fat_type(FatType::Fat32)
            .volume_id(layout.esp_volume_id)
            .volume_label(*VOLUME_LABEL),
    )
    .context("cannot format the ESP as FAT32")?;

    // fatfs wants a 'static time provider; one small leak per image built.
    let clock: &'static FixedClock = Box::leak(Box::new(FixedClock::at(source_date_epoch)));
    let fs = FileSystem::new(region()?, FsOptions::new().time_provider(clock))
        .context("cannot open the freshly formatted ESP")?;
    {
        let root = fs.root_dir();
        for file in files {
            let mut parent = String::new();
            let mut parts: Vec<&str> = file.path.split('/').collect();
            parts.pop();
            for part in parts {
                if !parent.is_empty() {
                    parent.push('/');
                }
                parent.push_str(part);
                root.create_dir(&parent)
                    .with_context(|| format!("cannot create ESP directory {parent}"))?;
            }
            let mut out = root
                .create_file(&file.path)
                .with_context(|| format!("cannot create ESP file {}", file.path))?;
            out.truncate()
                .with_context(|| format!("cannot truncate ESP file {}", file.path))?;
            out.write_all(&file.contents).with_context(|| {
                format!(
                    "cannot write ESP file {} (is the ESP too small?)",
                    file.path
                )
            })?;
            out.flush()
                .with_context(|| format!("cannot write ESP file {}", file.path))?;
        }
    }
    // Counting free clusters records the count in the FSInfo sector fsck.vfat checks.
    fs.stats().context("cannot count the ESP's free clusters")?;
    fs.unmount().context("cannot finish writing the ESP")?;
    fix_dot_entries(&mut region()?).context("cannot repair the ESP's directory entries")?;
    Ok(())
}

/// Rewrites the `.` and `..` entries of every directory the way FAT requires them.
///
/// fatfs 0.3.6 (the latest release) puts long-name entries before `.` and `..` and points
/// `..` of a top-level directory at the root's cluster instead of 0 (rust-fatfs issues
/// #99, #100, #117); fsck.vfat then "repairs" the ESP by deleting entries. This walks
/// the directory tree and writes each directory back with plain `.`/`..` first.
fn fix_dot_entries(volume: &mut PartitionSlice) -> io::Result<()> {
    let geometry = FatGeometry::read(volume)?;
    let mut pending = vec![(geometry.root_cluster, None::<u32>)];
    while let Some((cluster, parent)) = pending.pop() {
        let chain = geometry.chain(volume, cluster)?;
        let mut bytes = Vec::new();
        for &link in &chain {
            let mut buf = vec![0u8; geometry.cluster_bytes as usize];
            volume
                .file
                .read_at(&mut buf, volume.start + geometry.cluster_offset(link))?;
            bytes.extend_from_slice(&buf);
        }
        let mut kept: Vec<[u8; 32]> = Vec::new();
        let mut long_name: Vec<[u8; 32]> = Vec::new();
        for raw in bytes.chunks_exact(32) {
            let mut entry = [0u8; 32];
            entry.copy_from_slice(raw);
            match entry[0] {
                0x00 => break,
                0xE5 => continue,
                _ => {}
            }
            if entry[11] == 0x0F {
                long_name.push(entry);
                continue;
            }
            let is_dot = &entry[..11] == b".          ";
            let is_dot_dot = &entry[..11] == b"..         ";
            if is_dot || is_dot_dot {
                long_name.clear();
                if is_dot_dot {
                    // `..` of a directory in the root says 0, whatever the root's cluster.
                    set_first_cluster(&mut entry, parent.unwrap_or(0));
                }
            } else {
                kept.append(&mut long_name);
                if entry[11] & 0x10 != 0 {
                    let child = first_cluster(&entry);
                    let parent_ref = if cluster == geometry.root_cluster {
                        0
                    } else {
                        cluster
                    };
                    pending.push((child, Some(parent_ref)));
                }
            }
            kept.push(entry);
        }
        let mut rewritten = kept.concat();
        rewritten.resize(bytes.len(), 0);
        for (index, &link) in chain.iter().enumerate() {
            let size = geometry.cluster_bytes as usize;
            volume.file.write_at(
                &rewritten[index * size..(index + 1) * size],
                volume.start + geometry.cluster_offset(link),
            )?;
        }
    }
    Ok(())
}

fn first_cluster(entry: &[u8; 32]) -> u32 {
    u32::from(u16::from_le_bytes([entry[20], entry[21]])) << 16
        | u32::from(u16::from_le_bytes([entry[26], entry[27]]))
}

fn set_first_cluster(entry: &mut [u8; 32], cluster: u32) {
    entry[20..22].copy_from_slice(&((cluster >> 16) as u16).to_le_bytes());
    entry[26..28].copy_from_slice(&(cluster as u16).to_le_bytes());
}

/// Where things are in a FAT32 volume, from its boot sector.
struct FatGeometry {
    cluster_bytes: u64,
    fat_offset: u64,
    data_offset: u64,
    root_cluster: u32,
}

impl FatGeometry {
    fn read(volume: &PartitionSlice) -> io::Result<Self> {
        let mut boot = [0u8; 512];
        volume.file.read_at(&mut boot, volume.start)?;
        let bytes_per_sector = u64::from(u16::from_le_bytes([boot[11], boot[12]]));
        let sectors_per_cluster = u64::from(boot[13]);
        let reserved = u64::from(u16::from_le_bytes([boot[14], boot[15]]));
        let fats = u64::from(boot[16]);
        let sectors_per_fat =
            u64::from(u32::from_le_bytes([boot[36], boot[37], boot[38], boot[39]]));
        let root_cluster = u32::from_le_bytes([boot[44], boot[45], boot[46], boot[47]]);
        Ok(FatGeometry {
            cluster_bytes: bytes_per_sector * sectors_per_cluster,
            fat_offset: reserved * bytes_per_sector,
            data_offset: (reserved + fats * sectors_per_fat) * bytes_per_sector,
            root_cluster,
        })
    }

    fn cluster_offset(&self, cluster: u32) -> u64 {
        self.data_offset + u64::from(cluster - 2) * self.cluster_bytes
    }

    /// The clusters of a file or directory, following the first FAT.
    fn chain(&self, volume: &PartitionSlice, first: u32) -> io::Result<Vec<u32>> {
        let mut chain = vec![first];
        loop {
            let mut entry = [0u8; 4];
            let current = *chain.last().unwrap_or(&first);
            volume.file.read_at(
                &mut entry,
                volume.start + self.fat_offset + u64::from(current) * 4,
            )?;
            let next = u32::from_le_bytes(entry) & 0x0FFF_FFFF;
            if !(2..0x0FFF_FFF8).contains(&next) {
                return Ok(chain);
            }
            if chain.len() > 1 << 20 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "FAT cluster chain loops",
                ));
            }
            chain.push(next);
        }
    }
}

fn read_first(root_tree: &Path, candidates: &[&str], package: &str) -> Result<Vec<u8>> {
    match find_first(root_tree, candidates) {
        Some(path) => read_file(&path),
        None => bail!(
            "none of {} exists in the root tree {}: the package {package} must be installed in the image",
            candidates.join(", "),
            root_tree.display()
        ),
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The first candidate that exists in the tree, with symlinks resolved inside the tree
/// (an absolute link target means the tree's root, not the host's).
fn find_first(root_tree: &Path, candidates: &[&str]) -> Option<PathBuf> {
    candidates
        .iter()
        .filter_map(|candidate| resolve_in_tree(root_tree, Path::new(candidate)))
        .find(|path| path.is_file())
}

fn resolve_in_tree(root_tree: &Path, relative: &Path) -> Option<PathBuf> {
    const MAX_LINKS: usize = 16;
    let mut relative = normalize(relative)?;
    for _ in 0..MAX_LINKS {
        let path = root_tree.join(&relative);
        let meta = path.symlink_metadata().ok()?;
        if !meta.file_type().is_symlink() {
            return Some(path);
        }
        let target = std::fs::read_link(&path).ok()?;
        relative = if target.is_absolute() {
            normalize(&target)?
        } else {
            normalize(&relative.parent().unwrap_or(Path::new("")).join(target))?
        };
    }
    None
}

/// Lexically resolves `.`/`..` and drops the root, refusing to climb out of the tree.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => out.push(part),
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Some(out)
}

/// A time provider stuck at one instant, for reproducible FAT timestamps.
#[derive(Debug)]
struct FixedClock {
    date_time: fatfs::DateTime,
}

impl FixedClock {
    /// FAT timestamps are local calendar time from 1980 to 2107; UTC is used and the
    /// instant is clamped into that range.
    fn at(epoch: u64) -> Self {
        const FAT_FIRST: u64 = 315_532_800; // 1980-01-01T00:00:00Z
        const FAT_LAST: u64 = 4_354_819_198; // 2107-12-31T23:59:58Z
        let epoch = epoch.clamp(FAT_FIRST, FAT_LAST);
        let days = epoch / 86_400;
        let seconds = epoch % 86_400;
        let (year, month, day) = civil_from_days(days);
        FixedClock {
            date_time: fatfs::DateTime {
                date: fatfs::Date { year, month, day },
                time: fatfs::Time {
                    hour: (seconds / 3600) as u16,
                    min: (seconds / 60 % 60) as u16,
                    sec: (seconds % 60) as u16,
                    millis: 0,
                },
            },
        }
    }
}

impl TimeProvider for FixedClock {
    fn get_current_date(&self) -> fatfs::Date {
        self.date_time.date
    }

    fn get_current_date_time(&self) -> fatfs::DateTime {
        self.date_time
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u16, u16, u16) {
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year as u16, month as u16, day as u16)
}

/// Read/Write/Seek over the byte range [start, start+len) of the image file, so the FAT
/// code sees the partition as a whole device and cannot touch anything outside it.
struct PartitionSlice {
    file: File,
    start: u64,
    len: u64,
    pos: u64,
}

impl PartitionSlice {
    fn available(&self, wanted: usize) -> usize {
        (self.len.saturating_sub(self.pos)).min(wanted as u64) as usize
    }
}

impl Read for PartitionSlice {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.available(buf.len());
        let read = self.file.read_at(&mut buf[..n], self.start + self.pos)?;
        self.pos += read as u64;
        Ok(read)
    }
}

impl Write for PartitionSlice {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.available(buf.len());
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the ESP",
            ));
        }
        let written = self.file.write_at(&buf[..n], self.start + self.pos)?;
        self.pos += written as u64;
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Seek for PartitionSlice {
    fn seek(&mut self, target: SeekFrom) -> io::Result<u64> {
        let new = match target {
            SeekFrom::Start(offset) => Some(offset),
            SeekFrom::End(delta) => self.len.checked_add_signed(delta),
            SeekFrom::Current(delta) => self.pos.checked_add_signed(delta),
        };
        match new {
            Some(pos) if pos <= self.len => {
                self.pos = pos;
                Ok(pos)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek outside the ESP",
            )),
        }
    }
}

#[cfg(test)]
#[path = "esp_tests.rs"]
mod tests;
