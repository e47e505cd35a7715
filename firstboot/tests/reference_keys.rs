//! Every HOCON key the agent writes into jicofo.conf and jvb.conf is one that jicofo, the videobridge
//! or ice4j define: their `reference.conf` files (both Jitsi releases in `../shared/jitsi-packaging/`)
//! list it, set or commented out as documentation. A key they do not know is silently ignored by
//! the services, so a typo or a renamed key would break a box without a word.
//!
//! The rendered files are read with ruby-hocon (a real HOCON parser); the reference files with a
//! small scanner that also collects the commented-out keys, which is how these files document most
//! of their options.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use meetbox_firstboot::render;

/// Keys defined in code that the reference files point to instead of listing them.
const DEFINED_ELSEWHERE: &[(&str, &str)] = &[
    // "For the properties which should be filled out here, see MucClientConfiguration" (jicoco).
    (
        "videobridge.apis.xmpp-client.configs.*.hostname",
        "MucClientConfiguration",
    ),
    (
        "videobridge.apis.xmpp-client.configs.*.domain",
        "MucClientConfiguration",
    ),
    (
        "videobridge.apis.xmpp-client.configs.*.username",
        "MucClientConfiguration",
    ),
    (
        "videobridge.apis.xmpp-client.configs.*.password",
        "MucClientConfiguration",
    ),
    (
        "videobridge.apis.xmpp-client.configs.*.muc_jids",
        "MucClientConfiguration",
    ),
    (
        "videobridge.apis.xmpp-client.configs.*.muc_nickname",
        "MucClientConfiguration",
    ),
    (
        "videobridge.apis.xmpp-client.configs.*.disable_certificate_verification",
        "MucClientConfiguration",
    ),
    // "See JettyBundleActivatorConfig in Jicoco for values": the file shows `host` for the private
    // server only.
    (
        "videobridge.http-servers.public.host",
        "JettyBundleActivatorConfig",
    ),
];

fn packaging_dir() -> PathBuf {
    std::env::var_os("MEETBOX_JITSI_PACKAGING")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/jitsi-packaging")
        })
}

/// The keys a reference.conf defines or documents, as dotted paths; keys of objects inside an
/// array count under the array's path.
fn documented_keys(text: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    // Path segments pushed by each open block or array.
    let mut frames: Vec<Vec<String>> = Vec::new();
    let path = |frames: &[Vec<String>], key: &str| {
        frames
            .iter()
            .flatten()
            .map(String::as_str)
            .chain(key.split('.'))
            .collect::<Vec<_>>()
            .join(".")
    };
    for raw in text.lines() {
        let line = raw.trim();
        let commented = line
            .strip_prefix("//")
            .or_else(|| line.strip_prefix('#'))
            .map(|rest| rest.trim_start_matches(['#', '/']).trim());
        if let Some(rest) = commented {
            if let Some(key) = assigned_key(rest) {
                keys.insert(path(&frames, &key));
            }
            continue;
        }
        let code = strip_strings_and_comment(line);
        let code = code.trim();
        if code.starts_with('}') || code.starts_with(']') {
            frames.pop();
            continue;
        }
        if code == "{" {
            frames.push(Vec::new());
            continue;
        }
        let Some(key) = assigned_key(code) else {
            continue;
        };
        keys.insert(path(&frames, &key));
        let opens = code.ends_with('{') || code.ends_with('[');
        if opens {
            frames.push(key.split('.').map(str::to_string).collect());
        }
    }
    keys
}

/// The key of `key = value`, `key: value`, `key { ...` or `key = [ ...`, if the line is one.
fn assigned_key(line: &str) -> Option<String> {
    let end = line.find(|c: char| c.is_whitespace() || "={:[".contains(c))?;
    let key = line[..end].trim_matches('"');
    let rest = line[end..].trim_start();
    let is_key = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && key.chars().next().is_some_and(|c| c.is_ascii_alphabetic());
    let assigns = rest.starts_with('=') || rest.starts_with(':') || rest.starts_with('{');
    (is_key && assigns).then(|| key.to_string())
}

/// The line without string contents and without a trailing comment.
fn strip_strings_and_comment(line: &str) -> String {
    let mut out = String::new();
    let mut in_string = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '"' {
            in_string = !in_string;
            out.push(c);
        } else if in_string {
            continue;
        } else if c == '#' || (c == '/' && chars.peek() == Some(&'/')) {
            break;
        } else {
            out.push(c);
        }
    }
    out
}

/// The leaf keys of a rendered HOCON file, as ruby-hocon parses it.
fn rendered_keys(text: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rendered.conf");
    std::fs::write(&file, text).unwrap();
    let script = r##"require 'hocon'; require 'hocon/config_factory'
def walk(v, p, out)
  if v.is_a?(Hash)
    v.each { |k, x| walk(x, p.empty? ? k : "#{p}.#{k}", out) }
  else
    out << p
    v.each { |x| x.each_key { |k| out << "#{p}.#{k}" } if x.is_a?(Hash) } if v.is_a?(Array)
  end
end
out = []
walk(Hocon::ConfigFactory.parse_file(ARGV[0]).resolve.root.unwrapped, "", out)
puts out"##;
    let out = common::run(Command::new("ruby").args(["-e", script]).arg(&file));
    assert!(
        out.status.success(),
        "ruby-hocon: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn defined_elsewhere(key: &str) -> bool {
    DEFINED_ELSEWHERE.iter().any(|(pattern, _)| {
        let parts: Vec<&str> = pattern.split('.').collect();
        let actual: Vec<&str> = key.split('.').collect();
        parts.len() == actual.len() && parts.iter().zip(&actual).all(|(p, a)| *p == "*" || p == a)
    })
}

fn unknown_keys(rendered: &str, references: &[PathBuf]) -> Vec<String> {
    let mut documented = BTreeSet::new();
    for reference in references {
        let text = std::fs::read_to_string(reference)
            .unwrap_or_else(|e| panic!("{}: {e}", reference.display()));
        documented.extend(documented_keys(&text));
    }
    rendered_keys(rendered)
        .into_iter()
        .filter(|key| !documented.contains(key) && !defined_elsewhere(key))
        .collect()
}

#[test]
fn the_scanner_finds_set_commented_and_array_keys() {
    let text = "a {\n  b = 1\n  # c = 2\n  d.e {\n    f: \"x#y\" # note\n  }\n  list = [\n    #{\n    #  g = 1\n    #}\n  ]\n  h = [ \"i\" ]\n}\n";
    let keys: Vec<String> = documented_keys(text).into_iter().collect();
    assert_eq!(
        keys,
        ["a", "a.b", "a.c", "a.d.e", "a.d.e.f", "a.h", "a.list", "a.list.g"]
    );
}

#[test]
fn every_key_the_agent_writes_is_defined_by_jitsi() {
    if !common::have_tool("ruby", "ruby-hocon") {
        return;
    }
    let packaging = packaging_dir();
    if !packaging.is_dir() {
        let reason = format!("Jitsi's packaging is not at {}", packaging.display());
        assert!(std::env::var("CI").as_deref() != Ok("true"), "{reason}");
        eprintln!("SKIPPED: {reason}");
        return;
    }
    let (jicofo_conf, jvb_conf) = common::with_site(true, |site| {
        (render::jicofo_conf(site), render::jvb_conf(site))
    });
    for release in ["10590", "10655"] {
        let tree = packaging.join(release);
        let jicofo = [tree.join("jicofo/jicofo-selector/src/main/resources/reference.conf")];
        let jvb = [
            tree.join("jitsi-videobridge/jvb/src/main/resources/reference.conf"),
            tree.join("jitsi-videobridge/jitsi-media-transform/src/main/resources/reference.conf"),
            packaging.join("ice4j/src/main/resources/reference.conf"),
        ];
        for (file, rendered, references) in [
            ("jicofo.conf", &jicofo_conf, &jicofo[..]),
            ("jvb.conf", &jvb_conf, &jvb[..]),
        ] {
            let unknown = unknown_keys(rendered, references);
            assert!(
                unknown.is_empty(),
                "{file} sets keys Jitsi {release} does not define: {unknown:?}"
            );
        }
    }
}

#[test]
fn a_key_jitsi_does_not_know_is_caught() {
    if !common::have_tool("ruby", "ruby-hocon") || !packaging_dir().is_dir() {
        return;
    }
    let jvb = [packaging_dir().join("ice4j/src/main/resources/reference.conf")];
    // The key an earlier agent wrote: it is videobridge.ice.advertise-private-candidates.
    let unknown = unknown_keys(
        "ice4j { harvest { advertise-private-candidates = true } }",
        &jvb,
    );
    assert_eq!(unknown, ["ice4j.harvest.advertise-private-candidates"]);
}
