//! The shell-style environment files of Jitsi's packages (`/etc/jitsi/videobridge/config`,
//! `/etc/jitsi/jicofo/config`): the Java heaps sized by the tuning file instead of the packages' 3 GB
//! each (more than a 4 GB box can give both), and the identity the packages' postinst reads at every
//! upgrade.
//!
//! The identity matters because each postinst decides from it whether the box is already
//! configured. jicofo's rewrites its file from scratch (losing the heap) unless `JICOFO_HOSTNAME`,
//! `JICOFO_AUTH_DOMAIN`, `JICOFO_AUTH_USER` and `JICOFO_AUTH_PASSWORD` are all set; the
//! videobridge's draws a new 8-character secret into debconf unless `JVB_HOSTNAME` and `JVB_SECRET`
//! are. With this box's values there, an upgrade keeps both files as they are (docs/jitsi.md).
//!
//! How Jitsi's Debian packages size the heap (read in their sources, jitsi/jitsi-videobridge and
//! jitsi/jicofo on GitHub):
//! - The videobridge runs `/usr/share/jitsi-videobridge/jvb.sh` (`jvb/resources/jvb.sh`, installed by
//!   `debian/install`), which starts `java -Xmx$VIDEOBRIDGE_MAX_MEMORY` and sets `3072m` when the
//!   variable is empty (in the versions read). `debian/jitsi-videobridge2.service` has
//!   `EnvironmentFile=/etc/jitsi/videobridge/config`, the shell-style file `debian/postinst` writes; the
//!   project's README names that file and `VIDEOBRIDGE_MAX_MEMORY=8192m` as the way to change the heap.
//! - jicofo runs `/usr/share/jicofo/jicofo.sh` (`resources/jicofo.sh`, `debian/install`), which starts
//!   `java -Xmx$JICOFO_MAX_MEMORY`, `3072m` when empty. The package's start script (`debian/init.d`)
//!   sources `/etc/jitsi/jicofo/config`, written by `debian/postinst`, and exports `JICOFO_MAX_MEMORY`.
//!
//! So the agent sets those variables in those two files and keeps every other line the packages
//! wrote (`JAVA_SYS_PROPS`). A missing file means the package is not installed
//! (the `test` image has no Jitsi); it is skipped, not created.

use anyhow::{Context, Result};

use crate::apply::Root;
use crate::layout;
use crate::secrets::Secrets;
use crate::tuning::Tuning;

/// Sets each installed JVM's heap; returns one line per service for the console.
pub fn set_heaps(root: &Root, tuning: &Tuning) -> Result<Vec<String>> {
    let services = [
        (
            "jitsi-videobridge2",
            layout::JVB_ENV_FILE,
            "VIDEOBRIDGE_MAX_MEMORY",
            tuning.videobridge.heap_mb,
        ),
        (
            "jicofo",
            layout::JICOFO_ENV_FILE,
            "JICOFO_MAX_MEMORY",
            tuning.jicofo.heap_mb,
        ),
    ];
    let mut notes = Vec::new();
    for (package, file, key, heap_mb) in services {
        if !root.exists(file) {
            notes.push(format!(
                "{package} is not installed ({file} is absent): no heap to set"
            ));
            continue;
        }
        let text = root.read_to_string(file)?;
        let updated = set_shell_var(&text, key, &format!("{heap_mb}m"));
        if updated != text {
            root.replace(file, updated.as_bytes())
                .with_context(|| format!("cannot set {key} in {file}"))?;
        }
        notes.push(format!("{package}: {key}={heap_mb}m in {file}"));
    }
    Ok(notes)
}

/// Writes into each installed package's file the identity its postinst checks for: the internal
/// domain, the service account and this box's own password for it. The files stay private: the
/// packages' directories are closed to others, and the files lose any bit for others too.
pub fn set_identity(root: &Root, secrets: &Secrets) -> Result<()> {
    let jvb = [
        ("JVB_HOSTNAME", layout::XMPP_DOMAIN),
        ("JVB_SECRET", secrets.jvb_password.as_str()),
    ];
    let jicofo = [
        ("JICOFO_HOSTNAME", layout::XMPP_DOMAIN),
        ("JICOFO_AUTH_DOMAIN", layout::XMPP_AUTH_DOMAIN),
        ("JICOFO_AUTH_USER", layout::FOCUS_USER),
        ("JICOFO_AUTH_PASSWORD", secrets.focus_password.as_str()),
    ];
    for (file, values) in [
        (layout::JVB_ENV_FILE, &jvb[..]),
        (layout::JICOFO_ENV_FILE, &jicofo[..]),
    ] {
        if !root.exists(file) {
            continue;
        }
        let text = root.read_to_string(file)?;
        let updated = values.iter().fold(text.clone(), |text, (key, value)| {
            set_shell_var(&text, key, value)
        });
        if updated != text {
            root.replace(file, updated.as_bytes())
                .with_context(|| format!("cannot write the identity into {file}"))?;
        }
        root.close_to_others(file)?;
    }
    Ok(())
}

/// Empties the service accounts' passwords that [`set_identity`] wrote (factory reset).
pub fn clear_identity(root: &Root) -> Result<()> {
    for (file, key) in [
        (layout::JVB_ENV_FILE, "JVB_SECRET"),
        (layout::JICOFO_ENV_FILE, "JICOFO_AUTH_PASSWORD"),
    ] {
        if !root.exists(file) {
            continue;
        }
        let text = root.read_to_string(file)?;
        let updated = set_shell_var(&text, key, "");
        if updated != text {
            root.replace(file, updated.as_bytes())
                .with_context(|| format!("cannot clear {key} in {file}"))?;
        }
    }
    Ok(())
}

/// `text` (a shell-style `KEY=value` file) with `key` set to `value`: every active assignment of `key`
/// is replaced in place (the last one would win when the file is sourced); without one, the first
/// commented-out assignment (`#KEY=...`, where packages document a default) becomes the active line;
/// without either, the assignment is appended. Every other line stays as it is.
pub fn set_shell_var(text: &str, key: &str, value: &str) -> String {
    let assignment = format!("{key}={value}");
    let assigns = |line: &str| {
        line.trim_start()
            .strip_prefix(key)
            .is_some_and(|rest| rest.starts_with('='))
    };
    let commented = |line: &str| line.trim_start().strip_prefix('#').is_some_and(assigns);
    let mut lines: Vec<&str> = text.lines().collect();
    if lines.iter().any(|line| assigns(line)) {
        for line in lines.iter_mut().filter(|line| assigns(line)) {
            *line = &assignment;
        }
    } else if let Some(line) = lines.iter_mut().find(|line| commented(line)) {
        *line = &assignment;
    } else {
        lines.push(&assignment);
    }
    lines.iter().map(|line| format!("{line}\n")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    /// The start of what jitsi-videobridge's postinst writes.
    const JVB_CONFIG: &str = "# Jitsi Videobridge settings\n\n# sets the XMPP domain (default: none)\nJVB_HOSTNAME=meet.jitsi\n\n# extra options to pass to the JVB daemon\nJVB_OPTS=\"--apis=,\"\n";

    #[test]
    fn appends_when_absent_and_keeps_every_other_line() {
        let out = set_shell_var(JVB_CONFIG, "VIDEOBRIDGE_MAX_MEMORY", "1920m");
        assert_eq!(out, format!("{JVB_CONFIG}VIDEOBRIDGE_MAX_MEMORY=1920m\n"));
        assert_eq!(set_shell_var("A=1", "B", "2"), "A=1\nB=2\n");
        assert_eq!(set_shell_var("", "B", "2"), "B=2\n");
    }

    #[test]
    fn replaces_an_assignment_in_place_and_is_idempotent() {
        let text = "A=1\nVIDEOBRIDGE_MAX_MEMORY=3072m\nB=2\n";
        let once = set_shell_var(text, "VIDEOBRIDGE_MAX_MEMORY", "1920m");
        assert_eq!(once, "A=1\nVIDEOBRIDGE_MAX_MEMORY=1920m\nB=2\n");
        assert_eq!(
            set_shell_var(&once, "VIDEOBRIDGE_MAX_MEMORY", "1920m"),
            once
        );
        // Every active assignment: the last one would win.
        assert_eq!(
            set_shell_var("K=1\nX=0\n  K=2\n", "K", "3"),
            "K=3\nX=0\nK=3\n"
        );
    }

    #[test]
    fn a_commented_out_assignment_becomes_the_active_line() {
        let text = "# Increase the java heap\n#VIDEOBRIDGE_MAX_MEMORY=8192m\n# VIDEOBRIDGE_MAX_MEMORY=4096m\nA=1\n";
        assert_eq!(
            set_shell_var(text, "VIDEOBRIDGE_MAX_MEMORY", "1920m"),
            "# Increase the java heap\nVIDEOBRIDGE_MAX_MEMORY=1920m\n# VIDEOBRIDGE_MAX_MEMORY=4096m\nA=1\n"
        );
        // An active assignment wins over a commented one, which then stays a comment.
        assert_eq!(set_shell_var("#K=1\nK=2\n", "K", "3"), "#K=1\nK=3\n");
    }

    #[test]
    fn longer_names_and_prose_are_not_assignments() {
        let text = "JICOFO_MAX_MEMORY_EXTRA=1\n# sets JICOFO_MAX_MEMORY=... for the JVM\n";
        assert_eq!(
            set_shell_var(text, "JICOFO_MAX_MEMORY", "640m"),
            format!("{text}JICOFO_MAX_MEMORY=640m\n")
        );
    }

    #[test]
    fn sets_the_installed_services_and_skips_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        let path = root.path(layout::JVB_ENV_FILE);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, JVB_CONFIG).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        std::os::unix::fs::chown(&path, Some(4242), Some(4343)).unwrap();
        let notes = set_heaps(&root, &Tuning::CONSERVATIVE).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{JVB_CONFIG}VIDEOBRIDGE_MAX_MEMORY=1920m\n")
        );
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o640);
        assert_eq!((meta.uid(), meta.gid()), (4242, 4343));
        assert!(
            notes[0].contains("VIDEOBRIDGE_MAX_MEMORY=1920m"),
            "{notes:?}"
        );
        assert!(notes[1].contains("jicofo is not installed"), "{notes:?}");
        assert!(!root.exists(layout::JICOFO_ENV_FILE));
    }

    #[test]
    fn identity_is_what_the_postinsts_check_and_stays_private() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        let jicofo = root.path(layout::JICOFO_ENV_FILE);
        std::fs::create_dir_all(jicofo.parent().unwrap()).unwrap();
        // What jicofo's postinst writes on a new install.
        let written = "# adds java system props\nJAVA_SYS_PROPS=\"-Dx=y\"\n";
        std::fs::write(&jicofo, written).unwrap();
        std::fs::set_permissions(&jicofo, std::fs::Permissions::from_mode(0o644)).unwrap();
        let secrets = Secrets::generate().unwrap();
        set_identity(&root, &secrets).unwrap();
        let text = std::fs::read_to_string(&jicofo).unwrap();
        assert_eq!(
            text,
            format!(
                "{written}JICOFO_HOSTNAME=meet.jitsi\nJICOFO_AUTH_DOMAIN=auth.meet.jitsi\nJICOFO_AUTH_USER=focus\nJICOFO_AUTH_PASSWORD={}\n",
                secrets.focus_password
            )
        );
        assert_eq!(std::fs::metadata(&jicofo).unwrap().mode() & 0o777, 0o640);
        // Sourced the way the postinst sources it, the file makes it an existing configuration.
        let check = std::process::Command::new("bash")
            .arg("-c")
            .arg(". \"$1\"; [ -n \"$JICOFO_HOSTNAME\" ] && [ -n \"$JICOFO_AUTH_DOMAIN\" ] && [ -n \"$JICOFO_AUTH_USER\" ] && [ -n \"$JICOFO_AUTH_PASSWORD\" ]")
            .arg("-")
            .arg(&jicofo)
            .status()
            .unwrap();
        assert!(check.success());
        // Again: nothing changes; the videobridge's file is absent and stays so.
        set_identity(&root, &secrets).unwrap();
        assert_eq!(std::fs::read_to_string(&jicofo).unwrap(), text);
        assert!(!root.exists(layout::JVB_ENV_FILE));
    }
}
