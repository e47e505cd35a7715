//! The boot menu's superuser, per device (CIS 1.4.1): GRUB refuses to edit an entry or open its
//! shell without the superuser's password, so nobody at the keyboard can boot the box into a root
//! shell with `init=/bin/sh`. The entries themselves are unrestricted, so power cuts and updates
//! still boot unattended.
//!
//! The password is drawn here and never kept: the owner has no use for GRUB's shell, and a password
//! nobody knows cannot leak. Only GRUB's PBKDF2 record of it reaches the disk, as
//! `grub-mkpasswd-pbkdf2` writes one (SHA-512, 64-byte salt and hash, upper-case hex).

use anyhow::Result;
use sha2::Sha512;

use super::{random_alphanumeric, random_bytes};

/// `grub-mkpasswd-pbkdf2`'s default iteration count.
pub const ITERATIONS: u32 = 10_000;

/// GRUB's record of `password` with `salt`: `grub.pbkdf2.sha512.ITERATIONS.SALT.HASH`.
pub fn pbkdf2_record(password: &[u8], salt: &[u8], iterations: u32) -> String {
    let mut hash = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<Sha512>(password, salt, iterations, &mut hash);
    format!(
        "grub.pbkdf2.sha512.{iterations}.{}.{}",
        hex::encode_upper(salt),
        hex::encode_upper(hash)
    )
}

/// The record of a fresh random password (forgotten on return).
pub fn unknown_password_record() -> Result<String> {
    let password = random_alphanumeric(32)?;
    let salt = random_bytes::<64>()?;
    Ok(pbkdf2_record(password.as_bytes(), &salt, ITERATIONS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_is_pbkdf2_hmac_sha512_in_grub_s_format() {
        // PBKDF2-HMAC-SHA512("password", "salt", 1), the published test vector.
        let record = pbkdf2_record(b"password", b"salt", 1);
        assert_eq!(
            record,
            "grub.pbkdf2.sha512.1.73616C74.867F70CF1ADE02CFF3752599A3A53DC4AF34C7A669815AE5D513554E1C8CF252C02D470A285A0501BAD999BFE943C08F050235D7D68B1DA55E63F73B60A57FCE"
        );
    }

    #[test]
    fn every_device_gets_its_own() {
        let (a, b) = (
            unknown_password_record().unwrap(),
            unknown_password_record().unwrap(),
        );
        assert_ne!(a, b);
        let fields: Vec<&str> = a.split('.').collect();
        assert_eq!(fields[..4], ["grub", "pbkdf2", "sha512", "10000"]);
        assert_eq!((fields[4].len(), fields[5].len()), (128, 128));
    }
}
