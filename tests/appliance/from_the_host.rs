//! What the unattended box shows the host: the auditors' scans, HTTP methods and headers, a
//! guest's visit from a distinctive address, Pebble's certificate, and TURN allocations.

use std::path::Path;
use std::process::Command;

use crate::xmpp::{Credentials, Https, Session};
use crate::*;

/// The auditors' view: testssl.sh, HTTP methods and headers and ssh-audit through the
/// forwards, nmap and the owner's SSH login over the scan link.
pub(crate) fn audit_from_the_host(
    https: &Https,
    ports: Ports,
    owner: &OwnerKey,
    link: &audit::ScanLink,
    work: &Path,
) {
    let findings = audit::testssl(&https.domain, https.port, work);
    let objections = audit::tls_objections(&findings);
    assert!(
        objections.is_empty(),
        "testssl.sh objects:\n{}",
        objections.join("\n")
    );
    let ciphers = findings
        .iter()
        .filter(|f| f.id.starts_with("cipher-tls"))
        .count();
    eprintln!("testssl.sh: TLS 1.2 and 1.3 only, {ciphers} ciphers, all forward-secret AEAD, no vulnerability");

    check_methods_and_headers(https, ports.http);

    let (passed, report) = audit::ssh_audit(ports.ssh);
    assert!(passed, "ssh-audit warns or fails:\n{report}");
    eprintln!("ssh-audit: no warning, no failure");

    let ssh = |extra: &[&str]| {
        link.command("ssh")
            .args(audit::SSH_OPTIONS)
            .args(extra)
            .arg(format!("root@{}", link.guest()))
            .arg("id -un")
            .output()
            .unwrap()
    };
    let key = owner.private.to_str().unwrap();
    let login = ssh(&["-i", key]);
    assert_eq!(
        String::from_utf8_lossy(&login.stdout).trim(),
        "root",
        "the owner's key did not log in: {}",
        String::from_utf8_lossy(&login.stderr)
    );
    let password = ssh(&[
        "-o",
        "PubkeyAuthentication=no",
        "-o",
        "PreferredAuthentications=password,keyboard-interactive",
    ]);
    let refusal = String::from_utf8_lossy(&password.stderr);
    assert!(
        !password.status.success() && refusal.contains("Permission denied (publickey)"),
        "sshd offered more than keys: {refusal}"
    );

    // From the LAN: only the firewall's ports let a probe in, and of those the web, the web
    // admin and SSH answer; every other port stays silent (dropped, not refused).
    let admin = meetbox_firstboot::layout::ADMIN_PORT;
    let mut allowed_tcp = meetbox_firstboot::render::firewall::PUBLIC_TCP_PORTS.to_vec();
    allowed_tcp.extend([22, admin]);
    let tcp = audit::scan_tcp(link);
    assert!(
        [22, 80, 443, admin]
            .iter()
            .all(|port| tcp.open.contains(port)),
        "web, the admin or SSH not reachable from the LAN: {tcp:?}"
    );
    assert!(
        tcp.open
            .iter()
            .chain(&tcp.closed)
            .all(|port| allowed_tcp.contains(port)),
        "TCP ports outside the firewall's list answer from the LAN: {tcp:?}"
    );
    let allowed_udp = [3478, 10000];
    let udp = audit::scan_udp(
        link,
        &[
            53, 67, 68, 69, 123, 137, 161, 500, 514, 1900, 3478, 4500, 5060, 5353, 10000, 11211,
        ],
    );
    assert!(
        udp.open
            .iter()
            .chain(&udp.closed)
            .all(|port| allowed_udp.contains(port)),
        "UDP ports outside the firewall's list answer from the LAN: {udp:?}"
    );
}

/// Only GET, HEAD, POST and OPTIONS are served; every answer carries the security headers and
/// names no server version; plain HTTP only redirects.
pub(crate) fn check_methods_and_headers(https: &Https, http_port: u16) {
    let status_and_headers = |method: &str, path: &str| {
        let mut curl = https.curl();
        curl.args(["-o", "/dev/null", "-D", "-"]);
        // curl -X HEAD would wait for a body that never comes.
        if method == "HEAD" {
            curl.arg("--head");
        } else {
            curl.args(["-X", method]);
        }
        let output = curl.arg(https.url(path)).output().unwrap();
        let text = String::from_utf8_lossy(&output.stdout).to_ascii_lowercase();
        let status: u16 = text
            .split_whitespace()
            .nth(1)
            .and_then(|code| code.parse().ok())
            .unwrap_or_else(|| panic!("{method} {path}: no status line: {text}"));
        (status, text)
    };
    for method in ["PUT", "DELETE", "PATCH", "TRACE", "PROPFIND", "MKCOL"] {
        let (status, _) = status_and_headers(method, "/");
        assert_eq!(status, 405, "{method} / was not refused");
    }
    // OPTIONS passes the filter; nginx's static files refuse it themselves, prosody answers it
    // for BOSH (cross-origin preflight).
    for (method, path) in [
        ("GET", "/"),
        ("HEAD", "/"),
        ("POST", "/"),
        ("OPTIONS", "/http-bind"),
        ("GET", "/meetbox-headers-room"),
        ("GET", "/no-such-file.js"),
        ("DELETE", "/"),
    ] {
        let (status, headers) = status_and_headers(method, path);
        if method != "DELETE" {
            assert_ne!(status, 405, "{method} {path} was refused");
        }
        for header in [
            "strict-transport-security: max-age=",
            "content-security-policy: ",
            "x-content-type-options: nosniff",
            "referrer-policy: ",
        ] {
            assert!(
                headers.contains(header),
                "{method} {path} ({status}) lacks {header}:\n{headers}"
            );
        }
        let server = headers
            .lines()
            .find_map(|line| line.strip_prefix("server:"))
            .map(str::trim);
        assert!(
            matches!(server, None | Some("nginx")),
            "{method} {path} names a server version: {server:?}"
        );
    }
    let output = Command::new("curl")
        .args(["-sS", "--max-time", "30", "-o", "/dev/null", "-D", "-"])
        .arg(format!("http://127.0.0.1:{http_port}/some-room"))
        .args(["-H", &format!("Host: {}", https.domain)])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).to_ascii_lowercase();
    assert!(
        text.starts_with("http/1.1 301")
            && text.contains(&format!("location: https://{}/some-room", https.domain)),
        "plain HTTP does not redirect to HTTPS:\n{text}"
    );
    eprintln!("HTTP: other methods refused with 405, security headers everywhere, no version");
}

/// What a guest does, from [`audit::CLIENT_ADDRESS`]: opens the room's page, logs in to prosody
/// and enters the room; the admin logs in too.
pub(crate) fn visit_from_a_distinctive_address(
    https: &Https,
    link: &audit::ScanLink,
    password: &str,
) {
    let https = Https {
        address: link.guest_address().to_string(),
        netns: Some(link.netns().to_string()),
        interface: Some(link.tap.clone()),
        port: 443,
        ..https.clone()
    };
    let page = https
        .curl()
        .args(["-o", "/dev/null", "-w", "%{http_code}"])
        .arg(https.url(&format!("/{PRIVACY_ROOM}")))
        .output()
        .unwrap();
    assert!(
        page.status.success(),
        "the room's page over the scan link: {}",
        String::from_utf8_lossy(&page.stderr)
    );
    let jid = login(&https, XMPP_MAIN_HOST, "admin", password).unwrap();
    assert!(jid.starts_with("admin@meet.jitsi/"), "{jid}");
    let mut guest = Session::open(&https, XMPP_GUEST_HOST).unwrap();
    guest.authenticate(Credentials::Anonymous).unwrap();
    guest.bind().unwrap();
    let answer = guest
        .enter_room(&format!("{PRIVACY_ROOM}@{XMPP_MUC_HOST}"), "visitor")
        .unwrap();
    eprintln!(
        "visit from {}: page {}, logged in, room answered {}",
        audit::CLIENT_ADDRESS,
        String::from_utf8_lossy(&page.stdout),
        if answer.contains("type='error'") || answer.contains("type=\"error\"") {
            "with an error (only jicofo creates rooms)"
        } else {
            "with the room's presence"
        }
    );
}

/// HTTPS through the forward with the chain checked against Pebble's root, issued by Pebble.
pub(crate) fn check_pebble_certificate(https: &Https) {
    retry("HTTPS", PROMPT, || {
        let output = https
            .curl()
            .args(["-o", "/dev/null", "-w", "%{http_code}"])
            .arg(https.url("/"))
            .output()
            .unwrap();
        if output.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    });
    // coturn restarts when the box follows a new address: a refused session is tried again.
    let web = retry("the web on 443", PROMPT, || {
        tls_on_443(https, &https.domain)
    });
    assert!(web.contains("HTTP/1.1 "), "the web did not answer:\n{web}");
    // The TURN name reaches coturn (it speaks no HTTP), under the same certificate.
    let turn_name = meetbox_firstboot::layout::turn_name(&https.domain);
    let turn = retry("coturn on 443", PROMPT, || tls_on_443(https, &turn_name));
    assert!(
        !turn.contains("HTTP/1.1 "),
        "the TURN name reached the web:\n{turn}"
    );
}

/// A TLS session to the forwarded 443 with `name` as SNI and ALPN http/1.1, its chain and name
/// checked against Pebble's root, then an HTTP request; openssl's report and the answer, or why
/// the chain or name did not check.
fn tls_on_443(https: &Https, name: &str) -> Result<String, String> {
    use std::io::Write;
    let mut client = Command::new("timeout")
        .args(["10", "openssl", "s_client", "-connect"])
        .arg(format!("127.0.0.1:{}", https.port))
        .args(["-servername", name, "-verify_hostname", name])
        .args([
            "-alpn",
            "http/1.1",
            "-ign_eof",
            "-verify_return_error",
            "-CAfile",
        ])
        .arg(https.ca.as_ref().unwrap())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let request = format!("GET / HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n");
    let _ = client.stdin.take().unwrap().write_all(request.as_bytes());
    let output = client.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !text.contains("Verify return code: 0 (ok)") {
        return Err(format!(
            "{name}: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    assert!(
        text.contains("Pebble Intermediate"),
        "{name} not issued by Pebble:\n{text}"
    );
    Ok(text)
}

/// (username, password) of the XMPP client section of jicofo.conf or jvb.conf.
pub(crate) fn account(conf: &str) -> (String, String) {
    let value = |key: &str| {
        conf.lines()
            .map(str::trim)
            .find_map(|line| line.strip_prefix(&format!("{key} = \"")))
            .and_then(|rest| rest.strip_suffix('"'))
            .unwrap_or_else(|| panic!("no {key} in:\n{conf}"))
            .to_string()
    };
    (value("username"), value("password"))
}

/// How a guest reaches TURN: UDP 3478, or TLS on 443 through nginx's multiplexer (coturn's own
/// client names TURN's ALPN protocol, which routes it there).
#[derive(Clone, Copy, Debug)]
pub(crate) enum Turn {
    Udp,
    TlsOn443,
}

/// A TURN Allocate with these credentials (turnutils_uclient, coturn's own client) gets a relay.
pub(crate) fn turn_allocates(user: &str, password: &str, port: u16, turn: Turn) -> bool {
    let mut command = Command::new("timeout");
    command.args([
        "30",
        "turnutils_uclient",
        "-v",
        "-n",
        "1",
        "-m",
        "1",
        "-l",
        "100",
    ]);
    if let Turn::TlsOn443 = turn {
        command.args(["-t", "-S"]);
    }
    // The peer is only needed for uclient's data phase, which comes after the allocation.
    command
        .args([
            "-e",
            "127.0.0.1",
            "-r",
            "9",
            "-u",
            user,
            "-w",
            password,
            "-p",
        ])
        .arg(port.to_string())
        .arg("127.0.0.1");
    let output = command.output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    eprintln!(
        "TURN ({turn:?}) with {user}: {}",
        text.lines()
            .find(|l| l.contains("relay addr") || l.contains("ERROR"))
            .unwrap_or("no answer")
    );
    text.contains("Received relay addr")
}
