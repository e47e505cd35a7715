//! The web admin's long changes as its two real processes (common/admin_box.rs): a domain change,
//! one that fails and rolls back byte for byte, and a factory reset after which the tree sets up
//! as a new box.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::admin_box::*;
use meetbox_firstboot::apply::accounts;
use meetbox_firstboot::apply::Root;
use meetbox_firstboot::layout::{self, XMPP_DOMAIN};

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
    // Setup gave the boot menu this box's own superuser, before the image's entries.
    let superuser_before_reset =
        std::fs::read_to_string(root.join(&layout::GRUB_CFG[1..])).unwrap();
    assert!(
        superuser_before_reset
            .contains("set superusers=\"root\"\npassword_pbkdf2 root grub.pbkdf2.sha512.10000."),
        "{superuser_before_reset}"
    );
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
    let menu = || std::fs::read_to_string(root.join(&layout::GRUB_CFG[1..])).unwrap();
    assert_eq!(
        menu(),
        *IMAGE_GRUB_CFG,
        "the boot menu keeps this box's superuser"
    );
    // The erased box sets up again as a new one, with a new superuser.
    set_up_box(root);
    assert!(root.join(&layout::DONE_MARKER[1..]).exists());
    let relocked = menu();
    assert!(relocked.contains("password_pbkdf2 root grub.pbkdf2.sha512.10000."));
    assert_ne!(
        relocked, superuser_before_reset,
        "the same superuser after the reset"
    );
}
