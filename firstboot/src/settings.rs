//! What setup was asked to do, as kept in the state file: the answers without the admin password (only
//! its SCRAM form is kept), so that a resumed run needs no questions and no clear-text secret.

use serde::{Deserialize, Serialize};

use crate::ask::validation::{Domain, TlsChoice};
use crate::secrets::scram::ScramCredential;

/// Let's Encrypt's production directory, used unless the answers name another ACME server.
pub const LETS_ENCRYPT_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    pub domain: Domain,
    pub admin_user: String,
    pub admin_credential: ScramCredential,
    pub email: Option<String>,
    pub tls: TlsChoice,
    pub acme_directory: String,
    /// PEM of a root certificate to trust for the ACME server (tests); None trusts the system roots.
    pub acme_ca_cert: Option<String>,
    /// Lines of root's `authorized_keys` (public keys; only used when the image has SSH).
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
    /// A STUN server the owner names ("host" or "host:port"), asked for the line's public address
    /// (network/follow.rs); None asks nobody outside.
    #[serde(default)]
    pub stun_server: Option<String>,
}
