//! The guest's serial console on QEMU's Unix socket: read what the agent prints, type answers as
//! keystrokes. Every wait is bounded and a timeout quotes the end of the console.
//!
//! A thread drains the socket all the time: QEMU stops taking bytes from the guest's UART when its
//! client does not read, and the guest then blocks on every write to the console, shutdown included.
//!
//! The firmware watchdog: under software emulation (TCG) with SMM, OVMF sometimes hangs after the
//! guest's warm reset, before the kernel starts (seen twice in about 40 reboots: once loading the
//! boot entry, once after GRUB). No output at all for [`FIRMWARE_STALL`] between the kernel's
//! "Restarting system" and the next kernel's first line is that hang, and nothing the image does:
//! the console presses the VM's reset button, says so, and goes on waiting, at most
//! [`FIRMWARE_RESETS`] times. A hang at any other point still fails the test.

use crate::support::screen::is_boot_output;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Silence after a warm reset that means the firmware hung (a normal reset reaches the kernel in
/// well under a minute, even emulated).
const FIRMWARE_STALL: Duration = Duration::from_secs(240);
/// Resets the watchdog presses for one console at most.
const FIRMWARE_RESETS: u32 = 2;
/// What the kernel prints last before a warm reset, and first when it starts.
const RESTARTING: &[u8] = b"reboot: Restarting system";
const KERNEL_STARTS: &[u8] = b"Linux version";

pub struct SerialConsole {
    stream: UnixStream,
    /// Everything received so far, filled by the draining thread.
    received: Arc<Mutex<Vec<u8>>>,
    /// When the draining thread last received anything.
    last_output: Arc<Mutex<Instant>>,
    /// Where the next `expect` starts looking (just after the previous match).
    cursor: usize,
    /// The VM's QMP socket, for the firmware watchdog's reset button.
    qmp_socket: Option<PathBuf>,
    resets: u32,
}

impl SerialConsole {
    /// Connects to QEMU's listening socket, which appears shortly after QEMU starts; with the VM's
    /// QMP socket, the firmware watchdog is on.
    pub fn connect(socket: &Path, qmp_socket: Option<&Path>) -> SerialConsole {
        let deadline = Instant::now() + Duration::from_secs(60);
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(stream) => break stream,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200))
                }
                Err(err) => panic!("cannot connect to the serial socket {socket:?}: {err}"),
            }
        };
        let received = Arc::new(Mutex::new(Vec::new()));
        let last_output = Arc::new(Mutex::new(Instant::now()));
        let mut reader = stream.try_clone().unwrap();
        let (sink, heard) = (Arc::clone(&received), Arc::clone(&last_output));
        std::thread::spawn(move || {
            let mut buffer = [0u8; 8192];
            // Ends when QEMU closes the socket (the guest is off).
            while let Ok(n @ 1..) = reader.read(&mut buffer) {
                sink.lock().unwrap().extend_from_slice(&buffer[..n]);
                *heard.lock().unwrap() = Instant::now();
            }
        });
        SerialConsole {
            stream,
            received,
            last_output,
            cursor: 0,
            qmp_socket: qmp_socket.map(Path::to_path_buf),
            resets: 0,
        }
    }

    /// The firmware watchdog (see the module's header): presses reset when the guest has been
    /// silent for [`FIRMWARE_STALL`] since a warm reset, before its kernel started.
    fn unstick_firmware(&mut self) {
        let Some(qmp_socket) = &self.qmp_socket else {
            return;
        };
        if self.resets >= FIRMWARE_RESETS {
            return;
        }
        let silent = self.last_output.lock().unwrap().elapsed();
        if !stalled_in_firmware(&self.received.lock().unwrap(), silent) {
            return;
        }
        eprintln!(
            "console: no output for {} s after a warm reset, before the kernel: the emulated \
             firmware hung (TCG with SMM); pressing reset",
            silent.as_secs()
        );
        meetbox::vm::qemu::press_reset(qmp_socket).expect("QMP system_reset");
        self.resets += 1;
        *self.last_output.lock().unwrap() = Instant::now();
    }

    /// Waits until `text` appears after the previous match; panics after `timeout` with the end of
    /// the console.
    pub fn expect(&mut self, text: &str, timeout: Duration) {
        let started = Instant::now();
        loop {
            let found = {
                let received = self.received.lock().unwrap();
                find(&received[self.cursor..], text.as_bytes())
            };
            if let Some(at) = found {
                self.cursor += at + text.len();
                eprintln!(
                    "console: \"{text}\" after {:.0} s",
                    started.elapsed().as_secs_f64()
                );
                return;
            }
            self.unstick_firmware();
            assert!(
                started.elapsed() < timeout,
                "after {} s the serial console had not shown \"{text}\"; it ended with:\n{}",
                timeout.as_secs(),
                self.tail(2000)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Types `line` followed by Enter (a carriage return, as a terminal sends it).
    pub fn type_line(&mut self, line: &str) {
        self.stream
            .write_all(format!("{line}\r").as_bytes())
            .expect("cannot type on the serial console");
    }

    /// Everything the console showed so far.
    pub fn transcript(&self) -> String {
        String::from_utf8_lossy(&self.received.lock().unwrap()).into_owned()
    }

    /// The last `bytes` bytes received, for failure messages.
    pub fn tail(&self, bytes: usize) -> String {
        let received = self.received.lock().unwrap();
        let start = received.len().saturating_sub(bytes);
        String::from_utf8_lossy(&received[start..]).into_owned()
    }
}

impl SerialConsole {
    /// The console as a terminal of `rows` x `cols` shows it now: every byte received, through a
    /// terminal emulator (the vt100 crate), so overwritten text and cleared screens count as a
    /// person sees them, not as the byte stream has them.
    pub fn screen(&self, rows: u16, cols: u16, upto: usize) -> Vec<String> {
        let mut parser = vt100::Parser::new(rows, cols, 0);
        let received = self.received.lock().unwrap();
        parser.process(&received[..upto.min(received.len())]);
        parser
            .screen()
            .rows(0, cols)
            .map(|row| row.trim_end().to_string())
            .collect()
    }

    /// Checks the visible 24x80 screen now: `first` is its first line of text, `last` starts its
    /// last line of text, and no boot output (systemd's status lines, kernel messages) is on it.
    pub fn assert_clean_screen(&self, first: &str, last: &str) {
        self.assert_clean(first, last, usize::MAX);
    }

    /// The same check of the screen as it was when the last awaited text arrived (what comes
    /// next, such as the login prompt after setup, is not part of it).
    pub fn assert_clean_screen_at_match(&self, first: &str, last: &str) {
        self.assert_clean(first, last, self.cursor);
    }

    /// Once the questions fill more than a screen the banner scrolls away: then only the last line
    /// and the absence of boot output are checked.
    pub fn assert_no_boot_output(&self, last: &str) {
        self.assert_clean("", last, usize::MAX);
    }

    fn assert_clean(&self, first: &str, last: &str, upto: usize) {
        let screen = self.screen(24, 80, upto);
        let text: Vec<&String> = screen.iter().filter(|row| !row.trim().is_empty()).collect();
        let shown = screen.join("\n");
        if !first.is_empty() {
            assert_eq!(
                text.first().map(|row| row.trim()),
                Some(first),
                "the screen does not start with {first:?}:\n{shown}"
            );
        }
        assert!(
            text.last().is_some_and(|row| row.contains(last)),
            "the screen does not end with {last:?}:\n{shown}"
        );
        for row in &text {
            assert!(
                !is_boot_output(row),
                "boot output on the agent's screen: {row:?}\n{shown}"
            );
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Whether a console that received `received` and then nothing for `silent` is the firmware
/// hanging after a warm reset: silent long enough, after the kernel restarted the machine and
/// before a kernel started again.
fn stalled_in_firmware(received: &[u8], silent: Duration) -> bool {
    silent >= FIRMWARE_STALL
        && rfind(received, RESTARTING)
            .is_some_and(|restart| find(&received[restart..], KERNEL_STARTS).is_none())
}

fn rfind(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .rposition(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_silence_between_a_restart_and_the_next_kernel_is_a_firmware_hang() {
        let hung = b"[  459.4] reboot: Restarting system\nBdsDxe: loading Boot0002\n";
        assert!(stalled_in_firmware(hung, FIRMWARE_STALL));
        assert!(!stalled_in_firmware(hung, FIRMWARE_STALL / 2));
        // The next kernel started: a later silence is the guest's own.
        let booted = b"reboot: Restarting system\n[    0.000000] Linux version 6.8.0\n";
        assert!(!stalled_in_firmware(booted, FIRMWARE_STALL * 2));
        // No warm reset at all: a first boot that hangs fails the test.
        assert!(!stalled_in_firmware(
            b"BdsDxe: loading Boot0002\n",
            FIRMWARE_STALL * 2
        ));
        // The second reset counts, not the first.
        let again = b"reboot: Restarting system\nLinux version\nreboot: Restarting system\nGRUB";
        assert!(stalled_in_firmware(again, FIRMWARE_STALL));
    }
}
