//! Every password check goes through here, whichever route asks (API Basic, console login):
//! first the limiter reserves a try for the address and the user name (`limiter.rs`), then a
//! thread of the fixed pool runs Argon2 (`pool.rs`), against the dummy hash for an unknown
//! name. Failures are counted in `pantau_collector_api_auth_failures_total{reason}` by the
//! caller; this module only decides.

pub mod limiter;
pub mod pool;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

pub use limiter::{LoginLimiter, Thresholds};
pub use pool::{PasswordPool, PoolError};

use super::accounts::{Accounts, Role};

/// Why a login did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Too many failures from this address (or for this name from a failing address).
    Limited { retry_after: Duration },
    /// Wrong name or password: the two are never told apart.
    Wrong,
    /// No checking thread came free in time.
    Busy,
}

/// The limiter and the pool, shared by the routes.
#[derive(Debug)]
pub struct Login {
    pub limiter: Arc<LoginLimiter>,
    pool: PasswordPool,
}

impl Login {
    pub fn new(thresholds: Thresholds, threads: usize, wait: Duration) -> std::io::Result<Self> {
        Ok(Self {
            limiter: Arc::new(LoginLimiter::new(thresholds)),
            pool: PasswordPool::start(threads, wait)?,
        })
    }

    /// The role of `user` if `password` is right, within the limits.
    pub async fn check(
        &self,
        accounts: &std::sync::RwLock<Accounts>,
        address: IpAddr,
        user: &str,
        password: String,
    ) -> Result<Role, Refusal> {
        let attempt = self
            .limiter
            .begin(address, user, Instant::now())
            .map_err(|limited| Refusal::Limited {
                retry_after: limited.retry_after,
            })?;
        let account = accounts
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .find(user)
            .map(|account| (account.hash.clone(), account.role));
        let (hash, role) = account.unzip();
        match self.pool.verify(hash, password).await {
            Ok(true) => {
                attempt.succeeded(Instant::now());
                role.ok_or(Refusal::Wrong)
            }
            Ok(false) => {
                attempt.failed(Instant::now());
                Err(Refusal::Wrong)
            }
            // The try is released uncounted: the caller did nothing wrong.
            Err(PoolError::Busy | PoolError::Stopped) => Err(Refusal::Busy),
        }
    }
}

/// How a user name typed at a login goes into a log line: as is when it is a known user,
/// otherwise only its length and a hash prefix, since a password typed into the name field
/// must never reach the log in clear.
pub fn loggable_user(accounts: &std::sync::RwLock<Accounts>, user: &str) -> String {
    let known = accounts
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .find(user)
        .is_some();
    if known {
        return user.to_owned();
    }
    let digest = Sha256::digest(user.as_bytes());
    let prefix: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("unknown(len={},sha256={prefix})", user.chars().count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_are_not_logged_in_clear() {
        let mut accounts = Accounts::default();
        accounts
            .set("rina", Some(Role::Admin), "rahasia-sekali", false)
            .unwrap();
        let accounts = std::sync::RwLock::new(accounts);
        assert_eq!(loggable_user(&accounts, "rina"), "rina");
        let typed = loggable_user(&accounts, "Rahasia-Sekali!");
        assert!(!typed.contains("Rahasia"), "{typed}");
        assert!(typed.starts_with("unknown(len=15,sha256="), "{typed}");
    }

    #[tokio::test]
    async fn the_limit_is_checked_before_the_hash_and_busy_is_not_a_failure() {
        let mut accounts = Accounts::default();
        accounts
            .set("rina", Some(Role::Operator), "rahasia-sekali", false)
            .unwrap();
        let accounts = std::sync::RwLock::new(accounts);
        let login = Login::new(
            Thresholds {
                per_address: 2,
                per_user: 10,
                window: Duration::from_secs(60),
            },
            1,
            Duration::from_secs(5),
        )
        .unwrap();
        let here: IpAddr = "10.0.0.1".parse().unwrap();
        let there: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..2 {
            assert_eq!(
                login.check(&accounts, here, "rina", "salah".into()).await,
                Err(Refusal::Wrong)
            );
        }
        // Limited even with the right password, from this address only.
        assert!(matches!(
            login
                .check(&accounts, here, "rina", "rahasia-sekali".into())
                .await,
            Err(Refusal::Limited { .. })
        ));
        assert_eq!(
            login
                .check(&accounts, there, "rina", "rahasia-sekali".into())
                .await,
            Ok(Role::Operator)
        );
        // An unknown name answers as a wrong password does.
        assert_eq!(
            login
                .check(&accounts, there, "nobody", "rahasia-sekali".into())
                .await,
            Err(Refusal::Wrong)
        );
    }
}
