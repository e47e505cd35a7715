//! A minimal XMPP client over BOSH (XEP-0124/0206), the way browsers reach prosody: HTTPS to nginx
//! on the guest's port 443 (through the host forward), `/http-bind`, proxied to prosody on the guest's
//! loopback. Prosody listens for XMPP only on the guest's loopback, so the test takes the browsers'
//! path. Each request is one `curl` call that also checks the server's certificate.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::Engine;

/// How the host reaches the guest's HTTPS: the public name, resolved to the forward on 127.0.0.1
/// (or, with `netns`, to the guest's address on the scan link).
#[derive(Clone)]
pub struct Https {
    pub domain: String,
    pub port: u16,
    /// Root certificate the server's chain must lead to; None accepts the self-signed certificate.
    pub ca: Option<PathBuf>,
    /// Where the name resolves to: `127.0.0.1` for the forward, or the guest's link-local address.
    pub address: String,
    /// Network namespace curl runs in (the scan link's), None for the host's.
    pub netns: Option<String>,
    /// Interface to send from: a link-local address needs one (curl 7.88 cannot parse a zone
    /// such as `%mbscan123` in --resolve).
    pub interface: Option<String>,
}

impl Https {
    /// Through the forward on 127.0.0.1.
    pub fn forwarded(domain: &str, port: u16, ca: Option<PathBuf>) -> Https {
        Https {
            domain: domain.into(),
            port,
            ca,
            address: "127.0.0.1".into(),
            netns: None,
            interface: None,
        }
    }

    /// `curl` with the name resolved to the forward and the chain checked against `ca`.
    pub fn curl(&self) -> Command {
        let mut command = match &self.netns {
            Some(netns) => {
                let mut ip = Command::new("ip");
                ip.args(["netns", "exec", netns, "curl"]);
                ip
            }
            None => Command::new("curl"),
        };
        command.args([
            "-sS",
            "--max-time",
            "30",
            "--resolve",
            &format!("{}:{}:{}", self.domain, self.port, self.address),
        ]);
        if let Some(interface) = &self.interface {
            command.args(["--interface", interface]);
        }
        match &self.ca {
            Some(ca) => command.arg("--cacert").arg(ca),
            None => command.arg("--insecure"),
        };
        command
    }

    pub fn url(&self, path: &str) -> String {
        format!("https://{}:{}{path}", self.domain, self.port)
    }
}

pub enum Credentials<'a> {
    Plain { user: &'a str, password: &'a str },
    Anonymous,
}

/// One BOSH session with a virtual host of prosody.
pub struct Session {
    https: Https,
    host: String,
    sid: String,
    rid: u64,
    /// Every body received, in order.
    received: String,
}

const BOSH_NS: &str = "http://jabber.org/protocol/httpbind";

impl Session {
    /// Opens a session with `host` (an XMPP virtual host, e.g. `meet.jitsi`) and waits for its SASL
    /// mechanisms.
    pub fn open(https: &Https, host: &str) -> Result<Session, String> {
        let mut session = Session {
            https: https.clone(),
            host: host.to_string(),
            sid: String::new(),
            rid: 4_000_000 + u64::from(std::process::id() % 1000) * 1000,
            received: String::new(),
        };
        let first = session.post(&format!(
            "<body content='text/xml; charset=utf-8' hold='1' rid='{}' to='{host}' ver='1.6' wait='5' \
             xml:lang='en' xmpp:version='1.0' xmlns='{BOSH_NS}' xmlns:xmpp='urn:xmpp:xbosh'/>",
            session.rid
        ))?;
        session.sid = attribute(&first, "sid")
            .ok_or_else(|| format!("prosody opened no BOSH session for {host}: {first}"))?;
        session.wait_for("</mechanisms>")?;
        Ok(session)
    }

    /// The SASL mechanisms prosody offers on this host.
    pub fn mechanisms(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = self.received.as_str();
        while let Some(start) = rest.find("<mechanism>") {
            rest = &rest[start + "<mechanism>".len()..];
            if let Some(end) = rest.find("</mechanism>") {
                out.push(rest[..end].to_string());
            }
        }
        out
    }

    /// SASL authentication. Ok after `<success/>`; Err with prosody's `<failure>` otherwise.
    pub fn authenticate(&mut self, credentials: Credentials) -> Result<(), String> {
        let auth = match credentials {
            Credentials::Plain { user, password } => format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{}</auth>",
                base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{password}"))
            ),
            Credentials::Anonymous => {
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='ANONYMOUS'/>".into()
            }
        };
        let seen = self.received.len();
        self.send(&auth)?;
        let answer = self.wait_for_any(&["<success", "<failure"], seen)?;
        if answer.contains("<success") {
            Ok(())
        } else {
            Err(answer)
        }
    }

    /// After authentication: restarts the stream and binds a resource; returns the full JID.
    pub fn bind(&mut self) -> Result<String, String> {
        let seen = self.received.len();
        self.rid += 1;
        let restart = format!(
            "<body rid='{}' sid='{}' to='{}' xml:lang='en' xmpp:restart='true' xmlns='{BOSH_NS}' \
             xmlns:xmpp='urn:xmpp:xbosh'/>",
            self.rid, self.sid, self.host
        );
        self.post(&restart)?;
        self.wait_for_any(&["urn:ietf:params:xml:ns:xmpp-bind"], seen)?;
        let answer = self.iq(
            "<iq type='set' id='bind1' xmlns='jabber:client'>\
             <bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>",
            "bind1",
        )?;
        let start = answer
            .find("<jid>")
            .ok_or_else(|| format!("no JID bound: {answer}"))?;
        let end = answer[start..]
            .find("</jid>")
            .ok_or_else(|| format!("no JID bound: {answer}"))?;
        Ok(answer[start + 5..start + end].to_string())
    }

    /// Sends an IQ and returns the text received up to its answer (matched by `id`).
    pub fn iq(&mut self, stanza: &str, id: &str) -> Result<String, String> {
        let seen = self.received.len();
        self.send(stanza)?;
        let text = self.wait_for_any(&[&format!("id='{id}'"), &format!("id=\"{id}\"")], seen)?;
        Ok(text)
    }

    /// XEP-0215: the STUN/TURN services prosody hands out, with their time-limited credentials.
    pub fn external_services(&mut self) -> Result<Vec<ExternalService>, String> {
        let answer = self.iq(
            &format!(
                "<iq type='get' id='extdisco1' to='{}' xmlns='jabber:client'>\
                 <services xmlns='urn:xmpp:extdisco:2'/></iq>",
                self.host
            ),
            "extdisco1",
        )?;
        let services: Vec<ExternalService> = answer
            .split("<service ")
            .skip(1)
            .map(|rest| format!(" {}", &rest[..rest.find('>').unwrap_or(rest.len())]))
            .map(|element| ExternalService {
                kind: attribute(&element, "type").unwrap_or_default(),
                username: attribute(&element, "username"),
                password: attribute(&element, "password"),
            })
            .collect();
        if services.is_empty() {
            return Err(format!("no external services in: {answer}"));
        }
        Ok(services)
    }

    /// Enters a multi-user chat room (XEP-0045) as Jitsi's web client does; Ok with the
    /// room's answer, which may be an error (only jicofo creates rooms on a Jitsi server).
    pub fn enter_room(&mut self, room_jid: &str, nick: &str) -> Result<String, String> {
        let seen = self.received.len();
        self.send(&format!(
            "<presence to='{room_jid}/{nick}' xmlns='jabber:client'>\
             <x xmlns='http://jabber.org/protocol/muc'/></presence>"
        ))?;
        self.wait_for_any(
            &[&format!("from='{room_jid}"), &format!("from=\"{room_jid}")],
            seen,
        )
    }

    fn send(&mut self, payload: &str) -> Result<String, String> {
        self.rid += 1;
        let body = format!(
            "<body rid='{}' sid='{}' xmlns='{BOSH_NS}'>{payload}</body>",
            self.rid, self.sid
        );
        self.post(&body)
    }

    /// Polls (empty requests) until `needle` has arrived.
    fn wait_for(&mut self, needle: &str) -> Result<String, String> {
        self.wait_for_any(&[needle], 0)
    }

    /// Polls until one of `needles` appears in what was received after byte `from`; returns that text.
    fn wait_for_any(&mut self, needles: &[&str], from: usize) -> Result<String, String> {
        for _ in 0..6 {
            let text = &self.received[from..];
            if needles.iter().any(|n| text.contains(n)) {
                return Ok(text.to_string());
            }
            self.send("")?;
        }
        Err(format!(
            "prosody did not answer with {needles:?}; received: {}",
            &self.received[from..]
        ))
    }

    fn post(&mut self, body: &str) -> Result<String, String> {
        let mut child = self
            .https
            .curl()
            .args([
                "-H",
                "Content-Type: text/xml; charset=utf-8",
                "--data-binary",
                "@-",
            ])
            .arg(self.https.url("/http-bind"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run curl: {e}"))?;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(body.as_bytes())
            .map_err(|e| format!("cannot send the request to curl: {e}"))?;
        let output = child.wait_with_output().map_err(|e| format!("curl: {e}"))?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            return Err(format!(
                "BOSH request failed: {}{text}",
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        if text.contains("type='terminate'") || text.contains("type=\"terminate\"") {
            return Err(format!("prosody ended the BOSH session: {text}"));
        }
        self.received.push_str(&text);
        Ok(text)
    }
}

/// One entry of XEP-0215's answer.
#[derive(Debug)]
pub struct ExternalService {
    pub kind: String,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// The value of `name='...'` or `name="..."` in the first element of `xml` that has it.
pub fn attribute(xml: &str, name: &str) -> Option<String> {
    for quote in ['\'', '"'] {
        let key = format!(" {name}={quote}");
        if let Some(start) = xml.find(&key) {
            let value = &xml[start + key.len()..];
            let end = value.find(quote)?;
            return Some(unescape(&value[..end]));
        }
    }
    None
}

fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}
