//! File integrity (CIS 6.1): AIDE's database of the system's programs, libraries, configuration
//! and boot files, made on the box once setup has finished, then compared daily.
//!
//! Made on the box, not by the build: each box's database then describes the files it really
//! runs, its per-device configuration included, and no database travels in the image.
//!
//! The daily check (`dailyaidecheck.timer`, the unit name CIS looks for) reports what changed since
//! the previous check, then takes the present files as the reference. The box updates itself
//! every night, and a check against the first day's files would list every update's files
//! forever, hiding the one change that matters. The record says whether updates were installed
//! in between, so a change with no update beside it is what stands out on the status page.
//! Which files AIDE reads, and what it leaves out (the agent's and prosody's data, the
//! certificates that renew themselves), is the build's aide.conf (builder/src/tree/integrity.rs).

use std::process::Command;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::apply::{FileSpec, Owner, Root};
use crate::clock::{self, format_time};
use crate::layout;
use crate::updates::UpdateRecord;

/// What `meetbox-firstboot integrity` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Action {
    /// Make the database, once, after setup (meetbox-integrity-init.service).
    Init,
    /// Compare the files with the database, then make the present files the reference
    /// (dailyaidecheck.service, daily).
    Check,
}

/// How many changed paths the record keeps (the journal has AIDE's whole report).
const KEPT_PATHS: usize = 20;

/// One comparison with the database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckRun {
    /// Unix time the check ended.
    pub finished: i64,
    pub added: u64,
    pub removed: u64,
    pub changed: u64,
    /// The first changed, added or removed paths, as AIDE lists them.
    #[serde(default)]
    pub paths: Vec<String>,
    /// Whether an update run installed packages between the previous check and this one.
    pub updates_in_between: bool,
}

impl CheckRun {
    pub fn differences(&self) -> u64 {
        self.added + self.removed + self.changed
    }
}

/// When the database was made and the last check, in `/var/lib/meetbox/integrity.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntegrityRecord {
    /// Unix time the database was first made.
    pub database_made: Option<i64>,
    pub last_check: Option<CheckRun>,
}

impl IntegrityRecord {
    pub fn load(root: &Root) -> Result<IntegrityRecord> {
        let record = root.read_record(
            layout::INTEGRITY_FILE,
            "the integrity record",
            "remove it (the next check writes a new one)",
        )?;
        Ok(record.unwrap_or_default())
    }

    fn save(&self, root: &Root) -> Result<()> {
        root.write(&FileSpec::new(
            layout::INTEGRITY_FILE,
            serde_json::to_vec_pretty(self)?,
            0o600,
            Owner::ROOT,
        ))
    }
}

/// The counts and paths of an AIDE report (`--check`, `--update`; AIDE 0.18's layout).
pub fn parse_report(report: &str) -> (u64, u64, u64, Vec<String>) {
    let count = |label: &str| {
        report
            .lines()
            .find_map(|line| line.trim().strip_prefix(label))
            .and_then(|rest| rest.trim().parse().ok())
            .unwrap_or(0)
    };
    // Entry lines: a file type, then `+` (added), `-` (removed) or a space and the changed
    // attributes, then `: /path`: `f++++++++++++++++: /etc/x`, `f >.... mc..H..   : /usr/bin/y`.
    let paths = report
        .lines()
        .take_while(|line| !line.starts_with("Detailed information about changes"))
        .filter_map(|line| {
            let (flags, path) = line.split_once(": /")?;
            let mut chars = flags.chars();
            let kind = chars.next()?;
            let mark = chars.next()?;
            ("fdlbcps".contains(kind) && "+- ".contains(mark))
                .then(|| format!("/{}", path.trim_end()))
        })
        .take(KEPT_PATHS)
        .collect();
    (
        count("Added entries:"),
        count("Removed entries:"),
        count("Changed entries:"),
        paths,
    )
}

/// AIDE's exit status: 0 to 7 are the bits of "added", "removed" and "changed"; above, an error.
pub fn found_differences(status: i32) -> Result<bool> {
    match status {
        0 => Ok(false),
        1..=7 => Ok(true),
        code => bail!(
            "aide failed with exit status {code} (its message is above); check {} with \
             `aide --config-check --config {}`",
            layout::AIDE_CONF,
            layout::AIDE_CONF
        ),
    }
}

/// Runs `action` on the live box.
pub fn run(root: &Root, action: Action) -> Result<()> {
    if !root.is_live() {
        bail!("the integrity database describes the running system: run without --root");
    }
    let mut record = IntegrityRecord::load(root)?;
    match action {
        Action::Init => {
            if root.exists(layout::AIDE_DB) {
                println!("The integrity database exists already; nothing to do.");
                return Ok(());
            }
            aide("--init")?;
            promote_new_database(root)?;
            record.database_made = Some(clock::now());
            record.save(root)?;
            println!("Integrity database made.");
        }
        Action::Check => {
            if !root.exists(layout::AIDE_DB) {
                bail!(
                    "there is no integrity database yet: it is made after setup \
                     (systemctl start meetbox-integrity-init.service)"
                );
            }
            let report = aide("--update")?;
            let (added, removed, changed, paths) = parse_report(&report);
            let previous = record.last_check.as_ref().map(|run| run.finished);
            let since = previous.or(record.database_made).unwrap_or(0);
            let updates_in_between = UpdateRecord::load(root)
                .ok()
                .and_then(|updates| updates.installed_ok)
                .is_some_and(|installed| installed >= since);
            let run = CheckRun {
                finished: clock::now(),
                added,
                removed,
                changed,
                paths,
                updates_in_between,
            };
            promote_new_database(root)?;
            println!("{}", describe_check(&run));
            record.last_check = Some(run);
            record.save(root)?;
        }
    }
    Ok(())
}

/// Runs aide with one command and its configuration, echoing the report (the unit's journal) and
/// returning it.
fn aide(command: &str) -> Result<String> {
    let output = Command::new("aide")
        .args(["--config", layout::AIDE_CONF, command])
        .env("LC_ALL", "C.UTF-8")
        .output()
        .context("cannot run aide: is the aide package installed?")?;
    let report = String::from_utf8_lossy(&output.stdout).into_owned();
    print!("{report}");
    eprint!("{}", String::from_utf8_lossy(&output.stderr));
    let status = output.status.code().unwrap_or(-1);
    found_differences(status)?;
    Ok(report)
}

/// `aide.db.new` becomes `aide.db` in one rename: a check never reads a half-written database.
fn promote_new_database(root: &Root) -> Result<()> {
    let new = root.path(layout::AIDE_DB_NEW);
    let current = root.path(layout::AIDE_DB);
    std::fs::rename(&new, &current).with_context(|| {
        format!(
            "aide wrote no {}: see its report above",
            layout::AIDE_DB_NEW
        )
    })
}

/// One line for the status screen about the last check.
pub fn describe_check(run: &CheckRun) -> String {
    let when = format_time(run.finished);
    if run.differences() == 0 {
        return format!("no file changed ({when})");
    }
    let mut line = format!(
        "{} added, {} removed, {} changed since the previous check ({when})",
        run.added, run.removed, run.changed
    );
    line.push_str(if run.updates_in_between {
        "; updates were installed in between"
    } else {
        "; NO update was installed in between: look at the paths"
    });
    line
}

/// The lines `meetbox-firstboot status` and the web admin show.
pub fn describe(root: &Root) -> Result<Vec<String>> {
    let record = IntegrityRecord::load(root)?;
    let mut lines = Vec::new();
    match record.database_made {
        None => lines.push("database: not made yet (it is made after setup)".to_string()),
        Some(made) => lines.push(format!("database: made {}", format_time(made))),
    }
    if let Some(run) = &record.last_check {
        lines.push(format!("last check: {}", describe_check(run)));
        lines.extend(run.paths.iter().map(|path| format!("  {path}")));
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of AIDE 0.18.3's report after one file was changed and one added.
    const REPORT: &str = "Start timestamp: 2026-12-02 21:54:22 +0000 (AIDE 0.18.3)
AIDE found differences between database and filesystem!!

Summary:
  Total number of entries:\t229
  Added entries:\t\t1
  Removed entries:\t\t0
  Changed entries:\t\t1

---------------------------------------------------
Added entries:
---------------------------------------------------

f++++++++++++++++: /etc/cron.d/intruder

---------------------------------------------------
Changed entries:
---------------------------------------------------

f >.... mc..H..   : /usr/bin/login

---------------------------------------------------
Detailed information about changes:
---------------------------------------------------

File: /usr/bin/login
 Size      : 537                              | 539
";

    #[test]
    fn the_report_gives_the_counts_and_the_paths() {
        let (added, removed, changed, paths) = parse_report(REPORT);
        assert_eq!((added, removed, changed), (1, 0, 1));
        assert_eq!(paths, ["/etc/cron.d/intruder", "/usr/bin/login"]);
    }

    #[test]
    fn a_clean_report_has_no_paths() {
        let clean = "Start timestamp: 2026-12-02 21:54:22 +0000 (AIDE 0.18.3)\n\
                     AIDE found NO differences between database and filesystem. Looks okay!!\n\n\
                     Number of entries:\t229\n";
        assert_eq!(parse_report(clean), (0, 0, 0, Vec::new()));
    }

    #[test]
    fn exit_statuses_above_seven_are_errors_that_name_the_configuration() {
        assert!(!found_differences(0).unwrap());
        assert!(found_differences(5).unwrap());
        let error = found_differences(17).unwrap_err().to_string();
        assert!(error.contains("exit status 17") && error.contains("/etc/aide/aide.conf"));
    }

    #[test]
    fn a_change_without_an_update_stands_out() {
        let mut run = CheckRun {
            finished: 0,
            added: 1,
            removed: 0,
            changed: 0,
            paths: vec!["/etc/cron.d/intruder".into()],
            updates_in_between: false,
        };
        assert!(describe_check(&run).contains("NO update was installed"));
        run.updates_in_between = true;
        assert!(describe_check(&run).contains("updates were installed in between"));
        run.added = 0;
        assert!(describe_check(&run).starts_with("no file changed"));
    }

    #[test]
    fn the_record_keeps_its_fields_and_refuses_unknown_ones() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        assert_eq!(
            describe(&root).unwrap(),
            ["database: not made yet (it is made after setup)"]
        );
        let record = IntegrityRecord {
            database_made: Some(1_700_000_000),
            last_check: None,
        };
        record.save(&root).unwrap();
        assert_eq!(IntegrityRecord::load(&root).unwrap(), record);
        std::fs::write(
            root.path(layout::INTEGRITY_FILE),
            r#"{"database_made": 1, "last_check": null, "extra": 1}"#,
        )
        .unwrap();
        let error = format!("{:#}", IntegrityRecord::load(&root).unwrap_err());
        assert!(
            error.contains("integrity record") && error.contains("remove it"),
            "{error}"
        );
    }
}
