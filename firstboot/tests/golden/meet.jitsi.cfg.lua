-- Written by meetbox-firstboot; changes here are replaced by `meetbox-firstboot reconfigure`.
-- Public name: meet.example.org. The XMPP domain is fixed (meet.jitsi); see docs/firstboot.md.

-- Prosody 13 no longer makes component admins room owners; jicofo needs to be one.
component_admins_as_room_owners = true

-- jicofo and the videobridge are never rate-limited.
unlimited_jids = { "focus@auth.meet.jitsi", "jvb@auth.meet.jitsi" }

-- TURN credentials handed to browsers (XEP-0215), shared with coturn's static-auth-secret. TURN over
-- TLS is on 443 under its own name, for guests whose network lets only HTTPS out.
external_service_secret = "TurnSecret0000000000000000000000"
external_services = {
	{ type = "stun", host = "meet.example.org", port = 3478 };
	{ type = "turn", host = "meet.example.org", port = 3478, transport = "udp", secret = true, ttl = 86400, algorithm = "turn" };
	{ type = "turns", host = "turn.meet.example.org", port = 443, transport = "tcp", secret = true, ttl = 86400, algorithm = "turn" };
}

muc_mapper_domain_base = "meet.jitsi"

-- Users who start meetings log in here.
VirtualHost "meet.jitsi"
	authentication = "internal_hashed"
	ssl = {
		key = "/etc/prosody/certs/meet.jitsi.key";
		certificate = "/etc/prosody/certs/meet.jitsi.crt";
	}
	modules_enabled = { "bosh"; "websocket"; "ping"; "external_services"; "smacks"; "features_identity"; "conference_duration"; "muc_lobby_rooms"; "muc_breakout_rooms"; }
	c2s_require_encryption = false
	main_muc = "conference.meet.jitsi"
	lobby_muc = "lobby.meet.jitsi"
	breakout_rooms_muc = "breakout.meet.jitsi"

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
	modules_enabled = { "smacks"; }
	admins = { "focus@auth.meet.jitsi", "jvb@auth.meet.jitsi" }

Component "conference.meet.jitsi" "muc"
	restrict_room_creation = true
	storage = "memory"
	modules_enabled = { "muc_hide_all"; "muc_meeting_id"; "muc_domain_mapper"; "muc_rate_limit"; "muc_password_whitelist"; }
	admins = { "focus@auth.meet.jitsi" }
	muc_password_whitelist = { "focus@auth.meet.jitsi" }
	muc_room_locking = false
	muc_room_default_public_jids = true

-- Where videobridges announce themselves to jicofo.
Component "internal.auth.meet.jitsi" "muc"
	storage = "memory"
	modules_enabled = { "muc_hide_all"; "ping"; }
	admins = { "focus@auth.meet.jitsi", "jvb@auth.meet.jitsi" }
	muc_room_locking = false
	muc_room_default_public_jids = true

Component "lobby.meet.jitsi" "muc"
	storage = "memory"
	restrict_room_creation = true
	muc_room_locking = false
	muc_room_default_public_jids = true
	modules_enabled = { "muc_hide_all"; "muc_rate_limit"; }

-- Proxy to jicofo's user JID, so that it doesn't have to register as a component.
Component "focus.meet.jitsi" "client_proxy"
	target_address = "focus@auth.meet.jitsi"

Component "breakout.meet.jitsi" "muc"
	restrict_room_creation = true
	storage = "memory"
	modules_enabled = {
		"muc_hide_all"; "muc_meeting_id"; "muc_domain_mapper"; "muc_rate_limit";
		--"polls"; -- gone from Jitsi: polls are the component below
	}
	admins = { "focus@auth.meet.jitsi" }
	muc_room_locking = false
	muc_room_default_public_jids = true

Component "speakerstats.meet.jitsi" "speakerstats_component"
	muc_component = "conference.meet.jitsi"

Component "endconference.meet.jitsi" "end_conference"
	muc_component = "conference.meet.jitsi"

Component "avmoderation.meet.jitsi" "av_moderation_component"
	muc_component = "conference.meet.jitsi"

Component "filesharing.meet.jitsi" "filesharing_component"
	muc_component = "conference.meet.jitsi"

Component "metadata.meet.jitsi" "room_metadata_component"
	muc_component = "conference.meet.jitsi"
	breakout_rooms_component = "breakout.meet.jitsi"

Component "polls.meet.jitsi" "polls_component"
