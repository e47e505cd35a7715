//! The booted appliance as an auditor sees it: TLS (testssl.sh), HTTP methods and headers,
//! open ports (nmap), SSH (ssh-audit), and traffic from a distinctive address for the privacy
//! search of the disk.
//!
//! Two ways in. The host forwards on 127.0.0.1 (QEMU user networking) carry TLS, HTTP and SSH.
//! A port scan cannot use them: user networking accepts a connection on the host side before
//! it knows whether the guest's port is open, and carries only the forwarded ports. So the guest
//! gets a second card on a tap device, moved into a network namespace of its own, where nmap
//! sees the box as a neighbour on its LAN would, over IPv6 link-local addresses. The namespace's
//! only address is [`CLIENT_ADDRESS`], so every request sent from it carries that address.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The scan namespace's one address: distinctive, so the privacy search can look for it.
pub const CLIENT_ADDRESS: &str = "fe80::6d62:7072:6976:6163";

/// A tap device for the guest's second card, then (once QEMU holds it) a namespace around it.
pub struct ScanLink {
    pub tap: String,
    netns: String,
    /// The guest's link-local address with the zone, e.g. `fe80::5054:ff:fe6d:6201%mbscan1`.
    pub guest: Option<String>,
}

impl ScanLink {
    /// Creates the tap device; QEMU attaches to it by name.
    pub fn create() -> ScanLink {
        let id = std::process::id() % 100_000;
        let link = ScanLink {
            tap: format!("mbscan{id}"),
            netns: format!("meetbox-scan-{id}"),
            guest: None,
        };
        link.cleanup();
        ip(&["tuntap", "add", "dev", &link.tap, "mode", "tap"]);
        link
    }

    /// Once QEMU has attached: moves the tap into a fresh namespace with only
    /// [`CLIENT_ADDRESS`] on it, then finds the guest by pinging all link-local nodes.
    pub fn connect(&mut self, timeout: Duration) {
        ip(&["link", "set", &self.tap, "up"]);
        wait_for("QEMU on the tap device", timeout, || {
            let out = run(Command::new("ip").args(["link", "show", "dev", &self.tap]));
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            (!text.contains("NO-CARRIER")).then_some(()).ok_or(text)
        });
        ip(&["netns", "add", &self.netns]);
        ip(&["link", "set", &self.tap, "netns", &self.netns]);
        let sysctl = format!("net.ipv6.conf.{}.addr_gen_mode=1", self.tap);
        for args in [
            vec!["sysctl", "-qw", &sysctl],
            vec!["ip", "link", "set", "lo", "up"],
            vec!["ip", "link", "set", &self.tap, "up"],
        ] {
            checked(self.command(args[0]).args(&args[1..]));
        }
        let address = format!("{CLIENT_ADDRESS}/64");
        checked(
            self.command("ip")
                .args(["-6", "addr", "add", &address, "dev", &self.tap, "nodad"]),
        );
        let all_nodes = format!("ff02::1%{}", self.tap);
        let guest = wait_for("the guest on the link", timeout, || {
            let out = run(self
                .command("ping")
                .args(["-6", "-c", "2", "-W", "2", &all_nodes]));
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            text.lines()
                .filter_map(|line| line.split_once(" from ")?.1.split_once(": ").map(|x| x.0))
                .find(|from| !from.starts_with(CLIENT_ADDRESS))
                .map(str::to_string)
                .ok_or(text)
        });
        eprintln!("scan link: {CLIENT_ADDRESS} -> {guest}");
        self.guest = Some(guest);
    }

    /// `program` run inside the scan namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.netns, program]);
        command
    }

    /// `ssh root@guest command` with the test client's options and one identity, over this link.
    pub fn ssh_as_root(&self, identity: &Path, command: &str) -> Command {
        let mut ssh = self.command("ssh");
        ssh.args(SSH_OPTIONS)
            .arg("-i")
            .arg(identity)
            .arg(format!("root@{}", self.guest()))
            .arg(command);
        ssh
    }

    pub fn netns(&self) -> &str {
        &self.netns
    }

    pub fn guest(&self) -> &str {
        self.guest.as_deref().expect("connect() first")
    }

    /// The guest's address without the zone (nmap and curl take the interface apart).
    pub fn guest_address(&self) -> &str {
        self.guest().split('%').next().unwrap_or_default()
    }

    fn cleanup(&self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.netns])
            .output();
        let _ = Command::new("ip").args(["link", "del", &self.tap]).output();
    }
}

impl Drop for ScanLink {
    fn drop(&mut self) {
        self.cleanup();
    }
}

/// Ports by the state nmap gives them; ports of the scan not listed are filtered (no answer:
/// the firewall dropped the probe).
#[derive(Debug, Default)]
pub struct PortStates {
    /// A service answered.
    pub open: Vec<u16>,
    /// The firewall let the probe through and the kernel answered that nothing listens on this
    /// address (e.g. coturn binds the addresses it found at start, not link-local ones).
    pub closed: Vec<u16>,
}

/// Every TCP port of the guest, scanned from the LAN.
pub fn scan_tcp(link: &ScanLink) -> PortStates {
    nmap(
        link,
        &["-sS", "-p-", "--min-rate", "2000", "--max-retries", "2"],
    )
}

/// These UDP ports, with nmap's protocol probes. With inbound dropped, silent ports show as
/// open|filtered; an answer (open) or an ICMP port-unreachable (closed) means the firewall let
/// the probe in.
pub fn scan_udp(link: &ScanLink, ports: &[u16]) -> PortStates {
    let list = ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(",");
    nmap(link, &["-sU", "-p", &list, "--max-retries", "2"])
}

fn nmap(link: &ScanLink, scan: &[&str]) -> PortStates {
    let started = Instant::now();
    let out = checked(
        link.command("nmap")
            .args(["-6", "-n", "-Pn", "-T4", "-e", &link.tap, "-oX", "-"])
            .args(scan)
            .arg(link.guest_address()),
    );
    let xml = String::from_utf8_lossy(&out.stdout);
    let mut states = PortStates::default();
    for port in xml.split("<port ").skip(1) {
        let number = attribute(port, "portid").and_then(|p| p.parse().ok());
        match (number, attribute(port, "state")) {
            (Some(number), Some("open")) => states.open.push(number),
            (Some(number), Some("closed")) => states.closed.push(number),
            _ => {}
        }
    }
    eprintln!(
        "nmap {}: {states:?}, the rest filtered ({:.0} s)",
        scan.join(" "),
        started.elapsed().as_secs_f64()
    );
    states
}

fn attribute<'a>(element: &'a str, name: &str) -> Option<&'a str> {
    let start = element.find(&format!("{name}=\""))? + name.len() + 2;
    element[start..].split('"').next()
}

/// One finding of testssl.sh's JSON output.
#[derive(Debug, serde::Deserialize)]
pub struct Finding {
    pub id: String,
    pub severity: String,
    pub finding: String,
}

/// testssl.sh against the forward: protocols, every cipher per protocol, forward secrecy and
/// the vulnerability checks.
pub fn testssl(domain: &str, port: u16, work: &Path) -> Vec<Finding> {
    let json = work.join("testssl.json");
    let _ = std::fs::remove_file(&json);
    let started = Instant::now();
    let out = run(Command::new("testssl")
        .args([
            "--quiet",
            "--color",
            "0",
            "--warnings",
            "off",
            "--nodns",
            "none",
            "--ip",
            "127.0.0.1",
            "--protocols",
            "--cipher-per-proto",
            "--fs",
            "--vulnerable",
            "--jsonfile",
        ])
        .arg(&json)
        .arg(format!("https://{domain}:{port}/")));
    eprintln!(
        "testssl.sh: exit {:?} after {:.0} s",
        out.status.code(),
        started.elapsed().as_secs_f64()
    );
    let text = std::fs::read_to_string(&json).unwrap_or_else(|err| {
        panic!(
            "testssl.sh wrote no JSON ({err}):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|err| panic!("testssl.sh JSON: {err}\n{text}"))
}

/// Protocols, ciphers and vulnerabilities the findings show that a hardened server must not:
/// empty when testssl.sh found nothing to object to.
pub fn tls_objections(findings: &[Finding]) -> Vec<String> {
    let mut objections = Vec::new();
    let by_id = |id: &str| findings.iter().find(|f| f.id == id);
    for id in ["SSLv2", "SSLv3", "TLS1", "TLS1_1"] {
        match by_id(id) {
            Some(f) if f.finding.starts_with("not offered") => {}
            other => objections.push(format!("{id} must not be offered: {other:?}")),
        }
    }
    for id in ["TLS1_2", "TLS1_3"] {
        match by_id(id) {
            Some(f) if f.finding.starts_with("offered") => {}
            other => objections.push(format!("{id} must be offered: {other:?}")),
        }
    }
    let ciphers: Vec<&Finding> = findings
        .iter()
        .filter(|f| f.id.starts_with("cipher-tls1_") || f.id.starts_with("cipher-ssl"))
        .collect();
    if ciphers.is_empty() {
        objections.push("testssl.sh listed no cipher".into());
    }
    for cipher in ciphers {
        let tls13 = cipher.id.starts_with("cipher-tls1_3");
        let text = cipher.finding.to_ascii_uppercase();
        let forward_secret = tls13 || text.contains("ECDHE-") || text.contains("DHE-");
        let aead = ["GCM", "CHACHA20", "CCM"]
            .iter()
            .any(|mode| text.contains(mode));
        if !(cipher.id.starts_with("cipher-tls1_2") || tls13) || !forward_secret || !aead {
            objections.push(format!(
                "cipher not forward-secret AEAD: {}",
                cipher.finding
            ));
        }
    }
    // Any finding testssl.sh rates LOW or worse, vulnerabilities included.
    for f in findings {
        if ["LOW", "MEDIUM", "HIGH", "CRITICAL"].contains(&f.severity.as_str()) {
            objections.push(format!("{}: {} ({})", f.id, f.finding, f.severity));
        }
    }
    // testssl.sh 3.0 names forward secrecy "PFS"; the checks must have run.
    for id in ["heartbleed", "ROBOT", "BREACH", "LUCKY13", "PFS"] {
        match by_id(id) {
            None => objections.push(format!("testssl.sh did not report {id}")),
            Some(f) if id == "PFS" && !f.finding.starts_with("offered") => {
                objections.push(format!("forward secrecy not offered: {}", f.finding))
            }
            Some(_) => {}
        }
    }
    objections
}

/// ssh-audit through the forward: exit 0 means no algorithm, key or version it warns about.
pub fn ssh_audit(port: u16) -> (bool, String) {
    let out = run(Command::new("timeout").args([
        "120",
        "ssh-audit",
        "--port",
        &port.to_string(),
        "127.0.0.1",
    ]));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    (out.status.success(), text)
}

/// `ssh` options for a test client: no known-hosts file, no agent, no prompts.
pub const SSH_OPTIONS: [&str; 10] = [
    "-o",
    "BatchMode=yes",
    "-o",
    "StrictHostKeyChecking=no",
    "-o",
    "UserKnownHostsFile=/dev/null",
    "-o",
    "ConnectTimeout=30",
    "-o",
    "IdentitiesOnly=yes",
];

fn ip(args: &[&str]) {
    checked(Command::new("ip").args(args));
}

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"))
}

fn checked(command: &mut Command) -> Output {
    let out = run(command);
    assert!(
        out.status.success(),
        "{command:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn wait_for<T>(what: &str, timeout: Duration, mut attempt: impl FnMut() -> Result<T, String>) -> T {
    let started = Instant::now();
    loop {
        match attempt() {
            Ok(value) => return value,
            Err(err) if started.elapsed() < timeout => {
                let _ = err;
                std::thread::sleep(Duration::from_secs(2));
            }
            Err(err) => panic!("{what}: nothing after {} s: {err}", timeout.as_secs()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(id: &str, severity: &str, finding: &str) -> Finding {
        Finding {
            id: id.into(),
            severity: severity.into(),
            finding: finding.into(),
        }
    }

    fn clean() -> Vec<Finding> {
        vec![
            finding("SSLv2", "OK", "not offered"),
            finding("SSLv3", "OK", "not offered"),
            finding("TLS1", "INFO", "not offered"),
            finding("TLS1_1", "INFO", "not offered"),
            finding("TLS1_2", "OK", "offered"),
            finding("TLS1_3", "OK", "offered with final"),
            finding(
                "cipher-tls1_2_xc02b",
                "OK",
                "TLS 1.2 xc02b ECDHE-ECDSA-AES128-GCM-SHA256 ECDH 253 AESGCM 128",
            ),
            finding(
                "cipher-tls1_3_x1301",
                "OK",
                "TLS 1.3 x1301 TLS_AES_128_GCM_SHA256 ECDH 253 AESGCM 128",
            ),
            finding("heartbleed", "OK", "not vulnerable, no heartbeat extension"),
            finding("ROBOT", "OK", "not vulnerable, no RSA key transport cipher"),
            finding(
                "BREACH",
                "OK",
                "not vulnerable, no gzip/deflate/compress/br",
            ),
            finding("LUCKY13", "OK", "not vulnerable"),
            finding("PFS", "OK", "offered"),
        ]
    }

    #[test]
    fn a_clean_report_has_no_objection() {
        assert_eq!(tls_objections(&clean()), Vec::<String>::new());
    }

    #[test]
    fn old_protocols_cbc_and_vulnerabilities_are_objected_to() {
        let mut report = clean();
        report[3] = finding("TLS1_1", "LOW", "offered (deprecated)");
        report.push(finding(
            "cipher-tls1_2_xc013",
            "OK",
            "TLS 1.2 xc013 ECDHE-RSA-AES128-SHA ECDH 253 AES 128",
        ));
        report[10] = finding("BREACH", "MEDIUM", "potentially VULNERABLE, gzip");
        let objections = tls_objections(&report).join("\n");
        for culprit in [
            "TLS1_1 must not be offered",
            "cipher not forward-secret AEAD: TLS 1.2 xc013",
            "BREACH: potentially VULNERABLE",
        ] {
            assert!(objections.contains(culprit), "{culprit}: {objections}");
        }
    }
}
