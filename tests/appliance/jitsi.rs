//! Jitsi's real packaging in the booted appliance: the image installs the package-shaped 10590
//! release (support::jitsi_packages) from a signed repository on 127.0.0.1, through the same
//! options a user with a mirror passes to `meetbox build`. In the booted box, after setup:
//! prosody has loaded Jitsi's plugins and components, jicofo (an init script) and the videobridge
//! (a unit) stayed off until setup and were started by it. The upgrade to 10655 through the box's
//! own timers is in updates.rs.

use std::fs;
use std::path::{Path, PathBuf};

use crate::support::apt_repo::{LocalRepository, Server};
use crate::support::jitsi_packages::{self, RELEASES};
use crate::xmpp::{Https, Session};

/// The local repository with both releases built, the older one published.
pub struct JitsiRepository {
    local: LocalRepository,
    newer: Vec<PathBuf>,
}

impl JitsiRepository {
    pub fn create(work: &Path) -> JitsiRepository {
        let _ = fs::remove_dir_all(work);
        fs::create_dir_all(work).unwrap();
        let scratch = work.join("scratch");
        let [older, newer] = RELEASES
            .map(|release| jitsi_packages::build_release(release, &scratch, &work.join(release)));
        let local = LocalRepository::create(work);
        local.publish(&older);
        eprintln!(
            "Jitsi {}: {} package-shaped debs published; {} built for the upgrade",
            RELEASES[0],
            older.len(),
            RELEASES[1]
        );
        JitsiRepository { local, newer }
    }

    /// Serves the repository on 127.0.0.1 until the server is dropped.
    pub fn serve(&self) -> Server {
        Server::start(&self.local.root)
    }

    /// The options of `meetbox build` that take Jitsi from this repository: a mirror with its own
    /// key, as a user with a re-signed mirror would pass them.
    pub fn build_args(&self, server: &Server) -> Vec<String> {
        vec![
            "--jitsi-repository".into(),
            server.url.clone(),
            "--jitsi-keyring".into(),
            self.local.keyring_file().to_str().unwrap().into(),
            "--jitsi-fingerprint".into(),
            self.local.fingerprint.clone(),
        ]
    }

    /// Publishes the newer release, as Jitsi's repository does on a release day.
    pub fn publish_newer(&self) {
        self.local.publish(&self.newer);
    }

    /// Adds `debs` to the repository and signs its new index.
    pub fn publish(&self, debs: &[PathBuf]) {
        self.local.publish(debs);
    }

    /// The newer release's deb of `package`.
    pub fn newer_deb(&self, package: &str) -> PathBuf {
        let prefix = format!("{package}_");
        self.newer
            .iter()
            .find(|deb| {
                deb.file_name()
                    .and_then(|name| name.to_str())
                    .is_some_and(|name| name.starts_with(&prefix))
            })
            .unwrap_or_else(|| panic!("the newer release has no {package}: {:?}", self.newer))
            .clone()
    }
}

/// The components of the release's template that implement service discovery answer it: the
/// polls component (Jitsi's plugin that replaced the `polls` MUC module) and the MUCs with Jitsi's
/// MUC modules. The other components (speaker stats, end of conference, A/V moderation, file
/// sharing, room metadata) answer no disco query and the focus proxy answers only while jicofo
/// runs; their modules are covered by prosody's log (`check_prosody_log`).
pub fn check_components(https: &Https) {
    let mut session = Session::open(https, "guest.meet.jitsi").unwrap();
    session
        .authenticate(crate::xmpp::Credentials::Anonymous)
        .unwrap();
    session.bind().unwrap();
    for component in [
        "polls.meet.jitsi",
        "lobby.meet.jitsi",
        "breakout.meet.jitsi",
        "conference.meet.jitsi",
    ] {
        let id = format!("disco-{}", component.split('.').next().unwrap());
        let answer = session
            .iq(
                &format!(
                    "<iq type='get' id='{id}' to='{component}' xmlns='jabber:client'>\
                     <query xmlns='http://jabber.org/protocol/disco#info'/></iq>"
                ),
                &id,
            )
            .unwrap();
        let reply = &answer[answer.rfind(&format!("id='{id}'")).unwrap_or(0)..];
        assert!(
            !answer.contains("type='error'") && !answer.contains("type=\"error\""),
            "{component} does not answer disco#info: {reply}"
        );
    }
    eprintln!("prosody: the polls component and Jitsi's MUCs answer service discovery");
}

/// Prosody's log (warnings and errors only) names no module that failed to load.
pub fn check_prosody_log(shell: &dyn Fn(&str) -> String) {
    let log = shell("journalctl -b -u prosody.service --no-pager -o cat");
    for failure in [
        "Failed to load",
        "Unable to load module",
        "Error initializing module",
        "Error loading",
        "module not found",
        "not found in plugin paths",
    ] {
        assert!(
            !log.contains(failure),
            "prosody reports {failure:?}:\n{log}"
        );
    }
}

/// jicofo (an init script, through systemd's SysV generator) and the videobridge (a unit) are
/// enabled, and started only once setup had begun: never with the image's placeholders.
pub fn check_services_fenced_then_started(shell: &dyn Fn(&str) -> String) {
    let enabled = shell(
        "systemctl is-enabled jicofo.service jitsi-videobridge2.service prosody.service coturn.service nginx.service",
    );
    assert_eq!(
        enabled.split_whitespace().collect::<Vec<_>>(),
        ["enabled"; 5],
        "not every Jitsi service is enabled after setup"
    );
    let setup_began: f64 = shell("stat -c %Y /var/lib/meetbox/secrets.json")
        .trim()
        .parse()
        .unwrap();
    for unit in ["jicofo.service", "jitsi-videobridge2.service"] {
        let journal = shell(&format!(
            "journalctl -b -u {unit} --no-pager -o short-unix | grep -E 'Start(ing|ed) ' || true"
        ));
        let first: f64 = journal
            .lines()
            .next()
            .and_then(|line| line.split_whitespace().next())
            .and_then(|stamp| stamp.parse().ok())
            .unwrap_or_else(|| panic!("{unit} was never started:\n{journal}"));
        assert!(
            first >= setup_began,
            "{unit} started at {first}, before setup began at {setup_began}:\n{journal}"
        );
    }
    eprintln!("jicofo and the videobridge: off until setup, enabled and started by it");
}

/// Files the first-boot agent owns, and what the packages could add beside them, as one text.
pub fn agent_files(shell: &dyn Fn(&str) -> String, domain: &str) -> String {
    shell(&format!(
        "cd / && sha256sum etc/turnserver.conf etc/jitsi/jicofo/config etc/jitsi/jicofo/jicofo.conf \
         etc/jitsi/videobridge/config etc/jitsi/videobridge/jvb.conf etc/prosody/prosody.cfg.lua \
         etc/prosody/conf.avail/meet.jitsi.cfg.lua etc/nginx/sites-available/meetbox.conf \
         etc/jitsi/meet/{domain}-config.js etc/meetbox/tls/fullchain.pem etc/meetbox/tls/privkey.pem \
         etc/coturn/meetbox/fullchain.pem var/lib/prosody/meet.jitsi.crt var/lib/prosody/meet.jitsi.key \
         var/lib/prosody/auth.meet.jitsi.crt var/lib/prosody/auth.meet.jitsi.key \
         var/lib/prosody/auth%2emeet%2ejitsi/accounts/focus.dat var/lib/prosody/auth%2emeet%2ejitsi/accounts/jvb.dat \
         && echo sites-enabled: $(ls etc/nginx/sites-enabled) \
         && echo prosody-sites: $(ls etc/prosody/conf.d) \
         && echo local-ca: $(ls usr/local/share/ca-certificates) \
         && echo turnserver-backup: $(ls etc/turnserver.conf.bak 2>/dev/null)"
    ))
}

/// The test image has Jitsi's packaging but not its jars, so the videobridge fails at every start:
/// the box restarts it after growing pauses (`61-meetbox-restart.conf`: 2 s up to 5 minutes in 8
/// steps), not every few seconds for as long as it runs. A count above what the ramp allows since
/// boot means the pauses do not grow.
pub fn check_failing_videobridge_backs_off(shell: &dyn Fn(&str) -> String) {
    let shown =
        shell("systemctl show -P NRestarts jitsi-videobridge2.service; cut -d. -f1 /proc/uptime");
    let mut numbers = shown.split_whitespace().map(|n| n.parse::<u64>().unwrap());
    let (restarts, uptime) = (numbers.next().unwrap(), numbers.next().unwrap());
    // The ramp's eight steps take about six minutes; after them, one restart in five minutes (and
    // a start of a few seconds). Without the ramp: one every 5 to 10 s under emulation.
    let allowed = 12 + uptime / 240;
    assert!(
        restarts <= allowed,
        "the videobridge restarted {restarts} times in {uptime} s since boot (at most {allowed} with \
         growing pauses)"
    );
    eprintln!("videobridge: {restarts} restarts in {uptime} s since boot, with growing pauses");
}
