//! OpenPGP keyrings for apt repositories, checked against fingerprints pinned in
//! the repository before anything is downloaded or installed with them.
//!
//! Only what a pin needs: the v4 fingerprints of the primary keys in a binary or
//! ASCII-armoured keyring. Signature checking itself stays with apt (gpgv/sqv).

use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use base64::Engine;
use sha1::{Digest, Sha1};

/// OpenPGP packet tag of a primary public key.
const TAG_PUBLIC_KEY: u8 = 6;

/// Upper-case hex v4 fingerprints of every primary key in `keyring`.
pub fn fingerprints(keyring: &[u8]) -> Result<Vec<String>> {
    let binary = dearmor(keyring)?;
    let mut found = Vec::new();
    let mut rest = binary.as_slice();
    while !rest.is_empty() {
        let (tag, body, next) = next_packet(rest)?;
        if tag == TAG_PUBLIC_KEY {
            found.push(v4_fingerprint(body)?);
        }
        rest = next;
    }
    ensure!(!found.is_empty(), "the keyring holds no public key");
    Ok(found)
}

/// Fails unless the keyring file at `path` holds exactly the keys pinned in `pinned`
/// (fingerprints; spaces ignored, any case).
pub fn check_pinned(path: &Path, pinned: &[&str]) -> Result<()> {
    let bytes =
        std::fs::read(path).with_context(|| format!("cannot read keyring {}", path.display()))?;
    let mut actual = fingerprints(&bytes)
        .with_context(|| format!("{} is not an OpenPGP keyring", path.display()))?;
    let mut expected: Vec<String> = pinned.iter().map(|f| normalize(f)).collect();
    actual.sort();
    expected.sort();
    if actual != expected {
        bail!(
            "keyring {} does not match the pinned fingerprint(s)\n  pinned: {}\n  found:  {}\n\
             The file was replaced or altered: restore it from the Meetbox repository, \
             or update the pin only after checking the new key with its publisher.",
            path.display(),
            expected.join(", "),
            actual.join(", ")
        );
    }
    Ok(())
}

/// Upper-case hex without spaces, the form fingerprints are compared in.
pub fn normalize(fingerprint: &str) -> String {
    fingerprint
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect::<String>()
        .to_ascii_uppercase()
}

/// Strips ASCII armour (RFC 4880 §6) if present; binary input is returned as is.
/// apt reads `signed-by` files ending in `.gpg` as binary keyrings.
pub fn dearmor(input: &[u8]) -> Result<Vec<u8>> {
    let Ok(text) = std::str::from_utf8(input) else {
        return Ok(input.to_vec());
    };
    let Some(start) = text.find("-----BEGIN PGP PUBLIC KEY BLOCK-----") else {
        return Ok(input.to_vec());
    };
    let mut base64_text = String::new();
    for line in text[start..].lines().skip(1) {
        let line = line.trim();
        if line.starts_with("-----END PGP PUBLIC KEY BLOCK-----") {
            return base64::engine::general_purpose::STANDARD
                .decode(base64_text)
                .context("the armoured keyring has invalid base64");
        }
        // Armour headers ("Comment: ...") hold a colon, base64 never does;
        // the CRC-24 line starts with '='.
        if !line.contains(':') && !line.starts_with('=') {
            base64_text.push_str(line);
        }
    }
    bail!("the armoured keyring has no END line")
}

/// Splits one packet off `data`: (tag, body, remaining bytes).
fn next_packet(data: &[u8]) -> Result<(u8, &[u8], &[u8])> {
    let header = data[0];
    ensure!(header & 0x80 != 0, "invalid OpenPGP packet header");
    let (tag, len, header_len) = if header & 0x40 != 0 {
        let tag = header & 0x3f;
        let first = *data.get(1).context("truncated packet")? as usize;
        match first {
            0..=191 => (tag, first, 2),
            192..=223 => {
                let second = *data.get(2).context("truncated packet")? as usize;
                (tag, ((first - 192) << 8) + second + 192, 3)
            }
            255 => (tag, be_len(data.get(2..6))?, 6),
            _ => bail!("partial-length packets do not occur in keyrings"),
        }
    } else {
        let tag = (header >> 2) & 0x0f;
        match header & 0x03 {
            0 => (tag, *data.get(1).context("truncated packet")? as usize, 2),
            1 => {
                let bytes = data.get(1..3).context("truncated packet")?;
                (tag, u16::from_be_bytes([bytes[0], bytes[1]]) as usize, 3)
            }
            2 => (tag, be_len(data.get(1..5))?, 5),
            _ => (tag, data.len() - 1, 1),
        }
    };
    let body = data
        .get(header_len..header_len + len)
        .context("truncated OpenPGP packet")?;
    Ok((tag, body, &data[header_len + len..]))
}

fn be_len(bytes: Option<&[u8]>) -> Result<usize> {
    let bytes = bytes.context("truncated packet")?;
    Ok(u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize)
}

/// RFC 4880 §12.2: SHA-1 over 0x99, the two-byte body length and the key body.
fn v4_fingerprint(body: &[u8]) -> Result<String> {
    let version = *body.first().context("empty public key packet")?;
    ensure!(
        version == 4,
        "public key version {version} is not supported (only v4 keys are pinned)"
    );
    let len = u16::try_from(body.len()).context("public key packet too long")?;
    let mut hasher = Sha1::new();
    hasher.update([0x99]);
    hasher.update(len.to_be_bytes());
    hasher.update(body);
    Ok(hex::encode_upper(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const UBUNTU_KEYRING: &[u8] = include_bytes!("../../keys/ubuntu-archive.gpg");

    #[test]
    fn computes_the_ubuntu_archive_fingerprint() {
        assert_eq!(
            fingerprints(UBUNTU_KEYRING).unwrap(),
            vec!["F6ECB3762474EDA9D21B7022871920D1991BC93C".to_string()]
        );
    }

    #[test]
    fn reads_armoured_keyrings() {
        let armoured = format!(
            "-----BEGIN PGP PUBLIC KEY BLOCK-----\nComment: test\n\n{}\n=abcd\n-----END PGP PUBLIC KEY BLOCK-----\n",
            base64::engine::general_purpose::STANDARD.encode(UBUNTU_KEYRING)
        );
        assert_eq!(
            fingerprints(armoured.as_bytes()).unwrap(),
            fingerprints(UBUNTU_KEYRING).unwrap()
        );
    }

    #[test]
    fn pin_mismatch_names_both_fingerprints() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.gpg");
        std::fs::write(&path, UBUNTU_KEYRING).unwrap();
        check_pinned(
            &path,
            &["F6EC B376 2474 EDA9 D21B  7022 8719 20D1 991B C93C"],
        )
        .unwrap();
        let err = check_pinned(&path, &["66A9CD0595D6AFA247290D3BEF8B479E2DC1389C"])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("66A9CD0595D6AFA247290D3BEF8B479E2DC1389C"),
            "{err}"
        );
        assert!(
            err.contains("F6ECB3762474EDA9D21B7022871920D1991BC93C"),
            "{err}"
        );
    }

    #[test]
    fn rejects_garbage_and_truncation() {
        assert!(fingerprints(b"not a key").is_err());
        assert!(fingerprints(&UBUNTU_KEYRING[..100]).is_err());
    }
}
