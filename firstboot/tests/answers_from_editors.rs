//! Answers files as Windows Notepad and macOS TextEdit save them, on the ESP of a temporary tree:
//! the real agent sets up from the ones it can read and explains the others, wiping nothing it
//! did not read.

mod common;

use std::path::Path;
use std::process::{Command, Output};

const ANSWERS: &str = "domain = \"meetbox.test\"\nadmin_password = \"horse staple cart moon\"\ntls = \"self-signed\"\n";

fn set_up_from(name: &str, bytes: &[u8]) -> (tempfile::TempDir, Output) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    common::write_small_tuning(root);
    std::fs::write(root.join("etc/fstab"), "UUID=0f3e / ext4 defaults 0 1\n").unwrap();
    std::fs::create_dir_all(root.join("boot/efi")).unwrap();
    std::fs::write(root.join("boot/efi").join(name), bytes).unwrap();
    // What Finder leaves beside a file it copies to a FAT disk.
    std::fs::write(
        root.join("boot/efi").join(format!("._{name}")),
        b"\0\x05\x16\x07\0\x02",
    )
    .unwrap();
    let out = common::run(
        Command::new(env!("CARGO_BIN_EXE_meetbox-firstboot"))
            .arg("--root")
            .arg(root),
    );
    (dir, out)
}

fn finished(root: &Path) -> bool {
    root.join("var/lib/meetbox/firstboot.done").exists()
}

#[test]
fn notepad_utf16_with_crlf_and_a_hidden_txt_extension() {
    let mut bytes = vec![0xFF, 0xFE];
    for unit in ANSWERS.replace('\n', "\r\n").encode_utf16() {
        bytes.extend_from_slice(&unit.to_le_bytes());
    }
    let (dir, out) = set_up_from("meetbox-setup.toml.txt", &bytes);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(finished(dir.path()));
    assert!(
        !dir.path().join("boot/efi/meetbox-setup.toml.txt").exists(),
        "not wiped"
    );
}

#[test]
fn textedit_curly_quotes_and_a_byte_order_mark() {
    let curly = ANSWERS
        .replacen('"', "\u{201C}", 1)
        .replacen('"', "\u{201D}", 1);
    let mut bytes = vec![0xEF, 0xBB, 0xBF];
    bytes.extend_from_slice(curly.as_bytes());
    let (dir, out) = set_up_from("Meetbox-Setup.toml", &bytes);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("curly quotes"), "{stdout}");
    assert!(finished(dir.path()));
}

#[test]
fn rich_text_is_explained_and_kept() {
    let rtf = format!(
        "{{\\rtf1\\ansi\\deff0 {}}}",
        ANSWERS.replace('\n', "\\par\n")
    );
    let (dir, out) = set_up_from("meetbox-setup.rtf", rtf.as_bytes());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Make Plain Text"), "{stderr}");
    assert!(!stderr.contains("horse staple"), "{stderr}");
    assert!(!finished(dir.path()));
    assert!(dir.path().join("boot/efi/meetbox-setup.rtf").exists());
}
