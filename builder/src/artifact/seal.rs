//! The installer's seal, written onto the image's own ESP: what `meetbox install` checks a USB
//! stick against before it copies the stick onto an internal disk. The format belongs to the
//! on-box crate ([`meetbox_firstboot::install::seal`]); this module fills it in.
//!
//! It is made after the partition table and the root file system are in the raw image and before
//! the ESP is: it lists every mapped range outside the ESP with its SHA-256, and every file the ESP
//! will hold, and is then signed (deterministically, so the image still rebuilds byte for byte)
//! and placed on the ESP with its signature.

use std::path::Path;

use anyhow::{ensure, Context, Result};
use meetbox_firstboot::install::seal::{InstallSeal, SealedFile, SealedRange, SEAL_FORMAT};
use meetbox_firstboot::layout::{ESP_SEAL, ESP_SEAL_SIGNATURE};

use crate::artifact::blockmap::BlockMap;
use crate::artifact::checksums::Sha256Digest;
use crate::disk::esp::{self, EspFile};
use crate::disk::layout::DiskLayout;
use crate::sign::deterministic;
use crate::sign::keys::SigningKey;

/// Seals `raw` (partition table and root written, ESP not yet) and writes its ESP with `files`,
/// the seal and its signature. The last step of a raw image.
pub fn write_sealed_esp(
    raw: &Path,
    layout: &DiskLayout,
    mut files: Vec<EspFile>,
    name: &str,
    key: &SigningKey,
    epoch: u64,
) -> Result<InstallSeal> {
    let seal = describe(raw, layout, &files, name)?;
    files.extend(esp_files(&seal, key)?);
    let image = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(raw)
        .with_context(|| format!("cannot reopen {}", raw.display()))?;
    esp::write_esp(&image, layout, &files, epoch)?;
    Ok(seal)
}

/// Describes `raw` (an image whose ESP is not written yet) and the files its ESP will hold.
pub fn describe(
    raw: &Path,
    layout: &DiskLayout,
    esp_files: &[EspFile],
    name: &str,
) -> Result<InstallSeal> {
    let map = BlockMap::from_image(raw)?;
    let (esp_start, esp_end) = (
        layout.esp.offset_bytes(),
        layout.esp.offset_bytes() + layout.esp.len_bytes(),
    );
    let ranges = map
        .ranges
        .iter()
        .map(|range| {
            let (start, end) = map.byte_span(range);
            ensure!(
                end <= esp_start || start >= esp_end,
                "the ESP already holds data (bytes {start}-{end}) when the seal is made: the seal \
                 must be made before the ESP is written"
            );
            Ok(SealedRange {
                first: range.first,
                last: range.last,
                sha256: hex::encode(range.sha256),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let mut esp_files: Vec<SealedFile> = esp_files
        .iter()
        .map(|file| SealedFile {
            path: file.path.clone(),
            size: file.contents.len() as u64,
            sha256: Sha256Digest::of(&file.contents).to_string(),
        })
        .collect();
    esp_files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(InstallSeal {
        format: SEAL_FORMAT,
        name: name.to_string(),
        image_size: map.image_size,
        block_size: map.block_size,
        esp_offset: esp_start,
        esp_size: esp_end - esp_start,
        ranges,
        esp_files,
    })
}

/// The seal and its signature as the two ESP files the installer reads.
pub fn esp_files(seal: &InstallSeal, key: &SigningKey) -> Result<[EspFile; 2]> {
    let mut json = serde_json::to_vec_pretty(seal)?;
    json.push(b'\n');
    let comment = format!(
        "meetbox {} file:{} sha256:{}",
        env!("CARGO_PKG_VERSION"),
        ESP_SEAL.rsplit('/').next().unwrap_or(ESP_SEAL),
        Sha256Digest::of(&json)
    );
    let signature = deterministic::sign(key, &json, &comment)?;
    Ok([
        EspFile {
            path: ESP_SEAL.to_string(),
            contents: json,
        },
        EspFile {
            path: ESP_SEAL_SIGNATURE.to_string(),
            contents: signature.into_bytes(),
        },
    ])
}
