//! Tests of `rootfs/jitsi.rs`.

use super::*;
use std::io::Read;
use std::net::TcpListener;
use std::time::Instant;

fn repository(url: &str) -> Repository {
    Repository {
        url: url.to_owned(),
        suite: SUITE.to_owned(),
        keyring: Vec::new(),
        fingerprint: FINGERPRINT.to_owned(),
        packages: PACKAGES.iter().map(|p| p.to_string()).collect(),
    }
}

#[test]
fn preseed_answers_every_question_without_weak_secrets() {
    let text = preseed(
        INTERNAL_DOMAIN,
        &Secrets {
            videobridge: "a".repeat(64).as_str(),
            jicofo: "b",
            turn: "c",
        },
    );
    assert!(
        text.contains("jitsi-videobridge/jvb-hostname string meet.jitsi\n"),
        "{text}"
    );
    assert!(text.contains("jitsi-meet/cert-choice select Generate a new self-signed certificate\n"));
    assert!(text.contains("jitsi-meet/jaas-choice boolean false\n"));
    assert!(text.contains("jitsi-meet/email string\n"));
    assert!(text.contains(&format!(
        "jitsi-videobridge/jvbsecret password {}\n",
        "a".repeat(64)
    )));
    // Every line parses as debconf-set-selections input: owner, question, type[, value].
    for line in text.lines() {
        assert!(line.split_whitespace().count() >= 3, "{line}");
    }
}

#[test]
fn preseed_hook_draws_secrets_at_build_time_and_holds_none() {
    let hook = preseed_hook(INTERNAL_DOMAIN).unwrap();
    assert_eq!(hook.matches("$(meetbox_secret)").count(), 3, "{hook}");
    // The hook is the same on every call: it can enter a cache key.
    assert_eq!(hook, preseed_hook(INTERNAL_DOMAIN).unwrap());
    assert!(preseed_hook("meet.jitsi; rm -rf /").is_err());
}

#[test]
fn the_generated_secret_is_long_and_random() {
    let script = "meetbox_secret() { head -c 32 /dev/urandom | od -An -vtx1 | tr -d ' \\n'; }\n\
                  meetbox_secret; echo; meetbox_secret";
    assert!(preseed_hook(INTERNAL_DOMAIN)
        .unwrap()
        .contains(script.lines().next().unwrap()));
    let output = std::process::Command::new("sh")
        .args(["-c", script])
        .output()
        .unwrap();
    let text = String::from_utf8(output.stdout).unwrap();
    let secrets: Vec<&str> = text.lines().collect();
    assert_eq!(secrets.len(), 2);
    for secret in &secrets {
        assert_eq!(secret.len(), 64, "{secret}");
        assert!(secret.chars().all(|c| c.is_ascii_hexdigit()));
    }
    assert_ne!(secrets[0], secrets[1]);
}

#[test]
fn source_line_and_release_url_follow_the_flat_layout() {
    let jitsi = repository(REPOSITORY_URL);
    assert_eq!(
        jitsi.source_line(),
        "deb [signed-by=/usr/share/keyrings/meetbox-jitsi.gpg] https://download.jitsi.org stable/"
    );
    assert_eq!(
        jitsi.release_url(),
        "https://download.jitsi.org/stable/Release"
    );
    assert!(repository("https://example.invalid/a b")
        .validate()
        .is_err());
    assert!(repository("ftp://example.invalid").validate().is_err());
}

#[test]
fn the_kept_jitsi_keyring_matches_its_pin() {
    let kept = Path::new(env!("CARGO_MANIFEST_DIR")).join(KEYRING_FILE);
    if !kept.is_file() {
        // Builds then fetch the key and check the same pin (see `download_key`).
        eprintln!("skipping: no copy of Jitsi's key at {}", kept.display());
        return;
    }
    let repository = Repository::jitsi(&Source::default()).unwrap();
    assert_eq!(repository.url, REPOSITORY_URL);
    check_keyring(&repository).unwrap();
}

#[test]
fn a_given_keyring_is_dearmoured_and_checked_against_the_pin() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wrong.asc");
    let armoured = format!(
        "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n{}\n-----END PGP PUBLIC KEY BLOCK-----\n",
        base64::engine::general_purpose::STANDARD
            .encode(include_bytes!("../../keys/ubuntu-archive.gpg"))
    );
    std::fs::write(&path, armoured).unwrap();
    let repository = Repository::jitsi(&Source {
        keyring: Some(path),
        ..Source::default()
    })
    .unwrap();
    assert_eq!(
        repository.keyring,
        include_bytes!("../../keys/ubuntu-archive.gpg")
    );
    // The message names the pinned key and the one found.
    let error = format!("{:#}", check_keyring(&repository).unwrap_err());
    assert!(
        error.contains("pinned: FFD65A0DA2BEBDEB73D44C8BB4D2D216F1FD7806")
            && error.contains("found:  F6ECB3762474EDA9D21B7022871920D1991BC93C"),
        "{error}"
    );
}

#[test]
fn upgrades_follow_the_repository_s_own_origin_or_its_host() {
    let release = "Origin: Jitsi\nLabel: Jitsi Meet\nSuite: stable\n\nMD5Sum:\n Origin: x\n";
    assert_eq!(
        upgrade_origin(release, "http://mirror.lan/jitsi"),
        "origin=Jitsi,label=Jitsi Meet"
    );
    assert_eq!(
        upgrade_origin("Origin: Jitsi\nDate: x\n", "http://a"),
        "origin=Jitsi"
    );
    // No origin, or one that would break the pattern: the host.
    assert_eq!(
        upgrade_origin("Date: x\n", "https://download.jitsi.org"),
        "site=download.jitsi.org"
    );
    assert_eq!(
        upgrade_origin("Origin: a,b\n", "http://127.0.0.1:8080/x"),
        "site=127.0.0.1"
    );
}

#[test]
fn a_mirror_keeps_the_pin_unless_it_brings_its_own_key() {
    let mirror = Repository::jitsi(&Source {
        url: Some("http://mirror.lan/jitsi/".into()),
        ..Source::default()
    })
    .unwrap();
    assert_eq!(mirror.url, "http://mirror.lan/jitsi");
    assert_eq!(mirror.fingerprint, FINGERPRINT);
    assert_eq!(
        mirror.source_line(),
        "deb [signed-by=/usr/share/keyrings/meetbox-jitsi.gpg] http://mirror.lan/jitsi stable/"
    );
    let error = Repository::jitsi(&Source {
        fingerprint: Some("AAAA".into()),
        ..Source::default()
    })
    .unwrap_err()
    .to_string();
    assert!(error.contains("--jitsi-keyring"), "{error}");
}

#[test]
fn a_silent_server_is_given_up_on_within_the_bound() {
    // Accepts the connection, never answers.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/stable/Release", listener.local_addr().unwrap());
    let holder = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut buffer = [0; 1024];
        let _ = stream.read(&mut buffer);
        std::thread::sleep(Duration::from_secs(4));
    });
    let started = Instant::now();
    let error = check_reachable(&url, Duration::from_secs(2))
        .unwrap_err()
        .to_string();
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(4), "took {elapsed:?}");
    assert!(
        error.contains("cannot be reached") && error.contains(&url),
        "{error}"
    );
    holder.join().unwrap();
}

#[test]
fn an_unresolvable_repository_stops_the_build_quickly() {
    let started = Instant::now();
    let mut jitsi = repository("https://download.jitsi.invalid");
    jitsi.keyring = b"not a keyring".to_vec();
    // The keyring is checked first.
    let error = format!(
        "{:#}",
        prepare(&jitsi, INTERNAL_DOMAIN, Duration::from_secs(5)).unwrap_err()
    );
    assert!(error.contains("not an OpenPGP keyring"), "{error}");
    let error = check_reachable(&jitsi.release_url(), REACHABILITY_TIMEOUT)
        .unwrap_err()
        .to_string();
    assert!(error.contains("cannot be reached"), "{error}");
    assert!(started.elapsed() < Duration::from_secs(60));
}
