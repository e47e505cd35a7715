//! What the status page shows, gathered by the root helper: the meeting URL, each service's state, the
//! certificate and its renewal, the addresses, the updates, the file integrity check, disk and
//! memory.

use std::process::Command;

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::acme::retry::RetryRecord;
use crate::acme::tls;
use crate::admin::jobs::{self, Job};
use crate::apply::services;
use crate::apply::Root;
use crate::ask::validation::TlsChoice;
use crate::clock::format_time;
use crate::integrity;
use crate::network;
use crate::state::State;
use crate::updates;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub meeting_url: String,
    /// (unit, state as systemd says it: active, failed, inactive, ...)
    pub services: Vec<(String, String)>,
    pub certificate: Vec<String>,
    pub lan_address: Option<String>,
    pub public_address: Option<String>,
    /// The network diagnosis (network/diagnosis.rs): (fine, the line with its fix).
    #[serde(default)]
    pub network: Vec<(bool, String)>,
    pub updates: Vec<String>,
    /// The file integrity database and its last check (integrity.rs).
    #[serde(default)]
    pub integrity: Vec<String>,
    /// Bytes used and in all on the root file system.
    pub disk: (u64, u64),
    /// Bytes available and in all.
    pub memory: (u64, u64),
    pub domain: String,
    pub tls: Option<TlsChoice>,
    /// The last domain change or reset started from the admin.
    pub last_change: Option<Job>,
}

/// The services the owner cares about (the stack without sshd, and the admin itself).
const SHOWN: [&str; 7] = [
    "prosody.service",
    "jicofo.service",
    "jitsi-videobridge2.service",
    "coturn.service",
    "nginx.service",
    "meetbox-admin.service",
    "meetbox-acme.timer",
];

pub fn gather(root: &Root) -> Result<Status> {
    let settings = State::load(root)?.settings;
    let domain = settings
        .as_ref()
        .map(|s| s.domain.to_string())
        .unwrap_or_default();
    let facts = network::detect(&domain);
    Ok(Status {
        meeting_url: format!("https://{domain}/"),
        services: SHOWN
            .iter()
            .filter(|unit| services::installed(root, unit))
            .map(|unit| (unit.to_string(), unit_state(root, unit)))
            .collect(),
        certificate: certificate_lines(root, settings.as_ref().map(|s| s.tls))?,
        lan_address: facts.lan_address.map(|ip| ip.to_string()),
        public_address: facts.public_address.map(|ip| ip.to_string()),
        network: if settings.is_some() {
            network::diagnosis::for_the_box(root, &domain)?
                .into_iter()
                .map(|line| (line.ok, line.text))
                .collect()
        } else {
            Vec::new()
        },
        updates: pending_line(root)
            .into_iter()
            .chain(updates::describe(root)?)
            .collect(),
        integrity: integrity::describe(root)?,
        disk: disk_usage(root),
        memory: memory(root),
        tls: settings.as_ref().map(|s| s.tls),
        domain,
        last_change: jobs::last(root)?,
    })
}

/// How many updates wait for the next run (from the lists apt last fetched).
fn pending_line(root: &Root) -> Option<String> {
    let pending = updates::pending(root)?;
    Some(match pending.len() {
        0 => "waiting: none (as of the last package lists)".to_string(),
        n => format!(
            "waiting: {n} package(s): {}{}",
            pending
                .iter()
                .take(8)
                .cloned()
                .collect::<Vec<_>>()
                .join(", "),
            if n > 8 { ", …" } else { "" }
        ),
    })
}

fn certificate_lines(root: &Root, chosen: Option<TlsChoice>) -> Result<Vec<String>> {
    let mut lines = Vec::new();
    match tls::installed(root)? {
        Some(info) if info.self_signed => lines.push(format!(
            "Self-signed, valid until {}",
            format_time(info.not_after)
        )),
        Some(info) => {
            lines.push(format!("Issued by {}", info.issuer));
            lines.push(format!("Valid until {}", format_time(info.not_after)));
            if chosen == Some(TlsChoice::LetsEncrypt) {
                lines.push(format!(
                    "Renewed automatically after {}",
                    format_time(tls::renewal_time(&info))
                ));
            }
        }
        None => lines.push("None installed".into()),
    }
    match RetryRecord::load(root)? {
        Some(record) => lines.push(format!(
            "Last renewal FAILED ({} time(s)): {}; next attempt after {}",
            record.attempts,
            record.last_failure,
            format_time(record.next_attempt)
        )),
        None if chosen == Some(TlsChoice::LetsEncrypt) => {
            lines.push("Last renewal: no failure on record".into())
        }
        None => {}
    }
    Ok(lines)
}

fn unit_state(root: &Root, unit: &str) -> String {
    if !root.is_live() {
        return "unknown (not the running box)".into();
    }
    Command::new("systemctl")
        .args(["is-active", unit])
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
        .unwrap_or_else(|error| format!("unknown ({error})"))
}

fn disk_usage(root: &Root) -> (u64, u64) {
    let Ok(path) = std::ffi::CString::new(root.dir().as_os_str().as_encoded_bytes()) else {
        return (0, 0);
    };
    // SAFETY: statvfs writes into the zeroed struct we own; the path is NUL-terminated.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stats) } != 0 {
        return (0, 0);
    }
    let block = stats.f_frsize;
    let total = stats.f_blocks * block;
    (total - stats.f_bfree * block, total)
}

fn memory(root: &Root) -> (u64, u64) {
    parse_meminfo(&root.read_to_string("/proc/meminfo").unwrap_or_default())
}

/// (MemAvailable, MemTotal) in bytes.
pub fn parse_meminfo(text: &str) -> (u64, u64) {
    let field = |name: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    (field("MemAvailable"), field("MemTotal"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_in_bytes() {
        let text =
            "MemTotal:        2014680 kB\nMemFree:          100 kB\nMemAvailable:    1500000 kB\n";
        assert_eq!(parse_meminfo(text), (1_536_000_000, 2_063_032_320));
        assert_eq!(parse_meminfo(""), (0, 0));
    }
}
