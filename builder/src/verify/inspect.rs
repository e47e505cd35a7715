//! `meetbox inspect`: what an image holds and whether its signatures hold.

use std::path::PathBuf;

use anyhow::{Context, Result};
use serde_json::json;

use crate::artifact::manifest::Manifest;
use crate::host::progress::human_bytes;
use crate::verify::{self, Outcome};

/// Show an image's partitions, manifest and signature status.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    meetbox inspect out/meetbox-ubuntu-24.04.img.zst\n  \
    meetbox inspect out/meetbox-ubuntu-24.04.img.zst --json | jq .partitions\n\n\
    Signatures are checked without decompressing the image; `meetbox verify` also\n\
    checks the decompressed image against the manifest.")]
pub struct InspectArgs {
    /// The compressed image, NAME.img.zst, with its build files beside it.
    #[arg(value_name = "NAME.img.zst")]
    pub image: PathBuf,
    /// Public key to check the signatures with (default: your local build key).
    #[arg(long, value_name = "KEY.pub")]
    pub pubkey: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Prints the report; returns whether every signature check passed.
pub fn run(args: &InspectArgs) -> Result<bool> {
    let report = verify::signature_status(&args.image, args.pubkey.as_deref())?;
    let manifest = match &report.manifest {
        Some(manifest) => manifest.clone(),
        None => Manifest::read(&report.files.manifest())
            .with_context(|| format!("cannot read the manifest beside {}", args.image.display()))?,
    };
    let checks: Vec<_> = report
        .checks
        .iter()
        .map(|check| match &check.outcome {
            Outcome::Passed(detail) => (check.check.clone(), true, detail.clone()),
            Outcome::Failed(detail) => (check.check.clone(), false, detail.clone()),
        })
        .collect();
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&as_json(&manifest, &report, &checks))?
        );
        return Ok(report.passed());
    }
    print_manifest(&manifest);
    println!("Signatures  (key {})", report.public_key_path.display());
    for (check, passed, detail) in &checks {
        println!(
            "  [{}] {check}: {detail}",
            if *passed { "ok" } else { "FAILED" }
        );
    }
    Ok(report.passed())
}

/// The report `--json` prints.
fn as_json(
    manifest: &Manifest,
    report: &verify::VerifyReport,
    checks: &[(String, bool, String)],
) -> serde_json::Value {
    json!({
        "name": manifest.name,
        "meetbox_version": manifest.meetbox_version,
        "base": manifest.base,
        "source_date_epoch": manifest.source_date_epoch,
        "image": manifest.image,
        "disk": manifest.disk,
        "partitions": manifest.disk.partitions,
        "packages": manifest.packages,
        "profile": manifest.profile,
        "updates": manifest.updates,
        "public_key": report.public_key_path,
        "signatures": checks.iter().map(|(check, passed, detail)| json!({
            "check": check, "passed": passed, "detail": detail
        })).collect::<Vec<_>>(),
        "signatures_valid": report.passed(),
    })
}

/// The manifest in plain lines: image, partitions, boot chain, updates.
fn print_manifest(manifest: &Manifest) {
    println!(
        "Image       {} (meetbox {}, {})",
        manifest.name, manifest.meetbox_version, manifest.base
    );
    println!(
        "Raw         {} sha256 {}",
        human_bytes(manifest.image.raw_size_bytes),
        manifest.image.raw_sha256
    );
    println!(
        "Compressed  {} sha256 {}",
        human_bytes(manifest.image.compressed_size_bytes),
        manifest.image.compressed_sha256
    );
    println!("Disk        GUID {}", manifest.disk.disk_guid);
    println!("Partitions");
    for p in &manifest.disk.partitions {
        println!(
            "  {} {:<5} {:<5} {:>10}  LBA {}-{}  id {}  type {}",
            p.number,
            p.name,
            p.filesystem,
            human_bytes(p.size_bytes),
            p.first_lba,
            p.last_lba,
            p.filesystem_uuid,
            p.type_guid
        );
    }
    let kernel: Vec<_> = manifest
        .packages
        .iter()
        .filter(|p| {
            p.name.starts_with("linux-image-")
                || p.name == "shim-signed"
                || p.name.starts_with("grub-efi")
        })
        .map(|p| format!("{} {}", p.name, p.version))
        .collect();
    println!(
        "Packages    {} installed; boot chain: {}",
        manifest.packages.len(),
        kernel.join(", ")
    );
    let updates = &manifest.updates;
    println!(
        "Updates     unattended, from: {}",
        updates.origins.join("; ")
    );
    for source in &updates.sources {
        println!("              {source}");
    }
    println!(
        "            reboot when an update needs one: {}; timers: {}",
        updates.reboot_time.as_deref().map_or(
            "never by itself (no maintenance window)".to_string(),
            |t| format!("at {t} local time")
        ),
        updates.timers.join(", ")
    );
}
