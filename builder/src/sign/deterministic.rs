//! Minisign signatures without random noise, for the one signature that lives inside the image:
//! the installer's seal on the ESP. minisign's own signer mixes fresh randomness into every
//! signature, so two builds of the same inputs would differ in those bytes, and the image would no
//! longer rebuild byte for byte. Plain Ed25519 is deterministic by design; the format is minisign's
//! prehashed one ("ED": Ed25519 over the BLAKE2b-512 of the data, then over that signature and the
//! trusted comment), and every signature is checked with minisign's own verifier before use.

use std::io::Cursor;

use anyhow::{ensure, Context, Result};
use blake2::{Blake2b512, Digest};
use ct_codecs::{Base64, Encoder};

use crate::sign::keys::SigningKey;
use crate::sign::UNTRUSTED_COMMENT;

/// Where the key number and the Ed25519 secret key sit in minisign's serialized secret key:
/// after the algorithm ids (3 × 2 bytes), the KDF salt (32) and its two limits (2 × 8).
const KEYNUM_AT: usize = 54;
const SECRET_AT: usize = KEYNUM_AT + 8;
const SECRET_LEN: usize = 64;

/// The `.minisig` text for `data`, signed with `key` under `trusted_comment`.
pub fn sign(key: &SigningKey, data: &[u8], trusted_comment: &str) -> Result<String> {
    let bytes = key.secret.to_bytes();
    ensure!(
        bytes.len() >= SECRET_AT + SECRET_LEN,
        "the secret key has an unknown layout"
    );
    let secret = ed25519_compact::SecretKey::from_slice(&bytes[SECRET_AT..SECRET_AT + SECRET_LEN])
        .map_err(|e| anyhow::anyhow!("the secret key is not an Ed25519 key: {e:?}"))?;
    let prehash = Blake2b512::digest(data);
    let signature = secret.sign(prehash, None);
    let mut global_input = signature.to_vec();
    global_input.extend_from_slice(trusted_comment.as_bytes());
    let global = secret.sign(&global_input, None);

    let mut bones = b"ED".to_vec();
    bones.extend_from_slice(&bytes[KEYNUM_AT..SECRET_AT]);
    bones.extend_from_slice(signature.as_ref());
    let text = format!(
        "untrusted comment: {UNTRUSTED_COMMENT}\n{}\ntrusted comment: {trusted_comment}\n{}\n",
        Base64::encode_to_string(&bones).context("base64")?,
        Base64::encode_to_string(global.as_ref()).context("base64")?,
    );
    let parsed =
        minisign::SignatureBox::from_string(&text).context("the signature does not parse")?;
    minisign::verify(&key.public, &parsed, Cursor::new(data), true, false, false)
        .context("the deterministic signature does not verify with the public key")?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        let pair = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
        SigningKey {
            secret: pair.sk,
            public: pair.pk,
            public_key_path: "test.pub".into(),
        }
    }

    #[test]
    fn signs_the_same_bytes_the_same_way_and_minisign_accepts_it() {
        let key = key();
        let first = sign(&key, b"seal", "meetbox test").unwrap();
        assert_eq!(first, sign(&key, b"seal", "meetbox test").unwrap());
        let parsed = minisign::SignatureBox::from_string(&first).unwrap();
        assert_eq!(parsed.trusted_comment().unwrap(), "meetbox test");
        let tampered = minisign::verify(
            &key.public,
            &parsed,
            Cursor::new(b"seaL"),
            true,
            false,
            false,
        );
        assert!(tampered.is_err());
        assert_ne!(first, sign(&key, b"other", "meetbox test").unwrap());
    }
}
