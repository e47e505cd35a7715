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
/// The web admin (admin/): started, never restarted, by setup and reconfiguration, since its
/// helper is what runs a reconfiguration from the admin.
pub const ADMIN: [&str; 2] = ["meetbox-admin-helper.service", "meetbox-admin.service"];
/// Runs `meetbox-firstboot renew` hourly: renewals and retries after a failed validation.
pub const ACME_TIMER: &str = "meetbox-acme.timer";
/// Run `meetbox-firstboot follow-address` every five minutes and on a new DHCP lease.
pub const ADDRESS_WATCH: [&str; 2] = ["meetbox-address.timer", "meetbox-address.path"];

/// Makes the file integrity database once setup has finished (overlay's unit; a no-op when the
/// database exists).
pub const INTEGRITY_INIT: &str = "meetbox-integrity-init.service";

/// True when the target has a unit file for `unit`, or an init script that systemd's SysV
/// generator turns into that unit (jicofo ships only `/etc/init.d/jicofo`; `systemctl enable` then
/// runs update-rc.d, as the package's own scripts do).
pub fn installed(root: &Root, unit: &str) -> bool {
    let sysv = unit
        .strip_suffix(".service")
        .is_some_and(|name| root.exists(&format!("/etc/init.d/{name}")));
    sysv || [
        "/usr/lib/systemd/system",
        "/lib/systemd/system",
        "/etc/systemd/system",
    ]
    .iter()
    .any(|dir| root.exists(&format!("{dir}/{unit}")))
}

/// Enables `units` in the target; on the live system also (re)starts them now.
pub fn enable_and_restart(root: &Root, units: &[&str]) -> Result<Vec<String>> {
    enable_then(root, units, "restart")
}

/// Enables `units` in the target; on the live system also starts those not running.
pub fn enable_and_start(root: &Root, units: &[&str]) -> Result<Vec<String>> {
    enable_then(root, units, "start")
}

fn enable_then(root: &Root, units: &[&str], verb: &str) -> Result<Vec<String>> {
    let present = present(root, units);
    if present.is_empty() {
        return Ok(Vec::new());
    }
    run(systemctl_on(root).arg("enable").args(&present))?;
    if root.is_live() && systemd_running() {
        for unit in &present {
            run(Command::new("systemctl").args([verb, unit]))?;
        }
    }
    Ok(present.iter().map(|u| u.to_string()).collect())
}

/// Queues `unit` on the live system without waiting for it (work that may take minutes after
/// setup, such as the integrity database); nothing to do under `--root` or without systemd.
pub fn start_in_background(root: &Root, unit: &str) -> Result<()> {
    if !root.is_live() || !systemd_running() || !installed(root, unit) {
        return Ok(());
    }
    run(Command::new("systemctl").args(["start", "--no-block", unit]))
}

/// Disables `units` in the target (factory reset: off until setup again, as the image ships them).
pub fn disable(root: &Root, units: &[&str]) -> Result<()> {
    let present = present(root, units);
    if present.is_empty() {
        return Ok(());
    }
    run(systemctl_on(root).arg("disable").args(&present))
}

/// The units of `units` the target has.
fn present<'a>(root: &Root, units: &[&'a str]) -> Vec<&'a str> {
    units
        .iter()
        .copied()
        .filter(|u| installed(root, u))
        .collect()
}

/// systemctl acting on the target: the running system, or `--root`.
fn systemctl_on(root: &Root) -> Command {
    let mut systemctl = Command::new("systemctl");
    if !root.is_live() {
        systemctl.arg(format!("--root={}", root.dir().display()));
    }
    systemctl
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

/// Restarts those of `units` that run now, on the live system (a changed configuration); the
/// units restarted.
pub fn restart_running(root: &Root, units: &[&str]) -> Result<Vec<String>> {
    if !root.is_live() || !systemd_running() {
        return Ok(Vec::new());
    }
    let present = present(root, units);
    for unit in &present {
        run(Command::new("systemctl").args(["try-restart", unit]))?;
    }
    Ok(present.iter().map(|u| u.to_string()).collect())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_unit_file_or_an_init_script_counts_as_installed() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        let put = |path: &str| {
            let file = root.path(path);
            std::fs::create_dir_all(file.parent().unwrap()).unwrap();
            std::fs::write(file, "").unwrap();
        };
        put("/usr/lib/systemd/system/jitsi-videobridge2.service");
        put("/etc/init.d/jicofo");
        assert!(installed(&root, "jitsi-videobridge2.service"));
        assert!(installed(&root, "jicofo.service"));
        assert!(!installed(&root, "prosody.service"));
        // An init script stands for a service, not for a timer or a socket.
        put("/etc/init.d/meetbox-acme");
        assert!(!installed(&root, "meetbox-acme.timer"));
    }
}
