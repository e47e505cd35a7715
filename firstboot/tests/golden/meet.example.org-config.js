// Written by meetbox-firstboot; changes here are replaced by `meetbox-firstboot reconfigure`.
var config = {
    hosts: {
        domain: 'meet.jitsi',
        anonymousdomain: 'guest.meet.jitsi',
        muc: 'conference.meet.jitsi',
    },
    bosh: 'https://meet.example.org/http-bind',
    websocket: 'wss://meet.example.org/xmpp-websocket',

    // Peer-to-peer calls of two use the box's own STUN (coturn); TURN credentials come from prosody.
    p2p: {
        enabled: true,
        stunServers: [
            { urls: 'stun:meet.example.org:3478' },
        ],
    },

    // Privacy: no requests to third parties.
    disableThirdPartyRequests: true,
    analytics: { disabled: true },
    gravatar: { disabled: true },
    giphy: { enabled: false },
    whiteboard: { enabled: false },
    recordingService: { enabled: false },
    liveStreaming: { enabled: false },
    transcription: { enabled: false },
    disableInviteFunctions: false,
    doNotStoreRoom: true,

    prejoinConfig: { enabled: true },
    enableWelcomePage: true,
    enableNoisyMicDetection: true,

    // Caps from /etc/meetbox/tuning.toml (docs/sizing.md): what the box and its line were sized for.
    resolution: 720,
    constraints: {
        video: {
            height: { ideal: 720, max: 720, min: 180 },
        },
    },
    channelLastN: 10,
    maxFullResolutionParticipants: 3,
    startAudioMuted: 10,
    startVideoMuted: 11,
};
