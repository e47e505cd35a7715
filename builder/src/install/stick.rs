//! The stick `meetbox install` copies: its seal, read from its ESP and checked with the image's
//! signature and public key; then every byte of the image checked against the seal before one is
//! written anywhere else.
//!
//! The ESP is checked file by file (the owner may have added an answers file, and their computer
//! its hidden files); its bytes as read are then what the write copies and the read-back compares.

use std::io::{Cursor, Read};
use std::path::Path;

use anyhow::{bail, ensure, Context, Result};
use fatfs::{FileSystem, FsOptions};
use meetbox_firstboot::install::seal::{InstallSeal, SEAL_FORMAT};
use meetbox_firstboot::layout::{ESP_SEAL, ESP_SEAL_SIGNATURE};
use sha2::{Digest, Sha256};

use crate::artifact::blockmap::{BlockMap, MappedRange};
use crate::disk::layout::ESP_TYPE_GUID;
use crate::flash::writer::{self, FlashJob, Input, TargetFile};
use crate::host::progress;
use crate::sign::keys::load_public_key;

/// What a stick must be rewritten after.
const REWRITE: &str = "The stick is damaged or was written badly: write the image to it again \
                       (meetbox flash, or any image writer) and start from it again";

/// A stick whose seal verified: the seal, and the ESP's bytes as read.
pub struct SealedStick {
    pub seal: InstallSeal,
    /// The signing key's id as minisign prints it, to compare with the published one.
    pub key_id: String,
    esp: Vec<u8>,
}

/// Finds the ESP in the stick's partition table, reads the seal and its signature from it, and
/// checks the signature with `pubkey`.
pub fn read_seal(stick: &TargetFile, pubkey: &Path) -> Result<SealedStick> {
    let where_ = || format!("the USB stick {}", stick.path.display());
    let (esp_offset, esp_size) = find_esp(stick)
        .with_context(|| format!("{} holds no Meetbox image. {REWRITE}", where_()))?;
    let mut esp = vec![0u8; esp_size as usize];
    stick
        .read_exact_at(&mut esp, esp_offset)
        .with_context(|| format!("cannot read the ESP of {}", where_()))?;
    let (json, signature) = {
        let fs = open_fat(&esp)?;
        (
            read_fat_file(&fs, ESP_SEAL).with_context(|| {
                format!("{} has no installer seal ({ESP_SEAL}): it was not built by this meetbox, or its ESP is damaged. {REWRITE}", where_())
            })?,
            read_fat_file(&fs, ESP_SEAL_SIGNATURE)
                .with_context(|| format!("{} has no signature for its seal. {REWRITE}", where_()))?,
        )
    };
    let key = load_public_key(pubkey)?;
    let signature = minisign::SignatureBox::from_string(&String::from_utf8_lossy(&signature))
        .with_context(|| format!("the seal's signature on {} is damaged. {REWRITE}", where_()))?;
    minisign::verify(&key, &signature, Cursor::new(&json), true, false, false).with_context(
        || {
            format!(
                "the seal on {} is not signed by {}: the stick holds another build, or was \
                 altered. {REWRITE}",
                where_(),
                pubkey.display()
            )
        },
    )?;
    let seal: InstallSeal = serde_json::from_slice(&json)
        .with_context(|| format!("cannot read the seal on {}", where_()))?;
    ensure!(
        seal.format == SEAL_FORMAT,
        "the seal on {} has format {}; this meetbox reads format {SEAL_FORMAT}: install with the \
         meetbox of the same release as the image",
        where_(),
        seal.format
    );
    ensure!(
        seal.esp_offset == esp_offset && seal.esp_size == esp_size,
        "the partition table of {} does not place the ESP where the image has it. {REWRITE}",
        where_()
    );
    ensure!(
        seal.image_size <= stick.size,
        "{} is smaller than the image it should hold. {REWRITE}",
        where_()
    );
    let key_id = format!(
        "{:016X}",
        u64::from_le_bytes(
            key.keynum()
                .try_into()
                .context("a minisign key id has 8 bytes")?
        )
    );
    Ok(SealedStick { seal, key_id, esp })
}

/// Checks the stick against its seal (every mapped byte outside the ESP, every file on it);
/// returns the map to write by: the sealed ranges and the ESP as read.
pub fn check(
    stick: &TargetFile,
    sealed: &SealedStick,
    stop: &std::sync::atomic::AtomicBool,
) -> Result<BlockMap> {
    let seal = &sealed.seal;
    let where_ = format!("the USB stick {}", stick.path.display());
    let extras = check_esp_files(seal, &sealed.esp).with_context(|| {
        format!("the ESP of {where_} does not hold the signed image's files. {REWRITE}")
    })?;
    for extra in &extras {
        progress::detail(format!(
            "ESP: {extra} is not part of the image; it is copied as it is"
        ));
    }
    let sealed_map = sealed_ranges(seal)?;
    writer::check_input(&FlashJob {
        input: Input::Disk(stick),
        map: &sealed_map,
        stop,
        corrupt_after_write: None,
    })
    .with_context(|| format!("{where_} does not hold the signed image. {REWRITE}"))?;
    with_esp(sealed_map, seal, &sealed.esp)
}

/// The partition table's ESP: byte offset and size.
fn find_esp(stick: &TargetFile) -> Result<(u64, u64)> {
    let mut head = vec![0u8; 1 << 20];
    let len = head.len().min(stick.size as usize);
    stick.read_exact_at(&mut head[..len], 0)?;
    let header = &head[512..512 + 92];
    ensure!(&header[..8] == b"EFI PART", "no GPT partition table");
    let u32_at = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(header[at..at + 8].try_into().expect("8 bytes"));
    let (entries_lba, count, entry_size) = (u64_at(72), u32_at(80) as usize, u32_at(84) as usize);
    ensure!(
        entry_size >= 128,
        "a damaged GPT header (entry size {entry_size})"
    );
    let start = (entries_lba * 512) as usize;
    for index in 0..count {
        let at = start + index * entry_size;
        let Some(entry) = head.get(at..at + 128) else {
            break;
        };
        let type_guid = uuid::Uuid::from_bytes_le(entry[..16].try_into().expect("16 bytes"));
        if type_guid == ESP_TYPE_GUID {
            let first = u64::from_le_bytes(entry[32..40].try_into().expect("8 bytes"));
            let last = u64::from_le_bytes(entry[40..48].try_into().expect("8 bytes"));
            ensure!(last >= first, "a damaged ESP entry");
            return Ok((first * 512, (last - first + 1) * 512));
        }
    }
    bail!("no EFI System Partition in the partition table")
}

fn open_fat(esp: &[u8]) -> Result<FileSystem<Cursor<Vec<u8>>>> {
    // A copy: mounting may mark the copy's FAT in use; the stick is never written.
    FileSystem::new(Cursor::new(esp.to_vec()), FsOptions::new())
        .context("the ESP is not a FAT file system")
}

fn read_fat_file(fs: &FileSystem<Cursor<Vec<u8>>>, path: &str) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    fs.root_dir()
        .open_file(path)
        .with_context(|| format!("no {path}"))?
        .read_to_end(&mut bytes)
        .with_context(|| format!("cannot read {path}"))?;
    Ok(bytes)
}

/// Checks every sealed file; returns the files the ESP has beyond them (and the seal).
fn check_esp_files(seal: &InstallSeal, esp: &[u8]) -> Result<Vec<String>> {
    let fs = open_fat(esp)?;
    for file in &seal.esp_files {
        let bytes = read_fat_file(&fs, &file.path)?;
        ensure!(
            bytes.len() as u64 == file.size && hex::encode(Sha256::digest(&bytes)) == file.sha256,
            "{} differs from the signed image",
            file.path
        );
    }
    let mut found = Vec::new();
    walk(&fs.root_dir(), "", &mut found)?;
    Ok(found
        .into_iter()
        .filter(|path| {
            path != ESP_SEAL
                && path != ESP_SEAL_SIGNATURE
                && !seal
                    .esp_files
                    .iter()
                    .any(|f| f.path.eq_ignore_ascii_case(path))
        })
        .collect())
}

fn walk<IO: fatfs::ReadWriteSeek>(
    dir: &fatfs::Dir<IO>,
    prefix: &str,
    found: &mut Vec<String>,
) -> Result<()> {
    for entry in dir.iter() {
        let entry = entry.context("cannot read an ESP directory")?;
        let name = entry.file_name();
        if name == "." || name == ".." {
            continue;
        }
        let path = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        if entry.is_dir() {
            walk(&entry.to_dir(), &path, found)?;
        } else {
            found.push(path);
        }
    }
    Ok(())
}

/// The sealed ranges as a block map, checked for order and bounds.
fn sealed_ranges(seal: &InstallSeal) -> Result<BlockMap> {
    let mut ranges = Vec::with_capacity(seal.ranges.len());
    let blocks = seal.image_size.div_ceil(seal.block_size.max(1));
    for range in &seal.ranges {
        let sha256: [u8; 32] = hex::decode(&range.sha256)
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .with_context(|| {
                format!(
                    "the seal lists a bad SHA-256 for blocks {}-{}",
                    range.first, range.last
                )
            })?;
        let after_previous = ranges
            .last()
            .is_none_or(|p: &MappedRange| range.first > p.last);
        ensure!(
            range.first <= range.last && range.last < blocks && after_previous,
            "the seal lists blocks {}-{} out of order or outside the image",
            range.first,
            range.last
        );
        ranges.push(MappedRange {
            first: range.first,
            last: range.last,
            sha256,
        });
    }
    ensure!(
        seal.block_size >= 512
            && seal.esp_offset % seal.block_size == 0
            && seal.esp_size % seal.block_size == 0,
        "the seal's block size and ESP do not line up"
    );
    Ok(BlockMap {
        image_size: seal.image_size,
        block_size: seal.block_size,
        ranges,
    })
}

/// Adds the ESP, as read, to the sealed ranges: the write copies it and the read-back checks it.
fn with_esp(mut map: BlockMap, seal: &InstallSeal, esp: &[u8]) -> Result<BlockMap> {
    let first = seal.esp_offset / seal.block_size;
    let last = (seal.esp_offset + seal.esp_size) / seal.block_size - 1;
    ensure!(
        !map.ranges
            .iter()
            .any(|r| r.first <= last && r.last >= first),
        "the seal lists ranges inside the ESP"
    );
    let at = map.ranges.partition_point(|r| r.last < first);
    map.ranges.insert(
        at,
        MappedRange {
            first,
            last,
            sha256: Sha256::digest(esp).into(),
        },
    );
    Ok(map)
}
