//! Certificates from Let's Encrypt (or any ACME server) with HTTP-01 on port 80.
//!
//! The challenge files go to one directory, served on port 80 by the agent itself while nginx is not
//! running (first boot) or by nginx's Meetbox site (renewals). Failures are explained in the user's
//! words, combining what the pre-checks saw with the CA's answer.

pub mod renew;
pub mod retry;
pub mod tls;

mod precheck;
mod responder;

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount,
    NewOrder, OrderStatus, RetryPolicy,
};
use serde::{Deserialize, Serialize};

use crate::apply::{FileSpec, Owner, Root};
use crate::layout;
use tls::CertifiedKey;

pub use precheck::Finding;

/// Port for HTTP-01; tests set `MEETBOX_ACME_HTTP_PORT` to a high port that their ACME server uses.
pub fn http_port() -> u16 {
    std::env::var("MEETBOX_ACME_HTTP_PORT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(80)
}

/// What to ask for.
pub struct Request<'a> {
    pub domain: &'a str,
    pub email: Option<&'a str>,
    pub directory: &'a str,
    pub ca_cert_pem: Option<&'a str>,
    pub http_port: u16,
    /// For advice: where port 80 should be forwarded.
    pub lan_address: Option<IpAddr>,
}

/// A failed attempt: a plain explanation and the technical detail.
#[derive(Debug)]
pub struct Failure {
    pub explanation: String,
    pub detail: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}\n  (details: {})", self.explanation, self.detail)
    }
}

/// The account kept between runs, bound to the directory it was created on.
#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// Obtains a certificate; the pre-check findings are returned in both cases so they can be shown.
pub fn obtain(root: &Root, request: &Request) -> (Vec<Finding>, Result<CertifiedKey, Failure>) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return (
                Vec::new(),
                Err(Failure {
                    explanation: "The agent could not start its network machinery.".into(),
                    detail: e.to_string(),
                }),
            )
        }
    };
    runtime.block_on(obtain_async(root, request))
}

async fn obtain_async(
    root: &Root,
    request: &Request<'_>,
) -> (Vec<Finding>, Result<CertifiedKey, Failure>) {
    let challenge_dir = root.path(layout::ACME_CHALLENGE_DIR);
    let _ = std::fs::create_dir_all(&challenge_dir);
    let binding = match responder::start(request.http_port, challenge_dir.clone()).await {
        Ok(binding) => binding,
        Err(e) => {
            return (
                Vec::new(),
                Err(Failure {
                    explanation: format!(
                        "Port {} on this box could not be opened for the certificate check.",
                        request.http_port
                    ),
                    detail: e.to_string(),
                }),
            )
        }
    };
    let probe = format!(
        "meetbox-probe-{}",
        crate::secrets::random_alphanumeric(16).unwrap_or_default()
    );
    let probe_file = challenge_dir.join(&probe);
    let findings = match publish(root, &probe, &probe) {
        Ok(()) => {
            let path = format!("/.well-known/acme-challenge/{probe}");
            precheck::run(request.domain, request.http_port, &path, &probe).await
        }
        Err(_) => Vec::new(),
    };
    let _ = std::fs::remove_file(&probe_file);
    let result = with_the_turn_name_if_it_validates(root, request)
        .await
        .map_err(|e| explain(e, &findings, request));
    clean_challenge_dir(&challenge_dir);
    drop(binding);
    (findings, result)
}

/// Puts a file where the CA (or the pre-check) fetches it. nginx's workers serve it on a finished box,
/// so it is world-readable whatever the caller's umask (the admin's helper runs with 0077).
fn publish(root: &Root, name: &str, body: &str) -> Result<()> {
    root.write(&FileSpec::new(
        format!("{}/{name}", layout::ACME_CHALLENGE_DIR),
        body,
        0o644,
        Owner::ROOT,
    ))
}

/// What one order gave.
enum Issued {
    Certificate(CertifiedKey),
    /// Every name validated but the TURN name (the CA's reason): its DNS record is missing.
    AllButTheTurnName(String),
}

/// The meeting name and the TURN name (render/multiplex.rs) on one certificate. When only the TURN
/// name fails, its DNS record is missing: the meeting name alone is asked for (its authorization is
/// valid by then, so no second validation), and TURN over 443 waits for the record (status says so).
async fn with_the_turn_name_if_it_validates(
    root: &Root,
    request: &Request<'_>,
) -> Result<CertifiedKey> {
    let turn = layout::turn_name(request.domain);
    let both = [request.domain.to_string(), turn.clone()];
    match order(root, request, &both).await? {
        Issued::Certificate(certified) => Ok(certified),
        Issued::AllButTheTurnName(reason) => {
            println!(
                "    {turn} did not validate ({reason}); asking for {} alone",
                request.domain
            );
            match order(root, request, &both[..1]).await? {
                Issued::Certificate(certified) => Ok(certified),
                Issued::AllButTheTurnName(reason) => Err(anyhow::anyhow!(reason)),
            }
        }
    }
}

/// One order for `names` (the first is the meeting name), from account to certificate chain.
async fn order(root: &Root, request: &Request<'_>, names: &[String]) -> Result<Issued> {
    let account = account(root, request).await?;
    let identifiers: Vec<Identifier> = names.iter().cloned().map(Identifier::Dns).collect();
    let mut order = account
        .new_order(&NewOrder::new(&identifiers))
        .await
        .context("the ACME server refused the order")?;
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz.context("cannot fetch the authorization")?;
        if authz.status == AuthorizationStatus::Valid {
            continue;
        }
        let mut challenge = authz
            .challenge(ChallengeType::Http01)
            .context("the ACME server offers no HTTP-01 challenge")?;
        publish(
            root,
            &challenge.token,
            challenge.key_authorization().as_str(),
        )
        .context("cannot write the challenge file")?;
        challenge
            .set_ready()
            .await
            .context("cannot start the validation")?;
    }
    let policy = RetryPolicy::new()
        .initial_delay(Duration::from_millis(500))
        .timeout(Duration::from_secs(120));
    let ready = order.poll_ready(&policy).await;
    if !matches!(ready, Ok(OrderStatus::Ready)) {
        let (reason, failed) = validation_error(&mut order).await;
        if names.len() > 1 && !failed.is_empty() && failed.iter().all(|name| *name != names[0]) {
            return Ok(Issued::AllButTheTurnName(reason));
        }
        return Err(match ready {
            Err(error) => anyhow::Error::new(error).context("validation did not finish"),
            Ok(_) => anyhow::anyhow!(reason),
        });
    }
    let key = tls::new_key()?;
    order
        .finalize_csr(&tls::csr(names, &key)?)
        .await
        .context("the ACME server refused the certificate request")?;
    let chain_pem = order
        .poll_certificate(&policy)
        .await
        .context("the certificate was not issued in time")?;
    Ok(Issued::Certificate(CertifiedKey {
        chain_pem,
        key_pem: key.serialize_pem(),
    }))
}

/// The CA's reason for a failed validation, and the names whose authorization failed.
async fn validation_error(order: &mut instant_acme::Order) -> (String, Vec<String>) {
    let mut reasons = Vec::new();
    let mut failed = Vec::new();
    let mut authorizations = order.authorizations();
    while let Some(Ok(authz)) = authorizations.next().await {
        if authz.status == AuthorizationStatus::Invalid {
            if let Identifier::Dns(name) = authz.identifier().identifier {
                failed.push(name.clone());
            }
        }
        for challenge in &authz.challenges {
            if let Some(problem) = &challenge.error {
                reasons.push(format!(
                    "{}: {}",
                    problem.r#type.as_deref().unwrap_or("error"),
                    problem.detail.as_deref().unwrap_or("no detail")
                ));
            }
        }
    }
    let reason = if reasons.is_empty() {
        "the ACME server marked the validation invalid".into()
    } else {
        format!("validation failed: {}", reasons.join("; "))
    };
    (reason, failed)
}

/// Loads the stored account for this directory, or creates one (with the e-mail when given).
async fn account(root: &Root, request: &Request<'_>) -> Result<Account> {
    let builder = || -> Result<instant_acme::AccountBuilder> {
        match request.ca_cert_pem {
            Some(pem) => {
                root.write(&FileSpec::new(
                    layout::ACME_CA_FILE,
                    pem,
                    0o644,
                    Owner::ROOT,
                ))?;
                Account::builder_with_root(root.path(layout::ACME_CA_FILE))
                    .context("cannot use the CA certificate given for the ACME server")
            }
            None => Account::builder().context("cannot load the system's trusted certificates"),
        }
    };
    if root.exists(layout::ACME_ACCOUNT_FILE) {
        let stored: StoredAccount =
            serde_json::from_str(&root.read_to_string(layout::ACME_ACCOUNT_FILE)?)
                .context("the stored ACME account is damaged")?;
        if stored.directory == request.directory {
            return builder()?
                .from_credentials(stored.credentials)
                .await
                .context("cannot reach the ACME server");
        }
    }
    let contact = request.email.map(|e| format!("mailto:{e}"));
    let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
    let (account, credentials) = builder()?
        .create(
            &NewAccount {
                contact: &contacts,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            request.directory.to_string(),
            None,
        )
        .await
        .context("cannot create an account at the ACME server")?;
    let stored = StoredAccount {
        directory: request.directory.to_string(),
        credentials,
    };
    root.write(&FileSpec::new(
        layout::ACME_ACCOUNT_FILE,
        serde_json::to_string(&stored).context("cannot encode the ACME account")?,
        0o600,
        Owner::ROOT,
    ))?;
    Ok(account)
}

fn clean_challenge_dir(dir: &std::path::Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// The CA's answer shows it resolved the name and got an HTTP answer, just not the right one; then
/// this box's own DNS lookup failing says nothing about the internet's.
fn ca_reached_a_server(lower_detail: &str) -> bool {
    lower_detail.contains("unauthorized")
        || lower_detail.contains("403")
        || lower_detail.contains("404")
}

/// Turns an error into the probable cause and its fix, in the user's words.
fn explain(error: anyhow::Error, findings: &[Finding], request: &Request) -> Failure {
    let detail = format!("{error:#}");
    let lower = detail.to_lowercase();
    let explanation = if lower.contains("ratelimited") || lower.contains("rate limit") {
        "Let's Encrypt refuses for now because of too many recent attempts for this name. The box retries later on its own; nothing to do.".to_string()
    } else if lower.contains("cannot reach the acme server")
        || lower.contains("cannot create an account")
        || lower.contains("dns error")
        || lower.contains("connection refused") && lower.contains("http request")
    {
        "The certificate authority could not be reached from this box. Check that the box has internet access (cable, router), then it retries on its own.".to_string()
    } else if let Some(first) = findings
        .iter()
        .find(|f| **f != Finding::NoRecord || !ca_reached_a_server(&lower))
    {
        format!(
            "The certificate authority could not verify that {} leads to this box. Probable cause: {}",
            request.domain,
            first.advice(request.domain, request.lan_address)
        )
    } else if lower.contains("dns")
        || lower.contains("nxdomain")
        || lower.contains("no valid a records")
    {
        Finding::NoRecord.advice(request.domain, request.lan_address)
    } else if lower.contains("connection")
        || lower.contains("timeout")
        || lower.contains("timed out")
    {
        format!(
            "The certificate authority could not connect to port 80 of {}. Forward 80/tcp on your router to {}.",
            request.domain,
            request.lan_address.map_or("this box".to_string(), |ip| format!("this box ({ip})"))
        )
    } else if ca_reached_a_server(&lower) {
        format!(
            "The certificate authority reached a machine at {} that is not this box. Check the DNS record and that the router forwards 80/tcp to this box.",
            request.domain
        )
    } else {
        "The certificate could not be obtained. The box keeps its self-signed certificate and retries on its own.".to_string()
    };
    Failure {
        explanation,
        detail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request<'static> {
        Request {
            domain: "meet.example.org",
            email: None,
            directory: "https://acme.example/dir",
            ca_cert_pem: None,
            http_port: 80,
            lan_address: Some("192.168.1.20".parse().unwrap()),
        }
    }

    #[test]
    fn the_cas_own_dns_failure_is_told_as_a_missing_record() {
        let failure = explain(
            anyhow::anyhow!("validation failed: NXDOMAIN looking up A for meet.example.org"),
            &[Finding::NoRecord],
            &request(),
        );
        assert!(
            failure.explanation.contains("has no address in DNS"),
            "{failure}"
        );
    }

    #[test]
    fn a_ca_that_reached_a_web_server_is_not_told_as_missing_dns() {
        // The box's own resolver may not know the name (a LAN's DNS) while the CA's does.
        let failure = explain(
            anyhow::anyhow!("urn:ietf:params:acme:error:unauthorized: 403 fetching the token"),
            &[Finding::NoRecord],
            &request(),
        );
        assert!(
            !failure.explanation.contains("no address in DNS"),
            "{failure}"
        );
        assert!(failure.explanation.contains("not this box"), "{failure}");
        assert!(failure.detail.contains("403"), "{failure}");
    }

    #[test]
    fn a_precheck_that_saw_another_machine_explains_a_refusal() {
        let other = "203.0.113.7".parse().unwrap();
        let failure = explain(
            anyhow::anyhow!("unauthorized: the key authorization did not match"),
            &[Finding::AnsweredByAnother(other)],
            &request(),
        );
        assert!(
            failure.explanation.contains("not from this box"),
            "{failure}"
        );
        assert!(failure.explanation.contains("192.168.1.20"), "{failure}");
    }
}
