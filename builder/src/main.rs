//! `meetbox`: build, sign, verify, flash and try Meetbox appliance images.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use meetbox::run;

/// Build, sign, verify, flash and try Meetbox appliance images.
#[derive(Parser)]
#[command(
    name = "meetbox",
    version,
    after_help = "Examples:\n  \
        meetbox build                      build, sign and compress the default image into out/\n  \
        meetbox verify out/meetbox-ubuntu-24.04.img.zst\n  \
        meetbox run out/meetbox-ubuntu-24.04.img.zst\n\n\
        Exit codes: 0 success, 1 failure (the message says which check or step), 2 usage error."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Boot an image in QEMU with Secure Boot to try it before flashing.
    Run(run::RunArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Run(args) => run::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
