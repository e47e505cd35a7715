//! The nginx site: port 80 only answers ACME challenges and redirects; port 443 (through the
//! multiplexer, multiplex.rs) serves Jitsi with Mozilla's intermediate TLS settings and security
//! headers; the admin's port passes local-network visitors to the web admin.
//!
//! nginx drops server-level `add_header`s in any location that has its own, so no location here sets a
//! header: they are all set once, at server level, with `always` so error pages carry them too.

use super::{header, Site};
use crate::layout::*;
use crate::network::{LAN_IPV4, LAN_IPV6};

/// A policy that keeps the Jitsi web client working: it needs inline scripts and WebAssembly (noise
/// suppression, virtual backgrounds), workers from blob: URLs, and its own WebSockets.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self' 'unsafe-inline' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; media-src 'self' data: blob:; font-src 'self' data:; connect-src 'self' wss://{domain}; worker-src 'self' blob:; frame-src 'self'; frame-ancestors 'self'; object-src 'none'; base-uri 'self'; form-action 'self'";

/// Mozilla intermediate: ECDHE with AEAD only (TLS 1.2); TLS 1.3 suites are OpenSSL's defaults.
const CIPHERS: &str = "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";

pub fn nginx_site(site: &Site) -> String {
    let domain = site.domain;
    let csp = CONTENT_SECURITY_POLICY.replace("{domain}", domain);
    let config_js = jitsi_config_js(domain);
    format!(
        r#"{header}
server {{
    listen 80;
    listen [::]:80;
    server_name {domain};
    server_tokens off;
    access_log off;
    error_log syslog:server=unix:/dev/log,nohostname crit;

    if ($request_method !~ ^(GET|HEAD)$) {{
        return 405;
    }}

    location ^~ /.well-known/acme-challenge/ {{
        root {ACME_WEBROOT};
        default_type text/plain;
        try_files $uri =404;
    }}

    location / {{
        return 301 https://{domain}$request_uri;
    }}
}}

# Port 443 itself is nginx's stream multiplexer (multiplex.rs), which passes web clients here.
server {{
    listen 127.0.0.1:{WEB_BACKEND_PORT} ssl http2;
    server_name {domain};
    server_tokens off;
    access_log off;
    error_log syslog:server=unix:/dev/log,nohostname crit;

{tls}
    # All headers here, none in a location (a location's add_header would drop these).
    add_header Strict-Transport-Security "max-age=63072000" always;
    add_header X-Content-Type-Options "nosniff" always;
    add_header Referrer-Policy "no-referrer" always;
    add_header Content-Security-Policy "{csp}" always;
    add_header Permissions-Policy "geolocation=(), payment=(), usb=()" always;

    if ($request_method !~ ^(GET|HEAD|POST|OPTIONS)$) {{
        return 405;
    }}

    # No compression of pages and XMPP (BREACH: secrets beside attacker-chosen text); the
    # client's scripts and styles below, which hold no secret, are compressed.
    gzip off;

    root {JITSI_WEB_ROOT};
    index index.html;
    ssi on;
    ssi_types application/x-javascript application/javascript;
    error_page 404 /static/404.html;
    client_max_body_size 1m;

    location = /config.js {{
        alias {config_js};
    }}

    location = /external_api.js {{
        alias {JITSI_WEB_ROOT}/libs/external_api.min.js;
    }}

    # Compressed: scripts, styles and data of the client (nginx would compress every
    # text/html answer too, error pages included, so no HTML goes through here).
    location ~ ^/(libs|css|static|images|fonts|lang|sounds)/(.*\.(?:js|css|json|svg|wasm|map))$ {{
        alias {JITSI_WEB_ROOT}/$1/$2;
        gzip on;
        gzip_types text/css application/javascript application/json image/svg+xml application/wasm;
    }}

    location ~ ^/(libs|css|static|images|fonts|lang|sounds)/(.*)$ {{
        alias {JITSI_WEB_ROOT}/$1/$2;
    }}

    # XMPP over BOSH and WebSocket to prosody on loopback.
    location = /http-bind {{
        proxy_pass http://127.0.0.1:5280/http-bind;
        proxy_set_header Host $host;
        proxy_buffering off;
    }}

    location = /xmpp-websocket {{
        proxy_pass http://127.0.0.1:5280/xmpp-websocket;
        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection "upgrade";
        proxy_set_header Host $host;
        tcp_nodelay on;
        proxy_read_timeout 900s;
    }}

    # The videobridge's data channel.
    location ~ ^/colibri-ws/([a-zA-Z0-9\-._]+)/(.*) {{
        proxy_pass http://127.0.0.1:9090/colibri-ws/$1/$2$is_args$args;
        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection "upgrade";
        tcp_nodelay on;
        proxy_read_timeout 900s;
    }}

    # Room names are paths: serve the client for them.
    location ~ ^/([^/?&:'"]+)$ {{
        try_files $uri @room;
    }}

    location @room {{
        rewrite ^/(.*)$ /index.html break;
    }}
}}

# The web admin (docs/admin.md): local-network sources only (the firewall allows the same), with
# the same certificate, passed to the unprivileged admin process on loopback.
server {{
    listen {ADMIN_PORT} ssl http2 default_server;
    listen [::]:{ADMIN_PORT} ssl http2 default_server;
    server_name _;
    server_tokens off;
    access_log off;
    error_log syslog:server=unix:/dev/log,nohostname crit;

{tls}
{admin_sources}
    add_header Strict-Transport-Security "max-age=63072000" always;
    add_header X-Content-Type-Options "nosniff" always;
    add_header Referrer-Policy "no-referrer" always;
    gzip off;
    client_max_body_size 64k;

    location / {{
        proxy_pass http://{ADMIN_LISTEN};
        proxy_set_header Host $host;
        proxy_set_header X-Real-IP $remote_addr;
        proxy_read_timeout 200s;
    }}
}}
"#,
        header = header("#"),
        tls = tls_settings(),
        admin_sources = admin_sources(site.admin_from_internet)
    )
}

/// The certificate and Mozilla's intermediate settings, the same for Jitsi's site and the admin's.
fn tls_settings() -> String {
    format!(
        "    ssl_certificate {TLS_CERT};
    ssl_certificate_key {TLS_KEY};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ecdh_curve X25519:prime256v1:secp384r1;
    ssl_ciphers {CIPHERS};
    ssl_prefer_server_ciphers off;
    ssl_session_timeout 1d;
    ssl_session_cache shared:MeetboxTLS:10m;
    ssl_session_tickets off;
"
    )
}

/// `allow` lines for the local network's sources, then `deny all` (none when the image opens the
/// admin to every source).
fn admin_sources(from_internet: bool) -> String {
    if from_internet {
        return "    # Open to every source: the profile's services.admin_from_internet.\n".into();
    }
    let mut lines: String = LAN_IPV4
        .iter()
        .chain(LAN_IPV6.iter())
        .map(|net| format!("    allow {net};\n"))
        .collect();
    lines.push_str("    deny all;\n");
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_s_sources_are_the_local_network_unless_the_profile_opens_it() {
        let lan = admin_sources(false);
        for net in LAN_IPV4.iter().chain(LAN_IPV6.iter()) {
            assert!(lan.contains(&format!("allow {net};")), "{lan}");
        }
        assert!(lan.ends_with("deny all;\n"));
        let open = admin_sources(true);
        assert!(!open.contains("allow") && !open.contains("deny"), "{open}");
    }
}
