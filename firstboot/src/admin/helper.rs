//! The narrow root helper: a Unix socket that only root and the admin's web process may use (its
//! group and the peer's credentials), one JSON [`Action`] per connection, one [`Reply`] back.
//!
//! Its log names each action and whether it was done, never an argument: most are passwords.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::admin::actions::{self, Action, Reply};
use crate::apply::{Owner, Root};
use crate::layout;

/// The longest request the helper reads (a password is at most a few hundred bytes).
const MAX_REQUEST: u64 = 64 * 1024;
/// How long a renewal or a status may take before the web process gives up.
const REPLY_TIMEOUT: Duration = Duration::from_secs(180);

/// Serves forever on the socket below `root`.
pub fn serve(root: &Root) -> Result<()> {
    let path = root.path(layout::ADMIN_HELPER_SOCKET);
    let listener = bind(root, &path)?;
    let allowed = allowed_peers(root)?;
    eprintln!("meetbox-admin helper: listening on {}", path.display());
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(stream) => stream,
            Err(error) => {
                eprintln!("meetbox-admin helper: accept failed: {error}");
                continue;
            }
        };
        // A renewal takes a while; status pages and logins meanwhile get their answers.
        let (root, allowed) = (root.clone(), allowed.clone());
        std::thread::spawn(move || {
            if let Err(error) = answer(&root, stream, &allowed) {
                eprintln!("meetbox-admin helper: {error:#}");
            }
        });
    }
    Ok(())
}

/// The socket, created private and then opened to the admin's group (root:meetbox-admin 0660).
fn bind(root: &Root, path: &Path) -> Result<UnixListener> {
    let dir = path.parent().expect("the socket path has a directory");
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
            return Err(error).with_context(|| format!("cannot remove the old {}", path.display()))
        }
        _ => {}
    }
    // SAFETY: umask only changes this process's file-creation mask.
    let previous = unsafe { libc::umask(0o177) };
    let listener = UnixListener::bind(path);
    unsafe { libc::umask(previous) };
    let listener = listener.with_context(|| format!("cannot listen on {}", path.display()))?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let (_, group) = root.lookup_owner(Owner::new("root", layout::ADMIN_USER))?;
        std::os::unix::fs::chown(path, None, Some(group))
            .with_context(|| format!("cannot give {} to the admin's group", path.display()))?;
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))?;
    Ok(listener)
}

/// Root, this process's own user (tests), and the admin's web process.
fn allowed_peers(root: &Root) -> Result<Vec<u32>> {
    let (admin, _) = root.lookup_owner(Owner::new(layout::ADMIN_USER, "root"))?;
    // SAFETY: geteuid has no preconditions.
    Ok(vec![0, unsafe { libc::geteuid() }, admin])
}

fn answer(root: &Root, stream: UnixStream, allowed: &[u32]) -> Result<()> {
    let uid = peer_uid(&stream)?;
    if !allowed.contains(&uid) {
        bail!("refused a connection from uid {uid}");
    }
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = String::new();
    BufReader::new((&stream).take(MAX_REQUEST))
        .read_line(&mut line)
        .context("cannot read the request")?;
    let reply = match serde_json::from_str::<Action>(&line) {
        Err(_) => Reply::Refused("the helper does not know this request".into()),
        Ok(action) => {
            let name = action.name();
            match actions::perform(root, action) {
                Ok(reply) => {
                    let outcome = match &reply {
                        Reply::Refused(_) => "refused",
                        _ => "done",
                    };
                    eprintln!("meetbox-admin helper: {name}: {outcome}");
                    reply
                }
                Err(error) => {
                    eprintln!("meetbox-admin helper: {name}: failed: {error:#}");
                    Reply::Refused(format!("{error:#}"))
                }
            }
        }
    };
    let mut text = serde_json::to_string(&reply)?;
    text.push('\n');
    (&stream).write_all(text.as_bytes())?;
    Ok(())
}

fn peer_uid(stream: &UnixStream) -> Result<u32> {
    use std::os::fd::AsRawFd;
    let mut credentials = libc::ucred {
        pid: 0,
        uid: u32::MAX,
        gid: u32::MAX,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED fills a ucred of the given length on a connected Unix socket.
    let result = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut credentials as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if result != 0 {
        bail!(
            "cannot read the peer's credentials: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(credentials.uid)
}

/// The web process's side: sends one action and waits for the reply.
pub fn ask(socket: &Path, action: &Action) -> Result<Reply> {
    let stream = UnixStream::connect(socket).with_context(|| {
        format!(
            "cannot reach the admin's helper at {} (is meetbox-admin-helper.service running?)",
            socket.display()
        )
    })?;
    stream.set_read_timeout(Some(REPLY_TIMEOUT))?;
    let mut request = serde_json::to_string(action)?;
    request.push('\n');
    (&stream).write_all(request.as_bytes())?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .context("the admin's helper gave no answer")?;
    serde_json::from_str(&line)
        .context("the admin's helper gave an answer this version cannot read")
}
