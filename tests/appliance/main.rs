//! Integration: the first-boot agent in the booted `test` image (Ubuntu 24.04 under OVMF Secure Boot).
//!
//! - The console test's box starts from the image on a USB stick beside an internal disk too small
//!   for it; the owner chooses to run it from the stick. On the serial console, the test answers
//!   the agent's questions with keystrokes: an invalid domain and a wrong password confirmation
//!   are refused, then setup runs; the typed password logs in. Every boot that shows the banner
//!   has its screen checked: the banner on a clean screen, nothing of the boot over it.
//! - On a fresh disk from the same image, `meetbox-setup.toml` on the ESP sets the box up unattended
//!   with a certificate from Pebble on the host; the file is wiped. From the host, through the
//!   forwards: HTTPS with the Pebble-issued chain, the admin's login (and a wrong password refused),
//!   anonymous guests on the guest host only, TURN credentials from prosody (XEP-0215) accepted by
//!   coturn over TCP and UDP. The CIS benchmark and Lynis run inside the box (scan.rs; left out
//!   with MEETBOX_BOOTED_SCAN=0), in the background while the audits go on. The audits (audit.rs): testssl.sh, HTTP methods and headers and
//!   ssh-audit through the forwards; the integrity database made after setup, and a file nobody
//!   installed reported by the daily check (integrity.rs); nmap, an SSH login with the owner's key and a guest's visit
//!   (page, XMPP login, room) from a distinctive address on a second card. After power-off the
//!   whole disk holds neither that address nor the room's name, and the jicofo and videobridge
//!   secrets are read from it; after a reboot those accounts log in and the agent stays quiet.
//!   Before the power-off, updates through the box's own timers (updates.rs); from power-on to
//!   power-off, every frame of its user network is recorded, and it contacted no one but its
//!   update mirrors, the Jitsi repository, the ACME CA and its time servers (contacts.rs).
//!
//! - The web admin (admin.rs), after the console's setup, in a real browser: login, a meeting host
//!   who then logs in, CSRF and guessing refused, the admin password changed, and a factory
//!   reset, after which the box asks the first-boot questions again. The unattended box shows its
//!   status screen after the reboot (serial console and tty1).
//! - From a USB stick (installer.rs): the offer, a damaged stick refused, a power cut mid-write,
//!   the install, and first boot from the internal disk alone. `meetbox run` in a real terminal
//!   is tests/image.rs's Ubuntu boot.
//!
//! Needs root and the host packages of tests/run. Outside CI a missing prerequisite skips with the
//! reason; with CI=true it fails.

mod address;
mod admin;
mod audit;
mod console;
mod contacts;
mod from_the_host;
mod guest;
mod guest_disk;
mod installer;
mod integrity;
mod jitsi;
mod pebble;
mod scan;
#[path = "../support/mod.rs"]
mod support;
mod unattended;
mod updates;
mod xmpp;

use std::fs;
use std::time::Duration;

use meetbox::vm::qemu;

use from_the_host::*;
use guest::*;
use unattended::*;
use xmpp::{Credentials, Https, Session};

const MEETBOX: &str = env!("CARGO_BIN_EXE_meetbox");

/// Prosody's fixed internal hosts (docs/firstboot.md), as the agent names them.
use meetbox_firstboot::layout::{
    XMPP_AUTH_DOMAIN as XMPP_AUTH_HOST, XMPP_DOMAIN as XMPP_MAIN_HOST,
    XMPP_GUEST_DOMAIN as XMPP_GUEST_HOST, XMPP_MUC_DOMAIN as XMPP_MUC_HOST,
};

/// Under software emulation on a busy machine a boot can take minutes: generous, bounded waits.
const BOOT: Duration = Duration::from_secs(900);
const SETUP: Duration = Duration::from_secs(900);
const PROMPT: Duration = Duration::from_secs(120);

/// (program, Debian package)
const TOOLS: [(&str, &str); 21] = [
    ("mmdebstrap", "mmdebstrap"),
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("mcopy", "mtools"),
    ("mdir", "mtools"),
    ("debugfs", "e2fsprogs"),
    ("pebble", "pebble"),
    ("pebble-challtestsrv", "pebble"),
    ("curl", "curl"),
    ("openssl", "openssl"),
    ("turnutils_uclient", "coturn"),
    ("timeout", "coreutils"),
    ("zstd", "zstd"),
    ("nmap", "nmap"),
    ("testssl", "testssl.sh"),
    (
        "ssh-audit",
        "ssh-audit 3.3.0 from PyPI (tests/run installs it)",
    ),
    ("ssh", "openssh-client"),
    ("ssh-keygen", "openssh-client"),
    ("ip", "iproute2"),
    ("ping", "iputils-ping"),
    ("tesseract", "tesseract-ocr"),
    ("oscap", "openscap-scanner"),
];

fn can_run(test: &str) -> bool {
    let tools = [
        &TOOLS[..],
        support::apt_repo::TOOLS,
        support::jitsi_packages::TOOLS,
    ]
    .concat();
    let missing = support::root_and_tools_missing("building images (mmdebstrap)", &tools)
        .or_else(support::jitsi_packages::missing)
        .or_else(|| qemu::check_host().err().map(|err| format!("{err:#}")));
    support::can_run(test, missing)
}

#[test]
fn console_questions_refuse_bad_answers_then_set_up() {
    if !can_run("console questions") {
        return;
    }
    let _one_at_a_time = exclusive();
    let password = "horse staple cart moon";
    // The owner's mini-PC: the image on a USB stick, beside an internal disk too small for it.
    let stick = fresh_disk("console", 0);
    let small = installer::empty_disk("console-small", 1 << 30);
    let ports = Ports::new();
    let mut guest = Guest::boot_from_stick(
        &stick,
        &[(small, installer::SMALL_SERIAL.to_string())],
        "console",
        ports,
    );
    installer::run_from_the_stick(&mut guest);

    // The restart from the stick is an ordinary first boot: the questions, not the offer.
    let console = &mut guest.console;
    console.expect("Press Enter to start the setup", BOOT);
    eprintln!("agent on the serial console after {}", guest.elapsed());
    let console = &mut guest.console;
    // Shown as a terminal shows it: the banner on a clean screen, then the prompt, nothing of the
    // boot between or over them, also a while later (systemd's status lines come late).
    console.assert_clean_screen("Meetbox first-boot setup", "Press Enter to start the setup");
    std::thread::sleep(Duration::from_secs(20));
    console.assert_clean_screen("Meetbox first-boot setup", "Press Enter to start the setup");
    // tty1, the screen of a real box, as a picture: the banner and its own prompt.
    guest.tty1_shows("tty1-first-question", &["first-boot setup", "Press Enter"]);
    let console = &mut guest.console;
    console.type_line("");
    console.expect("Domain name of the server", PROMPT);
    console.assert_clean_screen("Meetbox first-boot setup", "Domain name of the server");
    console.type_line("https://box.meetbox.test");
    console.expect("without \"https://\"", PROMPT);
    console.expect("Domain name of the server", PROMPT);
    console.type_line("meetbox");
    console.expect("is a single word", PROMPT);
    console.expect("Domain name of the server", PROMPT);
    console.type_line("Box.MeetBox.Test");
    console.expect("Admin user", PROMPT);
    console.assert_clean_screen("Meetbox first-boot setup", "Admin user");
    console.type_line("");
    console.expect("Password for admin", PROMPT);
    console.assert_no_boot_output("Password for admin");
    console.type_line(password);
    console.expect("again", PROMPT);
    console.assert_no_boot_output("again");
    console.type_line("horse staple cart mon");
    console.expect("The two passwords differ", PROMPT);
    console.expect("Password for admin", PROMPT);
    console.assert_no_boot_output("Password for admin");
    console.type_line(password);
    console.expect("again", PROMPT);
    console.assert_no_boot_output("again");
    console.type_line(password);
    console.expect("E-mail", PROMPT);
    console.assert_no_boot_output("E-mail");
    console.type_line("");
    console.expect("1 or 2", PROMPT);
    console.assert_no_boot_output("1 or 2");
    console.type_line("2");
    console.expect("box.meetbox.test", PROMPT);
    console.expect("(yes/no)", PROMPT);
    console.assert_no_boot_output("(yes/no)");
    console.type_line("yes");
    console.expect("Setup is complete", SETUP);
    console.expect("https://box.meetbox.test/", PROMPT);
    console.expect("open the web admin from a", PROMPT);
    console.expect(":8443/", PROMPT);
    eprintln!("setup done after {}", guest.elapsed());
    // The final screen, on a clean screen of its own.
    guest
        .console
        .assert_clean_screen_at_match("Meetbox first-boot setup", ":8443/");
    guest.tty1_shows(
        "tty1-final-screen",
        &["first-boot setup", "Setup is complete", "box.meetbox.test"],
    );
    let transcript = guest.console.transcript();
    assert!(
        !transcript.contains("staple"),
        "the password was echoed:\n{transcript}"
    );

    // The typed password is the admin's (self-signed certificate: no chain to check here).
    let https = Https::forwarded("box.meetbox.test", ports.https, None);
    let jid = retry("admin login", PROMPT, || {
        login(&https, XMPP_MAIN_HOST, "admin", password)
    });
    assert!(jid.starts_with("admin@meet.jitsi/"), "{jid}");

    // After setup, the owner runs the box from the web admin; guessing locks the host's address
    // out of logging in, not the session already open; the reset then asks the questions again.
    if !admin::browser_ready() {
        guest.power_off();
        installer::check_marked_to_run_from(&stick);
        return;
    }
    let (visit, password) = admin::hosts_and_password("box.meetbox.test", ports, password);
    admin::guessing_locks_out("box.meetbox.test", ports, &password);
    admin::factory_reset(&visit, &password);
    guest.console.expect("Press Enter to start the setup", BOOT);
    guest
        .console
        .assert_clean_screen("Meetbox first-boot setup", "Press Enter to start the setup");
    eprintln!(
        "after the factory reset the box asks again, {}",
        guest.elapsed()
    );
    assert!(
        login(&https, XMPP_MAIN_HOST, "admin", &password).is_err(),
        "the admin account survived the factory reset"
    );
    guest.power_off();
    installer::check_marked_to_run_from(&stick);
    fs::remove_file(&stick).unwrap();
}
