//! The ACME retry record: after a failed attempt the next one waits, doubling from 30 minutes up to a
//! day, so a box that cannot validate never hammers the CA (Let's Encrypt limits failed validations per
//! hour). The hourly timer runs `meetbox-firstboot renew`, which honours this record.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::apply::{FileSpec, Owner, Root};
use crate::layout;

const FIRST_DELAY_SECS: i64 = 30 * 60;
const MAX_DELAY_SECS: i64 = 24 * 60 * 60;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryRecord {
    /// Failed attempts so far.
    pub attempts: u32,
    /// Unix time before which no new attempt is made.
    pub next_attempt: i64,
    /// The plain explanation of the last failure.
    pub last_failure: String,
}

/// The wait after `attempts` failures.
pub fn delay_after(attempts: u32) -> i64 {
    let doublings = attempts.saturating_sub(1).min(16);
    (FIRST_DELAY_SECS << doublings).min(MAX_DELAY_SECS)
}

impl RetryRecord {
    pub fn load(root: &Root) -> Result<Option<RetryRecord>> {
        root.read_record(layout::ACME_RETRY_FILE, "the retry record", "remove it")
    }

    /// Records one more failure at `now` and returns the new record.
    pub fn record_failure(root: &Root, now: i64, explanation: &str) -> Result<RetryRecord> {
        let attempts = Self::load(root)?.map_or(0, |r| r.attempts) + 1;
        let record = RetryRecord {
            attempts,
            next_attempt: now + delay_after(attempts),
            last_failure: explanation.to_string(),
        };
        let json =
            serde_json::to_string_pretty(&record).context("cannot encode the retry record")?;
        root.write(&FileSpec::new(
            layout::ACME_RETRY_FILE,
            json + "\n",
            0o600,
            Owner::ROOT,
        ))?;
        Ok(record)
    }

    pub fn clear(root: &Root) -> Result<()> {
        root.remove(layout::ACME_RETRY_FILE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_doubles_up_to_a_day() {
        assert_eq!(delay_after(1), 1800);
        assert_eq!(delay_after(2), 3600);
        assert_eq!(delay_after(3), 7200);
        assert_eq!(delay_after(7), 86_400);
        assert_eq!(delay_after(100), 86_400);
    }

    #[test]
    fn failures_accumulate() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        RetryRecord::record_failure(&root, 1000, "port 80 closed").unwrap();
        let second = RetryRecord::record_failure(&root, 5000, "port 80 closed").unwrap();
        assert_eq!(second.attempts, 2);
        assert_eq!(second.next_attempt, 5000 + 3600);
        RetryRecord::clear(&root).unwrap();
        assert_eq!(RetryRecord::load(&root).unwrap(), None);
    }
}
