//! systemd: enabling units in the target, and starting or reloading them on the live system.
//! Units the target lacks (a package not installed, e.g. Jitsi on the `test` image) are skipped.

use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::apply::Root;

/// The services of the stack, in start order; sshd (when the image has it) last, once its
/// host keys are this box's own.
pub const STACK: [&str; 6] = [
    "prosody.service",
    "coturn.service",
    "jicofo.service",
    "jitsi-videobridge2.service",
    "nginx.service",
    "ssh.service",
];
/// Runs `meetbox-firstboot renew` hourly: renewals and retries after a failed validation.
pub const ACME_TIMER: &str = "meetbox-acme.timer";

/// True when the target has a unit file for `unit`.
pub fn installed(root: &Root, unit: &str) -> bool {
    [
        "/usr/lib/systemd/system",
        "/lib/systemd/system",
        "/etc/systemd/system",
    ]
    .iter()
    .any(|dir| root.exists(&format!("{dir}/{unit}")))
}

/// Enables `units` in the target; on the live system also (re)starts them now.
pub fn enable_and_restart(root: &Root, units: &[&str]) -> Result<Vec<String>> {
    let present: Vec<&str> = units
        .iter()
        .copied()
        .filter(|u| installed(root, u))
        .collect();
    if present.is_empty() {
        return Ok(Vec::new());
    }
    let mut enable = Command::new("systemctl");
    if !root.is_live() {
        enable.arg(format!("--root={}", root.dir().display()));
    }
    enable.arg("enable").args(&present);
    run(&mut enable)?;
    if root.is_live() && systemd_running() {
        for unit in &present {
            run(Command::new("systemctl").args(["restart", unit]))?;
        }
    }
    Ok(present.iter().map(|u| u.to_string()).collect())
}

/// Makes running services pick up a new certificate.
pub fn reload_for_new_certificate(root: &Root) -> Result<()> {
    if !root.is_live() || !systemd_running() {
        return Ok(());
    }
    for unit in ["nginx.service", "coturn.service"] {
        if installed(root, unit) {
            run(Command::new("systemctl").args(["try-reload-or-restart", unit]))?;
        }
    }
    Ok(())
}

fn systemd_running() -> bool {
    std::path::Path::new("/run/systemd/system").exists()
}

fn run(command: &mut Command) -> Result<()> {
    let output = command
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !output.status.success() {
        bail!(
            "{command:?} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
