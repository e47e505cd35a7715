//! The auditor's kit for the running box: OpenSCAP and Lynis from Ubuntu 24.04's own archive,
//! carried in as a tarball and run from a tmpfs, so nothing is installed on the box that is
//! measured and nothing of the scanner lands on its disk.
//!
//! mmdebstrap's `extract` variant unpacks `openscap-scanner` and `lynis` with every library they
//! need (its own glibc included) into a directory; oscap then runs through that tree's dynamic
//! loader with the tree's libraries, and its probes read the box's own files, processes and
//! packages (libapt-pkg of the same release as the box's). Lynis is laid out as its standalone
//! tarball is (`./lynis`, `./include`, `./db`, `./plugins`, `./default.prf`), which it finds from
//! its working directory. The kit leaves out OpenSCAP's XML schemas (the scan skips validating
//! the content, which the host's oscap reads first) and documentation. Cached in the target
//! directory.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::apt_repo::run;

/// Where the kit is unpacked on the box: a tmpfs of its own (the box mounts /run noexec), gone
/// when it is unmounted.
pub const ON_THE_BOX: &str = "/run/meetbox-scan";

/// The kit, `scanner-kit.tar`: uncompressed, because unpacking gzip under emulation takes
/// longer than carrying the bytes.
pub fn scanner_kit() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hardening-kit");
    let tarball = dir.join("scanner-kit.tar");
    if tarball.is_file() {
        return tarball;
    }
    let tree = dir.join("tree");
    let _ = fs::remove_dir_all(&tree);
    fs::create_dir_all(&dir).unwrap();
    let keyring = Path::new(env!("CARGO_MANIFEST_DIR")).join("keys/ubuntu-archive.gpg");
    eprintln!("==> scanner kit: openscap-scanner and lynis of Ubuntu 24.04 (mmdebstrap extract)");
    run(Command::new("mmdebstrap")
        .args([
            "--mode=root",
            "--variant=extract",
            "--components=main,universe",
            "--include=openscap-scanner,lynis",
        ])
        .arg(format!("--keyring={}", keyring.display()))
        .arg("noble")
        .arg(&tree));
    // Lynis's standalone layout, beside the scanner's tree.
    let lynis = tree.join("lynis");
    fs::create_dir_all(&lynis).unwrap();
    for (from, to) in [
        ("usr/sbin/lynis", "lynis"),
        ("usr/share/lynis/include", "include"),
        ("usr/share/lynis/db", "db"),
        ("etc/lynis/plugins", "plugins"),
        ("etc/lynis/default.prf", "default.prf"),
    ] {
        fs::rename(tree.join(from), lynis.join(to)).unwrap();
    }
    // What the scan never reads: documentation, translations, manual pages.
    for unused in [
        "usr/share/doc",
        "usr/share/man",
        "usr/share/locale",
        "var",
        "dev",
    ] {
        let _ = fs::remove_dir_all(tree.join(unused));
    }
    let partial = dir.join("scanner-kit.tar.partial");
    run(Command::new("tar")
        .arg("-cf")
        .arg(&partial)
        .arg("--owner=root")
        .arg("--group=root")
        .arg("-C")
        .arg(&tree)
        .args(["usr", "etc", "lynis"]));
    fs::rename(&partial, &tarball).unwrap();
    fs::remove_dir_all(&tree).unwrap();
    tarball
}

/// The shell command that runs oscap from the kit unpacked at `ON_THE_BOX/kit`.
pub fn oscap_command() -> String {
    let kit = format!("{ON_THE_BOX}/kit");
    format!(
        "OSCAP_XSLT_PATH={kit}/usr/share/openscap/xsl OSCAP_CPE_PATH={kit}/usr/share/openscap/cpe \
         {kit}/usr/lib64/ld-linux-x86-64.so.2 --library-path {kit}/usr/lib/x86_64-linux-gnu:{kit}/usr/lib \
         {kit}/usr/bin/oscap"
    )
}
