//! What the network looks like from the box, in the owner's words with the fix (pure rules over
//! what the follower and the certificate recorded). Shown by `meetbox-firstboot status` and the
//! admin's status page. Nothing here contacts anyone.

use std::net::IpAddr;

use anyhow::Result;

use super::follow::{Record, Source};
use super::is_global;
use crate::acme::tls;
use crate::apply::Root;
use crate::clock::format_time;
use crate::layout::turn_name;

/// One line: fine or a problem, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Line {
    pub ok: bool,
    pub text: String,
}

fn ok(text: String) -> Line {
    Line { ok: true, text }
}

fn problem(text: String) -> Line {
    Line { ok: false, text }
}

/// The lines for `domain`, from the last check and the installed certificate's names.
pub fn diagnose(domain: &str, record: &Record, certificate_names: &[String]) -> Vec<Line> {
    let mut lines = Vec::new();
    let facts = &record.facts;
    let lan = facts.lan_address;
    let v4_records: Vec<IpAddr> = record.dns.iter().copied().filter(IpAddr::is_ipv4).collect();
    let v6_records: Vec<IpAddr> = record.dns.iter().copied().filter(IpAddr::is_ipv6).collect();

    // Does the name point at this line?
    match (v4_records.first(), &record.stun) {
        (None, _) => lines.push(problem(format!(
            "DNS: {domain} has no address. At your DNS provider, create an A record for {domain} with your line's public address."
        ))),
        (Some(_), Some(Ok(seen))) if seen.is_ipv4() && !v4_records.contains(seen) => {
            lines.push(problem(format!(
                "DNS does not point at this line: {domain} gives {}, but your STUN server sees this line as {seen}. Update the A record (or your dynamic-DNS client) to {seen}.",
                list(&v4_records)
            )))
        }
        (Some(first), _) if !is_global(*first) && Some(*first) != lan => lines.push(problem(format!(
            "DNS: {domain} gives {first}, a private address; guests on the internet cannot reach it. Give the A record your line's public address (your router's status page shows it)."
        ))),
        (Some(_), _) => lines.push(ok(format!(
            "DNS: {domain} gives {}",
            list(&v4_records)
        ))),
    }

    // IPv6: a record must be this box's own address, or guests with IPv6 go nowhere.
    match (v6_records.is_empty(), facts.global_ipv6) {
        (false, Some(own)) if !v6_records.contains(&own) => lines.push(problem(format!(
            "IPv6: {domain}'s AAAA record gives {}, but this box's IPv6 address is {own}. Change the AAAA record to {own}.",
            list(&v6_records)
        ))),
        (false, None) => lines.push(problem(format!(
            "IPv6: {domain} has an AAAA record ({}) but this box has no global IPv6 address. Remove the AAAA record, or turn IPv6 on in your router.",
            list(&v6_records)
        ))),
        (false, Some(own)) => lines.push(ok(format!("IPv6: {domain} gives this box's address {own}"))),
        (true, Some(own)) => lines.push(ok(format!(
            "IPv6: this box has {own}; add an AAAA record for {domain} with it so IPv6 guests connect directly (optional)"
        ))),
        (true, None) => {}
    }

    // The public address and whether it moved.
    match (facts.public_address, record.source) {
        (Some(public), source) => lines.push(ok(format!(
            "Public address: {public} ({}); the videobridge and TURN advertise it",
            super::follow::source_name(source)
        ))),
        (None, Source::None) if lan.is_some_and(is_global) => {
            lines.push(ok("Public address: this box's own (no NAT)".to_string()))
        }
        (None, _) => lines.push(problem(
            "Public address: unknown, so guests outside your network may get no audio or video. Create the A record (above), or name a STUN server in the answers file (stun_server).".to_string(),
        )),
    }
    if let Some(change) = &record.last_change {
        lines.push(ok(format!(
            "The public address changed at {} from {} to {}, and was followed",
            format_time(change.at),
            change.from.map_or("none".into(), |ip| ip.to_string()),
            change.to.map_or("none".into(), |ip| ip.to_string()),
        )));
    }

    // TURN over 443 needs its own name on the certificate.
    let turn = turn_name(domain);
    if certificate_names.contains(&turn) {
        lines.push(ok(format!(
            "TURN over 443: ready ({turn}), for guests whose network lets only HTTPS out"
        )));
    } else {
        lines.push(problem(format!(
            "TURN over 443: waiting for {turn}. Create a DNS record {turn} pointing where {domain} points; the next renewal (or Maintenance > Renew now) adds it to the certificate."
        )));
    }

    // LAN guests and the router's loop-back.
    if let (Some(public), Some(lan)) = (facts.public_address, lan) {
        lines.push(ok(format!(
            "Guests on your own network: {domain} gives {public}, your router's address. If meetings do not open from inside, your router lacks hairpin NAT: add a local DNS entry for {domain} pointing to {lan} (router or DNS settings)."
        )));
        lines.push(ok(format!(
            "Router: forward 10000/udp (media), 3478/udp, 80/tcp and 443/tcp to {lan}. The box cannot see the router's table; if only people outside your network lose audio and video, check 10000/udp first."
        )));
    }
    lines
}

/// The lines for this box: its last network check and its installed certificate. Before the first
/// check (or on a box set up before checks existed) there is nothing to explain yet.
pub fn for_the_box(root: &Root, domain: &str) -> Result<Vec<Line>> {
    let Some(record) = Record::load(root)? else {
        return Ok(vec![problem(
            "Network: not checked yet (meetbox-address.timer checks every few minutes)".into(),
        )]);
    };
    let names = tls::installed(root)?
        .map(|info| info.names)
        .unwrap_or_default();
    Ok(diagnose(domain, &record, &names))
}

fn list(ips: &[IpAddr]) -> String {
    ips.iter()
        .map(IpAddr::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::NetworkFacts;

    const DOMAIN: &str = "meet.example.org";

    fn record(lan: &str, public: Option<&str>, dns: &[&str]) -> Record {
        Record {
            facts: NetworkFacts {
                lan_address: Some(lan.parse().unwrap()),
                public_address: public.map(|ip| ip.parse().unwrap()),
                global_ipv6: None,
            },
            source: if public.is_some() {
                Source::Dns
            } else {
                Source::None
            },
            dns: dns.iter().map(|ip| ip.parse().unwrap()).collect(),
            ..Record::default()
        }
    }

    fn problems(lines: &[Line]) -> Vec<&str> {
        lines
            .iter()
            .filter(|l| !l.ok)
            .map(|l| l.text.as_str())
            .collect()
    }

    fn both_names() -> Vec<String> {
        vec![DOMAIN.to_string(), turn_name(DOMAIN)]
    }

    #[test]
    fn a_well_set_up_line_has_no_problem_and_names_the_router_s_ports() {
        let lines = diagnose(
            DOMAIN,
            &record("192.168.1.20", Some("198.51.99.10"), &["198.51.99.10"]),
            &both_names(),
        );
        assert!(problems(&lines).is_empty(), "{lines:?}");
        let all: String = lines.iter().map(|l| l.text.clone()).collect();
        assert!(
            all.contains("10000/udp") && all.contains("to 192.168.1.20"),
            "{all}"
        );
        assert!(
            all.contains("hairpin NAT") && all.contains("local DNS entry"),
            "{all}"
        );
    }

    #[test]
    fn no_record_is_told_with_the_fix() {
        let lines = diagnose(DOMAIN, &record("192.168.1.20", None, &[]), &both_names());
        let found = problems(&lines);
        assert!(
            found
                .iter()
                .any(|p| p.contains("has no address") && p.contains("create an A record")),
            "{found:?}"
        );
        assert!(
            found
                .iter()
                .any(|p| p.starts_with("Public address: unknown")),
            "{found:?}"
        );
    }

    #[test]
    fn a_record_that_is_not_this_line_is_told_when_stun_sees_another() {
        let mut r = record("192.168.1.20", Some("198.51.99.77"), &["198.51.99.10"]);
        r.stun = Some(Ok("198.51.99.77".parse().unwrap()));
        r.source = Source::Stun;
        let lines = diagnose(DOMAIN, &r, &both_names());
        let found = problems(&lines);
        assert!(
            found
                .iter()
                .any(|p| p.contains("DNS does not point at this line")
                    && p.contains("to 198.51.99.77")),
            "{found:?}"
        );
    }

    #[test]
    fn a_followed_change_is_reported() {
        let mut r = record("192.168.1.20", Some("198.51.99.77"), &["198.51.99.77"]);
        r.last_change = Some(super::super::follow::Change {
            at: 1_700_000_000,
            from: Some("198.51.99.10".parse().unwrap()),
            to: Some("198.51.99.77".parse().unwrap()),
        });
        let lines = diagnose(DOMAIN, &r, &both_names());
        assert!(
            lines.iter().any(|l| l.ok
                && l.text
                    .contains("from 198.51.99.10 to 198.51.99.77, and was followed")),
            "{lines:?}"
        );
    }

    #[test]
    fn ipv6_records_must_be_the_box_s_own_address() {
        let mut r = record(
            "192.168.1.20",
            Some("198.51.99.10"),
            &["198.51.99.10", "2a01:4f8::99"],
        );
        r.facts.global_ipv6 = Some("2a01:4f8::20".parse().unwrap());
        let found = diagnose(DOMAIN, &r, &both_names());
        assert!(
            problems(&found)
                .iter()
                .any(|p| p.contains("Change the AAAA record to 2a01:4f8::20")),
            "{found:?}"
        );
        r.facts.global_ipv6 = None;
        let found = diagnose(DOMAIN, &r, &both_names());
        assert!(
            problems(&found)
                .iter()
                .any(|p| p.contains("Remove the AAAA record")),
            "{found:?}"
        );
    }

    #[test]
    fn turn_over_443_waits_for_its_name_on_the_certificate() {
        let lines = diagnose(
            DOMAIN,
            &record("192.168.1.20", Some("198.51.99.10"), &["198.51.99.10"]),
            &[DOMAIN.to_string()],
        );
        let found = problems(&lines);
        assert!(
            found
                .iter()
                .any(|p| p.contains("waiting for turn.meet.example.org")),
            "{found:?}"
        );
    }

    #[test]
    fn a_private_record_is_told() {
        let lines = diagnose(
            DOMAIN,
            &record("192.168.1.20", None, &["10.1.2.3"]),
            &both_names(),
        );
        assert!(
            problems(&lines)
                .iter()
                .any(|p| p.contains("a private address")),
            "{lines:?}"
        );
    }
}
