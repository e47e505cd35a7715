//! The web client's config.js: the internal XMPP domain behind the public URLs, guests on the guest
//! host, STUN from the box itself, and nothing fetched from third parties.

use super::{header, Site};
use crate::layout::*;

pub fn config_js(site: &Site) -> String {
    let domain = site.domain;
    format!(
        r#"{header}var config = {{
    hosts: {{
        domain: '{XMPP_DOMAIN}',
        anonymousdomain: '{XMPP_GUEST_DOMAIN}',
        muc: '{XMPP_MUC_DOMAIN}',
    }},
    bosh: 'https://{domain}/http-bind',
    websocket: 'wss://{domain}/xmpp-websocket',

    // Peer-to-peer calls of two use the box's own STUN (coturn); TURN credentials come from prosody.
    p2p: {{
        enabled: true,
        stunServers: [
            {{ urls: 'stun:{domain}:3478' }},
        ],
    }},

    // Privacy: no requests to third parties.
    disableThirdPartyRequests: true,
    analytics: {{ disabled: true }},
    gravatar: {{ disabled: true }},
    giphy: {{ enabled: false }},
    whiteboard: {{ enabled: false }},
    recordingService: {{ enabled: false }},
    liveStreaming: {{ enabled: false }},
    transcription: {{ enabled: false }},
    disableInviteFunctions: false,
    doNotStoreRoom: true,

    prejoinConfig: {{ enabled: true }},
    enableWelcomePage: true,
    enableNoisyMicDetection: true,
    resolution: 720,
    constraints: {{
        video: {{
            height: {{ ideal: 720, max: 720, min: 180 }},
        }},
    }},
}};
"#,
        header = header("//")
    )
}
