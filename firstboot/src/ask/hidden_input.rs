//! A hidden line from the terminal, for the password.
//!
//! dialoguer's `Password` prints its prompt first and only then turns echo off, with `TCSAFLUSH`: what
//! is typed in between (a quick typist, a paste, a slow serial console) is shown on the screen and then
//! thrown away, so part of the password is displayed and the rest is taken as the whole password. Here
//! echo goes off before the prompt is shown and nothing typed is discarded.

use std::io::{BufRead, Write};
use std::os::fd::AsRawFd;

use anyhow::{bail, Context, Result};

/// Echo off on standard input while alive (when it is a terminal); the previous mode comes back on drop.
struct EchoOff {
    fd: i32,
    original: libc::termios,
}

impl EchoOff {
    fn start() -> Option<EchoOff> {
        let fd = std::io::stdin().as_raw_fd();
        // SAFETY: termios is plain data; tcgetattr fills it or fails (not a terminal).
        let mut original: libc::termios = unsafe { std::mem::zeroed() };
        if unsafe { libc::tcgetattr(fd, &mut original) } != 0 {
            return None;
        }
        let mut hidden = original;
        hidden.c_lflag &= !(libc::ECHO | libc::ECHOE | libc::ECHOK | libc::ECHONL);
        // TCSANOW: keep what was already typed.
        // SAFETY: fd is standard input and `hidden` a valid termios.
        if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &hidden) } != 0 {
            return None;
        }
        Some(EchoOff { fd, original })
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        // SAFETY: restores the mode read in `start` on the same descriptor.
        unsafe { libc::tcsetattr(self.fd, libc::TCSANOW, &self.original) };
    }
}

/// Shows `prompt` and reads one line without echoing it (the line ending is removed).
pub fn read_hidden_line(prompt: &str) -> Result<String> {
    let echo_off = EchoOff::start();
    eprint!("{prompt}: ");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    let read = std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("cannot read from the console");
    drop(echo_off);
    eprintln!();
    if read? == 0 {
        bail!("the console closed before the password was typed");
    }
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}
