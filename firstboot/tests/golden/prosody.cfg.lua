-- Written by meetbox-firstboot; changes here are replaced by `meetbox-firstboot reconfigure`.

plugin_paths = { "/usr/share/jitsi-meet/prosody-plugins/" }
modules_enabled = {
	"roster"; "saslauth"; "tls"; "disco"; "ping"; "time"; "uptime"; "version";
	"posix"; "bosh"; "websocket"; "external_services";
}
modules_disabled = { "s2s"; "offline"; "c2s_limits"; }

-- Nobody registers from outside: accounts are made by meetbox-firstboot.
allow_registration = false
authentication = "internal_hashed"
storage = "internal"
data_path = "/var/lib/prosody"
pidfile = "/run/prosody/prosody.pid"

-- Only jicofo and the videobridge talk XMPP directly, over loopback; browsers come through nginx.
c2s_interfaces = { "127.0.0.1" }
c2s_ports = { 5222 }
s2s_ports = { }
component_interfaces = { "127.0.0.1" }
http_interfaces = { "127.0.0.1" }
http_ports = { 5280 }
https_ports = { }
http_default_host = "meet.jitsi"
consider_bosh_secure = true
consider_websocket_secure = true
c2s_require_encryption = true
network_default_read_size = 66560

certificates = "certs"

-- Warnings only: client addresses stay out of the logs.
log = {
	{ levels = { min = "warn" }; to = "console"; };
}

Include "conf.d/*.cfg.lua"
