//! AIDE's configuration (CIS 6.1): which files the box's integrity database describes. The
//! database itself is made on the box after setup and checked daily (the on-box crate's
//! integrity.rs, with the units in overlay/); the build only decides what is in it.
//!
//! In: the programs, libraries, configuration and boot files (`/usr`, `/etc`, `/boot`), with
//! every attribute and SHA-512, and the audit tools with exactly the attributes CIS names. Out:
//! what changes by design without anyone acting: the certificates the box renews itself, the ESP
//! (the firmware checks the signatures of what boots from it, and it carries the answers file and
//! backups), and everything in /var, /run and /home, where the agent's, prosody's and the
//! services' data live.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{Context, Result};
use meetbox_firstboot::layout;

/// Where AIDE reads its configuration (the on-box crate runs it with this file).
pub const AIDE_CONF: &str = "etc/aide/aide.conf";

/// The directory trees the database describes.
const DESCRIBED: [&str; 3] = ["/boot", "/etc", "/usr"];

/// Paths below [`DESCRIBED`] that change by design: renewed certificates (the agent's, and
/// coturn's copy) and the ESP.
const LEFT_OUT: [&str; 3] = ["/etc/meetbox/tls", "/etc/coturn/meetbox", "/boot/efi"];

/// CIS 6.1.3: the audit tools, each with these attributes (SSG's check matches the string).
const AUDIT_TOOLS: [&str; 6] = [
    "/usr/sbin/auditctl",
    "/usr/sbin/auditd",
    "/usr/sbin/ausearch",
    "/usr/sbin/aureport",
    "/usr/sbin/autrace",
    "/usr/sbin/augenrules",
];
const AUDIT_TOOL_ATTRIBUTES: &str = "p+i+n+u+g+s+b+acl+xattrs+sha512";

/// aide.conf for AIDE 0.18 (Ubuntu 24.04 and Debian 12).
pub fn render_aide_conf() -> String {
    let db_dir = layout::AIDE_DB_DIR;
    let file_name = |path: &str| path.rsplit('/').next().unwrap_or(path).to_string();
    let mut text = format!(
        "# Written by meetbox build (builder/src/tree/integrity.rs). The database is made on the box\n\
         # after setup and compared daily: meetbox-integrity-init.service, dailyaidecheck.timer.\n\
         @@define DBDIR {db_dir}\n\
         # `database` is the name CIS's check reads; AIDE 0.18 takes it as database_in (and says so).\n\
         database=file:@@{{DBDIR}}/{db}\n\
         database_out=file:@@{{DBDIR}}/{db_new}\n\
         gzip_dbout=yes\n\
         report_url=stdout\n\
         # Type, permissions, inode, links, owner, group, size, blocks, times, ACLs, extended\n\
         # attributes and content.\n\
         Described = p+i+n+u+g+s+b+m+c+acl+xattrs+sha512\n\n",
        db = file_name(layout::AIDE_DB),
        db_new = file_name(layout::AIDE_DB_NEW),
    );
    text.push_str("# CIS 6.1.3: the audit tools.\n");
    for tool in AUDIT_TOOLS {
        text.push_str(&format!("{tool} {AUDIT_TOOL_ATTRIBUTES}\n"));
    }
    text.push_str("\n# The programs, libraries, configuration and boot files.\n");
    for tree in DESCRIBED {
        text.push_str(&format!("{tree} Described\n"));
    }
    text.push_str("\n# Changed by the box itself: renewed certificates; the ESP.\n");
    for path in LEFT_OUT {
        text.push_str(&format!("!{path}(/.*)?$\n"));
    }
    text
}

/// Installs AIDE's configuration, and the directory its database is made in on the box
/// (the units' sandbox needs it to exist).
pub(super) fn install(tree: &Path) -> Result<()> {
    super::install_file(render_aide_conf().as_bytes(), &tree.join(AIDE_CONF), 0o600)?;
    let db_dir = tree.join(layout::AIDE_DB_DIR.trim_start_matches('/'));
    fs::create_dir_all(&db_dir).with_context(|| format!("cannot create {}", db_dir.display()))?;
    fs::set_permissions(&db_dir, fs::Permissions::from_mode(0o700))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::test_tools::tool_path;
    use std::process::Command;

    #[test]
    fn the_database_lives_where_the_box_looks_for_it() {
        let text = render_aide_conf();
        assert!(text.contains("@@define DBDIR /var/lib/aide\n"));
        assert!(text.contains("\ndatabase=file:@@{DBDIR}/aide.db\n"));
        assert!(text.contains("\ndatabase_out=file:@@{DBDIR}/aide.db.new\n"));
        assert_eq!(
            format!("{}/aide.db", layout::AIDE_DB_DIR),
            layout::AIDE_DB,
            "the database's directory"
        );
    }

    #[test]
    fn the_audit_tools_carry_the_attributes_cis_names() {
        let text = render_aide_conf();
        for tool in AUDIT_TOOLS {
            assert!(
                text.contains(&format!("\n{tool} p+i+n+u+g+s+b+acl+xattrs+sha512\n")),
                "{tool}"
            );
        }
    }

    #[test]
    fn the_agent_s_data_and_renewed_certificates_stay_out() {
        let text = render_aide_conf();
        // Described trees hold no state of the agent's or prosody's.
        for data in [layout::STATE_DIR, layout::PROSODY_DATA_DIR] {
            assert!(
                !DESCRIBED.iter().any(|tree| data.starts_with(tree)),
                "{data}"
            );
        }
        for certificate in [layout::TLS_CERT, layout::TURN_TLS_CERT] {
            assert!(
                LEFT_OUT.iter().any(|out| certificate.starts_with(out)),
                "{certificate}"
            );
        }
        assert!(text.contains("\n!/etc/meetbox/tls(/.*)?$\n"));
    }

    /// AIDE itself reads the file (tests/run installs it).
    #[test]
    fn aide_accepts_the_configuration() {
        let Some(aide) = tool_path("aide", "aide") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("aide.conf");
        std::fs::write(&conf, render_aide_conf()).unwrap();
        let output = Command::new(aide)
            .arg("--config-check")
            .arg("--config")
            .arg(&conf)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "aide --config-check: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
