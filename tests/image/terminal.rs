//! `meetbox run` in a real terminal, as an owner tries an image: tmux at 80×24, the serial console
//! on the terminal. The first-boot banner must come up on a clean screen, alone at the top with
//! nothing of the boot over or under it. One boot in three once stopped printing before the banner
//! (a race between the consoles' agents and the serial getty); every boot of the appliance tests
//! checks the same screen on its serial console, so the race is sampled many times a run.

use crate::support::screen::is_boot_output;
use std::fs;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Boots under Secure Boot, in software emulation on a busy machine.
const BOOT: Duration = Duration::from_secs(900);
/// A clean power-off through QEMU's monitor (systemd may wait on a stuck udev worker).
const POWER_OFF: Duration = Duration::from_secs(300);

fn tmux(args: &[&str]) -> Output {
    Command::new("tmux").args(args).output().expect("tmux runs")
}

fn screen(session: &str) -> String {
    String::from_utf8_lossy(&tmux(&["capture-pane", "-p", "-t", session]).stdout).into_owned()
}

fn running(session: &str) -> bool {
    tmux(&["has-session", "-t", session]).status.success()
}

/// Runs `meetbox ARGS` in a fresh tmux session until the agent's prompt shows, checks the screen
/// and that the kernel saw Secure Boot on (everything the terminal received goes to `log`), then
/// powers the guest off cleanly through QEMU's monitor (Ctrl-A C), so its disk can be read.
pub fn boot_to_the_banner(meetbox: &str, args: &[String], log: &Path) {
    let session = format!("meetbox-run-{}", std::process::id());
    let mut command = vec![
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "80",
        "-y",
        "24",
        meetbox,
    ];
    command.extend(args.iter().map(String::as_str));
    let started = tmux(&command);
    assert!(started.status.success(), "tmux: {started:?}");
    let pipe = format!("cat >> '{}'", log.display());
    let piped = tmux(&["pipe-pane", "-o", "-t", &session, &pipe]);
    assert!(piped.status.success(), "tmux pipe-pane: {piped:?}");

    let deadline = Instant::now() + BOOT;
    let shown = loop {
        let shown = screen(&session);
        if shown.contains("Press Enter to start the setup") {
            break shown;
        }
        if Instant::now() > deadline || !running(&session) {
            let _ = tmux(&["kill-session", "-t", &session]);
            let received = fs::read(log).unwrap_or_default();
            let tail = String::from_utf8_lossy(&received[received.len().saturating_sub(3000)..]);
            panic!(
                "`meetbox run` did not reach the first-boot banner; the terminal shows:\n{shown}\n\
                 last of what it received ({}):\n{tail}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    };
    let lines: Vec<&str> = shown.lines().filter(|l| !l.trim().is_empty()).collect();
    let problem = if lines.first().map(|l| l.trim()) != Some("Meetbox first-boot setup") {
        Some("the banner is not alone at the top of the screen")
    } else if lines.iter().any(|line| is_boot_output(line)) {
        Some("boot output on the agent's screen")
    } else {
        None
    };
    if let Some(problem) = problem {
        let _ = tmux(&["kill-session", "-t", &session]);
        panic!("{problem}:\n{shown}");
    }
    eprintln!("`meetbox run` in a terminal: banner and prompt on a clean screen");

    for keys in [&["C-a", "c"][..], &["system_powerdown", "Enter"]] {
        let mut send = vec!["send-keys", "-t", &session];
        send.extend(keys);
        tmux(&send);
        std::thread::sleep(Duration::from_secs(1));
    }
    let deadline = Instant::now() + POWER_OFF;
    while running(&session) {
        if Instant::now() > deadline {
            let _ = tmux(&["kill-session", "-t", &session]);
            panic!(
                "the guest did not power off within {} s",
                POWER_OFF.as_secs()
            );
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let received = fs::read(log).unwrap_or_default();
    assert!(
        String::from_utf8_lossy(&received).contains("Secure boot enabled"),
        "the kernel did not report Secure Boot on ({} holds what the terminal received)",
        log.display()
    );
}
