//! `meetbox verify`: checks a build's signatures, checksums and manifest and the
//! decompressed image, reading the compressed image once. A lighter pass serves
//! `meetbox flash` (`check_signatures`) and `meetbox inspect` (`signature_status`):
//! it checks the image's signature through its signed trusted comment, and the
//! image's bytes frame by frame, on every core, against the SHA-256 of each frame
//! that the signed manifest lists (or, for an image whose manifest lists no
//! frames, by the SHA-256 of the whole file, which the trusted comment names).
//!
//! Why both ways are sound: a minisign signature carries two Ed25519 signatures
//! by the same key, one over the BLAKE2b-512 of the file and a global one over
//! that signature and the trusted comment. meetbox's trusted comment names the
//! file and its SHA-256 ([`TrustedComment`]), so the global signature and a
//! matching SHA-256 authenticate the file as firmly as the BLAKE2b one, and save
//! a second hash over the image (BLAKE2b runs at about two thirds of SHA-256's
//! speed on CPUs with SHA extensions). `meetbox verify` checks both, as the
//! minisign CLI would.

mod image;
mod signatures;

use image::*;
use signatures::*;

pub mod inspect;

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Cursor, Read, Seek, SeekFrom};
use std::ops::ControlFlow;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use ct_codecs::{Base64, Decoder};
use minisign::{PublicKey, SignatureBox};
use sha2::{Digest, Sha256};

use crate::artifact::blockmap::BlockMap;
use crate::artifact::checksums::{digest_listed_for, parse_sums, Sha256Digest, SUMS_FILE};
use crate::artifact::files::BuildFiles;
use crate::artifact::manifest::{ImageFrame, Manifest};
use crate::artifact::seek_table::SeekTable;
use crate::host::pool::{run_ordered, Pool};
use crate::host::progress::{detail, human_bytes, step, Progress};
use crate::sign::keys::{
    default_secret_key_path, load_public_key, public_key_path_for, user_config_dir,
};
use crate::sign::TrustedComment;

/// Size of the blocks the image is read and handed to the checking threads in.
const CHUNK_BYTES: usize = 1 << 20;
/// Blocks in flight per checking thread: enough to keep both cores busy, little memory.
const CHANNEL_DEPTH: usize = 16;

/// Check a build before trusting it: the minisign signatures of the image and of
/// SHA256SUMS, the digests SHA256SUMS lists, the manifest, and the SHA-256 and size
/// of the decompressed image. Reads the compressed image once. Exits 0 only if every
/// check passes; each failed check is named with its reason.
#[derive(clap::Args, Clone, Debug)]
#[command(after_help = "Examples:\n  \
    meetbox verify out/meetbox-office-ubuntu-24.04.img.zst --pubkey meetbox-release.pub\n  \
    meetbox verify out/meetbox-test-debian-12.img.zst    # key of this machine's builds\n\n\
The files of the build must sit next to the image: NAME.img.zst.minisig, NAME.img.bmap,\n\
NAME.manifest.json, SHA256SUMS and SHA256SUMS.minisig. The reference tools check the\n\
same signatures: minisign -Vm NAME.img.zst -p KEY.pub; sha256sum -c SHA256SUMS.")]
pub struct VerifyArgs {
    /// The compressed image, NAME.img.zst.
    #[arg(value_name = "NAME.img.zst")]
    pub image: PathBuf,
    /// Public key that must have signed the build. Default: the public key of the
    /// signing key in the user's config directory (the key local builds use).
    #[arg(long, value_name = "KEY.pub")]
    pub pubkey: Option<PathBuf>,
}

/// Runs `meetbox verify` and prints its report. `Ok(true)` when every check passed,
/// `Ok(false)` when one failed (the report names it; exit with 1), `Err` when the
/// checks could not run at all (no image, no public key).
pub fn run_verify(args: &VerifyArgs) -> Result<bool> {
    let report = verify_build(&args.image, args.pubkey.as_deref())?;
    println!("{report}");
    if !report.passed() {
        eprintln!(
            "verification FAILED: {} of {} checks failed; do not use this image",
            report.failures().count(),
            report.checks.len()
        );
    }
    Ok(report.passed())
}

/// Every check, including decompressing the image and comparing it with the manifest.
pub fn verify_build(image_zst: &Path, pubkey: Option<&Path>) -> Result<VerifyReport> {
    Ok(check_build(image_zst, pubkey, Depth::Full)?.report)
}

/// Per-check status without decompressing (for `meetbox inspect`); never fails
/// because a check fails, only when the checks cannot run.
pub fn signature_status(image_zst: &Path, pubkey: Option<&Path>) -> Result<VerifyReport> {
    Ok(check_build(image_zst, pubkey, Depth::Signatures)?.report)
}

/// A build whose signatures, checksums and manifest hold, ready for `meetbox flash`.
/// The manifest and block map are parsed from the very bytes that were checked;
/// the image may change after this check: `frames` lets flash prove that each
/// frame it reads again is the one signed.
#[derive(Clone, Debug)]
pub struct VerifiedBuild {
    pub files: BuildFiles,
    pub manifest: Manifest,
    pub block_map: BlockMap,
    pub public_key_path: PathBuf,
    /// The image's frames and the signed SHA-256 of each; `None` for an image
    /// whose manifest lists no frames.
    pub frames: Option<VerifiedFrames>,
}

/// The frames of a compressed image and the signed SHA-256 of each frame's bytes
/// (`sha256[i]` is that of `table.frames[i]`), all found in the file as signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedFrames {
    pub table: SeekTable,
    pub sha256: Vec<[u8; 32]>,
}

/// Checks both signatures, SHA256SUMS, the manifest and the image's frames (or
/// its whole SHA-256), without decompressing; fails naming every check that did
/// not pass.
pub fn check_signatures(image_zst: &Path, pubkey: Option<&Path>) -> Result<VerifiedBuild> {
    let Checked {
        report,
        frames,
        bmap,
    } = check_build(image_zst, pubkey, Depth::Signatures)?;
    if !report.passed() {
        let reasons: Vec<String> = report.failures().map(ToString::to_string).collect();
        bail!(
            "{} failed verification:\n  {}",
            image_zst.display(),
            reasons.join("\n  ")
        );
    }
    let manifest = report
        .manifest
        .clone()
        .expect("a passed report has a manifest");
    let bmap = bmap.expect("a passed report has read the block map");
    let block_map = std::str::from_utf8(&bmap)
        .map_err(anyhow::Error::from)
        .and_then(BlockMap::parse)
        .with_context(|| format!("in {}", report.files.bmap().display()))?;
    Ok(VerifiedBuild {
        frames,
        block_map,
        files: report.files,
        manifest,
        public_key_path: report.public_key_path,
    })
}

/// The public key to check with: the given one, else the default signing key's.
pub fn resolve_public_key(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    let path = public_key_path_for(&default_secret_key_path(&user_config_dir()?));
    if !path.exists() {
        bail!(
            "no --pubkey given and no default key at {}: pass the public key the image was signed with (--pubkey KEY.pub)",
            path.display()
        );
    }
    detail(format!("public key: {} (default)", path.display()));
    Ok(path)
}

/// Result of one check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckResult {
    /// What was checked, e.g. "signature of NAME.img.zst".
    pub check: String,
    pub outcome: Outcome,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Passed; the text says what was found.
    Passed(String),
    /// Failed; the text says why and what it means.
    Failed(String),
}

impl fmt::Display for CheckResult {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.outcome {
            Outcome::Passed(detail) => write!(f, "ok    {}: {detail}", self.check),
            Outcome::Failed(reason) => write!(f, "FAIL  {}: {reason}", self.check),
        }
    }
}

/// Everything one verification found.
#[derive(Clone, Debug)]
pub struct VerifyReport {
    pub files: BuildFiles,
    pub public_key_path: PathBuf,
    pub checks: Vec<CheckResult>,
    /// The manifest, if it could be read (trust it only if `passed()`).
    pub manifest: Option<Manifest>,
    pub compressed_size: u64,
    /// Size of the decompressed image, when it was decompressed completely.
    pub raw_size: Option<u64>,
    pub elapsed: Duration,
}

impl VerifyReport {
    pub fn passed(&self) -> bool {
        self.failures().next().is_none()
    }

    pub fn failures(&self) -> impl Iterator<Item = &CheckResult> {
        self.checks
            .iter()
            .filter(|check| matches!(check.outcome, Outcome::Failed(_)))
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} with {}:",
            self.files.image_zst().display(),
            self.public_key_path.display()
        )?;
        for check in &self.checks {
            writeln!(f, "  {check}")?;
        }
        let secs = self.elapsed.as_secs_f64().max(1e-3);
        let read = self.raw_size.unwrap_or(self.compressed_size);
        write!(
            f,
            "{}: {} compressed{} checked in {:.1} s ({}/s)",
            if self.passed() { "PASSED" } else { "FAILED" },
            human_bytes(self.compressed_size),
            self.raw_size
                .map(|raw| format!(", {} raw", human_bytes(raw)))
                .unwrap_or_default(),
            secs,
            human_bytes((read as f64 / secs) as u64)
        )
    }
}

/// How much `check_build` computes over the image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Depth {
    /// Each frame the signed manifest lists, against its SHA-256, on every core
    /// (the whole file's SHA-256 when it lists none); the image signature through
    /// its signed trusted comment (see the module documentation).
    Signatures,
    /// The SHA-256 of the whole compressed image, the BLAKE2b prehash of its
    /// signature, and the decompressed image against the manifest.
    Full,
}

/// What `check_build` found: the report, and what `meetbox flash` goes on with.
struct Checked {
    report: VerifyReport,
    /// The image's frames as checked, when they were checked one by one.
    frames: Option<VerifiedFrames>,
    /// The block map's bytes, as hashed for the SHA256SUMS check.
    bmap: Option<Vec<u8>>,
}

/// Builds the report: reads the small files (each once: the bytes hashed are the
/// bytes parsed), reads the image once, then judges.
fn check_build(image_zst: &Path, pubkey: Option<&Path>, depth: Depth) -> Result<Checked> {
    let started = Instant::now();
    let read = read_build(image_zst, pubkey, depth)?;
    Ok(judge(read, depth == Depth::Full, started))
}

/// Everything of a build that the checks judge, read once.
struct ReadBuild {
    files: BuildFiles,
    public_key_path: PathBuf,
    public: PublicKey,
    image_signature: Result<SignatureBox, String>,
    image_verdict: Option<Result<(), String>>,
    manifest_bytes: Result<Vec<u8>, String>,
    bmap_bytes: Result<Vec<u8>, String>,
    manifest: Result<Manifest, String>,
    read: ImageRead,
}

fn read_build(image_zst: &Path, pubkey: Option<&Path>, depth: Depth) -> Result<ReadBuild> {
    let decompress = depth == Depth::Full;
    let files = BuildFiles::from_image_zst(image_zst)?;
    let public_key_path = resolve_public_key(pubkey)?;
    let public = load_public_key(&public_key_path)?;
    let image = File::open(files.image_zst())
        .with_context(|| format!("cannot open the image {}", files.image_zst().display()))?;
    let size = image.metadata()?.len();
    step(format!(
        "Verifying {}{}",
        files.image_zst_name(),
        if decompress { "" } else { " (signatures only)" }
    ));

    let image_signature = read_signature(&files.image_signature());
    let usable_signature = image_signature
        .as_ref()
        .ok()
        .filter(|signature| signature_usable(signature, &public).is_ok());
    let manifest_bytes = read_small_file(&files.manifest());
    let bmap_bytes = read_small_file(&files.bmap());
    let manifest = manifest_bytes
        .as_ref()
        .map_err(Clone::clone)
        .and_then(|bytes| {
            std::str::from_utf8(bytes)
                .map_err(anyhow::Error::from)
                .and_then(Manifest::from_json)
                .map_err(|e| format!("in {}: {e:#}", files.manifest().display()))
        });
    let listed_frames = manifest
        .as_ref()
        .ok()
        .map(|m| &m.image.frames[..])
        .filter(|frames| depth == Depth::Signatures && !frames.is_empty());
    let read = match listed_frames {
        Some(frames) => check_frames(&image, size, frames),
        None => stream_image(
            image,
            size,
            usable_signature
                .filter(|_| depth == Depth::Full)
                .map(|s| (&public, s)),
            decompress,
        )?,
    };
    // The image signature's verdict: over the whole file, or over its trusted
    // comment (whose SHA-256 the comment check then compares with the file's).
    let image_verdict = match (&read.signature, usable_signature) {
        (Some(verdict), _) => Some(verdict.clone()),
        (None, Some(signature)) => Some(verify_comment_signature(&public, signature)),
        (None, None) => None,
    };

    Ok(ReadBuild {
        files,
        public_key_path,
        public,
        image_signature,
        image_verdict,
        manifest_bytes,
        bmap_bytes,
        manifest,
        read,
    })
}

/// The checks' verdicts on what [`read_build`] read.
fn judge(build: ReadBuild, decompress: bool, started: Instant) -> Checked {
    let key = KeyContext {
        public: &build.public,
        path: &build.public_key_path,
    };
    let sums_text = fs::read_to_string(build.files.sums())
        .with_context(|| format!("cannot read {}", build.files.sums().display()))
        .map_err(|e| format!("{e:#}: missing file"));

    let mut checks = vec![
        check_image_signature(
            &build.files,
            &key,
            &build.image_signature,
            build.image_verdict.as_ref(),
        ),
        check_image_comment(
            &build.files,
            &build.image_signature,
            build.image_verdict.as_ref(),
            &build.read,
            build.manifest.as_ref().ok(),
        ),
        check_sums_signature(&build.files, &key, &sums_text),
        check_sums_listing(
            &build.files,
            &sums_text,
            [
                build.read.compressed_sha256(build.manifest.as_ref().ok()),
                digest_of(&build.bmap_bytes),
                digest_of(&build.manifest_bytes),
            ],
        ),
        check_manifest(&build.files, &build.manifest, &build.read),
    ];
    if let ImageBytes::Frames(frames) = &build.read.bytes {
        checks.push(check_frame_digests(&build.files, frames));
    }
    if decompress {
        checks.push(check_decompressed(
            &build.files,
            &build.read,
            build.manifest.as_ref().ok(),
        ));
    }
    let report = VerifyReport {
        files: build.files,
        public_key_path: build.public_key_path,
        checks,
        manifest: build.manifest.ok(),
        compressed_size: build.read.compressed_size,
        raw_size: build
            .read
            .raw
            .as_ref()
            .and_then(|raw| raw.as_ref().ok())
            .map(|r| r.0),
        elapsed: started.elapsed(),
    };
    let frames = match build.read.bytes {
        ImageBytes::Frames(Ok(frames)) => Some(frames),
        _ => None,
    };
    Checked {
        report,
        frames,
        bmap: build.bmap_bytes.ok(),
    }
}

/// Reads a small file of the build whole; the error names it as missing.
#[cfg(test)]
mod tests;
