//! The one build every boot shares and the guests booted from it: a fresh disk from the image,
//! the forwarded ports, a VM with its serial console on a socket (powered off on drop), and the
//! bounded waits and logins the tests share.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use meetbox::vm::qemu::{self, Accel, Vm, VmSpec};
use serde_json::Value;

use crate::console::SerialConsole;
use crate::pebble::free_port;
use crate::xmpp::{Credentials, Https, Session};
use crate::{jitsi, support, MEETBOX, PROMPT};

/// The appliance tests' files: the image they build, its Jitsi repository, the disks. tests/run
/// runs the unattended test in one process and the other appliance tests in a second one beside
/// it; `MEETBOX_APPLIANCE_LANE` gives the second a folder of its own.
pub(crate) fn work_dir() -> PathBuf {
    let folder = match std::env::var(APPLIANCE_LANE) {
        Ok(lane) if !lane.is_empty() => format!("appliance-tests-{lane}"),
        _ => "appliance-tests".to_string(),
    };
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(folder);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Names the folder of a second appliance test process (see [`work_dir`]).
const APPLIANCE_LANE: &str = "MEETBOX_APPLIANCE_LANE";

/// Boots take both cores: one VM at a time.
pub(crate) fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub(crate) struct Built {
    pub(crate) image: PathBuf,
    pub(crate) manifest: Value,
    /// Where the image's Jitsi came from; the unattended box upgrades from it.
    pub(crate) jitsi: jitsi::JitsiRepository,
}

/// One build for every boot: the `test` profile with Jitsi on, its packages from the local
/// repository of package-shaped Jitsi debs (jitsi.rs). The root file system cache is the one of
/// tests/image.rs.
pub(crate) fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        let work = work_dir();
        let key = work.join("test-signing.key");
        if !key.exists() {
            meetbox_ok(&[
                "keygen",
                "--out",
                work.join("test-signing").to_str().unwrap(),
                "--unencrypted",
            ]);
        }
        let out = work.join("ubuntu");
        let _ = fs::remove_dir_all(&out);
        let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("image-tests/cache");
        let started = Instant::now();
        let jitsi = jitsi::JitsiRepository::create(&work.join("jitsi-repo"));
        let server = jitsi.serve();
        let mut args = support::test_build_args("ubuntu-24.04", &out, &key, &cache);
        let profile = args.iter().position(|a| a == "--profile").unwrap() + 1;
        args[profile] = support::jitsi_packages::profile_with_jitsi(&work)
            .to_str()
            .unwrap()
            .to_string();
        args.extend(jitsi.build_args(&server));
        meetbox_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        drop(server);
        eprintln!("build: {:.0} s", started.elapsed().as_secs_f64());
        let name = "meetbox-test-jitsi-ubuntu-24.04";
        let manifest = fs::read(out.join(format!("{name}.manifest.json"))).unwrap();
        Built {
            image: out.join(format!("{name}.img.zst")),
            manifest: serde_json::from_slice(&manifest).unwrap(),
            jitsi,
        }
    })
}

pub(crate) fn meetbox_ok(args: &[&str]) {
    let output = Command::new(MEETBOX).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "meetbox {} failed:\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A fresh virtual disk from the image, as after flashing onto a disk of `size` bytes (0: the
/// image's own size).
pub(crate) fn fresh_disk(name: &str, size: u64) -> PathBuf {
    let disk = work_dir().join(format!("{name}.img"));
    qemu::decompress_sparse(&built().image, &disk, size).unwrap();
    disk
}

/// Host ports on 127.0.0.1 forwarded to the guest.
#[derive(Clone, Copy)]
pub(crate) struct Ports {
    pub(crate) http: u16,
    pub(crate) https: u16,
    pub(crate) turn_udp: u16,
    pub(crate) ssh: u16,
    /// The web admin's port.
    pub(crate) admin: u16,
}

impl Ports {
    pub(crate) fn new() -> Ports {
        Ports {
            http: free_port(),
            https: free_port(),
            turn_udp: free_port(),
            ssh: free_port(),
            admin: free_port(),
        }
    }
}

/// A running guest, its serial console on a socket (and logged), powered off on drop.
pub(crate) struct Guest {
    pub(crate) vm: Vm,
    pub(crate) console: SerialConsole,
    pub(crate) started: Instant,
    pub(crate) _sockets: tempfile::TempDir,
}

impl Guest {
    /// Boots `disk`; with `tap`, the guest also gets a card on that tap device (audit.rs); with
    /// `capture`, its user network is recorded in that pcap file (contacts.rs).
    pub(crate) fn boot(
        disk: &Path,
        name: &str,
        ports: Ports,
        tap: Option<&str>,
        capture: Option<PathBuf>,
    ) -> Guest {
        Guest::boot_with(disk, name, ports, |spec| {
            spec.tap = tap.map(str::to_string);
            spec.capture = capture;
        })
    }

    /// Boots `stick` as a removable USB stick, with `internal` disks (path, serial) beside it.
    pub(crate) fn boot_from_stick(
        stick: &Path,
        internal: &[(PathBuf, String)],
        name: &str,
        ports: Ports,
    ) -> Guest {
        Guest::boot_with(stick, name, ports, |spec| {
            spec.disk_as_usb_stick = true;
            spec.internal_disks = internal.to_vec();
        })
    }

    pub(crate) fn boot_with(
        disk: &Path,
        name: &str,
        ports: Ports,
        customize: impl FnOnce(&mut VmSpec),
    ) -> Guest {
        // Unix socket paths are short (108 bytes): keep them out of the target directory.
        let sockets = tempfile::tempdir().unwrap();
        let vars = work_dir().join(format!("{name}-vars.fd"));
        qemu::fresh_vars(&vars).unwrap();
        let mut spec = VmSpec {
            disk: disk.to_path_buf(),
            disk_as_usb_stick: false,
            internal_disks: Vec::new(),
            data_sticks: Vec::new(),
            vars,
            memory_mb: 2048,
            cpus: 2,
            accel: qemu::resolve_accel(Accel::Auto),
            forwards: vec![
                (ports.http, 80),
                (ports.https, 443),
                (ports.ssh, 22),
                (ports.admin, meetbox_firstboot::layout::ADMIN_PORT),
            ],
            udp_forwards: vec![(ports.turn_udp, 3478)],
            serial_log: Some(work_dir().join(format!("{name}-serial.log"))),
            serial_socket: Some(sockets.path().join("serial.sock")),
            qmp_socket: Some(sockets.path().join("qmp.sock")),
            tap: None,
            capture: None,
        };
        customize(&mut spec);
        eprintln!("boot {name}: {}", spec.args().join(" "));
        let socket = spec.serial_socket.clone().unwrap();
        let qmp_socket = spec.qmp_socket.clone();
        let vm = Vm::start(spec, false).unwrap();
        let console = SerialConsole::connect(&socket, qmp_socket.as_deref());
        Guest {
            vm,
            console,
            started: Instant::now(),
            _sockets: sockets,
        }
    }

    /// Waits until the VGA console (tty1) shows every one of `texts`, read from a QEMU screen
    /// dump with OCR (tesseract); the picture stays as `NAME.png` in the work directory.
    pub(crate) fn tty1_shows(&self, name: &str, texts: &[&str]) {
        let png = work_dir().join(format!("{name}.png"));
        let normalize = |text: &str| text.split_whitespace().collect::<Vec<_>>().join(" ");
        let started = Instant::now();
        loop {
            self.vm.screendump(&png).unwrap();
            let output = Command::new("tesseract")
                .arg(&png)
                .arg("stdout")
                .output()
                .unwrap();
            let seen = normalize(&String::from_utf8_lossy(&output.stdout));
            if texts.iter().all(|text| seen.contains(text)) {
                eprintln!("tty1 ({name}.png): {texts:?} read by OCR");
                return;
            }
            assert!(
                started.elapsed() < PROMPT,
                "tty1 does not show {texts:?} after {} s; OCR of {} read:\n{seen}",
                PROMPT.as_secs(),
                png.display()
            );
            std::thread::sleep(Duration::from_secs(3));
        }
    }

    pub(crate) fn elapsed(&self) -> String {
        format!("{:.0} s", self.started.elapsed().as_secs_f64())
    }

    /// A clean power-off, so the disk can be read afterwards. systemd-shutdown
    /// waits up to 90 s for a stuck udev worker (seen under software emulation), so
    /// allow for that.
    pub(crate) fn power_off(mut self) {
        let clean = self.vm.power_off(Duration::from_secs(300)).unwrap();
        assert!(clean, "the guest did not power off within 300 s");
    }
}

/// Retries `attempt` until it succeeds or `timeout` passes (services start after the console).
pub(crate) fn retry<T>(
    what: &str,
    timeout: Duration,
    mut attempt: impl FnMut() -> Result<T, String>,
) -> T {
    let started = Instant::now();
    loop {
        match attempt() {
            Ok(value) => return value,
            Err(err) if started.elapsed() < timeout => {
                eprintln!("{what}: not yet ({})", err.lines().next().unwrap_or(""));
                std::thread::sleep(Duration::from_secs(5));
            }
            Err(err) => panic!("{what}: still failing after {} s: {err}", timeout.as_secs()),
        }
    }
}

/// Logs `user` in on `host` with PLAIN and binds; Err with prosody's answer.
pub(crate) fn login(
    https: &Https,
    host: &str,
    user: &str,
    password: &str,
) -> Result<String, String> {
    let mut session = Session::open(https, host)?;
    session.authenticate(Credentials::Plain { user, password })?;
    session.bind()
}
