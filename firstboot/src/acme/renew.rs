//! Renewing the certificate after setup: at two thirds of its lifetime (meetbox-acme.timer), after a
//! failed attempt's back-off, or now (`--force`, and the admin's "Renew now").

use anyhow::{bail, Context, Result};

use crate::acme::retry::RetryRecord;
use crate::acme::tls;
use crate::apply::services;
use crate::apply::Root;
use crate::ask::validation::TlsChoice;
use crate::clock::{self, format_time};
use crate::network;
use crate::setup;
use crate::state::State;

/// Renews when due (or `force`); returns what happened, in the owner's words.
pub fn renew(root: &Root, force: bool) -> Result<String> {
    if !setup::finished(root) {
        bail!("setup has not finished; run meetbox-firstboot first");
    }
    let settings = State::load(root)?
        .settings
        .context("the state file has no settings; run meetbox-firstboot reconfigure")?;
    if settings.tls != TlsChoice::LetsEncrypt {
        return Ok("The box uses a self-signed certificate by choice; nothing to renew.".into());
    }
    let now = clock::now();
    let installed = tls::installed(root)?;
    if let Some(info) = &installed {
        if !info.self_signed && now < tls::renewal_time(info) && !force {
            return Ok(format!(
                "The certificate is renewed after {}.",
                format_time(tls::renewal_time(info))
            ));
        }
    }
    if let Some(record) = RetryRecord::load(root)? {
        if now < record.next_attempt && !force {
            return Ok(format!(
                "The last attempt failed; the next one is after {}.",
                format_time(record.next_attempt)
            ));
        }
    }
    let lan = network::detect(settings.domain.as_str()).lan_address;
    match setup::obtain_and_install(root, &settings, lan)? {
        Ok(()) => {
            services::reload_for_new_certificate(root)?;
            Ok("A new certificate is installed.".into())
        }
        Err(failure) => {
            let record = RetryRecord::record_failure(root, now, &failure.explanation)?;
            bail!(
                "{failure}\nThe current certificate stays in place; the next attempt is after {}.",
                format_time(record.next_attempt)
            )
        }
    }
}
