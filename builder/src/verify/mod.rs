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

pub mod inspect;

use std::fmt;
use std::fs::{self, File};
use std::io::{self, Cursor, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
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
    let decompress = depth == Depth::Full;
    let started = Instant::now();
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

    let key = KeyContext {
        public: &public,
        path: &public_key_path,
    };
    let sums_text = fs::read_to_string(files.sums())
        .with_context(|| format!("cannot read {}", files.sums().display()))
        .map_err(|e| format!("{e:#}: missing file"));

    let mut checks = vec![
        check_image_signature(&files, &key, &image_signature, image_verdict.as_ref()),
        check_image_comment(
            &files,
            &image_signature,
            image_verdict.as_ref(),
            &read,
            manifest.as_ref().ok(),
        ),
        check_sums_signature(&files, &key, &sums_text),
        check_sums_listing(
            &files,
            &sums_text,
            [
                read.compressed_sha256(manifest.as_ref().ok()),
                digest_of(&bmap_bytes),
                digest_of(&manifest_bytes),
            ],
        ),
        check_manifest(&files, &manifest, &read),
    ];
    if let ImageBytes::Frames(frames) = &read.bytes {
        checks.push(check_frame_digests(&files, frames));
    }
    if decompress {
        checks.push(check_decompressed(&files, &read, manifest.as_ref().ok()));
    }
    let report = VerifyReport {
        files,
        public_key_path,
        checks,
        manifest: manifest.ok(),
        compressed_size: read.compressed_size,
        raw_size: read
            .raw
            .as_ref()
            .and_then(|raw| raw.as_ref().ok())
            .map(|r| r.0),
        elapsed: started.elapsed(),
    };
    let frames = match read.bytes {
        ImageBytes::Frames(Ok(frames)) => Some(frames),
        _ => None,
    };
    Ok(Checked {
        report,
        frames,
        bmap: bmap_bytes.ok(),
    })
}

/// Reads a small file of the build whole; the error names it as missing.
fn read_small_file(path: &Path) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| format!("cannot read {}: {e}: missing file", path.display()))
}

fn digest_of(bytes: &Result<Vec<u8>, String>) -> Result<Sha256Digest, String> {
    bytes
        .as_ref()
        .map(|b| Sha256Digest::of(b))
        .map_err(Clone::clone)
}

/// The public key and where it came from, for messages.
struct KeyContext<'a> {
    public: &'a PublicKey,
    path: &'a Path,
}

fn read_signature(path: &Path) -> Result<SignatureBox, String> {
    let text = fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}: missing file", path.display()))?;
    SignatureBox::from_string(&text)
        .map_err(|e| format!("{} is not a minisign signature: {e}", path.display()))
}

fn key_id(keynum: &[u8]) -> String {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&keynum[..8]);
    format!("{:016X}", u64::from_le_bytes(bytes))
}

/// Whether a signature can be checked with the key at all (same key ID, prehashed).
/// Legacy signatures would need the whole file in memory: images are GBs.
fn signature_usable(signature: &SignatureBox, key: &PublicKey) -> Result<(), String> {
    if signature.keynum() != key.keynum() {
        return Err(format!(
            "signed with key ID {}, but the public key has ID {}: wrong public key, or a file signed by someone else",
            key_id(signature.keynum()),
            key_id(key.keynum())
        ));
    }
    if !signature.is_prehashed() {
        return Err("legacy (not prehashed) signature: meetbox only writes prehashed ones".into());
    }
    Ok(())
}

/// Verifies a signature of a small in-memory file.
fn verify_small(key: &PublicKey, signature: &SignatureBox, data: &[u8]) -> Result<(), String> {
    signature_usable(signature, key)?;
    minisign::verify(key, signature, Cursor::new(data), true, false, false)
        .map_err(|e| e.to_string())
}

/// Verifies a signature's global Ed25519 signature, which covers the file
/// signature and the trusted comment, with `key` (the check minisign makes after
/// the one over the file's BLAKE2b-512). The trusted comment is then authentic.
fn verify_comment_signature(key: &PublicKey, signature: &SignatureBox) -> Result<(), String> {
    signature_usable(signature, key)?;
    let malformed = || "the signature file is malformed".to_string();
    // The text form: untrusted comment, base64 of algorithm (2 bytes), key ID (8)
    // and file signature (64), the trusted comment, base64 of the global signature.
    let text = signature.to_string();
    let lines: Vec<&str> = text.lines().collect();
    let [_, file_signature, _, global] = lines[..] else {
        return Err(malformed());
    };
    let file_signature = Base64::decode_to_vec(file_signature, None).map_err(|_| malformed())?;
    let global = Base64::decode_to_vec(global, None).map_err(|_| malformed())?;
    let comment = signature.trusted_comment().map_err(|e| e.to_string())?;
    if file_signature.len() != 74 || global.len() != 64 {
        return Err(malformed());
    }
    let mut signed = file_signature[10..].to_vec();
    signed.extend_from_slice(comment.as_bytes());
    let public = key.to_bytes();
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &public[10..])
        .verify(&signed, &global)
        .map_err(|_| "Comment signature verification failed".to_string())
}

/// The authenticated trusted comment of a signature that verified.
fn trusted_comment(signature: &SignatureBox) -> Result<TrustedComment, String> {
    let text = signature.trusted_comment().map_err(|e| e.to_string())?;
    TrustedComment::parse(&text).map_err(|e| format!("{e:#}"))
}

fn check_image_signature(
    files: &BuildFiles,
    key: &KeyContext,
    signature: &Result<SignatureBox, String>,
    verdict: Option<&Result<(), String>>,
) -> CheckResult {
    let check = format!("signature of {}", files.image_zst_name());
    let outcome = match signature {
        Err(reason) => Outcome::Failed(reason.clone()),
        Ok(signature) => match signature_usable(signature, key.public) {
            Err(reason) => Outcome::Failed(reason),
            Ok(()) => match verdict {
                Some(Ok(())) => Outcome::Passed(format!("key ID {}", key_id(key.public.keynum()))),
                Some(Err(reason)) => Outcome::Failed(format!(
                    "does not verify with {} ({reason}): wrong key or altered file",
                    key.path.display()
                )),
                None => Outcome::Failed("was not checked".into()),
            },
        },
    };
    CheckResult { check, outcome }
}

fn check_image_comment(
    files: &BuildFiles,
    signature: &Result<SignatureBox, String>,
    verdict: Option<&Result<(), String>>,
    read: &ImageRead,
    manifest: Option<&Manifest>,
) -> CheckResult {
    let check = format!("trusted comment of {}", files.image_zst_name());
    let outcome = match (signature, verdict) {
        (Ok(signature), Some(Ok(()))) => match trusted_comment(signature) {
            Err(reason) => Outcome::Failed(reason),
            Ok(comment) => judge_image_comment(files, &comment, read, manifest),
        },
        _ => Outcome::Failed("not trusted: the signature did not verify".into()),
    };
    CheckResult { check, outcome }
}

fn judge_image_comment(
    files: &BuildFiles,
    comment: &TrustedComment,
    read: &ImageRead,
    manifest: Option<&Manifest>,
) -> Outcome {
    if comment.file != files.image_zst_name() {
        return Outcome::Failed(format!(
            "the signature is for {}, not {}: a file of another build was put in its place",
            comment.file,
            files.image_zst_name()
        ));
    }
    match read.compressed_sha256(manifest) {
        Err(reason) => return Outcome::Failed(reason),
        Ok(actual) if actual != comment.sha256 => {
            return Outcome::Failed(format!(
                "the file does not match its signature: the signed sha256 {} differs from the file's {actual}",
                comment.sha256
            ))
        }
        Ok(_) => {}
    }
    match (comment.raw_sha256, manifest) {
        (None, _) => Outcome::Failed("names no raw-sha256 of the image".into()),
        (Some(raw), Some(manifest)) if raw != manifest.image.raw_sha256 => {
            Outcome::Failed(format!(
                "signed raw-sha256 {raw} differs from the manifest's {}: the manifest belongs to another build",
                manifest.image.raw_sha256
            ))
        }
        _ => Outcome::Passed(format!(
            "meetbox {}, sha256 {}",
            comment.meetbox_version, comment.sha256
        )),
    }
}

fn check_sums_signature(
    files: &BuildFiles,
    key: &KeyContext,
    sums_text: &Result<String, String>,
) -> CheckResult {
    let check = format!("signature of {SUMS_FILE}");
    let outcome = (|| {
        let text = sums_text.as_ref().map_err(Clone::clone)?;
        let signature = read_signature(&files.sums_signature())?;
        verify_small(key.public, &signature, text.as_bytes()).map_err(|reason| {
            format!(
                "does not verify with {} ({reason}): wrong key or altered file",
                key.path.display()
            )
        })?;
        let comment = trusted_comment(&signature)?;
        let digest = Sha256Digest::of(text.as_bytes());
        if comment.file != SUMS_FILE || comment.sha256 != digest {
            return Err(format!(
                "the signature is for {} sha256 {}, the file is {SUMS_FILE} sha256 {digest}",
                comment.file, comment.sha256
            ));
        }
        Ok(format!("meetbox {}", comment.meetbox_version))
    })();
    CheckResult {
        check,
        outcome: outcome.map_or_else(Outcome::Failed, Outcome::Passed),
    }
}

/// Compares SHA256SUMS with the digests of the image, the block map and the
/// manifest, in that order.
fn check_sums_listing(
    files: &BuildFiles,
    sums_text: &Result<String, String>,
    digests: [Result<Sha256Digest, String>; 3],
) -> CheckResult {
    let check = format!("{SUMS_FILE} digests");
    let outcome = (|| {
        let text = sums_text.as_ref().map_err(Clone::clone)?;
        let entries = parse_sums(text).map_err(|e| format!("{e:#}"))?;
        let names = [
            files.image_zst_name(),
            files.bmap_name(),
            files.manifest_name(),
        ];
        for (name, digest) in names.into_iter().zip(digests) {
            let listed = digest_listed_for(&entries, &name).map_err(|e| e.to_string())?;
            let digest = digest?;
            if listed != digest {
                return Err(format!(
                    "lists sha256 {listed} for {name}, the file has {digest}: altered or swapped file"
                ));
            }
        }
        Ok("image, block map and manifest match".to_string())
    })();
    CheckResult {
        check,
        outcome: outcome.map_or_else(Outcome::Failed, Outcome::Passed),
    }
}

fn check_manifest(
    files: &BuildFiles,
    manifest: &Result<Manifest, String>,
    read: &ImageRead,
) -> CheckResult {
    let check = format!("manifest {}", files.manifest_name());
    let outcome = (|| {
        let manifest = manifest.as_ref().map_err(Clone::clone)?;
        let image = &manifest.image;
        let compressed_sha256 = read.compressed_sha256(Some(manifest))?;
        let expected = [
            ("name", manifest.name.clone(), files.name.clone()),
            (
                "compressed_file",
                image.compressed_file.clone(),
                files.image_zst_name(),
            ),
            ("bmap_file", image.bmap_file.clone(), files.bmap_name()),
            (
                "compressed_sha256",
                image.compressed_sha256.to_string(),
                compressed_sha256.to_string(),
            ),
            (
                "compressed_size_bytes",
                image.compressed_size_bytes.to_string(),
                read.compressed_size.to_string(),
            ),
        ];
        for (field, found, actual) in expected {
            if found != actual {
                return Err(format!(
                    "says {field} {found}, the files have {actual}: the image or the manifest was altered or comes from another build"
                ));
            }
        }
        Ok(format!(
            "{} {}, built by meetbox {}",
            manifest.name, manifest.base, manifest.meetbox_version
        ))
    })();
    CheckResult {
        check,
        outcome: outcome.map_or_else(Outcome::Failed, Outcome::Passed),
    }
}

fn check_frame_digests(files: &BuildFiles, frames: &Result<VerifiedFrames, String>) -> CheckResult {
    CheckResult {
        check: format!("frames of {}", files.image_zst_name()),
        outcome: match frames {
            Ok(frames) => Outcome::Passed(format!(
                "{} frames match their SHA-256 in the manifest",
                frames.sha256.len()
            )),
            Err(reason) => Outcome::Failed(reason.clone()),
        },
    }
}

fn check_decompressed(
    files: &BuildFiles,
    read: &ImageRead,
    manifest: Option<&Manifest>,
) -> CheckResult {
    let check = "decompressed image".to_string();
    let outcome = match (&read.raw, manifest) {
        (Some(Err(reason)), _) => Outcome::Failed(format!(
            "{} does not decompress ({reason}): truncated or altered",
            files.image_zst_name()
        )),
        (None, _) => Outcome::Failed("was not decompressed".into()),
        (Some(Ok(_)), None) => Outcome::Failed("no readable manifest to compare with".into()),
        (Some(Ok((size, digest))), Some(manifest)) => {
            let image = &manifest.image;
            if *size != image.raw_size_bytes || *digest != image.raw_sha256 {
                Outcome::Failed(format!(
                    "{size} bytes sha256 {digest}, the manifest says {} bytes sha256 {}",
                    image.raw_size_bytes, image.raw_sha256
                ))
            } else {
                Outcome::Passed(format!("{} sha256 {digest}", human_bytes(*size)))
            }
        }
    };
    CheckResult { check, outcome }
}

/// What one pass over the compressed image found.
struct ImageRead {
    bytes: ImageBytes,
    compressed_size: u64,
    /// Signature verification over the whole file, if it was asked for.
    signature: Option<Result<(), String>>,
    /// Size and SHA-256 of the decompressed image, if decompression was asked for.
    raw: Option<Result<(u64, Sha256Digest), String>>,
}

/// How the compressed image's bytes were checked.
enum ImageBytes {
    /// Hashed whole: its SHA-256.
    Whole(Sha256Digest),
    /// Frame by frame against the manifest: the frames, or why they do not match.
    Frames(Result<VerifiedFrames, String>),
}

impl ImageRead {
    /// The SHA-256 the image file is known to have: hashed whole, or, when every
    /// frame matched the manifest that lists them, the one that manifest names.
    fn compressed_sha256(&self, manifest: Option<&Manifest>) -> Result<Sha256Digest, String> {
        match (&self.bytes, manifest) {
            (ImageBytes::Whole(digest), _) => Ok(*digest),
            (ImageBytes::Frames(Ok(_)), Some(manifest)) => Ok(manifest.image.compressed_sha256),
            (ImageBytes::Frames(Ok(_)), None) => Err("no manifest lists the frames".into()),
            (ImageBytes::Frames(Err(_)), _) => {
                Err("the image's frames do not match the signed manifest".into())
            }
        }
    }
}

/// Checks the image frame by frame against the SHA-256 of each in the manifest.
/// The frames cover the file up to its seek table, which is not used (the
/// manifest lists the frames) and so not checked.
fn check_frames(image: &File, size: u64, listed: &[ImageFrame]) -> ImageRead {
    ImageRead {
        bytes: ImageBytes::Frames(hash_listed_frames(image, size, listed)),
        compressed_size: size,
        signature: None,
        raw: None,
    }
}

/// Reads and hashes the listed frames on every core (frames are independent, so
/// this runs at the disk's speed or the cores', not one core's); the frames with
/// their digests, or the first frame that differs from the list.
fn hash_listed_frames(
    image: &File,
    size: u64,
    listed: &[ImageFrame],
) -> Result<VerifiedFrames, String> {
    let sizes = listed
        .iter()
        .map(|f| {
            Some((
                u32::try_from(f.compressed_size).ok()?,
                u32::try_from(f.raw_size).ok()?,
            ))
        })
        .collect::<Option<Vec<_>>>()
        .ok_or("the manifest lists a frame of 4 GiB or more: it is not from meetbox")?;
    let table = SeekTable::from_sizes(&sizes);
    let total = table.compressed_size();
    if total > size {
        return Err(format!(
            "the manifest lists {total} bytes of frames but the file has {size}: it is truncated"
        ));
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(listed.len())
        .max(1);
    let next = AtomicUsize::new(0);
    let mut progress = Progress::bytes("verify", total);
    let (done_tx, done_rx) = sync_channel::<(usize, io::Result<[u8; 32]>)>(2 * threads);
    let digests = std::thread::scope(|scope| {
        for _ in 0..threads {
            let done = done_tx.clone();
            let (next, frames) = (&next, &table.frames);
            scope.spawn(move || {
                let mut bytes = Vec::new();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(frame) = frames.get(index) else {
                        break;
                    };
                    bytes.resize(frame.compressed_size as usize, 0);
                    let digest = image
                        .read_exact_at(&mut bytes, frame.compressed_offset)
                        .map(|_| Sha256::digest(&bytes).into());
                    if done.send((index, digest)).is_err() {
                        break; // the collector stopped at an unreadable frame
                    }
                }
            });
        }
        drop(done_tx);
        let mut digests = vec![[0u8; 32]; listed.len()];
        for (index, digest) in done_rx {
            let frame = &table.frames[index];
            digests[index] = digest.map_err(|e| {
                format!(
                    "cannot read bytes {}-{}: {e}",
                    frame.compressed_offset,
                    frame.compressed_offset + frame.compressed_size
                )
            })?;
            progress.inc(frame.compressed_size);
        }
        Ok::<_, String>(digests)
    })?;
    progress.finish();
    if let Some(index) = (0..listed.len()).find(|&i| digests[i] != listed[i].sha256.0) {
        let frame = &table.frames[index];
        return Err(format!(
            "the file does not match its signature: frame {index} (bytes {}-{}) differs from \
             its SHA-256 in the signed manifest; the file is damaged or was altered",
            frame.compressed_offset,
            frame.compressed_offset + frame.compressed_size
        ));
    }
    Ok(VerifiedFrames {
        table,
        sha256: digests,
    })
}

/// Reads the image once and hands each block to up to three threads: one computes
/// the SHA-256 of the compressed bytes, one the signature's BLAKE2b prehash, one
/// decompresses and hashes the raw image. Each hash runs at about one core's
/// speed, so splitting them lets the check run at the speed of the slowest one.
fn stream_image(
    mut image: File,
    size: u64,
    signature: Option<(&PublicKey, &SignatureBox)>,
    decompress: bool,
) -> Result<ImageRead> {
    std::thread::scope(|scope| {
        let (digest_tx, digest_rx) = sync_channel::<Arc<Vec<u8>>>(CHANNEL_DEPTH);
        let digest = scope.spawn(move || {
            let mut progress = Progress::bytes("verify", size);
            let mut hasher = Sha256::new();
            let mut total = 0u64;
            for block in digest_rx {
                hasher.update(&block[..]);
                total += block.len() as u64;
                progress.inc(block.len() as u64);
            }
            progress.finish();
            (Sha256Digest::from_hasher(hasher), total)
        });
        let mut consumers = vec![digest_tx];
        let verdict = signature.map(|(key, signature)| {
            let (tx, rx) = sync_channel(CHANNEL_DEPTH);
            consumers.push(tx);
            scope.spawn(move || {
                // It stops reading early on errors; the reader then stops sending to it.
                minisign::verify(
                    key,
                    signature,
                    Unseekable(ChannelReader::new(rx)),
                    true,
                    false,
                    false,
                )
                .map_err(|e| e.to_string())
            })
        });
        let raw_handle = decompress.then(|| {
            let (tx, rx) = sync_channel(CHANNEL_DEPTH);
            consumers.push(tx);
            scope.spawn(move || hash_decompressed(rx))
        });

        let read = feed_blocks(&mut image, consumers);
        let (compressed_sha256, compressed_size) =
            digest.join().expect("the hashing thread does not panic");
        let signature =
            verdict.map(|handle| handle.join().expect("the signature thread does not panic"));
        let raw = raw_handle.map(|handle| {
            handle
                .join()
                .expect("the decompressing thread does not panic")
                .map_err(|e| e.to_string())
        });
        read.context("cannot read the image")?;
        Ok(ImageRead {
            bytes: ImageBytes::Whole(compressed_sha256),
            compressed_size,
            signature,
            raw,
        })
    })
}

/// Reads the file in blocks and sends each to every consumer still listening (the
/// signature check and the decompressor stop listening when the data is bad; the
/// digest listens to the end).
fn feed_blocks(image: &mut File, mut consumers: Vec<SyncSender<Arc<Vec<u8>>>>) -> io::Result<()> {
    loop {
        let mut block = vec![0u8; CHUNK_BYTES];
        let filled = read_full(image, &mut block)?;
        if filled == 0 {
            return Ok(());
        }
        block.truncate(filled);
        let block = Arc::new(block);
        consumers.retain(|consumer| consumer.send(Arc::clone(&block)).is_ok());
        if consumers.is_empty() {
            return Ok(());
        }
    }
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_full(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Decompresses the blocks as a zstd stream and returns the raw size and SHA-256;
/// a truncated or corrupt stream is an error. Hashing runs in its own thread: the
/// raw image is several times larger than the compressed one and SHA-256 of it costs
/// about as much as decompressing it.
fn hash_decompressed(blocks: Receiver<Arc<Vec<u8>>>) -> io::Result<(u64, Sha256Digest)> {
    let (raw_tx, raw_rx) = sync_channel::<Vec<u8>>(CHANNEL_DEPTH);
    let (spare_tx, spare_rx) = sync_channel::<Vec<u8>>(CHANNEL_DEPTH + 2);
    std::thread::scope(|scope| {
        let hasher = scope.spawn(move || {
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            for block in raw_rx {
                hasher.update(&block);
                size += block.len() as u64;
                // The decompressor may have finished already; then the block is dropped.
                let _ = spare_tx.try_send(block);
            }
            (size, Sha256Digest::from_hasher(hasher))
        });
        let decoded = decompress_into(blocks, &raw_tx, &spare_rx);
        drop(raw_tx);
        let hashed = hasher.join().expect("the hashing thread does not panic");
        decoded.map(|()| hashed)
    })
}

/// Decompresses into blocks (reused once hashed) and sends them to the hasher.
fn decompress_into(
    blocks: Receiver<Arc<Vec<u8>>>,
    raw: &SyncSender<Vec<u8>>,
    spare: &Receiver<Vec<u8>>,
) -> io::Result<()> {
    let mut decoder = zstd::stream::read::Decoder::new(ChannelReader::new(blocks))?;
    loop {
        let mut block = spare.try_recv().unwrap_or_default();
        block.resize(CHUNK_BYTES, 0);
        let filled = read_full(&mut decoder, &mut block)?;
        if filled == 0 {
            return Ok(());
        }
        block.truncate(filled);
        if raw.send(block).is_err() {
            return Ok(());
        }
    }
}

/// Reads the blocks a channel delivers, as one stream; ends when the sender is gone.
struct ChannelReader {
    blocks: Receiver<Arc<Vec<u8>>>,
    current: Arc<Vec<u8>>,
    offset: usize,
}

impl ChannelReader {
    fn new(blocks: Receiver<Arc<Vec<u8>>>) -> Self {
        ChannelReader {
            blocks,
            current: Arc::new(Vec::new()),
            offset: 0,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.offset == self.current.len() {
            match self.blocks.recv() {
                Ok(block) => {
                    self.current = block;
                    self.offset = 0;
                }
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.offset);
        buf[..n].copy_from_slice(&self.current[self.offset..self.offset + n]);
        self.offset += n;
        Ok(n)
    }
}

/// `minisign::verify` wants `Seek` only to echo the data (`output = true`), which
/// we never ask for; a stream cannot seek.
struct Unseekable<R>(R);

impl<R: Read> Read for Unseekable<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R> Seek for Unseekable<R> {
    fn seek(&mut self, _: SeekFrom) -> io::Result<u64> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "a streamed image cannot seek",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::sign::keys::write_key_pair;
    use crate::sign::tests::{synthetic_build, SyntheticBuild};

    /// A signed 4 MiB build plus the directory holding its key; `None` = skipped.
    fn signed_build(seed: u64) -> Option<(SyntheticBuild, tempfile::TempDir)> {
        let keys = tempfile::tempdir().unwrap();
        let build = synthetic_build("meetbox-test", seed, keys.path())?;
        Some((build, keys))
    }

    fn verify(build: &SyntheticBuild) -> VerifyReport {
        verify_build(&build.files.image_zst(), Some(&build.key.public_key_path)).unwrap()
    }

    /// The lighter check `meetbox flash` and `meetbox inspect` make.
    fn status(build: &SyntheticBuild) -> VerifyReport {
        signature_status(&build.files.image_zst(), Some(&build.key.public_key_path)).unwrap()
    }

    /// The names of the failed checks, and the report text for assertion messages.
    fn failed(report: &VerifyReport) -> (Vec<String>, String) {
        let names = report.failures().map(|c| c.check.clone()).collect();
        (names, report.to_string())
    }

    fn flip_byte(path: &Path, offset: impl FnOnce(usize) -> usize) {
        let mut bytes = fs::read(path).unwrap();
        let at = offset(bytes.len());
        bytes[at] ^= 0x01;
        fs::write(path, bytes).unwrap();
    }

    #[test]
    fn an_intact_build_passes_every_check_and_reports_sizes() {
        let Some((build, _keys)) = signed_build(1) else {
            return;
        };
        let report = verify(&build);
        assert!(report.passed(), "{report}");
        assert_eq!(report.checks.len(), 6);
        assert_eq!(report.raw_size, Some(build.raw.len() as u64));
        assert!(report.to_string().contains("PASSED"), "{report}");
        assert!(run_verify(&VerifyArgs {
            image: build.files.image_zst(),
            pubkey: Some(build.key.public_key_path.clone()),
        })
        .unwrap());

        let verified =
            check_signatures(&build.files.image_zst(), Some(&build.key.public_key_path)).unwrap();
        assert_eq!(
            verified.manifest.image.raw_sha256,
            Sha256Digest::of(&build.raw)
        );
        assert_eq!(
            verified.block_map,
            BlockMap::read(&build.files.bmap()).unwrap()
        );
    }

    #[test]
    fn a_flipped_byte_anywhere_in_the_image_fails_its_signature_and_digests() {
        let offsets: [fn(usize) -> usize; 3] = [|_| 0, |len| len / 2, |len| len - 1];
        for offset in offsets {
            let Some((build, _keys)) = signed_build(2) else {
                return;
            };
            flip_byte(&build.files.image_zst(), offset);
            let report = verify(&build);
            let (names, text) = failed(&report);
            assert!(
                names.contains(&"signature of meetbox-test.img.zst".to_string()),
                "{text}"
            );
            assert!(names.contains(&"SHA256SUMS digests".to_string()), "{text}");
            assert!(text.contains("wrong key or altered file"), "{text}");
            assert!(!run_verify(&VerifyArgs {
                image: build.files.image_zst(),
                pubkey: Some(build.key.public_key_path.clone()),
            })
            .unwrap());
        }
    }

    #[test]
    fn a_truncated_image_does_not_decompress() {
        let Some((build, _keys)) = signed_build(3) else {
            return;
        };
        let bytes = fs::read(build.files.image_zst()).unwrap();
        fs::write(build.files.image_zst(), &bytes[..bytes.len() - 1000]).unwrap();
        let (names, text) = failed(&verify(&build));
        assert!(names.contains(&"decompressed image".to_string()), "{text}");
        assert!(text.contains("does not decompress"), "{text}");
        assert!(
            names.contains(&"signature of meetbox-test.img.zst".to_string()),
            "{text}"
        );
    }

    #[test]
    fn altered_block_map_or_manifest_fail_the_signed_digests() {
        let Some((build, _keys)) = signed_build(4) else {
            return;
        };
        flip_byte(&build.files.bmap(), |len| len / 2);
        let (names, text) = failed(&verify(&build));
        assert_eq!(names, vec!["SHA256SUMS digests"], "{text}");
        assert!(text.contains("for meetbox-test.img.bmap"), "{text}");

        let Some((build, _keys)) = signed_build(4) else {
            return;
        };
        let manifest = fs::read_to_string(build.files.manifest()).unwrap();
        fs::write(
            build.files.manifest(),
            manifest.replace("ubuntu-24.04", "ubuntu-24.10"),
        )
        .unwrap();
        let (names, text) = failed(&verify(&build));
        assert_eq!(names, vec!["SHA256SUMS digests"], "{text}");
        assert!(text.contains("for meetbox-test.manifest.json"), "{text}");
    }

    #[test]
    fn altered_checksums_or_signatures_fail_their_signature_check() {
        let Some((build, _keys)) = signed_build(5) else {
            return;
        };
        let sums = fs::read_to_string(build.files.sums()).unwrap();
        let digit = if sums.starts_with('0') { "1" } else { "0" };
        fs::write(build.files.sums(), format!("{digit}{}", &sums[1..])).unwrap();
        let (names, text) = failed(&verify(&build));
        assert!(
            names.contains(&"signature of SHA256SUMS".to_string()),
            "{text}"
        );

        let Some((build, _keys)) = signed_build(5) else {
            return;
        };
        let signature = fs::read_to_string(build.files.image_signature()).unwrap();
        let forged = signature.replace("meetbox 0.", "meetbox 9.");
        assert_ne!(forged, signature);
        fs::write(build.files.image_signature(), forged).unwrap();
        let (names, text) = failed(&verify(&build));
        assert!(
            names.contains(&"signature of meetbox-test.img.zst".to_string()),
            "{text}"
        );

        let Some((build, _keys)) = signed_build(5) else {
            return;
        };
        // Third line: the global signature over the detached signature and comment.
        let signature = fs::read_to_string(build.files.sums_signature()).unwrap();
        let mut lines: Vec<String> = signature.lines().map(str::to_string).collect();
        let last = lines.len() - 1;
        let flipped = if lines[last].starts_with('A') {
            "B"
        } else {
            "A"
        };
        lines[last].replace_range(0..1, flipped);
        fs::write(build.files.sums_signature(), lines.join("\n") + "\n").unwrap();
        let (names, text) = failed(&verify(&build));
        assert_eq!(names, vec!["signature of SHA256SUMS"], "{text}");
    }

    #[test]
    fn the_wrong_key_fails_both_signatures_naming_key_ids() {
        let Some((build, keys)) = signed_build(6) else {
            return;
        };
        let other = keys.path().join("other.key");
        write_key_pair(&other, None, false).unwrap();
        let report = verify_build(
            &build.files.image_zst(),
            Some(&keys.path().join("other.pub")),
        )
        .unwrap();
        let (names, text) = failed(&report);
        assert!(
            names.contains(&"signature of meetbox-test.img.zst".to_string()),
            "{text}"
        );
        assert!(
            names.contains(&"signature of SHA256SUMS".to_string()),
            "{text}"
        );
        assert!(text.contains("wrong public key"), "{text}");
        assert!(check_signatures(
            &build.files.image_zst(),
            Some(&keys.path().join("other.pub"))
        )
        .is_err());
    }

    #[test]
    fn files_swapped_in_from_another_signed_build_are_detected() {
        let Some((build, keys)) = signed_build(7) else {
            return;
        };
        let other = synthetic_build("meetbox-test", 8, keys.path()).unwrap();
        for path in [other.files.image_zst(), other.files.image_signature()] {
            fs::copy(&path, build.dir.path().join(path.file_name().unwrap())).unwrap();
        }
        let (names, text) = failed(&verify(&build));
        // The swapped image and its signature are genuine, but the rest disagrees.
        assert!(
            !names.contains(&"signature of meetbox-test.img.zst".to_string()),
            "{text}"
        );
        assert!(
            names.contains(&"trusted comment of meetbox-test.img.zst".to_string()),
            "{text}"
        );
        assert!(names.contains(&"SHA256SUMS digests".to_string()), "{text}");
        assert!(
            names.contains(&"manifest meetbox-test.manifest.json".to_string()),
            "{text}"
        );
        assert!(names.contains(&"decompressed image".to_string()), "{text}");

        // An image of a differently named build, renamed: its signed file name differs.
        let Some((build, keys)) = signed_build(9) else {
            return;
        };
        let renamed = synthetic_build("meetbox-other", 10, keys.path()).unwrap();
        fs::copy(renamed.files.image_zst(), build.files.image_zst()).unwrap();
        fs::copy(
            renamed.files.image_signature(),
            build.files.image_signature(),
        )
        .unwrap();
        let (_, text) = failed(&verify(&build));
        assert!(
            text.contains("the signature is for meetbox-other.img.zst"),
            "{text}"
        );
    }

    #[test]
    fn a_missing_file_fails_a_check_and_a_missing_image_is_an_error() {
        let Some((probe, _keys)) = signed_build(11) else {
            return;
        };
        let names = [
            probe.files.bmap(),
            probe.files.manifest(),
            probe.files.sums(),
            probe.files.image_signature(),
            probe.files.sums_signature(),
        ]
        .map(|path| path.file_name().unwrap().to_owned());
        for name in names {
            let Some((build, _keys)) = signed_build(11) else {
                return;
            };
            fs::remove_file(build.dir.path().join(&name)).unwrap();
            let report = verify(&build);
            let (_, text) = failed(&report);
            assert!(!report.passed(), "{text}");
            assert!(text.contains("missing file"), "{name:?}: {text}");
        }
        fs::remove_file(probe.files.image_zst()).unwrap();
        let error =
            verify_build(&probe.files.image_zst(), Some(&probe.key.public_key_path)).unwrap_err();
        assert!(
            error.to_string().contains("cannot open the image"),
            "{error}"
        );
    }

    #[test]
    fn signatures_made_by_the_reference_cli_verify() {
        let Some(minisign) = crate::host::test_tools::tool_path("minisign", "minisign") else {
            return;
        };
        let Some((build, keys)) = signed_build(13) else {
            return;
        };
        // Re-sign both files with the reference CLI, keeping meetbox's trusted comments.
        for (file, signature) in [
            (build.files.image_zst(), build.files.image_signature()),
            (build.files.sums(), build.files.sums_signature()),
        ] {
            let comment = SignatureBox::from_file(&signature)
                .unwrap()
                .trusted_comment()
                .unwrap();
            fs::remove_file(&signature).unwrap();
            let signed = std::process::Command::new(&minisign)
                .arg("-S")
                .arg("-s")
                .arg(keys.path().join("test.key"))
                .arg("-m")
                .arg(&file)
                .arg("-t")
                .arg(&comment)
                .output()
                .unwrap();
            assert!(signed.status.success(), "{signed:?}");
        }
        let report = verify(&build);
        assert!(report.passed(), "{report}");
        let status = status(&build);
        assert!(status.passed(), "{status}");
    }

    /// The flash path checks the image signature through its trusted comment:
    /// altering the file signature, the comment or the global signature fails it.
    #[test]
    fn the_digest_check_refuses_any_altered_part_of_the_image_signature() {
        let Some((build, _keys)) = signed_build(14) else {
            return;
        };
        assert!(status(&build).passed(), "{}", status(&build));
        let original = fs::read_to_string(build.files.image_signature()).unwrap();
        let alter = |line: usize, at: usize| {
            let mut lines: Vec<String> = original.lines().map(String::from).collect();
            let target = &mut lines[line];
            let replacement = if target.as_bytes()[at] == b'A' {
                "B"
            } else {
                "A"
            };
            target.replace_range(at..at + 1, replacement);
            fs::write(build.files.image_signature(), lines.join("\n") + "\n").unwrap();
            let (names, text) = failed(&status(&build));
            assert!(
                names.contains(&"signature of meetbox-test.img.zst".to_string()),
                "line {line}: {text}"
            );
            assert!(
                names.contains(&"trusted comment of meetbox-test.img.zst".to_string()),
                "line {line}: {text}"
            );
        };
        alter(1, 40); // inside the file signature
        alter(3, 20); // inside the global signature

        // The trusted comment itself: another digest, as if for another file.
        let forged = original.replace("sha256:", "sha256:0");
        fs::write(build.files.image_signature(), forged).unwrap();
        let (names, text) = failed(&status(&build));
        assert!(
            names.contains(&"signature of meetbox-test.img.zst".to_string()),
            "{text}"
        );
    }

    /// Without decompressing, the image is checked frame by frame against the
    /// signed manifest: a damaged or missing frame is named by its bytes.
    #[test]
    fn the_frames_check_names_a_damaged_or_missing_frame() {
        let Some((build, _keys)) = signed_build(15) else {
            return;
        };
        let manifest = Manifest::read(&build.files.manifest()).unwrap();
        assert!(manifest.image.frames.len() >= 3, "{:?}", manifest.image);
        let second = &manifest.image.frames[1];
        let start = manifest.image.frames[0].compressed_size;
        let end = start + second.compressed_size;
        flip_byte(&build.files.image_zst(), |_| (start + 5) as usize);
        let (names, text) = failed(&status(&build));
        assert!(
            names.contains(&"frames of meetbox-test.img.zst".to_string()),
            "{text}"
        );
        assert!(
            text.contains(&format!("frame 1 (bytes {start}-{end}) differs")),
            "{text}"
        );
        // The checks that rest on the image's digest fail with it.
        assert!(
            names.contains(&"trusted comment of meetbox-test.img.zst".to_string()),
            "{text}"
        );

        let Some((build, _keys)) = signed_build(15) else {
            return;
        };
        let bytes = fs::read(build.files.image_zst()).unwrap();
        fs::write(build.files.image_zst(), &bytes[..(start + 100) as usize]).unwrap();
        let (names, text) = failed(&status(&build));
        assert!(
            names.contains(&"frames of meetbox-test.img.zst".to_string()),
            "{text}"
        );
        assert!(text.contains("it is truncated"), "{text}");
    }

    #[test]
    fn signature_status_reports_per_file_without_decompressing() {
        let Some((build, _keys)) = signed_build(12) else {
            return;
        };
        flip_byte(&build.files.bmap(), |len| len - 2);
        let report = status(&build);
        // Five checks of files and signatures, and the frames one by one.
        assert_eq!(report.checks.len(), 6);
        assert_eq!(report.checks[5].check, "frames of meetbox-test.img.zst");
        assert_eq!(report.raw_size, None);
        let (names, text) = failed(&report);
        assert_eq!(names, vec!["SHA256SUMS digests"], "{text}");
    }
}
