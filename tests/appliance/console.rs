//! The guest's serial console on QEMU's Unix socket: read what the agent prints, type answers as
//! keystrokes. Every wait is bounded and a timeout quotes the last console lines.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

pub struct SerialConsole {
    stream: UnixStream,
    /// Everything received so far.
    received: Vec<u8>,
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
        stream
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        SerialConsole {
            stream,
            received: Vec::new(),
            cursor: 0,
        }
    }

    /// Waits until `text` appears after the previous match; panics after `timeout` with the tail of
    /// the console.
    pub fn expect(&mut self, text: &str, timeout: Duration) {
        let started = Instant::now();
        loop {
            if let Some(at) = find(&self.received[self.cursor..], text.as_bytes()) {
                self.cursor += at + text.len();
                eprintln!(
                    "console: \"{text}\" after {:.0} s",
                    started.elapsed().as_secs_f64()
                );
                return;
            }
            assert!(
                started.elapsed() < timeout,
                "after {} s the serial console had not shown \"{text}\"; its last lines:\n{}",
                timeout.as_secs(),
                self.tail(2000)
            );
            self.read_some();
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
        String::from_utf8_lossy(&self.received).into_owned()
    }

    /// The last `bytes` bytes received, for failure messages.
    pub fn tail(&self, bytes: usize) -> String {
        let start = self.received.len().saturating_sub(bytes);
        String::from_utf8_lossy(&self.received[start..]).into_owned()
    }

    fn read_some(&mut self) {
        let mut buffer = [0u8; 4096];
        match self.stream.read(&mut buffer) {
            Ok(0) => std::thread::sleep(Duration::from_millis(300)),
            Ok(n) => self.received.extend_from_slice(&buffer[..n]),
            Err(err) if matches!(err.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(err) => panic!(
                "reading the serial console failed: {err}\n{}",
                self.tail(2000)
            ),
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
