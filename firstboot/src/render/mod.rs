//! The configuration files of the Jitsi stack, rendered from the agent's own templates as pure
//! functions of the public name, the per-device secrets, the network facts and the image's tuning.

pub mod boot_menu;
mod coturn;
pub mod firewall;
mod jicofo;
mod jitsi_web;
mod jvb;
mod multiplex;
mod nginx;
mod prosody;

use std::net::IpAddr;

use crate::apply::{FileSpec, Owner};
use crate::layout;
use crate::secrets::Secrets;
use crate::tuning::ConfigJsCaps;

pub use coturn::turnserver_conf;
pub use jicofo::jicofo_conf;
pub use jitsi_web::config_js;
pub use jvb::jvb_conf;
pub use multiplex::nginx_multiplex;
pub use nginx::{nginx_site, CONTENT_SECURITY_POLICY};
pub use prosody::{prosody_cfg, prosody_site};

/// The box's addresses as seen at render time.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct NetworkFacts {
    /// The address of the interface that carries the default route.
    pub lan_address: Option<IpAddr>,
    /// The line's public address (network/follow.rs: the public name's DNS record, or the STUN
    /// server the owner names), when that differs from the LAN address (the box is behind NAT).
    pub public_address: Option<IpAddr>,
    /// The box's own global IPv6 address, when the line has IPv6 (no NAT: clients reach it as is).
    #[serde(default)]
    pub global_ipv6: Option<IpAddr>,
}

/// Everything a template needs.
#[derive(Debug, Clone)]
pub struct Site<'a> {
    pub domain: &'a str,
    pub secrets: &'a Secrets,
    pub network: &'a NetworkFacts,
    /// jitsi-meet-prosody is installed: enable its prosody modules (lobby, breakout rooms, ...).
    pub jitsi_prosody_plugins: bool,
    /// The image opens the web admin to every source (layout::ADMIN_FROM_INTERNET).
    pub admin_from_internet: bool,
    /// The meeting caps of the tuning file, for config.js.
    pub caps: &'a ConfigJsCaps,
}

/// Header line of every rendered file, so a reader knows where changes belong.
pub(crate) fn header(comment: &str) -> String {
    format!(
        "{comment} Written by meetbox-firstboot; changes here are replaced by `meetbox-firstboot reconfigure`.\n"
    )
}

/// Every rendered file with its owner and mode.
pub fn all(site: &Site) -> Vec<FileSpec> {
    let jitsi = |user| Owner::new(user, "jitsi");
    vec![
        FileSpec::new(
            layout::PROSODY_CFG,
            prosody_cfg(site),
            0o640,
            Owner::new("root", "prosody"),
        ),
        FileSpec::new(
            layout::PROSODY_SITE_AVAIL,
            prosody_site(site),
            0o640,
            Owner::new("root", "prosody"),
        ),
        FileSpec::new(
            layout::JICOFO_CONF,
            jicofo_conf(site),
            0o640,
            jitsi("jicofo"),
        ),
        FileSpec::new(layout::JVB_CONF, jvb_conf(site), 0o640, jitsi("jvb")),
        FileSpec::new(
            layout::jitsi_config_js(site.domain),
            config_js(site),
            0o644,
            Owner::ROOT,
        ),
        FileSpec::new(
            layout::NGINX_SITE_AVAIL,
            nginx_site(site),
            0o644,
            Owner::ROOT,
        ),
        FileSpec::new(
            layout::NGINX_MULTIPLEX,
            nginx_multiplex(site.domain),
            0o644,
            Owner::ROOT,
        ),
        FileSpec::new(
            layout::TURN_CONF,
            turnserver_conf(site),
            0o640,
            Owner::new("root", "turnserver"),
        ),
    ]
}

/// The paths [`all`] writes for `domain` (config.js is the only one named after it).
pub fn paths(domain: &str) -> Vec<String> {
    vec![
        layout::PROSODY_CFG.to_string(),
        layout::PROSODY_SITE_AVAIL.to_string(),
        layout::JICOFO_CONF.to_string(),
        layout::JVB_CONF.to_string(),
        layout::jitsi_config_js(domain),
        layout::NGINX_SITE_AVAIL.to_string(),
        layout::NGINX_MULTIPLEX.to_string(),
        layout::TURN_CONF.to_string(),
    ]
}

/// Links that enable the rendered sites: (link, relative target).
pub const LINKS: [(&str, &str); 2] = [
    (
        layout::PROSODY_SITE_LINK,
        "../conf.avail/meet.jitsi.cfg.lua",
    ),
    (layout::NGINX_SITE_LINK, "../sites-available/meetbox.conf"),
];
