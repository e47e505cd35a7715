//! Per-device secrets, drawn from the kernel's random source on the device itself, so that two boxes
//! flashed from the same image share none. Generated once and kept (0600) so a resumed run reuses them.

pub mod boot_menu;
pub mod scram;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// Characters of generated passwords: safe inside Lua, HOCON, JavaScript and shell quoting.
const ALPHANUMERIC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
/// 32 alphanumerics carry about 190 bits.
const SECRET_LEN: usize = 32;

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secrets {
    /// systemd machine id: 32 lower-case hex digits.
    pub machine_id: String,
    /// Password of `focus@auth.meet.jitsi` (jicofo).
    pub focus_password: String,
    /// Password of `jvb@auth.meet.jitsi` (the videobridge).
    pub jvb_password: String,
    /// coturn's `static-auth-secret`, shared with prosody's `external_service_secret`.
    pub turn_secret: String,
    /// The videobridge's nickname in the brewery MUC.
    pub jvb_muc_nickname: String,
    /// Salts of the service accounts' SCRAM records.
    pub focus_salt: String,
    pub jvb_salt: String,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(<hidden>)")
    }
}

impl Secrets {
    /// Draws a fresh set.
    pub fn generate() -> Result<Self> {
        Ok(Secrets {
            machine_id: hex::encode(random_bytes::<16>()?),
            focus_password: random_alphanumeric(SECRET_LEN)?,
            jvb_password: random_alphanumeric(SECRET_LEN)?,
            turn_secret: random_alphanumeric(SECRET_LEN)?,
            jvb_muc_nickname: uuid_v4()?,
            focus_salt: random_alphanumeric(24)?,
            jvb_salt: random_alphanumeric(24)?,
        })
    }

    /// Every secret value, for checks that none leaks into a log or an unexpected file.
    pub fn values(&self) -> [&str; 4] {
        [
            &self.focus_password,
            &self.jvb_password,
            &self.turn_secret,
            &self.machine_id,
        ]
    }
}

/// Random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf)
        .map_err(|e| anyhow::anyhow!("the system random source failed: {e}"))?;
    Ok(buf)
}

/// A random string over [A-Za-z0-9], by rejection sampling so every character is equally likely.
pub fn random_alphanumeric(len: usize) -> Result<String> {
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for byte in random_bytes::<64>().context("drawing a random password")? {
            // 248 = 4 * 62: bytes above it would favour the first characters.
            if byte < 248 && out.len() < len {
                out.push(ALPHANUMERIC[byte as usize % ALPHANUMERIC.len()] as char);
            }
        }
    }
    Ok(out)
}

/// A random RFC 4122 version-4 UUID.
pub fn uuid_v4() -> Result<String> {
    let mut b = random_bytes::<16>()?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_generations_share_nothing() {
        let a = Secrets::generate().unwrap();
        let b = Secrets::generate().unwrap();
        for (x, y) in a.values().iter().zip(b.values()) {
            assert_ne!(*x, y);
        }
        assert_ne!(a.jvb_muc_nickname, b.jvb_muc_nickname);
    }

    #[test]
    fn shapes() {
        let s = Secrets::generate().unwrap();
        assert_eq!(s.machine_id.len(), 32);
        assert!(s
            .machine_id
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_eq!(s.turn_secret.len(), SECRET_LEN);
        assert!(s.turn_secret.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(s.jvb_muc_nickname.as_bytes()[14], b'4');
        assert_eq!(format!("{s:?}"), "Secrets(<hidden>)");
    }
}
