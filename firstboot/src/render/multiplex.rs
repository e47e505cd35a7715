//! Port 443 for both the web and TURN over TLS, so guests on networks that let only HTTPS out still
//! get media. nginx's stream module reads the TLS ClientHello without ending TLS (`ssl_preread`) and
//! passes the connection on untouched: to coturn when the client asked for the TURN name (SNI) or
//! named TURN's ALPN protocol (`stun.turn`, RFC 7443), to the web server otherwise.
//!
//! Why SNI and not ALPN alone: browsers' TURN clients send the TURN server's name but no ALPN, and
//! routing "no ALPN" to TURN (Jitsi's old multiplexing, now deprecated upstream) breaks every web
//! client that sends none. A name of its own costs one more DNS record, pointing where the meeting
//! name points; the router forwards nothing new.

use super::header;
use crate::layout::{turn_name, TURN_TLS_PORT, WEB_BACKEND_PORT};

pub fn nginx_multiplex(domain: &str) -> String {
    let turn = turn_name(domain).replace('.', r"\.");
    format!(
        r#"{header}
stream {{
    # The ClientHello's name and ALPN list, as one string: "name|protocols".
    map "$ssl_preread_server_name|$ssl_preread_alpn_protocols" $meetbox_backend {{
        ~^{turn}\|      127.0.0.1:{TURN_TLS_PORT};
        ~\bstun\.turn\b 127.0.0.1:{TURN_TLS_PORT};
        default         127.0.0.1:{WEB_BACKEND_PORT};
    }}

    server {{
        listen 443;
        listen [::]:443;
        ssl_preread on;
        proxy_pass $meetbox_backend;
        # A ClientHello comes at once; a client that sends none in time is dropped.
        preread_timeout 10s;
        proxy_connect_timeout 5s;
        # Media over TURN stays open for the whole meeting.
        proxy_timeout 1h;
    }}
}}
"#,
        header = header("#"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_is_chosen_by_its_name_or_by_turns_alpn_and_everything_else_goes_to_the_web() {
        let conf = nginx_multiplex("meet.example.org");
        assert!(
            conf.contains(r"~^turn\.meet\.example\.org\|      127.0.0.1:5349;"),
            "{conf}"
        );
        assert!(conf.contains(r"~\bstun\.turn\b 127.0.0.1:5349;"), "{conf}");
        assert!(conf.contains("default         127.0.0.1:4444;"), "{conf}");
        assert!(conf.contains("listen 443;") && conf.contains("listen [::]:443;"));
        // No access log: the stream module logs nothing unless told to.
        assert!(!conf.contains("access_log"), "{conf}");
    }
}
