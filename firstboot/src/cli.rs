//! The command line: `meetbox-firstboot` runs (or resumes) setup; `status`, `reconfigure`, `renew`, `integrity`
//! and `follow-address` act on a finished box. Exit codes: 0 done, 1 failed (the message says what and how to retry),
//! 2 usage error.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use serde::Deserialize;

use crate::acme::renew;
use crate::acme::retry::RetryRecord;
use crate::acme::tls;
use crate::admin;
use crate::apply::Root;
use crate::ask::answers;
use crate::ask::console::{self, QuietConsole};
use crate::ask::prompts;
use crate::ask::validation::{self, TlsChoice};
use crate::clock::format_time;
use crate::install;
use crate::integrity;
use crate::network;
use crate::reconfigure;
use crate::settings::LETS_ENCRYPT_DIRECTORY;
use crate::setup::{self, AnswerSource};
use crate::state::{State, Step};
use crate::updates;

#[derive(Parser)]
#[command(
    name = "meetbox-firstboot",
    version,
    about = "Meetbox first-boot setup: questions, secrets, configuration, certificate",
    after_help = "Examples:\n  \
        meetbox-firstboot                                   ask the questions and set the box up\n  \
        meetbox-firstboot --answers /root/meetbox-setup.toml  set up from an answers file\n  \
        meetbox-firstboot status                            what is set up, the certificate, the last updates"
)]
struct Cli {
    /// Root directory of the system to set up.
    #[arg(long, default_value = "/", global = true)]
    root: PathBuf,
    /// Answers file (TOML) instead of the questions; it is wiped after reading.
    #[arg(long, global = true)]
    answers: Option<PathBuf>,
    /// Run as the console service on this terminal (e.g. tty1, ttyS0): quiet kernel messages, wait for
    /// Enter, and let only one console ask the questions.
    #[arg(long)]
    console: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Show what is set up, the certificate, and the last update runs.
    #[command(after_help = "Example:\n  meetbox-firstboot status")]
    Status,
    /// Change the domain, the e-mail or the certificate choice.
    #[command(after_help = "Examples:\n  \
        meetbox-firstboot reconfigure                          ask again\n  \
        meetbox-firstboot reconfigure --answers new-name.toml  from an answers file")]
    Reconfigure,
    /// Renew the certificate when two thirds of its lifetime have passed (run by meetbox-acme.timer),
    /// or retry a failed first attempt once its back-off has passed.
    #[command(after_help = "Example:\n  meetbox-firstboot renew --force")]
    Renew {
        /// Ignore the schedule and the back-off.
        #[arg(long)]
        force: bool,
    },
    /// One stage of the security updates, as apt's timers run it (apt-daily.service: refresh,
    /// apt-daily-upgrade.service: install); the outcome is kept for `status`.
    #[command(after_help = "Examples:\n  \
        meetbox-firstboot update refresh   fetch and verify the package lists now\n  \
        meetbox-firstboot update install   install what unattended-upgrades allows now")]
    Update {
        #[arg(value_enum)]
        stage: updates::Stage,
    },
    /// Check the line's public address (the name's DNS records, the owner's STUN server) and make
    /// the videobridge and TURN follow it (run by meetbox-address.timer and on DHCP changes).
    #[command(after_help = "Example:\n  meetbox-firstboot follow-address")]
    FollowAddress,
    /// The file integrity database (AIDE): made once after setup, then compared daily, each
    /// check reporting what changed since the previous one (integrity.rs).
    #[command(after_help = "Examples:\n  \
        meetbox-firstboot integrity init    make the database (once, after setup)\n  \
        meetbox-firstboot integrity check   what changed since the last check")]
    Integrity {
        #[arg(value_enum)]
        action: integrity::Action,
    },
    /// The box's own screen after setup: the status, where the web admin is, and a factory reset
    /// or a restore from a USB stick (run on tty1 by meetbox-screen@tty1.service).
    #[command(after_help = "Example:\n  meetbox-firstboot screen")]
    Screen,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let root = Root::new(&cli.root);
    let result = match cli.command {
        None => {
            let result = run_setup(&root, cli.answers, cli.console.as_deref());
            if cli.console.is_some() {
                console::drain_output();
            }
            result
        }
        Some(Command::Status) => status(&root),
        Some(Command::Reconfigure) => reconfigure(&root, cli.answers),
        Some(Command::Renew { force }) => {
            renew::renew(&root, force).map(|message| println!("{message}"))
        }
        Some(Command::Update { stage }) => updates::run(&root, stage),
        Some(Command::Integrity { action }) => integrity::run(&root, action),
        Some(Command::Screen) => admin::screen::run(&root),
        Some(Command::FollowAddress) => {
            network::follow::follow(&root).map(|message| println!("{message}"))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("meetbox-firstboot: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_setup(root: &Root, answers: Option<PathBuf>, console_name: Option<&str>) -> Result<()> {
    // On a console: quiet the kernel and systemd first, then start on a clean screen.
    let _quiet = console_name.map(|_| QuietConsole::start());
    if console_name.is_some() {
        console::clear_screen();
    }
    println!("{}", console::BANNER);
    if let Some(stick) = install::live_stick(root) {
        return offer_install(root, &stick, console_name);
    }
    if setup::finished(root) {
        println!("Setup has already finished on this box. See: meetbox-firstboot status");
        return Ok(());
    }
    let unattended =
        answers.is_some() || answers::on_esp(root)?.is_some() || has_recorded_answers(root);
    let (lock, pending_enter) = acquire(root, console_name.is_some() && !unattended)?;
    let Some(_lock) = lock else {
        keep_on_screen(console_name, pending_enter);
        show_status_screen(root, console_name);
        return Ok(());
    };
    if setup::finished(root) {
        return Ok(());
    }
    let source = answers.map_or(AnswerSource::EspOrQuestions, AnswerSource::File);
    match setup::run(root, source) {
        Ok(outcome) => {
            if console_name.is_some() {
                console::clear_screen();
                println!("{}", console::BANNER);
            }
            println!("{}", final_screen_of(&outcome));
            keep_on_screen(console_name, None);
            show_status_screen(root, console_name);
            Ok(())
        }
        Err(error) => {
            let step = next_step_name(root);
            eprintln!("{}", console::failure_screen(&step, &error));
            if console_name.is_some() {
                wait_for_enter_before_login(Duration::from_secs(600));
            }
            bail!("setup did not finish")
        }
    }
}

/// A live session from a USB stick: the installer's offer comes before any setup, on the console
/// where Enter is pressed first (or at once, when the answers file's `[install]` section chooses).
fn offer_install(root: &Root, stick: &str, console_name: Option<&str>) -> Result<()> {
    let answer = install::answer_from_esp(root)?;
    let (lock, pending_enter) = acquire(root, console_name.is_some() && answer.is_none())?;
    let Some(_lock) = lock else {
        keep_on_screen(console_name, pending_enter);
        return Ok(());
    };
    if console_name.is_some() {
        console::clear_screen();
        println!("{}", console::BANNER);
    }
    install::run(root, stick, answer)
}

/// The last screen of a setup (or a reconfiguration): the meeting address and what to do next.
fn final_screen_of(outcome: &setup::Outcome) -> String {
    console::final_screen(
        &outcome.settings,
        outcome.network.lan_address,
        &outcome.certificate_note,
    )
}

fn has_recorded_answers(root: &Root) -> bool {
    State::load(root).is_ok_and(|s| s.settings.is_some())
}

fn next_step_name(root: &Root) -> String {
    let state = State::load(root).unwrap_or_default();
    Step::ALL
        .iter()
        .find(|s| !state.is_done(**s))
        .map_or("the last step".to_string(), |s| {
            format!("\"{}\"", s.describe())
        })
}

/// Takes the setup lock. On a console with questions to ask, first waits for Enter so that the console
/// the user sits at runs setup; meanwhile, if another console finishes, shows its result and returns no
/// lock, with the reader still waiting for that Enter (so the next screen can use it).
fn acquire(
    root: &Root,
    wait_for_enter: bool,
) -> Result<(Option<console::SetupLock>, Option<mpsc::Receiver<String>>)> {
    let enter = if wait_for_enter {
        println!("Press Enter to start the setup on this screen.");
        Some(console::spawn_line_reader())
    } else {
        None
    };
    let mut told_busy = false;
    loop {
        let pressed = enter.as_ref().is_none_or(|rx| rx.try_recv().is_ok());
        if pressed || told_busy {
            if let Some(lock) = console::try_lock(root)? {
                if !setup::finished(root) {
                    return Ok((Some(lock), None));
                }
            }
            if !told_busy && !setup::finished(root) {
                println!("Setup is running on another screen; this one shows the result when it is done.");
                told_busy = true;
            }
        }
        if setup::finished(root) {
            if told_busy || enter.is_some() {
                print_result_of_other_console(root);
            }
            return Ok((None, enter));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn print_result_of_other_console(root: &Root) {
    if let Ok(State {
        settings: Some(settings),
        ..
    }) = State::load(root)
    {
        let lan = network::detect(settings.domain.as_str()).lan_address;
        let note = match tls::installed(root) {
            Ok(Some(info)) if !info.self_signed => "from the ACME server",
            _ => "self-signed",
        };
        console::clear_screen();
        println!("{}", console::BANNER);
        println!("{}", console::final_screen(&settings, lan, note));
    }
}

/// Keeps a failure on screen until read (the login prompt would otherwise replace it).
/// On a screen (tty1 and the other virtual consoles), keeps the final screen until Enter: the
/// getty that follows clears the screen, and on a real box this screen, with the meeting address
/// and the ports to forward, is all the owner has. A serial console moves on to its login prompt.
fn keep_on_screen(console_name: Option<&str>, pending_enter: Option<mpsc::Receiver<String>>) {
    let Some(name) = console_name else {
        return;
    };
    let virtual_console = name
        .strip_prefix("tty")
        .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
    if !virtual_console {
        return;
    }
    println!("This screen stays until Enter is pressed; the box works without it.");
    console::drain_output();
    let _quiet = console::QuietConsole::hold();
    let _ = pending_enter
        .unwrap_or_else(console::spawn_line_reader)
        .recv();
}

/// After setup on a console, its status screen follows (at boot, systemd starts it; this once,
/// its condition was not met yet when the boot began).
fn show_status_screen(root: &Root, console_name: Option<&str>) {
    let Some(name) = console_name else {
        return;
    };
    if root.is_live() {
        let unit = format!("meetbox-screen@{name}.service");
        let _ = std::process::Command::new("systemctl")
            .args(["start", "--no-block", &unit])
            .status();
    }
}

fn wait_for_enter_before_login(limit: Duration) {
    println!("Press Enter for a login prompt.");
    console::wait_for_enter(limit);
}

fn status(root: &Root) -> Result<()> {
    let state = State::load(root)?;
    let Some(settings) = &state.settings else {
        println!("Setup has not started yet. Run: meetbox-firstboot");
        return print_updates(root);
    };
    println!("Domain:       {}", settings.domain);
    println!("Admin user:   {}", settings.admin_user);
    println!("Certificate:  {} (chosen)", settings.tls.as_str());
    match tls::installed(root)? {
        Some(info) => {
            println!(
                "  installed:  {}",
                if info.self_signed {
                    "self-signed".to_string()
                } else {
                    format!("issued by {}", info.issuer)
                }
            );
            println!("  valid until {}", format_time(info.not_after));
            if settings.tls == TlsChoice::LetsEncrypt && !info.self_signed {
                println!("  renewal at  {}", format_time(tls::renewal_time(&info)));
            }
        }
        None => println!("  installed:  none"),
    }
    if let Some(record) = RetryRecord::load(root)? {
        println!(
            "Let's Encrypt failed {} time(s); next attempt after {}.\n  Last reason: {}",
            record.attempts,
            format_time(record.next_attempt),
            record.last_failure
        );
    }
    println!("Network:");
    for line in network::diagnosis::for_the_box(root, settings.domain.as_str())? {
        println!("  {} {}", if line.ok { "ok " } else { "FIX" }, line.text);
    }
    println!("Steps:");
    for step in Step::ALL {
        println!(
            "  [{}] {}",
            if state.is_done(step) { "x" } else { " " },
            step.describe()
        );
    }
    println!(
        "Setup {}.",
        if setup::finished(root) {
            "finished"
        } else {
            "not finished: run meetbox-firstboot to resume"
        }
    );
    println!("Integrity:");
    for line in integrity::describe(root)? {
        println!("  {line}");
    }
    print_updates(root)
}

/// The last run of each update stage, and a reboot an update is waiting for.
fn print_updates(root: &Root) -> Result<()> {
    println!("Updates:");
    for line in updates::describe(root)? {
        println!("  {line}");
    }
    Ok(())
}

/// What `reconfigure --answers FILE` accepts.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReconfigureFile {
    domain: String,
    #[serde(default)]
    email: String,
    tls: String,
    acme_directory: Option<String>,
    acme_ca_cert: Option<String>,
}

fn reconfigure(root: &Root, answers: Option<PathBuf>) -> Result<()> {
    println!("{}", console::BANNER);
    let mut settings = State::load(root)?
        .settings
        .context("setup has not run yet; run meetbox-firstboot first")?;
    match answers {
        Some(path) => {
            let text = answers::read_text(&path)?;
            let file: ReconfigureFile = toml::from_str(&text).map_err(|e| {
                anyhow::anyhow!(
                    "{} is not valid: {} (keys: domain, email, tls, acme_directory, acme_ca_cert)",
                    path.display(),
                    e.message()
                )
            })?;
            settings.domain = validation::domain(&file.domain).map_err(anyhow::Error::msg)?;
            settings.email = validation::email(&file.email).map_err(anyhow::Error::msg)?;
            settings.tls = validation::tls_choice(&file.tls).map_err(anyhow::Error::msg)?;
            settings.acme_directory = match file.acme_directory {
                Some(url) => validation::acme_directory(&url).map_err(anyhow::Error::msg)?,
                None => LETS_ENCRYPT_DIRECTORY.to_string(),
            };
            settings.acme_ca_cert = file
                .acme_ca_cert
                .map(|pem| validation::ca_certificate(&pem))
                .transpose()
                .map_err(anyhow::Error::msg)?;
        }
        None => {
            println!("Current domain: {}", settings.domain);
            settings.domain = prompts::ask_domain()?;
            settings.tls = prompts::ask_tls()?;
        }
    }
    let outcome = reconfigure::apply(root, settings)?;
    println!("{}", final_screen_of(&outcome));
    Ok(())
}
