//! The console side: the banner, keeping kernel and systemd messages off the screen, clearing it, the lock that lets only one
//! console run setup, and the texts of the last screen and of a failure.

use std::fs::{self, File, OpenOptions};
use std::io::BufRead;
use std::os::fd::AsRawFd;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::apply::Root;
use crate::ask::validation::TlsChoice;
use crate::layout;
use crate::settings::Settings;

/// The console's next line, read on a thread so that the caller can wait with a limit (or show
/// other things meanwhile); the line ending is removed. Nothing is sent when the console closes.
pub fn spawn_line_reader() -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        if matches!(std::io::stdin().lock().read_line(&mut line), Ok(n) if n > 0) {
            let _ = tx.send(line.trim_end_matches(['\n', '\r']).to_string());
        }
    });
    rx
}

/// Waits for Enter, at most `limit`.
pub fn wait_for_enter(limit: Duration) {
    let _ = spawn_line_reader().recv_timeout(limit);
}

/// Shows `prompt` and reads one answer (echoed; the line ending is removed).
pub fn read_answer(prompt: &str) -> Result<String> {
    print!("{prompt}");
    std::io::Write::flush(&mut std::io::stdout()).ok();
    let mut line = String::new();
    let read = std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read the answer")?;
    if read == 0 {
        anyhow::bail!("the console closed before an answer was typed");
    }
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

/// The first line on every console.
pub const BANNER: &str = "Meetbox first-boot setup";

/// Keeps everything else off the console while the agent owns it: the kernel's messages (its
/// console log level drops to emergencies only) and systemd's status lines (PID 1's show-status
/// goes off, so no "A start job is running..." line lands between the questions). Both come back on
/// drop. Both consoles start at once: the one that finds the level already lowered leaves restoring
/// to the other, or the quiet console would outlive setup.
pub struct QuietConsole {
    previous: Option<String>,
}

const PRINTK: &str = "/proc/sys/kernel/printk";
const QUIET_LEVEL: &str = "1";

impl QuietConsole {
    pub fn start() -> QuietConsole {
        set_systemd_status("no");
        let previous = fs::read_to_string(PRINTK)
            .ok()
            .filter(|levels| levels.split_whitespace().next() != Some(QUIET_LEVEL));
        // Level 1: only emergencies reach the console.
        if previous.is_some() && fs::write(PRINTK, QUIET_LEVEL).is_err() {
            return QuietConsole { previous: None };
        }
        QuietConsole { previous }
    }
}

impl QuietConsole {
    /// Keeps systemd's status output off while a screen stays up after setup (the other console may
    /// already have restored it); the configured default comes back on drop.
    pub fn hold() -> QuietConsole {
        set_systemd_status("no");
        QuietConsole {
            previous: fs::read_to_string(PRINTK).ok(),
        }
    }
}

impl Drop for QuietConsole {
    fn drop(&mut self) {
        if let Some(level) = self
            .previous
            .as_deref()
            .and_then(|p| p.split_whitespace().next())
        {
            let _ = fs::write(PRINTK, level);
            // The empty mode is systemd's own default (the kernel command line, system.conf).
            set_systemd_status("");
        }
    }
}

/// Sets PID 1's status output (`SetShowStatus` of systemd's manager); does nothing where systemd
/// does not run (tests, `--root`).
fn set_systemd_status(mode: &str) {
    if !std::path::Path::new("/run/systemd/system").exists() {
        return;
    }
    let _ = std::process::Command::new("busctl")
        .args([
            "call",
            "org.freedesktop.systemd1",
            "/org/freedesktop/systemd1",
            "org.freedesktop.systemd1.Manager",
            "SetShowStatus",
            "s",
            mode,
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
}

/// The sequence that homes the cursor, clears the screen and its scroll-back: what the owner
/// sees starts on a blank screen, not over the boot's last lines.
pub const CLEAR_SCREEN: &str = "\x1b[H\x1b[2J\x1b[3J";

/// Clears the console before a new screen (only on a terminal: logs and pipes get no escapes).
pub fn clear_screen() {
    use std::io::{IsTerminal, Write};
    let mut out = std::io::stdout();
    if out.is_terminal() {
        let _ = out.write_all(CLEAR_SCREEN.as_bytes());
        let _ = out.flush();
    }
}

/// An exclusive hold on the setup lock; released when dropped (or when the process dies).
pub struct SetupLock {
    _file: File,
}

/// Tries to take the setup lock without waiting; None when another console holds it.
pub fn try_lock(root: &Root) -> Result<Option<SetupLock>> {
    let path = root.path(layout::LOCK_FILE);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own; no memory is shared.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(Some(SetupLock { _file: file }))
    } else {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
            Ok(None)
        } else {
            Err(err).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// Waits until everything written to the console has left it. A serial line sends about 11 KB/s;
/// the getty that follows setup on the same console hangs the line up and would discard the final
/// screen still queued in the driver (seen on ttyS0 when the other console did the setup).
pub fn drain_output() {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    for fd in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
        // SAFETY: tcdrain on the process's own standard descriptors; fails harmlessly on a non-tty.
        unsafe {
            libc::tcdrain(fd);
        }
    }
}

/// The last screen: where to meet, who may start meetings, what to forward on the router.
pub fn final_screen(
    settings: &Settings,
    lan_address: Option<std::net::IpAddr>,
    certificate_note: &str,
) -> String {
    let forward_to = lan_address.map_or("this box".to_string(), |ip| format!("this box ({ip})"));
    let mut out = String::new();
    out += "\nSetup is complete.\n\n";
    out += &format!("  Meetings:     https://{}/\n", settings.domain);
    out += &format!(
        "  Admin user:   {} (log in with it to start a meeting; guests join without an account)\n",
        settings.admin_user
    );
    out += &format!("  Certificate:  {certificate_note}\n\n");
    out += &format!("On your router, forward these ports to {forward_to}:\n");
    for port in layout::ROUTER_PORTS {
        out += &format!("  {port}\n");
    }
    if settings.tls == TlsChoice::SelfSigned {
        out += "\nBrowsers will warn about the self-signed certificate until you accept it once.\n";
    }
    let admin_host = lan_address.map_or(settings.domain.to_string(), |ip| match ip {
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
        v4 => v4.to_string(),
    });
    out += &format!(
        "\nTo manage the box (meeting hosts, the name, backups), open the web admin from a\ncomputer on this network: https://{admin_host}:{}/\n",
        layout::ADMIN_PORT
    );
    out
}

/// What a failure looks like on screen: what failed, why, and how to try again.
pub fn failure_screen(step: &str, error: &anyhow::Error) -> String {
    format!(
        "\nSetup stopped: {step} failed.\n\n  {error:#}\n\nNothing is lost: the steps already done are kept.\nTo try again, log in as root and run: meetbox-firstboot\n(or simply restart the box; setup resumes where it stopped).\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ask::validation;
    use crate::secrets::scram;

    #[test]
    fn final_screen_names_url_user_and_ports() {
        let settings = Settings {
            domain: validation::domain("meet.example.org").unwrap(),
            admin_user: "admin".into(),
            admin_credential: scram::credential("x", "y", 4096),
            email: None,
            tls: TlsChoice::LetsEncrypt,
            acme_directory: String::new(),
            acme_ca_cert: None,
            ssh_authorized_keys: Vec::new(),
            stun_server: None,
        };
        let screen = final_screen(
            &settings,
            Some("192.168.1.9".parse().unwrap()),
            "Let's Encrypt",
        );
        for needle in [
            "https://meet.example.org/",
            "admin",
            "80/tcp",
            "443/tcp",
            "10000/udp",
            "3478/udp",
            "192.168.1.9",
            "https://192.168.1.9:8443/",
        ] {
            assert!(screen.contains(needle), "{needle}");
        }
    }

    #[test]
    fn lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        let held = try_lock(&root).unwrap();
        assert!(held.is_some());
        // flock locks belong to the open file description: a second open conflicts.
        assert!(try_lock(&root).unwrap().is_none());
        drop(held);
        assert!(try_lock(&root).unwrap().is_some());
    }
}
