//! Following the line's public address after setup. Most home lines change their address now and
//! then; the videobridge's NAT mapping and coturn's external address must follow, or media breaks
//! silently for everyone outside the LAN. `meetbox-firstboot follow-address` runs from a timer and
//! when the DHCP lease changes (overlay: meetbox-address.timer and .path). It observes the
//! addresses the ways setup does (the public name's A and AAAA records, and the STUN server the
//! owner names, if any; never a third party), re-renders, and restarts only the services whose
//! files changed: a meeting survives every check that finds nothing new.

use std::net::IpAddr;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::{is_global, resolve, stun};
use crate::apply::{services, FileSpec, Owner, Root};
use crate::clock;
use crate::layout;
use crate::render::NetworkFacts;
use crate::settings::Settings;
use crate::state::State;
use crate::{setup, tuning};

/// What the last check saw, kept in layout::NETWORK_FILE for `status` and the admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// The facts the configuration is rendered with.
    pub facts: NetworkFacts,
    /// How the public address was learnt.
    pub source: Source,
    /// The public name's A and AAAA records at the check.
    pub dns: Vec<IpAddr>,
    /// What the owner's STUN server said, or why it said nothing.
    pub stun: Option<Result<IpAddr, String>>,
    /// None until the first check after setup.
    pub checked_at: Option<i64>,
    pub last_change: Option<Change>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The public name's DNS record.
    Dns,
    /// The owner's STUN server.
    Stun,
    /// No public address known (no record yet, or the box is not behind NAT).
    #[default]
    None,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    pub at: i64,
    pub from: Option<IpAddr>,
    pub to: Option<IpAddr>,
}

impl Record {
    /// The record setup leaves: the facts it rendered with, before any check.
    pub fn rendered(facts: &NetworkFacts) -> Record {
        Record {
            facts: facts.clone(),
            source: if facts.public_address.is_some() {
                Source::Dns
            } else {
                Source::None
            },
            ..Record::default()
        }
    }

    pub fn load(root: &Root) -> Result<Option<Record>> {
        root.read_record(
            layout::NETWORK_FILE,
            "the network record",
            "remove it; the next check writes it again",
        )
    }

    pub fn save(&self, root: &Root) -> Result<()> {
        let json =
            serde_json::to_string_pretty(self).context("cannot encode the network record")?;
        root.write(&FileSpec::new(
            layout::NETWORK_FILE,
            json + "\n",
            0o644,
            Owner::ROOT,
        ))
    }
}

/// The addresses as seen now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub lan_address: Option<IpAddr>,
    pub global_ipv6: Option<IpAddr>,
    pub dns: Vec<IpAddr>,
    pub stun: Option<Result<IpAddr, String>>,
}

/// Looks now, the ways setup does: the public name's records, the owner's STUN server.
pub fn observe(domain: &str, stun_server: Option<&str>) -> Observation {
    let facts = super::detect(domain);
    Observation {
        lan_address: facts.lan_address,
        global_ipv6: facts.global_ipv6,
        dns: resolve(domain),
        stun: stun_server.map(|server| stun::public_address(server).map_err(|e| format!("{e:#}"))),
    }
}

/// The facts to render with (pure): the STUN server's answer wins when it has one (it sees the
/// line itself; DNS may lag behind a change), else the name's first global IPv4 record. No public
/// address when it is the LAN address (no NAT).
pub fn decide(observed: &Observation) -> (NetworkFacts, Source) {
    let from_stun = match &observed.stun {
        Some(Ok(ip)) if ip.is_ipv4() && is_global(*ip) => Some(*ip),
        _ => None,
    };
    let from_dns = observed
        .dns
        .iter()
        .copied()
        .find(|ip| ip.is_ipv4() && is_global(*ip));
    let (public, source) = match (from_stun, from_dns) {
        (Some(ip), _) => (Some(ip), Source::Stun),
        (None, Some(ip)) => (Some(ip), Source::Dns),
        (None, None) => (None, Source::None),
    };
    let public = public.filter(|ip| Some(*ip) != observed.lan_address);
    let facts = NetworkFacts {
        lan_address: observed.lan_address,
        public_address: public,
        global_ipv6: observed.global_ipv6,
    };
    let source = if public.is_some() {
        source
    } else {
        Source::None
    };
    (facts, source)
}

/// The services that read each file the follower may rewrite.
fn service_of(path: &str) -> Option<&'static str> {
    match path {
        layout::JVB_CONF => Some("jitsi-videobridge2.service"),
        layout::TURN_CONF => Some("coturn.service"),
        _ => None,
    }
}

/// One check: observe, re-render, rewrite what changed and restart what reads it. Returns what
/// happened, in one line.
pub fn follow(root: &Root) -> Result<String> {
    let state = State::load(root)?;
    let settings = match (&state.settings, setup::finished(root)) {
        (Some(settings), true) => settings,
        _ => return Ok("setup has not finished; nothing to follow yet".into()),
    };
    let observed = observe(settings.domain.as_str(), settings.stun_server.as_deref());
    follow_with(root, settings, observed)
}

/// [`follow`] once the addresses are observed.
fn follow_with(root: &Root, settings: &Settings, observed: Observation) -> Result<String> {
    let (facts, source) = decide(&observed);
    let previous = Record::load(root)?;
    let tuning = tuning::load(root)?;
    let changed: Vec<FileSpec> = setup::rendered_files(root, settings, &facts, &tuning)?
        .into_iter()
        .filter(|file| service_of(&file.path).is_some())
        .filter(|file| {
            root.read_to_string(&file.path)
                .ok()
                .as_deref()
                .map(str::as_bytes)
                != Some(&file.content[..])
        })
        .collect();
    for file in &changed {
        root.write(file)?;
    }
    let units: Vec<&str> = changed.iter().filter_map(|f| service_of(&f.path)).collect();
    let restarted = services::restart_running(root, &units)?;
    let before = previous.as_ref().map(|r| r.facts.clone());
    let now = clock::now();
    let last_change = match &before {
        Some(old) if old.public_address != facts.public_address => Some(Change {
            at: now,
            from: old.public_address,
            to: facts.public_address,
        }),
        _ => previous.as_ref().and_then(|r| r.last_change.clone()),
    };
    Record {
        facts: facts.clone(),
        source,
        dns: observed.dns,
        stun: observed.stun,
        checked_at: Some(now),
        last_change,
    }
    .save(root)?;
    let shown = |ip: Option<IpAddr>| ip.map_or("none".to_string(), |ip| ip.to_string());
    Ok(if changed.is_empty() {
        format!(
            "public address {} ({}), LAN {}: unchanged",
            shown(facts.public_address),
            source_name(source),
            shown(facts.lan_address)
        )
    } else {
        format!(
            "public address {} ({}), LAN {}, IPv6 {}: rewrote {}{}",
            shown(facts.public_address),
            source_name(source),
            shown(facts.lan_address),
            shown(facts.global_ipv6),
            changed
                .iter()
                .map(|f| f.path.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            if restarted.is_empty() {
                String::new()
            } else {
                format!("; restarted {}", restarted.join(", "))
            }
        )
    })
}

pub fn source_name(source: Source) -> &'static str {
    match source {
        Source::Dns => "from the name's DNS record",
        Source::Stun => "from your STUN server",
        Source::None => "none known",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(lan: &str, dns: &[&str], stun: Option<&str>) -> Observation {
        Observation {
            lan_address: Some(lan.parse().unwrap()),
            global_ipv6: None,
            dns: dns.iter().map(|ip| ip.parse().unwrap()).collect(),
            stun: stun.map(|ip| Ok(ip.parse().unwrap())),
        }
    }

    #[test]
    fn the_name_s_record_gives_the_public_address_behind_nat() {
        let (facts, source) = decide(&seen(
            "192.168.1.20",
            &["2a01:4f8::1", "198.51.99.10"],
            None,
        ));
        assert_eq!(facts.public_address, Some("198.51.99.10".parse().unwrap()));
        assert_eq!(source, Source::Dns);
    }

    #[test]
    fn the_owner_s_stun_server_wins_over_a_lagging_record() {
        let (facts, source) = decide(&seen(
            "192.168.1.20",
            &["198.51.99.10"],
            Some("198.51.99.77"),
        ));
        assert_eq!(facts.public_address, Some("198.51.99.77".parse().unwrap()));
        assert_eq!(source, Source::Stun);
    }

    #[test]
    fn no_nat_and_private_answers_give_no_mapping() {
        let (facts, source) = decide(&seen("198.51.99.10", &["198.51.99.10"], None));
        assert_eq!((facts.public_address, source), (None, Source::None));
        let (facts, _) = decide(&seen("192.168.1.20", &["192.168.1.20"], Some("10.0.0.1")));
        assert_eq!(facts.public_address, None);
    }

    #[test]
    fn a_failed_stun_check_falls_back_to_dns() {
        let mut observed = seen("192.168.1.20", &["198.51.99.10"], None);
        observed.stun = Some(Err("did not answer".into()));
        let (facts, source) = decide(&observed);
        assert_eq!(
            (facts.public_address, source),
            (Some("198.51.99.10".parse().unwrap()), Source::Dns)
        );
    }
}
