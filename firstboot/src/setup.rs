//! The setup steps, run in order and recorded one by one in the state file, so that an interrupted run
//! resumes at the first step not recorded and reaches the same end state. The done marker is written last.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::acme;
use crate::acme::retry::RetryRecord;
use crate::acme::tls;
use crate::apply::accounts;
use crate::apply::jitsi_env;
use crate::apply::services;
use crate::apply::swap;
use crate::apply::{FileSpec, Owner, Root};
use crate::ask::answers::{self, Answers};
use crate::ask::prompts;
use crate::ask::validation::TlsChoice;
use crate::backup;
use crate::clock;
use crate::layout;
use crate::network;
use crate::render::{self, NetworkFacts, Site};
use crate::secrets::boot_menu;
use crate::secrets::scram;
use crate::secrets::Secrets;
use crate::settings::{Settings, LETS_ENCRYPT_DIRECTORY};
use crate::state::{self, State, Step};
use crate::tuning::{self, Tuning};

/// Test switch: abort the process right after the named step is recorded (simulates a power cut).
pub const CRASH_AFTER_ENV: &str = "MEETBOX_FIRSTBOOT_CRASH_AFTER";

/// Where the answers come from when setup has not recorded any yet.
pub enum AnswerSource {
    /// `--answers FILE`.
    File(PathBuf),
    /// The ESP file if present, else the questions.
    EspOrQuestions,
}

/// The outcome shown on the last screen.
pub struct Outcome {
    pub settings: Settings,
    pub network: NetworkFacts,
    pub certificate_note: String,
}

/// Runs (or resumes) setup to the end.
pub fn run(root: &Root, source: AnswerSource) -> Result<Outcome> {
    let mut state = State::load(root)?;
    if state.settings.is_none() && matches!(source, AnswerSource::EspOrQuestions) {
        if let Some(restored) = backup::restore_from_esp(root)? {
            state = restored;
        }
    }
    if state.settings.is_none() || !state.is_done(Step::Answers) {
        let (answers, file) = collect_answers(root, source)?;
        state.settings = Some(settings_from(&answers)?);
        state.mark_done(Step::Answers);
        state.save(root)?;
        if let Some(file) = file {
            answers::wipe(&file)?;
        }
        crash_point(Step::Answers);
    }
    wipe_leftover_answers(root)?;
    resume(root, &mut state)
}

/// Runs the steps not yet recorded, then writes the done marker.
pub fn resume(root: &Root, state: &mut State) -> Result<Outcome> {
    let settings = state
        .settings
        .clone()
        .context("the state file has no settings; remove it and run setup again")?;
    let mut network = NetworkFacts::default();
    let mut tuning_cache = None;
    let mut certificate_note = String::new();
    for step in Step::ALL {
        if step == Step::Answers || state.is_done(step) {
            continue;
        }
        println!("==> {}", step.describe());
        let note = do_step(root, step, &settings, &mut tuning_cache, &mut network)
            .with_context(|| format!("{} failed", step.describe()))?;
        if step == Step::Certificate {
            certificate_note = note;
        }
        state.mark_done(step);
        state.save(root)?;
        crash_point(step);
    }
    if network == NetworkFacts::default() {
        network = network::detect(settings.domain.as_str());
    }
    if certificate_note.is_empty() {
        certificate_note = describe_installed_certificate(root);
    }
    root.write(&FileSpec::new(
        layout::DONE_MARKER,
        format!("setup finished for {}\n", settings.domain),
        0o644,
        Owner::ROOT,
    ))?;
    // Not ordered after the first-boot units at boot: the instance on the other console waits
    // for the owner forever, so setup itself queues the database once the box is configured.
    if let Err(error) = services::start_in_background(root, services::INTEGRITY_INIT) {
        eprintln!("warning: the file integrity database was not started ({error:#}); the next boot makes it");
    }
    Ok(Outcome {
        settings,
        network,
        certificate_note,
    })
}

fn crash_point(step: Step) {
    if std::env::var(CRASH_AFTER_ENV).is_ok_and(|v| v == step.name()) {
        eprintln!("{CRASH_AFTER_ENV}={}: aborting as asked", step.name());
        std::process::abort();
    }
}

fn collect_answers(root: &Root, source: AnswerSource) -> Result<(Answers, Option<PathBuf>)> {
    match source {
        AnswerSource::File(path) => {
            let answers = answers::read(&path)?;
            println!("{}", prompts::summary(&answers));
            Ok((answers, Some(path)))
        }
        AnswerSource::EspOrQuestions => {
            if let Some(esp) = answers::on_esp(root)? {
                println!("Using the answers in {}.", esp.display());
                let answers = answers::read(&esp)?;
                println!("{}", prompts::summary(&answers));
                Ok((answers, Some(esp)))
            } else if std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                Ok((prompts::ask()?, None))
            } else {
                bail!(
                    "there are no answers: write {} on the boot partition, pass --answers FILE, or run this on a console",
                    layout::ESP_ANSWERS
                )
            }
        }
    }
}

/// The ESP file is consumed once its answers are recorded; a crash between the two leaves it behind.
fn wipe_leftover_answers(root: &Root) -> Result<()> {
    if let Some(esp) = answers::on_esp(root)? {
        answers::wipe(&esp)?;
    }
    Ok(())
}

/// Settings as recorded: the password replaced by its SCRAM form with a fresh salt.
pub fn settings_from(answers: &Answers) -> Result<Settings> {
    Ok(Settings {
        domain: answers.domain.clone(),
        admin_user: answers.admin_user.clone(),
        admin_credential: accounts::new_credential(&answers.admin_password)?,
        email: answers.email.clone(),
        tls: answers.tls,
        acme_directory: answers
            .acme_directory
            .clone()
            .unwrap_or_else(|| LETS_ENCRYPT_DIRECTORY.to_string()),
        acme_ca_cert: answers.acme_ca_cert.clone(),
        ssh_authorized_keys: answers.ssh_authorized_keys.clone(),
        stun_server: answers.stun_server.clone(),
    })
}

/// Loads the secrets, creating them on first use.
pub fn load_or_create_secrets(root: &Root) -> Result<Secrets> {
    if root.exists(layout::SECRETS_FILE) {
        return serde_json::from_str(&root.read_to_string(layout::SECRETS_FILE)?)
            .with_context(|| format!("the secrets file {} is damaged", layout::SECRETS_FILE));
    }
    let secrets = Secrets::generate()?;
    let json = serde_json::to_string_pretty(&secrets).context("cannot encode the secrets")?;
    root.write(&FileSpec::new(
        layout::SECRETS_FILE,
        json + "\n",
        0o600,
        Owner::ROOT,
    ))?;
    Ok(secrets)
}

/// The image's tuning, read at the first step that needs it, so that its summary (or the note that the
/// defaults apply) appears once, under that step.
fn load_tuning<'a>(root: &Root, cache: &'a mut Option<Tuning>) -> Result<&'a Tuning> {
    let loaded = match cache.take() {
        Some(loaded) => loaded,
        None => {
            let loaded = tuning::load(root)?;
            println!("    tuning: {}", loaded.describe());
            loaded
        }
    };
    Ok(cache.insert(loaded))
}

/// Does one step; returns a note for the last screen (the certificate step's outcome).
fn do_step(
    root: &Root,
    step: Step,
    settings: &Settings,
    tuning_cache: &mut Option<Tuning>,
    network: &mut NetworkFacts,
) -> Result<String> {
    match step {
        Step::Answers => {}
        Step::Secrets => {
            root.directory(layout::STATE_DIR, 0o700, Owner::ROOT)?;
            load_or_create_secrets(root)?;
        }
        Step::MachineId => {
            let secrets = load_or_create_secrets(root)?;
            root.write(&FileSpec::new(
                layout::MACHINE_ID,
                format!("{}\n", secrets.machine_id),
                0o444,
                Owner::ROOT,
            ))?;
        }
        Step::BootMenu => boot_menu(root)?,
        Step::SshHostKeys => {
            ssh_host_keys(root)?;
            ssh_authorized_keys(root, &settings.ssh_authorized_keys)?;
        }
        Step::SelfSignedCertificate => {
            let turn = layout::turn_name(settings.domain.as_str());
            tls::install(root, &tls::self_signed(&[settings.domain.as_str(), &turn])?)?;
        }
        Step::ProsodyCertificates => prosody_certificates(root)?,
        Step::Configuration => {
            *network = network::detect(settings.domain.as_str());
            let tuning = load_tuning(root, tuning_cache)?;
            configuration(root, settings, network, tuning)?;
        }
        Step::JavaHeaps => {
            jitsi_env::set_identity(root, &load_or_create_secrets(root)?)?;
            for note in jitsi_env::set_heaps(root, load_tuning(root, tuning_cache)?)? {
                println!("    {note}");
            }
        }
        Step::Swap => {
            let size = load_tuning(root, tuning_cache)?.swap;
            println!("    {}", swap::apply(root, size)?);
        }
        Step::Accounts => accounts(root, settings)?,
        Step::Certificate => {
            if *network == NetworkFacts::default() {
                *network = network::detect(settings.domain.as_str());
            }
            return certificate(root, settings, network.lan_address);
        }
        Step::Services => {
            let mut started = services::enable_and_restart(root, &services::STACK)?;
            started.extend(services::enable_and_start(root, &services::ADMIN)?);
            started.extend(services::enable_and_restart(
                root,
                &services::ADDRESS_WATCH,
            )?);
            if !started.is_empty() {
                println!("    enabled: {}", started.join(", "));
            }
            if settings.tls == TlsChoice::LetsEncrypt {
                services::enable_and_restart(root, &[services::ACME_TIMER])?;
            }
        }
    }
    Ok(String::new())
}

/// Gives the boot menu this device's own superuser (render::boot_menu). A tree without a boot
/// menu (the agent under `--root` away from a box) has nothing to lock.
fn boot_menu(root: &Root) -> Result<()> {
    if !root.exists(layout::GRUB_CFG) {
        println!("    no boot menu at {}: nothing to lock", layout::GRUB_CFG);
        return Ok(());
    }
    let menu = root.read_to_string(layout::GRUB_CFG)?;
    let record = boot_menu::unknown_password_record()?;
    let locked = render::boot_menu::with_superuser(&menu, &record)?;
    root.write(&FileSpec::new(layout::GRUB_CFG, locked, 0o600, Owner::ROOT))
        .context("cannot write the boot menu's superuser")
}

/// Replaces the image's SSH host keys with this box's own (only when SSH is installed).
fn ssh_host_keys(root: &Root) -> Result<()> {
    if !root.exists(layout::SSHD_CONFIG) {
        return Ok(());
    }
    let dir = root.path("/etc/ssh");
    for entry in
        std::fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?
    {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with("ssh_host_") {
            std::fs::remove_file(entry.path())
                .with_context(|| format!("cannot remove {}", entry.path().display()))?;
        }
    }
    let output = Command::new("ssh-keygen")
        .arg("-A")
        .arg("-f")
        .arg(root.dir())
        .output()
        .context("cannot run ssh-keygen (package openssh-client)")?;
    if !output.status.success() {
        bail!(
            "ssh-keygen -A failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// Root's `authorized_keys` from the answers (keys only: sshd takes no passwords). Without an
/// SSH server in the image the keys have no use, and the owner is told so.
fn ssh_authorized_keys(root: &Root, keys: &[String]) -> Result<()> {
    if keys.is_empty() {
        return Ok(());
    }
    if !root.exists(layout::SSHD_CONFIG) {
        println!(
            "    This image has no SSH server (profile: services.ssh = false); the SSH keys are not used."
        );
        return Ok(());
    }
    root.directory(layout::ROOT_SSH_DIR, 0o700, Owner::ROOT)?;
    root.write(&FileSpec::new(
        layout::ROOT_AUTHORIZED_KEYS,
        keys.join("\n") + "\n",
        0o600,
        Owner::ROOT,
    ))?;
    println!(
        "    SSH: {} key(s) may log in as root, from the local network only.",
        keys.len()
    );
    Ok(())
}

/// Self-signed certificates for prosody's internal hosts (only jicofo and the bridge see them), kept
/// where jitsi-meet-prosody's postinst looks for them and linked from prosody's certificate
/// directory, as that script does: finding them, it makes no new ones and trusts none system-wide.
fn prosody_certificates(root: &Root) -> Result<()> {
    let prosody = Owner::new("prosody", "prosody");
    for host in [layout::XMPP_DOMAIN, layout::XMPP_AUTH_DOMAIN] {
        let certified = tls::self_signed(&[host])?;
        let store = layout::PROSODY_CERT_STORE;
        for (extension, content, mode) in [
            ("key", certified.key_pem, 0o600),
            ("crt", certified.chain_pem, 0o644),
        ] {
            let file = format!("{store}/{host}.{extension}");
            root.write(&FileSpec::new(file.clone(), content, mode, prosody))?;
            // Relative, so that the link resolves inside `--root` too.
            root.symlink(
                &format!("{}/{host}.{extension}", layout::PROSODY_CERT_DIR),
                &format!("../../..{file}"),
            )?;
        }
    }
    Ok(())
}

/// Renders and writes every configuration file.
fn configuration(
    root: &Root,
    settings: &Settings,
    network: &NetworkFacts,
    tuning: &Tuning,
) -> Result<()> {
    for file in rendered_files(root, settings, network, tuning)? {
        root.write(&file)?;
    }
    network::follow::Record::rendered(network).save(root)?;
    for (link, target) in render::LINKS {
        root.symlink(link, target)?;
    }
    for link in layout::NGINX_PACKAGE_SITE_LINKS {
        root.remove(link)?;
    }
    root.directory(layout::ACME_WEBROOT, 0o755, Owner::ROOT)?;
    root.directory(layout::ACME_CHALLENGE_DIR, 0o755, Owner::ROOT)?;
    Ok(())
}

/// Every configuration file as this box renders it for `network` (written by setup, compared and
/// rewritten by the address follower).
pub fn rendered_files(
    root: &Root,
    settings: &Settings,
    network: &NetworkFacts,
    tuning: &Tuning,
) -> Result<Vec<FileSpec>> {
    let secrets = load_or_create_secrets(root)?;
    let site = Site {
        domain: settings.domain.as_str(),
        secrets: &secrets,
        network,
        jitsi_prosody_plugins: root.exists(layout::JITSI_PROSODY_PLUGINS),
        admin_from_internet: root.exists(layout::ADMIN_FROM_INTERNET),
        caps: &tuning.config_js,
    };
    Ok(render::all(&site))
}

/// Prosody accounts: the admin (from the recorded SCRAM form), jicofo and the videobridge.
fn accounts(root: &Root, settings: &Settings) -> Result<()> {
    let secrets = load_or_create_secrets(root)?;
    let records = [
        (
            layout::XMPP_DOMAIN,
            settings.admin_user.as_str(),
            settings.admin_credential.clone(),
        ),
        (
            layout::XMPP_AUTH_DOMAIN,
            layout::FOCUS_USER,
            scram::credential(
                &secrets.focus_password,
                &secrets.focus_salt,
                scram::ITERATIONS,
            ),
        ),
        (
            layout::XMPP_AUTH_DOMAIN,
            layout::JVB_USER,
            scram::credential(&secrets.jvb_password, &secrets.jvb_salt, scram::ITERATIONS),
        ),
    ];
    for (host, user, credential) in records {
        accounts::write(root, host, user, &credential)?;
    }
    Ok(())
}

/// The ACME step: a real certificate, or the self-signed one kept with a scheduled retry.
fn certificate(root: &Root, settings: &Settings, lan: Option<std::net::IpAddr>) -> Result<String> {
    if settings.tls == TlsChoice::SelfSigned {
        return Ok("self-signed (as chosen)".into());
    }
    if let Some(info) = tls::installed(root)? {
        if tls::still_good_for(&info, settings.domain.as_str(), clock::now()) {
            return Ok("kept (still valid), renewed automatically".into());
        }
    }
    match obtain_and_install(root, settings, lan)? {
        Ok(()) => Ok("from the ACME server, renewed automatically".into()),
        Err(failure) => {
            println!("\n{}\n", failure.explanation);
            println!("    details: {}", failure.detail);
            let record = RetryRecord::record_failure(root, clock::now(), &failure.explanation)?;
            println!(
                "    The box keeps its self-signed certificate and tries again in {} minutes (then less and less often).",
                crate::acme::retry::delay_after(record.attempts) / 60
            );
            Ok("self-signed for now; Let's Encrypt is retried automatically".into())
        }
    }
}

/// One ACME attempt; the outer error is a local problem, the inner one a failed issuance.
pub fn obtain_and_install(
    root: &Root,
    settings: &Settings,
    lan: Option<std::net::IpAddr>,
) -> Result<Result<(), acme::Failure>> {
    let request = acme::Request {
        domain: settings.domain.as_str(),
        email: settings.email.as_deref(),
        directory: &settings.acme_directory,
        ca_cert_pem: settings.acme_ca_cert.as_deref(),
        http_port: acme::http_port(),
        lan_address: lan,
    };
    println!(
        "    asking {} for a certificate for {}",
        settings.acme_directory, settings.domain
    );
    let (findings, result) = acme::obtain(root, &request);
    for finding in &findings {
        println!("    check: {}", finding.advice(request.domain, lan));
    }
    match result {
        Ok(certified) => {
            tls::install(root, &certified)?;
            RetryRecord::clear(root)?;
            Ok(Ok(()))
        }
        Err(failure) => Ok(Err(failure)),
    }
}

fn describe_installed_certificate(root: &Root) -> String {
    match tls::installed(root) {
        Ok(Some(info)) if info.self_signed => "self-signed".into(),
        Ok(Some(info)) => format!("issued by {}", info.issuer),
        _ => "none".into(),
    }
}

/// Seconds since the epoch.
/// Marks finished steps to be done again (reconfigure) and removes the done marker first, so that an
/// interruption resumes on the next boot.
pub fn reopen(root: &Root, state: &mut State, steps: &[Step]) -> Result<()> {
    state.forget(steps);
    state.save(root)?;
    root.remove(layout::DONE_MARKER)
}

/// True when setup has finished.
pub fn finished(root: &Root) -> bool {
    state::is_finished(root)
}
