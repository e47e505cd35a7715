//! Security updates on the box: apt's own timers (moved by the build to just before the maintenance
//! window) start `meetbox-firstboot update refresh` and `update install` in place of
//! `apt.systemd.daily`, and each run's outcome is kept in `/var/lib/meetbox/updates.json` for
//! `meetbox-firstboot status`.
//!
//! Why not `apt.systemd.daily`: it exits 0 when the lists cannot be refreshed, sends apt's errors to
//! /dev/null at its default verbosity, and counts its intervals in whole days, so a box whose mirror
//! stopped answering would look healthy and a second run on the same day would do nothing. Here the
//! refresh fails on any index that cannot be fetched or verified (`--error-on=any`), the unit fails
//! with it, and the reason is recorded. Installing stays unattended-upgrades' job, with its origins,
//! its reboot in the maintenance window and its log; this module only runs it and reads the result.

use std::process::Command;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::apply::{FileSpec, Owner, Root};
use crate::clock::{self, format_time};
use crate::layout;

/// What a package asks for when it needs a reboot (the kernel's and libc's postinst write it).
pub const REBOOT_REQUIRED: &str = "/run/reboot-required";
pub const REBOOT_REQUIRED_PKGS: &str = "/run/reboot-required.pkgs";

/// The two halves of an update, each started by its own apt timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stage {
    /// Fetch and verify the package lists (apt-daily.service).
    Refresh,
    /// Install what unattended-upgrades allows, rebooting only in the window (apt-daily-upgrade.service).
    Install,
}

/// One run of one stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Run {
    /// Unix time the run ended.
    pub finished: i64,
    pub ok: bool,
    /// One line for the status screen.
    pub summary: String,
    /// apt's or dpkg's own words for what went wrong (empty when the run succeeded).
    #[serde(default)]
    pub problems: Vec<String>,
}

/// The last run of each stage, and the last successful one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRecord {
    pub refresh: Option<Run>,
    pub install: Option<Run>,
    /// Unix time of the last refresh that fetched every list.
    pub refreshed_ok: Option<i64>,
    /// Unix time of the last install run that ended with every package configured.
    pub installed_ok: Option<i64>,
}

impl UpdateRecord {
    pub fn load(root: &Root) -> Result<UpdateRecord> {
        let record = root.read_record(
            layout::UPDATES_FILE,
            "the update record",
            "remove it (the next update run writes a new one)",
        )?;
        Ok(record.unwrap_or_default())
    }

    fn save(&self, root: &Root) -> Result<()> {
        let json = serde_json::to_vec_pretty(self)?;
        root.write(&FileSpec::new(
            layout::UPDATES_FILE,
            json,
            0o644,
            Owner::ROOT,
        ))
    }

    /// Keeps `run` as the last of its stage.
    pub fn record(&mut self, stage: Stage, run: Run) {
        let (last, last_ok) = match stage {
            Stage::Refresh => (&mut self.refresh, &mut self.refreshed_ok),
            Stage::Install => (&mut self.install, &mut self.installed_ok),
        };
        if run.ok {
            *last_ok = Some(run.finished);
        }
        *last = Some(run);
    }
}

/// The outcome of `apt-get update --error-on=any` from its exit status and output.
pub fn refresh_outcome(finished: i64, succeeded: bool, output: &str) -> Run {
    let problems = apt_problems(output);
    if succeeded {
        return Run {
            finished,
            ok: true,
            summary: "package lists refreshed and verified".to_string(),
            problems: Vec::new(),
        };
    }
    Run {
        finished,
        ok: false,
        summary: "the package lists could not be refreshed; the box keeps the lists it had, \
                  and installs nothing new until a refresh succeeds"
            .to_string(),
        problems,
    }
}

/// The outcome of an unattended-upgrades run: its exit status, what it said, and the packages that
/// dpkg left unconfigured (from `dpkg-query -W -f '${Package} ${Status}\n'`).
pub fn install_outcome(finished: i64, succeeded: bool, output: &str, dpkg_status: &str) -> Run {
    let broken = unconfigured_packages(dpkg_status);
    let upgraded = output
        .lines()
        .find_map(|line| line.trim().strip_prefix("Packages that will be upgraded:"))
        .map(str::trim)
        .filter(|list| !list.is_empty());
    let mut problems = apt_problems(output);
    problems.extend(
        broken
            .iter()
            .map(|(name, status)| format!("{name}: {status}")),
    );
    if succeeded && broken.is_empty() {
        let summary = match upgraded {
            Some(list) => format!("installed: {list}"),
            None => "nothing to install".to_string(),
        };
        return Run {
            finished,
            ok: true,
            summary,
            problems,
        };
    }
    let summary = if broken.is_empty() {
        "unattended-upgrades failed; the packages in use stay as they were".to_string()
    } else {
        format!(
            "an update failed and left {} not configured; the services keep running, and the next \
             run tries again (or the distribution's next fixed version replaces it)",
            broken
                .iter()
                .map(|(name, _)| name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Run {
        finished,
        ok: false,
        summary,
        problems,
    }
}

/// apt's and unattended-upgrades' error and warning lines, each once, in order.
fn apt_problems(output: &str) -> Vec<String> {
    let mut problems: Vec<String> = Vec::new();
    for line in output.lines().map(str::trim) {
        let is_problem = ["E: ", "W: ", "Err:", "ERROR "]
            .iter()
            .any(|prefix| line.starts_with(prefix))
            || line.contains("returned error exit status");
        if is_problem && !problems.iter().any(|seen| seen == line) {
            problems.push(line.to_string());
        }
    }
    problems
}

/// Packages whose dpkg state is anything but fully installed or fully removed.
pub fn unconfigured_packages(dpkg_status: &str) -> Vec<(String, String)> {
    dpkg_status
        .lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(_, status)| {
            let state = status.split_whitespace().nth(2).unwrap_or("");
            !matches!(state, "installed" | "not-installed" | "config-files")
        })
        .map(|(name, status)| (name.to_string(), status.trim().to_string()))
        .collect()
}

/// Runs one stage on the live system, records it, and fails when the stage failed (so its unit
/// shows as failed too).
pub fn run(root: &Root, stage: Stage) -> Result<()> {
    let run = match stage {
        Stage::Refresh => {
            let (ok, output) = capture(
                Command::new("apt-get")
                    .args(["-q", "update", "--error-on=any"])
                    .env("LC_ALL", "C.UTF-8"),
            )?;
            refresh_outcome(clock::now(), ok, &output)
        }
        Stage::Install => {
            let (ok, output) = capture(
                Command::new("unattended-upgrade")
                    .arg("-v")
                    .env("LC_ALL", "C.UTF-8"),
            )?;
            let (_, dpkg_status) =
                capture(Command::new("dpkg-query").args(["-W", "-f", "${Package} ${Status}\\n"]))?;
            let run = install_outcome(clock::now(), ok, &output, &dpkg_status);
            if run.ok {
                // What apt.systemd.daily's weekly autoclean did: drop downloaded packages that
                // no mirror offers any more.
                capture(Command::new("apt-get").args(["-q", "autoclean"]))?;
            }
            run
        }
    };
    println!("{}", run.summary);
    for problem in &run.problems {
        println!("  {problem}");
    }
    let ok = run.ok;
    let mut record = UpdateRecord::load(root).unwrap_or_default();
    record.record(stage, run);
    record.save(root)?;
    anyhow::ensure!(ok, "the update's {stage:?} stage failed (see above)");
    Ok(())
}

/// Runs `command`, echoing its output (into the journal, under the unit) and returning it.
fn capture(command: &mut Command) -> Result<(bool, String)> {
    let output = command
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    print!("{text}");
    Ok((output.status.success(), text))
}

/// A reboot that an update asked for: the packages that asked, and when it happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingReboot {
    pub packages: Vec<String>,
    /// Unix time of the reboot systemd has scheduled (unattended-upgrades schedules it for the
    /// maintenance window), if any.
    pub scheduled: Option<i64>,
}

/// The pending reboot on the live system, if an update asked for one.
pub fn pending_reboot(root: &Root) -> Option<PendingReboot> {
    if !root.exists(REBOOT_REQUIRED) {
        return None;
    }
    let packages = root
        .read_to_string(REBOOT_REQUIRED_PKGS)
        .map(|text| reboot_packages(&text))
        .unwrap_or_default();
    let scheduled = if root.is_live() {
        Command::new("busctl")
            .args([
                "get-property",
                "org.freedesktop.login1",
                "/org/freedesktop/login1",
                "org.freedesktop.login1.Manager",
                "ScheduledShutdown",
            ])
            .output()
            .ok()
            .and_then(|out| scheduled_reboot(&String::from_utf8_lossy(&out.stdout)))
    } else {
        None
    };
    Some(PendingReboot {
        packages,
        scheduled,
    })
}

/// The packages in `/run/reboot-required.pkgs`, each once.
pub fn reboot_packages(text: &str) -> Vec<String> {
    let mut packages: Vec<String> = Vec::new();
    for name in text.split_whitespace() {
        if !packages.iter().any(|p| p == name) {
            packages.push(name.to_string());
        }
    }
    packages
}

/// The Unix time of a scheduled reboot from busctl's `(st) "reboot" USEC` (0 or another kind:
/// none).
pub fn scheduled_reboot(busctl: &str) -> Option<i64> {
    let mut words = busctl.split_whitespace();
    let (_, kind, usec) = (words.next()?, words.next()?, words.next()?);
    let usec: i64 = usec.parse().ok()?;
    (kind.trim_matches('"') == "reboot" && usec > 0).then_some(usec / 1_000_000)
}

/// The last run of each update stage, and a reboot an update is waiting for, as lines for
/// `status` and the admin's status page (a failure's problems indented below it).
pub fn describe(root: &Root) -> Result<Vec<String>> {
    let record = UpdateRecord::load(root)?;
    let mut lines = Vec::new();
    for (what, run, last_ok) in [
        ("package lists", &record.refresh, record.refreshed_ok),
        ("installing", &record.install, record.installed_ok),
    ] {
        let Some(run) = run else {
            lines.push(format!(
                "{what}: not run yet (apt's timers run it before the maintenance window)"
            ));
            continue;
        };
        lines.push(format!(
            "{what}: {} at {}: {}",
            if run.ok { "ok" } else { "FAILED" },
            format_time(run.finished),
            run.summary
        ));
        lines.extend(run.problems.iter().map(|problem| format!("  {problem}")));
        if !run.ok {
            lines.push(match last_ok {
                Some(at) => format!("  last success: {}", format_time(at)),
                None => "  no success yet".to_string(),
            });
        }
    }
    if let Some(reboot) = pending_reboot(root) {
        let when = reboot.scheduled.map_or_else(
            || "not scheduled yet".to_string(),
            |at| format!("scheduled for {}", format_time(at)),
        );
        lines.push(format!(
            "reboot: needed by {} ({when})",
            if reboot.packages.is_empty() {
                "an update".to_string()
            } else {
                reboot.packages.join(", ")
            }
        ));
    }
    Ok(lines)
}

/// The packages an upgrade would install now, from apt's simulation over the lists it last
/// fetched (no network, no lock); None off the live box or when apt cannot say.
pub fn pending(root: &Root) -> Option<Vec<String>> {
    if !root.is_live() {
        return None;
    }
    let output = Command::new("apt-get")
        .args(["-s", "-q", "-o", "Debug::NoLocking=1", "dist-upgrade"])
        .env("LC_ALL", "C")
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| packages_in_simulation(&String::from_utf8_lossy(&output.stdout)))
}

/// The package names of the `Inst` lines of `apt-get -s`.
pub fn packages_in_simulation(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("Inst "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn simulation_names_what_would_be_installed() {
        let text = "Reading package lists...\nInst libssl3t64 [3.0.13-0ubuntu3.5] (3.0.13-0ubuntu3.6 Ubuntu:24.04/noble-security [amd64])\nConf libssl3t64 (3.0.13-0ubuntu3.6 Ubuntu:24.04/noble-security [amd64])\nInst openssl [3.0.13-0ubuntu3.5] (3.0.13-0ubuntu3.6 Ubuntu:24.04/noble-security [amd64])\n";
        assert_eq!(packages_in_simulation(text), ["libssl3t64", "openssl"]);
        assert!(packages_in_simulation("0 upgraded, 0 newly installed").is_empty());
    }

    use super::*;

    #[test]
    fn a_refresh_that_cannot_reach_a_mirror_is_a_failure_with_apts_reason() {
        let output = "Hit:1 http://archive.ubuntu.com/ubuntu noble InRelease\n\
                      Err:2 http://10.0.2.2:8080/stable ./ InRelease\n  Could not connect to 10.0.2.2:8080 (10.0.2.2). - connect (111: Connection refused)\n\
                      Reading package lists...\n\
                      E: Failed to fetch http://10.0.2.2:8080/stable/./InRelease  Could not connect to 10.0.2.2:8080 (10.0.2.2). - connect (111: Connection refused)\n\
                      E: Some index files failed to download. They have been ignored, or old ones used instead.\n";
        let run = refresh_outcome(100, false, output);
        assert!(!run.ok);
        assert!(run.summary.contains("could not be refreshed"));
        assert_eq!(run.problems.len(), 3, "{:?}", run.problems);
        assert!(run.problems[1].starts_with("E: Failed to fetch http://10.0.2.2:8080"));
        let ok = refresh_outcome(
            100,
            true,
            "Hit:1 http://archive.ubuntu.com/ubuntu noble InRelease\n",
        );
        assert!(ok.ok && ok.problems.is_empty());
    }

    #[test]
    fn an_install_names_what_it_upgraded_or_what_it_left_broken() {
        let fine = "jicofo install ok installed\nold-thing deinstall ok config-files\n";
        let run = install_outcome(
            7,
            true,
            "Packages that will be upgraded: jicofo jitsi-meet-web\nAll upgrades installed\n",
            fine,
        );
        assert_eq!(
            (run.ok, run.summary.as_str()),
            (true, "installed: jicofo jitsi-meet-web")
        );
        let run = install_outcome(
            7,
            true,
            "No packages found that can be upgraded unattended\n",
            fine,
        );
        assert_eq!(run.summary, "nothing to install");

        let broken = "jicofo install ok installed\njitsi-meet-web install ok half-configured\n";
        let output = "Packages that will be upgraded: jitsi-meet-web\n\
                      dpkg: error processing package jitsi-meet-web (--configure):\n \
                      installed jitsi-meet-web package post-installation script subprocess returned error exit status 1\n\
                      ERROR Installing the upgrades failed!\n";
        let run = install_outcome(8, false, output, broken);
        assert!(!run.ok);
        assert!(
            run.summary.contains("left jitsi-meet-web not configured"),
            "{}",
            run.summary
        );
        assert!(run
            .problems
            .iter()
            .any(|p| p.contains("returned error exit status 1")));
        assert!(run
            .problems
            .iter()
            .any(|p| p == "jitsi-meet-web: install ok half-configured"));
        // A clean exit with a package left half-way is still a failure.
        assert!(!install_outcome(8, true, "", broken).ok);
    }

    #[test]
    fn the_record_keeps_the_last_run_and_the_last_success_of_each_stage() {
        let mut record = UpdateRecord::default();
        record.record(Stage::Refresh, refresh_outcome(10, true, ""));
        record.record(
            Stage::Refresh,
            refresh_outcome(20, false, "E: Failed to fetch x\n"),
        );
        record.record(Stage::Install, install_outcome(30, true, "", ""));
        assert_eq!(record.refreshed_ok, Some(10));
        assert_eq!(
            record.refresh.as_ref().map(|r| (r.finished, r.ok)),
            Some((20, false))
        );
        assert_eq!(record.installed_ok, Some(30));

        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        assert_eq!(UpdateRecord::load(&root).unwrap(), UpdateRecord::default());
        record.save(&root).unwrap();
        assert_eq!(UpdateRecord::load(&root).unwrap(), record);
        std::fs::write(root.path(layout::UPDATES_FILE), "{").unwrap();
        let err = UpdateRecord::load(&root).unwrap_err();
        assert!(format!("{err:#}").contains("remove it"), "{err:#}");
    }

    #[test]
    fn a_pending_reboot_names_its_packages_and_loginds_schedule() {
        assert_eq!(
            reboot_packages("linux-image-6.8.0-50-generic\nlibc6\nlibc6\n"),
            ["linux-image-6.8.0-50-generic", "libc6"]
        );
        assert_eq!(
            scheduled_reboot("(st) \"reboot\" 1764648000000000\n"),
            Some(1_764_648_000)
        );
        assert_eq!(scheduled_reboot("(st) \"\" 0\n"), None);
        assert_eq!(
            scheduled_reboot("(st) \"poweroff\" 1764648000000000\n"),
            None
        );

        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        assert_eq!(pending_reboot(&root), None);
        std::fs::create_dir_all(root.path("/run")).unwrap();
        std::fs::write(
            root.path(REBOOT_REQUIRED),
            "*** System restart required ***\n",
        )
        .unwrap();
        std::fs::write(root.path(REBOOT_REQUIRED_PKGS), "libc6\n").unwrap();
        assert_eq!(
            pending_reboot(&root),
            Some(PendingReboot {
                packages: vec!["libc6".to_string()],
                scheduled: None
            })
        );
    }
}
