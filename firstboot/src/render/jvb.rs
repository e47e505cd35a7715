//! jvb.conf (HOCON): the videobridge's XMPP login, media on UDP 10000, and NAT handled by a static
//! mapping of the LAN address to the public one instead of asking a third-party STUN server.

use super::{header, Site};
use crate::layout::*;

pub fn jvb_conf(site: &Site) -> String {
    let secrets = site.secrets;
    let domain = site.domain;
    let mapping = match (site.network.lan_address, site.network.public_address) {
        (Some(lan), Some(public)) if lan != public => format!(
            "      static-mappings = [\n        {{ local-address = \"{lan}\", public-address = \"{public}\", name = \"router\" }}\n      ]\n"
        ),
        _ => "      // No NAT detected: the box's own address is its public one.\n".to_string(),
    };
    format!(
        r#"{header}videobridge {{
  ice {{
    udp {{
      port = 10000
    }}
    // LAN participants reach the bridge directly, without hairpin NAT on the router.
    advertise-private-candidates = true
  }}
  http-servers {{
    public {{
      host = "127.0.0.1"
      port = 9090
    }}
    private {{
      host = "127.0.0.1"
    }}
  }}
  websockets {{
    enabled = true
    domains = [ "{domain}:443" ]
    tls = true
    server-id = "meetbox"
  }}
  apis {{
    xmpp-client {{
      configs {{
        meetbox {{
          hostname = "127.0.0.1"
          domain = "{XMPP_AUTH_DOMAIN}"
          username = "{JVB_USER}"
          password = "{password}"
          muc_jids = "{BREWERY_ROOM}"
          muc_nickname = "{nickname}"
          // Loopback only; prosody's internal certificate is self-signed.
          disable_certificate_verification = true
        }}
      }}
    }}
  }}
}}

ice4j {{
  harvest {{
    mapping {{
      stun {{
        // No third-party STUN server: the public address comes from the static mapping.
        addresses = [ ]
      }}
      aws {{
        enabled = false
      }}
{mapping}    }}
  }}
}}
"#,
        header = header("#"),
        password = secrets.jvb_password,
        nickname = secrets.jvb_muc_nickname,
    )
}
