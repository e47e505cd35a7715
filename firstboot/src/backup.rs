//! The owner's backup: the settings, the per-device secrets, every prosody account of the meeting
//! host, the ACME account and the certificate with its key, encrypted with a passphrase the owner
//! types. Downloaded from the web admin; placed on the ESP of a fresh box, it restores that box in
//! place of the first-boot questions (setup.rs).
//!
//! Format (docs/admin.md): a 16-byte magic, the Argon2id salt and costs, a 24-byte nonce, then the
//! JSON content sealed with XChaCha20-Poly1305 under the Argon2id key of the passphrase, the
//! header as associated data. A wrong passphrase and a damaged file are told apart only as far as
//! an AEAD can: neither opens.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Serialize};

use crate::acme::tls::{self, CertifiedKey};
use crate::apply::accounts;
use crate::apply::{FileSpec, Owner, Root};
use crate::ask::{answers, hidden_input};
use crate::layout;
use crate::secrets::{self, Secrets};
use crate::state::{State, Step};

const MAGIC: &[u8; 16] = b"MEETBOX-BACKUP\x00\x01";
const SALT_LEN: usize = 16;
const NONCE_LEN: usize = 24;
const HEADER_LEN: usize = MAGIC.len() + SALT_LEN + 12 + NONCE_LEN;
/// Argon2id costs: 64 MiB and 3 passes, OWASP's first recommendation; a few seconds on a mini-PC.
const MEMORY_KIB: u32 = 64 * 1024;
const PASSES: u32 = 3;
const LANES: u32 = 1;
/// The most memory a backup may ask to derive its key with (a hostile file cannot exhaust the box).
const MAX_MEMORY_KIB: u32 = 1024 * 1024;

/// The file name the web admin gives a download (and the extension a restore looks for).
pub const EXTENSION: &str = "meetbox-backup";

/// What a backup holds.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Content {
    pub state: State,
    pub secrets: Secrets,
    /// (user, prosody's account record) of the meeting host, the admin among them.
    pub accounts: Vec<(String, String)>,
    pub acme_account: Option<String>,
    /// (full chain, key) PEM.
    pub certificate: Option<(String, String)>,
}

/// Gathers the box's content below `root`.
pub fn gather(root: &Root) -> Result<Content> {
    let state = State::load(root)?;
    anyhow::ensure!(
        state.settings.is_some(),
        "setup has not finished: there is nothing to back up yet"
    );
    let secrets: Secrets = root
        .read_record(layout::SECRETS_FILE, "the secrets file", "run setup again")?
        .context("the box has no secrets file yet")?;
    let mut accounts = Vec::new();
    for user in accounts::list(root, layout::XMPP_DOMAIN)? {
        let record =
            root.read_to_string(&layout::prosody_account_file(layout::XMPP_DOMAIN, &user))?;
        accounts.push((user, record));
    }
    let read_if = |path: &str| -> Result<Option<String>> {
        root.exists(path)
            .then(|| root.read_to_string(path))
            .transpose()
    };
    let certificate = match (read_if(layout::TLS_CERT)?, read_if(layout::TLS_KEY)?) {
        (Some(chain), Some(key)) => Some((chain, key)),
        _ => None,
    };
    Ok(Content {
        state,
        secrets,
        accounts,
        acme_account: read_if(layout::ACME_ACCOUNT_FILE)?,
        certificate,
    })
}

/// Writes `content` into the box below `root`: every account, the certificate, and the state with
/// only the answers (and the certificate's first step) done, so that setup then runs every other
/// step with the restored settings and secrets.
pub fn put_back(root: &Root, content: Content) -> Result<State> {
    let private =
        |path: &str, text: String| root.write(&FileSpec::new(path, text, 0o600, Owner::ROOT));
    let secrets_json = serde_json::to_string_pretty(&content.secrets)?;
    private(layout::SECRETS_FILE, secrets_json + "\n")?;
    for (user, record) in &content.accounts {
        let user = crate::ask::validation::user(user)
            .map_err(|why| anyhow::anyhow!("the backup names an account that cannot be: {why}"))?;
        let credential = accounts::parse_account_file(record)
            .with_context(|| format!("the backup's record of {user} is damaged"))?;
        accounts::write(root, layout::XMPP_DOMAIN, &user, &credential)?;
    }
    if let Some(account) = content.acme_account {
        private(layout::ACME_ACCOUNT_FILE, account)?;
    }
    let mut state = State {
        settings: content.state.settings,
        completed: vec![Step::Answers],
    };
    if let Some((chain_pem, key_pem)) = content.certificate {
        tls::inspect(&chain_pem).context("the backup's certificate is damaged")?;
        tls::install(root, &CertifiedKey { chain_pem, key_pem })?;
        state.mark_done(Step::SelfSignedCertificate);
    }
    state.save(root)?;
    Ok(state)
}

/// The backup on the ESP (`NAME.meetbox-backup`, in any letter case), if there is one.
pub fn on_esp(root: &Root) -> Result<Option<PathBuf>> {
    let dir = root.path(layout::ESP_DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Ok(None);
    };
    let suffix = format!(".{EXTENSION}");
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .filter(|entry| {
            let name = entry.file_name().to_string_lossy().to_lowercase();
            name.ends_with(&suffix) && !name.starts_with("._")
        })
        .map(|entry| entry.path())
        .collect();
    found.sort();
    if found.len() > 1 {
        bail!(
            "there are {} backups on the boot partition; keep the one to restore and delete the others",
            found.len()
        );
    }
    Ok(found.pop())
}

/// At first boot: restores the backup on the ESP, if one, in place of the questions. The
/// passphrase comes from `restore_passphrase` in the answers file beside it, or is asked on the
/// console. The backup and that file are wiped once the box holds their content.
pub fn restore_from_esp(root: &Root) -> Result<Option<State>> {
    let Some(path) = on_esp(root)? else {
        return Ok(None);
    };
    println!(
        "A backup is on the boot partition ({}); restoring it instead of asking the questions.",
        path.file_name().unwrap_or_default().to_string_lossy()
    );
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let answers_file = answers::on_esp(root)?;
    let given = answers_file
        .as_deref()
        .map(passphrase_in)
        .transpose()?
        .flatten();
    let content = match given {
        Some(passphrase) => open(&bytes, &passphrase)?,
        None if std::io::IsTerminal::is_terminal(&std::io::stdin()) => ask_and_open(&bytes)?,
        None => bail!(
            "a backup is on the boot partition, but no passphrase: write restore_passphrase = \"...\" in {} beside it, or restore at the box's screen",
            layout::ESP_ANSWERS
        ),
    };
    let state = put_back(root, content)?;
    answers::wipe(&path)?;
    if let Some(file) = answers_file {
        answers::wipe(&file)?;
    }
    println!("The backup is restored; setting the box up with its settings.");
    Ok(Some(state))
}

/// `restore_passphrase` of an answers file that holds only that.
fn passphrase_in(file: &Path) -> Result<Option<String>> {
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RestoreAnswers {
        restore_passphrase: String,
    }
    let text = answers::read_text(file)?;
    Ok(toml::from_str::<RestoreAnswers>(&text)
        .ok()
        .map(|answers| answers.restore_passphrase))
}

/// Asks for the passphrase on the console (three tries) and opens the backup.
pub fn ask_and_open(bytes: &[u8]) -> Result<Content> {
    for attempt in 1..=3 {
        let passphrase = hidden_input::read_hidden_line("Passphrase of the backup")?;
        match open(bytes, &passphrase) {
            Ok(content) => return Ok(content),
            Err(error) if attempt < 3 => eprintln!("{error:#}"),
            Err(error) => return Err(error),
        }
    }
    unreachable!("the third attempt returns")
}

/// Encrypts `content` with `passphrase`.
pub fn seal(content: &Content, passphrase: &str) -> Result<Vec<u8>> {
    let salt: [u8; SALT_LEN] = secrets::random_bytes()?;
    let nonce: [u8; NONCE_LEN] = secrets::random_bytes()?;
    let mut header = Vec::with_capacity(HEADER_LEN);
    header.extend_from_slice(MAGIC);
    header.extend_from_slice(&salt);
    for cost in [MEMORY_KIB, PASSES, LANES] {
        header.extend_from_slice(&cost.to_le_bytes());
    }
    header.extend_from_slice(&nonce);
    let key = derive_key(passphrase, &salt, MEMORY_KIB, PASSES, LANES)?;
    let plain = serde_json::to_vec(content)?;
    let sealed = XChaCha20Poly1305::new(&key.into())
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &plain,
                aad: &header,
            },
        )
        .map_err(|_| anyhow::anyhow!("cannot encrypt the backup"))?;
    Ok([header, sealed].concat())
}

/// Decrypts a backup; the errors say what the owner can do.
pub fn open(bytes: &[u8], passphrase: &str) -> Result<Content> {
    if bytes.len() < HEADER_LEN || &bytes[..MAGIC.len()] != MAGIC {
        bail!("this is not a Meetbox backup (download one from the admin's Backup page)");
    }
    let (header, sealed) = bytes.split_at(HEADER_LEN);
    let salt = &header[MAGIC.len()..MAGIC.len() + SALT_LEN];
    let cost = |i: usize| {
        let at = MAGIC.len() + SALT_LEN + 4 * i;
        u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"))
    };
    let (memory, passes, lanes) = (cost(0), cost(1), cost(2));
    if memory > MAX_MEMORY_KIB || passes > 16 || lanes > 8 {
        bail!("this backup asks for more memory or time than a backup of this version ever does; it is damaged");
    }
    let nonce = &header[HEADER_LEN - NONCE_LEN..];
    let key = derive_key(passphrase, salt, memory, passes, lanes)?;
    let plain = XChaCha20Poly1305::new(&key.into())
        .decrypt(XNonce::from_slice(nonce), Payload { msg: sealed, aad: header })
        .map_err(|_| {
            anyhow::anyhow!(
                "the backup does not open: the passphrase is wrong, or the file was damaged on the way"
            )
        })?;
    serde_json::from_slice(&plain)
        .context("the backup opened, but its content is not one this version reads")
}

fn derive_key(
    passphrase: &str,
    salt: &[u8],
    memory: u32,
    passes: u32,
    lanes: u32,
) -> Result<[u8; 32]> {
    let params = argon2::Params::new(memory, passes, lanes, Some(32))
        .map_err(|e| anyhow::anyhow!("the backup's key costs are not valid: {e}"))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = [0u8; 32];
    argon
        .hash_password_into(passphrase.as_bytes(), salt, &mut key)
        .map_err(|e| anyhow::anyhow!("cannot derive the backup's key: {e}"))?;
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Content {
        Content {
            state: State::default(),
            secrets: Secrets::generate().unwrap(),
            accounts: vec![("dana".into(), "return {};".into())],
            acme_account: Some("{}".into()),
            certificate: None,
        }
    }

    #[test]
    fn opens_with_the_passphrase_only() {
        let sealed = seal(&sample(), "correct horse battery staple").unwrap();
        let opened = open(&sealed, "correct horse battery staple").unwrap();
        assert_eq!(opened.accounts, sample().accounts);
        let wrong = format!(
            "{:#}",
            open(&sealed, "correct horse battery stapler")
                .err()
                .unwrap()
        );
        assert!(wrong.contains("passphrase is wrong"), "{wrong}");
        // The header is authenticated too: cheaper costs do not open it.
        let mut tampered = sealed.clone();
        tampered[MAGIC.len() + SALT_LEN + 4] ^= 1;
        assert!(open(&tampered, "correct horse battery staple").is_err());
        let not = format!("{:#}", open(b"PK\x03\x04 a zip file", "x").err().unwrap());
        assert!(not.contains("not a Meetbox backup"), "{not}");
    }

    #[test]
    fn nothing_of_the_content_is_readable() {
        let sealed = seal(&sample(), "correct horse battery staple").unwrap();
        let text = String::from_utf8_lossy(&sealed);
        assert!(!text.contains("dana") && !text.contains("focus"));
    }
}
