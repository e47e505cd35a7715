//! The state file: which steps are done, and the settings they act on. Written atomically after every
//! step, so a crash or power cut at any point resumes at the first step not recorded.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::apply::{FileSpec, Owner, Root};
use crate::layout;
use crate::settings::Settings;

/// The steps of setup, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Step {
    /// The answers are recorded (the answers file is wiped after this).
    Answers,
    /// The per-device secrets exist.
    Secrets,
    /// /etc/machine-id holds this device's id.
    MachineId,
    /// The boot menu's superuser is this device's own (render::boot_menu).
    BootMenu,
    /// SSH host keys are this device's own (only when SSH is installed).
    SshHostKeys,
    /// A self-signed certificate for the public name is installed.
    SelfSignedCertificate,
    /// Prosody's certificates for the internal domains exist.
    ProsodyCertificates,
    /// All configuration files are rendered (config.js with the tuning file's caps).
    Configuration,
    /// The videobridge's and jicofo's Java heaps are set from the tuning file, and their packages'
    /// environment files carry this box's identity (when Jitsi is installed).
    JavaHeaps,
    /// The swap file from the tuning file exists and is listed in fstab (unless the disk is too small).
    Swap,
    /// The prosody accounts of the admin, jicofo and the videobridge exist.
    Accounts,
    /// A certificate from the ACME server is installed, or a retry is scheduled.
    Certificate,
    /// The services are enabled and running.
    Services,
}

impl Step {
    pub const ALL: [Step; 13] = [
        Step::Answers,
        Step::Secrets,
        Step::MachineId,
        Step::BootMenu,
        Step::SshHostKeys,
        Step::SelfSignedCertificate,
        Step::ProsodyCertificates,
        Step::Configuration,
        Step::JavaHeaps,
        Step::Swap,
        Step::Accounts,
        Step::Certificate,
        Step::Services,
    ];

    /// The name used in the state file and by `MEETBOX_FIRSTBOOT_CRASH_AFTER`.
    pub fn name(self) -> &'static str {
        match self {
            Step::Answers => "answers",
            Step::Secrets => "secrets",
            Step::MachineId => "machine-id",
            Step::BootMenu => "boot-menu",
            Step::SshHostKeys => "ssh-host-keys",
            Step::SelfSignedCertificate => "self-signed-certificate",
            Step::ProsodyCertificates => "prosody-certificates",
            Step::Configuration => "configuration",
            Step::JavaHeaps => "java-heaps",
            Step::Swap => "swap",
            Step::Accounts => "accounts",
            Step::Certificate => "certificate",
            Step::Services => "services",
        }
    }

    /// What the step does, in the user's words.
    pub fn describe(self) -> &'static str {
        match self {
            Step::Answers => "Recording the answers",
            Step::Secrets => "Creating this box's own secrets",
            Step::MachineId => "Setting this box's machine id",
            Step::BootMenu => "Locking the boot menu with this box's own password",
            Step::SshHostKeys => "Creating SSH host keys",
            Step::SelfSignedCertificate => "Creating a self-signed certificate",
            Step::ProsodyCertificates => "Creating the chat server's internal certificates",
            Step::Configuration => "Writing the configuration",
            Step::JavaHeaps => "Sizing the Java heaps of jicofo and the videobridge",
            Step::Swap => "Creating the swap file",
            Step::Accounts => "Creating the accounts",
            Step::Certificate => "Getting a certificate",
            Step::Services => "Starting the services",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub settings: Option<Settings>,
    pub completed: Vec<Step>,
}

impl State {
    /// Loads the state file; none yet means a fresh start.
    pub fn load(root: &Root) -> Result<State> {
        let state = root.read_record(
            layout::STATE_FILE,
            "the state file",
            "remove it to start setup from the beginning",
        )?;
        Ok(state.unwrap_or_default())
    }

    pub fn save(&self, root: &Root) -> Result<()> {
        let json = serde_json::to_string_pretty(self).context("cannot encode the state")?;
        root.write(&FileSpec::new(
            layout::STATE_FILE,
            json + "\n",
            0o600,
            Owner::ROOT,
        ))
        .context("cannot save the setup state")
    }

    pub fn is_done(&self, step: Step) -> bool {
        self.completed.contains(&step)
    }

    pub fn mark_done(&mut self, step: Step) {
        if !self.is_done(step) {
            self.completed.push(step);
        }
    }

    /// Forgets steps so the next run does them again (reconfigure).
    pub fn forget(&mut self, steps: &[Step]) {
        self.completed.retain(|s| !steps.contains(s));
    }
}

/// The done marker exists: setup finished on this box.
pub fn is_finished(root: &Root) -> bool {
    root.exists(layout::DONE_MARKER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_through_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        let mut state = State::load(&root).unwrap();
        assert_eq!(state, State::default());
        state.mark_done(Step::Answers);
        state.mark_done(Step::Answers);
        state.save(&root).unwrap();
        let loaded = State::load(&root).unwrap();
        assert_eq!(loaded.completed, vec![Step::Answers]);
        assert!(root
            .read_to_string(layout::STATE_FILE)
            .unwrap()
            .contains("\"answers\""));
    }

    #[test]
    fn step_names_are_unique() {
        let mut names: Vec<_> = Step::ALL.iter().map(|s| s.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Step::ALL.len());
    }
}
