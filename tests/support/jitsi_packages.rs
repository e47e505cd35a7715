//! Package-shaped `.deb`s of Jitsi Meet, made from Jitsi's own packaging in `../shared/jitsi-packaging/`
//! (two stable releases) with debhelper, the tool Jitsi's own build uses: the real `debian/` folders,
//! maintainer scripts, debconf templates, init script and unit, and every file their `.install` lists,
//! apart from what a source checkout does not hold (the Java jars and the built web bundle). So the
//! packages install, configure and upgrade exactly as Jitsi's do; only the Java services cannot run.
//!
//! Nothing of Jitsi's is copied into this repository: the sources are read from `../shared/` (or
//! `$MEETBOX_JITSI_PACKAGING`), copied into a scratch directory, and built there.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::apt_repo::run;

/// The two stable releases, oldest first.
pub const RELEASES: [&str; 2] = ["10590", "10655"];

/// The packages the image installs (as `jitsi::PACKAGES`), all built here.
pub const TOOLS: &[(&str, &str)] = &[
    ("dh_installdeb", "debhelper"),
    ("po2debconf", "po-debconf"),
    ("dpkg-gencontrol", "dpkg-dev"),
];

/// One source package of Jitsi's: its folder, the version scheme of Jitsi's builds, and what its
/// `debian/rules` does beyond plain debhelper (apart from compiling and copying the jars).
struct Source {
    folder: &'static str,
    name: &'static str,
    version: fn(&str) -> String,
    /// Files `override_dh_install` copies into `debian/tmp` (from, to).
    staged: &'static [(&'static str, &'static str)],
    /// Options of `override_dh_installinit` and `override_dh_installsystemd`.
    installinit: &'static [&'static str],
    installsystemd: &'static [&'static str],
}

const SOURCES: [Source; 3] = [
    Source {
        folder: "jitsi-meet",
        name: "jitsi-meet-web",
        version: |release| format!("1.0.{release}-1"),
        staged: &[],
        installinit: &[],
        installsystemd: &[],
    },
    Source {
        folder: "jicofo",
        name: "jicofo",
        version: |release| format!("1.0-{release}-1"),
        staged: &[("resources/config/jicofo-logrotate.d", "jicofo/jicofo")],
        installinit: &[],
        installsystemd: &[],
    },
    Source {
        folder: "jitsi-videobridge",
        name: "jitsi-videobridge2",
        version: |release| format!("2.3-{release}-1"),
        staged: &[("config/logrotate", "jitsi-videobridge")],
        installinit: &["--noscripts"],
        installsystemd: &["--restart-after-upgrade"],
    },
];

/// Where Jitsi's packaging is: `$MEETBOX_JITSI_PACKAGING`, else `shared/jitsi-packaging` beside
/// the checkout.
pub fn packaging_dir() -> PathBuf {
    std::env::var_os("MEETBOX_JITSI_PACKAGING")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/jitsi-packaging")
        })
}

/// Why the packages cannot be built here, if they cannot.
pub fn missing() -> Option<String> {
    let dir = packaging_dir();
    RELEASES
        .iter()
        .map(|release| dir.join(release))
        .find(|path| !path.is_dir())
        .map(|path| {
            format!(
                "Jitsi's packaging is not at {} (set MEETBOX_JITSI_PACKAGING)",
                path.display()
            )
        })
}

/// Builds every binary package of `release` into `out`; returns the `.deb` files.
pub fn build_release(release: &str, scratch: &Path, out: &Path) -> Vec<PathBuf> {
    fs::create_dir_all(out).unwrap();
    fs::create_dir_all(scratch).unwrap();
    for source in &SOURCES {
        let tree = scratch.join(format!("{release}-{}", source.folder));
        let _ = fs::remove_dir_all(&tree);
        run(Command::new("cp")
            .arg("-r")
            .arg(packaging_dir().join(release).join(source.folder))
            .arg(&tree));
        make_writable_and_executable(&tree);
        prepend_changelog_entry(&tree, source.name, &(source.version)(release));
        build_source(&tree, source, out);
    }
    let mut debs: Vec<PathBuf> = fs::read_dir(out)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "deb"))
        .collect();
    debs.sort();
    debs
}

/// The copy from `shared/` is read-only and lost git's executable bits: give the tree back the
/// modes the repository records for its scripts (`*.sh`).
fn make_writable_and_executable(tree: &Path) {
    run(Command::new("chmod").args(["-R", "u+w"]).arg(tree));
    run(Command::new("find")
        .arg(tree)
        .args(["-name", "*.sh", "-exec", "chmod", "0755", "{}", "+"]));
}

/// What Jitsi's build does with `dch -v`: a changelog entry for the release being built.
fn prepend_changelog_entry(tree: &Path, name: &str, version: &str) {
    let path = tree.join("debian/changelog");
    let old = fs::read_to_string(&path).unwrap();
    let entry = format!(
        "{name} ({version}) unstable; urgency=medium\n\n  * Package-shaped build of Jitsi's packaging for the Meetbox tests (no jars, no web bundle).\n\n -- Meetbox tests <tests@meetbox.invalid>  Sat, 01 Nov 2025 00:00:00 +0000\n\n"
    );
    fs::write(&path, entry + &old).unwrap();
}

/// The debhelper sequence of `dh binary-indep`, with the package's own overrides; the lists of
/// files to install keep only what the source checkout holds.
fn build_source(tree: &Path, source: &Source, out: &Path) {
    let dh = |command: &str, args: &[&str]| {
        run(Command::new(command).args(args).current_dir(tree));
    };
    dh("dh_prep", &[]);
    for (from, to) in source.staged {
        let target = tree.join("debian/tmp").join(to);
        fs::create_dir_all(target.parent().unwrap()).unwrap();
        fs::copy(tree.join(from), target).unwrap();
    }
    keep_present_sources(tree);
    dh("dh_installdirs", &[]);
    dh("dh_install", &[]);
    dh("dh_installdocs", &[]);
    dh("dh_installdebconf", &[]);
    dh("dh_installinit", source.installinit);
    dh("dh_installsystemd", source.installsystemd);
    dh("dh_installlogrotate", &[]);
    dh("dh_compress", &[]);
    dh("dh_fixperms", &[]);
    dh("dh_installdeb", &[]);
    dh("dh_gencontrol", &[]);
    dh("dh_md5sums", &[]);
    dh(
        "dh_builddeb",
        &[&format!("--destdir={}", out.to_str().unwrap())],
    );
}

/// Drops the lines of `debian/*.install` and `debian/*.docs` whose source matches nothing in the
/// checkout (the jars, the web bundle, the top-level README): debhelper would stop on them.
fn keep_present_sources(tree: &Path) {
    let debian = tree.join("debian");
    for entry in fs::read_dir(&debian).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let list = name == "install"
            || name == "docs"
            || name.ends_with(".install")
            || name.ends_with(".docs");
        if !list || !path.is_file() {
            continue;
        }
        let text = fs::read_to_string(&path).unwrap();
        let kept: String = text
            .lines()
            .filter(|line| {
                let source = line.split_whitespace().next();
                source.is_some_and(|pattern| matches_something(tree, pattern))
            })
            .map(|line| format!("{line}\n"))
            .collect();
        fs::write(&path, kept).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
    }
}

/// True when the shell glob `pattern` names a file in the tree or in `debian/tmp`, where
/// dh_install looks.
fn matches_something(tree: &Path, pattern: &str) -> bool {
    ["", "debian/tmp/"].iter().any(|prefix| {
        Command::new("bash")
            .args(["-c", "compgen -G \"$1\" >/dev/null", "-"])
            .arg(format!("{prefix}{pattern}"))
            .current_dir(tree)
            .status()
            .is_ok_and(|status| status.success())
    })
}

/// The `test` profile with Jitsi on, written into `dir`; returns its path.
pub fn profile_with_jitsi(dir: &Path) -> PathBuf {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles/test.toml");
    let text = fs::read_to_string(shipped).unwrap();
    let with_jitsi = text
        .replace("jitsi = false", "jitsi = true")
        .replace("name = \"meetbox-test\"", "name = \"meetbox-test-jitsi\"");
    assert!(
        with_jitsi.contains("jitsi = true") && with_jitsi.contains("meetbox-test-jitsi"),
        "profiles/test.toml changed shape:\n{text}"
    );
    let path = dir.join("test-jitsi.toml");
    fs::write(&path, with_jitsi).unwrap();
    path
}

/// One release's package-shaped debs in a signed repository served on 127.0.0.1, and the
/// `meetbox build` options a user with a mirror passes to install Jitsi from it.
pub struct ServedRelease {
    pub repository: super::apt_repo::LocalRepository,
    pub server: super::apt_repo::Server,
    pub debs: Vec<PathBuf>,
}

impl ServedRelease {
    /// Builds `release` in `work` and serves it until dropped.
    pub fn start(release: &str, work: &Path) -> ServedRelease {
        let debs = build_release(release, &work.join("scratch"), &work.join("debs"));
        let repository = super::apt_repo::LocalRepository::create(work);
        repository.publish(&debs);
        let server = super::apt_repo::Server::start(&repository.root);
        ServedRelease {
            repository,
            server,
            debs,
        }
    }

    /// `--jitsi-repository`, `--jitsi-keyring` and `--jitsi-fingerprint` for `meetbox build`.
    pub fn build_args(&self) -> Vec<String> {
        vec![
            "--jitsi-repository".to_string(),
            self.server.url.clone(),
            "--jitsi-keyring".to_string(),
            self.repository.keyring_file().to_str().unwrap().to_string(),
            "--jitsi-fingerprint".to_string(),
            self.repository.fingerprint.clone(),
        ]
    }
}
