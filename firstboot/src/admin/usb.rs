//! Backups on USB sticks, for the restore at the box's own screen: every FAT, exFAT or NTFS file
//! system on a USB disk is mounted read-only for a moment and its top folder searched for
//! `*.meetbox-backup` files.

use std::process::Command;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::backup;

/// A backup found on a stick: where, its name, its bytes.
pub struct Found {
    pub device: String,
    pub name: String,
    pub bytes: Vec<u8>,
}

#[derive(Deserialize)]
struct Lsblk {
    blockdevices: Vec<Device>,
}

#[derive(Deserialize)]
struct Device {
    name: String,
    tran: Option<String>,
    fstype: Option<String>,
    #[serde(default)]
    children: Vec<Device>,
}

/// The file systems an owner's computer writes on a stick, on disks that hang on USB.
pub fn candidates(lsblk_json: &str) -> Result<Vec<String>> {
    let list: Lsblk =
        serde_json::from_str(lsblk_json).context("lsblk gave a list this version cannot read")?;
    let mut found = Vec::new();
    for disk in list
        .blockdevices
        .iter()
        .filter(|d| d.tran.as_deref() == Some("usb"))
    {
        for device in std::iter::once(disk).chain(disk.children.iter()) {
            if matches!(
                device.fstype.as_deref(),
                Some("vfat" | "exfat" | "ntfs" | "ntfs3")
            ) {
                found.push(device.name.clone());
            }
        }
    }
    Ok(found)
}

/// Every backup on the USB sticks plugged in now.
pub fn backups() -> Result<Vec<Found>> {
    let output = Command::new("lsblk")
        .args(["--json", "--paths", "-o", "NAME,TRAN,FSTYPE"])
        .output()
        .context("cannot run lsblk")?;
    anyhow::ensure!(output.status.success(), "lsblk failed");
    let mut found = Vec::new();
    for device in candidates(&String::from_utf8_lossy(&output.stdout))? {
        let mount_point = tempfile::Builder::new()
            .prefix("meetbox-usb-")
            .tempdir_in("/run")
            .context("cannot make a mount point in /run")?;
        let mounted = Command::new("mount")
            .args(["-o", "ro,nodev,nosuid,noexec"])
            .arg(&device)
            .arg(mount_point.path())
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            continue;
        }
        let suffix = format!(".{}", backup::EXTENSION);
        let entries: Vec<_> = std::fs::read_dir(mount_point.path())
            .map(|entries| entries.flatten().collect())
            .unwrap_or_default();
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.to_lowercase().ends_with(&suffix) && !name.starts_with("._") {
                if let Ok(bytes) = std::fs::read(entry.path()) {
                    found.push(Found {
                        device: device.clone(),
                        name,
                        bytes,
                    });
                }
            }
        }
        let _ = Command::new("umount").arg(mount_point.path()).status();
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_file_systems_on_usb_disks() {
        let json = r#"{"blockdevices": [
            {"name": "/dev/vda", "tran": null, "fstype": null, "children": [
                {"name": "/dev/vda1", "tran": null, "fstype": "vfat"}]},
            {"name": "/dev/sda", "tran": "usb", "fstype": null, "children": [
                {"name": "/dev/sda1", "tran": null, "fstype": "exfat"},
                {"name": "/dev/sda2", "tran": null, "fstype": "ext4"}]},
            {"name": "/dev/sdb", "tran": "usb", "fstype": "vfat"}]}"#;
        assert_eq!(candidates(json).unwrap(), ["/dev/sda1", "/dev/sdb"]);
    }
}
