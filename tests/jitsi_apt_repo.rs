//! Integration: the third-party apt repository path Jitsi Meet takes into the image,
//! against a local signed repository on 127.0.0.1 (a real package, a throwaway key,
//! real apt-ftparchive, gpg, python3's HTTP server and mmdebstrap):
//! - a keyring that does not match the pin stops the build before mmdebstrap runs;
//! - the right keyring installs the package, with the keyring, source line and
//!   debconf answers in the image, and without the build's secrets;
//! - a tampered `InRelease` stops the install before anything from the repository
//!   is installed.
//!
//! Needs root (mmdebstrap) and the host packages tests/run installs. Outside CI a
//! missing prerequisite skips with the reason; with CI=true it fails.

mod support;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use meetbox::rootfs::jitsi::{self, Repository, RootfsInputs};
use meetbox::rootfs::keyring;
use support::apt_repo::{run, LocalRepository, Server};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/apt-repo/meetbox-probe"
);
/// Kept between local runs so only the first downloads the base packages.
const DEB_CACHE: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/jitsi-apt-repo-debs");

/// Tools the test runs (besides the repository's), with the packages that provide them.
const TOOLS: &[(&str, &str)] = &[("mmdebstrap", "mmdebstrap")];

/// The build path under test: the checks of `jitsi::prepare`, then a real
/// mmdebstrap run with its hooks (Debian 12, the smallest variant with apt and
/// debconf). Returns mmdebstrap's output, or the error that stopped the build
/// before mmdebstrap ran.
fn build(repository: &Repository, target: &Path) -> anyhow::Result<Output> {
    let inputs: RootfsInputs =
        jitsi::prepare(repository, jitsi::INTERNAL_DOMAIN, Duration::from_secs(10))?;
    fs::create_dir_all(DEB_CACHE)?;
    let output = Command::new("mmdebstrap")
        .args([
            "--mode=root",
            "--variant=apt",
            "--include=debconf",
            "--skip=essential/unlink",
            "--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives/",
            &format!("--setup-hook=sync-in {DEB_CACHE} /var/cache/apt/archives/"),
        ])
        // The hooks exactly as the build passes them (`Recipe::mmdebstrap_args`).
        .args(meetbox::rootfs::customize_hook_args(
            &inputs.customize_hooks,
        ))
        .arg(format!(
            "--customize-hook=sync-out /var/cache/apt/archives {DEB_CACHE}"
        ))
        .arg("bookworm")
        .arg(target)
        .stdin(Stdio::null())
        .output()?;
    Ok(output)
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

fn probe_installed(root: &Path) -> bool {
    fs::read_to_string(root.join("var/lib/dpkg/status")).is_ok_and(|status| {
        status.split("\n\n").any(|stanza| {
            stanza.lines().any(|l| l == "Package: meetbox-probe")
                && stanza.lines().any(|l| l == "Status: install ok installed")
        })
    })
}

/// The value debconf stored for `question` in one of its database files.
fn debconf_value(database: &Path, question: &str) -> Option<String> {
    let text = fs::read_to_string(database).ok()?;
    let stanza = text
        .split("\n\n")
        .find(|stanza| stanza.lines().any(|l| l == format!("Name: {question}")))?;
    stanza
        .lines()
        .find_map(|l| l.strip_prefix("Value: ").map(str::to_string))
}

/// The probe package is installed, with the repository's keyring, source line and debconf
/// answers in the image, and none of the build's secrets.
fn check_installed_with_its_keyring_source_and_answers(
    target: &Path,
    repository: &Repository,
    local: &LocalRepository,
) {
    assert!(probe_installed(target), "meetbox-probe is not installed");
    assert!(target.join("usr/share/meetbox-probe/README").is_file());
    let image_keyring =
        fs::read(target.join(jitsi::KEYRING_IN_IMAGE.trim_start_matches('/'))).unwrap();
    assert_eq!(
        keyring::fingerprints(&image_keyring).unwrap(),
        std::slice::from_ref(&local.fingerprint)
    );
    let sources =
        fs::read_to_string(target.join(jitsi::SOURCES_IN_IMAGE.trim_start_matches('/'))).unwrap();
    assert_eq!(sources.trim_end(), repository.source_line());
    let debconf = target.join("var/cache/debconf");
    assert_eq!(
        debconf_value(
            &debconf.join("config.dat"),
            "jitsi-videobridge/jvb-hostname"
        )
        .as_deref(),
        Some(jitsi::INTERNAL_DOMAIN)
    );
    assert_eq!(
        debconf_value(&debconf.join("config.dat"), "jitsi-meet/jaas-choice").as_deref(),
        Some("false")
    );
    let passwords = debconf.join("passwords.dat");
    assert_eq!(
        fs::metadata(&passwords).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let secrets: Vec<String> = [
        "jitsi-videobridge/jvbsecret",
        "jicofo/jicofo-authpassword",
        "jitsi-meet-prosody/turn-secret",
    ]
    .iter()
    .map(|question| debconf_value(&passwords, question).unwrap_or_default())
    .collect();
    // The build's secrets served the install (the preseed draws them: unit-tested in jitsi.rs) and
    // are gone from the image: every box gets its own at first boot.
    assert_eq!(
        secrets,
        ["", "", ""],
        "the build's secrets stayed in the image's debconf database"
    );
}

#[test]
fn pinned_keyring_installs_and_bad_key_or_tampered_index_install_nothing() {
    let tools = [TOOLS, support::apt_repo::TOOLS].concat();
    if !support::can_run(
        "jitsi apt repository",
        support::root_and_tools_missing("mmdebstrap builds", &tools),
    ) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let local = LocalRepository::create(work.path());
    let probe = work.path().join("meetbox-probe_1.0_all.deb");
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build", FIXTURE])
        .arg(&probe));
    local.publish(&[probe]);
    let server = Server::start(&local.root);
    let repository = Repository {
        url: server.url.clone(),
        suite: "stable/".into(),
        keyring: local.keyring.clone(),
        fingerprint: local.fingerprint.clone(),
        packages: vec!["meetbox-probe".into()],
    };

    // A keyring that is not the pinned one: nothing runs.
    let started = Instant::now();
    let wrong_pin = Repository {
        fingerprint: jitsi::FINGERPRINT.into(),
        ..repository.clone()
    };
    let target = work.path().join("wrong-pin");
    let error = format!("{:#}", build(&wrong_pin, &target).unwrap_err());
    assert!(
        error.contains("does not match the pinned fingerprint"),
        "{error}"
    );
    assert!(!target.exists(), "mmdebstrap ran despite the pin mismatch");
    eprintln!(
        "wrong pin stopped the build in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The pinned keyring: the package is installed, with the repository's keyring,
    // source line and the debconf answers in the image.
    let started = Instant::now();
    let target = work.path().join("pinned");
    let output = build(&repository, &target).unwrap();
    assert!(
        output.status.success(),
        "mmdebstrap failed:\n{}",
        text(&output)
    );
    eprintln!(
        "pinned keyring: mmdebstrap took {:.1} s",
        started.elapsed().as_secs_f64()
    );
    check_installed_with_its_keyring_source_and_answers(&target, &repository, &local);

    // A tampered index: apt refuses it and nothing from the repository is installed.
    local.tamper();
    let started = Instant::now();
    let target = work.path().join("tampered");
    let output = build(&repository, &target).unwrap();
    eprintln!(
        "tampered index: mmdebstrap stopped after {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let log = text(&output);
    assert!(
        !output.status.success(),
        "mmdebstrap accepted a tampered InRelease:\n{log}"
    );
    assert!(
        log.contains("signatures were invalid") || log.contains("BADSIG"),
        "the failure is not a signature error:\n{log}"
    );
    assert!(
        !probe_installed(&target),
        "meetbox-probe was installed from a tampered repository"
    );
    drop(server);
}

/// `meetbox build` with a keyring that is not Jitsi's stops before it builds anything, and names
/// the pinned and the found key. (The default profile installs Jitsi; nothing needs root here.)
#[test]
fn meetbox_build_refuses_another_key_before_building_anything() {
    let work = tempfile::tempdir().unwrap();
    let wrong = Path::new(env!("CARGO_MANIFEST_DIR")).join("keys/ubuntu-archive.gpg");
    let out = work.path().join("out");
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_meetbox"))
        .args(["build", "--jitsi-keyring"])
        .arg(&wrong)
        .arg("--out")
        .arg(&out)
        .arg("--cache-dir")
        .arg(work.path().join("cache"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tools_missing = (stderr.contains("host tools are missing")
        || stderr.contains("missing host tools"))
    .then(|| format!("the build's host tools are missing: {stderr}"));
    if !support::can_run("meetbox build with another key", tools_missing) {
        return;
    }
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("does not match the pinned fingerprint")
            && stderr.contains(&keyring::normalize(jitsi::FINGERPRINT))
            && stderr.contains("F6ECB3762474EDA9D21B7022871920D1991BC93C"),
        "the refusal does not name both keys:\n{stderr}"
    );
    assert!(
        !stderr.contains("cargo build") && !out.join("meetbox-ubuntu-24.04.img.zst").exists(),
        "something was built:\n{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(60));
}
