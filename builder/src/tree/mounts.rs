//! The file systems beside root (CIS 1.1.2). Root grows to the disk; everything the box only
//! writes while it runs lives in memory, without device files, set-user-ID programs or
//! executables: `/tmp`, `/dev/shm`, `/var/tmp`, `/var/log`, `/var/log/audit` and `/home`. Logs in
//! memory are also the privacy rule: nothing a service logs outlives a power-off.
//!
//! A log directory in memory starts empty at every boot, so the directories the packages left
//! under `/var/log` come back from a tmpfiles.d list made from the tree at build time
//! ([`log_skeleton`]), with their owners and modes, before any service starts.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use anyhow::{Context, Result};

/// The tmpfiles.d list of the log directories, sorted before systemd's own lists.
pub const LOG_SKELETON: &str = "etc/tmpfiles.d/01-meetbox-log-directories.conf";

/// (mount point, tmpfs options besides nodev,nosuid,noexec). Sizes are ceilings, not
/// reservations; the audit log has its own, so a full log directory cannot stop auditing and
/// auditd's rotation (tree/audit.rs) stays well inside it.
pub const MEMORY_MOUNTS: [(&str, &str); 6] = [
    ("/tmp", "mode=1777,size=25%"),
    ("/dev/shm", ""),
    ("/var/tmp", "mode=1777,size=10%"),
    ("/var/log", "mode=0755,size=64m"),
    ("/var/log/audit", "mode=0700,size=64m"),
    ("/home", "mode=0755,size=16m"),
];

/// `/etc/fstab`: root by UUID, grown online at boot; the ESP for the answers file, waited for up to
/// 5 minutes (a slow first boot can need more than systemd's default 90 s, and the agent waits
/// for it); then [`MEMORY_MOUNTS`]. apt extracts its configuration scripts to a directory on root
/// instead of /var/tmp (overlay/etc/apt).
pub fn render_fstab(root_fs_uuid: &str, esp_volume_id: &str) -> String {
    let mut fstab = format!(
        "# Written by meetbox build.\n\
         UUID={root_fs_uuid} / ext4 defaults,errors=remount-ro,x-systemd.growfs 0 1\n\
         UUID={esp_volume_id} /boot/efi vfat umask=0077,nofail,x-systemd.device-timeout=5min 0 2\n"
    );
    for (path, options) in MEMORY_MOUNTS {
        let options = match options {
            "" => "defaults,nodev,nosuid,noexec".to_string(),
            options => format!("defaults,{options},nodev,nosuid,noexec"),
        };
        fstab.push_str(&format!("tmpfs {path} tmpfs {options} 0 0\n"));
    }
    fstab
}

/// Log files that programs create at run time with mode 0644, made beforehand with a mode that
/// keeps them from other users (CIS 6.1.3.1): the programs append and keep the mode.
pub const LOG_FILES: [(&str, &str); 5] = [
    ("/var/log/dpkg.log", "root root"),
    ("/var/log/apt/history.log", "root root"),
    (
        "/var/log/unattended-upgrades/unattended-upgrades.log",
        "root root",
    ),
    (
        "/var/log/unattended-upgrades/unattended-upgrades-dpkg.log",
        "root adm",
    ),
    (
        "/var/log/unattended-upgrades/unattended-upgrades-shutdown.log",
        "root root",
    ),
];

/// A directory under `/var/log` as the packages left it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogDirectory {
    /// Absolute path on the box, e.g. `/var/log/nginx`.
    pub path: String,
    pub mode: u32,
    pub user: String,
    pub group: String,
}

/// The tmpfiles.d lines that re-create `directories` at boot (`d`: create, set owner and mode),
/// then [`LOG_FILES`] (`f`: create if missing).
pub fn render_log_skeleton(directories: &[LogDirectory]) -> String {
    let mut text = String::from(
        "# Written by meetbox build: /var/log is in memory (etc/fstab); the directories the\n\
         # packages installed come back at every boot, as they were in the image.\n",
    );
    for dir in directories {
        text.push_str(&format!(
            "d {} {:04o} {} {} -\n",
            dir.path, dir.mode, dir.user, dir.group
        ));
    }
    for (file, owner) in LOG_FILES {
        text.push_str(&format!("f {file} 0640 {owner} -\n"));
    }
    text
}

/// Every directory below `tree/var/log` (not the mount points of [`MEMORY_MOUNTS`]), sorted, with
/// owners named from the tree's own account files.
pub fn log_skeleton(tree: &Path) -> Result<Vec<LogDirectory>> {
    let users = names(&tree.join("etc/passwd"))?;
    let groups = names(&tree.join("etc/group"))?;
    let name = |names: &BTreeMap<u32, String>, id: u32| {
        names.get(&id).cloned().unwrap_or_else(|| id.to_string())
    };
    let mut found = Vec::new();
    let mut stack = vec![tree.join("var/log")];
    while let Some(dir) = stack.pop() {
        let entries =
            fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?;
        for entry in entries {
            let entry = entry?;
            let meta = fs::symlink_metadata(entry.path())?;
            if !meta.is_dir() {
                continue;
            }
            let path = format!("/{}", entry.path().strip_prefix(tree)?.to_string_lossy());
            stack.push(entry.path());
            if MEMORY_MOUNTS.iter().any(|(mount, _)| *mount == path) {
                continue;
            }
            found.push(LogDirectory {
                path,
                mode: meta.mode() & 0o7777,
                user: name(&users, meta.uid()),
                group: name(&groups, meta.gid()),
            });
        }
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

/// id -> name from a passwd- or group-format file.
fn names(file: &Path) -> Result<BTreeMap<u32, String>> {
    let text =
        fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let id = fields.get(2)?.parse().ok()?;
            Some((id, fields.first()?.to_string()))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const UUID: &str = "0f3e0c55-5a0b-4a44-9e1c-6d0e2c1f9a01";

    #[test]
    fn fstab_grows_root_mounts_the_esp_and_keeps_the_rest_in_memory() {
        let fstab = render_fstab(UUID, "1A2B-3C4D");
        assert!(fstab.contains(&format!(
            "UUID={UUID} / ext4 defaults,errors=remount-ro,x-systemd.growfs 0 1"
        )));
        assert!(fstab.contains(
            "UUID=1A2B-3C4D /boot/efi vfat umask=0077,nofail,x-systemd.device-timeout=5min 0 2"
        ));
        for mount in [
            "/tmp",
            "/dev/shm",
            "/var/tmp",
            "/var/log",
            "/var/log/audit",
            "/home",
        ] {
            let line = fstab
                .lines()
                .find(|l| l.starts_with(&format!("tmpfs {mount} tmpfs ")))
                .unwrap_or_else(|| panic!("no {mount} in\n{fstab}"));
            assert!(line.contains(",nodev,nosuid,noexec 0 0"), "{line}");
        }
        // The audit log's own file system is mounted after the log directory's.
        assert!(fstab.find(" /var/log ").unwrap() < fstab.find(" /var/log/audit ").unwrap());
    }

    #[test]
    fn the_log_skeleton_keeps_owners_and_modes_from_the_tree() {
        let tree = tempfile::tempdir().unwrap();
        let root = tree.path();
        fs::create_dir_all(root.join("etc")).unwrap();
        // The tree's files belong to whoever runs the test: its ids get names of their own.
        let me = fs::metadata(root).unwrap();
        let user = if me.uid() == 0 { "root" } else { "tester" };
        let group = if me.gid() == 0 { "root" } else { "testers" };
        fs::write(
            root.join("etc/passwd"),
            format!(
                "root:x:0:0::/root:/bin/sh\n{user}:x:{}:{}::/:/bin/sh\n",
                me.uid(),
                me.gid()
            ),
        )
        .unwrap();
        fs::write(
            root.join("etc/group"),
            format!("root:x:0:\nadm:x:4:\n{group}:x:{}:\n", me.gid()),
        )
        .unwrap();
        for (dir, mode) in [
            ("var/log/nginx", 0o750),
            ("var/log/apt", 0o755),
            ("var/log/audit", 0o700),
        ] {
            fs::create_dir_all(root.join(dir)).unwrap();
            fs::set_permissions(root.join(dir), fs::Permissions::from_mode(mode)).unwrap();
        }
        fs::write(root.join("var/log/dpkg.log"), "").unwrap();
        let dirs = log_skeleton(root).unwrap();
        let paths: Vec<&str> = dirs.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(
            paths,
            ["/var/log/apt", "/var/log/nginx"],
            "files and mount points are left out"
        );
        let text = render_log_skeleton(&dirs);
        assert!(
            text.contains(&format!("d /var/log/nginx 0750 {user} {group} -\n")),
            "{text}"
        );
        assert!(
            text.contains("f /var/log/dpkg.log 0640 root root -\n"),
            "{text}"
        );
        // A file's line comes after its directory's.
        assert!(text.find("d /var/log/apt ").unwrap() < text.find("f /var/log/apt/").unwrap());
    }
}
