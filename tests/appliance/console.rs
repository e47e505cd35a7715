//! The guest's serial console on QEMU's Unix socket: read what the agent prints, type answers as
//! keystrokes. Every wait is bounded and a timeout quotes the end of the console.
//!
//! A thread drains the socket all the time: QEMU stops taking bytes from the guest's UART when its
//! client does not read, and the guest then blocks on every write to the console, shutdown included.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct SerialConsole {
    stream: UnixStream,
    /// Everything received so far, filled by the draining thread.
    received: Arc<Mutex<Vec<u8>>>,
    /// Where the next `expect` starts looking (just after the previous match).
    cursor: usize,
}

impl SerialConsole {
    /// Connects to QEMU's listening socket, which appears shortly after QEMU starts.
    pub fn connect(socket: &Path) -> SerialConsole {
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
        let mut reader = stream.try_clone().unwrap();
        let sink = Arc::clone(&received);
        std::thread::spawn(move || {
            let mut buffer = [0u8; 8192];
            // Ends when QEMU closes the socket (the guest is off).
            while let Ok(n @ 1..) = reader.read(&mut buffer) {
                sink.lock().unwrap().extend_from_slice(&buffer[..n]);
            }
        });
        SerialConsole {
            stream,
            received,
            cursor: 0,
        }
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

/// Lines of systemd's and the kernel's boot output: none may be on screen while the agent shows it.
const BOOT_NOISE: &[&str] = &[
    "[  OK  ]",
    "[FAILED]",
    "A start job is running",
    "Reached target",
    "Started ",
    "Stopped ",
    "Finished ",
    "Mounting ",
    "Mounted ",
    "Listening on",
    "systemd[",
];

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
            let kernel_line = row.trim_start().starts_with('[')
                && row.trim_start()[1..]
                    .trim_start()
                    .split(']')
                    .next()
                    .is_some_and(|stamp| stamp.contains('.') && stamp.parse::<f64>().is_ok());
            assert!(
                !kernel_line && !BOOT_NOISE.iter().any(|noise| row.contains(noise)),
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
