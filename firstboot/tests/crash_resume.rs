//! A crash after each step in turn (MEETBOX_FIRSTBOOT_CRASH_AFTER aborts the process right after the step
//! is recorded), then a normal rerun: the resulting tree is the same as after an uninterrupted run.
//! Values that are random by design (secrets, salts, keys) differ between boxes, so they are masked with
//! placeholders taken from each tree's own secret store before comparing.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;

use meetbox_firstboot::layout;
use meetbox_firstboot::secrets::scram;
use meetbox_firstboot::secrets::Secrets;
use meetbox_firstboot::settings::Settings;
use meetbox_firstboot::state::Step;

const ANSWERS: &str = r#"
domain = "meetbox.test"
admin_user = "alice"
admin_password = "horse staple cart moon"
tls = "self-signed"
ssh_authorized_keys = ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHfMr/yH/a4ErzeFOsVzmdeHZVSYOfDfAuSiIQTsgM0n owner@laptop"]
"#;

fn agent() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_meetbox-firstboot"));
    command.env_remove("MEETBOX_FIRSTBOOT_CRASH_AFTER");
    command
}

/// Runs the agent with `args` and expects success; its output.
fn agent_ok(args: &[&std::ffi::OsStr]) -> std::process::Output {
    let out = agent().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A target tree with SSH, the environment files of Jitsi's packages, the image's fstab and tuning file
/// (with a small swap file), and the answers on the ESP.
fn fresh_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    common::write_small_tuning(root);
    std::fs::write(
        root.join("etc/fstab"),
        "UUID=0f3e / ext4 defaults,errors=remount-ro,x-systemd.growfs 0 1\n",
    )
    .unwrap();
    for (dir, text) in [
        (
            "etc/jitsi/videobridge",
            "JVB_HOSTNAME=meet.jitsi\nJVB_OPTS=\"--apis=,\"\n",
        ),
        (
            "etc/jitsi/jicofo",
            "JICOFO_HOST=localhost\n#JICOFO_MAX_MEMORY=3072m\n",
        ),
    ] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
        let config = root.join(dir).join("config");
        std::fs::write(&config, text).unwrap();
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o640)).unwrap();
    }
    std::fs::create_dir_all(root.join("etc/ssh")).unwrap();
    std::fs::write(root.join("etc/ssh/sshd_config"), "PermitRootLogin no\n").unwrap();
    std::fs::write(
        root.join("etc/ssh/ssh_host_ed25519_key"),
        "the image's key, shared by every box\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/machine-id"), "uninitialized\n").unwrap();
    std::fs::create_dir_all(root.join("boot/efi")).unwrap();
    std::fs::write(root.join("boot/efi/meetbox-setup.toml"), ANSWERS).unwrap();
    dir
}

/// Every file of the tree: path -> (mode, content with random-by-design values masked).
fn snapshot(root: &Path) -> BTreeMap<String, (u32, String)> {
    let secrets: Secrets = serde_json::from_str(
        &std::fs::read_to_string(root.join(&layout::SECRETS_FILE[1..])).unwrap(),
    )
    .unwrap();
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join(&layout::STATE_FILE[1..])).unwrap(),
    )
    .unwrap();
    let settings: Settings = serde_json::from_value(state["settings"].clone()).unwrap();
    let mut masks: Vec<(String, &str)> = vec![
        (secrets.machine_id.clone(), "<machine-id>"),
        (secrets.focus_password.clone(), "<focus-password>"),
        (secrets.jvb_password.clone(), "<jvb-password>"),
        (secrets.turn_secret.clone(), "<turn-secret>"),
        (secrets.jvb_muc_nickname.clone(), "<nickname>"),
        (secrets.focus_salt.clone(), "<focus-salt>"),
        (secrets.jvb_salt.clone(), "<jvb-salt>"),
        (settings.admin_credential.salt.clone(), "<admin-salt>"),
        (
            settings.admin_credential.stored_key.clone(),
            "<admin-stored>",
        ),
        (
            settings.admin_credential.server_key.clone(),
            "<admin-server>",
        ),
    ];
    for (password, salt, name) in [
        (&secrets.focus_password, &secrets.focus_salt, "focus"),
        (&secrets.jvb_password, &secrets.jvb_salt, "jvb"),
    ] {
        let c = scram::credential(password, salt, scram::ITERATIONS);
        masks.push((
            c.stored_key,
            if name == "focus" {
                "<focus-stored>"
            } else {
                "<jvb-stored>"
            },
        ));
        masks.push((
            c.server_key,
            if name == "focus" {
                "<focus-server>"
            } else {
                "<jvb-server>"
            },
        ));
    }
    let mut files = BTreeMap::new();
    walk(root, root, &masks, &mut files);
    files
}

fn walk(
    root: &Path,
    dir: &Path,
    masks: &[(String, &str)],
    out: &mut BTreeMap<String, (u32, String)>,
) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let rel = path.strip_prefix(root).unwrap().display().to_string();
        if meta.is_dir() {
            walk(root, &path, masks, out);
            continue;
        }
        let content = if meta.file_type().is_symlink() {
            format!("-> {}", std::fs::read_link(&path).unwrap().display())
        } else {
            let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).to_string();
            if text.contains("-----BEGIN") || rel.starts_with("etc/ssh/ssh_host_") {
                // Keys and certificates: random by design; their presence and mode are compared.
                "<key material>".to_string()
            } else if rel == "swap.img" {
                // mkswap writes a random UUID into the header.
                format!("<swap area of {} bytes>", meta.len())
            } else {
                masks
                    .iter()
                    .fold(text, |t, (value, name)| t.replace(value.as_str(), name))
            }
        };
        out.insert(rel, (meta.mode() & 0o7777, content));
    }
}

fn assert_same(
    reference: &BTreeMap<String, (u32, String)>,
    other: &BTreeMap<String, (u32, String)>,
    what: &str,
) {
    let left: Vec<_> = reference.keys().collect();
    let right: Vec<_> = other.keys().collect();
    assert_eq!(left, right, "{what}: different files");
    for (path, value) in reference {
        assert_eq!(value, &other[path], "{what}: {path} differs");
    }
}

#[test]
fn a_crash_after_any_step_resumes_to_the_same_end_state() {
    if !common::have_tool("ssh-keygen", "openssh-client") {
        return;
    }
    let reference = fresh_tree();
    let out = agent_ok(&["--root".as_ref(), reference.path().as_os_str()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("Meetbox first-boot setup\n"), "{stdout}");
    assert!(
        stdout.contains("https://meetbox.test/") && stdout.contains("10000/udp"),
        "{stdout}"
    );
    assert!(!stdout.contains("horse staple"), "the password was printed");
    let reference_files = snapshot(reference.path());
    assert!(reference.path().join(&layout::DONE_MARKER[1..]).exists());
    assert!(
        !reference
            .path()
            .join("boot/efi/meetbox-setup.toml")
            .exists(),
        "answers file not wiped"
    );
    assert_ne!(
        std::fs::read_to_string(reference.path().join("etc/ssh/ssh_host_ed25519_key")).unwrap(),
        "the image's key, shared by every box\n"
    );
    // The tuning is applied: config.js caps, heaps, swap.
    let config_js = &reference_files["etc/jitsi/meet/meetbox.test-config.js"].1;
    assert!(
        config_js.contains("resolution: 360,") && config_js.contains("channelLastN: 4,"),
        "{config_js}"
    );
    assert_eq!(
        reference_files["etc/jitsi/videobridge/config"],
        (
            0o640,
            "JVB_HOSTNAME=meet.jitsi\nJVB_OPTS=\"--apis=,\"\nJVB_SECRET=<jvb-password>\nVIDEOBRIDGE_MAX_MEMORY=1920m\n"
                .to_string()
        )
    );
    assert_eq!(
        reference_files["etc/jitsi/jicofo/config"].1,
        "JICOFO_HOST=localhost\nJICOFO_MAX_MEMORY=640m\nJICOFO_HOSTNAME=meet.jitsi\nJICOFO_AUTH_DOMAIN=auth.meet.jitsi\nJICOFO_AUTH_USER=focus\nJICOFO_AUTH_PASSWORD=<focus-password>\n"
    );
    assert_eq!(
        reference_files["swap.img"],
        (0o600, format!("<swap area of {} bytes>", 8 << 20))
    );
    assert!(reference_files["etc/fstab"]
        .1
        .ends_with("\n/swap.img none swap sw 0 0\n"));

    for step in Step::ALL {
        let tree = fresh_tree();
        let crashed = agent()
            .arg("--root")
            .arg(tree.path())
            .env("MEETBOX_FIRSTBOOT_CRASH_AFTER", step.name())
            .output()
            .unwrap();
        assert!(
            !crashed.status.success(),
            "{}: the crash switch did not fire",
            step.name()
        );
        assert!(
            !tree.path().join(&layout::DONE_MARKER[1..]).exists(),
            "{}: done marker before the end",
            step.name()
        );
        let rerun = agent().arg("--root").arg(tree.path()).output().unwrap();
        assert!(
            rerun.status.success(),
            "{}: rerun failed: {}",
            step.name(),
            String::from_utf8_lossy(&rerun.stderr)
        );
        assert_same(
            &reference_files,
            &snapshot(tree.path()),
            &format!("crash after {}", step.name()),
        );
    }
}

#[test]
fn secrets_are_private_and_fresh_per_box() {
    if !common::have_tool("ssh-keygen", "openssh-client") {
        return;
    }
    let a = fresh_tree();
    let b = fresh_tree();
    for tree in [&a, &b] {
        agent_ok(&["--root".as_ref(), tree.path().as_os_str()]);
    }
    let read = |t: &tempfile::TempDir, p: &str| std::fs::read(t.path().join(&p[1..])).unwrap();
    for path in [
        layout::SECRETS_FILE,
        layout::MACHINE_ID,
        layout::TLS_KEY,
        "/etc/ssh/ssh_host_ed25519_key",
        "/etc/prosody/certs/meet.jitsi.key",
    ] {
        assert_ne!(
            read(&a, path),
            read(&b, path),
            "{path} is the same on two boxes"
        );
    }
    for path in [
        layout::SECRETS_FILE,
        layout::STATE_FILE,
        layout::TLS_KEY,
        layout::TURN_TLS_KEY,
        layout::ROOT_AUTHORIZED_KEYS,
    ] {
        let mode = std::fs::metadata(a.path().join(&path[1..])).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600, "{path}");
    }
    let ssh_dir = std::fs::metadata(a.path().join(&layout::ROOT_SSH_DIR[1..])).unwrap();
    assert_eq!(ssh_dir.mode() & 0o777, 0o700);
    let keys = String::from_utf8(read(&a, layout::ROOT_AUTHORIZED_KEYS)).unwrap();
    assert_eq!(
        keys,
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHfMr/yH/a4ErzeFOsVzmdeHZVSYOfDfAuSiIQTsgM0n owner@laptop\n"
    );
    // The admin password is nowhere in clear text.
    let mut hits = Vec::new();
    grep(a.path(), b"horse staple cart moon", &mut hits);
    assert!(hits.is_empty(), "password found in {hits:?}");
}

fn grep(dir: &Path, needle: &[u8], hits: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            grep(&path, needle, hits);
        } else if meta.is_file()
            && std::fs::read(&path)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
        {
            hits.push(path.display().to_string());
        }
    }
}

#[test]
fn status_reconfigure_and_bad_answers() {
    let tree = fresh_tree();
    std::fs::write(
        tree.path().join("boot/efi/meetbox-setup.toml"),
        "domain = \"localhost\"\nadmin_password = \"x\"\ntls = \"self-signed\"\n",
    )
    .unwrap();
    let out = agent().arg("--root").arg(tree.path()).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("Setup stopped") && stderr.contains("To try again"),
        "{stderr}"
    );
    assert!(
        stderr.contains("localhost") && stderr.contains("admin_password"),
        "{stderr}"
    );

    std::fs::write(tree.path().join("boot/efi/meetbox-setup.toml"), ANSWERS).unwrap();
    agent_ok(&["--root".as_ref(), tree.path().as_os_str()]);
    let status = agent()
        .arg("--root")
        .arg(tree.path())
        .arg("status")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.contains("Domain:       meetbox.test") && text.contains("Setup finished"),
        "{text}"
    );

    let new = tree.path().join("reconf.toml");
    std::fs::write(
        &new,
        "domain = \"other.meetbox.test\"\ntls = \"self-signed\"\n",
    )
    .unwrap();
    agent_ok(&[
        "--root".as_ref(),
        tree.path().as_os_str(),
        "--answers".as_ref(),
        new.as_os_str(),
        "reconfigure".as_ref(),
    ]);
    let nginx = std::fs::read_to_string(tree.path().join(&layout::NGINX_SITE_AVAIL[1..])).unwrap();
    assert!(nginx.contains("server_name other.meetbox.test;"));
    assert!(tree
        .path()
        .join("etc/jitsi/meet/other.meetbox.test-config.js")
        .exists());
    assert!(!tree
        .path()
        .join("etc/jitsi/meet/meetbox.test-config.js")
        .exists());
    // The internal XMPP domain does not move: jicofo's file is unchanged apart from nothing.
    let jicofo = std::fs::read_to_string(tree.path().join(&layout::JICOFO_CONF[1..])).unwrap();
    assert!(jicofo.contains("xmpp-domain = \"meet.jitsi\""));
    let cert = std::fs::read_to_string(tree.path().join(&layout::TLS_CERT[1..])).unwrap();
    let info = meetbox_firstboot::acme::tls::inspect(&cert).unwrap();
    assert!(
        info.subject.contains("other.meetbox.test"),
        "{}",
        info.subject
    );

    // A change whose certificate cannot be had is rolled back whole: every file as it was.
    let failing = tree.path().join("reconf-failing.toml");
    std::fs::write(
        &failing,
        "domain = \"third.meetbox.test\"\ntls = \"letsencrypt\"\nacme_directory = \"https://127.0.0.1:9/directory\"\n",
    )
    .unwrap();
    let before = snapshot(tree.path());
    let out = agent()
        .arg("--root")
        .arg(tree.path())
        .arg("--answers")
        .arg(&failing)
        .arg("reconfigure")
        .env("MEETBOX_ACME_HTTP_PORT", common::free_port().to_string())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("nothing was changed: the box still serves other.meetbox.test"),
        "{stderr}"
    );
    let after = snapshot(tree.path());
    let changed: Vec<&String> = before
        .keys()
        .chain(after.keys())
        .filter(|path| before.get(*path) != after.get(*path))
        .collect();
    assert!(
        changed.is_empty(),
        "changed by a failed reconfigure: {changed:?}"
    );
}
