//! Who is logged in to the admin, and who may try: sessions with a CSRF token each, an idle and an
//! absolute timeout, and a lockout after failed logins. Pure: the caller passes the time, so the
//! rules are tested without waiting.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::apply::accounts::constant_time_eq;

/// A session ends after this long without a request ...
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// ... and this long after the login, whatever happens.
pub const ABSOLUTE_TIMEOUT: Duration = Duration::from_secs(8 * 60 * 60);
/// Failed logins from one address before it is locked out for [`LOCKOUT`].
pub const FAILURES_PER_ADDRESS: usize = 5;
/// Failed logins from all addresses together before every login is locked out for [`LOCKOUT`]:
/// bounds guessing from many addresses of the local network.
pub const FAILURES_IN_ALL: usize = 20;
/// How far back failures count, and how long a lockout lasts.
pub const LOCKOUT: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone)]
pub struct Session {
    pub csrf: String,
    /// The outcome of the last change, shown once on the next page (post, redirect, get).
    pub notice: Option<Notice>,
    started: Instant,
    last_seen: Instant,
}

/// What the owner's last change did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    Done(String),
    Refused(String),
}

/// Why a login may not be tried now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many failures from this address; try again after this long.
    AddressLocked(Duration),
    /// Too many failures in all.
    EveryoneLocked(Duration),
}

impl Refusal {
    pub fn message(self) -> String {
        let (who, wait) = match self {
            Refusal::AddressLocked(wait) => ("from this computer", wait),
            Refusal::EveryoneLocked(wait) => ("in all", wait),
        };
        format!(
            "Too many wrong passwords {who}. Logins are paused for {} more minute(s).",
            wait.as_secs().div_ceil(60).max(1)
        )
    }
}

#[derive(Default)]
pub struct Sessions {
    sessions: HashMap<String, Session>,
    failures: Vec<(IpAddr, Instant)>,
}

impl Sessions {
    /// Whether a login from `address` may be tried at `now`.
    pub fn may_try(&mut self, address: IpAddr, now: Instant) -> Result<(), Refusal> {
        self.failures
            .retain(|(_, at)| now.saturating_duration_since(*at) < LOCKOUT);
        if self.failures.len() >= FAILURES_IN_ALL {
            let oldest = self.failures[self.failures.len() - FAILURES_IN_ALL].1;
            return Err(Refusal::EveryoneLocked(lockout_left(oldest, now)));
        }
        let mine: Vec<Instant> = self
            .failures
            .iter()
            .filter(|(from, _)| *from == address)
            .map(|(_, at)| *at)
            .collect();
        if mine.len() >= FAILURES_PER_ADDRESS {
            let oldest = mine[mine.len() - FAILURES_PER_ADDRESS];
            return Err(Refusal::AddressLocked(lockout_left(oldest, now)));
        }
        Ok(())
    }

    pub fn failed(&mut self, address: IpAddr, now: Instant) {
        self.failures.push((address, now));
    }

    /// Starts a session after a good password; returns its token (the cookie's value). The
    /// address's failures are forgotten.
    pub fn start(&mut self, address: IpAddr, token: String, csrf: String, now: Instant) -> String {
        self.failures.retain(|(from, _)| *from != address);
        self.sessions.retain(|_, s| alive(s, now));
        self.sessions.insert(
            token.clone(),
            Session {
                csrf,
                notice: None,
                started: now,
                last_seen: now,
            },
        );
        token
    }

    /// The live session of `token`, its idle time renewed; None when unknown or timed out.
    pub fn get(&mut self, token: &str, now: Instant) -> Option<Session> {
        let key = self
            .sessions
            .keys()
            .find(|known| constant_time_eq(known.as_bytes(), token.as_bytes()))?
            .clone();
        let session = self.sessions.get_mut(&key)?;
        if !alive(session, now) {
            self.sessions.remove(&key);
            return None;
        }
        session.last_seen = now;
        Some(session.clone())
    }

    /// Keeps `notice` for the session's next page.
    pub fn notify(&mut self, token: &str, notice: Notice) {
        if let Some(session) = self.sessions.get_mut(token) {
            session.notice = Some(notice);
        }
    }

    /// The notice for this page, once.
    pub fn take_notice(&mut self, token: &str) -> Option<Notice> {
        self.sessions.get_mut(token)?.notice.take()
    }

    pub fn end(&mut self, token: &str) {
        self.sessions.remove(token);
    }

    /// Ends every session (after the admin password changed).
    pub fn end_all(&mut self) {
        self.sessions.clear();
    }
}

/// True when the form's token is the session's.
pub fn csrf_matches(session: &Session, submitted: &str) -> bool {
    constant_time_eq(session.csrf.as_bytes(), submitted.as_bytes())
}

fn alive(session: &Session, now: Instant) -> bool {
    now.saturating_duration_since(session.last_seen) < IDLE_TIMEOUT
        && now.saturating_duration_since(session.started) < ABSOLUTE_TIMEOUT
}

fn lockout_left(oldest_counted: Instant, now: Instant) -> Duration {
    LOCKOUT.saturating_sub(now.saturating_duration_since(oldest_counted))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(last: u8) -> IpAddr {
        IpAddr::from([192, 168, 1, last])
    }

    #[test]
    fn five_failures_lock_one_address_for_a_while() {
        let mut sessions = Sessions::default();
        let t0 = Instant::now();
        for i in 0..FAILURES_PER_ADDRESS {
            assert_eq!(sessions.may_try(address(7), t0), Ok(()), "attempt {i}");
            sessions.failed(address(7), t0);
        }
        let refused = sessions.may_try(address(7), t0 + Duration::from_secs(60));
        assert_eq!(
            refused,
            Err(Refusal::AddressLocked(LOCKOUT - Duration::from_secs(60)))
        );
        assert!(refused.unwrap_err().message().contains("14 more minute"));
        // Another computer may still try; the locked one again once the lockout has passed.
        assert_eq!(sessions.may_try(address(8), t0), Ok(()));
        assert_eq!(sessions.may_try(address(7), t0 + LOCKOUT), Ok(()));
    }

    #[test]
    fn failures_from_many_addresses_lock_everyone() {
        let mut sessions = Sessions::default();
        let t0 = Instant::now();
        for i in 0..FAILURES_IN_ALL {
            sessions.failed(address(i as u8), t0);
        }
        assert!(matches!(
            sessions.may_try(address(250), t0),
            Err(Refusal::EveryoneLocked(_))
        ));
    }

    #[test]
    fn sessions_time_out_when_idle_and_in_all() {
        let mut sessions = Sessions::default();
        let t0 = Instant::now();
        let token = sessions.start(address(1), "tok".into(), "csrf".into(), t0);
        let minute = Duration::from_secs(60);
        assert!(sessions.get(&token, t0 + 14 * minute).is_some());
        // Active every 14 minutes: alive until the absolute limit.
        let mut now = t0 + 14 * minute;
        while now + 14 * minute < t0 + ABSOLUTE_TIMEOUT {
            now += 14 * minute;
            assert!(sessions.get(&token, now).is_some());
        }
        assert!(sessions.get(&token, t0 + ABSOLUTE_TIMEOUT).is_none());

        let token = sessions.start(address(1), "tok2".into(), "c".into(), t0);
        assert!(sessions.get(&token, t0 + IDLE_TIMEOUT).is_none());
        assert!(sessions.get("unknown", t0).is_none());
    }

    #[test]
    fn a_good_login_forgets_the_failures_and_csrf_must_match() {
        let mut sessions = Sessions::default();
        let t0 = Instant::now();
        for _ in 0..FAILURES_PER_ADDRESS - 1 {
            sessions.failed(address(3), t0);
        }
        let token = sessions.start(address(3), "t".into(), "right".into(), t0);
        sessions.failed(address(3), t0);
        assert_eq!(sessions.may_try(address(3), t0), Ok(()));
        let session = sessions.get(&token, t0).unwrap();
        assert!(csrf_matches(&session, "right"));
        assert!(!csrf_matches(&session, "wrong"));
        assert!(!csrf_matches(&session, ""));
        sessions.end_all();
        assert!(sessions.get(&token, t0).is_none());
    }
}
