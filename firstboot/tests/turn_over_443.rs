//! A guest whose network lets only HTTPS out still gets media: TURN over TLS on 443, through the
//! rendered multiplexer (real nginx) to the rendered coturn (real coturn), with the rendered
//! firewall loaded in "the box" namespace. The guest's namespace drops everything but TCP 443 on
//! its way out, as a school's or a hotel's network does, over IPv4 and IPv6. coturn's own client
//! (`turnutils_uclient`) allocates two relays and sends media between them.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::netns::{http_status, in_ns, link, Namespaces};
use meetbox_firstboot::layout;
use meetbox_firstboot::render;

/// The box on its LAN (the sample site's LAN address: coturn may relay to it), and a guest.
const BOX: &str = "192.168.1.20";
const GUEST: &str = "192.168.1.77";
/// Global IPv6 on the same link: no NAT, the guest reaches the box's own address.
const BOX_V6: &str = "2a01:4f8:1:2::20";
const GUEST_V6: &str = "2a01:4f8:1:2::77";
const SECRET: &str = "turn-secret-sample";

/// The guest's own network: out only to TCP 443 (and loopback).
const ONLY_HTTPS_OUT: &str = "table inet guest {
    chain output {
        type filter hook output priority filter; policy drop;
        oif \"lo\" accept
        ct state established,related accept
        tcp dport 443 accept
        # IPv6 neighbour discovery is part of the link, not traffic out.
        icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit } accept
    }
}
";

fn nft(ns: &str, rules: &str, dir: &Path, name: &str) {
    let file = dir.join(name);
    std::fs::write(&file, rules).unwrap();
    let out = common::run(in_ns(ns, "nft").arg("-f").arg(&file));
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// coturn as rendered, in the box's namespace: the test's certificate, its secret, no log file,
/// and no NAT mapping (the test's box has no public address).
fn start_coturn(spaces: &Namespaces, dir: &Path) -> common::nginx::Stopped {
    let (cert, key) = common::nginx::certificate_in(dir);
    let secrets = common::sample_secrets();
    let network = render::NetworkFacts {
        global_ipv6: Some(BOX_V6.parse().unwrap()),
        ..common::sample_network()
    };
    let conf = common::with_site_on(&network, true, render::turnserver_conf)
        .replace(layout::TURN_TLS_CERT, &cert)
        .replace(layout::TURN_TLS_KEY, &key)
        .replace(&secrets.turn_secret, SECRET)
        .replace("no-stdout-log\nlog-file=/dev/null\n", "")
        .replace("external-ip=198.51.99.10/192.168.1.20\n", "");
    let file = dir.join("turnserver.conf");
    std::fs::write(&file, conf).unwrap();
    let log = dir.join("turn.log");
    let child = in_ns(&spaces.server, "turnserver")
        .arg("-c")
        .arg(&file)
        .arg("--pidfile")
        .arg(dir.join("turn.pid"))
        .args(["--log-file", "stdout"])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stopped = common::nginx::Stopped(child);
    wait_until("coturn listens", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("Total General servers")
    });
    stopped
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready() {
        assert!(Instant::now() < deadline, "{what}: timed out");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A TURN session from the guest: two allocations over TCP (with TLS when `tls`) to `port`,
/// media sent between their relays, for at most `seconds`. The client's output; success when the
/// media arrived.
fn turn_session(
    spaces: &Namespaces,
    server: &str,
    port: u16,
    tls: bool,
    seconds: u32,
) -> (bool, String) {
    let mut client = in_ns(&spaces.client, "timeout");
    client.args([&seconds.to_string(), "turnutils_uclient", "-v", "-t", "-y"]);
    if server.contains(':') {
        // An IPv6 relay (RFC 6156's default would be IPv4).
        client.arg("-x");
    }
    if tls {
        client.arg("-S");
    }
    let out = common::run(client.args([
        "-W",
        SECRET,
        "-u",
        "guest",
        "-p",
        &port.to_string(),
        "-n",
        "10",
        "-m",
        "1",
        "-l",
        "120",
        server,
    ]));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The client reports its running totals once a second.
    let received = text
        .lines()
        .filter_map(|line| line.split("tot_recv_msgs=").nth(1))
        .filter_map(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .filter_map(|n| n.parse::<u32>().ok())
        .max()
        .unwrap_or(0);
    (received > 0, text)
}

/// Opens TLS to the box's 443 with `name` as SNI and `alpn`, and sends an HTTP request: the first
/// line of the answer (empty when coturn took the connection, which speaks no HTTP), or None
/// when the TLS handshake failed.
fn http_over_tls(spaces: &Namespaces, name: &str, alpn: &str, version: &str) -> Option<String> {
    let mut client = in_ns(&spaces.client, "timeout")
        .args(["5", "openssl", "s_client", "-quiet", version])
        .args(["-servername", name, "-alpn", alpn])
        .args(["-connect", &format!("{BOX}:443")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    let request = format!("GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n");
    let _ = client.stdin.take().unwrap().write_all(request.as_bytes());
    let out = client.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if stderr.contains("handshake failure") || stderr.contains("no protocols available") {
        return None;
    }
    Some(
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .trim()
            .to_string(),
    )
}

#[test]
fn a_guest_that_may_only_use_https_gets_turn_over_443() {
    for (tool, package) in [
        ("ip", "iproute2"),
        ("nft", "nftables"),
        ("nginx", "nginx"),
        ("turnserver", "coturn"),
        ("turnutils_uclient", "coturn"),
    ] {
        if !common::have_tool(tool, package) {
            return;
        }
    }
    if !common::is_root() {
        return;
    }
    let spaces = link(
        "trn",
        &[&format!("{BOX}/24"), &format!("{BOX_V6}/64")],
        &[&format!("{GUEST}/24"), &format!("{GUEST_V6}/64")],
    );
    let dir = tempfile::tempdir().unwrap();
    nft(
        &spaces.server,
        &render::firewall::nftables(false, false),
        dir.path(),
        "box.nft",
    );
    let _coturn = start_coturn(&spaces, dir.path());
    let conf = common::nginx::setup(dir.path(), None);
    let _nginx = common::nginx::start(in_ns(&spaces.server, "nginx"), dir.path(), &conf);
    let resolve = format!("meet.example.org:443:{BOX}");
    let web = || {
        http_status(
            &spaces.client,
            &["--resolve", &resolve, "https://meet.example.org/"],
        )
        .1
    };
    wait_until("nginx answers", || web() == "200");

    // The box's firewall keeps coturn's own TLS port to itself; plain TURN over TCP is not
    // offered either (UDP 3478 is, for guests that may use it).
    let (through, text) = turn_session(&spaces, BOX, layout::TURN_TLS_PORT, true, 6);
    assert!(!through, "5349 answered from outside the box:\n{text}");

    // The guest's network lets only HTTPS out.
    nft(&spaces.client, ONLY_HTTPS_OUT, dir.path(), "guest.nft");
    let (through, text) = turn_session(&spaces, BOX, 443, true, 20);
    assert!(through, "no media over TURN on 443:\n{text}");
    let (through, _) = turn_session(&spaces, BOX, 3478, false, 6);
    assert!(!through, "the guest's network let 3478 through");
    assert_eq!(web(), "200", "the web page is gone from 443");

    // The routes: the TURN name goes to coturn whatever the ALPN says (browsers' TURN clients
    // send the name, not TURN's ALPN); the meeting name to the web.
    let turn = layout::turn_name("meet.example.org");
    for alpn in ["http/1.1", "h2,http/1.1"] {
        assert_eq!(
            http_over_tls(&spaces, &turn, alpn, "-tls1_2").as_deref(),
            Some(""),
            "{turn} with ALPN {alpn} reached the web"
        );
        let web_answer = http_over_tls(&spaces, "meet.example.org", "http/1.1", "-tls1_2");
        assert!(
            web_answer
                .as_deref()
                .is_some_and(|line| line.starts_with("HTTP/1.1 200")),
            "{web_answer:?}"
        );
    }
    // coturn behind 443 refuses TLS 1.0 and 1.1.
    for old in ["-tls1", "-tls1_1"] {
        assert_eq!(
            http_over_tls(&spaces, &turn, "stun.turn", old),
            None,
            "coturn accepted {old}"
        );
    }

    // An IPv6 guest, on the same only-HTTPS network: TURN over 443 on the box's own IPv6
    // address, with relays there.
    let (through, text) = turn_session(&spaces, BOX_V6, 443, true, 20);
    assert!(through, "no media over TURN on [{BOX_V6}]:443:\n{text}");
    assert!(
        text.contains(&format!("Received relay addr: {BOX_V6}")),
        "{text}"
    );
    eprintln!(
        "TURN over TLS on 443: media relayed over IPv4 and IPv6; 5349 and 3478 stayed closed"
    );
}
