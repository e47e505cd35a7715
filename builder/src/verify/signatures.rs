//! The signed small files of a build: the minisign signatures (each with its trusted comment),
//! `SHA256SUMS` and the manifest, each checked into a [`CheckResult`].

use super::*;

pub(super) fn read_small_file(path: &Path) -> Result<Vec<u8>, String> {
    fs::read(path).map_err(|e| format!("cannot read {}: {e}: missing file", path.display()))
}

pub(super) fn digest_of(bytes: &Result<Vec<u8>, String>) -> Result<Sha256Digest, String> {
    bytes
        .as_ref()
        .map(|b| Sha256Digest::of(b))
        .map_err(Clone::clone)
}

/// The public key and where it came from, for messages.
pub(super) struct KeyContext<'a> {
    pub(super) public: &'a PublicKey,
    pub(super) path: &'a Path,
}

pub(super) fn read_signature(path: &Path) -> Result<SignatureBox, String> {
    let text = fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}: missing file", path.display()))?;
    SignatureBox::from_string(&text)
        .map_err(|e| format!("{} is not a minisign signature: {e}", path.display()))
}

pub(super) fn key_id(keynum: &[u8]) -> String {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&keynum[..8]);
    format!("{:016X}", u64::from_le_bytes(bytes))
}

/// Whether a signature can be checked with the key at all (same key ID, prehashed).
/// Legacy signatures would need the whole file in memory: images are GBs.
pub(super) fn signature_usable(signature: &SignatureBox, key: &PublicKey) -> Result<(), String> {
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
pub(super) fn verify_small(
    key: &PublicKey,
    signature: &SignatureBox,
    data: &[u8],
) -> Result<(), String> {
    signature_usable(signature, key)?;
    minisign::verify(key, signature, Cursor::new(data), true, false, false)
        .map_err(|e| e.to_string())
}

/// Verifies a signature's global Ed25519 signature, which covers the file
/// signature and the trusted comment, with `key` (the check minisign makes after
/// the one over the file's BLAKE2b-512). The trusted comment is then authentic.
pub(super) fn verify_comment_signature(
    key: &PublicKey,
    signature: &SignatureBox,
) -> Result<(), String> {
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
pub(super) fn trusted_comment(signature: &SignatureBox) -> Result<TrustedComment, String> {
    let text = signature.trusted_comment().map_err(|e| e.to_string())?;
    TrustedComment::parse(&text).map_err(|e| format!("{e:#}"))
}

pub(super) fn check_image_signature(
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

pub(super) fn check_image_comment(
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

pub(super) fn judge_image_comment(
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

pub(super) fn check_sums_signature(
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
pub(super) fn check_sums_listing(
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

pub(super) fn check_manifest(
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
