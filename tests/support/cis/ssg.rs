//! The SCAP Security Guide content both CIS scans read: SSG as Debian packages it
//! (`ssg-debderived`, which carries `ssg-ubuntu2404-ds.xml`), the newest release in Debian's
//! archive, fetched through the host's own apt mirror and keyring with a private apt state, and
//! cached in the target directory. `MEETBOX_SSG_DEB` names a downloaded .deb instead (a host
//! without a Debian mirror).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::DATASTREAM;
use crate::support::apt_repo::run;

/// The SSG release the exceptions were written against: 0.1.82, in Debian unstable (trixie has
/// 0.1.76). Taken when the mirror still has it; otherwise the newest, said on stderr.
pub const SSG_VERSION: &str = "0.1.82-1";
/// The Debian suites searched, newest first.
const SSG_SUITES: [&str; 2] = ["sid", "trixie"];

/// The Debian archive URI and keyring of the host's apt configuration (deb822
/// `.sources` first, then one-line `sources.list`): the entry with a plain release
/// suite (no -security/-updates).
fn host_debian_mirror() -> Option<(String, String)> {
    let default_keyring = "/usr/share/keyrings/debian-archive-keyring.gpg".to_string();
    let mut files: Vec<PathBuf> = fs::read_dir("/etc/apt/sources.list.d")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "sources"))
        .collect();
    files.sort();
    for file in &files {
        let text = fs::read_to_string(file).unwrap_or_default();
        for stanza in text.split("\n\n") {
            let field = |name: &str| {
                stanza.lines().find_map(|l| {
                    l.strip_prefix(name)
                        .and_then(|r| r.strip_prefix(':'))
                        .map(|v| v.trim().to_string())
                })
            };
            let (Some(uris), Some(suites)) = (field("URIs"), field("Suites")) else {
                continue;
            };
            if field("Types").is_some_and(|t| !t.split_whitespace().any(|t| t == "deb")) {
                continue;
            }
            if suites.split_whitespace().any(|s| !s.contains('-')) {
                let uri = uris.split_whitespace().next()?.to_string();
                return Some((uri, field("Signed-By").unwrap_or(default_keyring)));
            }
        }
    }
    let list = fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    for line in list.lines() {
        let words: Vec<&str> = line
            .split_whitespace()
            .filter(|w| !w.starts_with('['))
            .collect();
        if words.first() == Some(&"deb") && words.len() >= 3 && !words[2].contains('-') {
            return Some((words[1].to_string(), default_keyring));
        }
    }
    None
}

/// Unpacks ssg-debderived into a directory (cached) and returns the datastream. Once per test
/// process, and under a lock between processes: the tests of one binary run in parallel, and
/// test binaries side by side, and would otherwise share apt's state.
pub fn ssg_content() -> PathBuf {
    static CONTENT: OnceLock<PathBuf> = OnceLock::new();
    CONTENT.get_or_init(unpack_ssg).clone()
}

fn unpack_ssg() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("hardening-ssg-{SSG_VERSION}"));
    let datastream = dir.join("content").join(DATASTREAM);
    fs::create_dir_all(&dir).unwrap();
    // tests/run runs the appliance test beside the others: one of them fetches, the other waits.
    let _fetching =
        meetbox::host::lock::exclusive(&dir.join("lock"), "fetching the SSG content").unwrap();
    if datastream.is_file() {
        return datastream;
    }
    let deb = match std::env::var_os("MEETBOX_SSG_DEB") {
        Some(path) => PathBuf::from(path),
        None => download_ssg(&dir),
    };
    let content = dir.join("content");
    let _ = fs::remove_dir_all(&content);
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&content));
    assert!(
        datastream.is_file(),
        "{} has no {DATASTREAM}: it must be ssg-debderived 0.1.76 or newer",
        deb.display()
    );
    datastream
}

/// Fetches ssg-debderived from the SSG_SUITES of the host's own Debian mirror, with a private
/// apt state so the host's apt configuration is left alone.
fn download_ssg(dir: &Path) -> PathBuf {
    let (mirror, keyring) = host_debian_mirror().unwrap_or_else(|| {
        panic!(
            "no Debian mirror in the host's apt configuration: on a non-Debian host set \
             MEETBOX_SSG_DEB to a downloaded ssg-debderived_{SSG_VERSION} .deb"
        )
    });
    let state = dir.join("apt");
    let _ = fs::remove_dir_all(&state);
    for sub in ["lists/partial", "cache/archives/partial", "etc/parts"] {
        fs::create_dir_all(state.join(sub)).unwrap();
    }
    fs::write(state.join("status"), "").unwrap();
    let sources: String = SSG_SUITES
        .iter()
        .map(|suite| format!("deb [signed-by={keyring}] {mirror} {suite} main\n"))
        .collect();
    fs::write(state.join("etc/sources.list"), sources).unwrap();
    let options: Vec<String> = [
        ("Dir::State", state.display().to_string()),
        (
            "Dir::State::Lists",
            state.join("lists").display().to_string(),
        ),
        (
            "Dir::State::status",
            state.join("status").display().to_string(),
        ),
        ("Dir::Cache", state.join("cache").display().to_string()),
        (
            "Dir::Etc::SourceList",
            state.join("etc/sources.list").display().to_string(),
        ),
        (
            "Dir::Etc::SourceParts",
            state.join("etc/parts").display().to_string(),
        ),
        ("Acquire::Languages", "none".to_string()),
        ("APT::Sandbox::User", "root".to_string()),
    ]
    .iter()
    .flat_map(|(k, v)| ["-o".to_string(), format!("{k}={v}")])
    .collect();
    let args = |extra: &[&str]| -> Vec<String> {
        options
            .iter()
            .cloned()
            .chain(extra.iter().map(|s| s.to_string()))
            .collect()
    };
    eprintln!("==> ssg-debderived from {mirror} {}", SSG_SUITES.join(", "));
    run(Command::new("apt-get").args(args(&["update"])));
    let policy = run(Command::new("apt-cache").args(args(&["madison", "ssg-debderived"])));
    let offered = String::from_utf8_lossy(&policy.stdout).into_owned();
    let wanted = if offered.contains(&format!(" {SSG_VERSION} ")) {
        format!("ssg-debderived={SSG_VERSION}")
    } else {
        eprintln!(
            "note: ssg-debderived {SSG_VERSION} is gone from the mirror; taking the newest, whose \
             rules may differ from the exceptions':\n{offered}"
        );
        "ssg-debderived".to_string()
    };
    let output = Command::new("apt-get")
        .args(args(&["download", &wanted]))
        .current_dir(dir)
        .output()
        .expect("apt-get runs");
    assert!(
        output.status.success(),
        "apt-get download {wanted} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("ssg-debderived_"))
        })
        .expect("the downloaded .deb")
}
