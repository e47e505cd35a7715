//! The web admin in the booted box, as its owner meets it: a real browser (Debian's chromium over
//! WebDriver) on the admin's port through nginx and the firewall, and the meeting logins over BOSH
//! that its changes make and break. The host's requests reach the guest from QEMU's user network
//! (10.0.2.2), a private address, as a computer on the owner's LAN would.

use std::path::PathBuf;

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
