//! The size of the shipped `default` image (Ubuntu 24.04, Jitsi on, SSH off), measured where
//! Jitsi's own repository cannot be reached: Jitsi's real packaging for the 10590 release, built
//! as package-shaped debs by the test kit (support::jitsi_packages), is served from a signed
//! repository on 127.0.0.1 and installed through `meetbox build --jitsi-repository`, the options
//! a user with a mirror passes. The `test` profile with Jitsi on (the appliance test's image) is
//! built in the same run, from the same repository, for the comparison.
//!
//! Run as root from the source tree (needs the host packages tests/run installs):
//!     cargo bench -p meetbox --bench default_image
//! The root file systems are cached in the image tests' cache, so a second run measures the
//! image pipeline only.

// Without a test harness the kit's own unit tests are not compiled, and their imports go unused.
#[path = "../support/mod.rs"]
#[allow(dead_code, unused_imports)]
mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use support::jitsi_packages::{self, ServedRelease, RELEASES};

const MEETBOX: &str = env!("CARGO_BIN_EXE_meetbox");

fn main() {
    if let Some(why) = support::root_and_tools_missing(
        "mmdebstrap builds the image's root file system as root",
        &[support::apt_repo::TOOLS, jitsi_packages::TOOLS].concat(),
    )
    .or_else(jitsi_packages::missing)
    {
        eprintln!("cannot measure the default image: {why}");
        std::process::exit(2);
    }
    let work = Path::new(env!("CARGO_TARGET_TMPDIR")).join("bench-default-image");
    let _ = fs::remove_dir_all(&work);
    fs::create_dir_all(&work).unwrap();
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("image-tests/cache");

    let started = Instant::now();
    let jitsi = ServedRelease::start(RELEASES[0], &work);
    println!(
        "Jitsi {}: {} package-shaped debs built and published in {:.0} s",
        RELEASES[0],
        jitsi.debs.len(),
        started.elapsed().as_secs_f64()
    );
    meetbox(&["keygen", "--out", path(&work.join("key")), "--unencrypted"]);

    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles");
    let test_with_jitsi = jitsi_packages::profile_with_jitsi(&work);

    println!("| profile | compressed | raw | build |");
    println!("|---|---|---|---|");
    for (label, profile) in [
        ("default", source.join("default.toml")),
        ("test, Jitsi on", test_with_jitsi),
    ] {
        let out = work.join(label.replace([' ', ','], ""));
        let started = Instant::now();
        let jitsi_args = jitsi.build_args();
        let key = work.join("key.key");
        let mut args = vec![
            "build",
            "--profile",
            path(&profile),
            "--base",
            "ubuntu-24.04",
            "--out",
            path(&out),
            "--key",
            path(&key),
            "--cache-dir",
            path(&cache),
        ];
        args.extend(jitsi_args.iter().map(String::as_str));
        meetbox(&args);
        let seconds = started.elapsed().as_secs_f64();
        let manifest = only_manifest(&out);
        let image = &manifest["image"];
        let compressed = image["compressed_size_bytes"].as_u64().unwrap() as f64;
        let raw = image["raw_size_bytes"].as_u64().unwrap() as f64;
        println!(
            "| {label} | {:.1} MB ({:.1} MiB) | {:.2} GiB | {seconds:.0} s |",
            compressed / 1e6,
            compressed / f64::from(1 << 20),
            raw / f64::from(1 << 30)
        );
    }
    drop(jitsi);
    let _ = fs::remove_dir_all(&work);
}

fn path(p: &Path) -> &str {
    p.to_str().expect("bench paths are UTF-8")
}

fn meetbox(args: &[&str]) {
    let output = Command::new(MEETBOX).args(args).output().unwrap();
    if !output.status.success() {
        eprintln!("{}", String::from_utf8_lossy(&output.stderr));
        panic!("meetbox {} failed: {}", args.join(" "), output.status);
    }
}

fn only_manifest(out: &Path) -> serde_json::Value {
    let manifests: Vec<PathBuf> = fs::read_dir(out)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".manifest.json"))
        .collect();
    assert_eq!(manifests.len(), 1, "one manifest in {}", out.display());
    serde_json::from_slice(&fs::read(&manifests[0]).unwrap()).unwrap()
}
