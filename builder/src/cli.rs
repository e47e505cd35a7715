//! The `meetbox` command line: one subcommand per thing a user does with an image, each with its
//! typed arguments beside the stage that runs it.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::artifact::compress;
use crate::sign::keygen;
use crate::verify::inspect;
use crate::vm::run;
use crate::{flash, install, pipeline, sizing, verify};

/// Build, sign, verify, flash and try Meetbox appliance images.
#[derive(Parser)]
#[command(
    name = "meetbox",
    version,
    after_help = "Examples:\n  \
        meetbox build                      build, sign and compress the default image into out/\n  \
        meetbox verify out/meetbox-ubuntu-24.04.img.zst\n  \
        meetbox run out/meetbox-ubuntu-24.04.img.zst\n  \
        meetbox flash out/meetbox-ubuntu-24.04.img.zst /dev/sdX\n\n\
        Exit codes: 0 success; 1 a check or step failed (the message names it); 2 usage error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a signed, compressed, bootable image from a profile.
    Build(pipeline::BuildArgs),
    /// Check an image's signatures, checksums, manifest and content.
    Verify(verify::VerifyArgs),
    /// Make a minisign key pair for signing images.
    Keygen(keygen::KeygenArgs),
    /// Show an image's partitions, manifest and signature status.
    Inspect(inspect::InspectArgs),
    /// Boot an image in QEMU with Secure Boot to try it before flashing.
    Run(run::RunArgs),
    /// Write an image to a disk, verified before and read back after.
    Flash(flash::FlashArgs),
    /// On the box: install the image from the USB stick it started from onto an internal disk.
    Install(install::InstallArgs),
    /// How many participants a box and a line hold, or what N participants need.
    Size(sizing::SizeArgs),
    /// Compress a raw image as `meetbox build` does (benchmarks and tests).
    #[command(hide = true)]
    Compress(compress::CompressArgs),
}

/// Parses the command line, runs the command, and maps its outcome to the exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Build(args) => pipeline::run(args).map(|()| true),
        Command::Verify(args) => verify::run_verify(args),
        Command::Keygen(args) => keygen::run_keygen(args).map(|()| true),
        Command::Inspect(args) => inspect::run(args),
        Command::Run(args) => run::run(args).map(|()| true),
        Command::Flash(args) => flash::run(args).map(|()| true),
        Command::Install(args) => install::run(args).map(|()| true),
        Command::Size(args) => sizing::run(args).map(|()| true),
        Command::Compress(args) => compress::run(args).map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
