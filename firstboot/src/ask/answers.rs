//! The answers file (`meetbox-setup.toml` on the ESP, or `--answers FILE`): parsed strictly, validated
//! exactly like the questions, and wiped once its content is safely recorded.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::apply::Root;
use crate::ask::editors;
use crate::ask::validation::{self, Domain, TlsChoice};
use crate::layout;

/// The answers as a user writes them.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswersFile {
    domain: String,
    #[serde(default = "default_admin")]
    admin_user: String,
    admin_password: String,
    #[serde(default)]
    email: String,
    tls: String,
    acme_directory: Option<String>,
    acme_ca_cert: Option<String>,
    /// Public keys allowed to log in as root over SSH (images built with SSH on).
    #[serde(default)]
    ssh_authorized_keys: Vec<String>,
    /// A STUN server of the owner's, asked for the line's public address (network/follow.rs).
    stun_server: Option<String>,
    /// The USB installer's section, read and checked by install/ before setup.
    #[serde(default, rename = "install")]
    _install: Option<toml::Table>,
}

fn default_admin() -> String {
    "admin".into()
}

/// Validated answers, from the console or from a file. The password lives only in memory.
pub struct Answers {
    pub domain: Domain,
    pub admin_user: String,
    pub admin_password: String,
    pub email: Option<String>,
    pub tls: TlsChoice,
    pub acme_directory: Option<String>,
    pub acme_ca_cert: Option<String>,
    pub ssh_authorized_keys: Vec<String>,
    pub stun_server: Option<String>,
}

impl std::fmt::Debug for Answers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Answers")
            .field("domain", &self.domain)
            .field("admin_user", &self.admin_user)
            .field("admin_password", &"<hidden>")
            .field("email", &self.email)
            .field("tls", &self.tls)
            .field("ssh_authorized_keys", &self.ssh_authorized_keys.len())
            .finish()
    }
}

/// Parses and validates the text of an answers file; every problem found is listed.
pub fn parse(text: &str) -> Result<Answers> {
    let file: AnswersFile = toml::from_str(text).map_err(|e| {
        anyhow::anyhow!(
            "the answers file is not valid: {}\nIt takes the keys domain, admin_user, admin_password, email, tls, acme_directory, acme_ca_cert, ssh_authorized_keys, stun_server, and an [install] section.",
            e.message()
        )
    })?;
    let mut problems = Vec::new();
    let domain =
        validation::domain(&file.domain).map_err(|e| problems.push(format!("domain: {e}")));
    let admin_user =
        validation::user(&file.admin_user).map_err(|e| problems.push(format!("admin_user: {e}")));
    if let Ok(user) = &admin_user {
        if let Err(e) = validation::password(&file.admin_password, user) {
            problems.push(format!("admin_password: {e}"));
        }
    }
    let email = validation::email(&file.email).map_err(|e| problems.push(format!("email: {e}")));
    let tls = validation::tls_choice(&file.tls).map_err(|e| problems.push(format!("tls: {e}")));
    let acme_directory = file
        .acme_directory
        .as_deref()
        .map(validation::acme_directory)
        .transpose()
        .map_err(|e| problems.push(format!("acme_directory: {e}")));
    let acme_ca_cert = file
        .acme_ca_cert
        .as_deref()
        .map(validation::ca_certificate)
        .transpose()
        .map_err(|e| problems.push(format!("acme_ca_cert: {e}")));
    let mut ssh_authorized_keys = Vec::new();
    for (index, key) in file.ssh_authorized_keys.iter().enumerate() {
        match validation::ssh_public_key(key) {
            Ok(key) => ssh_authorized_keys.push(key),
            Err(e) => problems.push(format!("ssh_authorized_keys[{index}]: {e}")),
        }
    }
    let stun_server = file
        .stun_server
        .as_deref()
        .map(validation::stun_server)
        .transpose()
        .map_err(|e| problems.push(format!("stun_server: {e}")))
        .unwrap_or(None);
    match (domain, admin_user, email, tls, acme_directory, acme_ca_cert) {
        (Ok(domain), Ok(admin_user), Ok(email), Ok(tls), Ok(acme_directory), Ok(acme_ca_cert))
            if problems.is_empty() =>
        {
            Ok(Answers {
                domain,
                admin_user,
                admin_password: file.admin_password,
                email,
                tls,
                acme_directory,
                acme_ca_cert,
                ssh_authorized_keys,
                stun_server,
            })
        }
        _ => bail!(
            "the answers file has problems:\n  - {}",
            problems.join("\n  - ")
        ),
    }
}

/// Reads an answers file (without removing it), as editors save it (ask::editors).
pub fn read(path: &Path) -> Result<Answers> {
    let text = read_text(path)?;
    let answers = match (parse(&text), editors::straighten_quotes(&text)) {
        (Ok(answers), _) => Ok(answers),
        (Err(error), Some(straight)) => match parse(&straight) {
            Ok(answers) => {
                println!("Note: the answers file has curly quotes (“ ”); they were read as straight quotes.");
                Ok(answers)
            }
            Err(_) => Err(error),
        },
        (Err(error), None) => Err(error),
    };
    answers.with_context(|| format!("in {}", path.display()))
}

/// The text of an answers file, decoded as ask::editors reads it.
pub fn read_text(path: &Path) -> Result<String> {
    let bytes = fs::read(path)
        .with_context(|| format!("cannot read the answers file {}", path.display()))?;
    editors::decode(&bytes).with_context(|| format!("in {}", path.display()))
}

/// The answers file on the ESP below `root`, under any name an editor gives it.
pub fn on_esp(root: &Root) -> Result<Option<PathBuf>> {
    editors::find_in(&root.path(layout::ESP_DIR))
}

/// Overwrites the file with zeros, flushes, then removes it: the ESP is FAT, where a plain unlink
/// leaves the password in free clusters.
pub fn wipe(path: &Path) -> Result<()> {
    let len = fs::metadata(path)
        .with_context(|| format!("cannot inspect {}", path.display()))?
        .len();
    let mut file = OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open {} to wipe it", path.display()))?;
    file.write_all(&vec![0u8; len as usize])
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot overwrite {}", path.display()))?;
    drop(file);
    fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
domain = "Meet.Example.org"
admin_password = "horse staple cart moon"
tls = "self-signed"
"#;

    #[test]
    fn minimal_file_gets_defaults() {
        let answers = parse(GOOD).unwrap();
        assert_eq!(answers.domain.as_str(), "meet.example.org");
        assert_eq!(answers.admin_user, "admin");
        assert_eq!(answers.email, None);
        assert_eq!(answers.tls, TlsChoice::SelfSigned);
        assert!(
            !format!("{answers:?}").contains("staple"),
            "Debug must hide the password"
        );
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = parse(&format!("{GOOD}\nadmin_pasword = \"x\"\n")).unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown field `admin_pasword`"),
            "{err:#}"
        );
    }

    #[test]
    fn every_problem_is_listed_without_echoing_the_password() {
        let text = "domain = \"https://x\"\nadmin_password = \"short1\"\ntls = \"manual\"\nemail = \"nobody\"\n";
        let err = format!("{:#}", parse(text).unwrap_err());
        for key in ["domain:", "admin_password:", "tls:", "email:"] {
            assert!(err.contains(key), "{err}");
        }
        assert!(!err.contains("short1"));
    }

    #[test]
    fn ssh_keys_are_validated_one_by_one() {
        let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHfMr/yH/a4ErzeFOsVzmdeHZVSYOfDfAuSiIQTsgM0n owner@laptop";
        let answers = parse(&format!("{GOOD}ssh_authorized_keys = [\"{key}\"]\n")).unwrap();
        assert_eq!(answers.ssh_authorized_keys, vec![key.to_string()]);
        let err = parse(&format!(
            "{GOOD}ssh_authorized_keys = [\"{key}\", \"ssh-dss AAAAB3NzaC1kc3M=\"]\n"
        ))
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("ssh_authorized_keys[1]"),
            "{err:#}"
        );
    }

    #[test]
    fn wipe_removes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("meetbox-setup.toml");
        fs::write(&path, GOOD).unwrap();
        wipe(&path).unwrap();
        assert!(!path.exists());
    }
}
