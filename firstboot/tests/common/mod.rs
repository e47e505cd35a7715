//! Shared helpers of the integration tests.
#![allow(dead_code)]

pub mod admin_box;
pub mod netns;
pub mod nginx;

use std::net::TcpListener;
use std::process::Command;

use meetbox_firstboot::render::{NetworkFacts, Site};
use meetbox_firstboot::secrets::Secrets;
use meetbox_firstboot::tuning::ConfigJsCaps;

/// True when `tool` can run. Absent: fails under CI=true, else prints why the test is skipped.
pub fn have_tool(tool: &str, package: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{tool} is required (apt-get install {package})");
        }
        eprintln!("SKIPPED: {tool} not found (apt-get install {package})");
    }
    found
}

/// True when running as root (real servers need it to drop privileges or bind).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("this test needs root");
        }
        eprintln!("SKIPPED: needs root");
    }
    root
}

/// A free TCP port on 127.0.0.1 (bound and released; the OS does not reuse it at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Fixed secrets for rendering tests (real ones are random; see secrets.rs).
pub fn sample_secrets() -> Secrets {
    Secrets {
        machine_id: "0123456789abcdef0123456789abcdef".into(),
        focus_password: "FocusPassword0000000000000000000".into(),
        jvb_password: "JvbPassword000000000000000000000".into(),
        turn_secret: "TurnSecret0000000000000000000000".into(),
        jvb_muc_nickname: "8c3b2f0e-1111-4222-8333-444455556666".into(),
        focus_salt: "FocusSalt000000000000000".into(),
        jvb_salt: "JvbSalt00000000000000000".into(),
    }
}

/// A box behind NAT: LAN 192.168.1.20, router 198.51.99.10.
pub fn sample_network() -> NetworkFacts {
    NetworkFacts {
        lan_address: Some("192.168.1.20".parse().unwrap()),
        public_address: Some("198.51.99.10".parse().unwrap()),
        global_ipv6: None,
    }
}

/// Caps unlike the conservative defaults, so a rendering test shows they come from the tuning.
pub fn sample_caps() -> ConfigJsCaps {
    ConfigJsCaps {
        resolution: 720,
        channel_last_n: 10,
        max_full_resolution_participants: 3,
        start_audio_muted: 10,
        start_video_muted: 11,
    }
}

/// The builder's tuning file with an 8 MB swap file, so that a full setup in a temporary tree creates
/// a real swap file without taking gigabytes of the test machine's disk.
pub fn write_small_tuning(root: &std::path::Path) {
    let text = include_str!("../fixtures/tuning.toml").replace("size_mb = 2048", "size_mb = 8");
    assert!(text.contains("size_mb = 8"));
    std::fs::create_dir_all(root.join("etc/meetbox")).unwrap();
    std::fs::write(root.join("etc/meetbox/tuning.toml"), text).unwrap();
}

pub fn run(command: &mut Command) -> std::process::Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    output
}

/// Calls `f` with the sample site for meet.example.org (Jitsi's prosody plugins present or not).
pub fn with_site<T>(jitsi: bool, f: impl FnOnce(&Site) -> T) -> T {
    with_site_on(&sample_network(), jitsi, f)
}

/// [`with_site`] on another network than the sample's.
pub fn with_site_on<T>(network: &NetworkFacts, jitsi: bool, f: impl FnOnce(&Site) -> T) -> T {
    let secrets = sample_secrets();
    let caps = sample_caps();
    let site = Site {
        domain: "meet.example.org",
        secrets: &secrets,
        network,
        jitsi_prosody_plugins: jitsi,
        admin_from_internet: false,
        caps: &caps,
    };
    f(&site)
}
