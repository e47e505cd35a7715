//! Shared fixtures for the flash tests: a small signed GPT image in the build's
//! artifact layout, and tool checks.

#![allow(dead_code)] // each test binary uses a different part of the fixtures

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use meetbox::blockmap::BlockMap;
use meetbox::flash::FlashArgs;
use sha2::{Digest, Sha256};

pub const MIB: u64 = 1 << 20;
/// Size of the test image.
pub const IMAGE_SIZE: u64 = 64 * MIB;

/// Whether `tool` runs here; under CI a missing tool fails the test.
pub fn have_tool(tool: &str, package: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{tool} is required under CI (apt-get install {package})"
        );
        eprintln!("skipped: {tool} is not installed (apt-get install {package})");
    }
    found
}

/// A signed build in a temporary directory.
pub struct Build {
    pub dir: tempfile::TempDir,
    pub raw: PathBuf,
    pub zst: PathBuf,
    pub pubkey: PathBuf,
}

impl Build {
    pub fn args(&self, target: &Path) -> FlashArgs {
        FlashArgs {
            image: Some(self.zst.clone()),
            device: Some(target.to_path_buf()),
            pubkey: Some(self.pubkey.clone()),
            yes: true,
            list: false,
        }
    }

    pub fn raw_bytes(&self) -> Vec<u8> {
        std::fs::read(&self.raw).unwrap()
    }
}

fn run(command: &mut Command) {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Content that differs at every offset, so misplaced blocks are caught.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 32) as u8
        })
        .collect()
}

/// Builds a 64 MiB sparse GPT image (ESP + root) with data scattered in both
/// partitions, compresses it, maps it and signs it like the build does.
/// None (test skipped) when sgdisk or minisign is missing.
pub fn signed_build() -> Option<Build> {
    if !have_tool("sgdisk", "gdisk") || !have_tool("minisign", "minisign") {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("meetbox-test.img");
    File::create(&raw).unwrap().set_len(IMAGE_SIZE).unwrap();
    run(Command::new("sgdisk")
        .args([
            "-n",
            "1:2048:+16M",
            "-t",
            "1:ef00",
            "-n",
            "2:0:0",
            "-t",
            "2:8300",
        ])
        .arg(&raw));
    let file = File::options().write(true).open(&raw).unwrap();
    for (seed, offset, len) in [
        (1, MIB, 4096),
        (2, 2 * MIB, 3 * MIB),
        (3, 20 * MIB + 4096, 8192),
        (4, 30 * MIB, 9 * MIB + 12288),
        (5, 62 * MIB, 512 * 1024),
    ] {
        file.write_all_at(&pattern(seed, len as usize), offset)
            .unwrap();
    }
    file.sync_all().unwrap();
    drop(file);

    let zst = dir.path().join("meetbox-test.img.zst");
    let mut encoder = zstd::Encoder::new(File::create(&zst).unwrap(), 3).unwrap();
    std::io::copy(&mut File::open(&raw).unwrap(), &mut encoder).unwrap();
    encoder.finish().unwrap().sync_all().unwrap();
    let bmap = dir.path().join("meetbox-test.img.bmap");
    BlockMap::from_image(&raw).unwrap().write(&bmap).unwrap();

    let sums: String = [&zst, &bmap]
        .iter()
        .map(|p| {
            format!(
                "{}  {}\n",
                hex::encode(Sha256::digest(std::fs::read(p).unwrap())),
                p.file_name().unwrap().to_string_lossy()
            )
        })
        .collect();
    std::fs::write(dir.path().join("SHA256SUMS"), sums).unwrap();
    let pubkey = dir.path().join("test.pub");
    let seckey = dir.path().join("test.key");
    run(Command::new("minisign")
        .arg("-GW")
        .arg("-p")
        .arg(&pubkey)
        .arg("-s")
        .arg(&seckey));
    for file in [zst.clone(), dir.path().join("SHA256SUMS")] {
        run(Command::new("minisign")
            .arg("-Sm")
            .arg(&file)
            .arg("-s")
            .arg(&seckey));
    }
    Some(Build {
        dir,
        raw,
        zst,
        pubkey,
    })
}

/// A loop device over a sparse file of `size` bytes, detached on drop.
pub struct LoopDevice {
    pub path: PathBuf,
    _backing: tempfile::NamedTempFile,
}

impl LoopDevice {
    /// None (test skipped, with the reason printed) when loop devices are unavailable.
    pub fn new(size: u64, extra_args: &[&str]) -> Option<LoopDevice> {
        if !have_tool("losetup", "mount") {
            return None;
        }
        let backing = tempfile::NamedTempFile::new().unwrap();
        backing.as_file().set_len(size).unwrap();
        let output = Command::new("losetup")
            .args(["--find", "--show"])
            .args(extra_args)
            .arg(backing.path())
            .output()
            .unwrap();
        if !output.status.success() {
            // Loop devices need root and a kernel that allows them; CI runs as root.
            eprintln!(
                "skipped: cannot attach a loop device here: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
            return None;
        }
        let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
        Some(LoopDevice {
            path,
            _backing: backing,
        })
    }

    pub fn read(&self, len: u64) -> Vec<u8> {
        let mut buf = vec![0u8; len as usize];
        File::open(&self.path)
            .unwrap()
            .read_exact_at(&mut buf, 0)
            .unwrap();
        buf
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.path).status();
    }
}
