//! Golden-file tests of the rendered configuration. `UPDATE_GOLDEN=1 cargo test -p meetbox-firstboot
//! --test golden` rewrites the files under tests/golden/ after a deliberate template change.

mod common;

use std::path::PathBuf;

use meetbox_firstboot::render::{self, Site};

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn check(name: &str, rendered: &str) {
    let path = golden_dir().join(name);
    if std::env::var("UPDATE_GOLDEN").is_ok_and(|v| v == "1") {
        std::fs::write(&path, rendered).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with UPDATE_GOLDEN=1 to create it",
            path.display()
        )
    });
    if expected != rendered {
        let line = expected
            .lines()
            .zip(rendered.lines())
            .position(|(a, b)| a != b)
            .map_or_else(
                || expected.lines().count().min(rendered.lines().count()) + 1,
                |i| i + 1,
            );
        panic!(
            "{name} differs from its golden file at line {line}:\n  golden:   {:?}\n  rendered: {:?}\nIf the change is intended, run with UPDATE_GOLDEN=1.",
            expected.lines().nth(line - 1),
            rendered.lines().nth(line - 1)
        );
    }
}

#[test]
fn rendered_files_match_their_golden_files() {
    common::with_site(true, |site| {
        check("prosody.cfg.lua", &render::prosody_cfg(site));
        check("meet.jitsi.cfg.lua", &render::prosody_site(site));
        check("jicofo.conf", &render::jicofo_conf(site));
        check("jvb.conf", &render::jvb_conf(site));
        check("meet.example.org-config.js", &render::config_js(site));
        check("nginx-meetbox.conf", &render::nginx_site(site));
        check("turnserver.conf", &render::turnserver_conf(site));
        check(
            "nginx-multiplex.conf",
            &render::nginx_multiplex(site.domain),
        );
    });
}

#[test]
fn without_jitsi_packages_prosody_uses_only_its_own_modules() {
    common::with_site(false, |site| {
        check(
            "meet.jitsi.cfg.lua.without-jitsi",
            &render::prosody_site(site),
        );
        check("prosody.cfg.lua.without-jitsi", &render::prosody_cfg(site));
    });
}

#[test]
fn without_nat_there_is_no_static_mapping() {
    let network = meetbox_firstboot::render::NetworkFacts {
        lan_address: Some("192.168.1.20".parse().unwrap()),
        public_address: None,
        global_ipv6: None,
    };
    common::with_site_on(&network, true, |site| {
        let jvb = render::jvb_conf(site);
        assert!(!jvb.contains("static-mappings"), "{jvb}");
        let turn = render::turnserver_conf(site);
        assert!(!turn.contains("external-ip"));
        assert!(turn.contains("allowed-peer-ip=192.168.1.20"));
    });
}

#[test]
fn a_box_with_global_ipv6_relays_there_too() {
    let network = meetbox_firstboot::render::NetworkFacts {
        global_ipv6: Some("2a01:4f8:1:2::20".parse().unwrap()),
        ..common::sample_network()
    };
    let turn = common::with_site_on(&network, true, render::turnserver_conf);
    assert!(turn.contains("relay-ip=192.168.1.20\n"), "{turn}");
    assert!(turn.contains("relay-ip=2a01:4f8:1:2::20\n"), "{turn}");
    // IPv6 has no NAT: the public IPv4 mapping stays the only one.
    assert!(
        turn.contains("external-ip=198.51.99.10/192.168.1.20\n"),
        "{turn}"
    );
}

#[test]
fn privacy_and_hardening_properties_hold() {
    common::with_site(true, check_privacy_and_hardening);
}

fn check_privacy_and_hardening(site: &Site) {
    let all: String = render::all(site)
        .iter()
        .map(|f| String::from_utf8_lossy(&f.content).to_string())
        .collect();
    for third_party in ["jitsi.net", "jit.si", "google", "gravatar.com", "8x8"] {
        assert!(
            !all.contains(third_party),
            "a rendered file names {third_party}"
        );
    }
    let nginx = render::nginx_site(site);
    // The add_header pitfall: headers only at server level, none inside a location block.
    let mut depth = 0;
    for line in nginx.lines() {
        let trimmed = line.trim();
        if depth >= 2 {
            assert!(
                !trimmed.starts_with("add_header"),
                "add_header inside a location: {line}"
            );
        }
        depth += trimmed.matches('{').count();
        depth -= trimmed.matches('}').count();
    }
    assert!(nginx.contains("access_log off;"));
    assert!(nginx.contains("server_tokens off;"));
    let files = render::all(site);
    let jicofo = files
        .iter()
        .find(|f| f.path.ends_with("jicofo.conf"))
        .unwrap();
    assert_eq!(jicofo.mode, 0o640, "jicofo.conf holds a password");
    // A domain change snapshots exactly what rendering writes.
    let written: Vec<String> = files.iter().map(|f| f.path.clone()).collect();
    assert_eq!(written, render::paths(site.domain));
}
