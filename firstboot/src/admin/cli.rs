//! The `meetbox-admin` command line: `serve` (the web process) and `helper` (the root helper).
//! Exit codes: 0 stopped cleanly, 1 failed (the message says why), 2 usage error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

use crate::admin::{helper, web};
use crate::apply::Root;
use crate::layout;

#[derive(Parser)]
#[command(
    name = "meetbox-admin",
    version,
    about = "Meetbox's web admin: the web process (unprivileged, behind nginx) and its root helper",
    after_help = "Examples (systemd runs both on the box: meetbox-admin.service, meetbox-admin-helper.service):\n  \
        meetbox-admin helper                 as root: carry out the admin's named actions\n  \
        meetbox-admin serve                  as meetbox-admin: serve the pages on 127.0.0.1:8180"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the admin's pages on loopback (nginx passes local-network visitors to it).
    #[command(after_help = "Example:\n  meetbox-admin serve --listen 127.0.0.1:8180")]
    Serve {
        #[arg(long, default_value = layout::ADMIN_LISTEN)]
        listen: SocketAddr,
        /// The root helper's socket.
        #[arg(long, default_value = layout::ADMIN_HELPER_SOCKET)]
        helper: PathBuf,
    },
    /// Carry out the web process's named actions, as root, on the system below --root.
    #[command(after_help = "Example:\n  meetbox-admin helper --root /")]
    Helper {
        /// Root directory of the system the actions change (the socket lives below it too).
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result: Result<()> = match cli.command {
        Command::Serve { listen, helper } => web::serve(listen, helper),
        Command::Helper { root } => helper::serve(&Root::new(root)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("meetbox-admin: {error:#}");
            ExitCode::FAILURE
        }
    }
}
