//! Hardening rendered from the profile: the nftables firewall, the SSH server's
//! algorithms (only when SSH is on), and unattended security upgrades with
//! reboots in the profile's maintenance window. Static hardening (sysctl, module
//! blacklists, banners, core dumps, journald) lives in `overlay/`; docs/hardening.md
//! maps both to the CIS items.

use std::path::PathBuf;

use crate::profile::{Base, Profile};
use meetbox_firstboot::render::firewall;

/// Run by mmdebstrap inside the new root (as `$1`) before the clean-up hook: edits
/// of files the packages own that no drop-in directory covers.
pub const BUILD_HOOK: &str = r#"set -e
root="$1"
# No syslog daemon: the journal, in memory only, is the only log (docs/hardening.md).
if chroot "$root" dpkg-query -W rsyslog >/dev/null 2>&1; then
    chroot "$root" apt-get purge -y -q rsyslog >/dev/null
fi
# The same settings as the drop-in, in the main file too, which is the one scanners read.
printf '\n# Written by meetbox build (docs/hardening.md): in memory only, compressed, no syslog.\nStorage=volatile\nCompress=yes\nForwardToSyslog=no\n' \
    >> "$root/etc/systemd/journald.conf"
# No cron daemon runs (systemd timers do the scheduling), but packages leave cron directories:
# root's alone, and nobody may be given a crontab or an at job (CIS 2.4).
for dir in cron.d cron.daily cron.hourly cron.weekly cron.monthly cron.yearly; do
    if [ -d "$root/etc/$dir" ]; then chmod 0700 "$root/etc/$dir"; fi
done
if [ -f "$root/etc/crontab" ]; then chmod 0600 "$root/etc/crontab"; fi
for allow in cron.allow at.allow; do
    install -m 0640 /dev/null "$root/etc/$allow"
done
# The password files and their backups readable by root alone (CIS 7.1.5 to 7.1.8): no program on
# the box checks a password against them (root is locked, the admin checks prosody's credential),
# and root reads them whatever their mode. The shadow tools give a rewritten file and its backup
# the mode of the file they replace, so accounts added later keep it.
for file in shadow gshadow shadow- gshadow-; do
    if [ -f "$root/etc/$file" ]; then chmod 0000 "$root/etc/$file"; fi
done
# The boot menu is Meetbox's own (tree/mod.rs): its entries follow the kernel links that every
# kernel update moves, and first boot adds the box's superuser. update-grub, which kernel updates
# run, would generate another in its place, so it is diverted to a note.
if [ -e "$root/usr/sbin/update-grub" ]; then
    chroot "$root" dpkg-divert --quiet --local --rename --add /usr/sbin/update-grub
    cat > "$root/usr/sbin/update-grub" <<'UPDATE_GRUB'
#!/bin/sh
# Installed by meetbox build in place of update-grub (diverted to update-grub.distrib).
echo "update-grub: Meetbox's boot menu follows the kernel links; nothing to regenerate" >&2
exit 0
UPDATE_GRUB
    chmod 0755 "$root/usr/sbin/update-grub"
fi
# Strict reverse-path filtering (CIS 3.3.7) in procps's own file too, which sets loose filtering
# (2) and which scanners read beside ours; a conffile, so the edit survives its updates.
if [ -f "$root/etc/sysctl.d/10-network-security.conf" ]; then
    sed -i 's/^\(net\.ipv4\.conf\.[a-z]*\.rp_filter\) *= *2$/\1=1/' "$root/etc/sysctl.d/10-network-security.conf"
fi
# Log files the packages left readable by their group at most (CIS 6.1.3.1); at run time /var/log
# is in memory (tree/mounts.rs) and these stay under it.
find "$root/var/log" -type f -perm /0137 -exec chmod u-x,g-wx,o-rwx {} +
# System accounts cannot log in (CIS 5.4.2.8): Jitsi's maintainer scripts give jvb and jicofo
# /bin/bash, and their services need no shell.
awk -F: '$1 != "root" && $3 < 1000 && $7 !~ /(nologin|false|sync|shutdown|halt)$/ { print $1 }' \
    "$root/etc/passwd" | while read -r account; do
    chroot "$root" usermod --shell /usr/sbin/nologin "$account"
done
# AppArmor profiles that do not enforce, for desktop and container programs the box does not have
# (Ubuntu's flags=(unconfined) ones only lift its user-namespace restriction; transmission's
# complain), are disabled the way AppArmor documents, a link in disable/ (the profiles stay as the
# package shipped them), so every loaded profile enforces (CIS 1.3.1.3, 1.3.1.4).
if [ -d "$root/etc/apparmor.d/disable" ]; then
    for profile in $(grep -lsE 'flags=\([^)]*(unconfined|complain)' "$root"/etc/apparmor.d/*); do
        name=$(basename "$profile")
        ln -sfn "../$name" "$root/etc/apparmor.d/disable/$name"
    done
fi
# No telnet client (CIS 2.2.4): coturn depends on "telnet | telnet-client" for its telnet console,
# which the box never opens (render/coturn.rs: no-cli). A package that only provides telnet-client,
# with no files, stands in for the client, which then goes.
telnet_clients=$(chroot "$root" dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' telnet inetutils-telnet 2>/dev/null \
    | awk '$1 == "ii" { print $2 }')
if [ -n "$telnet_clients" ]; then
    stand_in="$root/tmp/meetbox-no-telnet-client"
    mkdir -p "$stand_in/DEBIAN"
    cat > "$stand_in/DEBIAN/control" <<'CONTROL'
Package: meetbox-no-telnet-client
Version: 1
Architecture: all
Maintainer: Meetbox <meetbox@localhost>
Priority: optional
Section: net
Provides: telnet-client
Description: stand-in for the telnet client that coturn depends on
 Meetbox runs coturn without its telnet console (no-cli), so the appliance
 carries no telnet client; this empty package satisfies the dependency.
CONTROL
    chroot "$root" dpkg-deb --root-owner-group --build /tmp/meetbox-no-telnet-client /tmp/meetbox-no-telnet-client.deb >/dev/null
    chroot "$root" dpkg --install /tmp/meetbox-no-telnet-client.deb >/dev/null
    chroot "$root" apt-get purge -y -q $telnet_clients >/dev/null
    rm -rf "$stand_in" "$root/tmp/meetbox-no-telnet-client.deb"
fi
# nginx's main file offers TLS 1.0 and 1.1 to any site that names no protocols; the box's sites
# name 1.2 and 1.3 (render/nginx.rs), and now the default does too. A conffile, so the edit
# survives updates.
if [ -f "$root/etc/nginx/nginx.conf" ]; then
    sed -i 's/^\([[:space:]]*ssl_protocols\)[[:space:]][^;]*;.*/\1 TLSv1.2 TLSv1.3;/' "$root/etc/nginx/nginx.conf"
fi
# The time servers named in the main file (CIS 2.3.2.1), which scanners read: the distribution's
# own list from the file's comment, so the box asks no one new.
servers=$(sed -n 's/^#FallbackNTP=//p' "$root/etc/systemd/timesyncd.conf" | head -n 1)
if [ -n "$servers" ]; then
    printf '\n# Written by meetbox build (docs/hardening.md): the servers of the distribution.\nNTP=%s\n' "$servers" \
        >> "$root/etc/systemd/timesyncd.conf"
fi
"#;

/// A file this module renders into the root tree: path relative to the root, text, mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenderedFile {
    pub path: PathBuf,
    pub text: String,
    pub mode: u32,
}

/// Every file rendered for `profile`; `jitsi_origin` selects the Jitsi repository's packages for
/// unattended upgrades (see `jitsi::upgrade_origin`).
pub fn rendered_files(profile: &Profile, jitsi_origin: Option<&str>) -> Vec<RenderedFile> {
    let file = |path: &str, text: String, mode: u32| RenderedFile {
        path: PathBuf::from(path),
        text,
        mode,
    };
    let reboot_time = profile.maintenance.as_ref().map(|m| m.reboot_time.as_str());
    let mut files = vec![
        file(
            "etc/nftables.conf",
            firewall::nftables(profile.services.ssh, profile.services.admin_from_internet),
            0o700,
        ),
        file(
            "etc/apt/apt.conf.d/20auto-upgrades",
            render_auto_upgrades(),
            0o644,
        ),
        file(
            "etc/apt/apt.conf.d/52meetbox-unattended-upgrades",
            render_unattended_upgrades(profile.base, jitsi_origin, reboot_time),
            0o644,
        ),
    ];
    if let Some(time) = reboot_time {
        for timer in ["apt-daily.timer", "apt-daily-upgrade.timer"] {
            files.push(file(
                &format!("etc/systemd/system/{timer}.d/60-meetbox-maintenance.conf"),
                render_apt_timer(timer, time),
                0o644,
            ));
        }
    }
    if profile.services.ssh {
        files.push(file("etc/ssh/sshd_config", render_sshd_config(), 0o600));
    }
    files
}

/// `/etc/ssh/sshd_config` itself (not a drop-in: CIS scanners read only the main
/// file): keys only, root alone (the owner's key), no root password, and only algorithms that both ssh-audit and
/// the CIS lists accept (no NIST curves, no SHA-1, no CBC, encrypt-then-MAC only).
/// sshd keeps the first value it reads, so drop-ins included at the end can add
/// settings but not weaken these.
pub fn render_sshd_config() -> String {
    "# Written by meetbox build: keys only, modern algorithms only.\n\
     UsePAM yes\n\
     PrintMotd no\n\
     HostKey /etc/ssh/ssh_host_ed25519_key\n\
     HostKey /etc/ssh/ssh_host_rsa_key\n\
     PasswordAuthentication no\n\
     KbdInteractiveAuthentication no\n\
     PermitEmptyPasswords no\n\
     PubkeyAuthentication yes\n\
     PermitRootLogin prohibit-password\n\
     AllowUsers root\n\
     HostbasedAuthentication no\n\
     IgnoreRhosts yes\n\
     PermitUserEnvironment no\n\
     X11Forwarding no\n\
     AllowTcpForwarding no\n\
     AllowAgentForwarding no\n\
     DisableForwarding yes\n\
     GSSAPIAuthentication no\n\
     UseDNS no\n\
     LogLevel INFO\n\
     MaxAuthTries 3\n\
     MaxSessions 2\n\
     MaxStartups 10:30:60\n\
     LoginGraceTime 60\n\
     ClientAliveInterval 300\n\
     ClientAliveCountMax 3\n\
     TCPKeepAlive no\n\
     Banner /etc/issue.net\n\
     KexAlgorithms sntrup761x25519-sha512@openssh.com,curve25519-sha256,curve25519-sha256@libssh.org,diffie-hellman-group16-sha512,diffie-hellman-group18-sha512\n\
     Ciphers chacha20-poly1305@openssh.com,aes256-gcm@openssh.com,aes128-gcm@openssh.com,aes256-ctr,aes192-ctr,aes128-ctr\n\
     MACs hmac-sha2-512-etm@openssh.com,hmac-sha2-256-etm@openssh.com\n\
     HostKeyAlgorithms ssh-ed25519,ssh-ed25519-cert-v01@openssh.com,rsa-sha2-512,rsa-sha2-512-cert-v01@openssh.com,rsa-sha2-256,rsa-sha2-256-cert-v01@openssh.com\n\
     PubkeyAcceptedAlgorithms ssh-ed25519,ssh-ed25519-cert-v01@openssh.com,sk-ssh-ed25519@openssh.com,sk-ssh-ed25519-cert-v01@openssh.com,rsa-sha2-512,rsa-sha2-512-cert-v01@openssh.com,rsa-sha2-256,rsa-sha2-256-cert-v01@openssh.com\n\
     Include /etc/ssh/sshd_config.d/*.conf\n"
        .to_string()
}

/// `/etc/apt/apt.conf.d/20auto-upgrades`: refresh the lists and upgrade daily.
pub fn render_auto_upgrades() -> String {
    "// Written by meetbox build: daily security upgrades.\n\
     APT::Periodic::Update-Package-Lists \"1\";\n\
     APT::Periodic::Unattended-Upgrade \"1\";\n\
     APT::Periodic::AutocleanInterval \"7\";\n"
        .to_string()
}

/// The unattended-upgrades origin patterns of an image: the distribution's security pocket, and
/// Jitsi's repository when the image installed from it.
pub fn update_origins(base: Base, jitsi_origin: Option<&str>) -> Vec<String> {
    let suite = base.suite();
    let mut origins = (base.distro().security_origins)(suite);
    origins.extend(jitsi_origin.map(str::to_string));
    origins
}

/// Units that contact someone other than the update mirrors, Jitsi's repository or the ACME CA
/// (news, Ubuntu Pro and ESM checks, crash reporters, popularity contests, firmware metadata).
/// Masked whether the image has them or not, so a package that brings one later stays silent.
pub const SILENCED_UNITS: &[&str] = &[
    "motd-news.timer",
    "motd-news.service",
    "apt-news.service",
    "esm-cache.service",
    "ua-timer.timer",
    "ua-reboot-cmds.service",
    "ubuntu-advantage.service",
    "apport.service",
    "apport-autoreport.timer",
    "whoopsie.service",
    "popularity-contest.timer",
    "fwupd-refresh.timer",
    "update-notifier-download.timer",
    "update-notifier-motd.timer",
];

/// The time `minutes` before `time` ("HH:MM"), on a 24-hour clock.
fn minutes_before(time: &str, minutes: u32) -> String {
    let (hours, mins) = time.split_once(':').unwrap_or(("0", "0"));
    let total = hours.parse::<u32>().unwrap_or(0) * 60 + mins.parse::<u32>().unwrap_or(0);
    let at = (total + 24 * 60 - minutes % (24 * 60)) % (24 * 60);
    format!("{:02}:{:02}", at / 60, at % 60)
}

/// Drop-ins that move apt's timers before the maintenance window: package lists two hours
/// before, the upgrade one hour before, so a reboot an update needs comes that same night.
pub fn render_apt_timer(timer: &str, reboot_time: &str) -> String {
    let (before, spread, what) = match timer {
        "apt-daily.timer" => (120, "30m", "package lists"),
        _ => (60, "15m", "upgrades"),
    };
    format!(
        "# Written by meetbox build: {what} before the maintenance window ({reboot_time}).\n\
         [Timer]\n\
         OnCalendar=\n\
         OnCalendar=*-*-* {}:00\n\
         RandomizedDelaySec={spread}\n\
         Persistent=true\n",
        minutes_before(reboot_time, before)
    )
}

/// The unattended-upgrades policy: the distribution's security pocket, Jitsi's
/// repository when Jitsi is on, and reboots at `reboot_time` (none without one).
/// Conffiles changed by the image are kept (no prompt can stop an upgrade).
pub fn render_unattended_upgrades(
    base: Base,
    jitsi_origin: Option<&str>,
    reboot_time: Option<&str>,
) -> String {
    let origins = update_origins(base, jitsi_origin);
    let origins: String = origins
        .iter()
        .map(|origin| format!("    \"{origin}\";\n"))
        .collect();
    let reboot = match reboot_time {
        Some(time) => format!(
            "// Reboots (new kernel, libc) happen in the profile's maintenance window.\n\
             Unattended-Upgrade::Automatic-Reboot \"true\";\n\
             Unattended-Upgrade::Automatic-Reboot-WithUsers \"true\";\n\
             Unattended-Upgrade::Automatic-Reboot-Time \"{time}\";\n"
        ),
        None => "// No maintenance window in the profile: the owner reboots.\n\
                 Unattended-Upgrade::Automatic-Reboot \"false\";\n"
            .to_string(),
    };
    format!(
        "// Written by meetbox build.\n\
         Unattended-Upgrade::Origins-Pattern {{\n\
         {origins}\
         }};\n\
         Unattended-Upgrade::Remove-Unused-Kernel-Packages \"true\";\n\
         Unattended-Upgrade::Remove-Unused-Dependencies \"true\";\n\
         Unattended-Upgrade::SyslogEnable \"false\";\n\
         {reboot}\
         Dpkg::Options {{\n\
         \x20   \"--force-confdef\";\n\
         \x20   \"--force-confold\";\n\
         }};\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::Maintenance;

    use crate::profile::shipped as profile;

    #[test]
    fn build_hook_removes_syslog_and_keeps_the_journal_in_memory() {
        assert!(BUILD_HOOK.contains("purge -y -q rsyslog"));
        assert!(BUILD_HOOK.contains("Storage=volatile"));
    }

    #[test]
    fn sshd_takes_keys_only_and_no_weak_algorithms() {
        let config = render_sshd_config();
        assert!(config.contains("PasswordAuthentication no\n"));
        assert!(config.contains("KbdInteractiveAuthentication no\n"));
        // The owner's key logs in as root; no other account may log in at all (CIS 5.1.4).
        assert!(config.contains("AllowUsers root\n"));
        // First value wins in sshd: drop-ins come after Meetbox's settings.
        assert!(config
            .trim_end()
            .ends_with("Include /etc/ssh/sshd_config.d/*.conf"));
        for weak in [
            "nistp",
            "sha1",
            "-cbc",
            "hmac-sha2-256,",
            "ssh-rsa,",
            "group14",
            "group-exchange",
        ] {
            assert!(!config.contains(weak), "{weak} in\n{config}");
        }
        assert!(!config.contains("ssh_host_ecdsa_key"));
    }

    #[test]
    fn unattended_upgrades_follow_the_security_pocket_and_jitsi() {
        let ubuntu = render_unattended_upgrades(Base::Ubuntu2404, None, None);
        assert!(ubuntu.contains("\"origin=Ubuntu,archive=noble-security\";"));
        assert!(!ubuntu.contains("site="));
        assert!(ubuntu.contains("Automatic-Reboot \"false\""));
        let debian = render_unattended_upgrades(
            Base::Debian12,
            Some("site=download.jitsi.org"),
            Some("03:30"),
        );
        assert!(debian.contains("codename=bookworm-security,label=Debian-Security"));
        assert!(debian.contains("\"site=download.jitsi.org\";"));
        assert!(debian.contains("Automatic-Reboot \"true\""));
        assert!(debian.contains("Automatic-Reboot-Time \"03:30\""));
        assert!(debian.contains("--force-confold"));
    }

    #[test]
    fn apt_s_timers_come_before_the_maintenance_window() {
        assert_eq!(minutes_before("03:30", 60), "02:30");
        assert_eq!(minutes_before("00:30", 120), "22:30");
        let lists = render_apt_timer("apt-daily.timer", "03:30");
        assert!(
            lists.contains("OnCalendar=\nOnCalendar=*-*-* 01:30:00\n"),
            "{lists}"
        );
        let upgrade = render_apt_timer("apt-daily-upgrade.timer", "00:15");
        assert!(upgrade.contains("OnCalendar=*-*-* 23:15:00\n"), "{upgrade}");
        assert!(upgrade.contains("Persistent=true"));
    }

    #[test]
    fn files_follow_the_profile() {
        let mut p = profile("default");
        let names = |p: &Profile| -> Vec<String> {
            rendered_files(p, None)
                .into_iter()
                .map(|f| f.path.display().to_string())
                .collect()
        };
        assert!(!names(&p).iter().any(|n| n.contains("sshd")));
        p.services.ssh = true;
        p.maintenance = Some(Maintenance {
            reboot_time: "04:15".into(),
        });
        let files = rendered_files(&p, None);
        let sshd = files
            .iter()
            .find(|f| f.path.ends_with("etc/ssh/sshd_config"))
            .expect("sshd drop-in");
        assert_eq!(sshd.mode, 0o600);
        let policy = files
            .iter()
            .find(|f| f.path.ends_with("52meetbox-unattended-upgrades"))
            .unwrap();
        assert!(policy.text.contains("\"04:15\""));
        let nft = files
            .iter()
            .find(|f| f.path.ends_with("nftables.conf"))
            .unwrap();
        assert!(nft.text.contains("dport 22"));
    }
}
