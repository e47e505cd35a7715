//! Whom the box contacts: read from QEMU's capture of the guest's user network (a pcap file of
//! Ethernet frames, `VmSpec::capture`). The DNS questions the guest asks, the connections it opens
//! (TCP SYNs, and UDP flows it starts), and the names DNS gave for each address, so that a
//! connection is judged by the name it was looked up as.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

/// QEMU's default MAC for the first card (the user network's).
const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

/// A connection the guest started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Connection {
    pub proto: Proto,
    pub address: IpAddr,
    pub port: u16,
}

impl fmt::Display for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let proto = match self.proto {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        };
        match self.address {
            IpAddr::V6(address) => write!(f, "{proto} [{address}]:{}", self.port),
            IpAddr::V4(address) => write!(f, "{proto} {address}:{}", self.port),
        }
    }
}

#[derive(Debug, Default)]
pub struct Contacts {
    /// Every name the guest asked DNS about (SRV prefixes such as `_http._tcp.` removed).
    pub questions: BTreeSet<String>,
    pub connections: BTreeSet<Connection>,
    /// The names each address was the answer for.
    pub names: BTreeMap<IpAddr, BTreeSet<String>>,
}

impl Contacts {
    pub fn read(pcap: &Path) -> Contacts {
        let bytes = std::fs::read(pcap).unwrap_or_else(|e| panic!("{}: {e}", pcap.display()));
        Contacts::parse(&bytes)
    }

    pub fn parse(bytes: &[u8]) -> Contacts {
        assert!(
            bytes.len() >= 24 && bytes[..4] == [0xd4, 0xc3, 0xb2, 0xa1],
            "not a little-endian pcap file"
        );
        let mut contacts = Contacts::default();
        let mut inbound_udp: HashSet<(IpAddr, u16, u16)> = HashSet::new();
        let mut at = 24;
        while at + 16 <= bytes.len() {
            let length = u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()) as usize;
            let frame = &bytes[at + 16..(at + 16 + length).min(bytes.len())];
            at += 16 + length;
            if let Some(packet) = Packet::parse(frame) {
                contacts.add(packet, &mut inbound_udp);
            }
        }
        contacts
    }

    fn add(&mut self, packet: Packet, inbound_udp: &mut HashSet<(IpAddr, u16, u16)>) {
        if !packet.from_guest {
            if packet.proto == Proto::Udp {
                inbound_udp.insert((packet.source, packet.source_port, packet.port));
                if packet.source_port == 53 {
                    for (name, address) in dns_answers(packet.payload) {
                        self.names.entry(address).or_default().insert(name);
                    }
                }
            }
            return;
        }
        let started = match packet.proto {
            Proto::Tcp => packet.syn_only,
            Proto::Udp => !inbound_udp.contains(&(packet.address, packet.port, packet.source_port)),
        };
        if packet.proto == Proto::Udp && packet.port == 53 {
            if let Some(name) = dns_question(packet.payload) {
                self.questions.insert(name);
            }
        }
        if started {
            self.connections.insert(Connection {
                proto: packet.proto,
                address: packet.address,
                port: packet.port,
            });
        }
    }
}

/// One TCP or UDP packet of a frame.
struct Packet<'a> {
    from_guest: bool,
    proto: Proto,
    source: IpAddr,
    source_port: u16,
    address: IpAddr,
    port: u16,
    syn_only: bool,
    payload: &'a [u8],
}

impl<'a> Packet<'a> {
    fn parse(frame: &'a [u8]) -> Option<Packet<'a>> {
        let from_guest = frame.get(6..12)? == GUEST_MAC;
        let ether_type = u16::from_be_bytes([*frame.get(12)?, *frame.get(13)?]);
        let ip = frame.get(14..)?;
        let (proto, source, address, transport) = match ether_type {
            0x0800 => {
                let header = usize::from(ip.first()? & 0x0f) * 4;
                let source: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
                let dest: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
                (
                    *ip.get(9)?,
                    IpAddr::V4(Ipv4Addr::from(source)),
                    IpAddr::V4(Ipv4Addr::from(dest)),
                    ip.get(header..)?,
                )
            }
            0x86dd => {
                let source: [u8; 16] = ip.get(8..24)?.try_into().ok()?;
                let dest: [u8; 16] = ip.get(24..40)?.try_into().ok()?;
                (
                    *ip.get(6)?,
                    IpAddr::V6(Ipv6Addr::from(source)),
                    IpAddr::V6(Ipv6Addr::from(dest)),
                    ip.get(40..)?,
                )
            }
            _ => return None,
        };
        let port = |at: usize| {
            Some(u16::from_be_bytes([
                *transport.get(at)?,
                *transport.get(at + 1)?,
            ]))
        };
        let (proto, syn_only, payload) = match proto {
            6 => (Proto::Tcp, transport.get(13)? & 0x12 == 0x02, &[][..]),
            17 => (Proto::Udp, false, transport.get(8..)?),
            _ => return None,
        };
        Some(Packet {
            from_guest,
            proto,
            source,
            source_port: port(0)?,
            address,
            port: port(2)?,
            syn_only,
            payload,
        })
    }
}

/// The first question's name of a DNS message.
fn dns_question(message: &[u8]) -> Option<String> {
    if u16::from_be_bytes([*message.get(4)?, *message.get(5)?]) == 0 {
        return None;
    }
    let (name, _) = dns_name(message, 12)?;
    Some(plain_name(&name))
}

/// (question name, address) for every A and AAAA record of a DNS answer.
fn dns_answers(message: &[u8]) -> Vec<(String, IpAddr)> {
    let parse = || -> Option<Vec<(String, IpAddr)>> {
        let count = |at: usize| {
            Some(u16::from_be_bytes([
                *message.get(at)?,
                *message.get(at + 1)?,
            ]))
        };
        let (questions, answers) = (count(4)?, count(6)?);
        let mut at = 12;
        let mut asked = String::new();
        for _ in 0..questions {
            let (name, next) = dns_name(message, at)?;
            asked = plain_name(&name);
            at = next + 4;
        }
        let mut found = Vec::new();
        for _ in 0..answers {
            let (_, next) = dns_name(message, at)?;
            let kind = count(next)?;
            let length = usize::from(count(next + 8)?);
            let data = message.get(next + 10..next + 10 + length)?;
            match (kind, length) {
                (1, 4) => found.push((
                    asked.clone(),
                    IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(data).ok()?)),
                )),
                (28, 16) => found.push((
                    asked.clone(),
                    IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(data).ok()?)),
                )),
                _ => {}
            }
            at = next + 10 + length;
        }
        Some(found)
    };
    parse().unwrap_or_default()
}

/// A possibly compressed name at `at`, and the offset after it (after the pointer, if any).
fn dns_name(message: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut labels: Vec<String> = Vec::new();
    let mut end = None;
    for _ in 0..64 {
        let length = *message.get(at)?;
        match length {
            0 => {
                return Some((labels.join("."), end.unwrap_or(at + 1)));
            }
            l if l & 0xc0 == 0xc0 => {
                end.get_or_insert(at + 2);
                at = usize::from(l & 0x3f) << 8 | usize::from(*message.get(at + 1)?);
            }
            l => {
                let label = message.get(at + 1..at + 1 + usize::from(l))?;
                labels.push(String::from_utf8_lossy(label).to_ascii_lowercase());
                at += 1 + usize::from(l);
            }
        }
    }
    None
}

/// `_http._tcp.archive.ubuntu.com` (apt asks for SRV records first) as `archive.ubuntu.com`.
fn plain_name(name: &str) -> String {
    let mut rest = name;
    while let Some(label) = rest.strip_prefix('_') {
        rest = label.split_once('.').map_or("", |(_, tail)| tail);
    }
    rest.to_string()
}

/// Whom the box may contact: its update mirrors (the manifest's apt sources), its time servers
/// (timesyncd's list on the box), its own name (setup's DNS pre-check), and on the test host (QEMU's
/// 10.0.2.2) only the ports of Jitsi's repository and the ACME CA.
pub struct Allowed {
    names: BTreeSet<String>,
    host_ports: BTreeSet<u16>,
}

/// The user network's host and resolver, as QEMU's user network shows them to the guest.
const HOST: [&str; 2] = ["10.0.2.2", "fec0::2"];
const RESOLVER: [&str; 2] = ["10.0.2.3", "fec0::3"];

impl Allowed {
    pub fn of_the_box(
        shell: &dyn Fn(&str) -> String,
        manifest: &serde_json::Value,
        domain: &str,
    ) -> Allowed {
        let mut names: BTreeSet<String> = manifest["updates"]["sources"]
            .as_array()
            .expect("the manifest lists the apt sources")
            .iter()
            .filter_map(serde_json::Value::as_str)
            .flat_map(|line| line.split_whitespace())
            .filter_map(url_host)
            .collect();
        let time_servers = shell(
            "timedatectl show-timesync -p SystemNTPServers -p FallbackNTPServers -p LinkNTPServers --value",
        );
        names.extend(time_servers.split_whitespace().map(str::to_ascii_lowercase));
        names.insert(domain.to_ascii_lowercase());
        Allowed {
            names,
            host_ports: BTreeSet::new(),
        }
    }

    pub fn with_host_ports(mut self, ports: &[u16]) -> Allowed {
        self.host_ports.extend(ports);
        self
    }

    /// Also the port of `url` on the test host (the ACME directory).
    pub fn with_host_url(mut self, url: &str) -> Allowed {
        let port = url
            .split("://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|authority| authority.rsplit_once(':'))
            .and_then(|(_, port)| port.parse().ok())
            .unwrap_or_else(|| panic!("no port in {url}"));
        self.host_ports.insert(port);
        self
    }

    /// Every question and connection of `contacts` that no allowed destination explains.
    pub fn strangers(&self, contacts: &Contacts) -> Vec<String> {
        let mut strangers: Vec<String> = contacts
            .questions
            .iter()
            .filter(|name| !self.names.contains(*name))
            .map(|name| format!("asked DNS for {name}"))
            .collect();
        for connection in &contacts.connections {
            let address = connection.address.to_string();
            let allowed = if RESOLVER.contains(&address.as_str()) {
                connection.port == 53
            } else if HOST.contains(&address.as_str()) {
                connection.proto == Proto::Tcp && self.host_ports.contains(&connection.port)
            } else if is_dhcp(connection) {
                true
            } else {
                contacts
                    .names
                    .get(&connection.address)
                    .is_some_and(|names| names.iter().any(|name| self.names.contains(name)))
            };
            if !allowed {
                let looked_up = contacts
                    .names
                    .get(&connection.address)
                    .map(|names| names.iter().cloned().collect::<Vec<_>>().join(", "))
                    .unwrap_or_else(|| "no DNS answer named it".to_string());
                strangers.push(format!("connected to {connection} ({looked_up})"));
            }
        }
        strangers
    }

    /// What was seen and allowed, for the log.
    pub fn summary(&self, contacts: &Contacts) -> String {
        format!(
            "contacts: DNS questions {:?}; connections {}; allowed names {:?}, test-host ports {:?}",
            contacts.questions,
            contacts
                .connections
                .iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            self.names,
            self.host_ports
        )
    }
}

/// A DHCP request to the link's broadcast address: the network's own service, no one's server.
fn is_dhcp(connection: &Connection) -> bool {
    connection.proto == Proto::Udp
        && connection.port == 67
        && connection.address == IpAddr::V4(Ipv4Addr::BROADCAST)
}

/// The host of `word` if it is an http(s) URL naming a host (not an address).
fn url_host(word: &str) -> Option<String> {
    let rest = word.split_once("://")?.1;
    let authority = rest.split('/').next()?;
    let host = authority
        .rsplit_once(':')
        .map_or(authority, |(host, _)| host);
    (host.parse::<IpAddr>().is_err() && !host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// Starts the service of every timer on the box once, and waits for each (bounded): whatever a
/// timer would do over weeks happens within the capture. apt's timers ran already (updates.rs).
pub fn run_every_timer(shell: &dyn Fn(&str) -> String) {
    let timers =
        shell("systemctl list-units --type=timer --all --plain --no-legend | awk '{print $1}'");
    let mut started = Vec::new();
    for timer in timers.split_whitespace() {
        // apt's timers ran in updates.rs; the integrity check reads local files only, with no
        // network of its own (PrivateNetwork), and ran in integrity.rs.
        if timer.starts_with("apt-daily") || timer == "dailyaidecheck.timer" {
            continue;
        }
        let service = shell(&format!("systemctl show -P Triggers {timer}"));
        for service in service.split_whitespace() {
            shell(&format!("timeout 300 systemctl start {service} || true"));
            started.push(service.to_string());
        }
    }
    // Long-running clients (the time synchronisation) keep going meanwhile.
    std::thread::sleep(std::time::Duration::from_secs(20));
    eprintln!(
        "contacts: every timer's service run once: {}",
        started.join(", ")
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pcap file of `frames`.
    fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut out = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        out.extend([0; 8]);
        out.extend(65535u32.to_le_bytes());
        out.extend(1u32.to_le_bytes());
        for frame in frames {
            out.extend([0; 8]);
            out.extend((frame.len() as u32).to_le_bytes());
            out.extend((frame.len() as u32).to_le_bytes());
            out.extend(frame);
        }
        out
    }

    fn ipv4_frame(
        from_guest: bool,
        src: [u8; 4],
        dst: [u8; 4],
        proto: u8,
        transport: &[u8],
    ) -> Vec<u8> {
        let slirp = [0x52, 0x55, 0x0a, 0, 2, 2];
        let (dmac, smac) = if from_guest {
            (slirp, GUEST_MAC)
        } else {
            (GUEST_MAC, slirp)
        };
        let mut frame = [dmac, smac].concat();
        frame.extend([0x08, 0x00, 0x45, 0, 0, 0, 0, 0, 0, 0, 64, proto, 0, 0]);
        frame.extend(src);
        frame.extend(dst);
        frame.extend(transport);
        frame
    }

    fn udp(src: u16, dst: u16, payload: &[u8]) -> Vec<u8> {
        [
            &src.to_be_bytes()[..],
            &dst.to_be_bytes(),
            &[0, 0, 0, 0],
            payload,
        ]
        .concat()
    }

    fn dns(id: u8, answer: Option<[u8; 4]>) -> Vec<u8> {
        let mut m = vec![
            0,
            id,
            0x01,
            0x00,
            0,
            1,
            0,
            u8::from(answer.is_some()),
            0,
            0,
            0,
            0,
        ];
        m.extend(b"\x07archive\x06ubuntu\x03com\x00\x00\x01\x00\x01");
        if let Some(address) = answer {
            m.extend([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
            m.extend(address);
        }
        m
    }

    #[test]
    fn questions_answers_and_connections_are_read_from_the_capture() {
        let guest = [10, 0, 2, 15];
        let resolver = [10, 0, 2, 3];
        let mirror = [91, 189, 91, 82];
        let mut syn = vec![0xc0, 0x00, 0, 80, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x02];
        syn.extend([0; 6]);
        let mut syn_ack = syn.clone();
        syn_ack[13] = 0x12;
        let frames = [
            ipv4_frame(true, guest, resolver, 17, &udp(40000, 53, &dns(1, None))),
            ipv4_frame(
                false,
                resolver,
                guest,
                17,
                &udp(53, 40000, &dns(1, Some(mirror))),
            ),
            ipv4_frame(true, guest, mirror, 6, &syn),
            // A connection the host opened through a forward: the guest only answers it.
            ipv4_frame(true, guest, [10, 0, 2, 2], 6, &syn_ack),
            // A UDP flow the host started (TURN through the forward), answered by the guest.
            ipv4_frame(false, [10, 0, 2, 2], guest, 17, &udp(5000, 3478, b"x")),
            ipv4_frame(true, guest, [10, 0, 2, 2], 17, &udp(3478, 5000, b"y")),
        ];
        let contacts = Contacts::parse(&pcap(&frames));
        assert_eq!(
            contacts.questions.iter().collect::<Vec<_>>(),
            ["archive.ubuntu.com"]
        );
        let connections: Vec<String> = contacts.connections.iter().map(|c| c.to_string()).collect();
        assert_eq!(connections, ["tcp 91.189.91.82:80", "udp 10.0.2.3:53"]);
        assert!(contacts.names[&IpAddr::V4(Ipv4Addr::from(mirror))].contains("archive.ubuntu.com"));
        assert_eq!(
            plain_name("_http._tcp.security.ubuntu.com"),
            "security.ubuntu.com"
        );
    }
}
