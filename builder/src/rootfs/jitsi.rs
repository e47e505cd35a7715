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
#[path = "jitsi_tests.rs"]
mod tests;
