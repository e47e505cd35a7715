//! The web admin as its two real processes (common/admin_box.rs): who gets in, the meeting hosts,
//! the admin password, and a backup that restores a fresh tree. The same flows in a booted image,
//! through nginx, with a real browser: tests/appliance/admin.rs.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::admin_box::*;
use meetbox_firstboot::admin::sessions;
use meetbox_firstboot::apply::accounts;
use meetbox_firstboot::apply::Root;
use meetbox_firstboot::layout::{self, XMPP_DOMAIN};

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
