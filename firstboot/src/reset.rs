//! Factory reset: everything per-device goes (the settings and secrets, every account, the
//! certificates and their keys, the rendered configuration, the SSH host keys and the owner's key,
//! the swap file, the machine id, the boot menu's superuser), the services are fenced again as the image ships them, and the
//! next boot asks the first-boot questions. Started from the web admin or at the box's console.
//!
//! Files are deleted, not overwritten; on the live box `fstrim` then lets an SSD discard the freed
//! blocks (docs/admin.md says what that does and does not promise).

use std::process::Command;

use anyhow::{Context, Result};

use crate::apply::jitsi_env;
use crate::apply::services;
use crate::apply::swap;
use crate::apply::{FileSpec, Owner, Root};
use crate::layout;
use crate::render;
use crate::state::State;

/// Directories whose whole content is per-device.
const EMPTIED: [&str; 5] = [
    layout::STATE_DIR,
    // The integrity database describes this setup's files; the next setup makes its own.
    layout::AIDE_DB_DIR,
    layout::PROSODY_DATA_DIR,
    "/etc/meetbox/tls",
    "/etc/coturn/meetbox",
];

/// Erases the box's per-device state below `root`; the caller restarts it.
pub fn erase(root: &Root) -> Result<()> {
    let domain = State::load(root)
        .ok()
        .and_then(|state| state.settings)
        .map(|settings| settings.domain.to_string());
    if root.is_live() {
        // Nothing may write what is being erased; the web admin's own units stay, since their
        // helper is what runs this.
        let mut stop = Command::new("systemctl");
        stop.arg("stop")
            .args(services::STACK)
            .arg(services::ACME_TIMER)
            .args(services::ADDRESS_WATCH);
        let _ = stop.status();
    }
    for dir in EMPTIED {
        empty(root, dir)?;
    }
    let mut files = domain.as_deref().map(render::paths).unwrap_or_default();
    files.extend(
        [
            layout::ROOT_AUTHORIZED_KEYS,
            layout::PROSODY_SITE_LINK,
            layout::NGINX_SITE_LINK,
        ]
        .map(str::to_string),
    );
    files.extend(ssh_host_keys(root)?);
    for file in &files {
        root.remove(file)?;
    }
    jitsi_env::clear_identity(root)?;
    unlock_boot_menu(root)?;
    swap::remove(root)?;
    // systemd makes a new machine id at the next boot ("uninitialized" is its first-boot mark).
    root.write(&FileSpec::new(
        layout::MACHINE_ID,
        "uninitialized\n",
        0o444,
        Owner::ROOT,
    ))?;
    services::disable(
        root,
        &[
            &services::STACK[..],
            &[services::ACME_TIMER],
            &services::ADDRESS_WATCH[..],
            &services::ADMIN[..],
        ]
        .concat(),
    )?;
    if root.is_live() {
        let _ = Command::new("fstrim").arg("/").status();
    }
    Ok(())
}

/// Erases, then restarts the live box into the first-boot questions.
pub fn erase_and_restart(root: &Root) -> Result<String> {
    erase(root)?;
    if root.is_live() {
        let status = Command::new("systemctl")
            .args(["--no-block", "reboot"])
            .status()
            .context("cannot run systemctl reboot")?;
        anyhow::ensure!(status.success(), "systemctl reboot failed");
    }
    Ok(
        "Everything of this box is erased; it is restarting and will ask the first-boot questions."
            .into(),
    )
}

/// The boot menu back to the image's text: the next setup gives it a new superuser.
fn unlock_boot_menu(root: &Root) -> Result<()> {
    if !root.exists(layout::GRUB_CFG) {
        return Ok(());
    }
    let menu = root.read_to_string(layout::GRUB_CFG)?;
    if !menu.contains(render::boot_menu::SUPERUSER_MARKER) {
        return Ok(());
    }
    let image_text = render::boot_menu::without_superuser(&menu)?;
    root.write(&FileSpec::new(
        layout::GRUB_CFG,
        image_text,
        0o600,
        Owner::ROOT,
    ))
    .context("cannot take the superuser out of the boot menu")
}

fn empty(root: &Root, dir: &str) -> Result<()> {
    let path = root.path(dir);
    let entries = match std::fs::read_dir(&path) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(error).with_context(|| format!("cannot list {}", path.display())),
    };
    for entry in entries.flatten() {
        let entry_path = entry.path();
        let removed = if entry.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&entry_path)
        } else {
            std::fs::remove_file(&entry_path)
        };
        removed.with_context(|| format!("cannot remove {}", entry_path.display()))?;
    }
    Ok(())
}

fn ssh_host_keys(root: &Root) -> Result<Vec<String>> {
    let dir = root.path("/etc/ssh");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(Vec::new());
    };
    Ok(entries
        .flatten()
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|name| name.starts_with("ssh_host_"))
        .map(|name| format!("/etc/ssh/{name}"))
        .collect())
}
