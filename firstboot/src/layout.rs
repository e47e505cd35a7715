//! Where things live on the appliance, and the fixed internal XMPP domain (see docs/firstboot.md).
//!
//! Paths are absolute paths of the target system; `apply::Root` maps them below `--root`.

/// The internal XMPP domain, the same on every box; the public name appears only in nginx, certificates,
/// TURN and the client URLs, so changing it never touches prosody accounts, jicofo or the videobridge.
pub const XMPP_DOMAIN: &str = "meet.jitsi";
pub const XMPP_AUTH_DOMAIN: &str = "auth.meet.jitsi";
pub const XMPP_GUEST_DOMAIN: &str = "guest.meet.jitsi";
pub const XMPP_MUC_DOMAIN: &str = "conference.meet.jitsi";
/// Jitsi's own name for the MUC where videobridges announce themselves: its postinst adds this component
/// to the prosody site at every upgrade unless the name is there (docs/jitsi.md).
pub const XMPP_INTERNAL_MUC_DOMAIN: &str = "internal.auth.meet.jitsi";
pub const XMPP_LOBBY_DOMAIN: &str = "lobby.meet.jitsi";
pub const XMPP_BREAKOUT_DOMAIN: &str = "breakout.meet.jitsi";
pub const XMPP_FOCUS_COMPONENT: &str = "focus.meet.jitsi";
/// Polls live in their own component since Jitsi removed the `polls` MUC module.
pub const XMPP_POLLS_COMPONENT: &str = "polls.meet.jitsi";
/// The MUC where videobridges announce themselves to jicofo.
pub const BREWERY_ROOM: &str = "jvbbrewery@internal.auth.meet.jitsi";
pub const FOCUS_USER: &str = "focus";
pub const JVB_USER: &str = "jvb";

/// Where the image carries this agent (its units start it from here).
pub const AGENT_BINARY: &str = "/usr/bin/meetbox-firstboot";

/// The `meetbox` tool the image carries for its USB installer (`meetbox install`).
pub const INSTALLER_BINARY: &str = "/usr/bin/meetbox";
/// The public key the image was signed with, for `meetbox install`'s check of the stick.
pub const IMAGE_SIGNING_KEY: &str = "/usr/share/meetbox/image-signing.pub";
/// The installer's signed seal and its minisign signature, on the ESP (paths from the ESP's root).
pub const ESP_SEAL: &str = "meetbox/install-seal.json";
pub const ESP_SEAL_SIGNATURE: &str = "meetbox/install-seal.json.minisig";
/// Written by the initramfs's live-stick script: the kernel name of the USB stick this session
/// started from, read-only below a layer in memory.
pub const LIVE_STICK: &str = "/run/meetbox/live/stick";
/// Where that script keeps the stick's own root, read-only.
pub const LIVE_LOWER: &str = "/run/meetbox/live/lower";
/// On a stick's root: the owner chose to run from it, so it boots as an ordinary disk.
pub const RUN_FROM_THIS_DISK: &str = "/etc/meetbox/run-from-this-disk";

/// The web admin (admin/): nginx serves it with TLS on this port to local-network sources only,
/// and passes it to the unprivileged web process on loopback.
pub const ADMIN_PORT: u16 = 8443;
pub const ADMIN_LISTEN: &str = "127.0.0.1:8180";
pub const ADMIN_BINARY: &str = "/usr/bin/meetbox-admin";
/// The system user the web process runs as (overlay's sysusers.d), and its group, the only one
/// that may talk to the root helper's socket.
pub const ADMIN_USER: &str = "meetbox-admin";
pub const ADMIN_HELPER_SOCKET: &str = "/run/meetbox-admin-helper/helper.sock";
/// Written by `meetbox build` when the profile opens the admin to the internet
/// (`[services] admin_from_internet = true`): nginx and the web process then let every source in,
/// as the firewall the same build wrote does.
pub const ADMIN_FROM_INTERNET: &str = "/etc/meetbox/admin-from-internet";

/// Where the ESP is mounted.
pub const ESP_DIR: &str = "/boot/efi";
/// The answers file at the root of the ESP, as the docs name it (ask::editors also finds the names
/// editors give it).
pub const ESP_ANSWERS: &str = "/boot/efi/meetbox-setup.toml";

/// The agent's own state.
/// The boot menu, which `meetbox build` writes and first boot gives its superuser
/// (render::boot_menu).
pub const GRUB_CFG: &str = "/boot/grub/grub.cfg";
pub const STATE_DIR: &str = "/var/lib/meetbox";
pub const STATE_FILE: &str = "/var/lib/meetbox/firstboot-state.json";
pub const DONE_MARKER: &str = "/var/lib/meetbox/firstboot.done";
pub const SECRETS_FILE: &str = "/var/lib/meetbox/secrets.json";
pub const ACME_ACCOUNT_FILE: &str = "/var/lib/meetbox/acme-account.json";
/// The last run of each update stage (updates.rs), shown by `meetbox-firstboot status`.
pub const UPDATES_FILE: &str = "/var/lib/meetbox/updates.json";
/// The web admin's last long-running change (admin/jobs.rs).
pub const ADMIN_JOB_FILE: &str = "/var/lib/meetbox/admin-job.json";
pub const ACME_RETRY_FILE: &str = "/var/lib/meetbox/acme-retry.json";
/// When the integrity database was made and its last check (integrity.rs).
pub const INTEGRITY_FILE: &str = "/var/lib/meetbox/integrity.json";
/// AIDE's configuration (written by `meetbox build`) and its database, made on the box.
pub const AIDE_CONF: &str = "/etc/aide/aide.conf";
pub const AIDE_DB_DIR: &str = "/var/lib/aide";
pub const AIDE_DB: &str = "/var/lib/aide/aide.db";
pub const AIDE_DB_NEW: &str = "/var/lib/aide/aide.db.new";
/// The addresses the configuration is rendered with and the last check of them (network/follow.rs).
pub const NETWORK_FILE: &str = "/var/lib/meetbox/network.json";
pub const ACME_CA_FILE: &str = "/var/lib/meetbox/acme-ca.pem";
/// Served on port 80 under `/.well-known/acme-challenge/`, by nginx or by the agent itself. Not
/// below STATE_DIR: that is 0700, and nginx's workers (www-data) must read the challenges when a
/// renewal or a domain change runs while nginx holds port 80.
pub const ACME_WEBROOT: &str = "/var/www/meetbox-acme";
pub const ACME_CHALLENGE_DIR: &str = "/var/www/meetbox-acme/.well-known/acme-challenge";
/// Taken by the instance that runs setup, so that only one console asks the questions.
pub const LOCK_FILE: &str = "/run/meetbox-firstboot.lock";

/// The public certificate, used by nginx (root reads it) ...
pub const TLS_CERT: &str = "/etc/meetbox/tls/fullchain.pem";
pub const TLS_KEY: &str = "/etc/meetbox/tls/privkey.pem";
/// ... and a copy owned by coturn, which drops privileges before reading it.
pub const TURN_TLS_CERT: &str = "/etc/coturn/meetbox/fullchain.pem";
pub const TURN_TLS_KEY: &str = "/etc/coturn/meetbox/privkey.pem";

pub const PROSODY_CFG: &str = "/etc/prosody/prosody.cfg.lua";
pub const PROSODY_SITE_AVAIL: &str = "/etc/prosody/conf.avail/meet.jitsi.cfg.lua";
pub const PROSODY_SITE_LINK: &str = "/etc/prosody/conf.d/meet.jitsi.cfg.lua";
pub const PROSODY_CERT_DIR: &str = "/etc/prosody/certs";
/// Where jitsi-meet-prosody's postinst keeps the internal hosts' certificates (linked from
/// PROSODY_CERT_DIR); it makes new ones, and trusts the auth host's system-wide, when none is here.
pub const PROSODY_CERT_STORE: &str = "/var/lib/prosody";
pub const PROSODY_DATA_DIR: &str = "/var/lib/prosody";
/// Present when jitsi-meet-prosody is installed; its modules are enabled only then.
pub const JITSI_PROSODY_PLUGINS: &str = "/usr/share/jitsi-meet/prosody-plugins";
pub const JICOFO_CONF: &str = "/etc/jitsi/jicofo/jicofo.conf";
pub const JVB_CONF: &str = "/etc/jitsi/videobridge/jvb.conf";
pub const JITSI_MEET_DIR: &str = "/etc/jitsi/meet";
pub const JITSI_WEB_ROOT: &str = "/usr/share/jitsi-meet";
pub const NGINX_SITE_AVAIL: &str = "/etc/nginx/sites-available/meetbox.conf";
pub const NGINX_SITE_LINK: &str = "/etc/nginx/sites-enabled/meetbox.conf";
/// Sites the packages enable: nginx's welcome page, and jitsi-meet-web-config's site for the internal
/// name (it would become the default server, with its access log and a key every image shares).
pub const NGINX_PACKAGE_SITE_LINKS: [&str; 2] = [
    "/etc/nginx/sites-enabled/default",
    "/etc/nginx/sites-enabled/meet.jitsi.conf",
];
pub const TURN_CONF: &str = "/etc/turnserver.conf";
pub const MACHINE_ID: &str = "/etc/machine-id";
/// Written by `meetbox build` (see tuning.rs).
pub const TUNING_FILE: &str = "/etc/meetbox/tuning.toml";
/// The shell-style environment files of Jitsi's Debian packages (created by their postinst; see
/// jitsi_env.rs).
pub const JVB_ENV_FILE: &str = "/etc/jitsi/videobridge/config";
pub const JICOFO_ENV_FILE: &str = "/etc/jitsi/jicofo/config";
/// The swap file (the name Ubuntu's installer uses) and the table that activates it at boot.
pub const SWAP_FILE: &str = "/swap.img";
pub const FSTAB: &str = "/etc/fstab";
pub const SSHD_CONFIG: &str = "/etc/ssh/sshd_config";
pub const ROOT_SSH_DIR: &str = "/root/.ssh";
pub const ROOT_AUTHORIZED_KEYS: &str = "/root/.ssh/authorized_keys";

/// Ports to forward on the router, as shown on the last screen. TURN over TLS shares 443 with the
/// web (render/multiplex.rs), so 5349 stays on the box.
pub const ROUTER_PORTS: [&str; 4] = ["80/tcp", "443/tcp", "10000/udp", "3478/udp"];

/// nginx's stream module reads each TLS ClientHello on 443 and passes TURN to coturn, the rest to
/// the web server on this loopback port. A top-level file: modules-enabled is included outside
/// `http {}`, after the stream module's own `load_module` line (50-mod-stream.conf).
pub const NGINX_MULTIPLEX: &str = "/etc/nginx/modules-enabled/60-meetbox-multiplex.conf";
pub const WEB_BACKEND_PORT: u16 = 4444;
/// coturn's TLS listener; the firewall keeps it to the box, nginx passes 443's TURN to it.
pub const TURN_TLS_PORT: u16 = 5349;

/// The name TURN over 443 is reached by (its own name, so the TLS ClientHello's SNI tells it apart
/// from the web; docs/guide.md). It shares the meeting name's certificate and address.
pub fn turn_name(public_domain: &str) -> String {
    format!("turn.{public_domain}")
}

/// The config.js of the public domain.
pub fn jitsi_config_js(public_domain: &str) -> String {
    format!("{JITSI_MEET_DIR}/{public_domain}-config.js")
}

/// Prosody's account store for `user@host` (prosody escapes every non-alphanumeric byte of the host).
pub fn prosody_account_file(host: &str, user: &str) -> String {
    let encode = |s: &str| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() {
                    (b as char).to_string()
                } else {
                    format!("%{b:02x}")
                }
            })
            .collect::<String>()
    };
    format!(
        "{PROSODY_DATA_DIR}/{}/accounts/{}.dat",
        encode(host),
        encode(user)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_s_workers_can_reach_the_challenges() {
        // STATE_DIR is made 0700 for the secrets; the webroot must live elsewhere.
        assert!(!ACME_WEBROOT.starts_with(&format!("{STATE_DIR}/")));
        assert!(ACME_CHALLENGE_DIR.starts_with(&format!("{ACME_WEBROOT}/")));
    }

    #[test]
    fn prosody_escapes_host_names_like_its_datamanager() {
        assert_eq!(
            prosody_account_file("auth.meet.jitsi", "focus"),
            "/var/lib/prosody/auth%2emeet%2ejitsi/accounts/focus.dat"
        );
    }
}
