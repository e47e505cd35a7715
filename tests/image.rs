//! Integration: build the `test` profile on Ubuntu 24.04 and Debian 12 with the
//! real tools, check the artifacts with the reference tools (minisign, sha256sum,
//! bmaptool), check reproducibility, and boot each image under OVMF Secure Boot
//! on a virtual disk larger than the image: the Ubuntu image as `meetbox run`
//! prepares it, in a real terminal whose screen must show the first-boot banner
//! cleanly (image/terminal.rs), the Debian image after `meetbox flash` wrote it
//! to a larger file.
//!
//! Needs root and the host packages that tests/run installs. Outside CI a
//! missing prerequisite skips with the reason; with CI=true it fails.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use serde_json::Value;

mod support;
#[path = "image/terminal.rs"]
mod terminal;

const MEETBOX: &str = env!("CARGO_BIN_EXE_meetbox");

/// Tools the image tests run, with the packages that provide them.
const TOOLS: &[(&str, &str)] = &[
    ("mmdebstrap", "mmdebstrap"),
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("minisign", "minisign"),
    ("bmaptool", "bmap-tools"),
    ("sha256sum", "coreutils"),
    ("debugfs", "e2fsprogs"),
    ("tmux", "tmux"),
];

fn can_run(test: &str) -> bool {
    support::can_run(
        test,
        support::root_and_tools_missing("building images (mmdebstrap)", TOOLS),
    )
}

fn work_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("image-tests");
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn meetbox(args: &[&str]) -> Output {
    let output = Command::new(MEETBOX)
        .args(args)
        .output()
        .expect("meetbox runs");
    eprintln!(
        "$ meetbox {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn meetbox_ok(args: &[&str]) -> Output {
    let output = meetbox(args);
    assert!(output.status.success(), "meetbox {} failed", args.join(" "));
    output
}

/// A test signing key, made once.
fn test_key() -> &'static (PathBuf, PathBuf) {
    static KEY: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    KEY.get_or_init(|| {
        let prefix = work_dir().join("test-signing");
        let key = prefix.with_extension("key");
        let public = prefix.with_extension("pub");
        if !key.exists() {
            meetbox_ok(&["keygen", "--out", prefix.to_str().unwrap(), "--unencrypted"]);
        }
        (key, public)
    })
}

struct Built {
    out: PathBuf,
    name: String,
}

impl Built {
    fn file(&self, suffix: &str) -> PathBuf {
        self.out.join(format!("{}{suffix}", self.name))
    }
    fn manifest(&self) -> Value {
        serde_json::from_slice(&fs::read(self.file(".manifest.json")).unwrap()).unwrap()
    }
}

fn build(base: &str, out_name: &str) -> Built {
    let out = work_dir().join(out_name);
    let _ = fs::remove_dir_all(&out);
    let (key, _) = test_key();
    let cache = work_dir().join("cache");
    let args = support::test_build_args(base, &out, key, &cache);
    meetbox_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
    Built {
        out,
        name: format!("meetbox-test-{base}"),
    }
}

fn run_ok(program: &str, args: &[&str], dir: &Path) -> String {
    let output = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{text}"
    );
    text
}

/// The reference tools accept what we produce.
fn check_artifacts_with_reference_tools(built: &Built) {
    let (_, public) = test_key();
    let out = &built.out;
    for signed in [format!("{}.img.zst", built.name), "SHA256SUMS".to_string()] {
        let text = run_ok(
            "minisign",
            &["-V", "-p", public.to_str().unwrap(), "-m", &signed],
            out,
        );
        assert!(
            text.contains("Signature and comment signature verified"),
            "{text}"
        );
        assert!(
            text.contains(&signed),
            "trusted comment names {signed}: {text}"
        );
    }
    let sums = run_ok("sha256sum", &["-c", "SHA256SUMS"], out);
    assert!(
        sums.contains(&format!("{}.img.zst: OK", built.name)),
        "{sums}"
    );

    let copy = work_dir().join(format!("{}-bmaptool.img", built.name));
    let _ = fs::remove_file(&copy);
    run_ok(
        "bmaptool",
        &[
            "copy",
            "--bmap",
            built.file(".img.bmap").to_str().unwrap(),
            built.file(".img.zst").to_str().unwrap(),
            copy.to_str().unwrap(),
        ],
        out,
    );
    let manifest = built.manifest();
    assert_eq!(
        sha256_file(&copy),
        manifest["image"]["raw_sha256"].as_str().unwrap(),
        "bmaptool's copy is the signed raw image"
    );
    fs::remove_file(&copy).unwrap();

    // The signed manifest lists every 32 MiB frame with its SHA-256, covering the
    // compressed file up to its seek table.
    let frames = manifest["image"]["frames"].as_array().unwrap();
    let raw_size = manifest["image"]["raw_size_bytes"].as_u64().unwrap();
    assert_eq!(
        frames.len() as u64,
        raw_size.div_ceil(32 << 20),
        "{frames:?}"
    );
    let framed: u64 = frames
        .iter()
        .map(|f| f["compressed_size"].as_u64().unwrap())
        .sum();
    let file_size = fs::metadata(built.file(".img.zst")).unwrap().len();
    assert!(
        framed < file_size && file_size - framed < 4096,
        "frames {framed} B, file {file_size} B"
    );
}

/// Security updates can run: apt and unattended-upgrades are installed, apt's timers are enabled,
/// and the manifest names the security pocket as the origin updates come from.
fn check_updates(built: &Built, security_origin: &str) {
    let manifest = built.manifest();
    let packages: Vec<&str> = manifest["packages"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for package in ["apt", "unattended-upgrades"] {
        assert!(packages.contains(&package), "{package} is not installed");
    }
    let updates = &manifest["updates"];
    let timers: Vec<&str> = updates["timers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for timer in ["apt-daily.timer", "apt-daily-upgrade.timer"] {
        assert!(
            timers.contains(&timer),
            "{timer} is not enabled: {timers:?}"
        );
    }
    assert!(
        !timers.contains(&"motd-news.timer"),
        "motd-news calls a third party: {timers:?}"
    );
    let origins = updates["origins"].to_string();
    assert!(origins.contains(security_origin), "{updates}");
    assert!(
        !updates["sources"].as_array().unwrap().is_empty(),
        "{updates}"
    );
}

fn sha256_file(path: &Path) -> String {
    let out = run_ok("sha256sum", &[path.to_str().unwrap()], Path::new("."));
    out.split_whitespace().next().unwrap().to_string()
}

/// `meetbox verify` accepts the build and refuses a tampered copy.
fn check_verify(built: &Built) {
    let (_, public) = test_key();
    let image = built.file(".img.zst");
    let inspect = meetbox_ok(&[
        "inspect",
        image.to_str().unwrap(),
        "--pubkey",
        public.to_str().unwrap(),
        "--json",
    ]);
    let report: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert_eq!(report["signatures_valid"], true, "{report}");
    let partitions = report["partitions"].as_array().unwrap();
    assert_eq!(partitions.len(), 2);
    assert_eq!(partitions[0]["filesystem"], "vfat");
    assert_eq!(partitions[1]["filesystem"], "ext4");
    assert_eq!(
        partitions[1]["type_guid"], "4f68bce3-e8cd-4db1-96e7-fbcaf984b709",
        "root is root-x86-64 of the Discoverable Partitions Specification"
    );
    assert!(report["packages"].as_array().unwrap().len() > 100);
    meetbox_ok(&[
        "verify",
        image.to_str().unwrap(),
        "--pubkey",
        public.to_str().unwrap(),
    ]);

    let tampered_dir = work_dir().join(format!("{}-tampered", built.name));
    let _ = fs::remove_dir_all(&tampered_dir);
    fs::create_dir_all(&tampered_dir).unwrap();
    for entry in fs::read_dir(&built.out).unwrap() {
        let entry = entry.unwrap();
        fs::copy(entry.path(), tampered_dir.join(entry.file_name())).unwrap();
    }
    let copy = tampered_dir.join(image.file_name().unwrap());
    let len = fs::metadata(&copy).unwrap().len();
    flip_byte(&copy, len / 2);
    let output = meetbox(&[
        "verify",
        copy.to_str().unwrap(),
        "--pubkey",
        public.to_str().unwrap(),
    ]);
    assert!(
        !output.status.success(),
        "a flipped byte must fail verification"
    );
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        report.contains("FAIL  signature of") && report.contains("FAIL  decompressed image"),
        "the report names the failed checks: {report}"
    );
    fs::remove_dir_all(&tampered_dir).unwrap();
}

fn flip_byte(path: &Path, offset: u64) {
    let mut file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut byte = [0u8];
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.read_exact(&mut byte).unwrap();
    byte[0] ^= 0xff;
    file.seek(SeekFrom::Start(offset)).unwrap();
    std::io::Write::write_all(&mut file, &byte).unwrap();
}

/// How the virtual disk is made from the image.
enum DiskFrom {
    /// `meetbox run` decompresses the image onto a larger sparse disk.
    Run,
    /// `meetbox flash` writes the image onto a larger file, as onto an SSD.
    Flash,
}

/// Boots on a disk 2 GiB larger than the image; expects Secure Boot and the agent's
/// banner on the serial console, then checks that partition and file system grew.
fn boot_and_check_growth(built: &Built, from: DiskFrom) {
    let manifest = built.manifest();
    let image_size = manifest["image"]["raw_size_bytes"].as_u64().unwrap();
    let disk_size = image_size + (2 << 30);
    let disk = work_dir().join(format!("{}-vm.img", built.name));
    let log = work_dir().join(format!("{}-serial.log", built.name));
    let _ = fs::remove_file(&log);
    let _ = fs::remove_file(&disk);
    let image = built.file(".img.zst");
    let (http, https, admin) = (
        free_port().to_string(),
        free_port().to_string(),
        free_port().to_string(),
    );
    let mut args = vec!["run".to_string()];
    match from {
        DiskFrom::Run => args.extend([
            image.to_str().unwrap().to_string(),
            "--disk".into(),
            disk.to_str().unwrap().into(),
            "--disk-size".into(),
            disk_size.to_string(),
        ]),
        DiskFrom::Flash => {
            fs::File::create(&disk).unwrap().set_len(disk_size).unwrap();
            let (_, public) = test_key();
            meetbox_ok(&[
                "flash",
                image.to_str().unwrap(),
                disk.to_str().unwrap(),
                "--pubkey",
                public.to_str().unwrap(),
                "--yes",
            ]);
            args.push(disk.to_str().unwrap().into());
        }
    }
    args.extend(
        [
            "--accel",
            "tcg",
            "--http-port",
            &http,
            "--https-port",
            &https,
            "--admin-port",
            &admin,
        ]
        .map(String::from),
    );
    match from {
        DiskFrom::Run => terminal::boot_to_the_banner(MEETBOX, &args, &log),
        DiskFrom::Flash => {
            args.extend(
                [
                    "--serial-log",
                    log.to_str().unwrap(),
                    "--expect",
                    "Secure boot enabled",
                    "--expect",
                    "Meetbox first-boot setup",
                    "--timeout",
                    "900",
                ]
                .map(String::from),
            );
            meetbox_ok(&args.iter().map(String::as_str).collect::<Vec<_>>());
        }
    }
    let (root_end, fs_bytes) = root_partition_and_fs_size(&disk);
    let sector = 512;
    assert!(
        (root_end + 1) * sector > image_size + (1 << 30),
        "root partition grew to the disk: ends at {} bytes, disk {disk_size}",
        (root_end + 1) * sector
    );
    assert!(
        fs_bytes > image_size,
        "ext4 grew beyond the image size: {fs_bytes} bytes"
    );
    fs::remove_file(&disk).unwrap();
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Image tests take both cores; run them one at a time.
fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// (last LBA of partition 2, ext4 size in bytes) read straight from the disk.
/// First and last LBA of the root partition (the second GPT entry).
fn root_partition(disk: &Path) -> (u64, u64) {
    let mut file = fs::File::open(disk).unwrap();
    let mut header = [0u8; 92];
    file.seek(SeekFrom::Start(512)).unwrap();
    file.read_exact(&mut header).unwrap();
    assert_eq!(&header[..8], b"EFI PART");
    let entries_lba = u64::from_le_bytes(header[72..80].try_into().unwrap());
    let entry_size = u32::from_le_bytes(header[84..88].try_into().unwrap()) as u64;
    let mut entry = vec![0u8; entry_size as usize];
    file.seek(SeekFrom::Start(entries_lba * 512 + entry_size))
        .unwrap();
    file.read_exact(&mut entry).unwrap();
    let first = u64::from_le_bytes(entry[32..40].try_into().unwrap());
    let last = u64::from_le_bytes(entry[40..48].try_into().unwrap());
    (first, last)
}

fn root_partition_and_fs_size(disk: &Path) -> (u64, u64) {
    let (first, last) = root_partition(disk);
    let mut file = fs::File::open(disk).unwrap();
    let mut sb = [0u8; 1024];
    file.seek(SeekFrom::Start(first * 512 + 1024)).unwrap();
    file.read_exact(&mut sb).unwrap();
    assert_eq!(u16::from_le_bytes([sb[56], sb[57]]), 0xEF53, "ext4 magic");
    let blocks_lo = u32::from_le_bytes(sb[4..8].try_into().unwrap()) as u64;
    let blocks_hi = u32::from_le_bytes(sb[0x150..0x154].try_into().unwrap()) as u64;
    let block_size = 1024u64 << u32::from_le_bytes(sb[24..28].try_into().unwrap());
    (last, ((blocks_hi << 32) | blocks_lo) * block_size)
}

/// Lists a directory of the image's root file system (debugfs, read-only): entry names.
fn root_dir_entries(raw: &Path, dir: &str) -> Vec<String> {
    let root_offset = root_partition(raw).0 * 512;
    let output = Command::new("debugfs")
        .args(["-R", &format!("ls -p {dir}")])
        .arg(format!("{}?offset={root_offset}", raw.display()))
        .output()
        .unwrap();
    // `ls -p`: /inode/mode/uid/gid/name/size/ per entry.
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split('/').nth(5).map(str::to_string))
        .filter(|name| !name.is_empty() && name != "." && name != "..")
        .collect()
}

/// The Ubuntu image keeps the firmware its hardware profile names (the test profile: Realtek
/// RTL8168 and RTL8125, the usual mini-PC NICs) and none of linux-firmware's other files, and
/// keeps the filter for linux-firmware's updates; its kernel keeps the modules a box loads.
fn check_firmware_from_the_profile(built: &Built) {
    let raw = work_dir().join("firmware-check.img");
    meetbox::vm::qemu::decompress_sparse(&built.file(".img.zst"), &raw, 0).unwrap();
    let rtl = root_dir_entries(&raw, "/usr/lib/firmware/rtl_nic");
    for expected in ["rtl8168h-2.fw", "rtl8125b-2.fw"] {
        assert!(
            rtl.iter()
                .any(|f| f == expected || f.starts_with(&format!("{expected}."))),
            "{expected} is missing from /lib/firmware/rtl_nic: {rtl:?}"
        );
    }
    assert!(
        rtl.iter()
            .all(|f| f.starts_with("rtl8168") || f.starts_with("rtl8125")),
        "firmware the profile does not name: {rtl:?}"
    );
    let top = root_dir_entries(&raw, "/usr/lib/firmware");
    for family in [
        "amdgpu",
        "i915",
        "iwlwifi-cc-a0-77.ucode",
        "nvidia",
        "qcom",
        "mediatek",
    ] {
        assert!(
            !top.iter().any(|f| f.starts_with(family)),
            "{family} is in the image, the profile does not name it: {top:?}"
        );
    }
    let filters = root_dir_entries(&raw, "/etc/dpkg/dpkg.cfg.d");
    assert!(
        filters.iter().any(|f| f == "60meetbox-firmware"),
        "no dpkg filter for linux-firmware's updates: {filters:?}"
    );
    check_modules_left_out(&raw, &filters);
    fs::remove_file(&raw).unwrap();
}

/// The kernel keeps the drivers of wired NICs, storage and graphics, and none of the sound, camera,
/// Wi-Fi or Bluetooth modules; the filter stays for the kernel's updates.
fn check_modules_left_out(raw: &Path, filters: &[String]) {
    assert!(
        filters.iter().any(|f| f == "61meetbox-modules"),
        "no dpkg filter for the kernel's updates: {filters:?}"
    );
    let versions = root_dir_entries(raw, "/usr/lib/modules");
    assert!(!versions.is_empty(), "no kernel modules in the image");
    for version in versions {
        let kernel = format!("/usr/lib/modules/{version}/kernel");
        // dpkg's path filter leaves a filtered directory in place, empty.
        for gone in [
            "sound",
            "v4l2loopback",
            "zfs",
            "drivers/media",
            "drivers/bluetooth",
            "drivers/staging",
            "drivers/infiniband",
            "drivers/net/wireless",
        ] {
            let left = root_dir_entries(raw, &format!("{kernel}/{gone}"));
            assert!(left.is_empty(), "{kernel}/{gone} still holds {left:?}");
        }
        let drivers = root_dir_entries(raw, &format!("{kernel}/drivers"));
        for kept in ["nvme", "ata", "gpu", "usb"] {
            assert!(
                drivers.iter().any(|d| d == kept),
                "{kernel}/drivers/{kept} is missing: {drivers:?}"
            );
        }
        let realtek = root_dir_entries(raw, &format!("{kernel}/drivers/net/ethernet/realtek"));
        assert!(
            realtek.iter().any(|m| m.starts_with("r8169.ko")),
            "{kernel}: the RTL8168/RTL8125 driver r8169 is missing: {realtek:?}"
        );
    }
}

#[test]
fn ubuntu_image_builds_verifies_reproduces_and_boots() {
    if !can_run("ubuntu image") {
        return;
    }
    let _one_at_a_time = exclusive();
    let built = build("ubuntu-24.04", "ubuntu");
    check_artifacts_with_reference_tools(&built);
    check_updates(&built, "origin=Ubuntu,archive=noble-security");
    check_verify(&built);
    check_firmware_from_the_profile(&built);

    // Determinism: a second assembly from the cached root file system.
    let again = build("ubuntu-24.04", "ubuntu-again");
    let (first, second) = (built.manifest(), again.manifest());
    assert_eq!(first["image"]["raw_sha256"], second["image"]["raw_sha256"]);
    assert_eq!(
        sha256_file(&built.file(".img.zst")),
        sha256_file(&again.file(".img.zst")),
        "byte-identical compressed images"
    );
    fs::remove_dir_all(&again.out).unwrap();

    boot_and_check_growth(&built, DiskFrom::Run);
}

#[test]
fn debian_image_builds_flashes_and_boots() {
    if !can_run("debian image") {
        return;
    }
    let _one_at_a_time = exclusive();
    let built = build("debian-12", "debian");
    check_artifacts_with_reference_tools(&built);
    check_updates(&built, "codename=bookworm-security,label=Debian-Security");
    boot_and_check_growth(&built, DiskFrom::Flash);
}
