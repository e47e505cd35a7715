//! jicofo.conf (HOCON): the focus logs in to the internal auth domain; meetings need an authenticated
//! user (XMPP authentication on the internal domain).

use super::{header, Site};
use crate::layout::*;

pub fn jicofo_conf(site: &Site) -> String {
    let password = &site.secrets.focus_password;
    format!(
        r#"{header}jicofo {{
  authentication {{
    enabled = true
    type = XMPP
    login-url = "{XMPP_DOMAIN}"
  }}
  bridge {{
    brewery-jid = "{BREWERY_ROOM}"
  }}
  xmpp {{
    client {{
      enabled = true
      hostname = "127.0.0.1"
      port = 5222
      domain = "{XMPP_AUTH_DOMAIN}"
      xmpp-domain = "{XMPP_DOMAIN}"
      username = "{FOCUS_USER}"
      password = "{password}"
      conference-muc-jid = "{XMPP_MUC_DOMAIN}"
      client-proxy = "{XMPP_FOCUS_COMPONENT}"
      // Loopback only; prosody's internal certificate is self-signed.
      disable-certificate-verification = true
    }}
    trusted-domains = [ "{XMPP_AUTH_DOMAIN}" ]
  }}
}}
"#,
        header = header("#")
    )
}
