//! The web client's config.js: the internal XMPP domain behind the public URLs, guests on the guest
//! host, STUN from the box itself, nothing fetched from third parties, and the meeting caps of the
//! image's tuning, so that a meeting never asks more of the line and the box than sizing planned.

use super::{header, Site};
use crate::layout::*;
use crate::tuning::MIN_RESOLUTION;

pub fn config_js(site: &Site) -> String {
    let domain = site.domain;
    let caps = site.caps;
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

    // Caps from /etc/meetbox/tuning.toml (docs/sizing.md): what the box and its line were sized for.
    resolution: {resolution},
    constraints: {{
        video: {{
            height: {{ ideal: {resolution}, max: {resolution}, min: {MIN_RESOLUTION} }},
        }},
    }},
    channelLastN: {channel_last_n},
    maxFullResolutionParticipants: {max_full_resolution_participants},
    startAudioMuted: {start_audio_muted},
    startVideoMuted: {start_video_muted},
}};
"#,
        header = header("//"),
        resolution = caps.resolution,
        channel_last_n = caps.channel_last_n,
        max_full_resolution_participants = caps.max_full_resolution_participants,
        start_audio_muted = caps.start_audio_muted,
        start_video_muted = caps.start_video_muted,
    )
}
