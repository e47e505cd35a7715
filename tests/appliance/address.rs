//! The booted box follows its line's public address. The test's own DNS server (pebble-challtestsrv)
//! answers for the meeting name on the scan link (unique-local addresses on both ends, until the
//! next boot), and the box's resolver is pointed at it for that name alone (`resolvectl`). The record moves; after the box's own check
//! (`meetbox-address.service`, which its timer runs every five minutes) jvb.conf and
//! turnserver.conf carry the new address and coturn has restarted; a check that finds nothing new
//! restarts nothing.

use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::audit::ScanLink;
use crate::unattended::{guest_shell, OwnerKey};

const FIRST: &str = "198.51.99.10";
/// The test's DNS server on the scan link, and the box's address beside it (unique-local).
const DNS_ADDRESS: &str = "fd6d:6274:6573:7400::1";
const BOX_ON_THE_LINK: &str = "fd6d:6274:6573:7400::2";
const MOVED: &str = "198.51.99.77";

/// pebble-challtestsrv in the scan namespace, on its link-local address; stopped when dropped.
pub(crate) struct TestDns {
    server: Child,
    management: u16,
}

impl Drop for TestDns {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

impl TestDns {
    fn start(link: &ScanLink) -> TestDns {
        let management = crate::pebble::free_port();
        // A unique-local address beside the link-local one: systemd-resolved sends unicast DNS
        // only over links with an address beyond link-local.
        let out = link
            .command("ip")
            .args([
                "-6",
                "addr",
                "add",
                &format!("{DNS_ADDRESS}/64"),
                "dev",
                &link.tap,
                "nodad",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let listen = format!("[{DNS_ADDRESS}]:53");
        let server = link
            .command("pebble-challtestsrv")
            .args(["-defaultIPv4", "", "-defaultIPv6", ""])
            .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
            .args(["-dns01", &listen])
            .args(["-management", &format!("127.0.0.1:{management}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pebble-challtestsrv starts");
        let dns = TestDns { server, management };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !dns.call(link, "clear-a", r#"{"host":"probe.test"}"#) {
            assert!(
                Instant::now() < deadline,
                "the test's DNS server did not start"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        dns
    }

    fn call(&self, link: &ScanLink, path: &str, body: &str) -> bool {
        link.command("curl")
            .args(["-sf", "--max-time", "2", "-d", body])
            .arg(format!("http://127.0.0.1:{}/{path}", self.management))
            .output()
            .is_ok_and(|out| out.status.success())
    }

    fn point(&self, link: &ScanLink, name: &str, address: &str) {
        assert!(self.call(link, "clear-a", &format!(r#"{{"host":"{name}"}}"#)));
        assert!(self.call(
            link,
            "add-a",
            &format!(r#"{{"host":"{name}","addresses":["{address}"]}}"#)
        ));
    }
}

/// The box's own check, run now (as its timer would), and what it printed.
fn check_now(link: &ScanLink, owner: &OwnerKey) -> String {
    guest_shell(
        link,
        owner,
        "resolvectl flush-caches && since=$(date '+%Y-%m-%d %H:%M:%S') && \
         systemctl start meetbox-address.service && sleep 1 && \
         journalctl -u meetbox-address.service --since \"$since\" -o cat --no-pager \
         | grep '^public address' | tail -n 1",
    )
}

/// Returns the test's DNS server, to keep until the guest is off: the box's timer goes on asking
/// it, and finds nothing new.
pub(crate) fn check_address_follows_the_record(
    link: &ScanLink,
    owner: &OwnerKey,
    domain: &str,
) -> TestDns {
    let dns = TestDns::start(link);
    dns.point(link, domain, FIRST);
    // The box asks the test's server for the meeting name only, over the scan link.
    let guest = link.guest_address().to_string();
    guest_shell(
        link,
        owner,
        &format!(
            "iface=$(ip -6 -o addr show scope link | awk '$4 ~ /^{guest}\\// {{print $2}}') && \
             ip -6 addr add {BOX_ON_THE_LINK}/64 dev \"$iface\" nodad && \
             resolvectl dns \"$iface\" {DNS_ADDRESS} && resolvectl domain \"$iface\" '~{domain}'",
        ),
    );
    let coturn_started = || {
        guest_shell(
            link,
            owner,
            "systemctl show -p ExecMainStartTimestampMonotonic coturn",
        )
        .trim()
        .to_string()
    };

    let first = check_now(link, owner);
    assert!(
        first.contains(&format!("public address {FIRST}")),
        "{first}"
    );
    let files = guest_shell(
        link,
        owner,
        "grep public-address /etc/jitsi/videobridge/jvb.conf; grep external-ip /etc/turnserver.conf",
    );
    assert!(
        files.contains(&format!("public-address = \"{FIRST}\"")),
        "{files}"
    );
    assert!(files.contains(&format!("external-ip={FIRST}/")), "{files}");

    // Nothing new: coturn keeps running (its meetings too).
    let before = coturn_started();
    let again = check_now(link, owner);
    assert!(again.contains("unchanged"), "{again}");
    assert_eq!(coturn_started(), before, "coturn restarted for nothing");

    // The line's address changes and the record follows it: so does the box, at its next check.
    dns.point(link, domain, MOVED);
    let moved = check_now(link, owner);
    assert!(
        moved.contains(&format!("public address {MOVED}")),
        "{moved}"
    );
    let restarted = moved
        .split_once("restarted ")
        .map_or("", |(_, services)| services);
    assert!(restarted.contains("coturn.service"), "{moved}");
    let files = guest_shell(
        link,
        owner,
        "grep public-address /etc/jitsi/videobridge/jvb.conf; grep external-ip /etc/turnserver.conf; systemctl is-active coturn",
    );
    assert!(
        files.contains(&format!("public-address = \"{MOVED}\"")),
        "{files}"
    );
    assert!(files.contains(&format!("external-ip={MOVED}/")), "{files}");
    assert!(files.trim_end().ends_with("active"), "{files}");
    assert_ne!(coturn_started(), before, "coturn did not restart");
    let status = guest_shell(link, owner, "meetbox-firstboot status");
    assert!(
        status.contains(&format!("from {FIRST} to {MOVED}, and was followed")),
        "{status}"
    );
    // The timer that runs the check in service is on.
    let timer = guest_shell(
        link,
        owner,
        "systemctl is-enabled meetbox-address.timer meetbox-address.path",
    );
    assert_eq!(
        timer.split_whitespace().collect::<Vec<_>>(),
        ["enabled", "enabled"],
        "{timer}"
    );
    eprintln!("address: the box followed {FIRST} -> {MOVED}; an idle check restarted nothing");
    dns
}
