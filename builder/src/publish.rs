//! The last stage of a build: from a raw disk image to the published, signed artifacts. The
//! block map, the compressed image in frames with its seek table, the manifest that lists both
//! with the frames' digests, then `SHA256SUMS` and the signatures. `meetbox build` and the test
//! fixtures both publish through [`publish`], so what the tests flash and verify is made exactly
//! as a release is.

use std::path::Path;

use anyhow::Result;

use crate::artifact::blockmap::BlockMap;
use crate::artifact::compress::{self, Compressed};
use crate::artifact::files::BuildFiles;
use crate::artifact::frame_cache::FrameCache;
use crate::artifact::manifest::{self, ImageFiles, Manifest, MANIFEST_FORMAT};
use crate::host::progress;
use crate::sign::{self, keys::SigningKey};

/// What the manifest says about an image besides its bytes.
pub struct Description {
    pub name: String,
    pub base: String,
    pub profile: serde_json::Value,
    pub packages: Vec<manifest::Package>,
    pub disk: manifest::Disk,
    pub source_date_epoch: u64,
    pub updates: manifest::Updates,
}

/// How the image is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing<'a> {
    /// Independent frames of `size` raw bytes and a seek table (what `meetbox build` writes),
    /// reusing the frames an earlier build of the same image left in `cache`.
    Frames { size: u64, cache: Option<&'a Path> },
    /// One multithreaded zstd stream, as images built before the frames (tests of old images).
    Single,
}

/// Publishes `raw` into `out` as `description.name`: block map, compressed image, manifest,
/// checksums and signatures. The raw image is left in place.
pub fn publish(
    raw: &Path,
    out: &Path,
    description: Description,
    key: &SigningKey,
    level: i32,
    framing: Framing,
) -> Result<Compressed> {
    let files = BuildFiles::new(out, &description.name);
    progress::step("Block map");
    let block_map = BlockMap::from_image(raw)?;
    block_map.write(&files.bmap())?;
    progress::detail(format!(
        "{} of {} mapped",
        progress::human_bytes(block_map.mapped_bytes()),
        progress::human_bytes(description.disk.size_bytes)
    ));

    progress::step(format!("Compressing (zstd level {level})"));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let compressed = match framing {
        Framing::Frames { size, cache: None } => {
            compress::compress_in_frames(raw, &files.image_zst(), level, threads, size, None)?
        }
        Framing::Frames {
            size,
            cache: Some(dir),
        } => {
            let cache = FrameCache::open(dir, level)?;
            let compressed = compress::compress_in_frames(
                raw,
                &files.image_zst(),
                level,
                threads,
                size,
                Some(&cache),
            )?;
            let found = cache.finish()?;
            progress::detail(format!(
                "frame cache: {} of {} frames found compressed already, by an earlier build or \
                 as an equal frame of this one ({} no longer needed, removed)",
                found.hits, found.frames, found.removed
            ));
            compressed
        }
        Framing::Single => {
            compress::compress_single_frame(raw, &files.image_zst(), level, threads)?
        }
    };

    let manifest = Manifest {
        format: MANIFEST_FORMAT,
        name: description.name.clone(),
        meetbox_version: env!("CARGO_PKG_VERSION").to_string(),
        base: description.base,
        profile: description.profile,
        packages: description.packages,
        disk: description.disk,
        image: ImageFiles {
            raw_size_bytes: compressed.raw_size,
            raw_sha256: compressed.raw_sha256,
            compressed_file: files.image_zst_name(),
            compressed_size_bytes: compressed.compressed_size,
            compressed_sha256: compressed.compressed_sha256,
            frames: compressed.frames.clone(),
            bmap_file: files.bmap_name(),
        },
        source_date_epoch: description.source_date_epoch,
        updates: description.updates,
    };
    manifest.write(&files.manifest())?;
    sign::sign_build(out, &description.name, key)?;
    Ok(compressed)
}
