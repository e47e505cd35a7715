//! Jitsi Meet from Jitsi's own apt repository, installed into the root file system
//! by mmdebstrap customize hooks.
//!
//! Order of the checks, each before anything is installed: the repository's keyring
//! must carry exactly the pinned fingerprint; the repository must answer within a
//! bounded time; then, inside the image, apt verifies the repository's signed
//! `InRelease` with that keyring (`--error-on=any`: a bad signature is an error)
//! before it installs a package. The debconf answers are loaded before the packages
//! are configured, so the install asks nothing.

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use base64::Engine;

use crate::rootfs::keyring;

/// Jitsi's stable repository (flat: one suite directory, no components).
pub const REPOSITORY_URL: &str = "https://download.jitsi.org";
pub const SUITE: &str = "stable/";
/// "Jitsi <dev@jitsi.org>", rsa4096, created 2021-04-15: the key that signs the repository since
/// Jitsi rotated it in April 2021 (the 2016 key `66A9 CD05 ... 2DC1 389C` signs nothing any more).
pub const FINGERPRINT: &str = "FFD6 5A0D A2BE BDEB 73D4  4C8B B4D2 D216 F1FD 7806";
/// Where the checked keyring lives in this checkout.
pub const KEYRING_FILE: &str = "keys/jitsi.gpg";
/// Where Jitsi publishes the key, fetched when no copy is kept (its fingerprint is
/// what is trusted, not the download).
pub const KEY_URL: &str = "https://download.jitsi.org/jitsi-key.gpg.key";
/// The Jitsi Meet packages; prosody comes from the base distribution (0.12 in
/// Debian 12 and Ubuntu 24.04, as jitsi-meet-prosody needs).
pub const PACKAGES: [&str; 6] = [
    "jitsi-videobridge2",
    "jicofo",
    "jitsi-meet-web",
    "jitsi-meet-web-config",
    "jitsi-meet-prosody",
    "jitsi-meet-turnserver",
];
/// The fixed internal XMPP domain (as docker-jitsi-meet does): the public name
/// lives only in nginx, certificates, TURN and the client URLs, set at first boot.
pub const INTERNAL_DOMAIN: &str = meetbox_firstboot::layout::XMPP_DOMAIN;
/// The keyring and the source list in the image.
pub const KEYRING_IN_IMAGE: &str = "/usr/share/keyrings/meetbox-jitsi.gpg";
pub const SOURCES_IN_IMAGE: &str = "/etc/apt/sources.list.d/meetbox-jitsi.list";
/// Bound on the reachability check, so an unreachable repository stops the build
/// well within a minute.
pub const REACHABILITY_TIMEOUT: Duration = Duration::from_secs(30);

/// Where Jitsi's packages come from, as `meetbox build` was told: Jitsi's own repository by
/// default, or a mirror (its URL, and for a mirror that signs with its own key, that key and its
/// fingerprint).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Source {
    /// Jitsi's archive key (default: builder/keys/jitsi.gpg); must match the pinned fingerprint.
    #[arg(long = "jitsi-keyring", value_name = "FILE")]
    pub keyring: Option<std::path::PathBuf>,
    /// A mirror of Jitsi's repository (flat, with `stable/`), e.g. http://mirror.lan/jitsi; the
    /// box updates from it too.
    #[arg(long = "jitsi-repository", value_name = "URL")]
    pub url: Option<String>,
    /// The fingerprint of a mirror that signs with its own key (given with --jitsi-keyring).
    #[arg(long = "jitsi-fingerprint", value_name = "FPR")]
    pub fingerprint: Option<String>,
}

/// A third-party apt repository and what to install from it.
#[derive(Debug, Clone)]
pub struct Repository {
    /// Base URL, without a trailing slash.
    pub url: String,
    /// Flat-repository suite path, ending in '/'.
    pub suite: String,
    /// The keyring apt verifies the repository with (binary or armoured).
    pub keyring: Vec<u8>,
    /// The only fingerprint the keyring may hold.
    pub fingerprint: String,
    pub packages: Vec<String>,
}

impl Repository {
    /// Jitsi's stable repository, or a mirror of it. The key comes from `source.keyring`, else
    /// from the copy kept in the repository, else from Jitsi's web site; whichever it is,
    /// `prepare` checks it against the pinned fingerprint (or the mirror's, when one is given
    /// with its own key) before anything is installed.
    pub fn jitsi(source: &Source) -> Result<Repository> {
        let keyring = source.keyring.as_deref();
        if source.fingerprint.is_some() && keyring.is_none() {
            bail!(
                "--jitsi-fingerprint names the key of a re-signed mirror: pass that key with \
                 --jitsi-keyring FILE too (the kept key is Jitsi's own, {FINGERPRINT})"
            );
        }
        let kept = Path::new(env!("CARGO_MANIFEST_DIR")).join(KEYRING_FILE);
        let armoured_or_binary = match keyring {
            Some(path) => std::fs::read(path)
                .with_context(|| format!("cannot read Jitsi's archive key {}", path.display()))?,
            None if kept.is_file() => {
                std::fs::read(&kept).with_context(|| format!("cannot read {}", kept.display()))?
            }
            None => download_key(KEY_URL, REACHABILITY_TIMEOUT)?,
        };
        let keyring = crate::rootfs::keyring::dearmor(&armoured_or_binary)?;
        Ok(Repository {
            url: source
                .url
                .as_deref()
                .unwrap_or(REPOSITORY_URL)
                .trim_end_matches('/')
                .to_owned(),
            suite: SUITE.to_owned(),
            keyring,
            fingerprint: source
                .fingerprint
                .clone()
                .unwrap_or_else(|| FINGERPRINT.to_owned()),
            packages: PACKAGES.iter().map(|p| p.to_string()).collect(),
        })
    }

    /// The apt source line as the image keeps it.
    pub fn source_line(&self) -> String {
        format!(
            "deb [signed-by={KEYRING_IN_IMAGE}] {} {}",
            self.url, self.suite
        )
    }

    /// The file a reachability check asks for.
    pub fn release_url(&self) -> String {
        format!("{}/{}Release", self.url, self.suite)
    }

    /// Rejects values that would break the source line or the hook scripts.
    fn validate(&self) -> Result<()> {
        let plain = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || ":/.-_~%".contains(c))
        };
        ensure!(
            plain(&self.url)
                && (self.url.starts_with("https://") || self.url.starts_with("http://")),
            "repository URL {:?} must be an http(s) URL without spaces or quotes",
            self.url
        );
        ensure!(
            plain(&self.suite) && self.suite.ends_with('/'),
            "repository suite {:?} must be a flat-repository path ending in '/'",
            self.suite
        );
        for package in &self.packages {
            ensure!(
                !package.is_empty()
                    && package
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c)),
                "{package:?} is not a Debian package name"
            );
        }
        Ok(())
    }
}

/// What the root file system step adds to its mmdebstrap run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsInputs {
    /// `--customize-hook` scripts (run with the root as `$1`), in order; they must
    /// run before any hook that removes apt's package lists.
    pub customize_hooks: Vec<String>,
    /// The unattended-upgrades origin pattern that selects this repository's packages.
    pub upgrade_origin: String,
}

/// Checks the keyring against its pin and the repository's reachability, then
/// returns the hooks that install the packages. Fails before anything is built
/// or installed when either check fails.
pub fn prepare(repository: &Repository, domain: &str, timeout: Duration) -> Result<RootfsInputs> {
    repository.validate()?;
    check_keyring(repository)?;
    check_reachable(&repository.release_url(), timeout)?;
    let release = fetch_text(&repository.release_url(), timeout)?;
    Ok(RootfsInputs {
        upgrade_origin: upgrade_origin(&release, &repository.url),
        customize_hooks: vec![
            source_hook(repository),
            preseed_hook(domain)?,
            install_hook(repository),
            SCRUB_HOOK.to_string(),
        ],
    })
}

/// Fails unless the keyring holds exactly the pinned key.
fn check_keyring(repository: &Repository) -> Result<()> {
    let found = keyring::fingerprints(&repository.keyring).with_context(|| {
        format!(
            "the keyring for {} is not an OpenPGP keyring",
            repository.url
        )
    })?;
    let pinned = keyring::normalize(&repository.fingerprint);
    if found != std::slice::from_ref(&pinned) {
        bail!(
            "the keyring for {} does not match the pinned fingerprint\n  pinned: {pinned}\n  found:  {}\n\
             Nothing was installed. Restore the keyring from the Meetbox repository (builder/{KEYRING_FILE}), \
             or change the pin only after checking the new key with its publisher.",
            repository.url,
            if found.is_empty() { "no key".to_string() } else { found.join(", ") }
        );
    }
    Ok(())
}

/// A bounded HEAD request for `url`: an unreachable repository stops the build
/// with a clear message instead of hanging inside apt.
pub fn check_reachable(url: &str, timeout: Duration) -> Result<()> {
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .build()
        .new_agent();
    match agent.head(url).call() {
        Ok(_) => Ok(()),
        Err(error) => bail!(
            "the apt repository cannot be reached: HEAD {url} failed ({error}) within {} s. \
             The build needs it to install Jitsi Meet: check the network, DNS or proxy \
             (https_proxy), or build a profile without Jitsi.",
            timeout.as_secs()
        ),
    }
}

/// The unattended-upgrades pattern for a repository: its signed `Release` file's `Origin` and
/// `Label`, which a mirror keeps as they are (so the box upgrades from Jitsi's repository and from
/// any mirror of it alike), or the repository's host when the file names no origin.
pub fn upgrade_origin(release: &str, url: &str) -> String {
    let field = |name: &str| {
        release
            .lines()
            .take_while(|line| !line.is_empty())
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
            .filter(|value| {
                !value.is_empty()
                    && value
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || " ._-+".contains(c))
            })
    };
    match (field("Origin"), field("Label")) {
        (Some(origin), Some(label)) => format!("origin={origin},label={label}"),
        (Some(origin), None) => format!("origin={origin}"),
        _ => {
            let host = url.split("://").nth(1).unwrap_or(url);
            let host = host.split('/').next().unwrap_or(host);
            format!("site={}", host.split(':').next().unwrap_or(host))
        }
    }
}

/// A small text file over HTTP within `timeout`.
fn fetch_text(url: &str, timeout: Duration) -> Result<String> {
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .build()
        .new_agent();
    let mut response = agent
        .get(url)
        .call()
        .with_context(|| format!("cannot fetch {url}"))?;
    let body = response
        .body_mut()
        .with_config()
        .limit(4 << 20)
        .read_to_vec()
        .with_context(|| format!("cannot read {url}"))?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Fetches the archive key within `timeout`, saying plainly when it cannot.
fn download_key(url: &str, timeout: Duration) -> Result<Vec<u8>> {
    crate::host::progress::detail(format!(
        "no copy of Jitsi's key in the repository: fetching {url} (checked against the pinned fingerprint)"
    ));
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .build()
        .new_agent();
    let mut response = agent.get(url).call().map_err(|error| {
        anyhow::anyhow!(
            "cannot fetch Jitsi's archive key from {url} ({error}) within {} s: check the \
             network, or save the key to builder/{KEYRING_FILE} or pass --jitsi-keyring FILE, \
             or build a profile without Jitsi (--profile test)",
            timeout.as_secs()
        )
    })?;
    response
        .body_mut()
        .with_config()
        .limit(1 << 20)
        .read_to_vec()
        .with_context(|| format!("cannot read the key from {url}"))
}

/// Installs the keyring and the source line into the image.
fn source_hook(repository: &Repository) -> String {
    let keyring = base64::engine::general_purpose::STANDARD.encode(&repository.keyring);
    let wrapped: Vec<&str> = keyring
        .as_bytes()
        .chunks(76)
        .map(|chunk| std::str::from_utf8(chunk).unwrap_or_default())
        .collect();
    format!(
        "set -e\n\
         install -d -m 0755 \"$1/usr/share/keyrings\" \"$1/etc/apt/sources.list.d\"\n\
         base64 -d > \"$1{KEYRING_IN_IMAGE}\" <<'KEYRING'\n{}\nKEYRING\n\
         chmod 0644 \"$1{KEYRING_IN_IMAGE}\"\n\
         printf '%s\\n' '{}' > \"$1{SOURCES_IN_IMAGE}\"\n",
        wrapped.join("\n"),
        repository.source_line()
    )
}

/// Secrets the preseed carries, as text to put in the selections.
pub struct Secrets<'a> {
    pub videobridge: &'a str,
    pub jicofo: &'a str,
    pub turn: &'a str,
}

/// The debconf selections for a non-interactive install: the internal domain, a
/// self-signed certificate (the first-boot agent replaces it), no JaaS, no e-mail.
pub fn preseed(domain: &str, secrets: &Secrets) -> String {
    format!(
        "jitsi-videobridge2 jitsi-videobridge/jvb-hostname string {domain}\n\
         jitsi-videobridge2 jitsi-videobridge/jvbsecret password {}\n\
         jicofo jicofo/jicofo-authpassword password {}\n\
         jitsi-meet-prosody jitsi-meet-prosody/turn-secret password {}\n\
         jitsi-meet-web-config jitsi-meet/cert-choice select Generate a new self-signed certificate\n\
         jitsi-meet-web-config jitsi-meet/jaas-choice boolean false\n\
         jitsi-meet-web-config jitsi-meet/email string\n",
        secrets.videobridge, secrets.jicofo, secrets.turn
    )
}

/// Loads the preseed into the image's debconf database. The secrets are drawn
/// when the hook runs (256 bits each) and never touch a file or the build log:
/// they are build-time placeholders, and the first-boot agent replaces them with
/// per-device ones, as it does every per-device value.
fn preseed_hook(domain: &str) -> Result<String> {
    ensure!(
        !domain.is_empty()
            && domain
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".-".contains(c)),
        "internal domain {domain:?} must be lower-case letters, digits, '.' and '-'"
    );
    let generated = "$(meetbox_secret)";
    let selections = preseed(
        domain,
        &Secrets {
            videobridge: generated,
            jicofo: generated,
            turn: generated,
        },
    );
    Ok(format!(
        "set -e\n\
         meetbox_secret() {{ head -c 32 /dev/urandom | od -An -vtx1 | tr -d ' \\n'; }}\n\
         chroot \"$1\" debconf-set-selections <<SELECTIONS\n{selections}SELECTIONS\n"
    ))
}

/// Reads the repository's index (only its own: the base distribution's lists are
/// already there) and installs the packages. `--error-on=any` turns a signature
/// failure into an error, so nothing is installed from an unverified index.
///
/// Java comes from the distribution: the packages accept OpenJDK 11 or 17 and apt would take the
/// first, so 17 (what Jitsi's handbook names) is asked for by name. OpenJDK's postinst registers
/// its manual page with update-alternatives, which fails where the image keeps no manual pages;
/// an empty `man1` directory lets it.
fn install_hook(repository: &Repository) -> String {
    format!(
        "set -e\n\
         chroot \"$1\" apt-get update --error-on=any \
         -o Dir::Etc::SourceList={SOURCES_IN_IMAGE} -o Dir::Etc::SourceParts=- -o APT::Get::List-Cleanup=0\n\
         mkdir -p \"$1/usr/share/man/man1\"\n\
         chroot \"$1\" env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {JAVA} {}\n",
        repository.packages.join(" ")
    )
}

/// The Java runtime Jitsi's services run on.
pub const JAVA: &str = "openjdk-17-jre-headless";

/// What Jitsi's maintainer scripts made at install that would be the same on every box made from
/// the image, removed before it is packed (docs/jitsi.md). The first-boot agent makes each box's
/// own: prosody's certificates for the internal hosts (jitsi-meet-prosody also added the auth
/// host's to the system's CA store), the web server's certificate for the internal name and the
/// site that would serve it as nginx's default server (jitsi-meet-web-config), the service
/// accounts with the build's passwords, and those passwords in debconf's database.
pub const SCRUB_HOOK: &str = r#"set -e
root="$1"
for host in meet.jitsi auth.meet.jitsi; do
    rm -f "$root/var/lib/prosody/$host.key" "$root/var/lib/prosody/$host.crt" "$root/var/lib/prosody/$host.cnf"
    rm -f "$root/etc/prosody/certs/$host.key" "$root/etc/prosody/certs/$host.crt"
done
if [ -e "$root/usr/local/share/ca-certificates/auth.meet.jitsi.crt" ] || [ -L "$root/usr/local/share/ca-certificates/auth.meet.jitsi.crt" ]; then
    rm -f "$root/usr/local/share/ca-certificates/auth.meet.jitsi.crt"
    chroot "$root" update-ca-certificates --fresh >/dev/null
fi
rm -f "$root/etc/jitsi/meet/meet.jitsi.key" "$root/etc/jitsi/meet/meet.jitsi.crt" "$root/etc/nginx/sites-enabled/meet.jitsi.conf"
rm -f "$root"/var/lib/prosody/auth%2emeet%2ejitsi/accounts/*.dat
chroot "$root" debconf-set-selections <<'SELECTIONS'
jitsi-videobridge2 jitsi-videobridge/jvbsecret password
jicofo jicofo/jicofo-authpassword password
jitsi-meet-prosody jitsi-meet-prosody/turn-secret password
SELECTIONS
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;
    use std::time::Instant;

    fn repository(url: &str) -> Repository {
        Repository {
            url: url.to_owned(),
            suite: SUITE.to_owned(),
            keyring: Vec::new(),
            fingerprint: FINGERPRINT.to_owned(),
            packages: PACKAGES.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn preseed_answers_every_question_without_weak_secrets() {
        let text = preseed(
            INTERNAL_DOMAIN,
            &Secrets {
                videobridge: "a".repeat(64).as_str(),
                jicofo: "b",
                turn: "c",
            },
        );
        assert!(
            text.contains("jitsi-videobridge/jvb-hostname string meet.jitsi\n"),
            "{text}"
        );
        assert!(
            text.contains("jitsi-meet/cert-choice select Generate a new self-signed certificate\n")
        );
        assert!(text.contains("jitsi-meet/jaas-choice boolean false\n"));
        assert!(text.contains("jitsi-meet/email string\n"));
        assert!(text.contains(&format!(
            "jitsi-videobridge/jvbsecret password {}\n",
            "a".repeat(64)
        )));
        // Every line parses as debconf-set-selections input: owner, question, type[, value].
        for line in text.lines() {
            assert!(line.split_whitespace().count() >= 3, "{line}");
        }
    }

    #[test]
    fn preseed_hook_draws_secrets_at_build_time_and_holds_none() {
        let hook = preseed_hook(INTERNAL_DOMAIN).unwrap();
        assert_eq!(hook.matches("$(meetbox_secret)").count(), 3, "{hook}");
        // The hook is the same on every call: it can enter a cache key.
        assert_eq!(hook, preseed_hook(INTERNAL_DOMAIN).unwrap());
        assert!(preseed_hook("meet.jitsi; rm -rf /").is_err());
    }

    #[test]
    fn the_generated_secret_is_long_and_random() {
        let script =
            "meetbox_secret() { head -c 32 /dev/urandom | od -An -vtx1 | tr -d ' \\n'; }\n\
                      meetbox_secret; echo; meetbox_secret";
        assert!(preseed_hook(INTERNAL_DOMAIN)
            .unwrap()
            .contains(script.lines().next().unwrap()));
        let output = std::process::Command::new("sh")
            .args(["-c", script])
            .output()
            .unwrap();
        let text = String::from_utf8(output.stdout).unwrap();
        let secrets: Vec<&str> = text.lines().collect();
        assert_eq!(secrets.len(), 2);
        for secret in &secrets {
            assert_eq!(secret.len(), 64, "{secret}");
            assert!(secret.chars().all(|c| c.is_ascii_hexdigit()));
        }
        assert_ne!(secrets[0], secrets[1]);
    }

    #[test]
    fn source_line_and_release_url_follow_the_flat_layout() {
        let jitsi = repository(REPOSITORY_URL);
        assert_eq!(
            jitsi.source_line(),
            "deb [signed-by=/usr/share/keyrings/meetbox-jitsi.gpg] https://download.jitsi.org stable/"
        );
        assert_eq!(
            jitsi.release_url(),
            "https://download.jitsi.org/stable/Release"
        );
        assert!(repository("https://example.invalid/a b")
            .validate()
            .is_err());
        assert!(repository("ftp://example.invalid").validate().is_err());
    }

    #[test]
    fn the_kept_jitsi_keyring_matches_its_pin() {
        let kept = Path::new(env!("CARGO_MANIFEST_DIR")).join(KEYRING_FILE);
        if !kept.is_file() {
            // Builds then fetch the key and check the same pin (see `download_key`).
            eprintln!("skipping: no copy of Jitsi's key at {}", kept.display());
            return;
        }
        let repository = Repository::jitsi(&Source::default()).unwrap();
        assert_eq!(repository.url, REPOSITORY_URL);
        check_keyring(&repository).unwrap();
    }

    #[test]
    fn a_given_keyring_is_dearmoured_and_checked_against_the_pin() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wrong.asc");
        let armoured = format!(
            "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\n{}\n-----END PGP PUBLIC KEY BLOCK-----\n",
            base64::engine::general_purpose::STANDARD
                .encode(include_bytes!("../../keys/ubuntu-archive.gpg"))
        );
        std::fs::write(&path, armoured).unwrap();
        let repository = Repository::jitsi(&Source {
            keyring: Some(path),
            ..Source::default()
        })
        .unwrap();
        assert_eq!(
            repository.keyring,
            include_bytes!("../../keys/ubuntu-archive.gpg")
        );
        // The message names the pinned key and the one found.
        let error = format!("{:#}", check_keyring(&repository).unwrap_err());
        assert!(
            error.contains("pinned: FFD65A0DA2BEBDEB73D44C8BB4D2D216F1FD7806")
                && error.contains("found:  F6ECB3762474EDA9D21B7022871920D1991BC93C"),
            "{error}"
        );
    }

    #[test]
    fn upgrades_follow_the_repository_s_own_origin_or_its_host() {
        let release = "Origin: Jitsi\nLabel: Jitsi Meet\nSuite: stable\n\nMD5Sum:\n Origin: x\n";
        assert_eq!(
            upgrade_origin(release, "http://mirror.lan/jitsi"),
            "origin=Jitsi,label=Jitsi Meet"
        );
        assert_eq!(
            upgrade_origin("Origin: Jitsi\nDate: x\n", "http://a"),
            "origin=Jitsi"
        );
        // No origin, or one that would break the pattern: the host.
        assert_eq!(
            upgrade_origin("Date: x\n", "https://download.jitsi.org"),
            "site=download.jitsi.org"
        );
        assert_eq!(
            upgrade_origin("Origin: a,b\n", "http://127.0.0.1:8080/x"),
            "site=127.0.0.1"
        );
    }

    #[test]
    fn a_mirror_keeps_the_pin_unless_it_brings_its_own_key() {
        let mirror = Repository::jitsi(&Source {
            url: Some("http://mirror.lan/jitsi/".into()),
            ..Source::default()
        })
        .unwrap();
        assert_eq!(mirror.url, "http://mirror.lan/jitsi");
        assert_eq!(mirror.fingerprint, FINGERPRINT);
        assert_eq!(
            mirror.source_line(),
            "deb [signed-by=/usr/share/keyrings/meetbox-jitsi.gpg] http://mirror.lan/jitsi stable/"
        );
        let error = Repository::jitsi(&Source {
            fingerprint: Some("AAAA".into()),
            ..Source::default()
        })
        .unwrap_err()
        .to_string();
        assert!(error.contains("--jitsi-keyring"), "{error}");
    }

    #[test]
    fn a_silent_server_is_given_up_on_within_the_bound() {
        // Accepts the connection, never answers.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/stable/Release", listener.local_addr().unwrap());
        let holder = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buffer = [0; 1024];
            let _ = stream.read(&mut buffer);
            std::thread::sleep(Duration::from_secs(4));
        });
        let started = Instant::now();
        let error = check_reachable(&url, Duration::from_secs(2))
            .unwrap_err()
            .to_string();
        let elapsed = started.elapsed();
        assert!(elapsed < Duration::from_secs(4), "took {elapsed:?}");
        assert!(
            error.contains("cannot be reached") && error.contains(&url),
            "{error}"
        );
        holder.join().unwrap();
    }

    #[test]
    fn an_unresolvable_repository_stops_the_build_quickly() {
        let started = Instant::now();
        let mut jitsi = repository("https://download.jitsi.invalid");
        jitsi.keyring = b"not a keyring".to_vec();
        // The keyring is checked first.
        let error = format!(
            "{:#}",
            prepare(&jitsi, INTERNAL_DOMAIN, Duration::from_secs(5)).unwrap_err()
        );
        assert!(error.contains("not an OpenPGP keyring"), "{error}");
        let error = check_reachable(&jitsi.release_url(), REACHABILITY_TIMEOUT)
            .unwrap_err()
            .to_string();
        assert!(error.contains("cannot be reached"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(60));
    }
}
