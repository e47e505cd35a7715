//! Prosody accounts in its `internal_hashed` file store: the admin, the meeting hosts (both on the
//! main XMPP host) and the service accounts. Setup and the admin write them the same way, so prosody
//! reads one format; prosody reads an account's file at each login, so no restart is needed.

use anyhow::{Context, Result};

use crate::apply::{FileSpec, Owner, Root};
use crate::layout;
use crate::secrets::scram::{self, ScramCredential};

const PROSODY: Owner = Owner::new("prosody", "prosody");

/// Writes (or replaces) the account `user@host` with `credential`, readable only by prosody.
pub fn write(root: &Root, host: &str, user: &str, credential: &ScramCredential) -> Result<()> {
    let path = layout::prosody_account_file(host, user);
    let accounts_dir = parent(&path);
    root.directory(parent(accounts_dir), 0o750, PROSODY)?;
    root.directory(accounts_dir, 0o750, PROSODY)?;
    root.write(&FileSpec::new(
        path.clone(),
        scram::account_file(credential),
        0o640,
        PROSODY,
    ))
}

/// The stored credential of `user@host`, None when there is no such account.
pub fn credential(root: &Root, host: &str, user: &str) -> Result<Option<ScramCredential>> {
    let path = layout::prosody_account_file(host, user);
    if !root.exists(&path) {
        return Ok(None);
    }
    let text = root.read_to_string(&path)?;
    parse_account_file(&text)
        .map(Some)
        .with_context(|| format!("prosody's account file {path} holds no SCRAM credential"))
}

/// The account names of `host`, sorted.
pub fn list(root: &Root, host: &str) -> Result<Vec<String>> {
    let sample = layout::prosody_account_file(host, "x");
    let dir = root.path(parent(&sample));
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => {
            return Err(error).with_context(|| format!("cannot list {}", dir.display()));
        }
    };
    let mut users: Vec<String> = entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            unescape(name.strip_suffix(".dat")?)
        })
        .collect();
    users.sort();
    Ok(users)
}

/// Removes `user@host`; false when there was no such account.
pub fn remove(root: &Root, host: &str, user: &str) -> Result<bool> {
    let path = layout::prosody_account_file(host, user);
    if !root.exists(&path) {
        return Ok(false);
    }
    root.remove(&path)?;
    Ok(true)
}

/// True when `password` is the one `credential` was made from (the stored key is compared in
/// constant time; nothing of the password is kept).
pub fn password_matches(credential: &ScramCredential, password: &str) -> bool {
    let derived = scram::credential(password, &credential.salt, credential.iteration_count);
    constant_time_eq(
        derived.stored_key.as_bytes(),
        credential.stored_key.to_ascii_lowercase().as_bytes(),
    )
}

/// True when `password` is the admin's (`admin_user` on the main host), checked against prosody's
/// stored credential, the one the meeting client logs in with.
pub fn admin_password_matches(root: &Root, admin_user: &str, password: &str) -> Result<bool> {
    Ok(credential(root, layout::XMPP_DOMAIN, admin_user)?
        .is_some_and(|stored| password_matches(&stored, password)))
}

/// A credential with a fresh salt, as setup makes the admin's.
pub fn new_credential(password: &str) -> Result<ScramCredential> {
    let salt = crate::secrets::random_alphanumeric(24)?;
    Ok(scram::credential(password, &salt, scram::ITERATIONS))
}

pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads the record prosody's `internal` storage keeps: a Lua table of `["key"] = value;` lines,
/// as this crate writes it or as prosody rewrites it.
pub fn parse_account_file(text: &str) -> Option<ScramCredential> {
    let field = |key: &str| {
        text.lines().find_map(|line| {
            let rest = line.trim().strip_prefix(&format!("[\"{key}\"]"))?;
            let value = rest.trim_start().strip_prefix('=')?.trim();
            let value = value.strip_suffix(';').unwrap_or(value).trim();
            Some(value.trim_matches(|c| c == '"' || c == '\'').to_string())
        })
    };
    Some(ScramCredential {
        salt: field("salt")?,
        iteration_count: field("iteration_count")?.parse().ok()?,
        stored_key: field("stored_key")?,
        server_key: field("server_key")?,
    })
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or(path, |(dir, _)| dir)
}

/// Reverses prosody's escaping of file names (`%2e` for `.`); None for a name that is not one.
fn unescape(name: &str) -> Option<String> {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = name.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::XMPP_DOMAIN;

    #[test]
    fn written_accounts_are_listed_checked_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        let credential = scram::credential("lamp river stone", "salt-1", 4096);
        write(&root, XMPP_DOMAIN, "ann.lee", &credential).unwrap();
        write(&root, XMPP_DOMAIN, "bob", &credential).unwrap();
        assert_eq!(list(&root, XMPP_DOMAIN).unwrap(), ["ann.lee", "bob"]);
        let stored = self::credential(&root, XMPP_DOMAIN, "ann.lee")
            .unwrap()
            .unwrap();
        assert_eq!(stored, credential);
        assert!(password_matches(&stored, "lamp river stone"));
        assert!(!password_matches(&stored, "lamp river ston"));
        assert!(remove(&root, XMPP_DOMAIN, "bob").unwrap());
        assert!(!remove(&root, XMPP_DOMAIN, "bob").unwrap());
        assert_eq!(list(&root, XMPP_DOMAIN).unwrap(), ["ann.lee"]);
        assert_eq!(self::credential(&root, XMPP_DOMAIN, "bob").unwrap(), None);
    }

    #[test]
    fn reads_the_record_as_prosody_rewrites_it() {
        let text = "return {\n  [\"stored_key\"] = \"AB12\";\n  [\"iteration_count\"] = 10000;\n  [\"salt\"] = 'x-y';\n  [\"server_key\"] = \"cd\";\n};\n";
        let parsed = parse_account_file(text).unwrap();
        assert_eq!(parsed.salt, "x-y");
        assert_eq!(parsed.iteration_count, 10000);
        assert_eq!(parsed.stored_key, "AB12");
        assert_eq!(parse_account_file("return {};"), None);
    }

    #[test]
    fn prosody_file_names_are_unescaped() {
        assert_eq!(unescape("ann%2elee").as_deref(), Some("ann.lee"));
        assert_eq!(unescape("bad%2"), None);
    }
}
