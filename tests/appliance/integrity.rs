//! File integrity on the booted box: the database that setup left to be made in the background,
//! then a file nobody installed, which the daily check (started now) names on the status the
//! owner reads, with nothing else reported: the agent's and prosody's data, the logs and the
//! renewed certificates stay out of it (builder/src/tree/integrity.rs).

use std::time::{Duration, Instant};

/// Reading every file of /usr, /etc and /boot under emulation on a busy machine.
const DATABASE: Duration = Duration::from_secs(15 * 60);

/// A program nobody installed.
const INTRUDER: &str = "/usr/local/bin/meetbox-test-intruder";

/// Waits for the database setup queued; how long that took.
pub(crate) fn wait_for_database(shell: &dyn Fn(&str) -> String) -> Duration {
    let started = Instant::now();
    while shell("test -f /var/lib/aide/aide.db && echo made || true").trim() != "made" {
        assert!(
            started.elapsed() < DATABASE,
            "no integrity database {} min after setup:\n{}",
            DATABASE.as_secs() / 60,
            shell("systemctl status --no-pager meetbox-integrity-init.service 2>&1 || true")
        );
        std::thread::sleep(Duration::from_secs(10));
    }
    started.elapsed()
}

pub(crate) fn check_database_then_an_intruder(shell: &dyn Fn(&str) -> String) {
    let waited = wait_for_database(shell);
    let state = shell(
        "systemctl is-active dailyaidecheck.timer; systemctl is-enabled dailyaidecheck.timer",
    );
    assert_eq!(
        state.split_whitespace().collect::<Vec<_>>(),
        ["active", "enabled"],
        "the daily check's timer"
    );
    shell(&format!(
        "printf '#!/bin/sh\\n' > {INTRUDER}; chmod 755 {INTRUDER}"
    ));
    let check = Instant::now();
    shell("systemctl start dailyaidecheck.service");
    let status = shell("meetbox-firstboot status");
    let integrity = status
        .split("Integrity:\n")
        .nth(1)
        .and_then(|rest| rest.split("\nUpdates:").next())
        .unwrap_or_default();
    let reported: Vec<&str> = integrity
        .lines()
        .filter_map(|line| line.strip_prefix("    "))
        .collect();
    // The new file, and the directory it changed.
    assert!(
        integrity.contains("1 added, 0 removed, ")
            && integrity.contains("NO update was installed in between")
            && reported.contains(&INTRUDER)
            && reported.iter().all(|path| INTRUDER.starts_with(path)),
        "the check did not report the file added, and only it:\n{status}\n{}",
        shell("journalctl -u dailyaidecheck.service --no-pager -n 60 || true")
    );
    shell(&format!("rm {INTRUDER}"));
    eprintln!(
        "integrity: database made after setup (waited {:.0} s more), daily timer on; a file \
         nobody installed reported alone, by a check of {:.0} s",
        waited.as_secs_f64(),
        check.elapsed().as_secs_f64()
    );
}
