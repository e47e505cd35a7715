//! The named actions the web process may ask of the root helper, checked again by the helper with the
//! first-boot questions' own validation (ask::validation), and carried out there.
//!
//! The web process never reads prosody's accounts or the state file: the helper checks the admin's
//! password against prosody's stored SCRAM credential and answers yes or no.

use std::process::Command;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use base64::Engine;

use crate::acme::renew;
use crate::admin::jobs;
use crate::admin::status::{self, Status};
use crate::apply::accounts;
use crate::apply::Root;
use crate::ask::validation;
use crate::backup;
use crate::clock;
use crate::layout::XMPP_DOMAIN;
use crate::reconfigure;
use crate::reset;
use crate::state::State;

/// One request to the helper. No `Debug`: most carry a password.
#[derive(Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Action {
    CheckLogin {
        password: String,
    },
    Status,
    ListHosts,
    AddHost {
        user: String,
        password: String,
    },
    RemoveHost {
        user: String,
    },
    ResetHostPassword {
        user: String,
        password: String,
    },
    SetAdminPassword {
        current: String,
        new: String,
    },
    /// A new public name and certificate choice, all or nothing (reconfigure.rs).
    ChangeDomain {
        domain: String,
        tls: String,
    },
    /// The encrypted backup (backup.rs) under the passphrase the owner typed.
    Backup {
        passphrase: String,
    },
    /// Erase everything per-device (reset.rs); needs the password and the typed word.
    FactoryReset {
        password: String,
        confirm: String,
    },
    RenewCertificate,
    ApplyUpdates,
    Reboot,
    PowerOff,
}

impl Action {
    /// True for the actions that write to the box (everything but reading); they run one at a time
    /// and not while a long change runs.
    pub fn changes_the_box(&self) -> bool {
        !matches!(
            self,
            Action::CheckLogin { .. } | Action::Status | Action::ListHosts | Action::Backup { .. }
        )
    }

    /// The action's name, for the helper's log (never its arguments).
    pub fn name(&self) -> &'static str {
        match self {
            Action::CheckLogin { .. } => "check-login",
            Action::Status => "status",
            Action::ListHosts => "list-hosts",
            Action::AddHost { .. } => "add-host",
            Action::RemoveHost { .. } => "remove-host",
            Action::ResetHostPassword { .. } => "reset-host-password",
            Action::SetAdminPassword { .. } => "set-admin-password",
            Action::ChangeDomain { .. } => "change-domain",
            Action::Backup { .. } => "backup",
            Action::FactoryReset { .. } => "factory-reset",
            Action::RenewCertificate => "renew-certificate",
            Action::ApplyUpdates => "apply-updates",
            Action::Reboot => "reboot",
            Action::PowerOff => "power-off",
        }
    }
}

/// The helper's answer.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "kebab-case")]
pub enum Reply {
    /// Done; the sentence says what happened.
    Done(String),
    /// Refused, with why and what to do, in the owner's words.
    Refused(String),
    LoginChecked(bool),
    Hosts(Vec<String>),
    Status(Box<Status>),
    /// (file name, the backup in base64)
    Backup(String, String),
}

/// What the owner types to confirm a factory reset.
pub const RESET_WORD: &str = "RESET";

/// A meeting host's name as the first-boot questions check the admin's, and never the admin's own
/// account (it has its own page).
pub fn host_name(input: &str, admin_user: &str) -> Result<String, String> {
    let user = validation::user(input)?;
    if user == admin_user {
        return Err(format!(
            "\"{user}\" is the admin account; change its password on the Admin password page."
        ));
    }
    Ok(user)
}

/// Held by an action that writes, so that two requests never write at once.
static WRITING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Carries out `action` on the box below `root`; the helper answers each connection on a thread
/// of its own.
pub fn perform(root: &Root, action: Action) -> Result<Reply> {
    if !action.changes_the_box() {
        return carry_out(root, action);
    }
    let _one_at_a_time = WRITING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if jobs::running() {
        return Ok(Reply::Refused(
            "Another change is still running; wait for it to finish (the Domain page shows it)."
                .into(),
        ));
    }
    carry_out(root, action)
}

fn carry_out(root: &Root, action: Action) -> Result<Reply> {
    let admin_user = State::load(root)?
        .settings
        .map(|settings| settings.admin_user)
        .context("setup has not finished on this box: there is no admin yet")?;
    let refused = |why: String| Ok(Reply::Refused(why));
    match action {
        Action::CheckLogin { password } => Ok(Reply::LoginChecked(
            accounts::admin_password_matches(root, &admin_user, &password)?,
        )),
        Action::Status => Ok(Reply::Status(Box::new(status::gather(root)?))),
        Action::ListHosts => {
            let mut hosts = accounts::list(root, XMPP_DOMAIN)?;
            hosts.retain(|user| *user != admin_user);
            Ok(Reply::Hosts(hosts))
        }
        Action::AddHost { user, password } => {
            set_host_password(root, &admin_user, &user, &password, HostIs::New)
        }
        Action::ResetHostPassword { user, password } => {
            set_host_password(root, &admin_user, &user, &password, HostIs::Known)
        }
        Action::RemoveHost { user } => match host_name(&user, &admin_user) {
            Err(why) => refused(why),
            Ok(user) if accounts::remove(root, XMPP_DOMAIN, &user)? => Ok(Reply::Done(format!(
                "Host \"{user}\" is removed and can no longer start meetings."
            ))),
            Ok(user) => refused(format!("There is no host called \"{user}\".")),
        },
        Action::SetAdminPassword { current, new } => {
            set_admin_password(root, &admin_user, &current, &new)
        }
        Action::ChangeDomain { domain, tls } => change_domain(root, &domain, &tls),
        Action::Backup { passphrase } => {
            if let Err(why) = validation::password(&passphrase, "") {
                return refused(format!("The passphrase: {why}"));
            }
            let content = backup::gather(root)?;
            let name = format!(
                "meetbox-{}-{}.{}",
                content
                    .state
                    .settings
                    .as_ref()
                    .map(|s| s.domain.to_string())
                    .unwrap_or_default(),
                clock::format_time(clock::now())
                    .get(..10)
                    .unwrap_or("backup"),
                backup::EXTENSION
            );
            let sealed = backup::seal(&content, &passphrase)?;
            Ok(Reply::Backup(
                name,
                base64::engine::general_purpose::STANDARD.encode(sealed),
            ))
        }
        Action::FactoryReset { password, confirm } => {
            if !accounts::admin_password_matches(root, &admin_user, &password)? {
                return refused("The password is not right; nothing was erased.".into());
            }
            if confirm.trim() != RESET_WORD {
                return refused(format!(
                    "Type {RESET_WORD} in capitals to confirm; nothing was erased."
                ));
            }
            jobs::start(root, "Factory reset".into(), reset::erase_and_restart)
        }
        Action::RenewCertificate => match renew::renew(root, true) {
            Ok(message) => Ok(Reply::Done(message)),
            Err(error) => refused(format!("{error:#}")),
        },
        Action::ApplyUpdates => {
            // apt's own units, as the timers start them (ordered: the lists, then the install);
            // their outcome shows on the status page.
            systemctl(
                root,
                &[
                    "start",
                    "--no-block",
                    "apt-daily.service",
                    "apt-daily-upgrade.service",
                ],
            )?;
            Ok(Reply::Done(
                "Updates are being fetched and installed; the status page shows the result in a few minutes."
                    .into(),
            ))
        }
        Action::Reboot => {
            systemctl(root, &["--no-block", "reboot"])?;
            Ok(Reply::Done("The box is restarting.".into()))
        }
        Action::PowerOff => {
            systemctl(root, &["--no-block", "poweroff"])?;
            Ok(Reply::Done("The box is powering off.".into()))
        }
    }
}

#[derive(PartialEq)]
enum HostIs {
    New,
    Known,
}

/// Adds a host (`New`) or gives a known one a new password.
fn set_host_password(
    root: &Root,
    admin_user: &str,
    user: &str,
    password: &str,
    host: HostIs,
) -> Result<Reply> {
    let user = match host_name(user, admin_user) {
        Ok(user) => user,
        Err(why) => return Ok(Reply::Refused(why)),
    };
    let exists = accounts::credential(root, XMPP_DOMAIN, &user)?.is_some();
    if exists && host == HostIs::New {
        return Ok(Reply::Refused(format!(
            "There is already a host called \"{user}\"; reset its password instead."
        )));
    }
    if !exists && host == HostIs::Known {
        return Ok(Reply::Refused(format!(
            "There is no host called \"{user}\"."
        )));
    }
    if let Err(why) = validation::password(password, &user) {
        return Ok(Reply::Refused(why));
    }
    accounts::write(
        root,
        XMPP_DOMAIN,
        &user,
        &accounts::new_credential(password)?,
    )?;
    Ok(Reply::Done(match host {
        HostIs::New => format!("Host \"{user}\" can now start meetings."),
        HostIs::Known => format!("Host \"{user}\" has a new password."),
    }))
}

/// The admin's account and the state file's record of it change together, the account first: a
/// crash between them leaves the new password working, and setup's accounts step is already done.
fn set_admin_password(root: &Root, admin_user: &str, current: &str, new: &str) -> Result<Reply> {
    if !accounts::admin_password_matches(root, admin_user, current)? {
        return Ok(Reply::Refused(
            "The current password is not right; nothing was changed.".into(),
        ));
    }
    if let Err(why) = validation::password(new, admin_user) {
        return Ok(Reply::Refused(why));
    }
    let credential = accounts::new_credential(new)?;
    accounts::write(root, XMPP_DOMAIN, admin_user, &credential)?;
    let mut state = State::load(root)?;
    if let Some(settings) = &mut state.settings {
        settings.admin_credential = credential;
    }
    state.save(root)?;
    Ok(Reply::Done(
        "The admin password is changed; log in again with the new one.".into(),
    ))
}

/// Validates like the first-boot questions, then runs the change in the background: it restarts
/// the web server this request came through.
fn change_domain(root: &Root, domain: &str, tls: &str) -> Result<Reply> {
    let domain = match validation::domain(domain) {
        Ok(domain) => domain,
        Err(why) => return Ok(Reply::Refused(why)),
    };
    let tls = match validation::tls_choice(tls) {
        Ok(tls) => tls,
        Err(why) => return Ok(Reply::Refused(why)),
    };
    let mut settings = State::load(root)?
        .settings
        .context("setup has not finished on this box")?;
    if settings.domain == domain && settings.tls == tls {
        return Ok(Reply::Refused(format!(
            "The box already serves {domain} with this certificate choice; nothing to change."
        )));
    }
    settings.domain = domain.clone();
    settings.tls = tls;
    jobs::start(root, format!("Domain change to {domain}"), move |root| {
        let outcome = reconfigure::apply(root, settings)?;
        Ok(format!(
            "The box now serves https://{}/ ({}).",
            outcome.settings.domain, outcome.certificate_note
        ))
    })
}

/// Power and apt's units act on the running box only; under `--root` they are refused.
fn systemctl(root: &Root, args: &[&str]) -> Result<()> {
    anyhow::ensure!(
        root.is_live(),
        "this action needs the running box (not --root {})",
        root.dir().display()
    );
    let status = Command::new("systemctl")
        .args(args)
        .status()
        .with_context(|| format!("cannot run systemctl {}", args.join(" ")))?;
    anyhow::ensure!(status.success(), "systemctl {} failed", args.join(" "));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ask::validation::TlsChoice;
    use crate::settings::Settings;

    /// A set-up box's records below a temporary root: the state and the admin's account.
    fn set_up_root() -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        let credential = accounts::new_credential("horse staple cart moon").unwrap();
        accounts::write(&root, XMPP_DOMAIN, "admin", &credential).unwrap();
        State {
            settings: Some(Settings {
                domain: validation::domain("meet.example.org").unwrap(),
                admin_user: "admin".into(),
                admin_credential: credential,
                email: None,
                tls: TlsChoice::SelfSigned,
                acme_directory: String::new(),
                acme_ca_cert: None,
                ssh_authorized_keys: Vec::new(),
                stun_server: None,
            }),
            completed: Vec::new(),
        }
        .save(&root)
        .unwrap();
        (dir, root)
    }

    fn refusal(root: &Root, action: Action) -> String {
        match perform(root, action).unwrap() {
            Reply::Refused(why) => why,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn host_names_are_checked_like_the_admin_s_and_never_the_admin() {
        assert_eq!(host_name(" Dana ", "admin").unwrap(), "dana");
        assert!(host_name("admin", "admin")
            .unwrap_err()
            .contains("admin account"));
        assert!(host_name("focus", "admin").is_err(), "a service account");
        assert!(host_name("a b", "admin").is_err());
    }

    #[test]
    fn every_argument_is_validated_by_the_helper_itself() {
        let (_dir, root) = set_up_root();
        let weak = Action::AddHost {
            user: "dana".into(),
            password: "short".into(),
        };
        assert!(refusal(&root, weak).contains("Too short"));
        let unknown = Action::ResetHostPassword {
            user: "nobody".into(),
            password: "lamp river stone tree".into(),
        };
        assert!(refusal(&root, unknown).contains("no host called"));
        let bad_domain = Action::ChangeDomain {
            domain: "https://meet.example.org".into(),
            tls: "self-signed".into(),
        };
        assert!(refusal(&root, bad_domain).contains("without \"https://\""));
        let bad_tls = Action::ChangeDomain {
            domain: "new.example.org".into(),
            tls: "manual".into(),
        };
        assert!(refusal(&root, bad_tls).contains("not a TLS choice"));
        let unchanged = Action::ChangeDomain {
            domain: "meet.example.org".into(),
            tls: "self-signed".into(),
        };
        assert!(refusal(&root, unchanged).contains("nothing to change"));
        let word = Action::FactoryReset {
            password: "horse staple cart moon".into(),
            confirm: "yes".into(),
        };
        assert!(refusal(&root, word).contains("Type RESET"));
        let wrong = Action::FactoryReset {
            password: "horse staple cart mon".into(),
            confirm: "RESET".into(),
        };
        assert!(refusal(&root, wrong).contains("nothing was erased"));
        let weak_passphrase = Action::Backup {
            passphrase: "abc".into(),
        };
        assert!(refusal(&root, weak_passphrase).contains("The passphrase"));
        let current = Action::SetAdminPassword {
            current: "not it at all".into(),
            new: "violet window paper cloud".into(),
        };
        assert!(refusal(&root, current).contains("current password is not right"));
        assert!(matches!(
            perform(
                &root,
                Action::CheckLogin {
                    password: "horse staple cart moon".into()
                }
            )
            .unwrap(),
            Reply::LoginChecked(true)
        ));
    }

    #[test]
    fn requests_name_an_action_and_nothing_else() {
        let parsed: Result<Action, _> =
            serde_json::from_str(r#"{"action":"add-host","user":"a","password":"b","shell":"x"}"#);
        assert!(parsed.is_err(), "unknown fields are refused");
        assert!(serde_json::from_str::<Action>(r#"{"action":"run-shell"}"#).is_err());
        let request = serde_json::to_string(&Action::Reboot).unwrap();
        assert_eq!(request, r#"{"action":"reboot"}"#);
    }
}
