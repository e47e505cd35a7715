//! The unattended box: `meetbox-setup.toml` on the ESP, a certificate from Pebble on the host,
//! then everything a user and an auditor reach from outside (see the crate's header).

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::guest_disk::GuestDisk;
use crate::pebble::Pebble;
use crate::xmpp::Https;
use crate::*;

#[test]
pub(crate) fn unattended_setup_with_pebble_then_services_from_the_host() {
    if !can_run("unattended setup") {
        return;
    }
    let _one_at_a_time = exclusive();
    let domain = "meet.meetbox.test";
    let password = "correct pony staple battery";
    let dir = tempfile::tempdir().unwrap();
    let ports = Ports::new();
    let pebble = Pebble::start(dir.path(), domain, ports.http);

    let disk_path = fresh_disk("unattended", UNATTENDED_DISK_BYTES);
    let disk = GuestDisk::new(&disk_path, &built().manifest);
    let owner_key = owner_ssh_key(dir.path());
    put_answers(&disk, dir.path(), domain, password, &pebble, &owner_key);

    let mut scan_link = audit::ScanLink::create();
    let capture = work_dir().join("unattended-traffic.pcap");
    let mut guest = Guest::boot(
        &disk_path,
        "unattended",
        ports,
        Some(&scan_link.tap),
        Some(capture.clone()),
    );
    guest.console.expect("Meetbox first-boot setup", BOOT);
    guest.console.expect("Setup is complete", SETUP);
    guest.console.expect("from the ACME server", PROMPT);
    eprintln!("unattended setup done after {}", guest.elapsed());
    let transcript = guest.console.transcript();
    assert!(
        !transcript.contains("Domain name of the server"),
        "the answers file was not used:\n{}",
        guest.console.tail(3000)
    );

    let https = Https::forwarded(domain, ports.https, Some(pebble.issuing_root(dir.path())));
    check_pebble_certificate(&https);

    let (user, secret) = check_logins_and_turn(&https, ports, password);
    let (user, secret) = (user.as_str(), secret.as_str());

    scan_link.connect(PROMPT);
    let shell = |command: &str| guest_shell(&scan_link, &owner_key, command);
    jitsi::check_components(&https);
    jitsi::check_prosody_log(&shell);
    jitsi::check_services_fenced_then_started(&shell);
    admin::check_processes(&shell);
    check_boot_menu_locked(&shell);
    // The CIS and Lynis scans run on the box while the audits from outside go on; they start
    // once the box has its integrity database, which CIS checks for.
    let booted_scan = scan::wanted().then(|| {
        integrity::wait_for_database(&shell);
        scan::start(&scan_link, &owner_key, &shell)
    });
    audit_from_the_host(&https, ports, &owner_key, &scan_link, dir.path());
    visit_from_a_distinctive_address(&https, &scan_link, password);
    check_swap_from_tuning(&scan_link, &owner_key);
    scan::check_memory_mounts_and_audit(&shell);
    match booted_scan {
        Some(scan) => scan.finish(&scan_link, &owner_key, &shell),
        None => eprintln!(
            "({}=0: the CIS and Lynis scans on the box left out)",
            scan::BOOTED_SCAN
        ),
    }
    jitsi::check_failing_videobridge_backs_off(&shell);
    // After the scan, which reads the files the check compares, and before the new address
    // rewrites configuration the check would then report.
    integrity::check_database_then_an_intruder(&shell);
    let test_dns = address::check_address_follows_the_record(&scan_link, &owner_key, domain);

    // Updates through the box's own timers: Jitsi's next release, one that asks for a reboot, a
    // broken one, a repository that stops answering. After each the box still serves: the
    // agent's files stay its own, and the same logins work (the service accounts' after the
    // reboot below).
    let box_works = |when: &str| {
        jitsi::check_prosody_log(&shell);
        jitsi::check_components(&https);
        login(&https, XMPP_MAIN_HOST, "admin", password)
            .unwrap_or_else(|err| panic!("admin login {when}: {err}"));
        assert!(
            turn_allocates(user, secret, ports.https, Turn::TlsOn443),
            "TURN {when}"
        );
    };
    let repository_ports =
        updates::check_updates_through_timers(&shell, &built().jitsi, domain, &box_works);
    contacts::run_every_timer(&shell);
    let allowed = contacts::Allowed::of_the_box(&shell, &built().manifest, domain)
        .with_host_ports(&repository_ports)
        .with_host_url(&pebble.directory_for_guest);
    guest.power_off();
    drop(test_dns);
    drop(scan_link);
    // Whom the box contacted, from boot to power-off: the resolver, the update mirrors, Jitsi's
    // repository, the ACME CA and the time servers, no one else.
    let contacts = contacts::Contacts::read(&capture);
    let strangers = allowed.strangers(&contacts);
    assert!(
        strangers.is_empty(),
        "the box contacted others than its update mirrors, Jitsi's repository, the ACME CA and \
         its time servers (capture: {}):\n{}",
        capture.display(),
        strangers.join("\n")
    );
    eprintln!("{}", allowed.summary(&contacts));

    let (focus, jvb) = check_disk_after_power_off(&disk, domain, password);

    let guest = check_after_reboot(&disk_path, ports, &https, &focus, &jvb);
    if !admin::browser_ready() {
        drop(guest);
        fs::remove_file(&disk_path).unwrap();
        return;
    }

    // The owner renames the box in the web admin and downloads a backup; the backup then
    // restores a fresh box, where the same logins work under the new name.
    let new_domain = "renamed.meetbox.test";
    let backup =
        admin::rename_then_back_up(domain, new_domain, ports, password, &pebble, dir.path());
    drop(guest);
    fs::remove_file(&disk_path).unwrap();
    restore_onto_a_fresh_box(&backup, new_domain, ports, password, &pebble, dir.path());
}

/// Setup gave GRUB this box's own superuser (CIS 1.4.1), before the entries, which stay
/// unrestricted: the reboot below (check_after_reboot) then boots unattended through it.
fn check_boot_menu_locked(shell: &dyn Fn(&str) -> String) {
    let menu = shell("stat -c '%U %a' /boot/grub/grub.cfg; cat /boot/grub/grub.cfg");
    let (mode, text) = menu.split_once('\n').unwrap_or_default();
    assert_eq!(mode, "root 600", "the boot menu's owner and mode");
    let superuser =
        text.find("set superusers=\"root\"\npassword_pbkdf2 root grub.pbkdf2.sha512.10000.");
    let first_entry = text.find("menuentry ");
    assert!(
        superuser.is_some() && superuser < first_entry,
        "no superuser before the entries:\n{text}"
    );
    assert_eq!(
        text.matches("menuentry ").count(),
        text.matches("' --unrestricted {").count(),
        "an entry needs the superuser to boot:\n{text}"
    );
    // A kernel update's hook (what linux-image's postinst runs) leaves the menu as it is.
    let after_hook = shell(
        "DEB_MAINT_PARAMS=configure sh /etc/kernel/postinst.d/zz-update-grub \"$(uname -r)\" \
         /boot/vmlinuz 2>&1; cat /boot/grub/grub.cfg",
    );
    assert!(
        after_hook.ends_with(text) && after_hook.contains("nothing to regenerate"),
        "a kernel update's update-grub changed the boot menu:\n{after_hook}"
    );
    eprintln!(
        "boot menu: this box's own superuser, every entry unrestricted; kernel updates keep it"
    );
}

/// A fresh disk from the image with the backup and its passphrase on the ESP: first boot restores
/// it instead of asking, keeps its certificate, and the admin and the host log in.
fn restore_onto_a_fresh_box(
    backup: &Path,
    domain: &str,
    ports: Ports,
    password: &str,
    pebble: &Pebble,
    dir: &Path,
) {
    let disk_path = fresh_disk("restored", UNATTENDED_DISK_BYTES);
    let disk = GuestDisk::new(&disk_path, &built().manifest);
    disk.put_on_esp(backup, backup.file_name().unwrap().to_str().unwrap());
    let answers = dir.join("restore.toml");
    fs::write(
        &answers,
        format!("restore_passphrase = \"{}\"\n", admin::BACKUP_PASSPHRASE),
    )
    .unwrap();
    disk.put_on_esp(&answers, "meetbox-setup.toml");
    let stick = backup_stick(backup, dir);
    let mut guest = Guest::boot_with(&disk_path, "restored", ports, |spec| {
        spec.data_sticks = vec![stick.clone()];
    });
    // The console that takes setup's lock (tty1 or this one) shows the restore; both show the end.
    guest.console.expect("Meetbox first-boot setup", BOOT);
    guest.console.expect("Setup is complete", SETUP);
    guest
        .console
        .expect(&format!("Meetings:     https://{domain}/"), PROMPT);
    eprintln!("restored box set up after {}", guest.elapsed());
    assert!(
        !guest
            .console
            .transcript()
            .contains("Domain name of the server"),
        "the restored box asked the questions"
    );
    let https = Https::forwarded(domain, ports.https, Some(pebble.issuing_root(dir)));
    check_pebble_certificate(&https);
    for (user, secret) in [("admin", password), ("erin", admin::HOST_PASSWORD)] {
        let jid = retry(&format!("{user} on the restored box"), PROMPT, || {
            login(&https, XMPP_MAIN_HOST, user, secret)
        });
        assert!(jid.starts_with(&format!("{user}@meet.jitsi/")), "{jid}");
    }

    // At the box's own screen: the same backup, from the USB stick, replaces what the box holds.
    let console = &mut guest.console;
    console.expect("Type 1 or 2 and press Enter", PROMPT);
    console.type_line("2");
    console.expect("Passphrase of the backup", PROMPT);
    console.type_line("not the passphrase");
    console.expect("passphrase is wrong", PROMPT);
    console.expect("Passphrase of the backup", PROMPT);
    console.type_line(admin::BACKUP_PASSPHRASE);
    console.expect("Type RESET to go on", PROMPT);
    console.type_line("RESET");
    console.expect(&format!("the box serves https://{domain}/ again"), SETUP);
    eprintln!(
        "restored again from the USB stick at the box's screen, {}",
        guest.elapsed()
    );
    assert!(
        !guest
            .console
            .transcript()
            .contains(admin::BACKUP_PASSPHRASE),
        "the passphrase was echoed"
    );
    let jid = retry("admin after the restore from the stick", PROMPT, || {
        login(&https, XMPP_MAIN_HOST, "admin", password)
    });
    assert!(jid.starts_with("admin@meet.jitsi/"), "{jid}");
    guest.power_off();
    fs::remove_file(&disk_path).unwrap();
}

/// A FAT-formatted USB stick image with the backup in its top folder, as an owner copies it.
fn backup_stick(backup: &Path, dir: &Path) -> PathBuf {
    let stick = dir.join("backup-stick.img");
    fs::File::create(&stick).unwrap().set_len(64 << 20).unwrap();
    for (program, args) in [
        (
            "mkfs.vfat",
            vec!["-n".into(), "BACKUP".into(), stick.display().to_string()],
        ),
        (
            "mcopy",
            vec![
                "-i".into(),
                stick.display().to_string(),
                backup.display().to_string(),
                format!("::/{}", backup.file_name().unwrap().to_string_lossy()),
            ],
        ),
    ] {
        let out = Command::new(program).args(&args).output().unwrap();
        assert!(
            out.status.success(),
            "{program}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    stick
}

/// The answers file on the ESP: the domain, the admin password, Pebble as the ACME server, the
/// owner's SSH key.
fn put_answers(
    disk: &GuestDisk,
    dir: &Path,
    domain: &str,
    password: &str,
    pebble: &Pebble,
    owner_key: &OwnerKey,
) {
    let answers = dir.join("meetbox-setup.toml");
    let mut file = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&answers)
        .unwrap();
    file.write_all(
        format!(
            "domain = \"{domain}\"\nadmin_password = \"{password}\"\nemail = \"ops@meetbox.test\"\n\
             tls = \"letsencrypt\"\nacme_directory = \"{}\"\nacme_ca_cert = '''\n{}'''\n\
             ssh_authorized_keys = [\"{}\"]\n",
            pebble.directory_for_guest,
            pebble.listener_ca_pem,
            owner_key.public
        )
        .as_bytes(),
    )
    .unwrap();
    drop(file);
    disk.put_on_esp(&answers, "meetbox-setup.toml");
    assert!(disk.esp_has("meetbox-setup.toml"));
}

/// The admin's login (a wrong password refused), anonymous guests on the guest host only, and
/// TURN credentials from prosody that coturn accepts over TCP and UDP; returns those credentials.
fn check_logins_and_turn(https: &Https, ports: Ports, password: &str) -> (String, String) {
    // The admin logs in with the answers file's password; a wrong one is refused.
    let jid = retry("admin login", PROMPT, || {
        login(https, XMPP_MAIN_HOST, "admin", password)
    });
    assert!(jid.starts_with("admin@meet.jitsi/"), "{jid}");
    let refused = login(https, XMPP_MAIN_HOST, "admin", "correct pony staple batter")
        .expect_err("a wrong password logged in");
    assert!(refused.contains("not-authorized"), "{refused}");

    // Guests join anonymously on the guest host, never on the main host.
    let mut main = Session::open(https, XMPP_MAIN_HOST).unwrap();
    assert!(
        !main.mechanisms().iter().any(|m| m == "ANONYMOUS"),
        "{:?}",
        main.mechanisms()
    );
    main.authenticate(Credentials::Anonymous)
        .expect_err("anonymous login on the main host");
    let mut guest_session = Session::open(https, XMPP_GUEST_HOST).unwrap();
    guest_session.authenticate(Credentials::Anonymous).unwrap();
    let guest_jid = guest_session.bind().unwrap();
    assert!(guest_jid.contains("@guest.meet.jitsi/"), "{guest_jid}");

    // TURN credentials from prosody work with coturn, over TLS on 443 and over UDP; altered ones
    // do not.
    let services = guest_session.external_services().unwrap();
    let turn = services
        .iter()
        .find(|s| s.kind == "turn" && s.username.is_some())
        .unwrap_or_else(|| panic!("no TURN service with credentials: {services:?}"));
    let (user, secret) = (
        turn.username.clone().unwrap(),
        turn.password.clone().unwrap(),
    );
    assert!(turn_allocates(&user, &secret, ports.https, Turn::TlsOn443));
    assert!(turn_allocates(&user, &secret, ports.turn_udp, Turn::Udp));
    assert!(!turn_allocates(
        &user,
        &format!("{secret}x"),
        ports.https,
        Turn::TlsOn443
    ));

    (user, secret)
}

/// What the powered-off disk holds: nothing of the visit, no answers file or password, the tuning
/// applied; returns the jicofo and videobridge accounts written on it.
fn check_disk_after_power_off(
    disk: &GuestDisk,
    domain: &str,
    password: &str,
) -> ((String, String), (String, String)) {
    // Nothing of the visit reached the disk: not in any file, not in a free block.
    let hits = disk.search_everywhere(&[audit::CLIENT_ADDRESS, PRIVACY_ROOM]);
    assert!(
        hits.is_empty(),
        "the visitor's address or room name is on the disk:\n{}",
        hits.join("\n")
    );

    // The answers file is gone, and its password is nowhere on the ESP (FAT keeps deleted clusters).
    assert!(
        !disk.esp_has("meetbox-setup.toml"),
        "the answers file stayed"
    );
    assert!(
        !disk.esp_bytes_contain(password.as_bytes()),
        "the admin password is still in the ESP's bytes"
    );
    check_tuning_applied(disk, domain);
    let focus = account(&disk.read_root_file("/etc/jitsi/jicofo/jicofo.conf"));
    let jvb = account(&disk.read_root_file("/etc/jitsi/videobridge/jvb.conf"));
    assert_eq!((focus.0.as_str(), jvb.0.as_str()), ("focus", "jvb"));

    (focus, jvb)
}

/// After a reboot: services start by themselves, the agent does not run again, the service
/// accounts log in with the secrets written for jicofo and the videobridge. The running guest
/// is returned, for the web admin.
fn check_after_reboot(
    disk_path: &Path,
    ports: Ports,
    https: &Https,
    focus: &(String, String),
    jvb: &(String, String),
) -> Guest {
    // After a reboot: services start by themselves, the agent does not run again, the service
    // accounts log in with the secrets written for jicofo and the videobridge.
    let mut guest = Guest::boot(disk_path, "reboot", ports, None, None);
    // The box's status screen, in place of a login prompt.
    guest
        .console
        .expect(meetbox_firstboot::admin::screen::HEADING, BOOT);
    guest.console.expect("Web admin:", PROMPT);
    // OCR reads the screen's words, not always its capitals ("Neetbox"): words it reads well.
    guest.tty1_shows(
        "tty1-status-screen",
        &["meeting server", "10.0.2.15:8443/", "Factory reset"],
    );
    eprintln!("status screen after {}", guest.elapsed());
    let transcript = guest.console.transcript();
    assert!(
        !transcript.contains("Meetbox first-boot setup"),
        "the agent ran again:\n{}",
        guest.console.tail(3000)
    );
    for (user, password) in [focus, jvb] {
        let jid = retry(&format!("{user} login"), PROMPT, || {
            login(https, XMPP_AUTH_HOST, user, password)
        });
        assert!(
            jid.starts_with(&format!("{user}@auth.meet.jitsi/")),
            "{jid}"
        );
        login(https, XMPP_AUTH_HOST, user, &format!("{password}x"))
            .expect_err("a wrong service password logged in");
    }
    check_pebble_certificate(https);
    guest
}

/// The caps the build derived from the profile's hardware and bandwidth
/// (/etc/meetbox/tuning.toml) are the ones the agent wrote into config.js.
pub(crate) fn check_tuning_applied(disk: &GuestDisk, domain: &str) {
    let tuning = disk.read_root_file("/etc/meetbox/tuning.toml");
    let config_js = disk.read_root_file(&format!("/etc/jitsi/meet/{domain}-config.js"));
    for key in [
        "resolution",
        "channelLastN",
        "maxFullResolutionParticipants",
        "startAudioMuted",
        "startVideoMuted",
    ] {
        let value = tuning
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{key} = ")))
            .unwrap_or_else(|| panic!("no {key} in tuning.toml:\n{tuning}"))
            .trim();
        assert!(
            config_js.contains(&format!("    {key}: {value},")),
            "config.js does not carry {key} = {value}:\n{config_js}"
        );
    }
}

/// The unattended box's disk: 7 GiB, so that after the root grows the swap file of the
/// image's tuning fits with room to spare (the agent skips it on the bare 3 GiB image).
pub(crate) const UNATTENDED_DISK_BYTES: u64 = 7 << 30;

/// A command run as root on the guest over SSH with the owner's key, from the scan link.
pub(crate) fn guest_shell(link: &audit::ScanLink, owner: &OwnerKey, command: &str) -> String {
    let output = link.ssh_as_root(&owner.private, command).output().unwrap();
    assert!(
        output.status.success(),
        "{command} on the guest: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The swap file of the image's tuning is active and listed in fstab once.
pub(crate) fn check_swap_from_tuning(link: &audit::ScanLink, owner: &OwnerKey) {
    let tuning = guest_shell(link, owner, "cat /etc/meetbox/tuning.toml");
    let size_mb: u64 = tuning
        .split("[swap]")
        .nth(1)
        .and_then(|rest| rest.lines().find_map(|l| l.strip_prefix("size_mb = ")))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no [swap] size_mb in tuning.toml:\n{tuning}"));
    let file_bytes: u64 = guest_shell(link, owner, "stat -c %s /swap.img")
        .trim()
        .parse()
        .unwrap();
    assert_eq!(file_bytes, size_mb << 20, "size of /swap.img");
    // swapon counts the usable pages: the file less its one-page header.
    let swaps = guest_shell(link, owner, "swapon --show=NAME,SIZE --noheadings --bytes");
    let active: Vec<&str> = swaps.split_whitespace().collect();
    let usable: u64 = active.get(1).and_then(|b| b.parse().ok()).unwrap_or(0);
    assert!(
        active.first() == Some(&"/swap.img") && usable + 4096 == file_bytes,
        "active swap: {swaps}"
    );
    let fstab = guest_shell(link, owner, "cat /etc/fstab");
    assert_eq!(
        fstab
            .lines()
            .filter(|l| l.starts_with("/swap.img "))
            .count(),
        1,
        "{fstab}"
    );
    eprintln!("swap: /swap.img of {size_mb} MiB active, in fstab once");
}

/// A room name no file of the image contains, searched for on the disk afterwards.
pub(crate) const PRIVACY_ROOM: &str = "meetbox-privacy-room-5f0c";

/// The owner's SSH key pair, made for the test; the public half goes into the answers file.
pub(crate) struct OwnerKey {
    pub(crate) private: PathBuf,
    pub(crate) public: String,
}

pub(crate) fn owner_ssh_key(dir: &Path) -> OwnerKey {
    let private = dir.join("owner_ed25519");
    let output = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "owner@meetbox.test",
            "-f",
        ])
        .arg(&private)
        .output()
        .unwrap();
    assert!(output.status.success(), "ssh-keygen failed");
    let public = fs::read_to_string(private.with_extension("pub")).unwrap();
    OwnerKey {
        private,
        public: public.trim().to_string(),
    }
}
