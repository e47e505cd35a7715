//! Security updates on the booted box, through its own timers: apt-daily.timer and
//! apt-daily-upgrade.timer are made to fire now (a runtime drop-in: `OnActiveSec`), and the box's
//! units do the rest (`meetbox-firstboot update refresh|install`, unattended-upgrades). The packages
//! come from the host's signed repository of package-shaped Jitsi debs (jitsi.rs):
//! 1. Jitsi's next release: installed, and every file the agent owns stays as it was;
//! 2. a revision of `jitsi-meet-web` that asks for a reboot, as a kernel does: installed, the box
//!    stays up, and the reboot is scheduled for the profile's maintenance window;
//! 3. a revision whose postinst fails: the box keeps working, and `meetbox-firstboot status` names
//!    the package;
//! 4. a repository that stops answering: `status` says the lists could not be refreshed.
//!
//! The distribution's own sources are moved aside first: its archive changes under the test, and
//! its updates would make the run's length and outcome depend on the day.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::jitsi::{self, JitsiRepository};
use crate::support::apt_repo::{run, Server};
use crate::support::jitsi_packages::RELEASES;

/// One update run (lists, then unattended-upgrades) under KVM takes well under a minute; software
/// emulation on a loaded machine, several.
const UPDATE_RUN: Duration = Duration::from_secs(900);

/// The maintenance window of profiles/test.toml.
const REBOOT_TIME: &str = "03:30";

/// Scenario 2, an update that asks for a reboot: installed, and the reboot scheduled for the
/// maintenance window instead of happening now.
fn reboot_waits_for_the_window(
    shell: &dyn Fn(&str) -> String,
    repository: &JitsiRepository,
    revisions: &Revisions,
) {
    let boot_id = shell("cat /proc/sys/kernel/random/boot_id");
    repository.publish(std::slice::from_ref(&revisions.reboot));
    let (status, scheduled) = fire_timers(shell, true);
    assert!(
        installed_versions(shell).contains(&format!("jitsi-meet-web {}", Revisions::REBOOT)),
        "the revision that asks for a reboot was not installed:\n{status}"
    );
    assert_eq!(
        shell("cat /proc/sys/kernel/random/boot_id"),
        boot_id,
        "the box rebooted outside its maintenance window"
    );
    let scheduled =
        scheduled.unwrap_or_else(|| panic!("no reboot scheduled for the window:\n{status}"));
    let now: i64 = shell("date +%s").trim().parse().unwrap();
    let window = next_time_of_day(now, REBOOT_TIME);
    assert!(
        (scheduled - window).abs() <= 60,
        "the reboot is scheduled for {scheduled}, the window ({REBOOT_TIME} UTC) is at {window}"
    );
    assert!(
        status.contains("reboot: needed by jitsi-meet-web (scheduled for"),
        "status does not show the pending reboot:\n{status}"
    );
    eprintln!(
        "updates: a reboot was asked for; the box stayed up, the reboot waits for {REBOOT_TIME}"
    );
}

/// Runs every update scenario in order; `box_works` checks the services from the host after each.
pub fn check_updates_through_timers(
    shell: &dyn Fn(&str) -> String,
    repository: &JitsiRepository,
    domain: &str,
    box_works: &dyn Fn(&str),
) -> Vec<u16> {
    let mut repository_ports = Vec::new();
    shell(&format!(
        "mkdir -p /root/apt-sources-off && cd /etc/apt && \
         for f in sources.list sources.list.d/*; do \
           [ -f \"$f\" ] && [ \"/etc/apt/$f\" != {jitsi} ] && mv \"$f\" /root/apt-sources-off/ || true; \
         done; ls /root/apt-sources-off",
        jitsi = meetbox::rootfs::jitsi::SOURCES_IN_IMAGE
    ));
    make_timers_fire_on_restart(shell);

    // 1. Jitsi's next release.
    let before = jitsi::agent_files(shell, domain);
    assert!(
        before.contains("sites-enabled: meetbox.conf\n") && before.contains("local-ca:\n"),
        "after setup, nginx or the CA store carry the packages' leftovers:\n{before}"
    );
    repository.publish_newer();
    let server = repository.serve();
    repository_ports.push(server.port);
    point_jitsi_source_at(shell, &server);
    let (status, _) = fire_timers(shell, true);
    let versions = installed_versions(shell);
    for line in versions.lines() {
        assert!(
            line.contains(RELEASES[1]) && line.ends_with("install ok installed"),
            "not upgraded to {} by the timers: {line}\n{status}",
            RELEASES[1]
        );
    }
    assert!(
        status.contains("installing: ok") && status.contains("jitsi-meet-web"),
        "status does not show the upgrade:\n{status}"
    );
    assert_eq!(
        before,
        jitsi::agent_files(shell, domain),
        "the upgrade changed files the agent owns"
    );
    eprintln!(
        "updates: {} -> {} by apt's timers, every file the agent owns unchanged",
        RELEASES[0], RELEASES[1]
    );
    box_works("after the release upgrade");

    let revisions = Revisions::build(repository);
    // 2. An update that asks for a reboot.
    reboot_waits_for_the_window(shell, repository, &revisions);

    // 3. A broken update.
    repository.publish(std::slice::from_ref(&revisions.broken));
    let (status, _) = fire_timers(shell, false);
    assert!(
        status.contains("installing: FAILED")
            && status.contains("left jitsi-meet-web not configured")
            && status.contains("returned error exit status"),
        "status does not name the failed update:\n{status}"
    );
    let failed = shell("systemctl is-failed apt-daily-upgrade.service || true");
    assert_eq!(failed.trim(), "failed", "the failed update's unit");
    box_works("after a failed update");
    eprintln!("updates: a broken package failed to configure; the box works and says so");

    // 4. The repository stops answering: the lists' run fails (the upgrade's run after it would
    // find nothing new, and is not waited for).
    drop(server);
    let status = fire_refresh(shell);
    assert!(
        status.contains("package lists: FAILED") && status.contains("Failed to fetch"),
        "status does not say the lists could not be refreshed:\n{status}"
    );
    box_works("with the repository gone");
    eprintln!("updates: an unreachable repository is reported, the box works");
    repository_ports
}

/// Both apt timers fire a few seconds after each restart, the lists first: the upgrade unit is
/// ordered after the lists' (`After=apt-daily.service`), so it waits while they are fetched.
fn make_timers_fire_on_restart(shell: &dyn Fn(&str) -> String) {
    for (timer, after) in [("apt-daily.timer", 1), ("apt-daily-upgrade.timer", 3)] {
        shell(&format!(
            "mkdir -p /run/systemd/system/{timer}.d && \
             printf '[Timer]\\nOnActiveSec={after}s\\nRandomizedDelaySec=0\\nAccuracySec=1s\\n' \
             > /run/systemd/system/{timer}.d/zz-test-now.conf"
        ));
    }
    shell("systemctl daemon-reload");
}

/// Restarts both timers, waits until the upgrade unit has run after them, and returns what
/// `meetbox-firstboot status` says then, and the reboot logind had scheduled (which is then
/// cancelled). `succeed`: whether both runs are expected to succeed.
fn fire_timers(shell: &dyn Fn(&str) -> String, succeed: bool) -> (String, Option<i64>) {
    restart_then_wait(
        shell,
        "apt-daily.timer apt-daily-upgrade.timer",
        "apt-daily-upgrade.service",
    );
    let results = shell("systemctl show -P Result apt-daily.service apt-daily-upgrade.service");
    let status = shell("meetbox-firstboot status");
    let scheduled = scheduled_reboot(shell);
    // The rest of the test must not meet the window: the schedule is what is to be shown.
    shell("shutdown -c 2>&1 || true");
    if succeed {
        assert_eq!(
            results.split_whitespace().collect::<Vec<_>>(),
            ["success", "success"],
            "an update unit failed:\n{status}\n{}",
            shell("journalctl -b -u apt-daily.service -u apt-daily-upgrade.service --no-pager | tail -60")
        );
    }
    (status, scheduled)
}

/// Restarts the lists' timer alone, waits until its unit has run, and returns what
/// `meetbox-firstboot status` says then.
fn fire_refresh(shell: &dyn Fn(&str) -> String) -> String {
    restart_then_wait(shell, "apt-daily.timer", "apt-daily.service");
    shell("meetbox-firstboot status")
}

/// Restarts `timers` and waits until `unit` has run since.
fn restart_then_wait(shell: &dyn Fn(&str) -> String, timers: &str, unit: &str) {
    let started: i64 = shell("date +%s").trim().parse().unwrap();
    shell(&format!("systemctl restart {timers}"));
    let deadline = Instant::now() + UPDATE_RUN;
    loop {
        let exited = shell(&format!(
            "systemctl show --timestamp=unix -P InactiveEnterTimestamp {unit}"
        ));
        let exited: i64 = exited.trim().trim_start_matches('@').parse().unwrap_or(0);
        if exited >= started {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{unit} did not run within {} s of its timer:\n{}",
            UPDATE_RUN.as_secs(),
            shell("systemctl list-timers --all --no-pager; journalctl -b -u apt-daily.service -u apt-daily-upgrade.service --no-pager | tail -40")
        );
        std::thread::sleep(Duration::from_secs(3));
    }
}

fn point_jitsi_source_at(shell: &dyn Fn(&str) -> String, server: &Server) {
    // QEMU's user network shows the host's 127.0.0.1 to the guest as 10.0.2.2.
    shell(&format!(
        "sed -i 's#http://[0-9.]*:[0-9]*#http://10.0.2.2:{}#' {}",
        server.port,
        meetbox::rootfs::jitsi::SOURCES_IN_IMAGE
    ));
}

fn installed_versions(shell: &dyn Fn(&str) -> String) -> String {
    shell(&format!(
        "dpkg-query -W -f '${{Package}} ${{Version}} ${{Status}}\\n' {}",
        meetbox::rootfs::jitsi::PACKAGES.join(" ")
    ))
}

/// The reboot logind has scheduled, in Unix seconds (read with the agent's own parser of busctl's
/// answer, which `status` uses too).
fn scheduled_reboot(shell: &dyn Fn(&str) -> String) -> Option<i64> {
    meetbox_firstboot::updates::scheduled_reboot(&shell(
        "busctl get-property org.freedesktop.login1 /org/freedesktop/login1 \
         org.freedesktop.login1.Manager ScheduledShutdown",
    ))
}

/// The next `HH:MM` (UTC) at or after `now`.
fn next_time_of_day(now: i64, time: &str) -> i64 {
    let (hours, minutes) = time.split_once(':').unwrap();
    let offset = hours.parse::<i64>().unwrap() * 3600 + minutes.parse::<i64>().unwrap() * 60;
    let midnight = now - now.rem_euclid(86_400);
    let today = midnight + offset;
    if today >= now {
        today
    } else {
        today + 86_400
    }
}

/// Two revisions of the newer release's `jitsi-meet-web` (which has no maintainer scripts of its
/// own), built by the test with maintainer scripts of the test's: one asks for a reboot the way
/// Ubuntu's kernel packages do, one fails to configure.
struct Revisions {
    reboot: PathBuf,
    broken: PathBuf,
}

impl Revisions {
    const REBOOT: &'static str = "1.0.10655-1+meetbox1";
    const BROKEN: &'static str = "1.0.10655-1+meetbox2";

    fn build(repository: &JitsiRepository) -> Revisions {
        let base = repository.newer_deb("jitsi-meet-web");
        let work = base.parent().unwrap().join("revisions");
        let _ = fs::remove_dir_all(&work);
        fs::create_dir_all(&work).unwrap();
        let reboot = revision(
            &base,
            &work,
            Self::REBOOT,
            "#!/bin/sh\nset -e\n# What update-notifier's notify-reboot-required does for a new kernel.\n\
             if [ \"$1\" = configure ]; then\n  echo '*** System restart required ***' > /run/reboot-required\n  \
             echo jitsi-meet-web >> /run/reboot-required.pkgs\nfi\n",
        );
        let broken = revision(
            &base,
            &work,
            Self::BROKEN,
            "#!/bin/sh\necho 'jitsi-meet-web: this revision is broken on purpose' >&2\nexit 1\n",
        );
        Revisions { reboot, broken }
    }
}

/// `base` unpacked, given `version` and `postinst`, and packed again.
fn revision(base: &Path, work: &Path, version: &str, postinst: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let tree = work.join(version);
    run(Command::new("dpkg-deb").arg("-R").arg(base).arg(&tree));
    let control = tree.join("DEBIAN/control");
    let text = fs::read_to_string(&control).unwrap();
    let text: String = text
        .lines()
        .map(|line| {
            if line.starts_with("Version: ") {
                format!("Version: {version}\n")
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    fs::write(&control, text).unwrap();
    let script = tree.join("DEBIAN/postinst");
    fs::write(&script, postinst).unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    let deb = work.join(format!("jitsi-meet-web_{version}_all.deb"));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&tree)
        .arg(&deb));
    deb
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_next_window_is_today_or_tomorrow() {
        // 2026-12-01 00:00 UTC
        let midnight = 1_764_547_200;
        assert_eq!(
            super::next_time_of_day(midnight, "03:30"),
            midnight + 12_600
        );
        assert_eq!(
            super::next_time_of_day(midnight + 13_000, "03:30"),
            midnight + 86_400 + 12_600
        );
    }
}
