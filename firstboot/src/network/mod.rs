//! The box's addresses: the LAN address (the source of the default route, found without sending a
//! packet), the public address (the public name's DNS record, when it is a global address) and the
//! box's own global IPv6 address. `follow` keeps them current after setup; `diagnosis` explains
//! them.

pub mod diagnosis;
pub mod follow;
pub mod stun;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs, UdpSocket};

use crate::render::NetworkFacts;

/// Resolves a name with the system resolver (advisory: a LAN's own DNS may answer differently).
pub fn resolve(domain: &str) -> Vec<IpAddr> {
    (domain, 80)
        .to_socket_addrs()
        .map(|addrs| {
            let mut ips: Vec<IpAddr> = addrs.map(|a| a.ip()).collect();
            ips.dedup();
            ips
        })
        .unwrap_or_default()
}

/// The local network's source addresses: private IPv4, IPv6 unique-local and link-local. The
/// firewall (rendered by `meetbox build`), nginx and the admin itself let only these reach the admin.
pub const LAN_IPV4: [&str; 3] = ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"];
pub const LAN_IPV6: [&str; 2] = ["fc00::/7", "fe80::/10"];

/// True for a source address of the local network ([`LAN_IPV4`], [`LAN_IPV6`]); IPv4 in IPv6
/// (`::ffff:10.0.0.1`) counts as its IPv4 address.
pub fn is_local_network(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_private(),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.is_private(),
            None => {
                let first = v6.segments()[0];
                (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
            }
        },
    }
}

/// True for addresses reachable from the internet (not private, loopback, link-local, CGNAT, ...).
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || o[0] == 0
                || o[0] >= 224
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 198 && (18..20).contains(&o[1])))
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// The local address used to reach `toward` (a UDP "connect" only selects a route).
pub fn local_address_toward(toward: IpAddr) -> Option<IpAddr> {
    let socket = UdpSocket::bind(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)).ok()?;
    socket.connect(SocketAddr::new(toward, 9)).ok()?;
    socket.local_addr().ok().map(|a| a.ip())
}

/// Pure decision from what was observed.
pub fn facts_from(lan_address: Option<IpAddr>, resolved: &[IpAddr]) -> NetworkFacts {
    let public_address = resolved
        .iter()
        .copied()
        .find(|ip| ip.is_ipv4() && is_global(*ip))
        .filter(|ip| Some(*ip) != lan_address);
    NetworkFacts {
        lan_address,
        public_address,
        global_ipv6: None,
    }
}

/// The box's global IPv6 address: the source of its IPv6 default route, if it has one (2001:db8::1
/// is documentation space, never contacted).
pub fn global_ipv6() -> Option<IpAddr> {
    let socket = UdpSocket::bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0)).ok()?;
    socket
        .connect(SocketAddr::new(
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            9,
        ))
        .ok()?;
    socket
        .local_addr()
        .ok()
        .map(|a| a.ip())
        .filter(|ip| is_global(*ip))
}

/// Observes the network now.
pub fn detect(domain: &str) -> NetworkFacts {
    let resolved = resolve(domain);
    // Any global address selects the default route; 192.0.2.1 is documentation space, never contacted.
    let toward = resolved
        .iter()
        .copied()
        .find(|ip| ip.is_ipv4() && is_global(*ip))
        .unwrap_or(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
    let lan = local_address_toward(toward).filter(|ip| !ip.is_loopback() && !ip.is_unspecified());
    NetworkFacts {
        global_ipv6: global_ipv6(),
        ..facts_from(lan, &resolved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn global_addresses() {
        assert!(is_global("203.0.114.7".parse().unwrap()));
        assert!(!is_global("192.168.1.4".parse().unwrap()));
        assert!(!is_global("100.64.0.1".parse().unwrap()));
        assert!(!is_global("127.0.0.1".parse().unwrap()));
        assert!(!is_global("fd00::1".parse().unwrap()));
        assert!(is_global("2a01:4f8::1".parse().unwrap()));
    }

    #[test]
    fn public_address_only_behind_nat() {
        let lan: IpAddr = "192.168.1.20".parse().unwrap();
        let public: IpAddr = "198.51.99.10".parse().unwrap();
        assert_eq!(
            facts_from(Some(lan), &[public]).public_address,
            Some(public)
        );
        assert_eq!(facts_from(Some(public), &[public]).public_address, None);
        assert_eq!(facts_from(Some(lan), &[lan]).public_address, None);
        assert_eq!(facts_from(Some(lan), &[]).public_address, None);
    }

    #[test]
    fn local_network_sources() {
        for local in [
            "10.1.2.3",
            "172.31.0.1",
            "192.168.1.4",
            "fd12::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(is_local_network(local.parse().unwrap()), "{local}");
        }
        for outside in [
            "203.0.113.7",
            "100.64.0.1",
            "172.32.0.1",
            "2001:db8::1",
            "::ffff:8.8.8.8",
            "127.0.0.1",
        ] {
            assert!(!is_local_network(outside.parse().unwrap()), "{outside}");
        }
    }
}
