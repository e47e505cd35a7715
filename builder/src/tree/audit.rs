//! The audit trail (CIS 6.3): auditd with the CIS rules, kept private and unable to stop the box.
//!
//! - **Private.** The log lives in memory (`/var/log/audit` is a tmpfs of its own, tree/mounts.rs),
//!   and the record types that carry a client's address or host name (logins, PAM sessions, SSH's
//!   key exchange, socket addresses, packet logs) are excluded before they reach auditd at all. No
//!   rule watches the meeting services; their accounts run without a login uid, and the rules
//!   follow login uids.
//! - **Unable to stop the box.** auditd rotates five files of 6 MB inside a 64 MB file system;
//!   running low, it writes to the journal and rotates instead of halting or suspending.
//! - **CIS rules**, rendered here: time, accounts, network configuration, AppArmor policy, logins
//!   and sessions, permission changes, failed accesses, deletions, mounts, kernel modules, every
//!   set-user-ID and set-group-ID program of the image ([`privileged_programs`]), and the rules
//!   locked until the next boot (`-e 2`).

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use anyhow::{Context, Result};

/// Rules files, read by augenrules in name order when auditd starts.
pub const PRIVACY_RULES: &str = "etc/audit/rules.d/10-meetbox-privacy.rules";
pub const CIS_RULES: &str = "etc/audit/rules.d/50-meetbox-cis.rules";
pub const FINAL_RULES: &str = "etc/audit/rules.d/99-meetbox-finalize.rules";
/// The daemon's main file (the package's, with [`AUDITD_SETTINGS`] set).
pub const AUDITD_CONF: &str = "etc/audit/auditd.conf";

/// Kernel arguments: audit from the first process on, with room for the events of early boot.
pub const KERNEL_AUDIT: &str = "audit=1 audit_backlog_limit=8192";

/// Directories the CIS watches name that a minimal image lacks; a watch needs its directory.
pub const WATCHED_DIRECTORIES: [&str; 3] = ["etc/sudoers.d", "etc/network", "etc/netplan"];

/// auditd.conf settings: (key, value). Five files of 6 MB rotate inside the 64 MB tmpfs, so the
/// space thresholds are never reached by the log itself; if they are, the journal says so and
/// auditd rotates: nothing halts, suspends or drops to single-user mode on an unattended box.
pub const AUDITD_SETTINGS: [(&str, &str); 12] = [
    ("log_file", "/var/log/audit/audit.log"),
    ("log_group", "root"),
    ("max_log_file", "6"),
    ("num_logs", "5"),
    ("max_log_file_action", "ROTATE"),
    ("space_left", "16"),
    ("space_left_action", "SYSLOG"),
    ("action_mail_acct", "root"),
    ("admin_space_left", "8"),
    ("admin_space_left_action", "ROTATE"),
    ("disk_full_action", "ROTATE"),
    ("disk_error_action", "SYSLOG"),
];

/// Record types that carry a peer's address or host name (`addr=`, `hostname=`, `saddr=`).
const PRIVATE_RECORD_TYPES: [&str; 21] = [
    "USER_AUTH",
    "USER_ACCT",
    "USER_MGMT",
    "USER_CHAUTHTOK",
    "USER_ERR",
    "USER_LOGIN",
    "USER_LOGOUT",
    "USER_START",
    "USER_END",
    "USER_CMD",
    "CRED_ACQ",
    "CRED_DISP",
    "CRED_REFR",
    "CRYPTO_KEY_USER",
    "CRYPTO_SESSION",
    "ANOM_LOGIN_FAILURES",
    "ANOM_LOGIN_TIME",
    "ANOM_LOGIN_SESSIONS",
    "ANOM_LOGIN_LOCATION",
    "SOCKADDR",
    "NETFILTER_PKT",
];

/// `auditd.conf` with [`AUDITD_SETTINGS`]: each key's line replaced where the package has it,
/// appended where it does not; everything else as the package wrote it.
pub fn render_auditd_conf(package_file: &str) -> String {
    let key_of = |line: &str| {
        line.split('=')
            .next()
            .map(str::trim)
            .unwrap_or("")
            .to_string()
    };
    let mut text = String::new();
    let mut set = Vec::new();
    for line in package_file.lines() {
        let key = key_of(line);
        match AUDITD_SETTINGS.iter().find(|(k, _)| *k == key) {
            Some((k, v)) if !line.trim_start().starts_with('#') => {
                text.push_str(&format!("{k} = {v}\n"));
                set.push(*k);
            }
            _ => {
                text.push_str(line);
                text.push('\n');
            }
        }
    }
    let missing: Vec<_> = AUDITD_SETTINGS
        .iter()
        .filter(|(k, _)| !set.contains(k))
        .collect();
    if !missing.is_empty() {
        text.push_str("# Written by meetbox build (tree/audit.rs).\n");
        for (k, v) in missing {
            text.push_str(&format!("{k} = {v}\n"));
        }
    }
    text
}

/// The exclusions that keep client addresses out of the audit trail.
pub fn render_privacy_rules() -> String {
    let mut text = String::from(
        "## Written by meetbox build (tree/audit.rs): no record that names a client's address or\n\
         ## host name is kept. Logins and sessions are audited through the files they change.\n\
         -b 8192\n",
    );
    for kind in PRIVATE_RECORD_TYPES {
        text.push_str(&format!("-a always,exclude -F msgtype={kind}\n"));
    }
    text
}

/// The CIS rules; `privileged` are the image's set-user-ID and set-group-ID programs.
pub fn render_cis_rules(privileged: &[String]) -> String {
    const HUMANS: &str = "-F auid>=1000 -F auid!=unset";
    let mut rules =
        vec!["## Written by meetbox build (tree/audit.rs): the CIS audit rules.".to_string()];
    let both = |rules: &mut Vec<String>, rest: &str| {
        for arch in ["b32", "b64"] {
            rules.push(format!("-a always,exit -F arch={arch} {rest}"));
        }
    };
    // Time.
    for call in ["adjtimex", "settimeofday"] {
        both(&mut rules, &format!("-S {call} -F key=audit_time_rules"));
    }
    both(&mut rules, "-S clock_settime -F a0=0x0 -F key=time-change");
    // Network configuration.
    both(
        &mut rules,
        "-S sethostname,setdomainname -F key=audit_rules_networkconfig_modification",
    );
    // Permission changes, by people and by root.
    for call in [
        "chmod", "fchmod", "fchmodat", "chown", "fchown", "fchownat", "lchown",
    ] {
        both(&mut rules, &format!("-S {call} {HUMANS} -F key=perm_mod"));
    }
    for call in [
        "setxattr",
        "lsetxattr",
        "fsetxattr",
        "removexattr",
        "lremovexattr",
        "fremovexattr",
    ] {
        both(&mut rules, &format!("-S {call} {HUMANS} -F key=perm_mod"));
        both(&mut rules, &format!("-S {call} -F auid=0 -F key=perm_mod"));
    }
    // Failed accesses.
    for call in ["creat", "open", "openat", "truncate", "ftruncate"] {
        for exit in ["-EACCES", "-EPERM"] {
            both(
                &mut rules,
                &format!("-S {call} -F exit={exit} {HUMANS} -F key=access"),
            );
        }
    }
    // Deletions, mounts, kernel modules, acting as another user.
    for call in ["rename", "renameat", "unlink", "unlinkat"] {
        both(&mut rules, &format!("-S {call} {HUMANS} -F key=delete"));
    }
    both(&mut rules, &format!("-S mount {HUMANS} -F key=export"));
    for call in [
        "init_module",
        "finit_module",
        "delete_module",
        "create_module",
        "query_module",
    ] {
        both(&mut rules, &format!("-S {call} {HUMANS} -F key=modules"));
    }
    both(
        &mut rules,
        "-S execve -C euid!=uid -F auid!=unset -F key=user_emulation",
    );
    // Programs that change privileges or policy.
    let mut programs: Vec<&str> = privileged.iter().map(String::as_str).collect();
    for program in [
        "/usr/bin/chacl",
        "/usr/bin/setfacl",
        "/usr/bin/chcon",
        "/usr/sbin/usermod",
        "/usr/bin/kmod",
    ] {
        if !programs.contains(&program) {
            programs.push(program);
        }
    }
    programs.sort_unstable();
    for program in programs {
        rules.push(format!(
            "-a always,exit -F path={program} -F perm=x {HUMANS} -F key=privileged"
        ));
    }
    // Files.
    let watches: [(&[&str], &str); 8] = [
        (&["/etc/localtime"], "audit_time_rules"),
        (
            &[
                "/etc/group",
                "/etc/passwd",
                "/etc/gshadow",
                "/etc/shadow",
                "/etc/security/opasswd",
                "/etc/nsswitch.conf",
                "/etc/pam.conf",
                "/etc/pam.d/",
            ],
            "audit_rules_usergroup_modification",
        ),
        (
            &[
                "/etc/issue",
                "/etc/issue.net",
                "/etc/hosts",
                "/etc/networks",
                "/etc/network/",
                "/etc/netplan/",
            ],
            "audit_rules_networkconfig_modification",
        ),
        // Without the trailing slash of SSG's own remediation text, which its check does not match.
        (&["/etc/apparmor", "/etc/apparmor.d"], "MAC-policy"),
        (&["/var/log/lastlog", "/var/run/faillock"], "logins"),
        (
            &["/var/run/utmp", "/var/log/wtmp", "/var/log/btmp"],
            "session",
        ),
        (&["/etc/sudoers", "/etc/sudoers.d/"], "actions"),
        (&["/var/log/sudo.log"], "maintenance"),
    ];
    for (paths, key) in watches {
        for path in paths {
            rules.push(format!("-w {path} -p wa -k {key}"));
        }
    }
    rules.push(String::new());
    rules.join("\n")
}

/// The last rules file: no rule changes until the next boot.
pub fn render_final_rules() -> String {
    "## Written by meetbox build (tree/audit.rs): the rules are locked until the next boot.\n-e 2\n"
        .to_string()
}

/// Every regular file of `tree` with the set-user-ID or set-group-ID bit, as absolute paths,
/// sorted.
pub fn privileged_programs(tree: &Path) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let mut stack = vec![tree.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))? {
            let entry = entry?;
            let meta = fs::symlink_metadata(entry.path())?;
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() && meta.mode() & 0o6000 != 0 {
                found.push(format!(
                    "/{}",
                    entry.path().strip_prefix(tree)?.to_string_lossy()
                ));
            }
        }
    }
    found.sort();
    Ok(found)
}

/// Installs auditd's configuration and rules, readable by root alone (CIS 6.3.4).
pub(super) fn install(tree: &Path) -> Result<()> {
    let conf = tree.join(AUDITD_CONF);
    let package_file = fs::read_to_string(&conf)
        .with_context(|| format!("cannot read {}: is auditd installed?", conf.display()))?;
    super::install_file(render_auditd_conf(&package_file).as_bytes(), &conf, 0o640)?;
    let privileged = privileged_programs(tree)?;
    crate::host::progress::detail(format!(
        "audit: CIS rules for {} set-id programs, client addresses excluded",
        privileged.len()
    ));
    for (path, text) in [
        (PRIVACY_RULES, render_privacy_rules()),
        (CIS_RULES, render_cis_rules(&privileged)),
        (FINAL_RULES, render_final_rules()),
    ] {
        super::install_file(text.as_bytes(), &tree.join(path), 0o600)?;
    }
    // The package's own rules file and the log directory, root's alone too (CIS 6.3.4.1, 6.3.4.4).
    let rules_dir = tree.join("etc/audit/rules.d");
    for entry in
        fs::read_dir(&rules_dir).with_context(|| format!("cannot read {}", rules_dir.display()))?
    {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "rules") {
            fs::set_permissions(&path, fs::Permissions::from_mode(0o600))?;
        }
    }
    let log_dir = tree.join("var/log/audit");
    fs::create_dir_all(&log_dir)?;
    fs::set_permissions(&log_dir, fs::Permissions::from_mode(0o700))?;
    for dir in WATCHED_DIRECTORIES {
        fs::create_dir_all(tree.join(dir)).with_context(|| format!("cannot create /{dir}"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auditd_conf_keeps_the_package_file_and_sets_ours() {
        let package = "# comment\nlog_file = /var/log/audit/audit.log\nmax_log_file = 8\n\
                       space_left = 75\nadmin_space_left_action = SUSPEND\nflush = INCREMENTAL_ASYNC\n";
        let text = render_auditd_conf(package);
        assert!(text.starts_with("# comment\n"), "{text}");
        assert!(text.contains("max_log_file = 6\n"));
        assert!(text.contains("space_left = 16\n"));
        assert!(text.contains("admin_space_left_action = ROTATE\n"));
        assert!(text.contains("flush = INCREMENTAL_ASYNC\n"));
        assert!(
            text.contains("disk_full_action = ROTATE\n"),
            "appended:\n{text}"
        );
        for (key, _) in AUDITD_SETTINGS {
            let lines = text
                .lines()
                .filter(|l| l.starts_with(&format!("{key} =")))
                .count();
            assert_eq!(lines, 1, "{key} in\n{text}");
        }
        // Nothing of what CIS would have it do can stop the box.
        for halt in ["HALT", "SINGLE", "SUSPEND", "keep_logs"] {
            assert!(!text.contains(halt), "{halt} in\n{text}");
        }
    }

    #[test]
    fn cis_rules_cover_both_abis_and_every_privileged_program() {
        let rules = render_cis_rules(&["/usr/bin/su".to_string(), "/usr/bin/passwd".to_string()]);
        for arch in ["b32", "b64"] {
            assert!(rules.contains(&format!(
                "-a always,exit -F arch={arch} -S chmod -F auid>=1000 -F auid!=unset -F key=perm_mod"
            )));
        }
        assert!(rules.contains(
            "-a always,exit -F path=/usr/bin/su -F perm=x -F auid>=1000 -F auid!=unset -F key=privileged"
        ));
        assert!(rules.contains("-F path=/usr/bin/kmod "));
        assert!(rules.contains("-w /etc/shadow -p wa -k audit_rules_usergroup_modification\n"));
        assert!(render_final_rules().ends_with("-e 2\n"));
    }

    #[test]
    fn no_kept_record_type_names_a_client() {
        let rules = render_privacy_rules();
        for kind in ["USER_LOGIN", "USER_AUTH", "CRYPTO_SESSION", "SOCKADDR"] {
            assert!(
                rules.contains(&format!("-a always,exclude -F msgtype={kind}\n")),
                "{kind}"
            );
        }
    }

    #[test]
    fn privileged_programs_are_the_set_id_files() {
        use std::os::unix::fs::PermissionsExt;
        let tree = tempfile::tempdir().unwrap();
        fs::create_dir_all(tree.path().join("usr/bin")).unwrap();
        for (name, mode) in [("su", 0o4755), ("wall", 0o2755), ("ls", 0o755)] {
            let path = tree.path().join("usr/bin").join(name);
            fs::write(&path, "").unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).unwrap();
        }
        assert_eq!(
            privileged_programs(tree.path()).unwrap(),
            ["/usr/bin/su", "/usr/bin/wall"]
        );
    }
}
