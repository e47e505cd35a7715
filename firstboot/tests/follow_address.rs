//! The public address follows the line. A box the real agent set up (below a temporary root) runs
//! `meetbox-firstboot follow-address` inside a network namespace whose resolver is a real DNS
//! server the test controls (pebble-challtestsrv; `ip netns exec` gives the namespace its own
//! resolv.conf). The name's A record moves, and jvb.conf and turnserver.conf follow; a check that
//! finds nothing new rewrites nothing. The owner's STUN server is asked over real STUN (coturn).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::netns::{in_ns, ip, link, Namespaces};
use meetbox_firstboot::apply::Root;
use meetbox_firstboot::layout;
use meetbox_firstboot::network::follow::Record;
use meetbox_firstboot::network::stun;

const BOX: &str = "192.168.1.20";
const BOX_V6: &str = "2a01:4f8:1:2::20";
const ROUTER: &str = "192.168.1.1";
const FIRST: &str = "198.51.99.10";
const MOVED: &str = "198.51.99.77";
/// The answers file of common::admin_box.
const DOMAIN: &str = "meetbox.test";

/// The namespace's own resolv.conf (`ip netns exec` mounts /etc/netns/NAME/resolv.conf over
/// /etc/resolv.conf), removed when dropped.
struct Resolver(PathBuf);

impl Resolver {
    fn for_namespace(ns: &str) -> Resolver {
        let dir = PathBuf::from("/etc/netns").join(ns);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("resolv.conf"), "nameserver 127.0.0.1\n").unwrap();
        Resolver(dir)
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sets the name's records in the test's DNS server (A, and AAAA when given).
fn set_records(spaces: &Namespaces, management: u16, v4: &str, v6: Option<&str>) {
    let call = |path: &str, body: String| {
        let out = common::run(in_ns(&spaces.server, "curl").args([
            "-sf",
            "--max-time",
            "5",
            "-d",
            &body,
            &format!("http://127.0.0.1:{management}/{path}"),
        ]));
        assert!(out.status.success(), "DNS management {path} failed");
    };
    call("clear-a", format!(r#"{{"host":"{DOMAIN}"}}"#));
    call(
        "add-a",
        format!(r#"{{"host":"{DOMAIN}","addresses":["{v4}"]}}"#),
    );
    call("clear-aaaa", format!(r#"{{"host":"{DOMAIN}"}}"#));
    if let Some(v6) = v6 {
        call(
            "add-aaaa",
            format!(r#"{{"host":"{DOMAIN}","addresses":["{v6}"]}}"#),
        );
    }
}

/// `meetbox-firstboot --root ROOT COMMAND` in the box's namespace; its output (it must succeed).
fn agent(spaces: &Namespaces, root: &Path, command: &str) -> String {
    let out = common::run(
        in_ns(&spaces.server, env!("CARGO_BIN_EXE_meetbox-firstboot"))
            .arg("--root")
            .arg(root)
            .arg(command),
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{command}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn follow(spaces: &Namespaces, root: &Path) -> String {
    agent(spaces, root, "follow-address")
}

fn status(spaces: &Namespaces, root: &Path) -> String {
    agent(spaces, root, "status")
}

fn read(root: &Path, target: &str) -> String {
    std::fs::read_to_string(root.join(&target[1..])).unwrap()
}

fn modified(root: &Path, target: &str) -> SystemTime {
    std::fs::metadata(root.join(&target[1..]))
        .unwrap()
        .modified()
        .unwrap()
}

#[test]
fn the_videobridge_and_turn_follow_the_name_s_record() {
    for (tool, package) in [
        ("ip", "iproute2"),
        ("curl", "curl"),
        ("pebble-challtestsrv", "pebble"),
    ] {
        if !common::have_tool(tool, package) {
            return;
        }
    }
    if !common::is_root() {
        return;
    }
    let spaces = link(
        "fol",
        &[&format!("{BOX}/24"), &format!("{BOX_V6}/64")],
        &[&format!("{ROUTER}/24"), "2a01:4f8:1:2::1/64"],
    );
    ip(&[
        "-n",
        &spaces.server,
        "route",
        "add",
        "default",
        "via",
        ROUTER,
    ]);
    ip(&[
        "-6",
        "-n",
        &spaces.server,
        "route",
        "add",
        "default",
        "via",
        "2a01:4f8:1:2::1",
    ]);
    let _resolver = Resolver::for_namespace(&spaces.server);
    let management = common::free_port();
    let _dns = common::nginx::Stopped(
        in_ns(&spaces.server, "pebble-challtestsrv")
            .args(["-defaultIPv4", "", "-defaultIPv6", ""])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-dns01", "127.0.0.1:53"])
            .args(["-management", &format!("127.0.0.1:{management}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !common::run(in_ns(&spaces.server, "curl").args([
        "-s",
        "--max-time",
        "1",
        &format!("http://127.0.0.1:{management}/"),
    ]))
    .status
    .success()
    {
        assert!(
            Instant::now() < deadline,
            "pebble-challtestsrv did not start"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    common::admin_box::set_up_box(root);

    // The name points at the line: the bridge maps the LAN address to it, coturn relays for it,
    // and IPv6 guests get relays on the box's own IPv6 address.
    set_records(&spaces, management, FIRST, Some(BOX_V6));
    let first = follow(&spaces, root);
    assert!(
        first.contains(&format!("public address {FIRST}")),
        "{first}"
    );
    let jvb = read(root, layout::JVB_CONF);
    assert!(
        jvb.contains(&format!(
            "local-address = \"{BOX}\", public-address = \"{FIRST}\""
        )),
        "{jvb}"
    );
    let turn = read(root, layout::TURN_CONF);
    assert!(
        turn.contains(&format!("external-ip={FIRST}/{BOX}\n")),
        "{turn}"
    );
    assert!(turn.contains(&format!("relay-ip={BOX_V6}\n")), "{turn}");

    // Nothing new: nothing rewritten, so no service would restart and no meeting drop.
    let (jvb_time, turn_time) = (
        modified(root, layout::JVB_CONF),
        modified(root, layout::TURN_CONF),
    );
    let again = follow(&spaces, root);
    assert!(again.ends_with(": unchanged\n"), "{again}");
    assert_eq!(modified(root, layout::JVB_CONF), jvb_time);
    assert_eq!(modified(root, layout::TURN_CONF), turn_time);

    // The line's address changes and the owner's dynamic DNS moves the record: both follow.
    set_records(&spaces, management, MOVED, Some(BOX_V6));
    let moved = follow(&spaces, root);
    assert!(
        moved.contains(&format!("public address {MOVED}")),
        "{moved}"
    );
    assert!(
        moved.contains(layout::JVB_CONF) && moved.contains(layout::TURN_CONF),
        "{moved}"
    );
    assert!(read(root, layout::JVB_CONF).contains(&format!("public-address = \"{MOVED}\"")));
    assert!(read(root, layout::TURN_CONF).contains(&format!("external-ip={MOVED}/{BOX}\n")));
    let record = Record::load(&Root::new(root)).unwrap().unwrap();
    let change = record.last_change.expect("the change is recorded");
    assert_eq!(
        (change.from, change.to),
        (Some(FIRST.parse().unwrap()), Some(MOVED.parse().unwrap()))
    );
    let shown = status(&spaces, root);
    assert!(
        shown.contains(&format!("from {FIRST} to {MOVED}, and was followed")),
        "{shown}"
    );
    assert!(
        shown.contains(&format!("IPv6: {DOMAIN} gives this box's address {BOX_V6}")),
        "{shown}"
    );

    // A stale AAAA record is explained with the fix.
    set_records(&spaces, management, MOVED, Some("2a01:4f8:1:2::99"));
    follow(&spaces, root);
    let shown = status(&spaces, root);
    assert!(
        shown.contains(&format!(
            "FIX IPv6: {DOMAIN}'s AAAA record gives 2a01:4f8:1:2::99"
        )) && shown.contains(&format!("Change the AAAA record to {BOX_V6}")),
        "{shown}"
    );
}

#[test]
fn the_owner_s_stun_server_tells_the_address_it_sees() {
    if !common::have_tool("turnserver", "coturn") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = common::free_port();
    let conf = dir.path().join("stun.conf");
    std::fs::write(
        &conf,
        format!("listening-ip=127.0.0.1\nlistening-port={port}\nstun-only\nno-cli\nfingerprint\n"),
    )
    .unwrap();
    let _stun = common::nginx::Stopped(
        Command::new("turnserver")
            .arg("-c")
            .arg(&conf)
            .arg("--pidfile")
            .arg(dir.path().join("stun.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // coturn answers a Binding request with the source it saw: loopback, here.
    let server = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let seen = loop {
        match stun::public_address(&server) {
            Ok(ip) => break ip,
            Err(e) if Instant::now() > deadline => panic!("{e:#}"),
            Err(_) => std::thread::sleep(Duration::from_millis(300)),
        }
    };
    assert_eq!(seen, "127.0.0.1".parse::<std::net::IpAddr>().unwrap());
    // Nobody answering is told plainly, with the port.
    let silent = format!("127.0.0.1:{}", common::free_port());
    let error = format!("{:#}", stun::public_address(&silent).unwrap_err());
    assert!(error.contains("did not answer"), "{error}");
}
