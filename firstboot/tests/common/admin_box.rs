//! The web admin's two real processes on a box the real agent set up in a temporary tree, driven
//! over HTTP as nginx passes visitors (`X-Real-IP`): what tests/admin.rs and tests/admin_changes.rs
//! share.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meetbox_firstboot::apply::accounts;
use meetbox_firstboot::apply::Root;
use meetbox_firstboot::layout::{self, XMPP_DOMAIN};

pub const ADMIN_PASSWORD: &str = "horse staple cart moon";
pub const LAN_VISITOR: &str = "192.168.1.50";

/// Self-signed, with an ACME server that never answers (a change to Let's Encrypt then fails).
pub const ANSWERS: &str = r#"
domain = "meetbox.test"
admin_user = "alice"
admin_password = "horse staple cart moon"
tls = "self-signed"
acme_directory = "https://127.0.0.1:9/directory"
"#;

/// Stopped when dropped.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Admin {
    pub port: u16,
    _helper: Running,
    _web: Running,
}

/// The boot menu as `meetbox build` writes it: the superuser's place, unrestricted entries.
pub static IMAGE_GRUB_CFG: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "set timeout=1\n{}\nmenuentry 'Meetbox' --unrestricted {{\n    linux /boot/vmlinuz\n}}\n",
        meetbox_firstboot::render::boot_menu::SUPERUSER_MARKER
    )
});

/// A box set up by the agent from an answers file, below `root` (with the image's boot menu).
pub fn set_up_box(root: &Path) {
    super::write_small_tuning(root);
    std::fs::write(root.join("etc/fstab"), "UUID=0f3e / ext4 defaults 0 1\n").unwrap();
    std::fs::create_dir_all(root.join("boot/efi")).unwrap();
    if !root.join("boot/grub/grub.cfg").exists() {
        std::fs::create_dir_all(root.join("boot/grub")).unwrap();
        std::fs::write(root.join("boot/grub/grub.cfg"), IMAGE_GRUB_CFG.as_str()).unwrap();
    }
    std::fs::write(root.join("boot/efi/meetbox-setup.toml"), ANSWERS).unwrap();
    let out = super::run(
        Command::new(env!("CARGO_BIN_EXE_meetbox-firstboot"))
            .arg("--root")
            .arg(root),
    );
    assert!(
        out.status.success(),
        "setup failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn start_admin(root: &Path) -> Admin {
    let socket: PathBuf = root.join(&layout::ADMIN_HELPER_SOCKET[1..]);
    let helper = Running(
        Command::new(env!("CARGO_BIN_EXE_meetbox-admin"))
            .args(["helper", "--root"])
            .arg(root)
            .env("MEETBOX_ACME_HTTP_PORT", super::free_port().to_string())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let port = super::free_port();
    let web = Running(
        Command::new(env!("CARGO_BIN_EXE_meetbox-admin"))
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{port}"),
                "--helper",
            ])
            .arg(&socket)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(socket.exists() && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()) {
        assert!(Instant::now() < deadline, "the admin did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Admin {
        port,
        _helper: helper,
        _web: web,
    }
}

/// One answer: status code, headers, body.
#[derive(Debug)]
pub struct Answer {
    pub code: u16,
    pub headers: String,
    pub body: String,
}

impl Admin {
    /// A request from `from` (as nginx's X-Real-IP), with the session cookie `cookie`, posting
    /// `form` fields when given.
    pub fn request(
        &self,
        path: &str,
        from: &str,
        cookie: Option<&str>,
        form: Option<&[(&str, &str)]>,
    ) -> Answer {
        let dir = tempfile::tempdir().unwrap();
        let headers = dir.path().join("headers");
        let mut curl = Command::new("curl");
        curl.args(["-sS", "--max-time", "30", "-o", "-", "-D"])
            .arg(&headers)
            .args(["-H", &format!("X-Real-IP: {from}")]);
        if let Some(cookie) = cookie {
            curl.args(["-H", &format!("Cookie: meetbox_admin={cookie}")]);
        }
        for (name, value) in form.unwrap_or_default() {
            curl.args(["--data-urlencode", &format!("{name}={value}")]);
        }
        if form.is_some_and(|f| f.is_empty()) {
            curl.args(["-X", "POST"]);
        }
        let out = super::run(curl.arg(format!("http://127.0.0.1:{}{path}", self.port)));
        assert!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let headers = std::fs::read_to_string(headers).unwrap();
        let code = headers.split_whitespace().nth(1).unwrap().parse().unwrap();
        Answer {
            code,
            headers,
            body: String::from_utf8_lossy(&out.stdout).into_owned(),
        }
    }

    /// Downloads the backup into `file`; the answer's headers.
    pub fn download(&self, cookie: &str, csrf: &str, passphrase: &str, file: &Path) -> String {
        let headers = file.with_extension("headers");
        let out = super::run(
            Command::new("curl")
                .args(["-sS", "--fail", "--max-time", "60", "-o"])
                .arg(file)
                .arg("-D")
                .arg(&headers)
                .args(["-H", &format!("X-Real-IP: {LAN_VISITOR}")])
                .args(["-H", &format!("Cookie: meetbox_admin={cookie}")])
                .args(["--data-urlencode", &format!("csrf={csrf}")])
                .args(["--data-urlencode", &format!("passphrase={passphrase}")])
                .args(["--data-urlencode", &format!("again={passphrase}")])
                .arg(format!("http://127.0.0.1:{}/backup", self.port)),
        );
        assert!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::read_to_string(headers).unwrap()
    }

    /// Logs in from the LAN; the session cookie.
    pub fn log_in(&self, password: &str) -> Result<String, Answer> {
        let answer = self.request("/login", LAN_VISITOR, None, Some(&[("password", password)]));
        if answer.code != 303 {
            return Err(answer);
        }
        let cookie = answer
            .headers
            .lines()
            .find_map(|l| l.strip_prefix("set-cookie: meetbox_admin="))
            .expect("a session cookie")
            .to_string();
        for attribute in ["HttpOnly", "Secure", "SameSite=Strict"] {
            assert!(cookie.contains(attribute), "{cookie}");
        }
        Ok(cookie.split(';').next().unwrap().to_string())
    }

    /// The page at `path` and its CSRF token.
    pub fn page(&self, path: &str, cookie: &str) -> (String, String) {
        let answer = self.request(path, LAN_VISITOR, Some(cookie), None);
        assert_eq!(answer.code, 200, "{path}: {}", answer.body);
        let csrf = answer
            .body
            .split("name=\"csrf\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("a CSRF token on the page")
            .to_string();
        (answer.body, csrf)
    }
}

pub fn host_password_works(root: &Path, user: &str, password: &str) -> bool {
    accounts::credential(&Root::new(root), XMPP_DOMAIN, user)
        .unwrap()
        .is_some_and(|c| accounts::password_matches(&c, password))
}

impl Admin {
    /// Posts `fields` with the page's token; the page the browser is sent to afterwards.
    pub fn post(&self, cookie: &str, csrf: &str, path: &str, fields: &[(&str, &str)]) -> String {
        let mut form = vec![("csrf", csrf)];
        form.extend_from_slice(fields);
        let answer = self.request(path, LAN_VISITOR, Some(cookie), Some(&form));
        assert_eq!(answer.code, 303, "{path}: {}", answer.body);
        let next = answer
            .headers
            .lines()
            .find_map(|l| l.strip_prefix("location: "))
            .unwrap()
            .trim()
            .to_string();
        self.page(&next, cookie).0
    }

    /// The domain page once the running change has finished (it reloads itself until then).
    pub fn domain_page_when_done(&self, cookie: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (page, _) = self.page("/domain", cookie);
            if !page.contains("http-equiv=\"refresh\"") {
                return page;
            }
            assert!(
                Instant::now() < deadline,
                "the change did not finish:\n{page}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}
