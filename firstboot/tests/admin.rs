//! The web admin as its two real processes: the root helper on a box set up in a temporary tree by
//! the real agent, and the web process on loopback, driven over HTTP as nginx passes visitors
//! (`X-Real-IP`). The same flows in a booted image, through nginx, with a real browser:
//! tests/appliance/admin.rs.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meetbox_firstboot::admin::sessions;
use meetbox_firstboot::apply::accounts;
use meetbox_firstboot::apply::Root;
use meetbox_firstboot::layout::{self, XMPP_DOMAIN};

const ADMIN_PASSWORD: &str = "horse staple cart moon";
const LAN_VISITOR: &str = "192.168.1.50";

/// Self-signed, with an ACME server that never answers (a change to Let's Encrypt then fails).
const ANSWERS: &str = r#"
domain = "meetbox.test"
admin_user = "alice"
admin_password = "horse staple cart moon"
tls = "self-signed"
acme_directory = "https://127.0.0.1:9/directory"
"#;

/// Stopped when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Admin {
    port: u16,
    _helper: Running,
    _web: Running,
}

/// A box set up by the agent from an answers file, below `root`.
fn set_up_box(root: &Path) {
    common::write_small_tuning(root);
    std::fs::write(root.join("etc/fstab"), "UUID=0f3e / ext4 defaults 0 1\n").unwrap();
    std::fs::create_dir_all(root.join("boot/efi")).unwrap();
    std::fs::write(root.join("boot/efi/meetbox-setup.toml"), ANSWERS).unwrap();
    let out = common::run(
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

fn start_admin(root: &Path) -> Admin {
    let socket: PathBuf = root.join(&layout::ADMIN_HELPER_SOCKET[1..]);
    let helper = Running(
        Command::new(env!("CARGO_BIN_EXE_meetbox-admin"))
            .args(["helper", "--root"])
            .arg(root)
            .env("MEETBOX_ACME_HTTP_PORT", common::free_port().to_string())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let port = common::free_port();
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
struct Answer {
    code: u16,
    headers: String,
    body: String,
}

impl Admin {
    /// A request from `from` (as nginx's X-Real-IP), with the session cookie `cookie`, posting
    /// `form` fields when given.
    fn request(
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
        let out = common::run(curl.arg(format!("http://127.0.0.1:{}{path}", self.port)));
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
    fn download(&self, cookie: &str, csrf: &str, passphrase: &str, file: &Path) -> String {
        let headers = file.with_extension("headers");
        let out = common::run(
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
    fn log_in(&self, password: &str) -> Result<String, Answer> {
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
    fn page(&self, path: &str, cookie: &str) -> (String, String) {
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

fn host_password_works(root: &Path, user: &str, password: &str) -> bool {
    accounts::credential(&Root::new(root), XMPP_DOMAIN, user)
        .unwrap()
        .is_some_and(|c| accounts::password_matches(&c, password))
}

#[test]
fn admin_logs_in_manages_hosts_and_changes_its_password() {
    if !common::have_tool("curl", "curl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    set_up_box(root);
    let admin = start_admin(root);

    // Only local-network visitors, and only through nginx (which sets X-Real-IP).
    for outside in ["203.0.113.9", "2001:db8::5", "100.64.0.1"] {
        let answer = admin.request("/login", outside, None, None);
        assert_eq!(answer.code, 403, "{outside}");
        assert!(answer.body.contains("only computers on the box"));
    }
    assert_eq!(
        admin.request("/", LAN_VISITOR, None, None).code,
        303,
        "not logged in: to /login"
    );

    // Wrong passwords lock the address out; the right one from there is refused too until the
    // lockout passes, while another computer of the LAN logs in.
    let guesser = "192.168.1.66";
    for _ in 0..sessions::FAILURES_PER_ADDRESS {
        let answer = admin.request(
            "/login",
            guesser,
            None,
            Some(&[("password", "guess guess guess")]),
        );
        assert_eq!(answer.code, 401);
    }
    let locked = admin.request(
        "/login",
        guesser,
        None,
        Some(&[("password", ADMIN_PASSWORD)]),
    );
    assert_eq!(locked.code, 429, "{}", locked.body);
    assert!(locked.body.contains("Logins are paused"));
    let cookie = admin
        .log_in(ADMIN_PASSWORD)
        .unwrap_or_else(|a| panic!("{}", a.body));

    let (status, _) = admin.page("/", &cookie);
    assert!(status.contains("https://meetbox.test/"), "{status}");
    assert!(status.contains("Self-signed, valid until"), "{status}");

    // A change without the token is refused, and changes nothing.
    let (_, csrf) = admin.page("/hosts", &cookie);
    let forged = admin.request(
        "/hosts/add",
        LAN_VISITOR,
        Some(&cookie),
        Some(&[("user", "mallory"), ("password", "lamp river stone tree")]),
    );
    assert_eq!(forged.code, 403);
    assert!(!host_password_works(
        root,
        "mallory",
        "lamp river stone tree"
    ));

    // Bad input gets the first-boot questions' own explanation.
    let post = |path: &str, fields: &[(&str, &str)]| {
        let mut form = vec![("csrf", csrf.as_str())];
        form.extend_from_slice(fields);
        let answer = admin.request(path, LAN_VISITOR, Some(&cookie), Some(&form));
        assert_eq!(answer.code, 303, "{path}: {}", answer.body);
        admin
            .page(
                answer
                    .headers
                    .lines()
                    .find_map(|l| l.strip_prefix("location: "))
                    .unwrap()
                    .trim(),
                &cookie,
            )
            .0
    };
    let page = post("/hosts/add", &[("user", "bob"), ("password", "short")]);
    assert!(page.contains("Too short"), "{page}");
    let page = post(
        "/hosts/add",
        &[("user", "alice"), ("password", "lamp river stone tree")],
    );
    assert!(page.contains("is the admin account"), "{page}");
    let page = post(
        "/hosts/add",
        &[("user", "Bob"), ("password", "lamp river stone tree")],
    );
    assert!(
        page.contains("Host &quot;bob&quot; can now start meetings"),
        "{page}"
    );
    assert!(page.contains("<td>bob</td>"), "{page}");
    assert!(host_password_works(root, "bob", "lamp river stone tree"));
    let page = post(
        "/hosts/reset",
        &[("user", "bob"), ("password", "quiet orange field song")],
    );
    assert!(page.contains("has a new password"), "{page}");
    assert!(host_password_works(root, "bob", "quiet orange field song"));
    assert!(!host_password_works(root, "bob", "lamp river stone tree"));
    post(
        "/hosts/add",
        &[("user", "carol"), ("password", "lamp river stone tree")],
    );
    let page = post("/hosts/remove", &[("user", "carol")]);
    assert!(
        page.contains("is removed") && !page.contains("<td>carol</td>"),
        "{page}"
    );
    assert_eq!(
        accounts::list(&Root::new(root), XMPP_DOMAIN).unwrap(),
        ["alice", "bob"]
    );

    // The admin password: the wrong current one changes nothing; then the new one works, the old
    // one fails, and every session has ended.
    let (_, csrf) = admin.page("/password", &cookie);
    let change = |current: &str| {
        admin.request(
            "/password",
            LAN_VISITOR,
            Some(&cookie),
            Some(&[
                ("csrf", &csrf),
                ("current", current),
                ("new", "violet window paper cloud"),
                ("again", "violet window paper cloud"),
            ]),
        )
    };
    assert_eq!(change("not the password at all").code, 303);
    assert!(admin
        .page("/password", &cookie)
        .0
        .contains("The current password is not right"));
    let changed = change(ADMIN_PASSWORD);
    assert_eq!(changed.code, 200, "{}", changed.body);
    assert!(changed.body.contains("log in again"));
    assert_eq!(
        admin.request("/", LAN_VISITOR, Some(&cookie), None).code,
        303,
        "the old session ended"
    );
    assert_eq!(
        admin.log_in(ADMIN_PASSWORD).err().map(|a| a.code),
        Some(401)
    );
    admin
        .log_in("violet window paper cloud")
        .unwrap_or_else(|a| panic!("{}", a.body));
    // The state file's record follows, so a resumed setup would not bring the old one back.
    let state = std::fs::read_to_string(root.join(&layout::STATE_FILE[1..])).unwrap();
    let settings: serde_json::Value = serde_json::from_str(&state).unwrap();
    let recorded: meetbox_firstboot::secrets::scram::ScramCredential =
        serde_json::from_value(settings["settings"]["admin_credential"].clone()).unwrap();
    assert!(accounts::password_matches(
        &recorded,
        "violet window paper cloud"
    ));

    // A backup, downloaded, restores a fresh box in place of the questions: the same logins.
    let cookie = admin.log_in("violet window paper cloud").unwrap();
    let (_, csrf) = admin.page("/backup", &cookie);
    let passphrase = "seven blue kites over the harbour";
    let file = dir.path().join("downloaded.meetbox-backup");
    let headers = admin.download(&cookie, &csrf, passphrase, &file);
    assert!(
        headers.contains("content-disposition: attachment; filename=\"meetbox-meetbox.test-"),
        "{headers}"
    );
    let sealed = std::fs::read(&file).unwrap();
    assert!(
        !String::from_utf8_lossy(&sealed).contains("bob"),
        "the backup is not encrypted"
    );

    let fresh = tempfile::tempdir().unwrap();
    let esp = fresh.path().join("boot/efi");
    std::fs::create_dir_all(&esp).unwrap();
    std::fs::copy(
        &file,
        esp.join("meetbox-meetbox.test-2026-12-01.meetbox-backup"),
    )
    .unwrap();
    std::fs::write(
        esp.join("meetbox-setup.toml"),
        "restore_passphrase = \"seven blue kites over the harbor\"\n",
    )
    .unwrap();
    let wrong = restore(fresh.path());
    assert_eq!(wrong.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("passphrase is wrong"));
    assert!(
        esp.join("meetbox-meetbox.test-2026-12-01.meetbox-backup")
            .exists(),
        "kept after a failed restore"
    );
    std::fs::write(
        esp.join("meetbox-setup.toml"),
        format!("restore_passphrase = \"{passphrase}\"\n"),
    )
    .unwrap();
    let restored = restore(fresh.path());
    assert!(
        restored.status.success(),
        "{}",
        String::from_utf8_lossy(&restored.stderr)
    );
    assert!(String::from_utf8_lossy(&restored.stdout).contains("The backup is restored"));
    assert!(
        std::fs::read_dir(&esp).unwrap().next().is_none(),
        "the backup and the passphrase were not wiped"
    );
    assert!(host_password_works(
        fresh.path(),
        "bob",
        "quiet orange field song"
    ));
    assert!(host_password_works(
        fresh.path(),
        "alice",
        "violet window paper cloud"
    ));
    for same in [layout::SECRETS_FILE, layout::TLS_KEY] {
        assert_eq!(
            std::fs::read(root.join(&same[1..])).unwrap(),
            std::fs::read(fresh.path().join(&same[1..])).unwrap(),
            "{same} differs after the restore"
        );
    }
    assert!(fresh.path().join(&layout::DONE_MARKER[1..]).exists());
}

/// The agent's first boot on a fresh tree whose ESP holds a backup.
fn restore(root: &Path) -> std::process::Output {
    common::write_small_tuning(root);
    std::fs::write(root.join("etc/fstab"), "UUID=0f3e / ext4 defaults 0 1\n").unwrap();
    common::run(
        Command::new(env!("CARGO_BIN_EXE_meetbox-firstboot"))
            .arg("--root")
            .arg(root)
            .stdin(Stdio::null()),
    )
}

impl Admin {
    /// Posts `fields` with the page's token; the page the browser is sent to afterwards.
    fn post(&self, cookie: &str, csrf: &str, path: &str, fields: &[(&str, &str)]) -> String {
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
    fn domain_page_when_done(&self, cookie: &str) -> String {
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

fn snapshot_of(root: &Path, files: &[&str]) -> Vec<Option<Vec<u8>>> {
    files
        .iter()
        .map(|f| std::fs::read(root.join(&f[1..])).ok())
        .collect()
}

#[test]
fn domain_changes_roll_back_on_failure_and_a_factory_reset_erases_the_box() {
    if !common::have_tool("curl", "curl") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    set_up_box(root);
    std::fs::write(
        root.join("etc/machine-id"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    let admin = start_admin(root);
    let cookie = admin
        .log_in(ADMIN_PASSWORD)
        .unwrap_or_else(|a| panic!("{}", a.body));

    // A new name with a self-signed certificate.
    let (page, csrf) = admin.page("/domain", &cookie);
    assert!(page.contains("value=\"meetbox.test\""), "{page}");
    let page = admin.post(
        &cookie,
        &csrf,
        "/domain",
        &[("domain", "https://x"), ("tls", "self-signed")],
    );
    assert!(page.contains("without &quot;https://&quot;"), "{page}");
    admin.post(
        &cookie,
        &csrf,
        "/domain",
        &[("domain", "New.Meetbox.Test"), ("tls", "self-signed")],
    );
    let page = admin.domain_page_when_done(&cookie);
    assert!(
        page.contains("now serves https://new.meetbox.test/"),
        "{page}"
    );
    let nginx = std::fs::read_to_string(root.join(&layout::NGINX_SITE_AVAIL[1..])).unwrap();
    assert!(nginx.contains("server_name new.meetbox.test;"));

    // Let's Encrypt from a CA that does not answer: everything goes back, and the page says why.
    let kept = [
        layout::NGINX_SITE_AVAIL,
        layout::TLS_CERT,
        layout::TLS_KEY,
        layout::STATE_FILE,
        layout::TURN_CONF,
        "/etc/jitsi/meet/new.meetbox.test-config.js",
    ];
    let before = snapshot_of(root, &kept);
    admin.post(
        &cookie,
        &csrf,
        "/domain",
        &[("domain", "third.meetbox.test"), ("tls", "letsencrypt")],
    );
    let page = admin.domain_page_when_done(&cookie);
    assert!(page.contains("FAILED"), "{page}");
    assert!(
        page.contains("nothing was changed: the box still serves new.meetbox.test"),
        "{page}"
    );
    assert_eq!(
        snapshot_of(root, &kept),
        before,
        "a file differs after the roll-back"
    );
    assert!(!root
        .join("etc/jitsi/meet/third.meetbox.test-config.js")
        .exists());
    assert!(root.join(&layout::DONE_MARKER[1..]).exists());

    // The factory reset needs the password and the typed word.
    let (_, csrf) = admin.page("/maintenance", &cookie);
    let page = admin.post(
        &cookie,
        &csrf,
        "/maintenance/factory-reset",
        &[("password", "wrong wrong wrong"), ("confirm", "RESET")],
    );
    assert!(page.contains("nothing was erased"), "{page}");
    let page = admin.post(
        &cookie,
        &csrf,
        "/maintenance/factory-reset",
        &[("password", ADMIN_PASSWORD), ("confirm", "reset")],
    );
    assert!(page.contains("Type RESET in capitals"), "{page}");
    assert!(root.join(&layout::SECRETS_FILE[1..]).exists());
    let page = admin.post(
        &cookie,
        &csrf,
        "/maintenance/factory-reset",
        &[("password", ADMIN_PASSWORD), ("confirm", "RESET")],
    );
    assert!(page.contains("Factory reset: started"), "{page}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while root.join(&layout::STATE_FILE[1..]).exists() {
        assert!(
            Instant::now() < deadline,
            "the reset did not erase the state"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    for gone in [
        layout::SECRETS_FILE,
        layout::DONE_MARKER,
        layout::TLS_KEY,
        layout::NGINX_SITE_AVAIL,
        layout::TURN_CONF,
    ] {
        assert!(!root.join(&gone[1..]).exists(), "{gone} survived the reset");
    }
    assert!(accounts::list(&Root::new(root), XMPP_DOMAIN)
        .unwrap()
        .is_empty());
    assert_eq!(
        std::fs::read_to_string(root.join("etc/machine-id")).unwrap(),
        "uninitialized\n"
    );
    // The erased box sets up again as a new one.
    set_up_box(root);
    assert!(root.join(&layout::DONE_MARKER[1..]).exists());
}
