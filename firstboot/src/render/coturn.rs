//! coturn: TURN for participants behind strict firewalls, with time-limited credentials derived from a
//! secret shared with prosody, TLS on 5349 (reached through 443's multiplexer: the firewall keeps
//! 5349 to the box), and no relaying into private networks except to this box.

use super::{header, Site};
use crate::layout::*;

/// Ranges a TURN relay must never reach (RFC 6890 special-purpose and private networks).
const DENIED_PEERS: [&str; 18] = [
    "0.0.0.0-0.255.255.255",
    "10.0.0.0-10.255.255.255",
    "100.64.0.0-100.127.255.255",
    "127.0.0.0-127.255.255.255",
    "169.254.0.0-169.254.255.255",
    "172.16.0.0-172.31.255.255",
    "192.0.0.0-192.0.0.255",
    "192.0.2.0-192.0.2.255",
    "192.88.99.0-192.88.99.255",
    "192.168.0.0-192.168.255.255",
    "198.18.0.0-198.19.255.255",
    "198.51.100.0-198.51.100.255",
    "203.0.113.0-203.0.113.255",
    "224.0.0.0-255.255.255.255",
    "::1",
    "64:ff9b::-64:ff9b::ffff:ffff",
    "fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    "fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
];

/// The lines jitsi-meet-turnserver's postinst looks for at every install and upgrade: without the
/// first it moves the file aside and writes its own (the image's secret and realm); without the
/// second it appends its relay list and restarts coturn. With both, it leaves the file alone.
pub const JITSI_MARKERS: [&str; 2] = [
    "# jitsi-meet coturn config. Do not modify this line",
    "# jitsi-meet coturn relay disable config. Do not modify this line",
];

pub fn turnserver_conf(site: &Site) -> String {
    let domain = site.domain;
    let secret = &site.secrets.turn_secret;
    let mut out = header("#");
    out += &format!("{}\n", JITSI_MARKERS[0]);
    out += &format!(
        r#"listening-port=3478
tls-listening-port={TURN_TLS_PORT}
realm={domain}
server-name={domain}
use-auth-secret
static-auth-secret={secret}
cert={TURN_TLS_CERT}
pkey={TURN_TLS_KEY}
# TLS 1.2 with ECDHE and AEAD only: TLS 1.0 and 1.1 have none of these ciphers, so they are
# refused (turn_over_443.rs shows it). No `no-tlsv1` lines: with them coturn's own client stalls.
cipher-list="ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
fingerprint
no-multicast-peers
no-cli
no-rfc5780
no-stun-backward-compatibility
response-origin-only-with-rfc5780
stale-nonce=600
user-quota=12
total-quota=1200
# Privacy: no log of client addresses.
no-stdout-log
log-file=/dev/null
"#
    );
    if let Some(lan) = site.network.lan_address {
        match site.network.public_address {
            Some(public) if public != lan => out += &format!("external-ip={public}/{lan}\n"),
            _ => {}
        }
        out += &format!(
            "# Relays on the LAN address: TURN over 443 arrives from nginx on loopback, and a relay\n\
             # there would reach nobody.\nrelay-ip={lan}\n\
             # The videobridge on this box, reached through its LAN address.\nallowed-peer-ip={lan}\n"
        );
    }
    if let Some(v6) = site.network.global_ipv6 {
        out +=
            &format!("# IPv6 guests get relays on the box's global IPv6 address.\nrelay-ip={v6}\n");
    }
    out += &format!("{}\n", JITSI_MARKERS[1]);
    for range in DENIED_PEERS {
        out += &format!("denied-peer-ip={range}\n");
    }
    out
}
