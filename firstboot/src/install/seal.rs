//! What the image carries for its own installer, and what `meetbox install --list` answers: the
//! on-box crate owns both formats, and the builder writes exactly these types.
//!
//! The seal lists the image's bytes outside the ESP as block ranges with their SHA-256, and the
//! ESP's files one by one. The ESP is checked by file, not by byte, because the owner may add an
//! answers file to the stick's ESP (and their computer may add its own hidden files there); the
//! seal itself, and its signature, are files on that ESP, so they cannot be among the bytes they
//! describe.

use serde::{Deserialize, Serialize};

/// The only seal format this agent and `meetbox install` read.
pub const SEAL_FORMAT: u32 = 1;

/// The signed description of an image, placed on its ESP at [`crate::layout::ESP_SEAL`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallSeal {
    /// [`SEAL_FORMAT`]; a reader refuses any other.
    pub format: u32,
    /// The image's name, as in `NAME.img.zst`.
    pub name: String,
    pub image_size: u64,
    pub block_size: u64,
    /// Where the ESP lies in the image, in bytes.
    pub esp_offset: u64,
    pub esp_size: u64,
    /// The mapped block ranges outside the ESP (partition tables, root), sorted, inclusive.
    pub ranges: Vec<SealedRange>,
    /// Every file the build put on the ESP except the seal and its signature.
    pub esp_files: Vec<SealedFile>,
}

/// Blocks `first..=last` of the image and the SHA-256 (hex) of their bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedRange {
    pub first: u64,
    pub last: u64,
    pub sha256: String,
}

/// One file on the ESP: its path ('/'-separated, from the ESP's root), size and SHA-256 (hex).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedFile {
    pub path: String,
    pub size: u64,
    pub sha256: String,
}

/// `meetbox install --list STICK`: every disk of the computer, with the reasons it cannot take the
/// image (none: it may be offered).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskList {
    /// Bytes the image needs.
    pub image_size: u64,
    pub disks: Vec<DiskChoice>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiskChoice {
    /// e.g. `/dev/nvme0n1`.
    pub device: String,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub size_bytes: u64,
    /// nvme, sata, virtio, usb, mmc...
    pub transport: String,
    /// Why it is not offered, in the owner's words; empty when it is.
    pub refusals: Vec<String>,
}

impl DiskChoice {
    pub fn offered(&self) -> bool {
        self.refusals.is_empty()
    }
}
