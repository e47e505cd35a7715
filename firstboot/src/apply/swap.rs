//! The swap file: `[swap] size_mb` of the tuning file at `/swap.img` (0600, root), listed in
//! `/etc/fstab` and, on the running system, activated at once. Small boxes run close to the sum of their
//! Java heaps; swap keeps rarely used pages (apt, journald) from pushing the heaps out.
//!
//! It must never fill the disk: it is skipped when the root file system would keep less than 1 GiB free,
//! with a note saying how much is free (the image's root normally has grown to the whole disk by then).
//! The file is prepared under a temporary name and renamed into place only once `mkswap` has written
//! its header, so after a crash `/swap.img` is either absent or a complete swap area; an existing one is
//! kept as it is (a re-run neither fails on it nor resizes it), and the fstab entry is added only once.

use std::ffi::CString;
use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::apply::{FileSpec, Owner, Root};
use crate::layout;
use crate::tuning::Swap;

/// Space the root file system keeps free after the swap file is created.
pub const KEEP_FREE_BYTES: u64 = 1 << 30;

const MIB: u64 = 1 << 20;

/// What to do about the swap file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Create it: enough space stays free.
    Create,
    /// It exists (an earlier run, or the administrator's own): use it as it is.
    Keep,
    /// Too little space: no swap.
    Skip,
}

/// The plan for a `size_mb` swap file when `free_bytes` are free on the root file system.
pub fn plan(exists: bool, free_bytes: u64, size_mb: u32) -> Plan {
    if exists {
        Plan::Keep
    } else if free_bytes >= u64::from(size_mb) * MIB + KEEP_FREE_BYTES {
        Plan::Create
    } else {
        Plan::Skip
    }
}

/// `fstab` with a swap entry for `file`, appended unless an entry for it is already there (in any form:
/// the administrator's options are kept).
pub fn fstab_with_swap(fstab: &str, file: &str) -> String {
    let listed = fstab.lines().any(|line| {
        let mut fields = line.split_whitespace();
        let (source, _mount_point, kind) = (fields.next(), fields.next(), fields.next());
        source == Some(file) && kind == Some("swap")
    });
    if listed {
        return fstab.to_string();
    }
    let mut out = fstab.to_string();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&format!("{file} none swap sw 0 0\n"));
    out
}

/// `fstab` without the swap line of `file`.
pub fn fstab_without_swap(fstab: &str, file: &str) -> String {
    fstab
        .lines()
        .filter(|line| {
            let mut fields = line.split_whitespace();
            let (source, _mount_point, kind) = (fields.next(), fields.next(), fields.next());
            !(source == Some(file) && kind == Some("swap"))
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

/// Stops using the swap file (it holds pages of this box's memory), removes it and its fstab line
/// (factory reset; setup makes a new one).
pub fn remove(root: &Root) -> Result<()> {
    let file = layout::SWAP_FILE;
    if !root.exists(file) {
        return Ok(());
    }
    if root.is_live() && active(file)? {
        let status = std::process::Command::new("swapoff")
            .arg(file)
            .status()
            .context("cannot run swapoff")?;
        anyhow::ensure!(status.success(), "swapoff {file} failed");
    }
    root.remove(file)?;
    if root.exists(layout::FSTAB) {
        let fstab = root.read_to_string(layout::FSTAB)?;
        let without = fstab_without_swap(&fstab, file);
        if without != fstab {
            root.replace(layout::FSTAB, without.as_bytes())?;
        }
    }
    Ok(())
}

/// Creates (or keeps) the swap file, lists it in fstab and activates it on the live system; returns the
/// note for the console.
pub fn apply(root: &Root, swap: Swap) -> Result<String> {
    let file = layout::SWAP_FILE;
    let temp = format!("{file}.meetbox-new");
    // Left by a crash before the rename: its header may be missing, so it is made again.
    root.remove(&temp)?;
    let exists = match fs::symlink_metadata(root.path(file)) {
        Ok(meta) if meta.is_file() => true,
        Ok(_) => bail!("{file} exists but is not a regular file; remove it and run setup again"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {file}")),
    };
    let free = free_bytes(root.dir())?;
    let plan = plan(exists, free, swap.size_mb);
    let mut note = match plan {
        Plan::Skip => {
            return Ok(format!(
                "no swap file: {} MB free on the root file system, and a {} MB swap file would leave less than {} MB",
                free / MIB,
                swap.size_mb,
                KEEP_FREE_BYTES / MIB
            ));
        }
        Plan::Keep => {
            secure(&root.path(file))?;
            format!("{file} exists; kept as it is")
        }
        Plan::Create => {
            create(&root.path(&temp), u64::from(swap.size_mb) * MIB)?;
            fs::rename(root.path(&temp), root.path(file))
                .with_context(|| format!("cannot move the new swap file into place as {file}"))?;
            format!("{file}: {} MB", swap.size_mb)
        }
    };
    if root.is_live() && !active(file)? {
        if let Err(error) = swapon(file) {
            // The root file system is ext4, which takes swap files; should a kernel still refuse, the
            // box works without swap, and the file is not listed in fstab, where it would fail every
            // boot. A file made just now would only waste the space; one found here is not ours to
            // delete.
            if plan == Plan::Create {
                root.remove(file)?;
                return Ok(format!(
                    "no swap file: the kernel refused {file} ({error:#}); removed it again"
                ));
            }
            return Ok(format!(
                "no swap: the kernel refused the existing {file} ({error:#}); left as it is"
            ));
        }
        note.push_str(", in use");
    }
    list_in_fstab(root)?;
    Ok(note)
}

/// Bytes an unprivileged writer may still use on the file system holding `dir`.
fn free_bytes(dir: &Path) -> Result<u64> {
    let path = CString::new(dir.as_os_str().as_bytes())
        .with_context(|| format!("{} holds a NUL byte", dir.display()))?;
    // SAFETY: statvfs writes into the zeroed struct we pass; the path is a valid C string.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stat) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot tell the free space of {}", dir.display()));
    }
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Allocates `bytes` at `path` (0600, root) without holes, as the kernel requires of a swap file, and
/// writes the swap header.
fn create(path: &Path, bytes: u64) -> Result<()> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    secure(path)?;
    let len = libc::off_t::try_from(bytes).context("the swap file size is too large")?;
    // SAFETY: posix_fallocate on a file descriptor we own; it returns the error number itself.
    let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
    if rc != 0 {
        let _ = fs::remove_file(path);
        return Err(std::io::Error::from_raw_os_error(rc))
            .with_context(|| format!("cannot allocate {} MB for {}", bytes / MIB, path.display()));
    }
    file.sync_all()
        .with_context(|| format!("cannot write {}", path.display()))?;
    let output = Command::new("mkswap")
        .arg(path)
        .output()
        .context("cannot run mkswap (package util-linux)")?;
    if !output.status.success() {
        bail!(
            "mkswap {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Mode 0600, owner root: swap holds other processes' memory.
fn secure(path: &Path) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    std::os::unix::fs::chown(path, Some(0), Some(0))
        .with_context(|| format!("cannot set the owner of {}", path.display()))
}

/// True when the running kernel already swaps to `file` (a re-run after a crash).
fn active(file: &str) -> Result<bool> {
    let swaps = fs::read_to_string("/proc/swaps").context("cannot read /proc/swaps")?;
    Ok(swaps
        .lines()
        .skip(1)
        .any(|line| line.split_whitespace().next() == Some(file)))
}

fn swapon(file: &str) -> Result<()> {
    let output = Command::new("swapon")
        .arg(file)
        .output()
        .context("cannot run swapon (package util-linux)")?;
    if !output.status.success() {
        bail!(
            "swapon failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Adds the fstab entry, keeping the file's mode and owner when it exists.
fn list_in_fstab(root: &Root) -> Result<()> {
    if !root.exists(layout::FSTAB) {
        return root.write(&FileSpec::new(
            layout::FSTAB,
            fstab_with_swap("", layout::SWAP_FILE),
            0o644,
            Owner::ROOT,
        ));
    }
    let text = root.read_to_string(layout::FSTAB)?;
    let updated = fstab_with_swap(&text, layout::SWAP_FILE);
    if updated != text {
        root.replace(layout::FSTAB, updated.as_bytes())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn the_swap_line_comes_out_again() {
        let fstab = "UUID=1 / ext4 defaults 0 1\n";
        let with = fstab_with_swap(fstab, "/swap.img");
        assert_ne!(with, fstab);
        assert_eq!(fstab_without_swap(&with, "/swap.img"), fstab);
        assert_eq!(fstab_without_swap(fstab, "/swap.img"), fstab);
    }

    /// What `meetbox build` writes (builder/src/tree.rs, render_fstab).
    const IMAGE_FSTAB: &str = "# Written by meetbox build.\nUUID=0f3e / ext4 defaults,errors=remount-ro,x-systemd.growfs 0 1\ntmpfs /tmp tmpfs defaults,mode=1777,size=25%,nodev,nosuid,noexec 0 0\n";

    #[test]
    fn fstab_gets_one_entry() {
        let once = fstab_with_swap(IMAGE_FSTAB, "/swap.img");
        assert_eq!(once, format!("{IMAGE_FSTAB}/swap.img none swap sw 0 0\n"));
        assert_eq!(fstab_with_swap(&once, "/swap.img"), once);
        // The administrator's own entry, with other options and spacing, counts.
        let own = "/swap.img\tnone  swap  sw,pri=5 0 0";
        assert_eq!(fstab_with_swap(own, "/swap.img"), own);
        // Another swap file or a comment does not.
        assert_eq!(
            fstab_with_swap(
                "# /swap.img none swap sw 0 0\n/other swap swap sw 0 0",
                "/swap.img"
            ),
            "# /swap.img none swap sw 0 0\n/other swap swap sw 0 0\n/swap.img none swap sw 0 0\n"
        );
        assert_eq!(
            fstab_with_swap("", "/swap.img"),
            "/swap.img none swap sw 0 0\n"
        );
    }

    #[test]
    fn one_gib_stays_free() {
        let size_mb = 2048;
        let needed = 2048 * MIB + KEEP_FREE_BYTES;
        assert_eq!(plan(false, needed, size_mb), Plan::Create);
        assert_eq!(plan(false, needed - 1, size_mb), Plan::Skip);
        assert_eq!(plan(true, 0, size_mb), Plan::Keep);
    }

    #[test]
    fn creates_a_swap_area_once_and_lists_it_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        if free_bytes(dir.path()).unwrap() < 8 * MIB + KEEP_FREE_BYTES {
            eprintln!("SKIPPED: less than 1 GiB free in the temporary directory");
            return;
        }
        root.write(&FileSpec::new(
            layout::FSTAB,
            IMAGE_FSTAB,
            0o644,
            Owner::ROOT,
        ))
        .unwrap();
        // A crash before the rename left a temporary file.
        fs::write(root.path("/swap.img.meetbox-new"), "partial").unwrap();
        let note = apply(&root, Swap { size_mb: 8 }).unwrap();
        assert_eq!(note, "/swap.img: 8 MB");
        let path = root.path(layout::SWAP_FILE);
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), 8 * MIB);
        assert_eq!(meta.mode() & 0o7777, 0o600);
        assert_eq!(meta.uid(), 0);
        // mkswap's signature ends the first page.
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let header = fs::read(&path).unwrap();
        assert_eq!(&header[page - 10..page], b"SWAPSPACE2");
        assert!(!root.exists("/swap.img.meetbox-new"));
        let fstab = root.read_to_string(layout::FSTAB).unwrap();
        // A re-run keeps the file and adds no second entry.
        let again = apply(&root, Swap { size_mb: 16 }).unwrap();
        assert!(again.contains("kept"), "{again}");
        assert_eq!(fs::metadata(&path).unwrap().len(), 8 * MIB);
        assert_eq!(root.read_to_string(layout::FSTAB).unwrap(), fstab);
        assert_eq!(fstab.matches("/swap.img").count(), 1);
    }

    #[test]
    fn skips_when_the_disk_would_fill() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        let note = apply(&root, Swap { size_mb: u32::MAX }).unwrap();
        assert!(
            note.starts_with("no swap file:") && note.contains("MB free"),
            "{note}"
        );
        assert!(!root.exists(layout::SWAP_FILE));
        assert!(!root.exists(layout::FSTAB));
    }
}
