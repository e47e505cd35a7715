//! ACME against Pebble (Let's Encrypt's test CA) on 127.0.0.1: a certificate issued over HTTP-01 served
//! by the agent itself, installed, and its chain verified against Pebble's root; the TURN name joins
//! the certificate once it has a DNS record; then a name without a
//! DNS record: the self-signed certificate stays, a retry is scheduled, and an immediate `renew`
//! respects the back-off instead of asking the CA again.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meetbox_firstboot::acme::retry::RetryRecord;
use meetbox_firstboot::apply::Root;
use meetbox_firstboot::layout;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

struct Stopped(Child);
impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: signalling a child we started, by its id.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// A CA and a certificate for 127.0.0.1, for Pebble's own HTTPS listener.
fn listener_certificate(dir: &Path) -> String {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    std::fs::write(dir.join("pebble.crt"), leaf.pem()).unwrap();
    std::fs::write(dir.join("pebble.key"), key.serialize_pem()).unwrap();
    ca.pem()
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn tree_with_answers(domain: &str, directory: &str, ca_pem: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    common::write_small_tuning(dir.path());
    std::fs::create_dir_all(dir.path().join("boot/efi")).unwrap();
    let answers = format!(
        "domain = \"{domain}\"\nadmin_password = \"horse staple cart moon\"\nemail = \"ops@meetbox.test\"\ntls = \"letsencrypt\"\nacme_directory = \"{directory}\"\nacme_ca_cert = '''\n{ca_pem}'''\n"
    );
    std::fs::write(dir.path().join("boot/efi/meetbox-setup.toml"), answers).unwrap();
    dir
}

fn agent(root: &Path, http_port: u16) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_meetbox-firstboot"));
    command
        .arg("--root")
        .arg(root)
        .env("MEETBOX_ACME_HTTP_PORT", http_port.to_string());
    command
}

#[test]
fn pebble_issues_a_certificate_and_failures_fall_back_with_a_retry() {
    if !common::have_tool("pebble", "pebble")
        || !common::have_tool("pebble-challtestsrv", "pebble")
        || !common::have_tool("openssl", "openssl")
        || !common::have_tool("curl", "curl")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ca_pem = listener_certificate(dir.path());
    let (acme, management, http01, dns, dns_management) = (
        common::free_port(),
        common::free_port(),
        common::free_port(),
        common::free_port(),
        common::free_port(),
    );
    let config = serde_json::json!({
        "pebble": {
            "listenAddress": format!("127.0.0.1:{acme}"),
            "managementListenAddress": format!("127.0.0.1:{management}"),
            "certificate": dir.path().join("pebble.crt"),
            "privateKey": dir.path().join("pebble.key"),
            "httpPort": http01,
            "tlsPort": common::free_port(),
            "ocspResponderURL": "",
            "externalAccountBindingRequired": false
        }
    });
    std::fs::write(dir.path().join("pebble.json"), config.to_string()).unwrap();
    let _dns = Stopped(
        Command::new("pebble-challtestsrv")
            .args([
                "-defaultIPv4",
                "",
                "-defaultIPv6",
                "",
                "-http01",
                "",
                "-https01",
                "",
                "-tlsalpn01",
                "",
            ])
            .args([
                "-dns01",
                &format!("127.0.0.1:{dns}"),
                "-management",
                &format!("127.0.0.1:{dns_management}"),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(dns_management, "pebble-challtestsrv");
    let add = common::run(Command::new("curl").args([
        "-sf",
        "--max-time",
        "5",
        "-d",
        r#"{"host":"good.meetbox.test","addresses":["127.0.0.1"]}"#,
        &format!("http://127.0.0.1:{dns_management}/add-a"),
    ]));
    assert!(add.status.success(), "cannot add the DNS record");
    let _pebble = Stopped(
        Command::new("pebble")
            .arg("-config")
            .arg(dir.path().join("pebble.json"))
            .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
            .env("PEBBLE_VA_NOSLEEP", "1")
            .env("PEBBLE_WFE_NONCEREJECT", "0")
            .env_remove("PEBBLE_VA_ALWAYS_VALID")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(acme, "pebble");
    let directory = format!("https://127.0.0.1:{acme}/dir");

    // Issued, installed, chained to Pebble's root.
    let good = tree_with_answers("good.meetbox.test", &directory, &ca_pem);
    let out = agent(good.path(), http01).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cert_path = good.path().join(&layout::TLS_CERT[1..]);
    let info = meetbox_firstboot::acme::tls::inspect(&std::fs::read_to_string(&cert_path).unwrap())
        .unwrap();
    assert!(!info.self_signed, "still self-signed:\n{stdout}");
    assert!(
        info.issuer.to_lowercase().contains("pebble"),
        "{}",
        info.issuer
    );
    let root_pem = common::run(Command::new("curl").args([
        "-skf",
        "--max-time",
        "5",
        &format!("https://127.0.0.1:{management}/roots/0"),
    ]));
    assert!(root_pem.status.success());
    std::fs::write(dir.path().join("root.pem"), &root_pem.stdout).unwrap();
    let verify = common::run(
        Command::new("openssl")
            .args(["verify", "-CAfile"])
            .arg(dir.path().join("root.pem"))
            .arg("-untrusted")
            .arg(&cert_path)
            .arg(&cert_path),
    );
    assert!(
        verify.status.success(),
        "chain not verified: {}",
        String::from_utf8_lossy(&verify.stdout)
    );
    assert_eq!(
        std::fs::read(&cert_path).unwrap(),
        std::fs::read(good.path().join(&layout::TURN_TLS_CERT[1..])).unwrap(),
        "coturn got another certificate"
    );
    assert!(!good.path().join(&layout::ACME_RETRY_FILE[1..]).exists());
    // The TURN name has no DNS record yet: the certificate is for the meeting name alone.
    assert_eq!(info.names, ["good.meetbox.test"]);
    assert!(
        stdout.contains("turn.good.meetbox.test did not validate"),
        "{stdout}"
    );

    // The owner adds the TURN name's record; a forced renewal issues a new certificate with the
    // stored account, now for both names.
    let add = common::run(Command::new("curl").args([
        "-sf",
        "--max-time",
        "5",
        "-d",
        r#"{"host":"turn.good.meetbox.test","addresses":["127.0.0.1"]}"#,
        &format!("http://127.0.0.1:{dns_management}/add-a"),
    ]));
    assert!(add.status.success(), "cannot add the TURN name's record");
    let renew = agent(good.path(), http01)
        .args(["renew", "--force"])
        .output()
        .unwrap();
    assert!(
        renew.status.success(),
        "{}",
        String::from_utf8_lossy(&renew.stderr)
    );
    let renewed =
        meetbox_firstboot::acme::tls::inspect(&std::fs::read_to_string(&cert_path).unwrap())
            .unwrap();
    assert!(!renewed.self_signed);
    assert_eq!(
        renewed.names,
        ["good.meetbox.test", "turn.good.meetbox.test"]
    );

    // No DNS record: self-signed kept, retry scheduled, explained in plain words.
    let bad = tree_with_answers("bad.meetbox.test", &directory, &ca_pem);
    let started = meetbox_firstboot::clock::now();
    let out = agent(bad.path(), http01).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("has no address in DNS"), "{stdout}");
    let info = meetbox_firstboot::acme::tls::inspect(
        &std::fs::read_to_string(bad.path().join(&layout::TLS_CERT[1..])).unwrap(),
    )
    .unwrap();
    assert!(info.self_signed);
    let record = RetryRecord::load(&Root::new(bad.path()))
        .unwrap()
        .expect("no retry record");
    assert_eq!(record.attempts, 1);
    assert!(record.next_attempt >= started + 1800, "{record:?}");
    let renew = agent(bad.path(), http01).arg("renew").output().unwrap();
    assert!(renew.status.success());
    assert!(String::from_utf8_lossy(&renew.stdout).contains("the next one is after"));
    assert_eq!(
        RetryRecord::load(&Root::new(bad.path()))
            .unwrap()
            .unwrap()
            .attempts,
        1,
        "renew hammered the CA"
    );
}
