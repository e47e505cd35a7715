//! Prosody: the global file and the virtual hosts of the internal domain. Creating a meeting needs a
//! login on `meet.jitsi` (internal_hashed); guests join anonymously through `guest.meet.jitsi`; rooms have
//! a lobby. Client-to-server traffic arrives only through nginx (BOSH and WebSocket on loopback).

use super::{header, Site};
use crate::layout::*;

/// /etc/prosody/prosody.cfg.lua: global settings, no federation, loopback only, warnings only in the log.
pub fn prosody_cfg(site: &Site) -> String {
    let plugin_paths = if site.jitsi_prosody_plugins {
        format!("plugin_paths = {{ \"{JITSI_PROSODY_PLUGINS}/\" }}\n")
    } else {
        String::new()
    };
    format!(
        r#"{header}
{plugin_paths}modules_enabled = {{
	"roster"; "saslauth"; "tls"; "disco"; "ping"; "time"; "uptime"; "version";
	"posix"; "bosh"; "websocket"; "external_services";
}}
modules_disabled = {{ "s2s"; "offline"; "c2s_limits"; }}

-- Nobody registers from outside: accounts are made by meetbox-firstboot.
allow_registration = false
authentication = "internal_hashed"
storage = "internal"
data_path = "{PROSODY_DATA_DIR}"
pidfile = "/run/prosody/prosody.pid"

-- Only jicofo and the videobridge talk XMPP directly, over loopback; browsers come through nginx.
c2s_interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ 5222 }}
s2s_ports = {{ }}
component_interfaces = {{ "127.0.0.1" }}
http_interfaces = {{ "127.0.0.1" }}
http_ports = {{ 5280 }}
https_ports = {{ }}
http_default_host = "{XMPP_DOMAIN}"
consider_bosh_secure = true
consider_websocket_secure = true
c2s_require_encryption = true
network_default_read_size = 66560

certificates = "certs"

-- Warnings only: client addresses stay out of the logs.
log = {{
	{{ levels = {{ min = "warn" }}; to = "console"; }};
}}

Include "conf.d/*.cfg.lua"
"#,
        header = header("--")
    )
}

/// /etc/prosody/conf.avail/meet.jitsi.cfg.lua: the virtual hosts and MUC components.
///
/// With Jitsi installed, the modules and components are those of the release's own template
/// (`prosody.cfg.lua-jvb.example`), and the file is a fixed point of jitsi-meet-prosody's postinst:
/// every line that script looks for at an upgrade is here, so it edits nothing (docs/jitsi.md).
pub fn prosody_site(site: &Site) -> String {
    let domain = site.domain;
    let turn_name = crate::layout::turn_name(domain);
    let turn_secret = &site.secrets.turn_secret;
    let jitsi = site.jitsi_prosody_plugins;
    let modules = |with_jitsi: &'static str| -> &'static str {
        if jitsi {
            with_jitsi
        } else {
            ""
        }
    };
    let main_modules = modules(
        " \"smacks\"; \"features_identity\"; \"conference_duration\"; \"muc_lobby_rooms\"; \"muc_breakout_rooms\";",
    );
    // Not Jitsi's `limits_exception`: its authentication hook indexes `session.stream`, which BOSH
    // sessions lack, so a BOSH login of jicofo's or the bridge's account never completes; and with
    // no `limits` module loaded it has no limit to lift. `unlimited_jids` stays, as the postinst
    // looks for it.
    let auth_modules = modules(" \"smacks\";");
    let muc_modules = modules(
        " \"muc_hide_all\"; \"muc_meeting_id\"; \"muc_domain_mapper\"; \"muc_rate_limit\"; \"muc_password_whitelist\";",
    );
    let hide_all = modules(" \"muc_hide_all\";");
    let lobby_modules = modules(" \"muc_hide_all\"; \"muc_rate_limit\";");
    let guest_auth = if jitsi {
        "jitsi-anonymous"
    } else {
        "anonymous"
    };
    let jitsi_components = if jitsi {
        format!(
            r#"
-- Proxy to jicofo's user JID, so that it doesn't have to register as a component.
Component "{XMPP_FOCUS_COMPONENT}" "client_proxy"
	target_address = "{FOCUS_USER}@{XMPP_AUTH_DOMAIN}"

Component "{XMPP_BREAKOUT_DOMAIN}" "muc"
	restrict_room_creation = true
	storage = "memory"
	modules_enabled = {{
		"muc_hide_all"; "muc_meeting_id"; "muc_domain_mapper"; "muc_rate_limit";
		--"polls"; -- gone from Jitsi: polls are the component below
	}}
	admins = {{ "{FOCUS_USER}@{XMPP_AUTH_DOMAIN}" }}
	muc_room_locking = false
	muc_room_default_public_jids = true

Component "speakerstats.{XMPP_DOMAIN}" "speakerstats_component"
	muc_component = "{XMPP_MUC_DOMAIN}"

Component "endconference.{XMPP_DOMAIN}" "end_conference"
	muc_component = "{XMPP_MUC_DOMAIN}"

Component "avmoderation.{XMPP_DOMAIN}" "av_moderation_component"
	muc_component = "{XMPP_MUC_DOMAIN}"

Component "filesharing.{XMPP_DOMAIN}" "filesharing_component"
	muc_component = "{XMPP_MUC_DOMAIN}"

Component "metadata.{XMPP_DOMAIN}" "room_metadata_component"
	muc_component = "{XMPP_MUC_DOMAIN}"
	breakout_rooms_component = "{XMPP_BREAKOUT_DOMAIN}"

Component "{XMPP_POLLS_COMPONENT}" "polls_component"
"#
        )
    } else {
        String::new()
    };
    format!(
        r#"{header}-- Public name: {domain}. The XMPP domain is fixed ({XMPP_DOMAIN}); see docs/firstboot.md.

-- Prosody 13 no longer makes component admins room owners; jicofo needs to be one.
component_admins_as_room_owners = true

-- jicofo and the videobridge are never rate-limited.
unlimited_jids = {{ "{FOCUS_USER}@{XMPP_AUTH_DOMAIN}", "{JVB_USER}@{XMPP_AUTH_DOMAIN}" }}

-- TURN credentials handed to browsers (XEP-0215), shared with coturn's static-auth-secret. TURN over
-- TLS is on 443 under its own name, for guests whose network lets only HTTPS out.
external_service_secret = "{turn_secret}"
external_services = {{
	{{ type = "stun", host = "{domain}", port = 3478 }};
	{{ type = "turn", host = "{domain}", port = 3478, transport = "udp", secret = true, ttl = 86400, algorithm = "turn" }};
	{{ type = "turns", host = "{turn_name}", port = 443, transport = "tcp", secret = true, ttl = 86400, algorithm = "turn" }};
}}

muc_mapper_domain_base = "{XMPP_DOMAIN}"

-- Users who start meetings log in here.
VirtualHost "{XMPP_DOMAIN}"
	authentication = "internal_hashed"
	ssl = {{
		key = "{PROSODY_CERT_DIR}/{XMPP_DOMAIN}.key";
		certificate = "{PROSODY_CERT_DIR}/{XMPP_DOMAIN}.crt";
	}}
	modules_enabled = {{ "bosh"; "websocket"; "ping"; "external_services";{main_modules} }}
	c2s_require_encryption = false
	main_muc = "{XMPP_MUC_DOMAIN}"
	lobby_muc = "{XMPP_LOBBY_DOMAIN}"
	breakout_rooms_muc = "{XMPP_BREAKOUT_DOMAIN}"

-- Guests join meetings that a logged-in user has started.
VirtualHost "{XMPP_GUEST_DOMAIN}"
	authentication = "{guest_auth}"
	c2s_require_encryption = false
	modules_enabled = {{ "bosh"; "websocket"; "ping"; "external_services"; }}

-- Service accounts of jicofo and the videobridge.
VirtualHost "{XMPP_AUTH_DOMAIN}"
	authentication = "internal_hashed"
	ssl = {{
		key = "{PROSODY_CERT_DIR}/{XMPP_AUTH_DOMAIN}.key";
		certificate = "{PROSODY_CERT_DIR}/{XMPP_AUTH_DOMAIN}.crt";
	}}
	modules_enabled = {{{auth_modules} }}
	admins = {{ "{FOCUS_USER}@{XMPP_AUTH_DOMAIN}", "{JVB_USER}@{XMPP_AUTH_DOMAIN}" }}

Component "{XMPP_MUC_DOMAIN}" "muc"
	restrict_room_creation = true
	storage = "memory"
	modules_enabled = {{{muc_modules} }}
	admins = {{ "{FOCUS_USER}@{XMPP_AUTH_DOMAIN}" }}
	muc_password_whitelist = {{ "{FOCUS_USER}@{XMPP_AUTH_DOMAIN}" }}
	muc_room_locking = false
	muc_room_default_public_jids = true

-- Where videobridges announce themselves to jicofo.
Component "{XMPP_INTERNAL_MUC_DOMAIN}" "muc"
	storage = "memory"
	modules_enabled = {{{hide_all} "ping"; }}
	admins = {{ "{FOCUS_USER}@{XMPP_AUTH_DOMAIN}", "{JVB_USER}@{XMPP_AUTH_DOMAIN}" }}
	muc_room_locking = false
	muc_room_default_public_jids = true

Component "{XMPP_LOBBY_DOMAIN}" "muc"
	storage = "memory"
	restrict_room_creation = true
	muc_room_locking = false
	muc_room_default_public_jids = true
	modules_enabled = {{{lobby_modules} }}
{jitsi_components}"#,
        header = header("--")
    )
}
