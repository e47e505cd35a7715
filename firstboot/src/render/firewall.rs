//! The firewall (`/etc/nftables.conf`), written by `meetbox build` from the profile: what the box
//! reads is rendered here, with the ports and the local-network sources it shares with nginx and the
//! admin.

use crate::layout::ADMIN_PORT;
use crate::network::{LAN_IPV4, LAN_IPV6};

/// Ports open to everyone: HTTP (ACME and redirect), HTTPS (which carries TURN over TLS too,
/// render/multiplex.rs), TURN over UDP and the videobridge's media port.
pub const PUBLIC_TCP_PORTS: [u16; 2] = [80, 443];
pub const PUBLIC_UDP_PORTS: [u16; 2] = [3478, 10000];

/// `/etc/nftables.conf`: inbound and forwarded traffic dropped unless listed;
/// outbound open (updates, ACME, DNS, NTP).
pub fn nftables(ssh: bool, admin_from_internet: bool) -> String {
    let ports = |ports: &[u16]| {
        ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let from_lan = |comment: &str, port: u16| {
        format!(
            "        # {comment}, from the local network only.\n\
             \x20       ip saddr {{ {} }} tcp dport {port} ct state new accept\n\
             \x20       ip6 saddr {{ {} }} tcp dport {port} ct state new accept\n",
            LAN_IPV4.join(", "),
            LAN_IPV6.join(", ")
        )
    };
    let mut lan_rules = if admin_from_internet {
        format!(
            "        # The web admin, opened to the internet by the profile (docs/admin.md).\n\
             \x20       tcp dport {ADMIN_PORT} ct state new accept\n"
        )
    } else {
        from_lan("The web admin (nginx, docs/admin.md)", ADMIN_PORT)
    };
    if ssh {
        lan_rules.push_str(&from_lan("SSH (profile: services.ssh)", 22));
    }
    format!(
        "#!/usr/sbin/nft -f\n\
         # Written by meetbox build: inbound dropped unless listed here.\n\
         flush ruleset\n\
         \n\
         table inet meetbox {{\n\
         \x20   chain input {{\n\
         \x20       type filter hook input priority filter; policy drop;\n\
         \x20       iif \"lo\" accept\n\
         \x20       # Loopback addresses arriving on another interface, to or from, are spoofed.\n\
         \x20       iif != \"lo\" ip daddr 127.0.0.0/8 drop\n\
         \x20       iif != \"lo\" ip saddr 127.0.0.0/8 drop\n\
         \x20       iif != \"lo\" ip6 daddr ::1 drop\n\
         \x20       iif != \"lo\" ip6 saddr ::1 drop\n\
         \x20       ct state established,related accept\n\
         \x20       ct state invalid drop\n\
         \x20       # ICMP needed for path MTU discovery, errors and reachability checks.\n\
         \x20       ip protocol icmp icmp type {{ echo-request, destination-unreachable, time-exceeded, parameter-problem }} limit rate 20/second accept\n\
         \x20       # ICMPv6 needed for neighbour discovery, router advertisements and path MTU discovery.\n\
         \x20       ip6 nexthdr icmpv6 icmpv6 type {{ destination-unreachable, packet-too-big, time-exceeded, parameter-problem, echo-request, nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert }} accept\n\
         \x20       # DHCPv4 and DHCPv6 replies for the wired interface.\n\
         \x20       udp sport 67 udp dport 68 accept\n\
         \x20       ip6 saddr fe80::/10 udp sport 547 udp dport 546 accept\n\
         \x20       # Web (ACME, redirect, Jitsi Meet) with TURN over TLS, TURN over UDP, the videobridge's media.\n\
         \x20       tcp dport {{ {tcp} }} ct state new accept\n\
         \x20       udp dport {{ {udp} }} accept\n\
         {lan_rules}\
         \x20   }}\n\
         \n\
         \x20   chain forward {{\n\
         \x20       type filter hook forward priority filter; policy drop;\n\
         \x20   }}\n\
         \n\
         \x20   chain output {{\n\
         \x20       type filter hook output priority filter; policy accept;\n\
         \x20   }}\n\
         }}\n",
        tcp = ports(&PUBLIC_TCP_PORTS),
        udp = ports(&PUBLIC_UDP_PORTS),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firewall_drops_inbound_and_opens_only_the_jitsi_ports() {
        let rules = nftables(false, false);
        assert!(rules.contains("hook input priority filter; policy drop;"));
        assert!(rules.contains("hook forward priority filter; policy drop;"));
        assert!(rules.contains("tcp dport { 80, 443 } ct state new accept"));
        assert!(rules.contains("udp dport { 3478, 10000 } accept"));
        assert!(rules.contains("ct state established,related accept"));
        assert!(rules.contains("iif \"lo\" accept"));
        assert!(rules.contains("iif != \"lo\" ip saddr 127.0.0.0/8 drop"));
        assert!(rules.contains("iif != \"lo\" ip6 saddr ::1 drop"));
        assert!(rules.contains("nd-neighbor-solicit"));
        assert!(!rules.contains("dport 22"), "SSH is off by default");
        // The admin's port only from private, unique-local and link-local sources.
        let admin = format!(
            "ip saddr {{ 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 }} tcp dport {ADMIN_PORT}"
        );
        assert!(rules.contains(&admin), "{rules}");
        assert!(rules.contains(&format!(
            "ip6 saddr {{ fc00::/7, fe80::/10 }} tcp dport {ADMIN_PORT}"
        )));
        assert!(!rules.contains(&format!("{{ 80, 443, {ADMIN_PORT}")));
    }

    #[test]
    fn ssh_opens_port_22_to_private_ranges_only() {
        let rules = nftables(true, false);
        let ssh: Vec<&str> = rules.lines().filter(|l| l.contains("dport 22")).collect();
        assert_eq!(ssh.len(), 2, "{rules}");
        assert!(ssh[0].contains("ip saddr { 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 }"));
        assert!(ssh[1].contains("ip6 saddr { fc00::/7, fe80::/10 }"));
    }

    #[test]
    fn the_profile_may_open_the_admin_to_every_source() {
        let rules = nftables(false, true);
        assert!(
            rules.contains(&format!(
                "\n        tcp dport {ADMIN_PORT} ct state new accept"
            )),
            "{rules}"
        );
        assert!(!rules.contains(&format!(
            "saddr {{ 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16 }} tcp dport {ADMIN_PORT}"
        )));
    }
}
