-- Written by meetbox-firstboot; changes here are replaced by `meetbox-firstboot reconfigure`.
-- Public name: meet.example.org. The XMPP domain is fixed (meet.jitsi); see docs/firstboot.md.

-- TURN credentials handed to browsers (XEP-0215), shared with coturn's static-auth-secret.
external_service_secret = "TurnSecret0000000000000000000000"
external_services = {
	{ type = "stun", host = "meet.example.org", port = 3478 };
	{ type = "turn", host = "meet.example.org", port = 3478, transport = "udp", secret = true, ttl = 86400, algorithm = "turn" };
	{ type = "turns", host = "meet.example.org", port = 5349, transport = "tcp", secret = true, ttl = 86400, algorithm = "turn" };
}

muc_mapper_domain_base = "meet.jitsi"

-- Users who start meetings log in here.
VirtualHost "meet.jitsi"
	authentication = "internal_hashed"
	ssl = {
		key = "/etc/prosody/certs/meet.jitsi.key";
		certificate = "/etc/prosody/certs/meet.jitsi.crt";
	}
	modules_enabled = { "bosh"; "websocket"; "ping"; "external_services"; "muc_lobby_rooms"; "muc_breakout_rooms"; "speakerstats"; "conference_duration"; "av_moderation"; }
	c2s_require_encryption = false
	main_muc = "conference.meet.jitsi"
	lobby_muc = "lobby.meet.jitsi"
	breakout_rooms_muc = "breakout.meet.jitsi"
	speakerstats_component = "speakerstats.meet.jitsi"
	conference_duration_component = "conferenceduration.meet.jitsi"
	av_moderation_component = "avmoderation.meet.jitsi"

-- Guests join meetings that a logged-in user has started.
VirtualHost "guest.meet.jitsi"
	authentication = "jitsi-anonymous"
	c2s_require_encryption = false
	modules_enabled = { "bosh"; "websocket"; "ping"; "external_services"; }

-- Service accounts of jicofo and the videobridge.
VirtualHost "auth.meet.jitsi"
	authentication = "internal_hashed"
	ssl = {
		key = "/etc/prosody/certs/auth.meet.jitsi.key";
		certificate = "/etc/prosody/certs/auth.meet.jitsi.crt";
	}
	admins = { "focus@auth.meet.jitsi", "jvb@auth.meet.jitsi" }

Component "conference.meet.jitsi" "muc"
	storage = "memory"
	restrict_room_creation = true
	muc_room_locking = false
	muc_room_default_public_jids = true
	admins = { "focus@auth.meet.jitsi" }
	modules_enabled = { "muc_hide_all"; "muc_meeting_id"; "muc_domain_mapper"; "polls"; "muc_rate_limit"; }

Component "internal-muc.meet.jitsi" "muc"
	storage = "memory"
	restrict_room_creation = true
	muc_room_locking = false
	muc_room_default_public_jids = true
	admins = { "focus@auth.meet.jitsi", "jvb@auth.meet.jitsi" }
	modules_enabled = { "ping"; }

Component "lobby.meet.jitsi" "muc"
	storage = "memory"
	restrict_room_creation = true
	muc_room_locking = false
	muc_room_default_public_jids = true

Component "focus.meet.jitsi" "client_proxy"
	target_address = "focus@auth.meet.jitsi"

Component "breakout.meet.jitsi" "muc"
	storage = "memory"
	restrict_room_creation = true
	muc_room_locking = false
	muc_room_default_public_jids = true
	modules_enabled = { "muc_hide_all"; "muc_meeting_id"; "muc_domain_mapper"; "polls"; }

Component "speakerstats.meet.jitsi" "speakerstats_component"
	muc_component = "conference.meet.jitsi"

Component "conferenceduration.meet.jitsi" "conference_duration_component"
	muc_component = "conference.meet.jitsi"

Component "avmoderation.meet.jitsi" "av_moderation_component"
	muc_component = "conference.meet.jitsi"
