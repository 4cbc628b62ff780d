//! Console sessions, kept in memory on the server: a random 256-bit id in an HttpOnly cookie,
//! the user and role it stands for, and its CSRF token. Bounded (the oldest session is evicted
//! when full), with an idle and an absolute expiry. Failed logins are limited by the API's
//! `login` module, the same for every route that checks a password.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::{OsRng, RngCore};
use serde::Deserialize;

use crate::api::accounts::Role;

/// `[console]`: the web console's sessions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// A session unused this long is logged out (default 8 hours).
    #[serde(default = "default_idle")]
    pub session_idle_seconds: u64,
    /// A session ends this long after login, used or not (default 24 hours).
    #[serde(default = "default_max_age")]
    pub session_max_seconds: u64,
    /// Sessions kept at most; a new login evicts the oldest beyond it.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// Moved to `api.max_login_failures_per_address`: one limit for every login route.
    #[serde(default)]
    pub max_login_failures: Option<u32>,
    /// Moved to `api.login_window_seconds`.
    #[serde(default)]
    pub login_window_seconds: Option<u64>,
}

fn default_idle() -> u64 {
    8 * 3600
}
fn default_max_age() -> u64 {
    24 * 3600
}
fn default_max_sessions() -> usize {
    10_000
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            session_idle_seconds: default_idle(),
            session_max_seconds: default_max_age(),
            max_sessions: default_max_sessions(),
            max_login_failures: None,
            login_window_seconds: None,
        }
    }
}

impl ConsoleConfig {
    /// `(field, value, min, max)` for the config's range check.
    /// The keys that moved to `[api]`, and where; set, they are refused with that name.
    pub fn moved(&self) -> Option<(&'static str, u64, &'static str)> {
        if let Some(value) = self.max_login_failures {
            return Some((
                "console.max_login_failures",
                u64::from(value),
                "api.max_login_failures_per_address",
            ));
        }
        self.login_window_seconds.map(|value| {
            (
                "console.login_window_seconds",
                value,
                "api.login_window_seconds",
            )
        })
    }

    pub fn ranges(&self) -> [(&'static str, u64, u64, u64); 3] {
        [
            (
                "console.session_idle_seconds",
                self.session_idle_seconds,
                60,
                7 * 86_400,
            ),
            (
                "console.session_max_seconds",
                self.session_max_seconds,
                60,
                30 * 86_400,
            ),
            (
                "console.max_sessions",
                self.max_sessions as u64,
                1,
                1_000_000,
            ),
        ]
    }
}

/// 256 random bits from the OS, as 64 hex digits.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One logged-in user.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    pub role: Role,
    pub csrf: String,
    created: Instant,
    last_used: Instant,
}

pub struct Sessions {
    config: ConsoleConfig,
    sessions: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    pub fn new(config: ConsoleConfig) -> Self {
        Self {
            config,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a session; returns its id.
    pub fn create(&self, user: &str, role: Role, now: Instant) -> String {
        let id = random_token();
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.retain(|_, session| self.alive(session, now));
        while sessions.len() >= self.config.max_sessions {
            // A linear scan: it runs only at a login into a full table, at most 10,000 entries.
            let oldest = sessions
                .iter()
                .min_by_key(|(_, session)| session.created)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(oldest) => sessions.remove(&oldest),
                None => break,
            };
        }
        sessions.insert(
            id.clone(),
            Session {
                user: user.to_owned(),
                role,
                csrf: random_token(),
                created: now,
                last_used: now,
            },
        );
        id
    }

    fn alive(&self, session: &Session, now: Instant) -> bool {
        now.saturating_duration_since(session.last_used)
            <= Duration::from_secs(self.config.session_idle_seconds)
            && now.saturating_duration_since(session.created)
                <= Duration::from_secs(self.config.session_max_seconds)
    }

    /// The live session `id`, marked used; an expired one is removed.
    pub fn get(&self, id: &str, now: Instant) -> Option<Session> {
        let mut sessions = self.sessions.lock().unwrap_or_else(PoisonError::into_inner);
        let session = sessions.get_mut(id)?;
        if !self.alive(session, now) {
            sessions.remove(id);
            return None;
        }
        session.last_used = now;
        Some(session.clone())
    }

    pub fn remove(&self, id: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }

    /// Ends every session of `user` (removed, or given another role or password).
    pub fn remove_user(&self, user: &str) {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|_, session| session.user != user);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions(max: usize) -> Sessions {
        Sessions::new(ConsoleConfig {
            session_idle_seconds: 60,
            session_max_seconds: 300,
            max_sessions: max,
            ..ConsoleConfig::default()
        })
    }

    #[test]
    fn ids_are_random_and_256_bits() {
        let a = random_token();
        assert_eq!(a.len(), 64);
        assert_ne!(a, random_token());
    }

    #[test]
    fn idle_expiry() {
        let store = sessions(10);
        let t0 = Instant::now();
        let id = store.create("rina", Role::Operator, t0);
        assert!(store.get(&id, t0 + Duration::from_secs(59)).is_some());
        // Used at 59 s: idle counts from there.
        assert!(store.get(&id, t0 + Duration::from_secs(118)).is_some());
        assert!(store.get(&id, t0 + Duration::from_secs(179)).is_none());
        assert_eq!(store.len(), 0, "an expired session is removed");
    }

    #[test]
    fn absolute_expiry_even_when_used() {
        let store = sessions(10);
        let t0 = Instant::now();
        let id = store.create("rina", Role::Operator, t0);
        for seconds in (30..=300).step_by(30) {
            assert!(store.get(&id, t0 + Duration::from_secs(seconds)).is_some());
        }
        assert!(store.get(&id, t0 + Duration::from_secs(301)).is_none());
    }

    #[test]
    fn the_oldest_is_evicted_when_full() {
        let store = sessions(3);
        let t0 = Instant::now();
        let ids: Vec<String> = (0..4)
            .map(|i| store.create("u", Role::Viewer, t0 + Duration::from_secs(i)))
            .collect();
        assert_eq!(store.len(), 3);
        let now = t0 + Duration::from_secs(5);
        assert!(store.get(&ids[0], now).is_none(), "the oldest went");
        assert!(ids[1..].iter().all(|id| store.get(id, now).is_some()));
    }

    #[test]
    fn logout_removes() {
        let store = sessions(3);
        let t0 = Instant::now();
        let id = store.create("u", Role::Admin, t0);
        store.remove(&id);
        assert!(store.get(&id, t0).is_none());
    }
}
