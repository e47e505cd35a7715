//! A minimal HTTP server for ACME HTTP-01 on port 80, used while nginx does not hold the port (first
//! boot: nginx starts only after setup). It serves files of the challenge directory and nothing else.

use std::path::PathBuf;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const PREFIX: &str = "/.well-known/acme-challenge/";

/// A running responder; dropping it stops it.
pub struct Responder {
    task: JoinHandle<()>,
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts serving `challenge_dir` on all addresses at `port`. None when something else listens there
/// (nginx with the Meetbox site, which serves the same directory).
pub async fn start(port: u16, challenge_dir: PathBuf) -> std::io::Result<Option<Responder>> {
    let listener = match TcpListener::bind(("0.0.0.0", port)).await {
        Ok(listener) => listener,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => return Ok(None),
        Err(e) => return Err(e),
    };
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let dir = challenge_dir.clone();
            tokio::spawn(async move {
                let _ = serve(stream, dir).await;
            });
        }
    });
    Ok(Some(Responder { task }))
}

async fn serve(mut stream: TcpStream, dir: PathBuf) -> std::io::Result<()> {
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    while len < buf.len() {
        let n = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            stream.read(&mut buf[len..]),
        )
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
        if n == 0 {
            break;
        }
        len += n;
        if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    let request = String::from_utf8_lossy(&buf[..len]);
    let body = request
        .lines()
        .next()
        .and_then(token_of_request_line)
        .and_then(|token| std::fs::read(dir.join(token)).ok());
    let response = match body {
        Some(body) => {
            let mut r = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )
            .into_bytes();
            r.extend_from_slice(&body);
            r
        }
        None => {
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_vec()
        }
    };
    stream.write_all(&response).await?;
    stream.shutdown().await
}

/// The challenge token of `GET /.well-known/acme-challenge/TOKEN HTTP/1.x`, if well-formed (base64url
/// characters only, so no path can escape the directory).
fn token_of_request_line(line: &str) -> Option<&str> {
    let mut parts = line.split(' ');
    let method = parts.next()?;
    let path = parts.next()?;
    if method != "GET" && method != "HEAD" {
        return None;
    }
    let token = path.strip_prefix(PREFIX)?;
    let valid = !token.is_empty()
        && token.len() <= 256
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    valid.then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_well_formed_tokens_are_served() {
        assert_eq!(
            token_of_request_line("GET /.well-known/acme-challenge/abc-_9 HTTP/1.1"),
            Some("abc-_9")
        );
        assert_eq!(
            token_of_request_line("GET /.well-known/acme-challenge/../x HTTP/1.1"),
            None
        );
        assert_eq!(token_of_request_line("GET /etc/passwd HTTP/1.1"), None);
        assert_eq!(
            token_of_request_line("POST /.well-known/acme-challenge/abc HTTP/1.1"),
            None
        );
    }
}
