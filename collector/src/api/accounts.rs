//! `api.users_file`: people who log in to the API with HTTP Basic, each with a role
//! (`viewer` < `operator` < `admin`) and an Argon2id hash, one `name:role:$argon2id$...` a
//! line. Written by `pantau-collector user add|passwd|remove`, never by hand.

use std::fmt;
use std::path::Path;

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, SaltString};
use pantau_protocol::validate_id;
use serde::Deserialize;

/// What a caller may do; each role may do what the lower ones may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads only.
    Viewer,
    /// Announces and stops announcements.
    Operator,
    /// Everything, schedules included.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }

    fn parse(text: &str) -> Option<Role> {
        [Role::Viewer, Role::Operator, Role::Admin]
            .into_iter()
            .find(|role| role.as_str() == text)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One user of the API.
#[derive(Debug, Clone, PartialEq)]
pub struct Account {
    pub name: String,
    pub role: Role,
    /// Argon2id PHC string.
    pub hash: String,
}

/// The users of `api.users_file`, in file order.
#[derive(Debug, Clone, Default)]
pub struct Accounts {
    pub accounts: Vec<Account>,
}

/// Shortest password `user add` and `user passwd` accept.
pub const MIN_PASSWORD_CHARS: usize = 10;

impl Accounts {
    /// Reads `path`; a missing file is an empty list only when `missing_ok` (the CLI's first add).
    pub fn load(path: &Path, missing_ok: bool) -> Result<Self, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text),
            Err(error) if missing_ok && error.kind() == std::io::ErrorKind::NotFound => {
                Ok(Self::default())
            }
            Err(error) => Err(format!("cannot be read: {error}")),
        }
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let mut accounts = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |why: &str| format!("line {}: {why}", index + 1);
            let mut fields = line.splitn(3, ':');
            let (Some(name), Some(role), Some(hash)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(at("expected name:role:hash"));
            };
            validate_id(name).map_err(|why| at(&format!("user name '{name}' {why}")))?;
            let role = Role::parse(role)
                .ok_or_else(|| at(&format!("role '{role}' is not viewer, operator or admin")))?;
            PasswordHash::new(hash).map_err(|_| at("the hash is not an Argon2 PHC string"))?;
            accounts.push(Account {
                name: name.to_owned(),
                role,
                hash: hash.to_owned(),
            });
        }
        Ok(Self { accounts })
    }

    /// The account called `name`.
    pub fn find(&self, name: &str) -> Option<&Account> {
        self.accounts.iter().find(|account| account.name == name)
    }

    /// The role of `name` if `password` is right. Slow on purpose (Argon2): the service
    /// checks through `login`'s bounded pool instead.
    #[cfg(test)]
    pub fn verify(&self, name: &str, password: &str) -> Option<Role> {
        let account = self.accounts.iter().find(|account| account.name == name)?;
        let hash = PasswordHash::new(&account.hash).ok()?;
        use argon2::password_hash::PasswordVerifier;
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .ok()
            .map(|()| account.role)
    }

    /// Adds a user, or with `replace` sets an existing user's password (and role, if given).
    pub fn set(
        &mut self,
        name: &str,
        role: Option<Role>,
        password: &str,
        replace: bool,
    ) -> Result<(), String> {
        validate_id(name).map_err(|why| format!("user name '{name}' {why}"))?;
        if password.chars().count() < MIN_PASSWORD_CHARS {
            return Err(format!(
                "the password must have at least {MIN_PASSWORD_CHARS} characters"
            ));
        }
        let hash = hash_password(password)?;
        match self
            .accounts
            .iter_mut()
            .find(|account| account.name == name)
        {
            Some(_) if !replace => Err(format!("user '{name}' exists; use `user passwd`")),
            Some(account) => {
                account.hash = hash;
                if let Some(role) = role {
                    account.role = role;
                }
                Ok(())
            }
            None if replace => Err(format!("no user '{name}'")),
            None => {
                self.accounts.push(Account {
                    name: name.to_owned(),
                    role: role.unwrap_or(Role::Viewer),
                    hash,
                });
                Ok(())
            }
        }
    }

    pub fn remove(&mut self, name: &str) -> Result<(), String> {
        let before = self.accounts.len();
        self.accounts.retain(|account| account.name != name);
        if self.accounts.len() == before {
            return Err(format!("no user '{name}'"));
        }
        Ok(())
    }

    /// Writes the file whole (a temp file renamed over it, mode 0600), so a crash never
    /// leaves half of it.
    pub fn save(&self, path: &Path) -> Result<(), String> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let text = self.to_text();
        let temp = path.with_extension("tmp");
        let write = || -> std::io::Result<()> {
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temp)?;
            file.write_all(text.as_bytes())?;
            file.sync_all()?;
            std::fs::rename(&temp, path)
        };
        write().map_err(|error| format!("cannot write {}: {error}", path.display()))
    }
}

impl Accounts {
    /// The file's text, as `save` writes it.
    pub fn to_text(&self) -> String {
        let mut text = String::from(
            "# Pantau API users: name:role:argon2id hash. Edit with `pantau-collector user`.\n",
        );
        for account in &self.accounts {
            text.push_str(&format!(
                "{}:{}:{}\n",
                account.name, account.role, account.hash
            ));
        }
        text
    }
}

fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| format!("cannot hash the password: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_verify_passwd_remove_and_reload() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api-users");
        let mut accounts = Accounts::load(&path, true).unwrap();
        accounts
            .set("rina", Some(Role::Operator), "rahasia-sekali", false)
            .unwrap();
        assert_eq!(
            accounts
                .set("rina", None, "rahasia-sekali", false)
                .unwrap_err(),
            "user 'rina' exists; use `user passwd`"
        );
        assert_eq!(
            accounts.set("budi", None, "pendek", false).unwrap_err(),
            "the password must have at least 10 characters"
        );
        accounts.save(&path).unwrap();
        let accounts = Accounts::load(&path, false).unwrap();
        assert_eq!(
            accounts.verify("rina", "rahasia-sekali"),
            Some(Role::Operator)
        );
        assert_eq!(accounts.verify("rina", "salah-salah-salah"), None);
        assert_eq!(accounts.verify("nobody", "rahasia-sekali"), None);
        let mut accounts = accounts;
        accounts
            .set("rina", Some(Role::Admin), "kata-sandi-baru", true)
            .unwrap();
        assert_eq!(
            accounts.verify("rina", "kata-sandi-baru"),
            Some(Role::Admin)
        );
        accounts.remove("rina").unwrap();
        assert_eq!(accounts.remove("rina").unwrap_err(), "no user 'rina'");
    }

    #[test]
    fn bad_lines_are_named() {
        assert_eq!(
            Accounts::parse("rina:root:x").unwrap_err(),
            "line 1: role 'root' is not viewer, operator or admin"
        );
        assert_eq!(
            Accounts::parse("\nrina").unwrap_err(),
            "line 2: expected name:role:hash"
        );
        assert_eq!(
            Accounts::parse("rina:admin:plain").unwrap_err(),
            "line 1: the hash is not an Argon2 PHC string"
        );
    }
}
