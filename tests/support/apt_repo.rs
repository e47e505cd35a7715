//! A signed flat apt repository (`stable/`, the layout of Jitsi's repository) made with the real
//! tools (apt-ftparchive, gpg with a throwaway key made for the run), served by python3's HTTP
//! server on 127.0.0.1. Packages can be published into it again, as a repository does for a new
//! release.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Tools the repository needs, with the packages that provide them.
pub const TOOLS: &[(&str, &str)] = &[
    ("gpg", "gnupg"),
    ("apt-ftparchive", "apt-utils"),
    ("dpkg-deb", "dpkg"),
    ("python3", "python3"),
];

/// The `Origin` and `Label` of the repository's `Release` file.
pub const ORIGIN: &str = "Meetbox tests";
pub const LABEL: &str = "Local mirror";

/// Runs a command that must succeed; its output on failure names the cause.
pub fn run(command: &mut Command) -> Output {
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

/// A signed flat repository under `root/stable/`.
pub struct LocalRepository {
    pub root: PathBuf,
    /// The binary keyring of the repository's signing key.
    pub keyring: Vec<u8>,
    pub fingerprint: String,
    gnupg: PathBuf,
}

impl LocalRepository {
    /// An empty repository with a new signing key, in `work`.
    pub fn create(work: &Path) -> LocalRepository {
        let root = work.join("repo");
        fs::create_dir_all(root.join("stable")).unwrap();
        let gnupg = work.join("gnupg");
        fs::create_dir_all(&gnupg).unwrap();
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
        LocalRepository {
            root,
            keyring,
            fingerprint,
            gnupg,
        }
    }

    /// The keyring written to a file (for `meetbox build --jitsi-keyring`).
    pub fn keyring_file(&self) -> PathBuf {
        let path = self.root.with_file_name("repository-key.gpg");
        fs::write(&path, &self.keyring).unwrap();
        path
    }

    /// Copies `debs` into the repository (next to what it holds) and signs a new index.
    pub fn publish(&self, debs: &[PathBuf]) {
        let stable = self.root.join("stable");
        for deb in debs {
            fs::copy(deb, stable.join(deb.file_name().unwrap())).unwrap();
        }
        // Filenames in Packages are relative to the repository root.
        let packages = run(Command::new("apt-ftparchive")
            .args(["packages", "stable"])
            .current_dir(&self.root));
        fs::write(stable.join("Packages"), packages.stdout).unwrap();
        let _ = fs::remove_file(stable.join("Release"));
        // Origin and Label, as Jitsi's repository names itself: unattended-upgrades selects the
        // repository by them, wherever it is served from.
        let release = run(Command::new("apt-ftparchive")
            .args([
                "-o",
                &format!("APT::FTPArchive::Release::Origin={ORIGIN}"),
                "-o",
                &format!("APT::FTPArchive::Release::Label={LABEL}"),
                "release",
                ".",
            ])
            .current_dir(&stable));
        fs::write(stable.join("Release"), release.stdout).unwrap();
        let in_release = stable.join("InRelease");
        let _ = fs::remove_file(&in_release);
        run(Command::new("gpg")
            .env("GNUPGHOME", &self.gnupg)
            .args(["--batch", "--quiet", "--clearsign", "--output"])
            .arg(&in_release)
            .arg(stable.join("Release")));
    }

    /// Alters the signed text of `InRelease` after signing, as a mirror or a man in the middle
    /// would.
    pub fn tamper(&self) {
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
pub struct Server {
    child: Child,
    pub port: u16,
    pub url: String,
}

impl Server {
    pub fn start(directory: &Path) -> Server {
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
            port,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
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
