//! Password checks on a fixed pool of threads. Argon2 is slow and memory-hard on purpose
//! (19 MiB and tens of milliseconds a check at OWASP's floor), so an unbounded number at once
//! is a way for anyone on the LAN to exhaust the collector: 40 concurrent wrong passwords on
//! the blocking pool took it from 73 to 653 MB. Here at most `threads` checks run at once, each
//! thread keeps one Argon2 memory area for its whole life (so memory stays flat however many
//! tries come), and a try that cannot get a thread within `wait` is refused as busy.
//!
//! An unknown user name is checked against a dummy hash made at start with the same
//! parameters, so the answer and its timing do not tell known from unknown names.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, PasswordHasher, Version};
use subtle::ConstantTimeEq;
use thiserror::Error;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use tracing::warn;

/// Largest Argon2 memory a stored hash may ask for (64 MiB): a users file cannot make one
/// check take more than this.
const MAX_BLOCKS: usize = 64 * 1024;

/// Why a check did not say yes or no.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PoolError {
    #[error("every password-checking thread is busy; try again shortly")]
    Busy,
    #[error("the password-checking threads have stopped")]
    Stopped,
}

struct Job {
    /// Held until the thread has finished, even if the request that asked is gone.
    _slot: OwnedSemaphorePermit,
    password: String,
    /// `None`: check against the dummy hash and answer no.
    hash: Option<String>,
    reply: oneshot::Sender<bool>,
}

/// The pool; cheap to share.
pub struct PasswordPool {
    jobs: Mutex<Sender<Job>>,
    slots: Arc<Semaphore>,
    wait: Duration,
    threads: usize,
}

impl std::fmt::Debug for PasswordPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordPool")
            .field("threads", &self.threads)
            .field("wait", &self.wait)
            .finish()
    }
}

impl PasswordPool {
    /// Starts `threads` checking threads (at least one).
    pub fn start(threads: usize, wait: Duration) -> std::io::Result<Self> {
        let threads = threads.max(1);
        let dummy = Arc::new(dummy_hash());
        let (jobs, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..threads {
            let receiver = receiver.clone();
            let dummy = dummy.clone();
            std::thread::Builder::new()
                .name(format!("password-{index}"))
                .spawn(move || serve(&receiver, &dummy))?;
        }
        Ok(Self {
            jobs: Mutex::new(jobs),
            slots: Arc::new(Semaphore::new(threads)),
            wait,
            threads,
        })
    }

    /// Whether `password` matches `hash` (a PHC string); `None` for an unknown user, which
    /// costs the same and answers no.
    pub async fn verify(&self, hash: Option<String>, password: String) -> Result<bool, PoolError> {
        // A slot per thread: the channel never holds more jobs than there are threads, so a
        // burst waits here, bounded in time, instead of queueing without end.
        let slot = tokio::time::timeout(self.wait, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| PoolError::Busy)?
            .map_err(|_| PoolError::Stopped)?;
        let (reply, answer) = oneshot::channel();
        self.jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .send(Job {
                _slot: slot,
                password,
                hash,
                reply,
            })
            .map_err(|_| PoolError::Stopped)?;
        answer.await.map_err(|_| PoolError::Stopped)
    }
}

/// One checking thread: takes jobs until the pool is dropped, reusing its memory area.
fn serve(receiver: &Mutex<Receiver<Job>>, dummy: &str) {
    let mut memory: Vec<Block> = Vec::new();
    loop {
        let job = receiver
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .recv();
        let Ok(job) = job else { return };
        let verdict = match &job.hash {
            Some(hash) => check(hash, &job.password, &mut memory),
            None => {
                let _ = check(dummy, &job.password, &mut memory);
                false
            }
        };
        let _ = job.reply.send(verdict);
    }
}

/// Argon2 of `password` with the salt and parameters of `phc`, compared in constant time.
fn check(phc: &str, password: &str, memory: &mut Vec<Block>) -> bool {
    match try_check(phc, password, memory) {
        Ok(verdict) => verdict,
        Err(why) => {
            warn!(reason = %why, "a stored password hash cannot be checked");
            false
        }
    }
}

fn try_check(phc: &str, password: &str, memory: &mut Vec<Block>) -> Result<bool, String> {
    let parsed = PasswordHash::new(phc).map_err(|e| e.to_string())?;
    let algorithm = Algorithm::try_from(parsed.algorithm).map_err(|e| e.to_string())?;
    let version = match parsed.version {
        Some(version) => Version::try_from(version).map_err(|e| e.to_string())?,
        None => Version::default(),
    };
    let params = Params::try_from(&parsed).map_err(|e| e.to_string())?;
    let expected = parsed.hash.ok_or("no hash in the PHC string")?;
    let salt = parsed.salt.ok_or("no salt in the PHC string")?;
    let mut salt_bytes = [0u8; 64];
    let salt = salt
        .decode_b64(&mut salt_bytes)
        .map_err(|e| e.to_string())?;
    let blocks = params.block_count();
    if blocks > MAX_BLOCKS {
        return Err(format!(
            "it asks for {blocks} KiB of memory, over {MAX_BLOCKS}"
        ));
    }
    if memory.len() < blocks {
        memory.resize(blocks, Block::new());
    }
    let mut out = vec![0u8; expected.len()];
    Argon2::new(algorithm, version, params)
        .hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut memory[..])
        .map_err(|e| e.to_string())?;
    Ok(bool::from(out.as_slice().ct_eq(expected.as_bytes())))
}

/// A hash of a random password with the default (OWASP floor) parameters, the ones
/// `pantau-collector user add` writes.
fn dummy_hash() -> String {
    let mut random = [0u8; 24];
    OsRng.fill_bytes(&mut random);
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(&random, &salt)
        .map(|hash| hash.to_string())
        // The default parameters with a fresh salt cannot fail; keep a valid PHC string anyway.
        .unwrap_or_else(|_| {
            "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$\
             5m6fWpTSGxaFG4HsBFCPmX7ArnZSqP1yE0bVuB8PpPM"
                .to_owned()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(password: &str) -> String {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .unwrap()
            .to_string()
    }

    #[tokio::test]
    async fn right_wrong_and_unknown() {
        let pool = PasswordPool::start(2, Duration::from_secs(5)).unwrap();
        let stored = hash("rahasia-sekali");
        assert_eq!(
            pool.verify(Some(stored.clone()), "rahasia-sekali".into())
                .await,
            Ok(true)
        );
        assert_eq!(
            pool.verify(Some(stored), "salah-salah".into()).await,
            Ok(false)
        );
        assert_eq!(pool.verify(None, "rahasia-sekali".into()).await, Ok(false));
        assert_eq!(
            pool.verify(Some("not a hash".into()), "x".into()).await,
            Ok(false)
        );
    }

    #[tokio::test]
    async fn a_full_pool_answers_busy_after_its_wait() {
        let pool = Arc::new(PasswordPool::start(1, Duration::from_millis(1)).unwrap());
        let stored = hash("rahasia-sekali");
        let tries: Vec<_> = (0..8)
            .map(|_| {
                let pool = pool.clone();
                let stored = stored.clone();
                tokio::spawn(async move { pool.verify(Some(stored), "salah".into()).await })
            })
            .collect();
        let mut busy = 0;
        for try_ in tries {
            if try_.await.unwrap() == Err(PoolError::Busy) {
                busy += 1;
            }
        }
        assert!(
            busy >= 1,
            "one thread, 8 tries, 1 ms wait: some must be busy"
        );
    }

    #[test]
    fn a_hash_asking_for_too_much_memory_is_refused() {
        let mut memory = Vec::new();
        let greedy = "$argon2id$v=19$m=1048576,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$\
                      5m6fWpTSGxaFG4HsBFCPmX7ArnZSqP1yE0bVuB8PpPM";
        assert!(try_check(greedy, "x", &mut memory).is_err());
        assert!(memory.is_empty());
    }
}
