//! Checks before asking the CA: does the name resolve, to a public address, and does port 80 at that
//! address reach this box? They advise only (a LAN's DNS may answer differently than the internet's, and
//! some routers cannot loop a request back to their own public address).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::network;

/// What a check found, in the user's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    NoRecord,
    PrivateAddress(IpAddr),
    PortClosed(IpAddr),
    AnsweredByAnother(IpAddr),
    /// The name's AAAA record is not this box's IPv6 address (the box's own one, or none).
    AaaaElsewhere(IpAddr, Option<IpAddr>),
}

impl Finding {
    pub fn advice(&self, domain: &str, lan: Option<IpAddr>) -> String {
        let here = lan.map_or("this box".to_string(), |ip| format!("this box ({ip})"));
        match self {
            Finding::NoRecord => format!(
                "The name {domain} has no address in DNS. At your DNS provider (or dynamic-DNS service), create an A record for {domain} pointing to your router's public IP address."
            ),
            Finding::PrivateAddress(ip) => format!(
                "{domain} points to {ip}, an address inside a private network. Let's Encrypt needs the name to point to your router's public IP address (your own network's DNS may answer differently from the internet's; if so, ignore this)."
            ),
            Finding::PortClosed(ip) => format!(
                "Port 80 at {ip} could not be reached from here. Forward 80/tcp on your router to {here}. (Some routers cannot reach their own public address from inside; then this check fails even when forwarding is right.)"
            ),
            Finding::AaaaElsewhere(record, own) => match own {
                Some(own) => format!(
                    "{domain}'s AAAA record gives {record}, but this box's IPv6 address is {own}: IPv6 guests (and the certificate authority, which prefers IPv6) go elsewhere. Change the AAAA record to {own}."
                ),
                None => format!(
                    "{domain} has an AAAA record ({record}) but this box has no IPv6 address: IPv6 guests (and the certificate authority, which prefers IPv6) go nowhere. Remove the AAAA record, or turn IPv6 on in your router."
                ),
            },
            Finding::AnsweredByAnother(ip) => format!(
                "Port 80 at {ip} answers, but not from this box: either {domain} points to another machine, or the router forwards port 80 to another device. Forward 80/tcp to {here}."
            ),
        }
    }
}

/// Runs the checks; `probe_path` and `probe_body` are a file the challenge server is serving now.
pub async fn run(domain: &str, port: u16, probe_path: &str, probe_body: &str) -> Vec<Finding> {
    let resolved = network::resolve(domain);
    let Some(&first) = resolved.iter().find(|ip| ip.is_ipv4()).or(resolved.first()) else {
        return vec![Finding::NoRecord];
    };
    let mut findings = aaaa_findings(&resolved, network::global_ipv6());
    if !network::is_global(first) && !first.is_loopback() {
        findings.push(Finding::PrivateAddress(first));
    }
    match fetch(SocketAddr::new(first, port), domain, probe_path).await {
        None => findings.push(Finding::PortClosed(first)),
        Some(body) if body.trim() != probe_body => findings.push(Finding::AnsweredByAnother(first)),
        Some(_) => {}
    }
    findings
}

/// An AAAA record must be this box's own global IPv6 address (pure).
fn aaaa_findings(resolved: &[IpAddr], own: Option<IpAddr>) -> Vec<Finding> {
    let records: Vec<IpAddr> = resolved.iter().copied().filter(IpAddr::is_ipv6).collect();
    match records.first() {
        Some(&record) if own.is_none_or(|own| !records.contains(&own)) => {
            vec![Finding::AaaaElsewhere(record, own)]
        }
        _ => Vec::new(),
    }
}

/// GETs `path` from `addr` with a short timeout; the body, or None when the port does not answer.
async fn fetch(addr: SocketAddr, host: &str, path: &str) -> Option<String> {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8_lossy(&response).to_string();
        Some(
            text.split_once("\r\n\r\n")
                .map_or(String::new(), |(_, body)| body.to_string()),
        )
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_aaaa_record_must_be_the_box_s_own_address() {
        let v4: IpAddr = "198.51.99.10".parse().unwrap();
        let own: IpAddr = "2a01:4f8::20".parse().unwrap();
        let other: IpAddr = "2a01:4f8::99".parse().unwrap();
        assert!(aaaa_findings(&[v4], Some(own)).is_empty());
        assert!(aaaa_findings(&[v4, own], Some(own)).is_empty());
        assert_eq!(
            aaaa_findings(&[v4, other], Some(own)),
            [Finding::AaaaElsewhere(other, Some(own))]
        );
        let advice = Finding::AaaaElsewhere(other, None).advice("meet.example.org", None);
        assert!(advice.contains("Remove the AAAA record"), "{advice}");
    }
}
