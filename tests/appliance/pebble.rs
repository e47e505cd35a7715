//! Pebble (Let's Encrypt's test CA) on the host for the guest: its ACME directory on 127.0.0.1, which
//! the guest reaches as 10.0.2.2 (QEMU user networking), with a listener certificate valid for both
//! addresses; pebble-challtestsrv answers its DNS with 127.0.0.1 for the test domain and its TURN
//! name, and its HTTP-01
//! validations go to the host port forwarded to the guest's port 80.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Points `name` at 127.0.0.1 in pebble-challtestsrv's DNS (where Pebble validates).
fn add_name(dns_management: u16, name: &str) {
    let add = Command::new("curl")
        .args(["-sf", "--max-time", "5", "-d"])
        .arg(format!(r#"{{"host":"{name}","addresses":["127.0.0.1"]}}"#))
        .arg(format!("http://127.0.0.1:{dns_management}/add-a"))
        .status()
        .unwrap();
    assert!(add.success(), "cannot add the DNS record for {name}");
}

/// The host as seen from a guest under QEMU user networking.
pub const HOST_FROM_GUEST: &str = "10.0.2.2";

/// Stops a server we started, by its process id.
struct Stopped(Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: signalling a child we started, by its id.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

pub struct Pebble {
    /// The directory URL as the guest reaches it.
    pub directory_for_guest: String,
    /// PEM of the CA that signed Pebble's listener certificate (the answers file's `acme_ca_cert`).
    pub listener_ca_pem: String,
    management_port: u16,
    dns_management_port: u16,
    _dns: Stopped,
    _pebble: Stopped,
}

impl Pebble {
    /// Starts pebble-challtestsrv (DNS: `domain` -> 127.0.0.1) and Pebble, whose HTTP-01 checks go
    /// to `http01_port` on 127.0.0.1.
    pub fn start(dir: &Path, domain: &str, http01_port: u16) -> Pebble {
        let listener_ca_pem = listener_certificate(dir);
        let (acme, management, dns, dns_management) =
            (free_port(), free_port(), free_port(), free_port());
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{acme}"),
                "managementListenAddress": format!("127.0.0.1:{management}"),
                "certificate": dir.join("pebble.crt"),
                "privateKey": dir.join("pebble.key"),
                "httpPort": http01_port,
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();
        let dns_server = Stopped(
            Command::new("pebble-challtestsrv")
                .args(["-defaultIPv4", "", "-defaultIPv6", ""])
                .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                .args(["-dns01", &format!("127.0.0.1:{dns}")])
                .args(["-management", &format!("127.0.0.1:{dns_management}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("pebble-challtestsrv starts"),
        );
        wait_for_port(dns_management, "pebble-challtestsrv");
        for name in [
            domain.to_string(),
            meetbox_firstboot::layout::turn_name(domain),
        ] {
            add_name(dns_management, &name);
        }
        let pebble = Stopped(
            Command::new("pebble")
                .arg("-config")
                .arg(dir.join("pebble.json"))
                .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0")
                .env_remove("PEBBLE_VA_ALWAYS_VALID")
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("pebble.log")).unwrap())
                .spawn()
                .expect("pebble starts"),
        );
        wait_for_port(acme, "pebble");
        Pebble {
            directory_for_guest: format!("https://{HOST_FROM_GUEST}:{acme}/dir"),
            listener_ca_pem,
            management_port: management,
            dns_management_port: dns_management,
            _dns: dns_server,
            _pebble: pebble,
        }
    }

    /// Pebble's issuing root (fresh on every start), written to `dir/pebble-root.pem`.
    /// Gives `name` and its TURN name DNS records, as an owner does before moving the box to it.
    pub fn add_name(&self, name: &str) {
        add_name(self.dns_management_port, name);
        add_name(
            self.dns_management_port,
            &meetbox_firstboot::layout::turn_name(name),
        );
    }

    pub fn issuing_root(&self, dir: &Path) -> PathBuf {
        let output = Command::new("curl")
            .args(["-skf", "--max-time", "5"])
            .arg(format!(
                "https://127.0.0.1:{}/roots/0",
                self.management_port
            ))
            .output()
            .unwrap();
        assert!(output.status.success(), "cannot fetch Pebble's root");
        let path = dir.join("pebble-root.pem");
        std::fs::write(&path, &output.stdout).unwrap();
        path
    }
}

/// A CA and, signed by it, a certificate for Pebble's HTTPS listener valid for 10.0.2.2 (the guest's
/// view) and 127.0.0.1. Returns the CA's PEM.
fn listener_certificate(dir: &Path) -> String {
    let openssl = |args: &[&str]| {
        let output = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "listener-ca.key",
        "-out",
        "listener-ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=Meetbox test: Pebble listener CA",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "pebble.key",
        "-out",
        "pebble.csr",
        "-subj",
        "/CN=pebble",
    ]);
    std::fs::write(
        dir.join("pebble.ext"),
        format!("subjectAltName=IP:{HOST_FROM_GUEST},IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"),
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "pebble.csr",
        "-CA",
        "listener-ca.crt",
        "-CAkey",
        "listener-ca.key",
        "-CAcreateserial",
        "-out",
        "pebble.crt",
        "-days",
        "2",
        "-extfile",
        "pebble.ext",
    ]);
    std::fs::read_to_string(dir.join("listener-ca.crt")).unwrap()
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not start on port {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
