//! Signs a finished build: `SHA256SUMS` over the compressed image, block map and
//! manifest, and minisign signatures of the image and of `SHA256SUMS`. Signatures are
//! prehashed (BLAKE2b), so multi-GB images stream; their trusted comments (covered by
//! the signature) name the file, the meetbox version and the digests, so a signature
//! cannot be moved onto another file or build unnoticed.

pub mod deterministic;
pub mod keygen;
pub mod keys;

use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

use crate::artifact::checksums::{render_sums, Sha256Digest, SumsEntry, SUMS_FILE};
use crate::artifact::files::BuildFiles;
use crate::artifact::manifest::Manifest;
use crate::host::atomic_file;
use crate::host::progress::{detail, step, Progress};
use crate::sign::keys::SigningKey;

/// Untrusted comment of our signatures (not covered by the signature; informative).
pub(crate) const UNTRUSTED_COMMENT: &str = "signature from meetbox secret key";

/// The trusted comment of a meetbox signature:
/// `meetbox VERSION file:FILE sha256:HEX [raw-sha256:HEX]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrustedComment {
    pub meetbox_version: String,
    /// File name (no directory) the signature is for.
    pub file: String,
    /// SHA-256 of that file.
    pub sha256: Sha256Digest,
    /// For the compressed image: SHA-256 of the raw image inside.
    pub raw_sha256: Option<Sha256Digest>,
}

impl fmt::Display for TrustedComment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "meetbox {} file:{} sha256:{}",
            self.meetbox_version, self.file, self.sha256
        )?;
        if let Some(raw) = &self.raw_sha256 {
            write!(f, " raw-sha256:{raw}")?;
        }
        Ok(())
    }
}

impl TrustedComment {
    /// Parses a trusted comment written by `Display`; fields after the version may
    /// come in any order, unknown ones are ignored so later versions can add fields.
    pub fn parse(text: &str) -> Result<Self> {
        let mut words = text.split_whitespace();
        let (Some("meetbox"), Some(version)) = (words.next(), words.next()) else {
            bail!("trusted comment {text:?} was not written by meetbox");
        };
        let (mut file, mut sha256, mut raw_sha256) = (None, None, None);
        for word in words {
            match word.split_once(':') {
                Some(("file", value)) => file = Some(value.to_string()),
                Some(("sha256", value)) => sha256 = Some(value.parse()?),
                Some(("raw-sha256", value)) => raw_sha256 = Some(value.parse()?),
                _ => {}
            }
        }
        Ok(TrustedComment {
            meetbox_version: version.to_string(),
            file: file.with_context(|| format!("trusted comment {text:?} names no file"))?,
            sha256: sha256.with_context(|| format!("trusted comment {text:?} has no sha256"))?,
            raw_sha256,
        })
    }
}

/// The files `sign_build` wrote.
#[derive(Clone, Debug)]
pub struct SignedFiles {
    pub sums: PathBuf,
    pub sums_signature: PathBuf,
    pub image_signature: PathBuf,
}

/// Signs the build `name` in `out_dir`, whose `NAME.img.zst`, `NAME.img.bmap` and
/// `NAME.manifest.json` are complete: writes `NAME.img.zst.minisig`, `SHA256SUMS`
/// and `SHA256SUMS.minisig`. Reads the image once; fails if it does not match the
/// manifest's compressed digest and size (the image changed after the manifest).
pub fn sign_build(out_dir: &Path, name: &str, key: &SigningKey) -> Result<SignedFiles> {
    let files = BuildFiles::new(out_dir, name);
    step(format!("Signing {name}"));
    let manifest = Manifest::read(&files.manifest())?;
    check_manifest_names(&manifest, &files)?;
    let version = env!("CARGO_PKG_VERSION");

    let image_comment = TrustedComment {
        meetbox_version: version.to_string(),
        file: files.image_zst_name(),
        sha256: manifest.image.compressed_sha256,
        raw_sha256: Some(manifest.image.raw_sha256),
    };
    let image_path = files.image_zst();
    let image = File::open(&image_path)
        .with_context(|| format!("cannot open the image {}", image_path.display()))?;
    let size = image.metadata()?.len();
    let mut reader = HashingReader::new(image, Progress::bytes("sign image", size));
    let image_signature = sign_bytes_from(key, &mut reader, &image_comment)
        .with_context(|| format!("cannot sign {}", image_path.display()))?;
    let (image_sha256, image_size) = reader.finish();
    if image_sha256 != manifest.image.compressed_sha256
        || image_size != manifest.image.compressed_size_bytes
    {
        bail!(
            "{} (sha256 {image_sha256}, {image_size} bytes) does not match its manifest (sha256 {}, {} bytes): it changed after the manifest was written; rebuild",
            image_path.display(),
            manifest.image.compressed_sha256,
            manifest.image.compressed_size_bytes
        );
    }

    let entries = vec![
        SumsEntry {
            digest: image_sha256,
            file_name: files.image_zst_name(),
        },
        SumsEntry {
            digest: Sha256Digest::of_file(&files.bmap())?,
            file_name: files.bmap_name(),
        },
        SumsEntry {
            digest: Sha256Digest::of_file(&files.manifest())?,
            file_name: files.manifest_name(),
        },
    ];
    let sums = render_sums(&entries);
    let sums_comment = TrustedComment {
        meetbox_version: version.to_string(),
        file: SUMS_FILE.to_string(),
        sha256: Sha256Digest::of(sums.as_bytes()),
        raw_sha256: None,
    };
    let sums_signature = sign_bytes_from(key, &mut sums.as_bytes(), &sums_comment)?;

    atomic_file::write(
        &files.image_signature(),
        image_signature.as_bytes(),
        atomic_file::PUBLIC_MODE,
    )?;
    atomic_file::write(&files.sums(), sums.as_bytes(), atomic_file::PUBLIC_MODE)?;
    atomic_file::write(
        &files.sums_signature(),
        sums_signature.as_bytes(),
        atomic_file::PUBLIC_MODE,
    )?;
    detail(format!(
        "signed with {} (check with: meetbox verify {} --pubkey {})",
        key.public_key_path.display(),
        image_path.display(),
        key.public_key_path.display()
    ));
    Ok(SignedFiles {
        sums: files.sums(),
        sums_signature: files.sums_signature(),
        image_signature: files.image_signature(),
    })
}

/// The manifest must describe this build's files, or verification would fail later.
fn check_manifest_names(manifest: &Manifest, files: &BuildFiles) -> Result<()> {
    let expected = [
        ("name", &manifest.name, &files.name),
        (
            "image.compressed_file",
            &manifest.image.compressed_file,
            &files.image_zst_name(),
        ),
        (
            "image.bmap_file",
            &manifest.image.bmap_file,
            &files.bmap_name(),
        ),
    ];
    for (field, found, wanted) in expected {
        if found != wanted {
            bail!(
                "manifest {} says {field} {found:?}, expected {wanted:?}",
                files.manifest().display()
            );
        }
    }
    Ok(())
}

/// Signs everything `data` yields and returns the `.minisig` file contents; the
/// signature is checked against the public key before it is written anywhere.
fn sign_bytes_from(
    key: &SigningKey,
    data: &mut impl Read,
    comment: &TrustedComment,
) -> Result<String> {
    let signature = minisign::sign(
        Some(&key.public),
        &key.secret,
        data,
        Some(&comment.to_string()),
        Some(UNTRUSTED_COMMENT),
    )
    .with_context(|| format!("cannot sign {}", comment.file))?;
    Ok(signature.into_string())
}

/// Passes bytes through while hashing them with SHA-256 and counting progress, so
/// the signature's prehash and the file digest come from one read.
pub(crate) struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    size: u64,
    progress: Progress,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R, progress: Progress) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            size: 0,
            progress,
        }
    }

    /// Digest and size of everything read.
    pub(crate) fn finish(self) -> (Sha256Digest, u64) {
        self.progress.finish();
        (Sha256Digest::from_hasher(self.hasher), self.size)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        self.progress.inc(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::process::Command;

    use crate::artifact::manifest::tests::sample;
    use crate::host::test_tools::tool_path;
    use crate::sign::keys::{load_signing_key, write_key_pair};

    /// A signed synthetic build in a temporary directory.
    pub(crate) struct SyntheticBuild {
        pub dir: tempfile::TempDir,
        pub files: BuildFiles,
        pub key: SigningKey,
        pub raw: Vec<u8>,
    }

    /// Raw disk image: zeros with pseudo-random stretches at the start, the middle
    /// and the end (like a sparse file system image); `seed` makes builds differ.
    pub(crate) fn synthetic_raw_image(size: usize, seed: u64) -> Vec<u8> {
        let mut raw = vec![0u8; size];
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for start in [0, size / 2, size - 256 * 1024] {
            for byte in &mut raw[start..start + 200 * 1024] {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *byte = state as u8;
            }
        }
        raw
    }

    /// Writes `raw` leaving its zero blocks as holes, as a disk image builder does.
    fn write_sparse(path: &Path, raw: &[u8]) {
        use std::io::{Seek, SeekFrom, Write};
        let mut file = File::create(path).unwrap();
        file.set_len(raw.len() as u64).unwrap();
        for (index, block) in raw.chunks(4096).enumerate() {
            if block.iter().any(|&byte| byte != 0) {
                file.seek(SeekFrom::Start(index as u64 * 4096)).unwrap();
                file.write_all(block).unwrap();
            }
        }
    }

    /// A 4 MiB image named `name`, published as `meetbox build` publishes (in frames small
    /// enough to give several) with a new key in `key_dir` (or the key already there).
    pub(crate) fn synthetic_build(name: &str, seed: u64, key_dir: &Path) -> SyntheticBuild {
        let dir = tempfile::tempdir().unwrap();
        let files = BuildFiles::new(dir.path(), name);
        let raw = synthetic_raw_image(4 << 20, seed);
        let raw_path = key_dir.join(format!("{name}-{seed}.img"));
        write_sparse(&raw_path, &raw);
        let secret_path = key_dir.join("test.key");
        if !secret_path.exists() {
            write_key_pair(&secret_path, None, false).unwrap();
        }
        let key = load_signing_key(&secret_path, None).unwrap();
        let described = sample(name, &raw, &[]);
        let description = crate::publish::Description {
            name: described.name,
            base: described.base,
            profile: described.profile,
            packages: described.packages,
            disk: described.disk,
            source_date_epoch: described.source_date_epoch,
            updates: described.updates,
        };
        crate::publish::publish(
            &raw_path,
            dir.path(),
            description,
            &key,
            3,
            crate::publish::Framing::Frames {
                size: 1 << 20,
                cache: None,
            },
        )
        .unwrap();
        SyntheticBuild {
            dir,
            files,
            key,
            raw,
        }
    }

    #[test]
    fn trusted_comment_round_trips_and_tolerates_new_fields() {
        let comment = TrustedComment {
            meetbox_version: "0.1.0".into(),
            file: "m.img.zst".into(),
            sha256: Sha256Digest::of(b"z"),
            raw_sha256: Some(Sha256Digest::of(b"r")),
        };
        let text = comment.to_string();
        assert!(text.starts_with("meetbox 0.1.0 file:m.img.zst sha256:"));
        assert_eq!(TrustedComment::parse(&text).unwrap(), comment);
        let extended = format!("{text} builder:ci");
        assert_eq!(TrustedComment::parse(&extended).unwrap(), comment);
        assert!(TrustedComment::parse("timestamp:1700000000\tfile:x").is_err());
    }

    #[test]
    fn reference_tools_accept_a_signed_build() {
        let (Some(minisign), Some(sha256sum)) = (
            tool_path("minisign", "minisign"),
            tool_path("sha256sum", "coreutils"),
        ) else {
            return;
        };
        let keys = tempfile::tempdir().unwrap();
        let build = synthetic_build("meetbox-test", 1, keys.path());
        let sums = Command::new(sha256sum)
            .args(["-c", SUMS_FILE])
            .current_dir(build.dir.path())
            .output()
            .unwrap();
        assert!(sums.status.success(), "{sums:?}");
        assert_eq!(
            String::from_utf8_lossy(&sums.stdout)
                .matches(": OK")
                .count(),
            3
        );

        for file in [build.files.image_zst(), build.files.sums()] {
            let output = Command::new(&minisign)
                .arg("-Vm")
                .arg(&file)
                .arg("-p")
                .arg(&build.key.public_key_path)
                .output()
                .unwrap();
            assert!(output.status.success(), "{output:?}");
            let stdout = String::from_utf8_lossy(&output.stdout);
            let comment = stdout
                .lines()
                .find_map(|line| line.strip_prefix("Trusted comment: "))
                .expect("minisign prints the trusted comment");
            let parsed = TrustedComment::parse(comment).unwrap();
            assert_eq!(parsed.sha256, Sha256Digest::of_file(&file).unwrap());
            assert_eq!(parsed.meetbox_version, env!("CARGO_PKG_VERSION"));
        }
        let image_comment = minisign::SignatureBox::from_file(build.files.image_signature())
            .unwrap()
            .trusted_comment()
            .unwrap();
        let parsed = TrustedComment::parse(&image_comment).unwrap();
        assert_eq!(parsed.file, "meetbox-test.img.zst");
        assert_eq!(parsed.raw_sha256, Some(Sha256Digest::of(&build.raw)));
    }

    #[test]
    fn signing_refuses_an_image_that_changed_after_the_manifest() {
        let keys = tempfile::tempdir().unwrap();
        let build = synthetic_build("meetbox-test", 2, keys.path());
        let mut image = std::fs::read(build.files.image_zst()).unwrap();
        image.push(0);
        std::fs::write(build.files.image_zst(), image).unwrap();
        let error = sign_build(build.dir.path(), "meetbox-test", &build.key).unwrap_err();
        assert!(
            error.to_string().contains("does not match its manifest"),
            "{error}"
        );
    }
}
