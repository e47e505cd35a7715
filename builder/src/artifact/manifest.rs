//! The build manifest (`NAME.manifest.json`): what an image contains and how to check
//! it. The build pipeline fills it after compression; `verify`, `flash` and `inspect`
//! read it. It is covered by `SHA256SUMS` and that file's signature.

use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::artifact::checksums::Sha256Digest;
use crate::host::atomic_file;

/// Version of the manifest layout; bumped on incompatible changes.
pub const MANIFEST_FORMAT: u32 = 1;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    /// Build name, e.g. `meetbox-test-ubuntu-24.04`; the artifacts are named after it.
    pub name: String,
    pub meetbox_version: String,
    /// Distribution release the root file system comes from, e.g. `ubuntu-24.04`.
    pub base: String,
    /// The resolved profile the image was built from.
    pub profile: serde_json::Value,
    /// Installed packages (from the root file system's dpkg database).
    pub packages: Vec<Package>,
    pub disk: Disk,
    pub image: ImageFiles,
    /// Timestamp used for every file time and derived value in the image.
    pub source_date_epoch: u64,
    /// How the box keeps itself updated (absent in manifests of older builds).
    #[serde(default)]
    pub updates: Updates,
}

/// What the box installs by itself, from where, and when it may reboot for it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Updates {
    /// unattended-upgrades origin patterns: the only packages it installs.
    pub origins: Vec<String>,
    /// The apt sources the box reads (distribution mirrors and Jitsi's repository).
    pub sources: Vec<String>,
    /// Local time of day a reboot that an update needs happens at; none: never by itself.
    pub reboot_time: Option<String>,
    /// The timers the image starts, apt's among them.
    pub timers: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub architecture: String,
}

/// GPT layout of the raw image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    pub size_bytes: u64,
    pub disk_guid: Uuid,
    pub sector_size: u32,
    pub partitions: Vec<Partition>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    /// 1-based GPT entry number.
    pub number: u32,
    pub name: String,
    pub type_guid: Uuid,
    pub partition_guid: Uuid,
    pub first_lba: u64,
    /// Inclusive, as in the GPT entry.
    pub last_lba: u64,
    pub size_bytes: u64,
    /// `vfat`, `ext4`, ... (the names `blkid` reports).
    pub filesystem: String,
    /// As `blkid` shows it: a UUID for ext4, a volume id like `1234-ABCD` for FAT.
    pub filesystem_uuid: String,
}

/// Digests and sizes of the image files; the raw digest is what `verify` checks
/// after decompression and what `flash` reads back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageFiles {
    pub raw_size_bytes: u64,
    pub raw_sha256: Sha256Digest,
    pub compressed_file: String,
    pub compressed_size_bytes: u64,
    pub compressed_sha256: Sha256Digest,
    pub bmap_file: String,
    /// The zstd frames of the compressed image in file order (none for an image of
    /// one stream). Signed with the manifest, they let `meetbox flash` check every
    /// frame on every core, and check each again just before writing from it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub frames: Vec<ImageFrame>,
}

/// One zstd frame of the compressed image.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageFrame {
    pub compressed_size: u64,
    pub raw_size: u64,
    /// SHA-256 of the frame's compressed bytes.
    pub sha256: Sha256Digest,
}

impl Manifest {
    /// Pretty JSON with a final newline, so the file diffs and reads well.
    pub fn to_json(&self) -> String {
        let mut json =
            serde_json::to_string_pretty(self).expect("a manifest always serialises to JSON");
        json.push('\n');
        json
    }

    /// Parses a manifest and refuses layouts this version does not understand.
    pub fn from_json(text: &str) -> Result<Self> {
        let manifest: Manifest = serde_json::from_str(text).context("manifest is not valid")?;
        if manifest.format != MANIFEST_FORMAT {
            bail!(
                "manifest format {} is not supported (this meetbox reads format {MANIFEST_FORMAT}): use a matching meetbox version",
                manifest.format
            );
        }
        Ok(manifest)
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        atomic_file::write(path, self.to_json().as_bytes(), atomic_file::PUBLIC_MODE)
            .with_context(|| format!("cannot write the manifest {}", path.display()))
    }

    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the manifest {}", path.display()))?;
        Self::from_json(&text).with_context(|| format!("in {}", path.display()))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A manifest with plausible values, for tests here and in `signing`/`verify`.
    pub(crate) fn sample(name: &str, raw: &[u8], compressed: &[u8]) -> Manifest {
        let sector = 512u64;
        let raw_size = raw.len() as u64;
        let last_usable = raw_size / sector - 34;
        Manifest {
            format: MANIFEST_FORMAT,
            name: name.to_string(),
            meetbox_version: env!("CARGO_PKG_VERSION").to_string(),
            base: "ubuntu-24.04".to_string(),
            profile: serde_json::json!({ "name": "test", "hostname": "meet" }),
            packages: vec![Package {
                name: "systemd".into(),
                version: "255.4-1ubuntu8".into(),
                architecture: "amd64".into(),
            }],
            disk: Disk {
                size_bytes: raw_size,
                disk_guid: Uuid::from_u128(0x1111),
                sector_size: sector as u32,
                partitions: vec![Partition {
                    number: 1,
                    name: "root".into(),
                    type_guid: Uuid::parse_str("4f68bce3-e8cd-4db1-96e7-fbcaf984b709").unwrap(),
                    partition_guid: Uuid::from_u128(0x2222),
                    first_lba: 40,
                    last_lba: last_usable,
                    size_bytes: (last_usable - 40 + 1) * sector,
                    filesystem: "ext4".into(),
                    filesystem_uuid: Uuid::from_u128(0x3333).to_string(),
                }],
            },
            image: ImageFiles {
                raw_size_bytes: raw_size,
                raw_sha256: Sha256Digest::of(raw),
                compressed_file: format!("{name}.img.zst"),
                compressed_size_bytes: compressed.len() as u64,
                compressed_sha256: Sha256Digest::of(compressed),
                bmap_file: format!("{name}.img.bmap"),
                frames: Vec::new(),
            },
            source_date_epoch: 1_700_000_000,
            updates: Default::default(),
        }
    }

    #[test]
    fn json_round_trips_and_uses_hex_digests_and_hyphenated_guids() {
        let manifest = sample("meetbox-x", &[0u8; 1 << 20], b"zst");
        let json = manifest.to_json();
        assert!(json.contains(&format!(
            "\"raw_sha256\": \"{}\"",
            Sha256Digest::of(&[0u8; 1 << 20])
        )));
        assert!(json.contains("\"type_guid\": \"4f68bce3-e8cd-4db1-96e7-fbcaf984b709\""));
        assert!(json.ends_with("}\n"));
        assert_eq!(Manifest::from_json(&json).unwrap(), manifest);
    }

    #[test]
    fn unknown_format_is_refused() {
        let mut manifest = sample("m", &[0u8; 1 << 20], b"");
        manifest.format = 2;
        let error = Manifest::from_json(&manifest.to_json()).unwrap_err();
        assert!(format!("{error:#}").contains("format 2"), "{error:#}");
    }

    #[test]
    fn write_then_read_gives_the_same_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.manifest.json");
        let manifest = sample("m", &[7u8; 1 << 20], b"c");
        manifest.write(&path).unwrap();
        assert_eq!(Manifest::read(&path).unwrap(), manifest);
    }
}
