//! Integration: the third-party apt repository path Jitsi Meet takes into the image,
//! against a local signed repository on 127.0.0.1 (a real package, a throwaway key,
//! real apt-ftparchive, gpg, python3's HTTP server and mmdebstrap):
//! - a keyring that does not match the pin stops the build before mmdebstrap runs;
//! - the right keyring installs the package, with the keyring, source line and
//!   debconf answers in the image;
//! - a tampered `InRelease` stops the install before anything from the repository
//!   is installed.
//!
//! Needs root (mmdebstrap) and the host packages tests/run installs. Outside CI a
//! missing prerequisite skips with the reason; with CI=true it fails.

mod support;

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use meetbox::jitsi::{self, Repository, RootfsInputs};
use meetbox::keyring;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../tests/apt-repo/meetbox-probe"
);
/// Kept between local runs so only the first downloads the base packages.
const DEB_CACHE: &str = concat!(env!("CARGO_TARGET_TMPDIR"), "/jitsi-apt-repo-debs");

/// Tools the test runs, with the packages that provide them.
const TOOLS: &[(&str, &str)] = &[
    ("mmdebstrap", "mmdebstrap"),
    ("gpg", "gnupg"),
    ("apt-ftparchive", "apt-utils"),
    ("dpkg-deb", "dpkg"),
    ("python3", "python3"),
];

/// Runs a command that must succeed; its output on failure names the cause.
fn run(command: &mut Command) -> Output {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A signed flat repository (`stable/`) holding the probe package.
struct LocalRepository {
    root: PathBuf,
    keyring: Vec<u8>,
    fingerprint: String,
}

impl LocalRepository {
    fn create(work: &Path) -> LocalRepository {
        let root = work.join("repo");
        let stable = root.join("stable");
        fs::create_dir_all(&stable).unwrap();
        run(Command::new("dpkg-deb")
            .args(["--root-owner-group", "--build", FIXTURE])
            .arg(stable.join("meetbox-probe_1.0_all.deb")));
        // Filenames in Packages are relative to the repository root.
        let packages = run(Command::new("apt-ftparchive")
            .args(["packages", "stable"])
            .current_dir(&root));
        fs::write(stable.join("Packages"), packages.stdout).unwrap();
        let release = run(Command::new("apt-ftparchive")
            .args(["release", "."])
            .current_dir(&stable));
        fs::write(stable.join("Release"), release.stdout).unwrap();

        let gnupg = work.join("gnupg");
        fs::create_dir(&gnupg).unwrap();
        fs::set_permissions(&gnupg, fs::Permissions::from_mode(0o700)).unwrap();
        let gpg = |args: &[&str]| {
            run(Command::new("gpg")
                .env("GNUPGHOME", &gnupg)
                .args(["--batch", "--quiet"])
                .args(args))
        };
        gpg(&[
            "--passphrase",
            "",
            "--quick-gen-key",
            "Meetbox apt test <apt-test@meetbox.invalid>",
            "ed25519",
            "sign",
            "never",
        ]);
        let keyring = gpg(&["--export"]).stdout;
        let listing = String::from_utf8(gpg(&["--with-colons", "--list-keys"]).stdout).unwrap();
        let fingerprint = listing
            .lines()
            .find_map(|line| line.strip_prefix("fpr:"))
            .map(|rest| rest.trim_matches(':').to_string())
            .expect("gpg lists the new key's fingerprint");
        let in_release = stable.join("InRelease");
        run(Command::new("gpg")
            .env("GNUPGHOME", &gnupg)
            .args(["--batch", "--quiet", "--clearsign", "--output"])
            .arg(&in_release)
            .arg(stable.join("Release")));
        LocalRepository {
            root,
            keyring,
            fingerprint,
        }
    }

    /// Alters the signed text of `InRelease` after signing, as a mirror or a
    /// man in the middle would.
    fn tamper(&self) {
        let path = self.root.join("stable/InRelease");
        let text = fs::read_to_string(&path).unwrap();
        let tampered = text.replacen(
            "SHA256:\n",
            "SHA256:\n 0000000000000000000000000000000000000000000000000000000000000000 1 Extra\n",
            1,
        );
        assert_ne!(text, tampered, "InRelease has no SHA256 section:\n{text}");
        fs::write(&path, tampered).unwrap();
    }
}

/// python3's HTTP server on a free loopback port, stopped on drop.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(directory: &Path) -> Server {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(directory)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("cannot start python3 -m http.server");
        let server = Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        let release = format!("{}/stable/Release", server.url);
        while jitsi::check_reachable(&release, Duration::from_secs(2)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the local HTTP server did not start"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        server
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
        .args(inputs.mmdebstrap_args())
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

#[test]
fn pinned_keyring_installs_and_bad_key_or_tampered_index_install_nothing() {
    if !support::can_run(
        "jitsi apt repository",
        support::root_and_tools_missing("mmdebstrap builds", TOOLS),
    ) {
        return;
    }
    let work = tempfile::tempdir().unwrap();
    let local = LocalRepository::create(work.path());
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
    assert!(probe_installed(&target), "meetbox-probe is not installed");
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
    for secret in &secrets {
        assert!(
            secret.len() == 64 && secret.chars().all(|c| c.is_ascii_hexdigit()),
            "a preseeded secret is not 256 random bits in hex"
        );
    }
    assert!(
        secrets[0] != secrets[1] && secrets[1] != secrets[2],
        "secrets repeat"
    );

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
