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
    let mut findings = Vec::new();
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
