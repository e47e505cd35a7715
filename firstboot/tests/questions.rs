//! The questions on a real pseudo-terminal (driven by expect): an invalid domain and a wrong password
//! confirmation are refused with a message, then setup runs with the corrected answers.

mod common;

use std::path::PathBuf;
use std::process::Command;

#[test]
fn questions_refuse_bad_answers_and_then_set_up() {
    if !common::have_tool("expect", "expect") {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    common::write_small_tuning(root.path());
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/questions.exp");
    let out = common::run(
        Command::new("expect")
            .arg(&script)
            .arg(env!("CARGO_BIN_EXE_meetbox-firstboot"))
            .arg(root.path()),
    );
    let transcript = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the dialogue did not finish:\n{transcript}"
    );
    assert!(
        !transcript.contains("horse staple"),
        "the password was echoed:\n{transcript}"
    );
    assert!(root.path().join("var/lib/meetbox/firstboot.done").exists());
    let nginx = std::fs::read_to_string(root.path().join("etc/nginx/sites-available/meetbox.conf"))
        .unwrap();
    assert!(nginx.contains("server_name meet.example.org;"));
}
