//! The box's own screen after setup (tty1, and the serial console when the kernel has one), in
//! place of a login prompt nobody can use (root is locked): the status, and where the web admin
//! is. Two actions need someone at the box: a factory reset, and a restore from a backup on a USB
//! stick (the owner who forgot the admin password still has the backup's passphrase).

use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::admin::actions::RESET_WORD;
use crate::admin::status::{self, Status};
use crate::admin::usb;
use crate::apply::accounts;
use crate::apply::Root;
use crate::ask::console::{self, QuietConsole};
use crate::ask::hidden_input;
use crate::backup;
use crate::layout;
use crate::reset;
use crate::setup;
use crate::state::State;

/// The first line of the screen.
pub const HEADING: &str = "Meetbox meeting server";
/// How often the status is drawn again while nobody types.
const REFRESH: Duration = Duration::from_secs(60);

/// The status screen, as text.
pub fn screen(status: &Status) -> String {
    // Between a factory reset (from the web admin) and the restart it triggers, the settings are
    // gone: no address to show, and every service stopped on purpose.
    if status.domain.is_empty() {
        return format!(
            "{HEADING}\n\n  This box has no settings now (a factory reset erased them).\n  \
             It restarts and asks the setup questions.\n"
        );
    }
    let mut out = format!("{HEADING}\n\n  Meetings:     {}\n", status.meeting_url);
    let admin = status
        .lan_address
        .iter()
        .map(|ip| format_admin_url(ip))
        .chain(std::iter::once(format_admin_url(&status.domain)))
        .collect::<Vec<_>>();
    out += &format!(
        "  Web admin:    {}   (from a computer on this network)\n",
        admin.join("  or  ")
    );
    if let Some(first) = status.certificate.first() {
        out += &format!("  Certificate:  {first}\n");
    }
    let named = |wanted: &dyn Fn(&str) -> bool| -> Vec<&str> {
        status
            .services
            .iter()
            .filter(|(_, state)| wanted(state))
            .map(|(unit, _)| unit.trim_end_matches(".service"))
            .collect()
    };
    // systemd says "activating" while a service starts (the videobridge takes a while).
    let starting = named(&|state| matches!(state, "activating" | "reloading"));
    let down = named(&|state| !matches!(state, "active" | "activating" | "reloading"));
    out += &match (down.is_empty(), starting.is_empty()) {
        (true, true) => "  Services:     all running\n".to_string(),
        (true, false) => format!("  Services:     starting: {}\n", starting.join(", ")),
        _ => format!("  Services:     NOT running: {}\n", down.join(", ")),
    };
    out += "\nAt this screen only:\n";
    out += "  1  Factory reset: erase everything on this box and set it up again\n";
    out += "  2  Restore from a backup on a USB stick\n";
    out += "\nType 1 or 2 and press Enter.\n";
    out
}

fn format_admin_url(host: &str) -> String {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    format!("https://{host}:{}/", layout::ADMIN_PORT)
}

/// Shows the screen until the box stops, acting on what is typed.
pub fn run(root: &Root) -> Result<()> {
    let _quiet = QuietConsole::start();
    let mut input = console::spawn_line_reader();
    loop {
        console::clear_screen();
        match status::gather(root) {
            Ok(status) => println!("{}", screen(&status)),
            Err(error) => println!("{HEADING}\n\nThe status cannot be read: {error:#}\n"),
        }
        match input.recv_timeout(REFRESH) {
            Ok(choice) => {
                let outcome = match choice.trim() {
                    "1" => factory_reset(root),
                    "2" => restore_from_usb(root),
                    _ => Ok(()),
                };
                if let Err(error) = outcome {
                    println!("\n{error:#}\n\nPress Enter to go back.");
                    console::wait_for_enter(Duration::from_secs(300));
                }
                input = console::spawn_line_reader();
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                // The console closed (a hang-up); systemd starts the screen again.
                return Ok(());
            }
        }
    }
}

fn factory_reset(root: &Root) -> Result<()> {
    let admin_user = State::load(root)?
        .settings
        .map(|s| s.admin_user)
        .context("setup has not finished")?;
    println!(
        "\nFactory reset: everything of this box is erased, and it asks the setup questions again."
    );
    let password = hidden_input::read_hidden_line(&format!("Password of {admin_user}"))?;
    anyhow::ensure!(
        accounts::admin_password_matches(root, &admin_user, &password)?,
        "That is not the admin password; nothing was erased."
    );
    let word = console::read_answer(&format!("Type {RESET_WORD} to erase everything: "))?;
    anyhow::ensure!(word.trim() == RESET_WORD, "Nothing was erased.");
    println!("{}", reset::erase_and_restart(root)?);
    std::thread::sleep(Duration::from_secs(600));
    Ok(())
}

/// Replaces the box's content with a backup from a stick, then sets it up with it, here.
fn restore_from_usb(root: &Root) -> Result<()> {
    println!(
        "\nLooking for backups (*.{}) on USB sticks…",
        backup::EXTENSION
    );
    let mut found = usb::backups()?;
    anyhow::ensure!(
        !found.is_empty(),
        "No backup was found. Copy the file from the web admin's Backup page to the top folder of a \
         USB stick (FAT or exFAT), plug the stick into the box, and choose 2 again."
    );
    let chosen = if found.len() == 1 {
        found.remove(0)
    } else {
        for (i, backup) in found.iter().enumerate() {
            println!("  {}  {} on {}", i + 1, backup.name, backup.device);
        }
        let answer = console::read_answer(&format!("Choose 1-{}: ", found.len()))?;
        let index: usize = answer
            .trim()
            .parse()
            .ok()
            .filter(|n| (1..=found.len()).contains(n))
            .context("That is not one of the numbers; nothing was changed.")?;
        found.remove(index - 1)
    };
    println!("Backup: {} on {}", chosen.name, chosen.device);
    let content = backup::ask_and_open(&chosen.bytes)?;
    let domain = content
        .state
        .settings
        .as_ref()
        .map(|s| s.domain.to_string())
        .unwrap_or_default();
    let word = console::read_answer(&format!(
        "Everything on this box is replaced with the backup of {domain}. Type {RESET_WORD} to go on: "
    ))?;
    anyhow::ensure!(word.trim() == RESET_WORD, "Nothing was changed.");
    reset::erase(root)?;
    let mut state = backup::put_back(root, content)?;
    let outcome = setup::resume(root, &mut state)?;
    println!(
        "\nThe backup is restored: the box serves https://{}/ again.\nPress Enter to go back.",
        outcome.settings.domain
    );
    console::wait_for_enter(Duration::from_secs(600));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> Status {
        Status {
            meeting_url: "https://meet.example.org/".into(),
            services: vec![
                ("prosody.service".into(), "active".into()),
                ("nginx.service".into(), "failed".into()),
            ],
            certificate: vec!["Issued by CN=R11".into(), "Valid until ...".into()],
            lan_address: Some("192.168.1.20".into()),
            public_address: None,
            network: Vec::new(),
            updates: Vec::new(),
            integrity: Vec::new(),
            disk: (1, 2),
            memory: (1, 2),
            domain: "meet.example.org".into(),
            tls: None,
            last_change: None,
        }
    }

    #[test]
    fn the_screen_shows_where_the_admin_is_and_what_is_down() {
        let text = screen(&status());
        assert!(text.starts_with(HEADING));
        assert!(
            text.contains("https://192.168.1.20:8443/  or  https://meet.example.org:8443/"),
            "{text}"
        );
        assert!(text.contains("NOT running: nginx"), "{text}");
        assert!(text.contains("Issued by CN=R11") && !text.contains("Valid until"));
        let mut starting = status();
        starting.services[1].1 = "activating".into();
        assert!(
            screen(&starting).contains("starting: nginx"),
            "{}",
            screen(&starting)
        );
        let ipv6 = Status {
            lan_address: Some("fd00::5".into()),
            ..status()
        };
        assert!(screen(&ipv6).contains("https://[fd00::5]:8443/"));
    }

    #[test]
    fn a_box_without_settings_says_it_restarts_into_setup() {
        let erased = Status {
            domain: String::new(),
            meeting_url: "https:///".into(),
            ..status()
        };
        let text = screen(&erased);
        assert!(text.contains("asks the setup questions"), "{text}");
        assert!(
            !text.contains("https://") && !text.contains("NOT running"),
            "{text}"
        );
    }
}
