//! The web admin in the booted box, as its owner meets it: a real browser (Debian's chromium over
//! WebDriver) on the admin's port through nginx and the firewall, and the meeting logins over BOSH
//! that its changes make and break. The host's requests reach the guest from QEMU's user network
//! (10.0.2.2), a private address, as a computer on the owner's LAN would.

use std::path::{Path, PathBuf};

use crate::pebble::Pebble;
use crate::support::webdriver::Browser;
use crate::xmpp::Https;
use crate::*;

/// Whether Debian's chromium and chromedriver are here (tests/run installs them on Debian; Ubuntu
/// ships chromium only as a snap): outside CI the browser's part of a test is skipped with the
/// reason, under CI=true it fails.
pub fn browser_ready() -> bool {
    let missing = crate::support::webdriver::TOOLS
        .iter()
        .find_map(|(tool, package)| meetbox::host::test_tools::missing_tool(tool, package));
    crate::support::can_run("the web admin in a browser", missing)
}

/// The admin's pages as a browser shows them, with the screenshots docs/admin.md uses.
pub struct AdminVisit {
    browser: Browser,
    base: String,
    shots: PathBuf,
}

impl AdminVisit {
    pub fn start(domain: &str, ports: Ports) -> AdminVisit {
        let shots = work_dir().join("admin-screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        AdminVisit {
            browser: Browser::start(&[domain]),
            base: format!("https://{domain}:{}", ports.admin),
            shots,
        }
    }

    fn goto(&self, path: &str) {
        self.browser.goto(&format!("{}{path}", self.base));
    }

    fn shot(&self, name: &str) {
        let path = self.shots.join(format!("{name}.png"));
        self.browser.screenshot(&path);
        eprintln!("screenshot: {}", path.display());
    }

    /// Logs in through the form; the page's text afterwards.
    fn log_in(&self, password: &str) -> String {
        self.goto("/login");
        self.browser.fill("#password", password);
        self.browser.click_and_wait("form[action='/login'] button");
        self.browser.text()
    }

    fn submit(&self, form: &str) -> String {
        self.browser
            .click_and_wait(&format!("form[action='{form}'] button"));
        self.browser.text()
    }
}

/// Logs in (a wrong password first), adds a meeting host who then logs in over BOSH, and changes
/// the admin password, after which the old one fails in the admin and over BOSH. Returns the
/// logged-in browser and the new admin password.
pub fn hosts_and_password(domain: &str, ports: Ports, password: &str) -> (AdminVisit, String) {
    let visit = AdminVisit::start(domain, ports);
    let https = Https::forwarded(domain, ports.https, None);

    visit.goto("/");
    assert!(
        visit.browser.url().ends_with("/login"),
        "{}",
        visit.browser.url()
    );
    visit.shot("admin-login");
    let refused = visit.log_in("not the admin password at all");
    assert!(
        refused.contains("That is not the admin password"),
        "{refused}"
    );
    let status = visit.log_in(password);
    assert!(
        status.contains("Status") && status.contains(&format!("https://{domain}/")),
        "{status}"
    );
    assert!(status.contains("nginx.service"), "{status}");
    let cookie = visit
        .browser
        .cookies()
        .into_iter()
        .find(|c| c["name"] == "meetbox_admin")
        .expect("the session cookie");
    assert_eq!(cookie["httpOnly"], true, "{cookie}");
    assert_eq!(cookie["secure"], true, "{cookie}");
    assert_eq!(cookie["sameSite"], "Strict", "{cookie}");
    visit.shot("admin-status");

    // A meeting host, added in the browser, logs in the way the Jitsi client does.
    visit.goto("/hosts");
    visit.browser.fill("#user", "dana");
    visit.browser.fill("#password", "lamp river stone tree");
    let added = visit.submit("/hosts/add");
    assert!(
        added.contains("Host \"dana\" can now start meetings"),
        "{added}"
    );
    visit.shot("admin-hosts");
    let jid = retry("the new host's login", PROMPT, || {
        login(&https, XMPP_MAIN_HOST, "dana", "lamp river stone tree")
    });
    assert!(jid.starts_with("dana@meet.jitsi/"), "{jid}");

    // A change without the page's CSRF token, with the browser's own session cookie, is refused.
    let session = cookie["value"].as_str().unwrap();
    let forged = admin_curl(domain, ports)
        .args(["-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("Cookie: meetbox_admin={session}"))
        .args(["--data", "user=mallory&password=lamp+river+stone+tree"])
        .arg(admin_url(domain, ports, "/hosts/add"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&forged.stdout), "403");
    assert!(login(&https, XMPP_MAIN_HOST, "mallory", "lamp river stone tree").is_err());

    // The admin password.
    let new_password = "violet window paper cloud";
    visit.goto("/password");
    visit.shot("admin-password");
    visit.browser.fill("#current", password);
    visit.browser.fill("#new", new_password);
    visit.browser.fill("#again", new_password);
    let changed = visit.submit("/password");
    assert!(changed.contains("log in again"), "{changed}");
    let refused = visit.log_in(password);
    assert!(
        refused.contains("That is not the admin password"),
        "{refused}"
    );
    assert!(
        login(&https, XMPP_MAIN_HOST, "admin", password).is_err(),
        "the old password still logs in over BOSH"
    );
    login(&https, XMPP_MAIN_HOST, "admin", new_password).expect("the new admin password over BOSH");
    let status = visit.log_in(new_password);
    assert!(status.contains("Status"), "{status}");
    visit.goto("/maintenance");
    visit.shot("admin-maintenance");
    eprintln!("admin: login, a host added who logs in, CSRF refused, admin password changed");
    (visit, new_password.to_string())
}

/// The factory reset from the maintenance page (the typed word first wrong); the box restarts.
pub fn factory_reset(visit: &AdminVisit, password: &str) {
    visit.goto("/maintenance");
    visit.browser.fill("#reset-password", password);
    visit.browser.fill("#reset-confirm", "reset");
    let refused = visit.submit("/maintenance/factory-reset");
    assert!(refused.contains("Type RESET in capitals"), "{refused}");
    visit.browser.fill("#reset-password", password);
    visit.browser.fill("#reset-confirm", "RESET");
    let started = visit.submit("/maintenance/factory-reset");
    assert!(started.contains("Factory reset: started"), "{started}");
    eprintln!("admin: factory reset started");
}

/// Guessing the password locks the guesser out (here the host's address, so this comes last).
pub fn guessing_locks_out(domain: &str, ports: Ports, password: &str) {
    let attempt = |password: &str| {
        let out = admin_curl(domain, ports)
            .args(["-o", "/dev/null", "-w", "%{http_code}", "--data-urlencode"])
            .arg(format!("password={password}"))
            .arg(admin_url(domain, ports, "/login"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let codes: Vec<String> = (0..5)
        .map(|i| attempt(&format!("guess number {i}")))
        .collect();
    assert_eq!(codes, ["401"; 5]);
    assert_eq!(
        attempt(password),
        "429",
        "the right password after five wrong ones"
    );
    eprintln!("admin: five wrong passwords lock the address out, the right one too");
}

/// The web process is not root; its helper is, and only its group may use the helper's socket.
pub fn check_processes(shell: &dyn Fn(&str) -> String) {
    let users = shell("ps -o user:32=,args= -C meetbox-admin");
    assert!(
        users.contains("meetbox-admin") && users.contains("root"),
        "{users}"
    );
    let user_of = |mode: &str| {
        users
            .lines()
            .find(|line| line.trim_end().ends_with(mode))
            .and_then(|line| line.split_whitespace().next())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(
        user_of(" serve"),
        "meetbox-admin",
        "the web process: {users}"
    );
    assert_eq!(user_of(" helper"), "root", "the helper: {users}");
    let socket = shell("stat -c '%U:%G %a' /run/meetbox-admin-helper/helper.sock");
    assert_eq!(socket.trim(), "root:meetbox-admin 660");
    eprintln!(
        "admin: the web process runs as meetbox-admin, the helper as root behind a 0660 socket"
    );
}

fn admin_curl(domain: &str, ports: Ports) -> std::process::Command {
    Https::forwarded(domain, ports.admin, None).curl()
}

fn admin_url(domain: &str, ports: Ports, path: &str) -> String {
    Https::forwarded(domain, ports.admin, None).url(path)
}

/// A finished box managed from the browser: a host added, the domain moved to `new_domain` with a
/// Pebble certificate for it (its chain checked), a move to a name with no DNS record refused and
/// rolled back, then a backup downloaded. Returns the backup's path.
pub fn rename_then_back_up(
    domain: &str,
    new_domain: &str,
    ports: Ports,
    password: &str,
    pebble: &Pebble,
    dir: &Path,
) -> PathBuf {
    let visit = AdminVisit::start(domain, ports);
    // The meeting site through 443's multiplexer, in a real browser (h2 over TLS with SNI).
    visit
        .browser
        .goto(&format!("https://{domain}:{}/config.js", ports.https));
    let config = visit.browser.text();
    assert!(config.contains("var config"), "{config}");
    let status = visit.log_in(password);
    assert!(status.contains("Status"), "{status}");
    assert!(status.contains("TURN over 443: ready"), "{status}");
    visit.goto("/hosts");
    visit.browser.fill("#user", "erin");
    visit.browser.fill("#password", HOST_PASSWORD);
    let added = visit.submit("/hosts/add");
    assert!(added.contains("can now start meetings"), "{added}");

    pebble.add_name(new_domain);
    let done = visit.change_domain(new_domain);
    assert!(
        done.contains("done at") && done.contains(&format!("now serves https://{new_domain}/")),
        "{done}"
    );
    visit.shot("admin-domain");
    let renamed = Https::forwarded(new_domain, ports.https, Some(pebble.issuing_root(dir)));
    check_pebble_certificate(&renamed);

    let failed = visit.change_domain("unregistered.meetbox.test");
    assert!(failed.contains("FAILED"), "{failed}");
    assert!(
        failed.contains(&format!(
            "nothing was changed: the box still serves {new_domain}"
        )),
        "{failed}"
    );
    check_pebble_certificate(&renamed);
    login(&renamed, XMPP_MAIN_HOST, "erin", HOST_PASSWORD).expect("the host after the roll-back");
    eprintln!(
        "admin: renamed to {new_domain} with a Pebble certificate; a failed rename rolled back"
    );

    visit.goto("/backup");
    visit.browser.fill("#passphrase", BACKUP_PASSPHRASE);
    visit.browser.fill("#again", BACKUP_PASSPHRASE);
    visit.shot("admin-backup");
    visit.browser.click("form[action='/backup'] button");
    let file = visit.browser.downloaded(".meetbox-backup", PROMPT);
    let kept = dir.join(file.file_name().unwrap());
    std::fs::copy(&file, &kept).unwrap();
    eprintln!("admin: backup downloaded as {}", kept.display());
    kept
}

/// The host the rename test adds, and the backup's passphrase.
pub const HOST_PASSWORD: &str = "amber meadow quiet river";
pub const BACKUP_PASSPHRASE: &str = "seven blue kites over the harbour";

impl AdminVisit {
    /// Asks for `domain` with Let's Encrypt, then follows the page until the change has finished
    /// (nginx restarts meanwhile, so a load may fail); the page's text then.
    fn change_domain(&self, domain: &str) -> String {
        self.goto("/domain");
        self.browser.fill("#domain", domain);
        self.browser.click("input[name='tls'][value='letsencrypt']");
        self.submit("/domain");
        let deadline = std::time::Instant::now() + SETUP;
        loop {
            std::thread::sleep(std::time::Duration::from_secs(5));
            let loaded = self.browser.try_goto(&format!("{}/domain", self.base));
            let text = self.browser.text();
            if loaded.is_ok() && (text.contains("done at") || text.contains("FAILED")) {
                return text;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the domain change did not finish:\n{text}"
            );
        }
    }
}
