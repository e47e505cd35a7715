//! The web admin answers only the local network, enforced twice, both as the box runs them: the
//! rendered firewall (nftables.conf, loaded into a network namespace the test makes) and nginx
//! with the rendered site, in front of the real admin process. A second namespace plays the
//! clients, with a private and a public address on the same link.

mod common;

use std::process::Stdio;

use common::netns::{http_status, in_ns, link, Namespaces};
use std::time::{Duration, Instant};

use meetbox_firstboot::layout::ADMIN_PORT;
use meetbox_firstboot::render;

const BOX_PRIVATE: &str = "10.77.0.1";
const BOX_PUBLIC: &str = "203.0.113.1";
const CLIENT_PRIVATE: &str = "10.77.0.2";
const CLIENT_PUBLIC: &str = "203.0.113.2";

/// curl from the client namespace, from `source` to `url`; its exit code and the HTTP status.
fn fetch(spaces: &Namespaces, source: &str, url: &str) -> (Option<i32>, String) {
    http_status(
        &spaces.client,
        &["--interface", source, "-H", "X-Real-IP: 10.1.1.1", url],
    )
}

#[test]
fn only_local_network_sources_reach_the_admin() {
    if !common::have_tool("ip", "iproute2")
        || !common::have_tool("nft", "nftables")
        || !common::have_tool("nginx", "nginx")
        || !common::have_tool("curl", "curl")
        || !common::is_root()
    {
        return;
    }
    let spaces = link(
        "adm",
        &[&format!("{BOX_PRIVATE}/24"), &format!("{BOX_PUBLIC}/24")],
        &[
            &format!("{CLIENT_PRIVATE}/24"),
            &format!("{CLIENT_PUBLIC}/24"),
        ],
    );
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("nftables.conf");
    std::fs::write(&rules, render::firewall::nftables(false, false)).unwrap();
    let loaded = common::run(in_ns(&spaces.server, "nft").arg("-f").arg(&rules));
    assert!(
        loaded.status.success(),
        "{}",
        String::from_utf8_lossy(&loaded.stderr)
    );
    let conf = common::nginx::setup(dir.path(), None);
    let _nginx = common::nginx::start(in_ns(&spaces.server, "nginx"), dir.path(), &conf);
    let _admin = common::nginx::Stopped(
        in_ns(&spaces.server, env!("CARGO_BIN_EXE_meetbox-admin"))
            .args(["serve", "--helper"])
            .arg(dir.path().join("no-helper.sock"))
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let admin_url = |host: &str| format!("https://{host}:{ADMIN_PORT}/login");

    // From the LAN: the login page, through the firewall, nginx and the admin's own check (nginx
    // replaces the client's X-Real-IP with the real source).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, code) = fetch(&spaces, CLIENT_PRIVATE, &admin_url(BOX_PRIVATE));
        if code == "200" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the admin did not answer the LAN: {code}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // From a public address: the firewall drops the admin's port (curl times out), not the web's.
    let (exit, code) = fetch(&spaces, CLIENT_PUBLIC, &admin_url(BOX_PUBLIC));
    assert_eq!(
        (exit, code.as_str()),
        (Some(28), "000"),
        "the firewall let a public source in"
    );
    let (_, code) = fetch(&spaces, CLIENT_PUBLIC, &format!("https://{BOX_PUBLIC}/"));
    assert_eq!(code, "200", "the meeting site is for everyone");
    // Without the firewall, nginx refuses the public source itself.
    let flushed = common::run(in_ns(&spaces.server, "nft").args(["flush", "ruleset"]));
    assert!(flushed.status.success());
    let (_, code) = fetch(&spaces, CLIENT_PUBLIC, &admin_url(BOX_PUBLIC));
    assert_eq!(code, "403", "nginx let a public source reach the admin");
    let (_, code) = fetch(&spaces, CLIENT_PRIVATE, &admin_url(BOX_PRIVATE));
    assert_eq!(code, "200");
}
