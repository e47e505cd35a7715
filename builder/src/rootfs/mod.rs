//! The root file system: built once by mmdebstrap from a recipe, cached as a
//! tarball under a key derived from everything that shapes it, and unpacked
//! fresh for every image assembly.

pub mod firmware;
pub mod jitsi;
pub mod keyring;
pub mod modules;

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::artifact::manifest::Package;
use crate::host::command::CommandRunExt;
use crate::host::progress;
use crate::profile::{Base, Profile};

/// Bumped whenever the recipe below changes in a way the cache key cannot see.
const RECIPE_VERSION: u32 = 1;

/// Packages every Meetbox image needs: boot chain, init, network, growing root.
fn base_packages(base: Base) -> Vec<&'static str> {
    let mut packages = vec![
        // Ubuntu's minbase leaves apt out (its priority there is "important", not "required"):
        // without it nothing installs Jitsi, and no security update ever runs.
        "apt",
        "initramfs-tools",
        "systemd-sysv",
        "udev",
        "shim-signed",
        "grub-efi-amd64-signed",
        "e2fsprogs",
        "dosfstools",
        "ca-certificates",
        "iproute2",
        "kmod",
        "systemd-resolved",
        "nftables",
        // nginx's stream module: port 443 carries the web and TURN over TLS (the on-box crate's
        // render/multiplex.rs); it pulls in nginx itself.
        "libnginx-mod-stream",
        // Hardening (docs/hardening.md): mandatory access control, password rules should a
        // password ever be set (tree/logins.rs), and security updates.
        "apparmor",
        "libpam-pwquality",
        "apparmor-utils",
        "unattended-upgrades",
        // The audit trail, private and in memory (tree/audit.rs).
        "auditd",
        // File integrity: the database is made on the box after setup (tree/integrity.rs).
        "aide",
        // TLS, ACME and TURN credentials need the right time.
        "systemd-timesyncd",
    ];
    packages.extend(base.distro().packages);
    packages
}

/// Everything that shapes the cached root file system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Recipe {
    pub base: Base,
    pub mirror: Option<String>,
    pub components: Vec<String>,
    /// Sorted, without duplicates.
    pub packages: Vec<String>,
    /// Shell run by mmdebstrap with the root as `$1` after the essential packages, before the
    /// rest (the kernel among them) is installed.
    pub essential_hooks: Vec<String>,
    /// Shell run by mmdebstrap after installation with the root as `$1`.
    pub customize_hooks: Vec<String>,
    /// dpkg path filters: only the hardware profile's firmware (firmware.rs), and no kernel
    /// modules that no box loads (modules.rs).
    pub path_filters: Vec<String>,
}

/// Strips what must differ on every device, and what must not be in an image.
const CLEANUP_HOOK: &str = r#"set -e
root="$1"
rm -f "$root"/etc/ssh/ssh_host_*
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id" "$root/var/lib/systemd/random-seed"
rm -f "$root"/var/log/*.log "$root"/var/log/apt/* "$root"/var/cache/debconf/*-old
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin
chroot "$root" passwd --lock root >/dev/null
echo meetbox > "$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 meetbox\n::1 localhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
"#;

/// The initramfs's live-stick script and its hook, from the overlay (the tree step copies the same
/// files again, so the root holds what its initramfs was made from).
const LIVE_STICK_FILES: [(&str, &str); 2] = [
    (
        "etc/initramfs-tools/scripts/local-bottom/meetbox-live-stick",
        include_str!(
            "../../../overlay/etc/initramfs-tools/scripts/local-bottom/meetbox-live-stick"
        ),
    ),
    (
        "etc/initramfs-tools/hooks/meetbox-live-stick",
        include_str!("../../../overlay/etc/initramfs-tools/hooks/meetbox-live-stick"),
    ),
];

/// Puts the live-stick script where initramfs-tools finds it: a stick that boots a computer with an
/// internal disk stays read-only and offers to install (docs/guide.md). It runs before the kernel
/// is installed (an mmdebstrap essential hook), so the kernel's own initramfs, made once, has it;
/// its text is part of the recipe, so a change to the script rebuilds the cached root.
fn live_stick_hook() -> String {
    let mut hook = String::from("set -e\nroot=\"$1\"\n");
    for (path, text) in LIVE_STICK_FILES {
        hook.push_str(&format!(
            "mkdir -p \"$root/{dir}\"\ncat > \"$root/{path}\" <<'MEETBOX_LIVE_STICK'\n{text}MEETBOX_LIVE_STICK\nchmod 0755 \"$root/{path}\"\n",
            dir = path.rsplit_once('/').map_or("", |(dir, _)| dir),
        ));
    }
    hook
}

impl Recipe {
    pub fn for_profile(profile: &Profile) -> Recipe {
        let distro = profile.base.distro();
        let firmware = profile
            .hardware
            .firmware
            .for_distribution(distro.efi_vendor)
            .expect("every base's vendor names a firmware list (distro tests)");
        let mut packages: Vec<String> = base_packages(profile.base)
            .into_iter()
            .map(str::to_string)
            .chain(profile.packages.iter().cloned())
            .chain(firmware.iter().cloned())
            .collect();
        if profile.services.ssh {
            packages.push("openssh-server".to_string());
        }
        packages.sort();
        packages.dedup();
        let components = distro.components;
        Recipe {
            base: profile.base,
            mirror: profile.mirror.clone(),
            components: components.iter().map(|c| c.to_string()).collect(),
            packages,
            essential_hooks: vec![live_stick_hook()],
            customize_hooks: vec![
                crate::tree::hardening::BUILD_HOOK.to_string(),
                crate::tree::logins::hook(),
                CLEANUP_HOOK.to_string(),
            ],
            path_filters: firmware::dpkg_filters(profile.base, &profile.hardware.firmware.files)
                .into_iter()
                .chain(modules::dpkg_filters())
                .collect(),
        }
    }

    /// Apt sources for a profile's own mirror: release, -updates and -security
    /// pockets. Without a mirror, mmdebstrap's defaults for the suite already
    /// include all three.
    pub fn sources(&self) -> Vec<String> {
        let Some(mirror) = &self.mirror else {
            return Vec::new();
        };
        let mirror = mirror.trim_end_matches('/');
        let suite = self.base.suite();
        let components = self.components.join(" ");
        let security = (self.base.distro().security_mirror)(mirror);
        vec![
            format!("deb {mirror} {suite} {components}"),
            format!("deb {mirror} {suite}-updates {components}"),
            format!("deb {security} {suite}-security {components}"),
        ]
    }

    /// The cache key: SHA-256 over the recipe, the pinned keyring and the mmdebstrap version.
    pub fn cache_key(&self, mmdebstrap_version: &str) -> String {
        let mut hasher = Sha256::new();
        hasher.update(format!("recipe-version {RECIPE_VERSION}\n"));
        hasher.update(serde_json::to_vec(self).expect("recipe serializes"));
        hasher.update(self.base.distro().keyring);
        hasher.update(mmdebstrap_version.as_bytes());
        hex::encode(hasher.finalize())
    }

    /// The mmdebstrap command line (without the program name).
    pub fn mmdebstrap_args(&self, keyring: &Path, output: &Path) -> Vec<String> {
        let mut args = vec![
            "--mode=root".to_string(),
            "--variant=minbase".to_string(),
            "--format=tar".to_string(),
            format!("--components={}", self.components.join(",")),
            format!("--keyring={}", keyring.display()),
            format!("--include={}", self.packages.join(",")),
            "--aptopt=Acquire::Retries \"3\"".to_string(),
            // Documentation and manuals are dead weight on an appliance;
            // copyright files stay for the licences.
            "--dpkgopt=path-exclude=/usr/share/man/*".to_string(),
            "--dpkgopt=path-exclude=/usr/share/doc/*".to_string(),
            "--dpkgopt=path-include=/usr/share/doc/*/copyright".to_string(),
            "--dpkgopt=path-exclude=/usr/share/info/*".to_string(),
        ];
        args.extend(self.path_filters.iter().map(|f| format!("--dpkgopt={f}")));
        args.extend(
            self.essential_hooks
                .iter()
                .map(|hook| format!("--essential-hook={hook}")),
        );
        args.extend(customize_hook_args(&self.customize_hooks));
        args.push(self.base.suite().to_string());
        args.push(output.display().to_string());
        args.extend(self.sources());
        args
    }
}

/// `hooks` as mmdebstrap options, in order (each runs with the root as `$1`).
pub fn customize_hook_args(hooks: &[String]) -> Vec<String> {
    hooks
        .iter()
        .map(|hook| format!("--customize-hook={hook}"))
        .collect()
}

/// A root file system tarball in the cache.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CachedRootfs {
    pub tarball: PathBuf,
    pub key: String,
    /// SOURCE_DATE_EPOCH of the build: every timestamp in the image is clamped to it.
    pub epoch: u64,
}

/// The metadata stored beside a cached tarball.
#[derive(Debug, Serialize, Deserialize)]
struct CacheMeta {
    key: String,
    epoch: u64,
    recipe: serde_json::Value,
}

/// Where root file systems are cached when no `--cache-dir` is given.
pub fn default_cache_dir() -> PathBuf {
    std::env::var_os("MEETBOX_CACHE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/meetbox"))
}

/// The file name of the archive keyring handed to mmdebstrap.
const KEYRING_NAME: &str = "archive-keyring.gpg";

/// The base's archive keyring in a temporary directory, checked against its pinned fingerprints.
fn pinned_keyring(base: Base) -> Result<tempfile::TempDir> {
    let keys = base.distro();
    // apt checks signatures as its unprivileged `_apt` user: the keyring must be
    // readable by it even when the cache directory is private.
    let keyring_dir = tempfile::Builder::new()
        .prefix("meetbox-keyring-")
        .tempdir()
        .context("cannot create a temporary directory for the archive keyring")?;
    fs::set_permissions(keyring_dir.path(), fs::Permissions::from_mode(0o755))?;
    let keyring_path = keyring_dir.path().join(KEYRING_NAME);
    fs::write(&keyring_path, keys.keyring)
        .with_context(|| format!("cannot write {}", keyring_path.display()))?;
    fs::set_permissions(&keyring_path, fs::Permissions::from_mode(0o644))?;
    keyring::check_pinned(&keyring_path, keys.fingerprints)?;
    progress::detail(format!(
        "archive key pinned: {}",
        keys.fingerprints
            .iter()
            .map(|f| keyring::normalize(f))
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(keyring_dir)
}

/// Returns the cached root file system for `recipe`, running mmdebstrap only
/// when no tarball exists for its key.
pub fn ensure_cached(recipe: &Recipe, cache_dir: &Path) -> Result<CachedRootfs> {
    let version = mmdebstrap_version()?;
    let key = recipe.cache_key(&version);
    let dir = cache_dir.join("rootfs").join(&key);
    let tarball = dir.join("rootfs.tar");
    let meta_path = dir.join("meta.json");
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Another build with the same cache may be making this very entry: wait for it, then use it.
    let _entry = crate::host::lock::exclusive(
        &dir.join("lock"),
        "building this root file system into the same cache",
    )?;
    if let Ok(text) = fs::read_to_string(&meta_path) {
        let meta: CacheMeta = serde_json::from_str(&text)
            .with_context(|| format!("corrupt cache metadata {}", meta_path.display()))?;
        if tarball.is_file() && meta.key == key {
            progress::step(format!(
                "Root file system: cached ({}), mmdebstrap not needed",
                &key[..16]
            ));
            return Ok(CachedRootfs {
                tarball,
                key,
                epoch: meta.epoch,
            });
        }
    }

    progress::step(format!(
        "Root file system: mmdebstrap {} ({} packages, cache key {})",
        recipe.base.suite(),
        recipe.packages.len(),
        &key[..16]
    ));
    let keyring_dir = pinned_keyring(recipe.base)?;
    let keyring_path = keyring_dir.path().join(KEYRING_NAME);

    let epoch = source_date_epoch()?;
    let partial = dir.join("rootfs.tar.partial");
    let args = recipe.mmdebstrap_args(&keyring_path, &partial);
    let started = std::time::Instant::now();
    let built = Command::new("mmdebstrap")
        .args(&args)
        .env("SOURCE_DATE_EPOCH", epoch.to_string())
        .stdin(std::process::Stdio::null())
        .run_inherited();
    if let Err(err) = built {
        let _ = fs::remove_file(&partial);
        return Err(err.context(format!(
            "mmdebstrap did not build the root file system; its messages above name the cause \
             (an unreachable mirror, a package name that does not exist in {}, or a signature error)",
            recipe.base.suite()
        )));
    }
    fs::rename(&partial, &tarball)?;
    let meta = CacheMeta {
        key: key.clone(),
        epoch,
        recipe: serde_json::to_value(recipe)?,
    };
    crate::host::atomic_file::write(
        &meta_path,
        &serde_json::to_vec_pretty(&meta)?,
        crate::host::atomic_file::PUBLIC_MODE,
    )?;
    progress::detail(format!(
        "mmdebstrap took {:.0} s; tarball {}",
        started.elapsed().as_secs_f64(),
        progress::human_bytes(fs::metadata(&tarball)?.len())
    ));
    Ok(CachedRootfs {
        tarball,
        key,
        epoch,
    })
}

/// SOURCE_DATE_EPOCH from the environment, else now.
fn source_date_epoch() -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(value) => value
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH=`{value}` is not a number of seconds")),
        Err(_) => Ok(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs()),
    }
}

fn mmdebstrap_version() -> Result<String> {
    let output = Command::new("mmdebstrap").arg("--version").run_captured()?;
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// Unpacks a root file system tarball into `dest` with owners, modes, extended
/// attributes (file capabilities) and modification times. Device nodes are left
/// out: the booted system mounts devtmpfs on /dev.
pub fn unpack(tarball: &Path, dest: &Path) -> Result<()> {
    let file =
        fs::File::open(tarball).with_context(|| format!("cannot open {}", tarball.display()))?;
    let total = file.metadata()?.len();
    let mut progress = progress::Progress::bytes("unpack", total);
    let reader = CountingReader {
        inner: std::io::BufReader::with_capacity(1 << 20, file),
        progress: &mut progress,
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    for entry in archive
        .entries()
        .context("cannot read the rootfs tarball")?
    {
        let mut entry = entry.context("corrupt rootfs tarball")?;
        let kind = entry.header().entry_type();
        if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
            continue;
        }
        entry
            .unpack_in(dest)
            .with_context(|| format!("cannot unpack {}", entry.path_lossy()))?;
    }
    progress.finish();
    Ok(())
}

trait PathLossy {
    fn path_lossy(&self) -> String;
}

impl<R: Read> PathLossy for tar::Entry<'_, R> {
    fn path_lossy(&self) -> String {
        String::from_utf8_lossy(&self.path_bytes()).into_owned()
    }
}

struct CountingReader<'a, R> {
    inner: R,
    progress: &'a mut progress::Progress,
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.progress.inc(n as u64);
        Ok(n)
    }
}

/// Installed packages from the text of `/var/lib/dpkg/status`, sorted by name.
pub fn installed_packages(status: &str) -> Vec<Package> {
    let mut packages: Vec<Package> = status
        .split("\n\n")
        .filter_map(|stanza| {
            let field = |name: &str| {
                stanza.lines().find_map(|line| {
                    line.strip_prefix(name)
                        .and_then(|rest| rest.strip_prefix(':'))
                        .map(|value| value.trim().to_string())
                })
            };
            let installed = field("Status")?.ends_with(" installed");
            installed.then(|| Package {
                name: field("Package").unwrap_or_default(),
                version: field("Version").unwrap_or_default(),
                architecture: field("Architecture").unwrap_or_default(),
            })
        })
        .filter(|package| !package.name.is_empty())
        .collect();
    packages.sort_by(|a, b| a.name.cmp(&b.name));
    packages
}

#[cfg(test)]
mod tests;
