//! A lock shared between processes on one machine, for caches that several builds (or test
//! binaries running side by side) fill: the first makes the entry, the others wait and then use
//! it, so no two processes ever write the same tarball at once.

use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::Path;

use anyhow::{Context, Result};

use super::progress;

/// Held while the guarded work runs; dropping it (closing the file) releases the lock.
pub struct Exclusive {
    _file: File,
}

/// Takes the exclusive lock on the file `path` (created if missing), waiting for whoever holds
/// it; `what` names the guarded work in the line shown while waiting.
pub fn exclusive(path: &Path, what: &str) -> Result<Exclusive> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open the lock file {}", path.display()))?;
    if !flock(&file, libc::LOCK_EX | libc::LOCK_NB, path)? {
        progress::detail(format!(
            "waiting for another process that is {what} (lock {})",
            path.display()
        ));
        flock(&file, libc::LOCK_EX, path)?;
    }
    Ok(Exclusive { _file: file })
}

/// flock(2): Ok(false) when a non-blocking request finds the lock taken.
fn flock(file: &File, operation: libc::c_int, path: &Path) -> Result<bool> {
    loop {
        // SAFETY: flock on a file descriptor we own; no memory is shared.
        if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
            return Ok(true);
        }
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => return Ok(false),
            _ => return Err(err).with_context(|| format!("cannot lock {}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn a_second_holder_waits_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let first = exclusive(&path, "testing").unwrap();
        let (sent, received) = mpsc::channel();
        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || {
                // A new open file description, as another process would have.
                let second = exclusive(&path, "testing").unwrap();
                sent.send(()).unwrap();
                drop(second);
            })
        };
        assert!(
            received.recv_timeout(Duration::from_millis(300)).is_err(),
            "the second holder got the lock while the first held it"
        );
        drop(first);
        received
            .recv_timeout(Duration::from_secs(10))
            .expect("the second holder never got the lock");
        waiter.join().unwrap();
    }
}
