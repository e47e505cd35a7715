//! The CIS measurement both scans share: the SCAP content (ssg.rs), the scanner that is carried
//! onto the running box (kit.rs), oscap's results, the scores, and the documented exceptions of
//! `tests/hardening/cis-exceptions.toml`. tests/hardening.rs scans root trees in a chroot; the
//! appliance test scans the booted box (tests/appliance/scan.rs).

pub mod kit;
pub mod ssg;

pub use ssg::ssg_content;

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The Ubuntu 24.04 datastream inside the SSG package.
pub const DATASTREAM: &str = "usr/share/xml/scap/ssg/content/ssg-ubuntu2404-ds.xml";

/// (title, XCCDF profile id). Every Level 1 rule is also a Level 2 rule.
pub const PROFILES: [(&str, &str); 2] = [
    (
        "CIS Level 1 Server",
        "xccdf_org.ssgproject.content_profile_cis_level1_server",
    ),
    (
        "CIS Level 2 Server",
        "xccdf_org.ssgproject.content_profile_cis_level2_server",
    ),
];

/// A short file-name stem for a profile: `level1-server`.
pub fn profile_stem(profile: &str) -> String {
    let mut parts: Vec<&str> = profile.rsplit('_').take(2).collect();
    parts.reverse();
    parts.join("-")
}

/// Where one kind of scan keeps its reports (`chroot`, `booted`): the test's artifacts.
pub fn report_dir(kind: Kind) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("hardening-report")
        .join(kind.name());
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// Where a scan looks at the system.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// The image's root tree, unpacked, scanned with oscap-chroot: before first boot.
    Chroot,
    /// The appliance after setup, scanned from inside.
    Booted,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Chroot => "chroot",
            Kind::Booted => "booted",
        }
    }
}

/// Results of one oscap evaluation: rule id -> result.
pub struct Scan {
    pub results: BTreeMap<String, String>,
}

impl Scan {
    /// oscap's text output: blocks of `Title`, `Rule`, `Result` lines.
    pub fn parse(text: &str) -> Scan {
        let mut results = BTreeMap::new();
        let mut rule = None;
        // oscap redraws its progress with carriage returns; they are not part of a field.
        for line in text.replace('\r', "").lines() {
            if let Some(id) = line.strip_prefix("Rule\t") {
                rule = Some(id.trim().to_string());
            } else if let Some(result) = line.strip_prefix("Result\t") {
                if let Some(id) = rule.take() {
                    results.insert(id, result.trim().to_string());
                }
            }
        }
        Scan { results }
    }

    pub fn count(&self, result: &str) -> usize {
        self.results.values().filter(|r| *r == result).count()
    }

    pub fn failed(&self) -> Vec<&str> {
        self.results
            .iter()
            .filter(|(_, r)| *r == "fail")
            .map(|(id, _)| id.as_str())
            .collect()
    }

    /// Rules that passed or failed: the ones the score is made of.
    pub fn decided(&self) -> usize {
        self.count("pass") + self.count("fail")
    }

    /// Share of decided rules that pass, in percent.
    pub fn score(&self) -> f64 {
        match self.decided() {
            0 => 0.0,
            decided => 100.0 * self.count("pass") as f64 / decided as f64,
        }
    }

    /// One line of the summary table.
    pub fn summary(&self, title: &str, label: &str) -> String {
        format!(
            "{title:<20} {label:<14} score {:5.1} %  pass {:3}  fail {:3}  not applicable {:3}  other {:3}\n",
            self.score(),
            self.count("pass"),
            self.count("fail"),
            self.count("notapplicable"),
            self.results.len() - self.decided() - self.count("notapplicable"),
        )
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ExceptionsFile {
    exception: Vec<Exception>,
}

/// A rule that may fail, and why.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exception {
    pub rule: String,
    pub reason: String,
    /// `"chroot"`: the rule needs a running system, so only the chroot scan may fail it; the
    /// booted scan must pass it.
    #[serde(default)]
    pub only_in: Option<String>,
}

impl Exception {
    /// Whether this exception covers a failure in a scan of `kind`.
    pub fn covers(&self, kind: Kind) -> bool {
        self.only_in
            .as_deref()
            .is_none_or(|only| only == kind.name())
    }
}

/// The documented exceptions, by rule id; a reason must say something, a rule appears once.
pub fn exceptions() -> BTreeMap<String, Exception> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/hardening/cis-exceptions.toml");
    let text = fs::read_to_string(&path).unwrap();
    let parsed: ExceptionsFile =
        toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut map = BTreeMap::new();
    for exception in parsed.exception {
        assert!(
            exception.reason.trim().len() >= 20,
            "{}: exception {} needs a real reason",
            path.display(),
            exception.rule
        );
        assert!(
            matches!(exception.only_in.as_deref(), None | Some("chroot")),
            "{}: exception {}: only_in must be \"chroot\" (or left out)",
            path.display(),
            exception.rule
        );
        let rule = exception.rule.clone();
        assert!(
            map.insert(rule.clone(), exception).is_none(),
            "{}: {rule} is listed twice",
            path.display()
        );
    }
    map
}

/// Failing rules of a `kind` scan that no exception covers, as `title: rule` lines.
pub fn unexcepted(
    title: &str,
    scan: &Scan,
    kind: Kind,
    allowed: &BTreeMap<String, Exception>,
) -> Vec<String> {
    scan.failed()
        .into_iter()
        .filter(|rule| !allowed.get(*rule).is_some_and(|e| e.covers(kind)))
        .map(|rule| format!("{title}: {rule}"))
        .collect()
}

/// The Lynis hardening index in a report file's text.
pub fn lynis_index(report: &str) -> u32 {
    report
        .lines()
        .find_map(|l| l.strip_prefix("hardening_index="))
        .and_then(|v| v.trim().parse().ok())
        .expect("a hardening_index in the Lynis report")
}

/// What an XCCDF profile of the datastream selects and refines.
pub struct Selection {
    pub rules: std::collections::BTreeSet<String>,
    /// value id -> selector
    pub values: BTreeMap<String, String>,
}

/// The value of attribute `name` in one XML start tag.
fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let start = tag.find(&format!(" {name}=\""))? + name.len() + 3;
    let end = tag[start..].find('"')? + start;
    Some(&tag[start..end])
}

/// Start tags named `element` (with its namespace prefix) in `text`.
fn tags<'a>(text: &'a str, element: &str) -> Vec<&'a str> {
    let open = format!("<{element} ");
    text.match_indices(open.as_str())
        .filter_map(|(at, _)| text[at..].find('>').map(|end| &text[at..at + end]))
        .collect()
}

/// The rules `profile` selects and the values it refines, read from the datastream's text.
pub fn selection(datastream: &str, profile: &str) -> Selection {
    let start = datastream
        .find(&format!("<xccdf-1.2:Profile id=\"{profile}\""))
        .unwrap_or_else(|| panic!("no profile {profile} in the datastream"));
    let end = datastream[start..].find("</xccdf-1.2:Profile>").unwrap() + start;
    let body = &datastream[start..end];
    Selection {
        rules: tags(body, "xccdf-1.2:select")
            .into_iter()
            .filter(|t| attribute(t, "selected") == Some("true"))
            .filter_map(|t| attribute(t, "idref").map(str::to_string))
            .collect(),
        values: tags(body, "xccdf-1.2:refine-value")
            .into_iter()
            .filter_map(|t| {
                Some((
                    attribute(t, "idref")?.to_string(),
                    attribute(t, "selector")?.to_string(),
                ))
            })
            .collect(),
    }
}

/// Rules of `narrow` whose checks read a value that `narrow` and `wide` refine differently: the
/// only ones whose result a scan of `wide` cannot give for `narrow`.
pub fn rules_with_other_values(
    datastream: &str,
    narrow: &Selection,
    wide: &Selection,
) -> Vec<String> {
    let differing: std::collections::BTreeSet<&String> = narrow
        .values
        .keys()
        .chain(wide.values.keys())
        .filter(|v| narrow.values.get(*v) != wide.values.get(*v))
        .collect();
    let mut found = Vec::new();
    for (at, _) in datastream.match_indices("<xccdf-1.2:Rule ") {
        let tag_end = datastream[at..].find('>').unwrap() + at;
        let Some(id) = attribute(&datastream[at..tag_end], "id") else {
            continue;
        };
        if !narrow.rules.contains(id) {
            continue;
        }
        let end = datastream[at..].find("</xccdf-1.2:Rule>").unwrap() + at;
        let reads_other = tags(&datastream[at..end], "xccdf-1.2:check-export")
            .into_iter()
            .filter_map(|t| attribute(t, "value-id"))
            .any(|v| differing.contains(&v.to_string()));
        if reads_other {
            found.push(id.to_string());
        }
    }
    found
}
