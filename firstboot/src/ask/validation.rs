//! Validation of everything a user types or writes into the answers file. Each refusal names the problem
//! and what to type instead; the same functions serve the console questions and the answers file.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Longest DNS name (RFC 1035), in ASCII form.
/// 253 for a DNS name, less "turn." (layout::turn_name must fit too).
const MAX_DOMAIN_LEN: usize = 248;
/// Longest DNS label.
const MAX_LABEL_LEN: usize = 63;
/// Shortest password accepted when it is not a passphrase.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Fewest words for a passphrase.
pub const MIN_PASSPHRASE_WORDS: usize = 4;
/// Longest password accepted (keeps hashing time bounded).
const MAX_PASSWORD_CHARS: usize = 1024;
/// Account names the agent itself uses in prosody.
const RESERVED_USERS: [&str; 3] = ["focus", "jvb", "meetbox"];

/// Passwords from public lists of the most used ones that pass the length rules; compared lower-cased.
const COMMON_PASSWORDS: &str = include_str!("common-passwords.txt");

/// A public DNS name in lower-case ASCII (international names converted to punycode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Domain(String);

impl Domain {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Domain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for Domain {
    type Error = String;
    fn try_from(value: String) -> Result<Self, String> {
        domain(&value)
    }
}

impl From<Domain> for String {
    fn from(domain: Domain) -> String {
        domain.0
    }
}

/// Checks a domain name typed by the user and returns its lower-case ASCII form.
pub fn domain(input: &str) -> Result<Domain, String> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Err(
            "Type the name people will use to reach the server, e.g. meet.example.org.".into(),
        );
    }
    not_a_url_or_address(trimmed)?;
    let without_dot = trimmed.strip_suffix('.').unwrap_or(trimmed);
    let ascii = idna::domain_to_ascii(without_dot)
        .map_err(|_| format!("\"{trimmed}\" is not a valid domain name (unusual characters)."))?;
    if ascii.len() > MAX_DOMAIN_LEN {
        return Err(format!(
            "That name is {} characters long; the box takes at most {MAX_DOMAIN_LEN} (it also serves turn.<name>). Choose a shorter name.",
            ascii.len()
        ));
    }
    if ascii == "localhost" || ascii.ends_with(".localhost") {
        return Err(
            "\"localhost\" only works on this box itself; type the public name of the server."
                .into(),
        );
    }
    let labels: Vec<&str> = ascii.split('.').collect();
    if labels.len() < 2 {
        return Err(format!(
            "\"{ascii}\" is a single word; type a full name with a dot, e.g. meet.example.org."
        ));
    }
    labels.iter().try_for_each(|label| valid_label(label))?;
    if labels
        .last()
        .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err("The last part of the name cannot be a number.".into());
    }
    Ok(Domain(ascii))
}

/// Refuses what people paste instead of a bare name: a URL, a path, spaces, an IP
/// address or a port.
fn not_a_url_or_address(trimmed: &str) -> Result<(), String> {
    if trimmed.contains("://") {
        return Err(format!(
            "Type only the name, without \"{}\": e.g. meet.example.org.",
            &trimmed[..trimmed.find("://").unwrap_or(0) + 3]
        ));
    }
    if trimmed.contains('/') {
        return Err("Type only the name, without a path (nothing after a \"/\").".into());
    }
    if trimmed.chars().any(char::is_whitespace) {
        return Err("A domain name has no spaces.".into());
    }
    let bare = trimmed.trim_start_matches('[').trim_end_matches(']');
    if bare.parse::<IpAddr>().is_ok() {
        return Err(
            "That is an IP address; type a domain name instead (certificates need a name that points to your router)."
                .into(),
        );
    }
    if trimmed.contains(':') {
        return Err(
            "Type the name without a port (nothing after a \":\"); the server uses 443.".into(),
        );
    }
    Ok(())
}

/// Checks one label of an ASCII (punycode) domain name.
fn valid_label(label: &str) -> Result<(), String> {
    if label.is_empty() {
        return Err("The name has an empty part (two dots in a row, or a leading dot).".into());
    }
    if label.len() > MAX_LABEL_LEN {
        return Err(format!(
            "The part \"{label}\" is longer than {MAX_LABEL_LEN} characters."
        ));
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(format!(
            "The part \"{label}\" may contain only letters, digits and hyphens."
        ));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(format!(
            "The part \"{label}\" may not start or end with a hyphen."
        ));
    }
    Ok(())
}

/// Checks the admin user name (a prosody account on the internal XMPP domain).
pub fn user(input: &str) -> Result<String, String> {
    let name = input.trim().to_lowercase();
    if name.is_empty() {
        return Err("Type a user name, e.g. admin.".into());
    }
    if name.len() > 64 {
        return Err("A user name has at most 64 characters.".into());
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err("A user name starts with a letter.".into());
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    {
        return Err("A user name may contain only letters, digits, \".\", \"_\" and \"-\".".into());
    }
    if RESERVED_USERS.contains(&name.as_str()) {
        return Err(format!(
            "\"{name}\" is used by the server itself; choose another name."
        ));
    }
    Ok(name)
}

/// Checks the admin password: 12+ characters or a 4+ word passphrase, not a common password, not the
/// user name. The error never repeats the password.
pub fn password(password: &str, user: &str) -> Result<(), String> {
    let chars = password.chars().count();
    if chars > MAX_PASSWORD_CHARS {
        return Err(format!(
            "A password has at most {MAX_PASSWORD_CHARS} characters."
        ));
    }
    let words = password
        .split_whitespace()
        .filter(|word| word.chars().count() >= 2)
        .count();
    if chars < MIN_PASSWORD_CHARS && words < MIN_PASSPHRASE_WORDS {
        return Err(format!(
            "Too short: use at least {MIN_PASSWORD_CHARS} characters, or a passphrase of {MIN_PASSPHRASE_WORDS} or more words."
        ));
    }
    let lowered = password.to_lowercase();
    if COMMON_PASSWORDS
        .lines()
        .any(|common| common.trim() == lowered)
    {
        return Err("That is one of the most common passwords; choose another.".into());
    }
    let first = lowered.chars().next();
    if lowered.chars().all(|c| Some(c) == first) {
        return Err("A password of one repeated character is too easy to guess.".into());
    }
    if !user.is_empty() && lowered.contains(&user.to_lowercase()) {
        return Err("The password may not contain the user name.".into());
    }
    Ok(())
}

/// Checks an optional e-mail address (empty means none) and returns it with its domain in ASCII.
pub fn email(input: &str) -> Result<Option<String>, String> {
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Ok(None);
    }
    let (local, host) = trimmed
        .rsplit_once('@')
        .ok_or_else(|| "An e-mail address has the form name@example.org.".to_string())?;
    if local.is_empty() || local.len() > 64 || local.contains('@') {
        return Err("The part before \"@\" is missing or invalid.".into());
    }
    if local
        .chars()
        .any(|c| c.is_whitespace() || c.is_control() || "<>()[],;:\"\\".contains(c))
    {
        return Err(
            "The part before \"@\" contains characters an e-mail address may not have.".into(),
        );
    }
    let host = domain(host).map_err(|why| format!("The part after \"@\" is not valid: {why}"))?;
    Ok(Some(format!("{local}@{host}")))
}

/// How the box gets its certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TlsChoice {
    /// A certificate from Let's Encrypt (or another ACME server), via HTTP-01 on port 80.
    #[serde(rename = "letsencrypt")]
    LetsEncrypt,
    /// A self-signed certificate, for a box used only on the local network.
    #[serde(rename = "self-signed")]
    SelfSigned,
}

impl TlsChoice {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsChoice::LetsEncrypt => "letsencrypt",
            TlsChoice::SelfSigned => "self-signed",
        }
    }
}

/// Checks the TLS choice as written in the answers file.
pub fn tls_choice(input: &str) -> Result<TlsChoice, String> {
    match input.trim().to_lowercase().as_str() {
        "letsencrypt" | "let's encrypt" | "lets-encrypt" | "acme" => Ok(TlsChoice::LetsEncrypt),
        "self-signed" | "selfsigned" => Ok(TlsChoice::SelfSigned),
        other => Err(format!(
            "\"{other}\" is not a TLS choice; write \"letsencrypt\" or \"self-signed\"."
        )),
    }
}

/// Checks an ACME directory URL (only https, except for loopback test servers).
pub fn acme_directory(input: &str) -> Result<String, String> {
    let url = input.trim();
    if url.starts_with("https://") {
        Ok(url.to_string())
    } else {
        Err("acme_directory must be an https:// URL of an ACME directory.".into())
    }
}

/// Checks a STUN server's address, "host", "host:port" or "IPv4:port" (network/stun.rs).
pub fn stun_server(input: &str) -> Result<String, String> {
    let text = input.trim();
    let text = text.strip_prefix("stun:").unwrap_or(text);
    if text.contains("://") {
        return Err("write the STUN server as name:port, without http:// or https://.".into());
    }
    let (host, port) = match text.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (text, None),
    };
    if let Some(port) = port {
        if !port.parse::<u16>().is_ok_and(|p| p > 0) {
            return Err(format!(
                "\"{port}\" is not a port; write the server as name:port, e.g. stun.example.org:3478."
            ));
        }
    }
    if host.parse::<std::net::Ipv4Addr>().is_err() {
        domain(host).map_err(|why| format!("the STUN server's name: {why}"))?;
    }
    Ok(text.to_string())
}

/// Checks that a PEM text holds at least one certificate.
pub fn ca_certificate(pem: &str) -> Result<String, String> {
    if pem.contains("-----BEGIN CERTIFICATE-----") && pem.contains("-----END CERTIFICATE-----") {
        Ok(pem.trim().to_string() + "\n")
    } else {
        Err("acme_ca_cert must hold a PEM certificate (-----BEGIN CERTIFICATE----- ...).".into())
    }
}

/// Key types sshd accepts on Meetbox (builder's sshd settings: no NIST curves, no DSA).
const SSH_KEY_TYPES: [&str; 3] = ["ssh-ed25519", "sk-ssh-ed25519@openssh.com", "ssh-rsa"];
/// Smallest RSA modulus accepted, in bits (ssh-audit's threshold).
const MIN_RSA_BITS: usize = 3072;

/// Checks one line of `authorized_keys` in its plain form, `TYPE BASE64 [COMMENT]`, and returns
/// it with surrounding space removed. The blob must decode and name the same type, so a key
/// truncated by copying is refused here rather than silently ignored by sshd.
pub fn ssh_public_key(input: &str) -> Result<String, String> {
    use base64::Engine;
    let line = input.trim();
    let mut fields = line.split_whitespace();
    let (Some(kind), Some(blob)) = (fields.next(), fields.next()) else {
        return Err(
            "an SSH public key is one line: TYPE KEY [COMMENT], as in the .pub file ssh-keygen writes."
                .into(),
        );
    };
    if line.contains('\n') || line.contains('\r') {
        return Err("one SSH public key per list entry, without line breaks.".into());
    }
    if !SSH_KEY_TYPES.contains(&kind) {
        return Err(format!(
            "SSH keys of type {kind:?} are not accepted: use an Ed25519 key (ssh-keygen -t ed25519) or RSA of {MIN_RSA_BITS} bits or more."
        ));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(blob)
        .map_err(|_| "the SSH public key is damaged (its key part is not base64): copy the whole line of the .pub file.".to_string())?;
    let strings = ssh_wire_strings(&bytes)
        .ok_or("the SSH public key is damaged: copy the whole line of the .pub file.")?;
    if strings.first().map(Vec::as_slice) != Some(kind.as_bytes()) {
        return Err(format!(
            "the SSH public key's data is not a {kind} key: copy the whole line of the .pub file."
        ));
    }
    if kind == "ssh-rsa" {
        // Fields: type, public exponent, modulus (an mpint, which may carry a leading zero byte).
        let modulus = strings
            .get(2)
            .map(|m| m.iter().skip_while(|b| **b == 0).count() * 8);
        if modulus.unwrap_or(0) < MIN_RSA_BITS {
            return Err(format!(
                "the RSA key is shorter than {MIN_RSA_BITS} bits: make a new one with ssh-keygen -t ed25519."
            ));
        }
    }
    Ok(line.to_string())
}

/// Splits SSH wire-format data into its length-prefixed strings; None when a length overruns.
fn ssh_wire_strings(mut bytes: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut strings = Vec::new();
    while !bytes.is_empty() {
        let len = u32::from_be_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
        strings.push(bytes.get(4..4 + len)?.to_vec());
        bytes = &bytes[4 + len..];
    }
    Some(strings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_keys_are_checked_to_the_blob() {
        let ed25519 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHfMr/yH/a4ErzeFOsVzmdeHZVSYOfDfAuSiIQTsgM0n owner@laptop";
        assert_eq!(ssh_public_key(&format!("  {ed25519}\n")).unwrap(), ed25519);
        let truncated = &ed25519[..60];
        let why = ssh_public_key(truncated).unwrap_err();
        assert!(why.contains("damaged"), "{why}");
        let why =
            ssh_public_key("ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTY=").unwrap_err();
        assert!(why.contains("ed25519"), "{why}");
        let relabelled = ed25519.replacen("ssh-ed25519", "ssh-rsa", 1);
        let why = ssh_public_key(&relabelled).unwrap_err();
        assert!(why.contains("not a ssh-rsa key"), "{why}");
        let rsa_2048 = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC99W4wSx8Yy9xaLRj6aZ/UXDVyUvCZOIWTuV3WCGXpbExSlCxgYCeuqP+2e7YhHk+mZCOfuA8ZWPBVKvp7VXvyQiREXrWXqOh2kuFeqrkpy9DnTvDbv5c+W8FT2Ti0/NWO8gWhHmHWydQqnT/iv9f5PP68sz8iQqgHDzlDpX0WP6Om2pHfUmxmcdED0RfLnUlnGt2dhgJLOsX+7qEcL8LPSO6U1bTie9Ng7OIJPQIvJh3iAxZFd+1LlO+mzN5Tz2XHb6736CgAAteGMSvMO8KU61nNiq42yQKPR5AVuNyCjRUCSOS2V0PmQeDlcBP5C+H+aFeLPBAtwS9SSxd8mOfT";
        let why = ssh_public_key(rsa_2048).unwrap_err();
        assert!(why.contains("shorter than 3072"), "{why}");
        assert!(ssh_public_key("AAAAC3NzaC1lZDI1NTE5").is_err());
    }

    fn refused(input: &str, needle: &str) {
        let why = domain(input).expect_err(input);
        assert!(why.contains(needle), "{input:?}: {why}");
    }

    #[test]
    fn domain_is_lower_cased_and_trimmed() {
        assert_eq!(
            domain("  Meet.Example.ORG. ").unwrap().as_str(),
            "meet.example.org"
        );
    }

    #[test]
    fn international_domain_is_converted_to_punycode() {
        assert_eq!(
            domain("bücher.example").unwrap().as_str(),
            "xn--bcher-kva.example"
        );
        assert_eq!(
            domain("МОСКВА.рф").unwrap().as_str(),
            "xn--80adxhks.xn--p1ai"
        );
    }

    #[test]
    fn domain_refusals_name_the_problem() {
        refused("https://meet.example.org", "without \"https://\"");
        refused("meet.example.org/room", "without a path");
        refused("meet.example.org:8443", "without a port");
        refused("192.168.1.10", "IP address");
        refused("[2001:db8::1]", "IP address");
        refused("localhost", "localhost");
        refused("box.localhost", "localhost");
        refused("meetbox", "single word");
        refused("", "Type the name");
        refused("meet..example.org", "empty part");
        refused("-meet.example.org", "hyphen");
        refused("meet_box.example.org", "only letters");
        refused("meet.example.123", "number");
        refused(&format!("{}.org", "a".repeat(64)), "longer than 63");
        let long = format!("{}.org", ["abcdefghij"; 25].join("."));
        assert!(long.len() > 253);
        refused(&long, "at most 248");
        // A name DNS allows, whose turn. name would not fit.
        let just_over = format!("{}.org", ["abcdefghi"; 25].join(".").get(..245).unwrap());
        assert_eq!(just_over.len(), 249);
        refused(&just_over, "at most 248");
    }

    #[test]
    fn stun_servers_are_a_name_or_an_address_with_an_optional_port() {
        assert_eq!(
            stun_server(" stun.example.org ").unwrap(),
            "stun.example.org"
        );
        assert_eq!(
            stun_server("stun:stun.example.org:3478").unwrap(),
            "stun.example.org:3478"
        );
        assert_eq!(
            stun_server("198.51.99.7:19302").unwrap(),
            "198.51.99.7:19302"
        );
        assert!(stun_server("stun.example.org:http")
            .unwrap_err()
            .contains("not a port"));
        assert!(stun_server("stun.example.org:0")
            .unwrap_err()
            .contains("not a port"));
        assert!(stun_server("https://stun.example.org")
            .unwrap_err()
            .contains("without http"));
        assert!(stun_server("stun_box:3478")
            .unwrap_err()
            .contains("STUN server's name"));
    }

    #[test]
    fn user_names() {
        assert_eq!(user(" Admin ").unwrap(), "admin");
        assert!(user("").is_err());
        assert!(user("1admin").unwrap_err().contains("starts with a letter"));
        assert!(user("ad min").unwrap_err().contains("only letters"));
        assert!(user("focus").unwrap_err().contains("used by the server"));
        assert!(user("jvb").is_err());
    }

    #[test]
    fn password_rules() {
        assert!(password("short", "admin")
            .unwrap_err()
            .contains("Too short"));
        assert!(password("elevenchars", "admin").is_err());
        password("Tr0ub4dor&3xyz", "admin").unwrap();
        password("horse staple cart moon", "admin").unwrap();
        assert!(password("one two six", "admin")
            .unwrap_err()
            .contains("Too short"));
        assert!(password("password1234", "admin")
            .unwrap_err()
            .contains("most common"));
        assert!(password("Password1234", "admin")
            .unwrap_err()
            .contains("most common"));
        assert!(password("aaaaaaaaaaaaaa", "admin")
            .unwrap_err()
            .contains("repeated"));
        assert!(password("myadminpassword99", "admin")
            .unwrap_err()
            .contains("user name"));
        let why = password("qwertyuiop12", "admin").unwrap_err();
        assert!(
            !why.contains("qwertyuiop12"),
            "the refusal must not echo the password"
        );
    }

    #[test]
    fn email_is_optional_and_checked() {
        assert_eq!(email("  ").unwrap(), None);
        assert_eq!(
            email("Ops@Exämple.org").unwrap().unwrap(),
            "Ops@xn--exmple-cua.org"
        );
        assert!(email("ops").unwrap_err().contains("name@example.org"));
        assert!(email("@example.org").is_err());
        assert!(email("ops@localhost").unwrap_err().contains("after \"@\""));
        assert!(email("o ps@example.org").is_err());
    }

    #[test]
    fn tls_choices() {
        assert_eq!(tls_choice("letsencrypt").unwrap(), TlsChoice::LetsEncrypt);
        assert_eq!(tls_choice("Self-Signed").unwrap(), TlsChoice::SelfSigned);
        assert!(tls_choice("manual")
            .unwrap_err()
            .contains("\"letsencrypt\" or \"self-signed\""));
    }

    #[test]
    fn acme_settings() {
        assert!(acme_directory("http://ca.example/dir").is_err());
        acme_directory("https://127.0.0.1:14000/dir").unwrap();
        assert!(ca_certificate("not a pem").is_err());
    }
}
