//! Turns an unpacked root file system into this image's root: the overlay, the
//! first-boot agent, fstab and the file systems in memory (mounts.rs), the GRUB configuration, growing root on first boot,
//! enabled units, and timestamps clamped so assembly is reproducible.

pub mod audit;
pub mod hardening;
pub mod integrity;
pub mod logins;
pub mod mounts;

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::host::command::CommandRunExt;
use crate::host::progress;
use crate::profile::{Base, Profile};
use audit::KERNEL_AUDIT;
use meetbox_firstboot::render::boot_menu::SUPERUSER_MARKER;

/// Kernel command line: consoles on the screen and the first serial port (the
/// last `console=` is where /dev/console, and so the agent's messages, go).
pub const KERNEL_CONSOLES: &str = "console=tty0 console=ttyS0,115200";

/// AppArmor by name on the kernel command line (CIS 1.3.1.2). The kernels already enable it
/// through their built-in LSM list; `security=` only turns off the other "legacy major" modules
/// (SELinux, Smack, TOMOYO), and landlock, lockdown and yama stay on.
pub const KERNEL_SECURITY: &str = "apparmor=1 security=apparmor";

/// What the root tree needs from the rest of the build.
pub struct TreeInputs<'a> {
    pub profile: &'a Profile,
    pub overlay: &'a Path,
    pub agent: &'a Path,
    /// `meetbox` itself, for the USB installer.
    pub installer: &'a Path,
    /// `meetbox-admin`, the web admin.
    pub admin: &'a Path,
    pub root_fs_uuid: String,
    /// FAT volume id as `/etc/fstab` writes it, e.g. `1A2B-3C4D`.
    pub esp_volume_id: String,
    /// The unattended-upgrades origin of the Jitsi repository the image installed from.
    pub jitsi_upgrade_origin: Option<String>,
    /// Extra files to place, e.g. `/etc/meetbox/tuning.toml`.
    pub extra_files: Vec<(PathBuf, String)>,
    pub epoch: u64,
}

/// `/boot/grub/grub.cfg`, read by the signed GRUB through the ESP stub. It names
/// the `vmlinuz`/`initrd.img` symlinks the kernel packages keep current, so it
/// survives kernel upgrades without grub-mkconfig.
pub fn render_grub_cfg(base: Base, root_fs_uuid: &str) -> String {
    let dir = base.kernel_link_dir();
    // Unrestricted: with the superuser that first boot adds, the entries still boot unattended;
    // only editing them and GRUB's shell need the superuser.
    let entry = |title: &str, suffix: &str| {
        format!(
            "menuentry '{title}' --unrestricted {{\n\
             \x20   linux {dir}/vmlinuz{suffix} root=UUID={root_fs_uuid} ro {KERNEL_SECURITY} {KERNEL_AUDIT} {KERNEL_CONSOLES}\n\
             \x20   initrd {dir}/initrd.img{suffix}\n\
             }}\n"
        )
    };
    format!(
        "# Written by meetbox build.\n\
         set default=0\n\
         set timeout=1\n\
         search --no-floppy --fs-uuid --set=root {root_fs_uuid}\n\
         {SUPERUSER_MARKER}\n\
         {}{}",
        entry("Meetbox", ""),
        entry("Meetbox (previous kernel)", ".old")
    )
}

/// Where the distribution's grub-mkconfig reads its kernel arguments.
pub const DEFAULT_GRUB: &str = "etc/default/grub.d/60-meetbox.cfg";

/// The kernel arguments of [`render_grub_cfg`], for the distribution's grub-mkconfig too: the
/// menu is Meetbox's own (update-grub is diverted), but whoever runs grub-mkconfig by hand, and
/// the scanners that read this file, get the same security arguments.
pub fn render_default_grub() -> String {
    format!(
        "# Written by meetbox build: the security arguments of Meetbox's own boot menu.\n\
         GRUB_CMDLINE_LINUX=\"{KERNEL_SECURITY} {KERNEL_AUDIT}\"\n"
    )
}

/// systemd-repart definition: the existing root partition takes the free space of
/// a larger disk on first boot; fstab's `x-systemd.growfs` then grows ext4 online.
pub fn render_repart_root() -> String {
    "# Written by meetbox build: grow root to fill the disk on first boot.\n\
     [Partition]\n\
     Type=root\n"
        .to_string()
}

/// Applies everything this image adds to the unpacked root in `tree`.
pub fn customize(tree: &Path, inputs: &TreeInputs) -> Result<()> {
    progress::step("Root tree: overlay, first-boot agent, fstab, GRUB, hardening, units");
    let copied = copy_overlay(inputs.overlay, tree)?;
    progress::detail(format!(
        "overlay: {copied} files from {}",
        inputs.overlay.display()
    ));
    for (program, at) in [
        (inputs.agent, meetbox_firstboot::layout::AGENT_BINARY),
        (
            inputs.installer,
            meetbox_firstboot::layout::INSTALLER_BINARY,
        ),
        (inputs.admin, meetbox_firstboot::layout::ADMIN_BINARY),
    ] {
        install_file(
            &fs::read(program).with_context(|| format!("cannot read {}", program.display()))?,
            &tree.join(at.trim_start_matches('/')),
            0o755,
        )?;
    }
    let profile = inputs.profile;
    install_text(
        tree,
        "etc/fstab",
        &mounts::render_fstab(&inputs.root_fs_uuid, &inputs.esp_volume_id),
    )?;
    install_text(
        tree,
        mounts::LOG_SKELETON,
        &mounts::render_log_skeleton(&mounts::log_skeleton(tree)?),
    )?;
    fs::create_dir_all(tree.join("boot/efi"))?;
    // Readable by root only (CIS 1.4.2): GRUB reads it through the firmware, not as a user.
    install_file(
        render_grub_cfg(profile.base, &inputs.root_fs_uuid).as_bytes(),
        &tree.join("boot/grub/grub.cfg"),
        0o600,
    )?;
    install_text(tree, "etc/repart.d/50-root.conf", &render_repart_root())?;
    audit::install(tree)?;
    integrity::install(tree)?;
    install_text(tree, DEFAULT_GRUB, &render_default_grub())?;
    let filters =
        crate::rootfs::firmware::dpkg_filters(profile.base, &profile.hardware.firmware.files);
    if let Some(config) = crate::rootfs::firmware::dpkg_config(&filters) {
        install_text(tree, crate::rootfs::firmware::DPKG_CONFIG, &config)?;
    }
    install_text(
        tree,
        crate::rootfs::modules::DPKG_CONFIG,
        &crate::rootfs::modules::dpkg_config(),
    )?;
    for file in hardening::rendered_files(profile, inputs.jitsi_upgrade_origin.as_deref()) {
        install_file(file.text.as_bytes(), &tree.join(&file.path), file.mode)?;
    }
    install_text(
        tree,
        "etc/meetbox/profile.toml",
        &toml::to_string(profile).context("cannot serialize the profile")?,
    )?;
    for (path, text) in &inputs.extra_files {
        install_text(tree, path.to_str().context("non-UTF-8 path")?, text)?;
    }
    enable_units(tree, inputs.overlay)?;
    clamp_times(tree, inputs.epoch)?;
    Ok(())
}

fn install_text(tree: &Path, relative: &str, text: &str) -> Result<()> {
    install_file(text.as_bytes(), &tree.join(relative), 0o644)
}

fn install_file(contents: &[u8], dest: &Path, mode: u32) -> Result<()> {
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let _ = fs::remove_file(dest);
    fs::write(dest, contents).with_context(|| format!("cannot write {}", dest.display()))?;
    fs::set_permissions(dest, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// Copies the overlay tree: owner root, the mode of the source file without
/// group/other write, symlinks kept. Walks in sorted order for reproducibility.
pub fn copy_overlay(overlay: &Path, tree: &Path) -> Result<usize> {
    if !overlay.is_dir() {
        bail!(
            "overlay directory {} does not exist: run from the Meetbox source tree or pass --overlay",
            overlay.display()
        );
    }
    let mut count = 0;
    let mut stack = vec![PathBuf::new()];
    while let Some(relative) = stack.pop() {
        let source_dir = overlay.join(&relative);
        let mut entries: Vec<_> = fs::read_dir(&source_dir)
            .with_context(|| format!("cannot read {}", source_dir.display()))?
            .collect::<std::io::Result<_>>()?;
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            let rel = relative.join(entry.file_name());
            let source = overlay.join(&rel);
            let dest = tree.join(&rel);
            let meta = fs::symlink_metadata(&source)?;
            if meta.file_type().is_symlink() {
                let target = fs::read_link(&source)?;
                let _ = fs::remove_file(&dest);
                std::os::unix::fs::symlink(&target, &dest)
                    .with_context(|| format!("cannot link {}", dest.display()))?;
                lchown_root(&dest)?;
            } else if meta.is_dir() {
                if !dest.exists() {
                    fs::create_dir_all(&dest)?;
                    fs::set_permissions(&dest, fs::Permissions::from_mode(0o755))?;
                    lchown_root(&dest)?;
                }
                stack.push(rel);
            } else {
                let mode = meta.mode() & 0o7755;
                install_file(&fs::read(&source)?, &dest, mode)?;
                lchown_root(&dest)?;
                count += 1;
            }
        }
    }
    Ok(count)
}

fn lchown_root(path: &Path) -> Result<()> {
    std::os::unix::fs::lchown(path, Some(0), Some(0))
        .with_context(|| format!("cannot give {} to root (run as root)", path.display()))
}

/// Units the image enables: networking, and every overlay unit with an [Install] section.
fn enable_units(tree: &Path, overlay: &Path) -> Result<()> {
    let mut units = vec![
        "systemd-networkd.service".to_string(),
        "systemd-resolved.service".to_string(),
        // The firewall (hardening.rs writes /etc/nftables.conf).
        "nftables.service".to_string(),
    ];
    let unit_dir = overlay.join("usr/lib/systemd/system");
    let mut overlay_units: Vec<String> = fs::read_dir(&unit_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| {
            // Template instances are enabled by the links the overlay ships.
            !entry.file_name().to_string_lossy().contains('@')
        })
        .filter(|entry| {
            fs::read_to_string(entry.path())
                .map(|text| text.lines().any(|line| line.trim() == "[Install]"))
                .unwrap_or(false)
        })
        .filter_map(|entry| entry.file_name().to_str().map(str::to_string))
        .collect();
    overlay_units.sort();
    units.extend(overlay_units);
    // Security updates: apt's own timers run unattended-upgrades (hardening.rs sets when).
    units.extend([
        "apt-daily.timer".to_string(),
        "apt-daily-upgrade.timer".to_string(),
    ]);
    systemctl(tree, "enable", &units)?;
    progress::detail(format!("enabled: {}", units.join(", ")));
    let present: Vec<&str> = hardening::SILENCED_UNITS
        .iter()
        .copied()
        .filter(|unit| unit_file_exists(tree, unit))
        .collect();
    if !present.is_empty() {
        systemctl(tree, "disable", &present)?;
    }
    systemctl(tree, "mask", hardening::SILENCED_UNITS)?;
    progress::detail(format!(
        "masked (they call third parties): {}",
        hardening::SILENCED_UNITS.join(", ")
    ));
    disable_until_setup(tree)
}

/// The apt sources of the tree (one-line and deb822 files), for the manifest.
pub fn apt_sources(tree: &Path) -> Vec<String> {
    let etc = tree.join("etc/apt");
    let mut files = vec![etc.join("sources.list")];
    if let Ok(entries) = fs::read_dir(etc.join("sources.list.d")) {
        let mut listed: Vec<PathBuf> = entries.flatten().map(|entry| entry.path()).collect();
        listed.sort();
        files.extend(listed);
    }
    files
        .iter()
        .filter_map(|file| fs::read_to_string(file).ok())
        .flat_map(|text| {
            text.lines()
                .map(str::trim)
                .filter(|line| line.starts_with("deb ") || line.starts_with("URIs:"))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The timers the image starts (their `timers.target.wants` links), for the manifest.
pub fn enabled_timers(tree: &Path) -> Vec<String> {
    let mut timers: Vec<String> = ["etc/systemd/system", "usr/lib/systemd/system"]
        .iter()
        .flat_map(|dir| fs::read_dir(tree.join(dir).join("timers.target.wants")).into_iter())
        .flatten()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str().map(str::to_string))
        .filter(|name| name.ends_with(".timer"))
        .collect();
    timers.sort();
    timers.dedup();
    timers
}

/// Services that stay off until the first-boot agent has configured them: nothing
/// of Jitsi is served (and port 80 stays free for ACME) before setup is done, and
/// sshd (images with SSH on) waits for the box's own host keys and the owner's key.
/// Ubuntu starts sshd from ssh.socket; the agent enables ssh.service instead.
pub const FENCED_SERVICES: &[&str] = &[
    "nginx.service",
    "prosody.service",
    "coturn.service",
    "jicofo.service",
    "jitsi-videobridge2.service",
    "meetbox-admin-helper.service",
    "meetbox-admin.service",
    "ssh.service",
    "ssh.socket",
];

fn disable_until_setup(tree: &Path) -> Result<()> {
    let present: Vec<&str> = FENCED_SERVICES
        .iter()
        .copied()
        .filter(|unit| {
            // jicofo has only an init script: `systemctl disable` runs update-rc.d for it.
            let sysv = unit
                .strip_suffix(".service")
                .is_some_and(|name| tree.join("etc/init.d").join(name).exists());
            sysv || unit_file_exists(tree, unit)
        })
        .collect();
    if present.is_empty() {
        return Ok(());
    }
    systemctl(tree, "disable", &present)?;
    progress::detail(format!(
        "off until first-boot setup: {}",
        present.join(", ")
    ));
    Ok(())
}

/// True when the tree has a unit file for `unit` (a package installed it).
fn unit_file_exists(tree: &Path, unit: &str) -> bool {
    ["usr/lib/systemd/system", "lib/systemd/system"]
        .iter()
        .any(|dir| tree.join(dir).join(unit).exists())
}

/// `systemctl --root=TREE VERB UNITS...`: systemd's own tool edits the image's links.
fn systemctl(tree: &Path, verb: &str, units: &[impl AsRef<std::ffi::OsStr>]) -> Result<()> {
    Command::new("systemctl")
        .arg(format!("--root={}", tree.display()))
        .arg(verb)
        .args(units)
        .run_captured()
        .with_context(|| format!("cannot {verb} units in the image"))?;
    Ok(())
}

/// Sets access and modification times of every entry to min(mtime, epoch), so two
/// assemblies from the same cached tarball produce the same file system.
pub fn clamp_times(tree: &Path, epoch: u64) -> Result<()> {
    let mut stack = vec![tree.to_path_buf()];
    let mut dirs = Vec::new();
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))? {
            let entry = entry?;
            let path = entry.path();
            let meta = fs::symlink_metadata(&path)?;
            if meta.is_dir() {
                stack.push(path);
            } else {
                set_times(&path, meta.mtime(), epoch)?;
            }
        }
        dirs.push(dir);
    }
    // Directories last: setting a file's times does not touch its directory's
    // mtime, but keeping the order explicit costs nothing.
    for dir in dirs {
        let mtime = fs::symlink_metadata(&dir)?.mtime();
        set_times(&dir, mtime, epoch)?;
    }
    Ok(())
}

fn set_times(path: &Path, mtime: i64, epoch: u64) -> Result<()> {
    let clamped = mtime.clamp(0, epoch as i64);
    let time = libc::timespec {
        tv_sec: clamped as libc::time_t,
        tv_nsec: 0,
    };
    let c_path = CString::new(path.as_os_str().as_bytes())?;
    // SAFETY: c_path is a valid NUL-terminated string and times points to two timespecs.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            [time, time].as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot set times of {}", path.display()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const UUID: &str = "0b9e3b52-7c1c-4c4f-9b7e-4a4f3c2d1e0f";

    #[test]
    fn grub_cfg_names_the_kernel_symlinks_and_consoles() {
        let cfg = render_grub_cfg(Base::Ubuntu2404, UUID);
        assert!(cfg.contains(&format!("search --no-floppy --fs-uuid --set=root {UUID}")));
        assert!(cfg.contains(&format!(
            "linux /boot/vmlinuz root=UUID={UUID} ro apparmor=1 security=apparmor audit=1 audit_backlog_limit=8192 console=tty0 console=ttyS0,115200"
        )));
        assert!(cfg.contains("initrd /boot/initrd.img\n"));
        assert!(cfg.contains("linux /boot/vmlinuz.old "));
        let debian = render_grub_cfg(Base::Debian12, UUID);
        assert!(debian.contains("linux /vmlinuz root="));
        assert!(debian.contains("initrd /initrd.img\n"));
    }

    #[test]
    fn every_entry_boots_unattended_once_first_boot_locks_the_menu() {
        for base in [Base::Ubuntu2404, Base::Debian12] {
            let cfg = render_grub_cfg(base, UUID);
            assert_eq!(
                cfg.matches("menuentry ").count(),
                cfg.matches("' --unrestricted {").count()
            );
            let locked = meetbox_firstboot::render::boot_menu::with_superuser(
                &cfg,
                "grub.pbkdf2.sha512.10000.AA.BB",
            )
            .unwrap();
            // The superuser comes before the entries, which GRUB reads it for.
            let superuser = locked.find("set superusers=\"root\"").unwrap();
            assert!(superuser < locked.find("menuentry ").unwrap());
        }
    }

    #[test]
    fn grub_defaults_carry_the_menus_security_arguments() {
        let defaults = render_default_grub();
        let menu = render_grub_cfg(Base::Ubuntu2404, UUID);
        for argument in [
            "apparmor=1",
            "security=apparmor",
            "audit=1",
            "audit_backlog_limit=8192",
        ] {
            assert!(
                defaults.contains(argument) && menu.contains(argument),
                "{argument}"
            );
        }
        assert!(defaults
            .lines()
            .any(|l| l.starts_with("GRUB_CMDLINE_LINUX=\"")));
    }

    #[test]
    fn repart_grows_the_root_partition() {
        assert!(render_repart_root().contains("Type=root"));
    }

    #[test]
    fn overlay_is_copied_with_modes_and_links() {
        let overlay = tempfile::tempdir().unwrap();
        let tree = tempfile::tempdir().unwrap();
        fs::create_dir_all(overlay.path().join("etc/x")).unwrap();
        fs::write(overlay.path().join("etc/x/conf"), "a").unwrap();
        fs::set_permissions(
            overlay.path().join("etc/x/conf"),
            fs::Permissions::from_mode(0o666),
        )
        .unwrap();
        fs::write(overlay.path().join("etc/x/tool"), "b").unwrap();
        fs::set_permissions(
            overlay.path().join("etc/x/tool"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        std::os::unix::fs::symlink("conf", overlay.path().join("etc/x/link")).unwrap();
        let count = copy_overlay(overlay.path(), tree.path()).unwrap();
        assert_eq!(count, 2);
        let mode = |p: &str| {
            fs::metadata(tree.path().join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("etc/x/conf"), 0o644, "group/other write is dropped");
        assert_eq!(mode("etc/x/tool"), 0o755);
        assert_eq!(
            fs::read_link(tree.path().join("etc/x/link")).unwrap(),
            Path::new("conf")
        );
    }

    #[test]
    fn clamp_times_caps_every_entry_at_the_epoch() {
        let tree = tempfile::tempdir().unwrap();
        fs::create_dir_all(tree.path().join("a/b")).unwrap();
        fs::write(tree.path().join("a/b/f"), "x").unwrap();
        std::os::unix::fs::symlink("f", tree.path().join("a/b/l")).unwrap();
        clamp_times(tree.path(), 1_000_000).unwrap();
        for p in ["a", "a/b", "a/b/f", "a/b/l"] {
            let meta = fs::symlink_metadata(tree.path().join(p)).unwrap();
            assert_eq!(meta.mtime(), 1_000_000, "{p}");
            assert_eq!(meta.atime(), 1_000_000, "{p}");
        }
    }
}
