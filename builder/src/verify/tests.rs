//! Tests of `verify/mod.rs`.

use super::*;

use crate::sign::keys::write_key_pair;
use crate::sign::tests::{synthetic_build, SyntheticBuild};

/// A signed 4 MiB build plus the directory holding its key.
fn signed_build(seed: u64) -> (SyntheticBuild, tempfile::TempDir) {
    let keys = tempfile::tempdir().unwrap();
    let build = synthetic_build("meetbox-test", seed, keys.path());
    (build, keys)
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
    let (build, _keys) = signed_build(1);
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
        let (build, _keys) = signed_build(2);
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
    let (build, _keys) = signed_build(3);
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
    let (build, _keys) = signed_build(4);
    flip_byte(&build.files.bmap(), |len| len / 2);
    let (names, text) = failed(&verify(&build));
    assert_eq!(names, vec!["SHA256SUMS digests"], "{text}");
    assert!(text.contains("for meetbox-test.img.bmap"), "{text}");

    let (build, _keys) = signed_build(4);
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
    let (build, _keys) = signed_build(5);
    let sums = fs::read_to_string(build.files.sums()).unwrap();
    let digit = if sums.starts_with('0') { "1" } else { "0" };
    fs::write(build.files.sums(), format!("{digit}{}", &sums[1..])).unwrap();
    let (names, text) = failed(&verify(&build));
    assert!(
        names.contains(&"signature of SHA256SUMS".to_string()),
        "{text}"
    );

    let (build, _keys) = signed_build(5);
    let signature = fs::read_to_string(build.files.image_signature()).unwrap();
    let forged = signature.replace("meetbox 0.", "meetbox 9.");
    assert_ne!(forged, signature);
    fs::write(build.files.image_signature(), forged).unwrap();
    let (names, text) = failed(&verify(&build));
    assert!(
        names.contains(&"signature of meetbox-test.img.zst".to_string()),
        "{text}"
    );

    let (build, _keys) = signed_build(5);
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
    let (build, keys) = signed_build(6);
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
    let (build, keys) = signed_build(7);
    let other = synthetic_build("meetbox-test", 8, keys.path());
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
    let (build, keys) = signed_build(9);
    let renamed = synthetic_build("meetbox-other", 10, keys.path());
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
    let (probe, _keys) = signed_build(11);
    let names = [
        probe.files.bmap(),
        probe.files.manifest(),
        probe.files.sums(),
        probe.files.image_signature(),
        probe.files.sums_signature(),
    ]
    .map(|path| path.file_name().unwrap().to_owned());
    for name in names {
        let (build, _keys) = signed_build(11);
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
    let (build, keys) = signed_build(13);
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
    let (build, _keys) = signed_build(14);
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
    let (build, _keys) = signed_build(15);
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

    let (build, _keys) = signed_build(15);
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
    let (build, _keys) = signed_build(12);
    flip_byte(&build.files.bmap(), |len| len - 2);
    let report = status(&build);
    // Five checks of files and signatures, and the frames one by one.
    assert_eq!(report.checks.len(), 6);
    assert_eq!(report.checks[5].check, "frames of meetbox-test.img.zst");
    assert_eq!(report.raw_size, None);
    let (names, text) = failed(&report);
    assert_eq!(names, vec!["SHA256SUMS digests"], "{text}");
}
