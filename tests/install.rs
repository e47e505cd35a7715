//! `meetbox install` as the box runs it: a stick holding a sealed image (made by the build's own
//! layout, partition table, seal and ESP code), copied onto a disk only when every byte matches
//! the signed seal. Sticks and disks are files here; the appliance test (appliance/installer.rs)
//! does the same from a USB stick in a Secure Boot VM.

mod support;

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use meetbox::artifact::seal;
use meetbox::disk::esp::EspFile;
use meetbox::disk::gpt;
use meetbox::disk::layout::DiskLayout;
use meetbox::host::test_tools::missing_tool;
use meetbox::sign::keys::{load_signing_key, write_key_pair};
use meetbox_firstboot::install::seal::InstallSeal;

const MIB: u64 = 1 << 20;
const IMAGE_SIZE: u64 = 128 * MIB;
const MEETBOX: &str = env!("CARGO_BIN_EXE_meetbox");

struct Stick {
    dir: tempfile::TempDir,
    path: PathBuf,
    pubkey: PathBuf,
    layout: DiskLayout,
    seal: InstallSeal,
}

/// A sealed 128 MiB image: GPT, an ESP with a boot loader and its configuration, data scattered
/// over the root partition, then the seal on the ESP, as `meetbox build` writes them.
fn sealed_stick() -> Stick {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stick.img");
    let layout = DiskLayout::plan(IMAGE_SIZE, 40 * MIB, b"install test").unwrap();
    let image = gpt::create_sparse_image(&path, &layout).unwrap();
    gpt::write_partition_table(&image, &layout).unwrap();
    let root = layout.root.offset_bytes();
    for (seed, offset, len) in [
        (1u8, 0, 8192),
        (2, 3 * MIB + 4096, MIB),
        (3, 30 * MIB, 5 * MIB),
    ] {
        let bytes: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(31) ^ seed)
            .collect();
        image.write_all_at(&bytes, root + offset).unwrap();
    }
    image.sync_all().unwrap();
    drop(image);
    let secret = dir.path().join("image.key");
    write_key_pair(&secret, None, false).unwrap();
    let key = load_signing_key(&secret, None).unwrap();
    let files = vec![
        EspFile {
            path: "EFI/BOOT/BOOTX64.EFI".into(),
            contents: b"MZ a signed shim would be here".repeat(1000),
        },
        EspFile {
            path: "EFI/ubuntu/grub.cfg".into(),
            contents: b"configfile $prefix/grub.cfg\n".to_vec(),
        },
    ];
    let seal = seal::write_sealed_esp(&path, &layout, files, "meetbox-test", &key, 1).unwrap();
    Stick {
        pubkey: key.public_key_path.clone(),
        dir,
        path,
        layout,
        seal,
    }
}

impl Stick {
    fn install(&self, target: &Path) -> Output {
        self.run(&[target.to_str().unwrap(), "--yes"])
    }

    fn run(&self, extra: &[&str]) -> Output {
        Command::new(MEETBOX)
            .arg("install")
            .arg(&self.path)
            .args(extra)
            .arg("--pubkey")
            .arg(&self.pubkey)
            .output()
            .unwrap()
    }

    fn flip(&self, offset: u64) {
        let file = File::options()
            .read(true)
            .write(true)
            .open(&self.path)
            .unwrap();
        let mut byte = [0u8];
        file.read_exact_at(&mut byte, offset).unwrap();
        file.write_all_at(&[byte[0] ^ 0x01], offset).unwrap();
    }

    /// Adds a file to the stick's ESP the way an owner's computer does (mtools writes FAT).
    fn add_to_esp(&self, name: &str, text: &str) {
        let source = self.dir.path().join("added");
        fs::write(&source, text).unwrap();
        let image = format!(
            "{}@@{}",
            self.path.display(),
            self.layout.esp.offset_bytes()
        );
        let status = Command::new("mcopy")
            .args(["-i", &image])
            .arg(&source)
            .arg(format!("::{name}"))
            .status()
            .unwrap();
        assert!(status.success());
    }
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn a_checked_stick_installs_byte_for_byte_with_the_owners_answers_file() {
    let missing = [("mcopy", "mtools"), ("sgdisk", "gdisk")]
        .iter()
        .find_map(|(tool, package)| missing_tool(tool, package));
    if !support::can_run("install", missing) {
        return;
    }
    let stick = sealed_stick();
    stick.add_to_esp("meetbox-setup.toml", "domain = \"meet.example.org\"\n");
    let check = stick.run(&["--check"]);
    assert!(check.status.success(), "{}", stderr(&check));
    assert!(stderr(&check).contains("meetbox-setup.toml is not part of the image"));
    assert!(stderr(&check).contains("(key id "), "{}", stderr(&check));

    // A disk of the image's size: the same bytes as the stick, the answers file included.
    let same = stick.dir.path().join("same.img");
    let output = stick.install(&same);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(fs::read(&same).unwrap() == fs::read(&stick.path).unwrap());

    // A larger disk: its backup partition table moved to its end, and the table checks.
    let larger = stick.dir.path().join("larger.img");
    File::create(&larger)
        .unwrap()
        .set_len(4 * IMAGE_SIZE)
        .unwrap();
    let output = stick.install(&larger);
    assert!(output.status.success(), "{}", stderr(&output));
    let verify = Command::new("sgdisk")
        .arg("-v")
        .arg(&larger)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&verify.stdout);
    assert!(report.contains("No problems found"), "{report}");
    let image = fs::read(&stick.path).unwrap();
    let written = fs::read(&larger).unwrap();
    let root = stick.layout.root.offset_bytes() as usize;
    let esp = stick.layout.esp.offset_bytes() as usize;
    assert!(written[esp..root + MIB as usize * 40] == image[esp..root + MIB as usize * 40]);
}

#[test]
fn a_damaged_stick_is_refused_before_anything_is_written() {
    let stick = sealed_stick();
    let target = stick.dir.path().join("target.img");

    // One flipped byte in the root partition's data.
    let data = stick.layout.root.offset_bytes() + 30 * MIB + 12345;
    stick.flip(data);
    let output = stick.install(&target);
    assert_eq!(output.status.code(), Some(1));
    let message = stderr(&output);
    assert!(
        message.contains("does not hold the signed image"),
        "{message}"
    );
    assert!(message.contains("write the image to it again"), "{message}");
    assert!(
        !target.exists(),
        "nothing may be written for a damaged stick"
    );
    stick.flip(data);

    // A boot file on the ESP changed.
    let esp = fs::read(&stick.path).unwrap();
    let needle = b"MZ a signed shim";
    let at = esp
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the boot loader is on the ESP");
    stick.flip(at as u64 + 3);
    let message = stderr(&stick.install(&target));
    assert!(
        message.contains("EFI/BOOT/BOOTX64.EFI differs from the signed image"),
        "{message}"
    );
    assert!(!target.exists());
    stick.flip(at as u64 + 3);

    // Another key than the image's.
    let other = stick.dir.path().join("other.key");
    write_key_pair(&other, None, false).unwrap();
    let output = Command::new(MEETBOX)
        .arg("install")
        .arg(&stick.path)
        .arg(&target)
        .args(["--yes", "--pubkey"])
        .arg(other.with_extension("pub"))
        .output()
        .unwrap();
    assert!(
        stderr(&output).contains("is not signed by"),
        "{}",
        stderr(&output)
    );
    assert!(!target.exists());

    // A disk that is not a Meetbox image at all.
    let blank = stick.dir.path().join("blank.img");
    File::create(&blank).unwrap().set_len(IMAGE_SIZE).unwrap();
    let output = Command::new(MEETBOX)
        .args(["install", "--check"])
        .arg(&blank)
        .output()
        .unwrap();
    assert!(
        stderr(&output).contains("holds no Meetbox image"),
        "{}",
        stderr(&output)
    );

    // And the stick itself is never a target.
    let output = stick.install(&stick.path);
    assert!(
        stderr(&output).contains("is the stick itself"),
        "{}",
        stderr(&output)
    );
    assert_eq!(stick.seal.name, "meetbox-test");
}
