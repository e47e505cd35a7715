//! Changing the domain or the certificate choice of a finished box as one step, from
//! `meetbox-firstboot reconfigure` or the web admin. Everything the change rewrites is kept first;
//! if any part fails (rendering, the certificate, a service), it is all put back and the services
//! restarted, so the box goes on serving its old name.

use anyhow::{bail, Context, Result};

use crate::acme::retry::RetryRecord;
use crate::apply::services;
use crate::apply::snapshot::Snapshot;
use crate::apply::Root;
use crate::ask::console;
use crate::ask::validation::TlsChoice;
use crate::layout;
use crate::render;
use crate::settings::Settings;
use crate::setup::{self, Outcome};
use crate::state::{State, Step};

/// The steps a new name or certificate choice runs again.
const STEPS: [Step; 4] = [
    Step::SelfSignedCertificate,
    Step::Configuration,
    Step::Certificate,
    Step::Services,
];

/// Applies `new` (the recorded settings with another domain, e-mail or certificate choice).
pub fn apply(root: &Root, new: Settings) -> Result<Outcome> {
    let Some(_lock) = console::try_lock(root)? else {
        bail!("setup is running on another console; wait for it to finish");
    };
    let mut state = State::load(root)?;
    let old = state
        .settings
        .clone()
        .context("setup has not run yet; run meetbox-firstboot first")?;
    let snapshot = Snapshot::take(root, &touched(&old, &new))?;
    match attempt(root, &mut state, &old, new) {
        Ok(outcome) => Ok(outcome),
        Err(failure) => {
            snapshot
                .restore(root)
                .context("the change failed, and putting the old configuration back failed too")?;
            services::enable_and_restart(root, &services::STACK).context(
                "the change failed; the old configuration is back, but a service did not restart",
            )?;
            Err(failure.context(format!(
                "nothing was changed: the box still serves {}",
                old.domain
            )))
        }
    }
}

fn attempt(root: &Root, state: &mut State, old: &Settings, new: Settings) -> Result<Outcome> {
    if new.domain != old.domain {
        root.remove(&layout::jitsi_config_js(old.domain.as_str()))?;
    }
    RetryRecord::clear(root)?;
    let wants_acme = new.tls == TlsChoice::LetsEncrypt;
    state.settings = Some(new);
    setup::reopen(root, state, &STEPS)?;
    let outcome = setup::resume(root, state)?;
    if wants_acme {
        if let Some(record) = RetryRecord::load(root)? {
            bail!("no certificate for the new name: {}", record.last_failure);
        }
    }
    Ok(outcome)
}

/// Every file the steps rewrite, for both names.
fn touched(old: &Settings, new: &Settings) -> Vec<String> {
    let mut targets = render::paths(old.domain.as_str());
    targets.extend(render::paths(new.domain.as_str()));
    targets.extend(
        [
            layout::TLS_CERT,
            layout::TLS_KEY,
            layout::TURN_TLS_CERT,
            layout::TURN_TLS_KEY,
            layout::STATE_FILE,
            layout::ACME_RETRY_FILE,
            layout::DONE_MARKER,
        ]
        .map(str::to_string),
    );
    targets.sort();
    targets.dedup();
    targets
}
