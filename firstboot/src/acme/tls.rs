//! Certificates: the self-signed fallback (rcgen), keys and CSRs for ACME, reading a certificate's
//! validity, the two-thirds renewal rule, and installing a certificate where nginx and coturn read it.

use anyhow::{Context, Result};
use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};
use time::{Duration, OffsetDateTime};

use crate::apply::{FileSpec, Owner, Root};
use crate::layout;

/// Validity of self-signed certificates; 825 days is the longest some browsers accept at all.
const SELF_SIGNED_DAYS: i64 = 825;

/// A certificate chain and its private key, both PEM.
#[derive(Clone)]
pub struct CertifiedKey {
    pub chain_pem: String,
    pub key_pem: String,
}

/// A fresh ECDSA P-256 key.
pub fn new_key() -> Result<KeyPair> {
    KeyPair::generate().context("cannot generate a TLS key")
}

/// A self-signed certificate for `names` with a fresh key.
pub fn self_signed(names: &[&str]) -> Result<CertifiedKey> {
    let key = new_key()?;
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .context("a certificate name is not valid")?;
    let mut dn = DistinguishedName::new();
    dn.push(
        DnType::CommonName,
        names.first().copied().unwrap_or("meetbox"),
    );
    dn.push(DnType::OrganizationName, "Meetbox (self-signed)");
    params.distinguished_name = dn;
    let now = OffsetDateTime::now_utc();
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(SELF_SIGNED_DAYS);
    let cert = params
        .self_signed(&key)
        .context("cannot sign the self-signed certificate")?;
    Ok(CertifiedKey {
        chain_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

/// A DER certificate signing request for `domain`.
pub fn csr(names: &[String], key: &KeyPair) -> Result<Vec<u8>> {
    let mut params = CertificateParams::new(names.to_vec())
        .context("the domain is not a valid certificate name")?;
    params.distinguished_name = DistinguishedName::new();
    let request = params
        .serialize_request(key)
        .context("cannot build the certificate request")?;
    Ok(request.der().to_vec())
}

/// What the status screen and the renewal rule need to know of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateInfo {
    pub subject: String,
    pub issuer: String,
    pub not_before: i64,
    pub not_after: i64,
    pub self_signed: bool,
    /// The DNS names it certifies (subject alternative names).
    pub names: Vec<String>,
}

/// Reads the first certificate of a PEM chain.
pub fn inspect(chain_pem: &str) -> Result<CertificateInfo> {
    let (_, pem) = x509_parser::pem::parse_x509_pem(chain_pem.as_bytes())
        .map_err(|e| anyhow::anyhow!("the certificate file is not PEM: {e}"))?;
    let cert = pem
        .parse_x509()
        .map_err(|e| anyhow::anyhow!("the certificate cannot be parsed: {e}"))?;
    Ok(CertificateInfo {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
        self_signed: cert.subject() == cert.issuer(),
        names: cert
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| {
                san.value
                    .general_names
                    .iter()
                    .filter_map(|name| match name {
                        x509_parser::extensions::GeneralName::DNSName(dns) => {
                            Some(dns.to_ascii_lowercase())
                        }
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// True for a CA-issued certificate of `domain` that is not yet due for renewal at `now`: a
/// restored box keeps it instead of asking the CA again.
pub fn still_good_for(info: &CertificateInfo, domain: &str, now: i64) -> bool {
    !info.self_signed && info.names.iter().any(|name| name == domain) && now < renewal_time(info)
}

/// The moment to renew: two thirds into the lifetime (day 60 of Let's Encrypt's 90, and it follows
/// shorter lifetimes too).
pub fn renewal_time(info: &CertificateInfo) -> i64 {
    info.not_before + (info.not_after - info.not_before) * 2 / 3
}

/// Installs a certificate for nginx (root-only key) and coturn (its own copy, as it drops privileges).
pub fn install(root: &Root, certified: &CertifiedKey) -> Result<()> {
    let turn = Owner::new("turnserver", "turnserver");
    for file in [
        FileSpec::new(
            layout::TLS_CERT,
            certified.chain_pem.clone(),
            0o644,
            Owner::ROOT,
        ),
        FileSpec::new(
            layout::TLS_KEY,
            certified.key_pem.clone(),
            0o600,
            Owner::ROOT,
        ),
        FileSpec::new(
            layout::TURN_TLS_CERT,
            certified.chain_pem.clone(),
            0o644,
            turn,
        ),
        FileSpec::new(layout::TURN_TLS_KEY, certified.key_pem.clone(), 0o600, turn),
    ] {
        root.write(&file).context("installing the certificate")?;
    }
    Ok(())
}

/// The installed certificate, if any.
pub fn installed(root: &Root) -> Result<Option<CertificateInfo>> {
    if !root.exists(layout::TLS_CERT) {
        return Ok(None);
    }
    inspect(&root.read_to_string(layout::TLS_CERT)?).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_signed_certificate_names_the_domain() {
        let certified = self_signed(&["meet.example.org"]).unwrap();
        let info = inspect(&certified.chain_pem).unwrap();
        assert!(info.self_signed);
        assert!(info.subject.contains("meet.example.org"));
        assert_eq!(info.names, ["meet.example.org"]);
        assert!(certified.key_pem.contains("PRIVATE KEY"));
        let days = (info.not_after - info.not_before) / 86_400;
        assert!((824..=826).contains(&days), "{days}");
    }

    #[test]
    fn renewal_is_due_at_two_thirds() {
        let info = CertificateInfo {
            subject: String::new(),
            issuer: String::new(),
            not_before: 0,
            not_after: 90 * 86_400,
            self_signed: false,
            names: vec!["meet.example.org".into()],
        };
        assert_eq!(renewal_time(&info), 60 * 86_400);
        // Kept (after a restore) only for its own name, and only until renewal is due.
        assert!(still_good_for(&info, "meet.example.org", 59 * 86_400));
        assert!(!still_good_for(&info, "meet.example.org", 60 * 86_400));
        assert!(!still_good_for(&info, "other.example.org", 0));
        let self_signed = CertificateInfo {
            self_signed: true,
            ..info
        };
        assert!(!still_good_for(&self_signed, "meet.example.org", 0));
    }

    #[test]
    fn csr_is_der() {
        let key = new_key().unwrap();
        let der = csr(&["meet.example.org".to_string()], &key).unwrap();
        assert_eq!(der[0], 0x30);
    }
}
