//! Writing logins into a Mosquitto password file, as `mosquitto_passwd -b` would, without
//! putting the password on a command line: `init` adds the collector's own login and
//! `agent add` / `agent remove` add and revoke agents'.
//!
//! The file is read by `users.rs` (the embedded broker) and by Mosquitto itself. A changed
//! file replaces the old one by rename, keeping its owner, group and mode, so Mosquitto (which
//! reads it as user `mosquitto`) can still read it; other users' lines stay as they are.

use std::path::Path;

use pantau_runtime::owned_files::{self, Ownership};

use argon2::password_hash::rand_core::{OsRng, RngCore};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::Sha512;

/// PBKDF2 rounds of a new hash. Mosquitto 2.0 writes 101; the passwords written here are
/// random (`random_password`), so more rounds would only slow every broker login.
const ITERATIONS: u32 = 1000;
const SALT_BYTES: usize = 12;
const KEY_BYTES: usize = 64;

/// Why a password file cannot be changed.
#[derive(Debug, thiserror::Error)]
pub enum LoginsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("'{0}' cannot be a login name (no ':', white space or control characters)")]
    BadName(String),
    #[error("{path} has no login '{name}'")]
    NoSuchLogin { path: String, name: String },
}

/// A new random password: 32 characters of URL-safe base64 (192 bits).
pub fn random_password() -> String {
    let mut bytes = [0u8; 24];
    OsRng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// The `$7$` hash line of Mosquitto 2.x for `name` and `password`.
pub fn hash_line(name: &str, password: &str) -> String {
    let mut salt = [0u8; SALT_BYTES];
    OsRng.fill_bytes(&mut salt);
    let mut key = [0u8; KEY_BYTES];
    pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), &salt, ITERATIONS, &mut key);
    format!(
        "{name}:$7${ITERATIONS}${}${}",
        BASE64.encode(salt),
        BASE64.encode(key)
    )
}

/// Adds `name` with `password`, or replaces its password. Creates the file (mode 0600) if
/// it does not exist. Returns whether the login existed before.
pub fn set_login(path: &Path, name: &str, password: &str) -> Result<bool, LoginsError> {
    check_name(name)?;
    let mut lines = read_lines(path)?;
    let line = hash_line(name, password);
    let existed = match lines.iter().position(|other| login_of(other) == Some(name)) {
        Some(index) => {
            lines[index] = line;
            true
        }
        None => {
            lines.push(line);
            false
        }
    };
    write_lines(path, &lines)?;
    Ok(existed)
}

/// Removes `name`'s line; an error if there is none.
pub fn remove_login(path: &Path, name: &str) -> Result<(), LoginsError> {
    check_name(name)?;
    let mut lines = read_lines(path)?;
    let before = lines.len();
    lines.retain(|line| login_of(line) != Some(name));
    if lines.len() == before {
        return Err(LoginsError::NoSuchLogin {
            path: path.display().to_string(),
            name: name.to_owned(),
        });
    }
    write_lines(path, &lines)
}

/// The login names in the file, in file order.
pub fn list_logins(path: &Path) -> Result<Vec<String>, LoginsError> {
    Ok(read_lines(path)?
        .iter()
        .filter_map(|line| login_of(line).map(str::to_owned))
        .collect())
}

fn check_name(name: &str) -> Result<(), LoginsError> {
    if name.is_empty()
        || name.len() > 128
        || name
            .chars()
            .any(|c| c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(LoginsError::BadName(name.to_owned()));
    }
    Ok(())
}

fn login_of(line: &str) -> Option<&str> {
    let line = line.trim_start();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    line.split(':').next()
}

fn read_lines(path: &Path) -> Result<Vec<String>, LoginsError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text.lines().map(str::to_owned).collect()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(source) => Err(LoginsError::Read {
            path: path.display().to_string(),
            source,
        }),
    }
}

/// Replaces the file keeping its owner, group and mode (0600 and ours for a new file), through
/// pantau_runtime::owned_files, so the secret is never readable by others.
fn write_lines(path: &Path, lines: &[String]) -> Result<(), LoginsError> {
    let ownership = Ownership::of(path).unwrap_or(Ownership {
        uid: rustix::process::geteuid().as_raw(),
        gid: rustix::process::getegid().as_raw(),
        mode: 0o600,
    });
    let mut text = lines.join("\n");
    text.push('\n');
    owned_files::install(path, text.as_bytes(), ownership).map_err(|source| LoginsError::Write {
        path: path.display().to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::users::Users;

    #[test]
    fn logins_written_here_are_accepted_by_the_reader_and_others_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        std::fs::write(&path, "# office\nsensor:$6$c2FsdA==$ZGlnZXN0:tasmota_*\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let password = random_password();
        assert_eq!(password.len(), 32);
        assert!(!set_login(&path, "gor-link-01", &password).unwrap());
        assert!(
            set_login(&path, "gor-link-01", &password).unwrap(),
            "replaced"
        );
        let users = Users::load(&path).unwrap();
        assert!(
            users
                .check("pantau-agent-gor-link-01", "gor-link-01", &password)
                .is_ok()
        );
        assert!(
            users
                .check("pantau-agent-gor-link-01", "gor-link-01", "x")
                .is_err()
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# office\nsensor:$6$c2FsdA==$ZGlnZXN0:tasmota_*\n"));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640, "the old mode is kept");
        assert_eq!(list_logins(&path).unwrap(), ["sensor", "gor-link-01"]);
        remove_login(&path, "gor-link-01").unwrap();
        assert_eq!(list_logins(&path).unwrap(), ["sensor"]);
        assert!(matches!(
            remove_login(&path, "gor-link-01"),
            Err(LoginsError::NoSuchLogin { .. })
        ));
        assert!(matches!(
            set_login(&path, "a:b", "x"),
            Err(LoginsError::BadName(_))
        ));
    }

    #[test]
    fn a_new_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new");
        set_login(&path, "pantau-collector", "0123456789abcdef").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
