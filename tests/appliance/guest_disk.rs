//! The guest's disk seen from the host while the guest is off: the ESP with mtools (as a user writes
//! `meetbox-setup.toml` after flashing), the root file system with debugfs (read-only).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

pub struct GuestDisk {
    pub path: PathBuf,
    esp_offset: u64,
    esp_len: u64,
    root_offset: u64,
}

impl GuestDisk {
    /// Partition offsets from the build manifest (the root partition grows on first boot, its start
    /// stays).
    pub fn new(path: &Path, manifest: &Value) -> GuestDisk {
        let sector = manifest["disk"]["sector_size"].as_u64().unwrap();
        let partition = |filesystem: &str| {
            manifest["disk"]["partitions"]
                .as_array()
                .unwrap()
                .iter()
                .find(|p| p["filesystem"] == filesystem)
                .unwrap_or_else(|| panic!("no {filesystem} partition in the manifest"))
                .clone()
        };
        let (esp, root) = (partition("vfat"), partition("ext4"));
        GuestDisk {
            path: path.to_path_buf(),
            esp_offset: esp["first_lba"].as_u64().unwrap() * sector,
            esp_len: esp["size_bytes"].as_u64().unwrap(),
            root_offset: root["first_lba"].as_u64().unwrap() * sector,
        }
    }

    /// Where the root partition starts on the disk.
    pub fn root_offset(&self) -> u64 {
        self.root_offset
    }

    fn esp_image(&self) -> String {
        format!("{}@@{}", self.path.display(), self.esp_offset)
    }

    /// Copies `file` to the root of the ESP as `name`.
    pub fn put_on_esp(&self, file: &Path, name: &str) {
        run(mtools("mcopy")
            .arg("-i")
            .arg(self.esp_image())
            .arg(file)
            .arg(format!("::/{name}")));
    }

    /// Whether the ESP's root directory lists `name`.
    pub fn esp_has(&self, name: &str) -> bool {
        let listing = run(mtools("mdir")
            .args(["-b", "-i"])
            .arg(self.esp_image())
            .arg("::/"));
        listing
            .lines()
            .any(|line| line.trim_end().eq_ignore_ascii_case(&format!("::/{name}")))
    }

    /// Whether `needle` occurs anywhere in the ESP's bytes, free clusters included.
    pub fn esp_bytes_contain(&self, needle: &[u8]) -> bool {
        let file = File::open(&self.path).unwrap();
        let mut bytes = vec![0u8; self.esp_len as usize];
        file.read_exact_at(&mut bytes, self.esp_offset).unwrap();
        bytes.windows(needle.len()).any(|w| w == needle)
    }

    /// Where each needle occurs in the whole disk, free blocks and unpartitioned space included,
    /// compared without regard to ASCII case; every hit is named by the file that holds it
    /// when it lies in the root file system. Empty when none occurs.
    pub fn search_everywhere(&self, needles: &[&str]) -> Vec<String> {
        const CHUNK: usize = 16 << 20;
        let needles: Vec<Vec<u8>> = needles
            .iter()
            .map(|n| n.to_ascii_lowercase().into_bytes())
            .collect();
        let overlap = needles.iter().map(Vec::len).max().unwrap_or(1) - 1;
        let file = File::open(&self.path).unwrap();
        let len = file.metadata().unwrap().len();
        let mut hits = Vec::new();
        let mut buf = vec![0u8; CHUNK + overlap];
        let mut offset = 0u64;
        while offset < len {
            let want = (CHUNK + overlap).min((len - offset) as usize);
            file.read_exact_at(&mut buf[..want], offset).unwrap();
            let chunk = &mut buf[..want];
            if chunk.iter().any(|b| *b != 0) {
                chunk.make_ascii_lowercase();
                for needle in &needles {
                    let found = chunk
                        .windows(needle.len())
                        .enumerate()
                        .filter(|(_, w)| w == needle)
                        .map(|(at, _)| offset + at as u64);
                    for at in found.take(3) {
                        hits.push(format!(
                            "{:?} at byte {at}: {}",
                            String::from_utf8_lossy(needle),
                            self.locate(at)
                        ));
                    }
                }
            }
            offset += CHUNK as u64;
        }
        hits.dedup();
        hits
    }

    /// The root file system's file that holds disk byte `at` (debugfs icheck + ncheck).
    fn locate(&self, at: u64) -> String {
        if at < self.root_offset {
            return "before the root file system".into();
        }
        let device = format!("{}?offset={}", self.path.display(), self.root_offset);
        let block = (at - self.root_offset) / 4096;
        let icheck = run(Command::new("debugfs")
            .arg("-R")
            .arg(format!("icheck {block}"))
            .arg(&device));
        let inode = icheck
            .lines()
            .nth(1)
            .and_then(|line| line.split_whitespace().nth(1))
            .unwrap_or("<block not in use>")
            .to_string();
        if inode.starts_with('<') {
            return format!("free block {block} of the root file system");
        }
        let ncheck = run(Command::new("debugfs")
            .arg("-R")
            .arg(format!("ncheck {inode}"))
            .arg(&device));
        format!(
            "block {block}, inode {inode}: {}",
            ncheck.lines().nth(1).unwrap_or("(no name)").trim()
        )
    }

    /// A file of the root file system, read with debugfs (no mount).
    pub fn read_root_file(&self, path: &str) -> String {
        // debugfs exits 0 when `cat` fails, and says why on stderr only.
        let output = Command::new("debugfs")
            .arg("-R")
            .arg(format!("cat {path}"))
            .arg(format!(
                "{}?offset={}",
                self.path.display(),
                self.root_offset
            ))
            .output()
            .unwrap_or_else(|e| panic!("cannot run debugfs: {e}"));
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        assert!(
            !text.trim().is_empty(),
            "{path} is empty or missing in the guest: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        text
    }
}

/// An mtools command that accepts any geometry (the ESP is a partition, not a floppy).
fn mtools(program: &str) -> Command {
    let mut command = Command::new(program);
    command.env("MTOOLS_SKIP_CHECK", "1");
    command
}

fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}
