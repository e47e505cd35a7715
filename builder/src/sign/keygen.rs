//! `meetbox keygen`: creates the minisign key pair that signs published images.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::host::progress::{detail, step};
use crate::sign::keys::{public_key_path_for, write_key_pair, PasswordSource, PASSWORD_FILE_ENV};

/// Create a signing key pair: PREFIX.key (secret, password-protected, mode 0600) and
/// PREFIX.pub (publish it; `meetbox verify` and `minisign -V` check images with it).
#[derive(clap::Args, Clone, Debug)]
#[command(after_help = "Examples:\n  \
    meetbox keygen --out ~/keys/meetbox-release\n  \
    meetbox build profiles/office.toml --key ~/keys/meetbox-release.key\n  \
    meetbox keygen --out ci-signing --unencrypted    # CI only: no password")]
pub struct KeygenArgs {
    /// Path prefix of the key files: writes PREFIX.key and PREFIX.pub.
    #[arg(long, value_name = "PREFIX")]
    pub out: PathBuf,
    /// Store the secret key without a password (for CI that keeps it in a secret
    /// store); anyone who reads the file can sign images.
    #[arg(long)]
    pub unencrypted: bool,
    /// Replace existing key files (signatures made with the old key then only verify
    /// with the old public key).
    #[arg(long)]
    pub force: bool,
    /// File whose first line is the new key's password, instead of typing it twice
    /// (also read from MEETBOX_KEY_PASSWORD_FILE).
    #[arg(long, value_name = "FILE", conflicts_with = "unencrypted")]
    pub password_file: Option<PathBuf>,
}

impl KeygenArgs {
    /// `PREFIX.key`; `--out` may also be given with the `.key` ending.
    fn secret_key_path(&self) -> PathBuf {
        if self.out.extension().is_some_and(|ext| ext == "key") {
            self.out.clone()
        } else {
            let mut name = self.out.as_os_str().to_owned();
            name.push(".key");
            PathBuf::from(name)
        }
    }
}

pub fn run_keygen(args: &KeygenArgs) -> Result<()> {
    let secret_path = args.secret_key_path();
    let public_path = public_key_path_for(&secret_path);
    step(format!("Creating key pair {}", secret_path.display()));
    let password = if args.unencrypted {
        detail("warning: the secret key gets no password; keep the file in a secret store and never publish it");
        None
    } else {
        let Some(source) = PasswordSource::find(args.password_file.as_deref()) else {
            bail!(
                "no terminal to ask for the key's password: pass --password-file FILE, set {PASSWORD_FILE_ENV}, or use --unencrypted for CI"
            );
        };
        let password = source.read("Password for the new secret key", true)?;
        if password.chars().count() < 8 {
            bail!("the password is shorter than 8 characters: choose a longer one");
        }
        Some(password)
    };
    if let Some(dir) = secret_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    write_key_pair(&secret_path, password, args.force)?;
    detail(format!("secret key: {} (mode 0600)", secret_path.display()));
    detail(format!("public key: {}", public_path.display()));
    detail(format!(
        "sign builds with --key {}; publish {} so others can run `meetbox verify IMAGE --pubkey {}`",
        secret_path.display(),
        public_path.display(),
        public_path.display()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use crate::sign::keys::load_signing_key;

    fn args(out: PathBuf) -> KeygenArgs {
        KeygenArgs {
            out,
            unencrypted: false,
            force: false,
            password_file: None,
        }
    }

    #[test]
    fn encrypted_key_pair_from_a_password_file_loads_with_that_password() {
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("password");
        fs::write(&password, "long enough password\n").unwrap();
        let mut keygen = args(dir.path().join("keys/release"));
        keygen.password_file = Some(password.clone());
        run_keygen(&keygen).unwrap();

        let secret_path = dir.path().join("keys/release.key");
        let mode = fs::metadata(&secret_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let key = load_signing_key(&secret_path, Some(&password)).unwrap();
        assert_eq!(key.public_key_path, dir.path().join("keys/release.pub"));

        let error = run_keygen(&keygen).unwrap_err();
        assert!(error.to_string().contains("--force"), "{error}");
        keygen.force = true;
        run_keygen(&keygen).unwrap();
    }

    #[test]
    fn short_passwords_are_refused_and_nothing_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let password = dir.path().join("password");
        fs::write(&password, "short\n").unwrap();
        let mut keygen = args(dir.path().join("k"));
        keygen.password_file = Some(password);
        let error = run_keygen(&keygen).unwrap_err();
        assert!(error.to_string().contains("8 characters"), "{error}");
        assert!(!dir.path().join("k.key").exists());
    }

    #[test]
    fn unencrypted_key_pair_loads_without_a_password() {
        let dir = tempfile::tempdir().unwrap();
        let mut keygen = args(dir.path().join("ci.key"));
        keygen.unencrypted = true;
        run_keygen(&keygen).unwrap();
        let key = load_signing_key(&dir.path().join("ci.key"), None).unwrap();
        assert!(!key.secret.is_encrypted());
    }
}
