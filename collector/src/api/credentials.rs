//! The credentials the HTTP side checks: API tokens (`api.token_file`), users
//! (`api.users_file`) and the `/metrics` tokens (`http.metrics_token_file`). Read at start,
//! and again on SIGHUP, so an admin can add or revoke a token without a restart; a file that
//! fails to read on reload keeps the credentials it had, with a warning, rather than locking
//! everyone out.

use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};

use super::Tokens;
use super::accounts::Accounts;

/// Where the credentials come from.
#[derive(Debug, Clone, Default)]
pub struct CredentialFiles {
    pub token_file: Option<PathBuf>,
    pub users_file: Option<PathBuf>,
    pub metrics_token_file: Option<PathBuf>,
}

/// What one reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reloaded {
    pub tokens: usize,
    pub users: usize,
    pub metrics_tokens: Option<usize>,
}

/// The current credentials.
#[derive(Debug, Default)]
pub struct Credentials {
    files: CredentialFiles,
    tokens: RwLock<Arc<Tokens>>,
    metrics_tokens: RwLock<Option<Arc<Tokens>>>,
    /// The console's Users page edits these in place (and saves them to `users_file`).
    pub accounts: RwLock<Accounts>,
}

impl Credentials {
    /// Reads every file; an error names the field and the file.
    pub fn load(files: CredentialFiles) -> Result<Self, String> {
        let credentials = Self {
            files,
            ..Self::default()
        };
        credentials.reload()?;
        Ok(credentials)
    }

    /// Credentials held in memory only (the router's tests).
    #[cfg(test)]
    pub fn fixed(tokens: Tokens, accounts: Accounts, metrics_tokens: Option<Tokens>) -> Self {
        Self {
            files: CredentialFiles::default(),
            tokens: RwLock::new(Arc::new(tokens)),
            metrics_tokens: RwLock::new(metrics_tokens.map(Arc::new)),
            accounts: RwLock::new(accounts),
        }
    }

    /// Reads the files again; on any error nothing changes.
    pub fn reload(&self) -> Result<Reloaded, String> {
        let tokens = Tokens::load_optional("api.token_file", self.files.token_file.as_deref())?;
        let accounts = match &self.files.users_file {
            Some(path) => Accounts::load(path, false)
                .map_err(|why| format!("api.users_file: '{}' {why}", path.display()))?,
            None => Accounts::default(),
        };
        let metrics_tokens = match &self.files.metrics_token_file {
            Some(path) => {
                let tokens = Tokens::load_optional("http.metrics_token_file", Some(path))?;
                if tokens.is_empty() {
                    return Err(format!(
                        "http.metrics_token_file: '{}' holds no token; /metrics would be closed \
                         to everyone",
                        path.display()
                    ));
                }
                Some(Arc::new(tokens))
            }
            None => None,
        };
        let reloaded = Reloaded {
            tokens: tokens.len(),
            users: accounts.accounts.len(),
            metrics_tokens: metrics_tokens.as_ref().map(|tokens| tokens.len()),
        };
        *self.tokens.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(tokens);
        *self
            .accounts
            .write()
            .unwrap_or_else(PoisonError::into_inner) = accounts;
        *self
            .metrics_tokens
            .write()
            .unwrap_or_else(PoisonError::into_inner) = metrics_tokens;
        Ok(reloaded)
    }

    pub fn tokens(&self) -> Arc<Tokens> {
        self.tokens
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// `None` while `/metrics` is open.
    pub fn metrics_tokens(&self) -> Option<Arc<Tokens>> {
        self.metrics_tokens
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Where the console saves the users.
    pub fn users_file(&self) -> Option<&PathBuf> {
        self.files.users_file.as_ref()
    }

    /// A copy of these credentials that saves users to `path` (the console's tests).
    #[cfg(test)]
    pub fn saving_users_to(&self, path: Option<PathBuf>) -> Self {
        Self {
            files: CredentialFiles {
                users_file: path,
                ..self.files.clone()
            },
            tokens: RwLock::new(self.tokens()),
            metrics_tokens: RwLock::new(self.metrics_tokens()),
            accounts: RwLock::new(
                self.accounts
                    .read()
                    .unwrap_or_else(PoisonError::into_inner)
                    .clone(),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::accounts::Role;

    #[test]
    fn reload_reads_the_files_again_and_keeps_the_old_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("tokens");
        let users_file = dir.path().join("users");
        std::fs::write(&token_file, "0123456789abcdef viewer\n").unwrap();
        let mut accounts = Accounts::default();
        accounts
            .set("rina", Some(Role::Admin), "rahasia-sekali", false)
            .unwrap();
        accounts.save(&users_file).unwrap();
        let credentials = Credentials::load(CredentialFiles {
            token_file: Some(token_file.clone()),
            users_file: Some(users_file.clone()),
            metrics_token_file: None,
        })
        .unwrap();
        assert!(credentials.tokens().check("0123456789abcdef").is_some());
        std::fs::write(&token_file, "fedcba9876543210\n").unwrap();
        assert_eq!(
            credentials.reload().unwrap(),
            Reloaded {
                tokens: 1,
                users: 1,
                metrics_tokens: None
            }
        );
        assert!(credentials.tokens().check("0123456789abcdef").is_none());
        assert!(credentials.tokens().check("fedcba9876543210").is_some());
        std::fs::write(&token_file, "short\n").unwrap();
        let error = credentials.reload().unwrap_err();
        assert!(error.starts_with("api.token_file: '"), "{error}");
        assert!(credentials.tokens().check("fedcba9876543210").is_some());
    }
}
