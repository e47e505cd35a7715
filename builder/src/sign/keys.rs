//! minisign key files: where the default key lives, loading secret keys (with their
//! password from a terminal or a file), and creating key pairs. The files are the
//! reference `minisign` CLI's format, so `minisign -V -p KEY.pub` checks what we sign.

use std::fs;
use std::io::IsTerminal;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use ct_codecs::{Base64, Decoder};
use minisign::{KeyPair, PublicKey, SecretKey, SecretKeyBox};

use crate::host::atomic_file;
use crate::host::progress::detail;

/// Environment variable naming a file that holds the secret key's password (CI).
pub const PASSWORD_FILE_ENV: &str = "MEETBOX_KEY_PASSWORD_FILE";
/// Untrusted comment of the secret keys we write.
const SECRET_KEY_COMMENT: &str = "meetbox secret key";

/// How `meetbox build` finds the key that signs the image.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct SigningKeyArgs {
    /// Secret key that signs the build (PREFIX.key from `meetbox keygen`; PREFIX.pub
    /// must be next to it). Default: the key in the user's config directory, created
    /// unencrypted on first use.
    #[arg(long = "key", value_name = "PREFIX.key")]
    pub key: Option<PathBuf>,
    /// File whose first line is the secret key's password, for runs without a terminal
    /// (CI). Also read from the MEETBOX_KEY_PASSWORD_FILE environment variable.
    #[arg(long, value_name = "FILE")]
    pub password_file: Option<PathBuf>,
}

/// A secret key ready to sign, with the public key that checks its signatures.
pub struct SigningKey {
    pub secret: SecretKey,
    pub public: PublicKey,
    pub public_key_path: PathBuf,
}

/// Where a password comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PasswordSource {
    File(PathBuf),
    Terminal,
}

impl PasswordSource {
    /// The explicit file, else the environment's file, else the terminal if there is
    /// one; `None` when none of them is available (CI without a password file).
    pub fn find(explicit: Option<&Path>) -> Option<Self> {
        explicit
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os(PASSWORD_FILE_ENV).map(PathBuf::from))
            .map(PasswordSource::File)
            .or_else(|| {
                std::io::stdin()
                    .is_terminal()
                    .then_some(PasswordSource::Terminal)
            })
    }

    /// Reads the password; on a terminal `confirm` asks twice and requires a match.
    pub fn read(&self, prompt: &str, confirm: bool) -> Result<String> {
        match self {
            PasswordSource::File(path) => read_password_file(path),
            PasswordSource::Terminal => {
                let password = rpassword::prompt_password(format!("{prompt}: "))
                    .context("cannot read the password from the terminal")?;
                if confirm {
                    let again = rpassword::prompt_password("Same password again: ")
                        .context("cannot read the password from the terminal")?;
                    if again != password {
                        bail!("the two passwords differ: run the command again");
                    }
                }
                Ok(password)
            }
        }
    }
}

/// First line of a password file, without its line ending.
fn read_password_file(path: &Path) -> Result<String> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("cannot read the password file {}", path.display()))?;
    let password = text.lines().next().unwrap_or_default();
    if password.is_empty() {
        bail!(
            "the password file {} is empty: put the password on its first line",
            path.display()
        );
    }
    Ok(password.to_string())
}

/// `PREFIX.pub` for `PREFIX.key`; `FILE.pub` for any other name.
pub fn public_key_path_for(secret_key_path: &Path) -> PathBuf {
    if secret_key_path.extension().is_some_and(|ext| ext == "key") {
        secret_key_path.with_extension("pub")
    } else {
        let mut name = secret_key_path.as_os_str().to_owned();
        name.push(".pub");
        PathBuf::from(name)
    }
}

/// The default secret key: `meetbox/meetbox.key` in `config_dir`.
pub fn default_secret_key_path(config_dir: &Path) -> PathBuf {
    config_dir.join("meetbox").join("meetbox.key")
}

/// The user's config directory (`$XDG_CONFIG_HOME` or `~/.config`).
pub fn user_config_dir() -> Result<PathBuf> {
    dirs::config_dir().context(
        "cannot find the user's config directory (set HOME or XDG_CONFIG_HOME), or pass --key",
    )
}

/// The key that signs a build: `--key` if given, else the default key in the user's
/// config directory, which is created (unencrypted) when it does not exist yet so a
/// first build needs no set-up.
pub fn resolve_secret_key(args: &SigningKeyArgs) -> Result<SigningKey> {
    match &args.key {
        Some(path) => load_signing_key(path, args.password_file.as_deref()),
        None => resolve_default_key(&user_config_dir()?, args.password_file.as_deref()),
    }
}

/// `resolve_secret_key` without `--key`, for a given config directory.
pub fn resolve_default_key(config_dir: &Path, password_file: Option<&Path>) -> Result<SigningKey> {
    let secret_path = default_secret_key_path(config_dir);
    if secret_path.exists() {
        detail(format!("signing key: {}", secret_path.display()));
        return load_signing_key(&secret_path, password_file);
    }
    let key_dir = secret_path
        .parent()
        .expect("the default key is in a directory");
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(key_dir)
        .with_context(|| format!("cannot create {}", key_dir.display()))?;
    let pair = write_key_pair(&secret_path, None, false)?;
    let public_key_path = public_key_path_for(&secret_path);
    detail(format!(
        "created signing key {} (public key {})",
        secret_path.display(),
        public_key_path.display()
    ));
    detail(format!(
        "warning: this key has no password; for images you publish run `meetbox keygen --out {}` and build with --key",
        key_dir.join("release").display()
    ));
    Ok(SigningKey {
        secret: pair.sk,
        public: pair.pk,
        public_key_path,
    })
}

/// Loads `PREFIX.key` (asking for its password if it is encrypted) and checks that
/// `PREFIX.pub` next to it belongs to it, so a build never ships signatures its
/// published public key cannot check.
pub fn load_signing_key(secret_path: &Path, password_file: Option<&Path>) -> Result<SigningKey> {
    let secret = load_secret_key(secret_path, password_file)?;
    let public_key_path = public_key_path_for(secret_path);
    let public = load_public_key(&public_key_path)?;
    let derived = PublicKey::from_secret_key(&secret)
        .with_context(|| format!("{} holds no public key", secret_path.display()))?;
    if derived.to_bytes() != public.to_bytes() {
        bail!(
            "{} does not belong to {}: keep the .key and .pub of one `meetbox keygen` together",
            public_key_path.display(),
            secret_path.display()
        );
    }
    Ok(SigningKey {
        secret,
        public,
        public_key_path,
    })
}

/// Loads a secret key file; encrypted keys take their password from `password_file`,
/// `MEETBOX_KEY_PASSWORD_FILE` or the terminal.
pub fn load_secret_key(path: &Path, password_file: Option<&Path>) -> Result<SecretKey> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("cannot read the secret key {}", path.display()))?;
    warn_if_readable_by_others(path);
    let key = decode_secret_key(&text)
        .with_context(|| format!("{} is not a minisign secret key", path.display()))?;
    if !key.is_encrypted() {
        // Taken as is: the reference CLI leaves the checksum of unencrypted keys zero,
        // which `SecretKey::from_unencrypted_box` rejects. A damaged key still fails:
        // its public half must match PREFIX.pub and each signature is checked with it.
        return Ok(key);
    }
    let Some(source) = PasswordSource::find(password_file) else {
        bail!(
            "{} is password-protected and there is no terminal to ask: pass --password-file FILE or set {PASSWORD_FILE_ENV}",
            path.display()
        );
    };
    let password = source.read(&format!("Password for {}", path.display()), false)?;
    SecretKey::from_box(SecretKeyBox::from_string(&text)?, Some(password))
        .with_context(|| format!("cannot unlock {}: wrong password?", path.display()))
}

/// The key in a secret key file (second line, base64), still encrypted if it was.
fn decode_secret_key(box_text: &str) -> Result<SecretKey> {
    let encoded = box_text
        .lines()
        .nth(1)
        .context("the second line (the key) is missing")?;
    let bytes = Base64::decode_to_vec(encoded.trim(), None)
        .map_err(|_| anyhow::anyhow!("the key line is not base64"))?;
    SecretKey::from_bytes(&bytes).context("the key has the wrong length")
}

fn warn_if_readable_by_others(path: &Path) {
    if let Ok(metadata) = fs::metadata(path) {
        if metadata.permissions().mode() & 0o077 != 0 {
            detail(format!(
                "warning: {} is readable by other users: run `chmod 600 {}`",
                path.display(),
                path.display()
            ));
        }
    }
}

/// Loads a public key file (`minisign -G` / `meetbox keygen` format).
pub fn load_public_key(path: &Path) -> Result<PublicKey> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("cannot read the public key {}", path.display()))?;
    PublicKey::from_box(text.into())
        .with_context(|| format!("{} is not a minisign public key", path.display()))
}

/// Generates a key pair and writes `secret_path` (0600) and its `.pub` atomically;
/// with a password the secret key is encrypted (scrypt, as the reference CLI does).
/// Refuses to replace existing files unless `overwrite`.
pub fn write_key_pair(
    secret_path: &Path,
    password: Option<String>,
    overwrite: bool,
) -> Result<KeyPair> {
    let public_path = public_key_path_for(secret_path);
    if !overwrite {
        for existing in [secret_path, &public_path] {
            if existing.exists() {
                bail!(
                    "{} already exists: choose another --out, or pass --force to replace the key (signatures made with it will no longer verify with the new key)",
                    existing.display()
                );
            }
        }
    }
    let pair = match password {
        Some(password) => KeyPair::generate_encrypted_keypair(Some(password)),
        None => KeyPair::generate_unencrypted_keypair(),
    }
    .context("cannot generate a key pair")?;
    let secret_box = pair.sk.to_box(Some(SECRET_KEY_COMMENT))?.into_string();
    atomic_file::write(secret_path, secret_box.as_bytes(), atomic_file::SECRET_MODE)?;
    let public_box = pair.pk.to_box()?.into_string();
    atomic_file::write(
        &public_path,
        public_box.as_bytes(),
        atomic_file::PUBLIC_MODE,
    )?;
    Ok(pair)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn public_key_path_replaces_the_key_extension() {
        assert_eq!(
            public_key_path_for(Path::new("a/release.key")),
            Path::new("a/release.pub")
        );
        assert_eq!(
            public_key_path_for(Path::new("a/secret")),
            Path::new("a/secret.pub")
        );
    }

    #[test]
    fn default_key_is_created_once_unencrypted_and_private_then_reused() {
        let config = tempfile::tempdir().unwrap();
        let first = resolve_default_key(config.path(), None).unwrap();
        let secret_path = default_secret_key_path(config.path());
        let mode = fs::metadata(&secret_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dir_mode = fs::metadata(secret_path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);
        let second = resolve_default_key(config.path(), None).unwrap();
        assert_eq!(first.public.to_bytes(), second.public.to_bytes());
        assert_eq!(
            second.public_key_path,
            config.path().join("meetbox/meetbox.pub")
        );
    }

    #[test]
    fn encrypted_key_needs_the_right_password_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let secret_path = dir.path().join("release.key");
        write_key_pair(&secret_path, Some("correct horse".into()), false).unwrap();
        let text = fs::read_to_string(&secret_path).unwrap();
        assert!(decode_secret_key(&text).unwrap().is_encrypted());

        let right = dir.path().join("right");
        fs::write(&right, "correct horse\n").unwrap();
        let key = load_signing_key(&secret_path, Some(&right)).unwrap();
        assert!(!key.secret.is_encrypted());

        let wrong = dir.path().join("wrong");
        fs::write(&wrong, "battery staple\n").unwrap();
        let error = load_signing_key(&secret_path, Some(&wrong)).err().unwrap();
        assert!(format!("{error:#}").contains("wrong password"), "{error:#}");
    }

    #[test]
    fn existing_keys_are_not_overwritten_without_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let secret_path = dir.path().join("k.key");
        let first = write_key_pair(&secret_path, None, false).unwrap();
        let error = write_key_pair(&secret_path, None, false).err().unwrap();
        assert!(error.to_string().contains("--force"), "{error}");
        let kept = load_public_key(&dir.path().join("k.pub")).unwrap();
        assert_eq!(kept.to_bytes(), first.pk.to_bytes());
        let replaced = write_key_pair(&secret_path, None, true).unwrap();
        assert_ne!(replaced.pk.to_bytes(), first.pk.to_bytes());
    }

    #[test]
    fn mismatched_public_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        write_key_pair(&dir.path().join("a.key"), None, false).unwrap();
        write_key_pair(&dir.path().join("b.key"), None, false).unwrap();
        fs::copy(dir.path().join("b.pub"), dir.path().join("a.pub")).unwrap();
        let error = load_signing_key(&dir.path().join("a.key"), None)
            .err()
            .unwrap();
        assert!(error.to_string().contains("does not belong"), "{error}");
    }

    #[test]
    fn keys_of_the_reference_cli_load_and_ours_sign_for_it() {
        let Some(minisign) = crate::host::test_tools::tool_path("minisign", "minisign") else {
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let secret_path = dir.path().join("ref.key");
        let status = Command::new(&minisign)
            .args(["-G", "-W", "-p"])
            .arg(dir.path().join("ref.pub"))
            .arg("-s")
            .arg(&secret_path)
            .status()
            .unwrap();
        assert!(status.success());
        let key = load_signing_key(&secret_path, None).unwrap();

        // Our unencrypted key file is accepted by the reference CLI for signing.
        let ours = dir.path().join("ours.key");
        write_key_pair(&ours, None, false).unwrap();
        let data = dir.path().join("data");
        fs::write(&data, b"payload").unwrap();
        let signed = Command::new(&minisign)
            .args(["-S", "-s"])
            .arg(&ours)
            .arg("-m")
            .arg(&data)
            .output()
            .unwrap();
        assert!(signed.status.success(), "{signed:?}");
        let verified = Command::new(&minisign)
            .args(["-V", "-p"])
            .arg(dir.path().join("ours.pub"))
            .arg("-m")
            .arg(&data)
            .output()
            .unwrap();
        assert!(verified.status.success(), "{verified:?}");
        assert!(!key.secret.is_encrypted());
    }
}
