//! Prosody account records in `internal_hashed` form (SCRAM-SHA-1), computed here so that the admin
//! password never appears on a command line (`prosodyctl register` takes it as an argument) and is never
//! stored: only the salted keys go to disk, exactly as prosody itself would write them.

use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha1::{Digest, Sha1};
use unicode_normalization::UnicodeNormalization;

/// Prosody 0.12's `default_iteration_count`.
pub const ITERATIONS: u32 = 10_000;

/// The stored form of one account's password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredential {
    pub salt: String,
    pub iteration_count: u32,
    pub stored_key: String,
    pub server_key: String,
}

/// Derives the SCRAM-SHA-1 keys of `password` with `salt`, as prosody's `getAuthenticationDatabaseSHA1`.
///
/// Prosody applies SASLprep first; its core is NFKC normalisation, applied here (ASCII is unchanged).
pub fn credential(password: &str, salt: &str, iteration_count: u32) -> ScramCredential {
    let prepared: String = password.nfkc().collect();
    let mut salted = [0u8; 20];
    pbkdf2::pbkdf2_hmac::<Sha1>(
        prepared.as_bytes(),
        salt.as_bytes(),
        iteration_count,
        &mut salted,
    );
    let client_key = hmac(&salted, b"Client Key");
    let stored_key = Sha1::digest(client_key);
    let server_key = hmac(&salted, b"Server Key");
    ScramCredential {
        salt: salt.to_string(),
        iteration_count,
        stored_key: hex::encode(stored_key),
        server_key: hex::encode(server_key),
    }
}

fn hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac =
        <Hmac<Sha1> as KeyInit>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

/// Renders the account file prosody's `internal` storage reads (`return { ... };`).
pub fn account_file(credential: &ScramCredential) -> String {
    format!(
        "return {{\n\t[\"iteration_count\"] = {};\n\t[\"salt\"] = \"{}\";\n\t[\"server_key\"] = \"{}\";\n\t[\"stored_key\"] = \"{}\";\n}};\n",
        credential.iteration_count, credential.salt, credential.server_key, credential.stored_key
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_file_is_a_lua_table() {
        let record = account_file(&credential("pencil", "salt", 4096));
        assert!(record.starts_with("return {"));
        assert!(record.contains("[\"iteration_count\"] = 4096;"));
        assert_eq!(credential("pencil", "salt", 4096).stored_key.len(), 40);
    }

    #[test]
    fn different_salts_give_different_keys() {
        assert_ne!(
            credential("pencil", "a", 4096).stored_key,
            credential("pencil", "b", 4096).stored_key
        );
    }
}
