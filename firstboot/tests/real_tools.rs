//! The rendered configuration accepted by the real programs: the firewall (nft -c), nginx (syntax, then serving with its
//! headers), prosody (config check, and its own SCRAM code agreeing with our account records), coturn,
//! HOCON parsing of jicofo.conf and jvb.conf, and node on config.js.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meetbox_firstboot::layout;
use meetbox_firstboot::render;
use meetbox_firstboot::secrets::scram;

/// The real nft parser and kernel check accept both rulesets (`nft -c` changes nothing).
#[test]
fn nft_accepts_both_rulesets() {
    if !common::have_tool("nft", "nftables") || !common::is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for ssh in [false, true] {
        let path = dir.path().join(format!("nftables-ssh-{ssh}.conf"));
        std::fs::write(&path, render::firewall::nftables(ssh, ssh)).unwrap();
        let output = std::process::Command::new("nft")
            .arg("-c")
            .arg("-f")
            .arg(&path)
            .output()
            .expect("nft runs");
        assert!(
            output.status.success(),
            "nft -c rejects the ruleset (ssh {ssh}): {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn nginx_accepts_the_site() {
    if !common::have_tool("nginx", "nginx") || !common::is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let conf = common::nginx::setup(dir.path(), None);
    let out = common::run(
        Command::new("nginx")
            .arg("-t")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "nginx -t refused the site:\n{stderr}");
    assert!(stderr.contains("test is successful"), "{stderr}");
}

fn curl(args: &[&str]) -> String {
    let out = common::run(
        Command::new("curl")
            .args(["-sk", "--max-time", "5", "-D", "-", "-o", "/dev/null"])
            .args(args),
    );
    String::from_utf8_lossy(&out.stdout).to_lowercase()
}

#[test]
fn nginx_serves_the_security_headers_everywhere() {
    if !common::have_tool("nginx", "nginx")
        || !common::have_tool("curl", "curl")
        || !common::is_root()
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ports = common::nginx::Ports::free(common::free_port());
    let (http, https) = (ports.http, ports.https);
    let conf = common::nginx::setup(dir.path(), Some(ports));
    let _nginx = common::nginx::start(Command::new("nginx"), dir.path(), &conf);
    let resolve = format!("meet.example.org:{https}:127.0.0.1");
    let base = format!("https://meet.example.org:{https}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while curl(&["--resolve", &resolve, &format!("{base}/")]).is_empty() {
        assert!(
            Instant::now() < deadline,
            "nginx did not start: {:?}",
            std::fs::read_to_string(dir.path().join("error.log"))
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for path in ["/", "/config.js", "/someroom", "/static/missing.png"] {
        let headers = curl(&["--resolve", &resolve, &format!("{base}{path}")]);
        for needle in [
            "strict-transport-security: max-age=63072000",
            "x-content-type-options: nosniff",
            "referrer-policy: no-referrer",
            "content-security-policy: default-src 'self'; script-src 'self' 'unsafe-inline' 'wasm-unsafe-eval'",
            "server: nginx\r\n",
        ] {
            assert!(headers.contains(needle), "{path}: missing {needle:?} in\n{headers}");
        }
    }
    // Debian's nginx.conf turns gzip on (as this test's does): pages and error pages stay
    // uncompressed (BREACH), the client's scripts are compressed.
    for (path, compressed) in [
        ("/", false),
        ("/someroom", false),
        ("/static/missing.png", false),
        ("/libs/app.bundle.min.js", true),
    ] {
        let headers = curl(&[
            "--resolve",
            &resolve,
            "-H",
            "Accept-Encoding: gzip",
            &format!("{base}{path}"),
        ]);
        assert_eq!(
            headers.contains("content-encoding: gzip"),
            compressed,
            "{path}:\n{headers}"
        );
    }
    let put = curl(&["--resolve", &resolve, "-X", "PUT", &format!("{base}/")]);
    assert!(
        put.starts_with("http/2 405") || put.starts_with("http/1.1 405"),
        "{put}"
    );
    assert!(put.contains("x-content-type-options: nosniff"), "{put}");
    let trace = curl(&["--resolve", &resolve, "-X", "DELETE", &format!("{base}/")]);
    assert!(trace.contains(" 405"), "{trace}");
    // Port 80: ACME challenges from the webroot, everything else redirected.
    let http_resolve = format!("meet.example.org:{http}:127.0.0.1");
    let challenge = common::run(Command::new("curl").args([
        "-s",
        "--max-time",
        "5",
        "--resolve",
        &http_resolve,
        &format!("http://meet.example.org:{http}/.well-known/acme-challenge/tok-1"),
    ]));
    assert_eq!(String::from_utf8_lossy(&challenge.stdout), "tok-1.thumb");
    let redirect = curl(&[
        "--resolve",
        &http_resolve,
        &format!("http://meet.example.org:{http}/room"),
    ]);
    assert!(
        redirect.contains("location: https://meet.example.org/room"),
        "{redirect}"
    );
}

#[test]
fn prosody_accepts_the_configuration() {
    if !common::have_tool("prosodyctl", "prosody") {
        return;
    }
    for jitsi in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("conf.d")).unwrap();
        std::fs::create_dir_all(dir.path().join("certs")).unwrap();
        let cfg = dir.path().join("prosody.cfg.lua");
        std::fs::write(&cfg, common::with_site(jitsi, render::prosody_cfg)).unwrap();
        std::fs::write(
            dir.path().join("conf.d/meet.jitsi.cfg.lua"),
            common::with_site(jitsi, render::prosody_site),
        )
        .unwrap();
        let out = common::run(
            Command::new("prosodyctl")
                .arg("--config")
                .arg(&cfg)
                .args(["check", "config"]),
        );
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "prosodyctl check config (jitsi={jitsi}) failed:\n{text}"
        );
        assert!(
            !text.to_lowercase().contains("error"),
            "jitsi={jitsi}:\n{text}"
        );
        // Lua itself parses both files.
        if common::have_tool("luac5.4", "lua5.4") {
            for file in [cfg.clone(), dir.path().join("conf.d/meet.jitsi.cfg.lua")] {
                let out = common::run(Command::new("luac5.4").arg("-p").arg(&file));
                assert!(
                    out.status.success(),
                    "{}: {}",
                    file.display(),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

#[test]
fn prosody_computes_the_same_scram_keys() {
    if !common::have_tool("lua5.4", "lua5.4")
        || !Path::new("/usr/lib/prosody/util/sasl/scram.lua").exists()
    {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("prosody's Lua library is required (apt-get install prosody lua5.4)");
        }
        return;
    }
    for (password, salt) in [
        ("horse staple cart moon", "c2FsdHNhbHQ"),
        ("Tr0ub4dor&3xyz!", "abc123"),
    ] {
        let ours = scram::credential(password, salt, scram::ITERATIONS);
        let script = r#"
package.path = "/usr/lib/prosody/?.lua;" .. package.path
package.cpath = "/usr/lib/prosody/?.so;" .. package.cpath
local scram = require "util.sasl.scram"
local hex = require "util.hex"
local ok, stored, server = scram.getAuthenticationDatabaseSHA1(arg[1], arg[2], tonumber(arg[3]))
io.write(hex.to(stored), " ", hex.to(server))
"#;
        let out = common::run(
            Command::new("lua5.4")
                .args(["-e", script, "-"])
                .arg(password)
                .arg(salt)
                .arg(scram::ITERATIONS.to_string())
                .stdin(Stdio::null()),
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(text, format!("{} {}", ours.stored_key, ours.server_key));
    }
}

#[test]
fn coturn_runs_with_the_configuration() {
    if !common::have_tool("turnserver", "coturn") || !common::is_root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = common::nginx::certificate_in(dir.path());
    let (plain, tls_port) = (common::free_port(), common::free_port());
    let conf = common::with_site(true, render::turnserver_conf)
        .replace(layout::TURN_TLS_CERT, &cert)
        .replace(layout::TURN_TLS_KEY, &key)
        .replace(
            "listening-port=3478",
            &format!("listening-port={plain}\nlistening-ip=127.0.0.1"),
        )
        .replace(
            "tls-listening-port=5349",
            &format!("tls-listening-port={tls_port}"),
        )
        .replace("no-stdout-log\nlog-file=/dev/null\n", "")
        .replace("external-ip=198.51.99.10/192.168.1.20\n", "");
    let file = dir.path().join("turnserver.conf");
    std::fs::write(&file, conf).unwrap();
    let log = dir.path().join("turn.log");
    let child = Command::new("turnserver")
        .arg("-c")
        .arg(&file)
        .args([
            "--pidfile",
            &dir.path().join("turn.pid").display().to_string(),
            "--log-file",
            "stdout",
        ])
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let killed = common::nginx::Stopped(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut text = String::new();
    while Instant::now() < deadline {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("Total General servers")
            || text.contains("relay ") && text.contains(&plain.to_string())
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(killed);
    let lower = text.to_lowercase();
    assert!(
        !lower.contains("bad configuration format"),
        "coturn rejected a line:\n{text}"
    );
    assert!(
        !lower.contains("cannot find") && !lower.contains("error: "),
        "{text}"
    );
    assert!(
        lower.contains("listener address to use: 127.0.0.1"),
        "coturn did not listen:\n{text}"
    );
}

#[test]
fn jicofo_and_jvb_conf_are_valid_hocon() {
    if !common::have_tool("ruby", "ruby-hocon") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let jicofo = dir.path().join("jicofo.conf");
    let jvb = dir.path().join("jvb.conf");
    std::fs::write(&jicofo, common::with_site(true, render::jicofo_conf)).unwrap();
    std::fs::write(&jvb, common::with_site(true, render::jvb_conf)).unwrap();
    let get = |file: &Path, path: &str| {
        let script = "require 'hocon'; require 'hocon/config_factory'; c = Hocon::ConfigFactory.parse_file(ARGV[0]).resolve; v = c.get_value(ARGV[1]).unwrapped; puts(v.is_a?(String) ? v : v.inspect)";
        let out = common::run(
            Command::new("ruby")
                .args(["-e", script])
                .arg(file)
                .arg(path),
        );
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let secrets = common::sample_secrets();
    assert_eq!(
        get(&jicofo, "jicofo.xmpp.client.password"),
        secrets.focus_password
    );
    assert_eq!(get(&jicofo, "jicofo.authentication.type"), "XMPP");
    assert_eq!(
        get(&jicofo, "jicofo.bridge.brewery-jid"),
        layout::BREWERY_ROOM
    );
    assert_eq!(
        get(
            &jvb,
            "videobridge.apis.xmpp-client.configs.meetbox.password"
        ),
        secrets.jvb_password
    );
    assert_eq!(get(&jvb, "videobridge.ice.udp.port"), "10000");
    assert_eq!(get(&jvb, "ice4j.harvest.mapping.stun.addresses"), "[]");
    let mapping = get(&jvb, "ice4j.harvest.mapping.static-mappings");
    assert!(
        mapping.contains("192.168.1.20") && mapping.contains("198.51.99.10"),
        "{mapping}"
    );
}

#[test]
fn node_parses_config_js() {
    if !common::have_tool("node", "nodejs") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.js");
    std::fs::write(&file, common::with_site(true, render::config_js)).unwrap();
    let out = common::run(Command::new("node").arg("--check").arg(&file));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // And evaluates to the expected object, with the tuning's caps.
    let script = format!(
        "{}\nconsole.log(config.hosts.domain, config.hosts.anonymousdomain, config.disableThirdPartyRequests, config.p2p.stunServers[0].urls)\nconsole.log(config.resolution, JSON.stringify(config.constraints.video.height), config.channelLastN, config.maxFullResolutionParticipants, config.startAudioMuted, config.startVideoMuted)",
        std::fs::read_to_string(&file).unwrap()
    );
    let out = common::run(Command::new("node").args(["-e", &script]));
    let caps = common::sample_caps();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!(
            "meet.jitsi guest.meet.jitsi true stun:meet.example.org:3478\n{r} {{\"ideal\":{r},\"max\":{r},\"min\":180}} {} {} {} {}",
            caps.channel_last_n,
            caps.max_full_resolution_participants,
            caps.start_audio_muted,
            caps.start_video_muted,
            r = caps.resolution,
        )
    );
}
