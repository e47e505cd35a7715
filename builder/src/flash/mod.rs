//! `meetbox flash`: write a signed image to a disk or a file, safely and fast.
//!
//! Order of events: check the signatures (nothing skips this), refuse unsafe
//! disks, ask, write the mapped ranges with the partition table last, flush, read
//! everything back, then move the backup GPT to the end of a larger disk.

pub mod backup_gpt;
pub mod device;
pub mod writer;

use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context, Result};

use crate::artifact::blockmap::BlockMap;
use crate::host::progress::{self, human_bytes};
use crate::verify::VerifiedFrames;
use device::{refusals, DiskFacts, Target};
use writer::{FlashJob, FlashReport, Input, TargetFile};

/// Test switch: byte offset of the target to flip between writing and reading back.
const CORRUPT_SWITCH: &str = "MEETBOX_TEST_CORRUPT_AFTER_WRITE";

/// Write a signed image to a disk (or a file), checking it before and after.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "Examples:\n  \
    meetbox flash --list\n  \
    meetbox flash out/meetbox-1.0.img.zst /dev/sdb --pubkey meetbox.pub\n  \
    meetbox flash out/meetbox-1.0.img.zst disk.raw --yes   # a raw image file\n\n\
    The signatures are checked before a single byte is written. Only the blocks\n\
    that hold data are written; the partition table goes last and every range is\n\
    read back, so an interrupted or failed flash leaves a disk that does not boot.")]
pub struct FlashArgs {
    /// The compressed image (NAME.img.zst); its block map, manifest, SHA256SUMS and
    /// signatures must sit next to it, as the build writes them.
    #[arg(required_unless_present = "list")]
    pub image: Option<PathBuf>,
    /// The disk to overwrite (e.g. /dev/sdb), or a regular file to write a raw image to.
    #[arg(required_unless_present = "list")]
    pub device: Option<PathBuf>,
    /// Public key to check the signatures with (minisign format).
    #[arg(long, value_name = "KEY.pub")]
    pub pubkey: Option<PathBuf>,
    /// Do not ask before overwriting the disk (for scripts).
    #[arg(long)]
    pub yes: bool,
    /// List the disks with model, size and transport, marking those that cannot be flashed.
    #[arg(long, conflicts_with_all = ["image", "device"])]
    pub list: bool,
}

/// Set by SIGINT/SIGTERM while a flash runs; the pipeline stops between buffers.
pub(crate) static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_signal: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Catches Ctrl-C while it lives, so a flash stops cleanly instead of dying mid-write.
pub(crate) struct InterruptGuard;

impl InterruptGuard {
    pub(crate) fn install() -> InterruptGuard {
        INTERRUPTED.store(false, Ordering::SeqCst);
        let handler = on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            libc::signal(libc::SIGINT, handler);
            libc::signal(libc::SIGTERM, handler);
        }
        InterruptGuard
    }
}

impl Drop for InterruptGuard {
    fn drop(&mut self) {
        // SAFETY: restoring the default disposition.
        unsafe {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            libc::signal(libc::SIGTERM, libc::SIG_DFL);
        }
    }
}

/// Runs `meetbox flash`.
pub fn run(args: &FlashArgs) -> Result<()> {
    if args.list {
        return list();
    }
    let (Some(image), Some(target_path)) = (&args.image, &args.device) else {
        bail!("give the image and the target disk, or --list to see the disks");
    };

    progress::step(format!("Checking the signatures of {}", image.display()));
    let (map, frames) = verified_block_map(image, args.pubkey.as_deref())?;

    let target = open_target(target_path, map.image_size, args.yes)?;

    let corrupt_after_write = std::env::var(CORRUPT_SWITCH)
        .ok()
        .map(|v| v.parse::<u64>())
        .transpose()
        .with_context(|| format!("{CORRUPT_SWITCH} must be a byte offset"))?;

    progress::step(format!(
        "Writing {} to {}",
        image.display(),
        target_path.display()
    ));
    let job = FlashJob {
        input: Input::Compressed {
            image_zst: image,
            frames: frames.as_ref(),
        },
        map: &map,
        stop: &INTERRUPTED,
        corrupt_after_write,
    };
    write_and_finish(&job, &target)
}

/// Checks the target and opens it: a disk that passes every guard, after asking (unless `yes`),
/// or a regular file. `meetbox flash` and `meetbox install` share it.
pub(crate) fn open_target(target_path: &Path, image_size: u64, yes: bool) -> Result<TargetFile> {
    progress::step(format!("Checking {}", target_path.display()));
    match device::inspect_target(target_path)? {
        Target::Disk(disk) => {
            let reasons = refusals(&disk, Some(image_size));
            if !reasons.is_empty() {
                let list: Vec<String> = reasons.iter().map(|r| format!("  - {r}")).collect();
                bail!(
                    "refusing to write to {}:\n{}",
                    target_path.display(),
                    list.join("\n")
                );
            }
            confirm(&disk, yes)?;
            TargetFile::open_block_device(target_path)
        }
        Target::File => {
            if !target_path.exists() && target_path.starts_with("/dev") {
                bail!(
                    "there is no device {}; meetbox flash --list shows the disks",
                    target_path.display()
                );
            }
            progress::detail(format!(
                "target is a regular file: {}",
                target_path.display()
            ));
            TargetFile::open_file(target_path, image_size)
        }
    }
}

/// Writes the job to the target (Ctrl-C stops it cleanly), moves the backup partition table to
/// the end of a larger disk, and sums up.
pub(crate) fn write_and_finish(job: &FlashJob, target: &TargetFile) -> Result<()> {
    let guard = InterruptGuard::install();
    let report = writer::write_image(job, target).map_err(|err| {
        if INTERRUPTED.load(Ordering::SeqCst) {
            err.context("interrupted")
        } else {
            err
        }
    })?;
    drop(guard);
    relocate_backup_gpt(target, job.map.image_size)?;
    summarize(&report, target);
    Ok(())
}

/// Checks the build's signatures, SHA256SUMS and manifest, and takes the block
/// map they vouch for. The signed SHA-256 of each frame (or, for an image of one
/// stream, the map's per-range SHA-256), checked again while writing, is
/// what ties every written byte to the signature, even if the image file were
/// swapped after this check.
fn verified_block_map(
    image: &Path,
    pubkey: Option<&Path>,
) -> Result<(BlockMap, Option<VerifiedFrames>)> {
    let verified = crate::verify::check_signatures(image, pubkey)?;
    let map = verified.block_map;
    if map.image_size != verified.manifest.image.raw_size_bytes {
        bail!(
            "{} maps an image of {} bytes but the manifest says {}: the build is inconsistent; rebuild it",
            verified.files.bmap().display(),
            map.image_size,
            verified.manifest.image.raw_size_bytes
        );
    }
    progress::detail(format!("signed by {}", verified.public_key_path.display()));
    Ok((map, verified.frames))
}

/// Asks before erasing a disk; scripts pass `--yes`.
fn confirm(disk: &DiskFacts, yes: bool) -> Result<()> {
    progress::detail(disk.describe());
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        bail!(
            "refusing to erase /dev/{} without confirmation: no terminal to ask on; pass --yes",
            disk.name
        );
    }
    eprint!(
        "Everything on /dev/{} ({}) will be erased. Type yes to continue: ",
        disk.name,
        human_bytes(disk.size_bytes)
    );
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut answer)
        .context("cannot read the answer")?;
    if answer.trim() != "yes" {
        bail!("not confirmed; /dev/{} was not touched", disk.name);
    }
    Ok(())
}

/// On a target larger than the image, moves the backup GPT to the target's end.
fn relocate_backup_gpt(target: &TargetFile, image_size: u64) -> Result<()> {
    if target.size <= image_size {
        return Ok(());
    }
    let mut head = vec![0u8; writer::HEADER_REGION as usize];
    target
        .buffered()
        .read_exact_at(&mut head, 0)
        .with_context(|| {
            format!(
                "cannot read the partition table of {}",
                target.path.display()
            )
        })?;
    let sectors = target.size / backup_gpt::SECTOR;
    if let Some(relocation) = backup_gpt::plan(&head, sectors)
        .with_context(|| format!("cannot move the backup GPT on {}", target.path.display()))?
    {
        progress::step("Moving the backup partition table to the end of the disk");
        backup_gpt::apply(target.buffered(), &relocation)
            .with_context(|| format!("the image on {} is complete and verified, but its backup partition table is still at the image's end; run sgdisk -e {} to move it", target.path.display(), target.path.display()))?;
    }
    Ok(())
}

fn summarize(report: &FlashReport, target: &TargetFile) {
    let rate = |bytes: u64, secs: f64| human_bytes((bytes as f64 / secs.max(1e-3)) as u64);
    progress::step(format!("Flashed and verified {}", target.path.display()));
    progress::detail(format!(
        "wrote {} in {:.1} s ({}/s), read back {} in {:.1} s ({}/s)",
        human_bytes(report.bytes_written),
        report.write_time.as_secs_f64(),
        rate(report.bytes_written, report.write_time.as_secs_f64()),
        human_bytes(report.bytes_verified),
        report.verify_time.as_secs_f64(),
        rate(report.bytes_verified, report.verify_time.as_secs_f64()),
    ));
}

/// `meetbox flash --list`: every disk, with the reasons the unsafe ones are refused.
fn list() -> Result<()> {
    let disks = device::list_disks()?;
    println!(
        "{:<10} {:>10}  {:<8} {:<28} {:<20} STATUS",
        "DISK", "SIZE", "BUS", "MODEL", "SERIAL"
    );
    for disk in &disks {
        let reasons = refusals(disk, None);
        let status = if reasons.is_empty() {
            "can be flashed".to_string()
        } else {
            format!(
                "UNSAFE: {}",
                reasons
                    .iter()
                    .map(|r| r.to_string())
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        };
        println!(
            "{:<10} {:>10}  {:<8} {:<28} {:<20} {}",
            format!("/dev/{}", disk.name),
            human_bytes(disk.size_bytes),
            disk.transport,
            disk.model.as_deref().unwrap_or("-"),
            disk.serial.as_deref().unwrap_or("-"),
            status
        );
    }
    Ok(())
}
