//! Who may log in to the embedded broker: a password file in Mosquitto's `mosquitto_passwd`
//! format, so operators keep one tool for both brokers.
//!
//! Each line is `user:hash`, where the hash is `$7$<iterations>$<salt>$<key>` (PBKDF2-SHA512,
//! what `mosquitto_passwd` 2.x writes) or `$6$<salt>$<sha512>` (SHA-512 of password and salt,
//! what older versions wrote); salt and key are base64. Pantau reads an optional third field,
//! `user:hash:client-id-pattern`, the client ids that user may connect with (`*` matches any
//! run of characters), e.g. `room-sensor:$7$...:tasmota_*`. Without it a user may connect only
//! as `pantau-agent-<user>`, so no one can take over another agent's client id (and with it
//! kick the real agent off and fire its last will). `mosquitto_passwd -U`/`-b` keep other
//! users' lines as they are; updating a user's password drops its third field.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest, Sha512};
use subtle::ConstantTimeEq;
use thiserror::Error;

/// Client id prefix of a user without a pattern.
pub const AGENT_CLIENT_ID_PREFIX: &str = "pantau-agent-";
/// Most PBKDF2 iterations accepted, so a crafted file cannot make every login cost seconds.
const MAX_ITERATIONS: u32 = 1_000_000;

/// Why the password file cannot be used. The line number and user are named; hashes never.
#[derive(Debug, Error)]
pub enum UsersError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {why}")]
    Line {
        path: PathBuf,
        line: usize,
        why: String,
    },
    #[error("{path} lists no users")]
    Empty { path: PathBuf },
}

/// A stored password hash.
#[derive(Clone)]
enum Hash {
    Pbkdf2Sha512 {
        iterations: u32,
        salt: Vec<u8>,
        key: Vec<u8>,
    },
    Sha512 {
        salt: Vec<u8>,
        digest: Vec<u8>,
    },
}

impl Hash {
    fn parse(text: &str) -> Result<Self, String> {
        let decode = |field: &str, what: &str| {
            BASE64
                .decode(field)
                .map_err(|_| format!("{what} is not base64"))
        };
        let fields: Vec<&str> = text.split('$').collect();
        match fields.as_slice() {
            ["", "7", iterations, salt, key] => {
                let iterations: u32 = iterations
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_ITERATIONS).contains(n))
                    .ok_or_else(|| {
                        format!("iteration count '{iterations}' is not 1 to {MAX_ITERATIONS}")
                    })?;
                Ok(Hash::Pbkdf2Sha512 {
                    iterations,
                    salt: decode(salt, "salt")?,
                    key: decode(key, "key")?,
                })
            }
            ["", "6", salt, digest] => Ok(Hash::Sha512 {
                salt: decode(salt, "salt")?,
                digest: decode(digest, "hash")?,
            }),
            _ => Err(
                "the hash is not in mosquitto_passwd's format ($7$... or $6$...); \
                 write the file with mosquitto_passwd"
                    .to_owned(),
            ),
        }
    }

    fn verify(&self, password: &str) -> bool {
        match self {
            Hash::Pbkdf2Sha512 {
                iterations,
                salt,
                key,
            } => {
                let mut derived = vec![0u8; key.len()];
                pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), salt, *iterations, &mut derived);
                derived.ct_eq(key).into()
            }
            Hash::Sha512 { salt, digest } => {
                let mut hasher = Sha512::new();
                hasher.update(password.as_bytes());
                hasher.update(salt);
                hasher.finalize().as_slice().ct_eq(digest).into()
            }
        }
    }
}

/// One user's login.
#[derive(Clone)]
struct User {
    hash: Hash,
    /// The client ids the user may connect with; `None` means `pantau-agent-<user>` only.
    client_ids: Option<String>,
}

/// The users of a password file.
#[derive(Clone, Default)]
pub struct Users {
    users: HashMap<String, User>,
}

impl fmt::Debug for Users {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&String> = self.users.keys().collect();
        names.sort();
        f.debug_struct("Users").field("names", &names).finish()
    }
}

/// Why a login was refused, for the log (never the password).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    UnknownUser,
    BadPassword,
    ClientIdNotAllowed,
}

impl Refusal {
    pub const ALL: [Refusal; 3] = [
        Refusal::UnknownUser,
        Refusal::BadPassword,
        Refusal::ClientIdNotAllowed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::UnknownUser => "unknown_user",
            Refusal::BadPassword => "bad_password",
            Refusal::ClientIdNotAllowed => "client_id_not_allowed",
        }
    }
}

impl Users {
    /// Reads and checks the whole file; a bad line is an error naming it.
    pub fn load(path: &Path) -> Result<Self, UsersError> {
        let text = std::fs::read_to_string(path).map_err(|source| UsersError::Read {
            path: path.to_owned(),
            source,
        })?;
        let users = Self::parse(&text).map_err(|(line, why)| UsersError::Line {
            path: path.to_owned(),
            line,
            why,
        })?;
        if users.users.is_empty() {
            return Err(UsersError::Empty {
                path: path.to_owned(),
            });
        }
        Ok(users)
    }

    /// Parses the file's text; `Err` holds the 1-based line number and the problem.
    fn parse(text: &str) -> Result<Self, (usize, String)> {
        let mut users = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.splitn(3, ':');
            let name = fields.next().unwrap_or_default();
            let hash = fields
                .next()
                .ok_or((number, format!("user '{name}' has no password hash")))?;
            if name.is_empty() {
                return Err((number, "empty user name".to_owned()));
            }
            let hash =
                Hash::parse(hash).map_err(|why| (number, format!("user '{name}': {why}")))?;
            let client_ids = match fields.next() {
                Some(pattern) if pattern.is_empty() || pattern.len() > 128 => {
                    return Err((
                        number,
                        format!("user '{name}': client id pattern must be 1 to 128 bytes"),
                    ));
                }
                Some(pattern) => Some(pattern.to_owned()),
                None => None,
            };
            if users
                .insert(name.to_owned(), User { hash, client_ids })
                .is_some()
            {
                return Err((number, format!("user '{name}' is listed twice")));
            }
        }
        Ok(Self { users })
    }

    /// Checks a login: the password, then the client id the user may connect with.
    pub fn check(&self, client_id: &str, username: &str, password: &str) -> Result<(), Refusal> {
        let user = self.users.get(username).ok_or(Refusal::UnknownUser)?;
        if !user.hash.verify(password) {
            return Err(Refusal::BadPassword);
        }
        let allowed = match &user.client_ids {
            Some(pattern) => glob_matches(pattern, client_id),
            None => client_id
                .strip_prefix(AGENT_CLIENT_ID_PREFIX)
                .is_some_and(|rest| rest == username),
        };
        match allowed {
            true => Ok(()),
            false => Err(Refusal::ClientIdNotAllowed),
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.users.len()
    }

    pub fn contains(&self, username: &str) -> bool {
        self.users.contains_key(username)
    }
}

/// `*` matches any run of characters (including none); everything else matches itself.
fn glob_matches(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by `mosquitto_passwd -c -b FILE alice secret` (mosquitto 2.0.11).
    const ALICE: &str = "alice:$7$101$PjPuXrfV8Q/LPIzb$FhAD8UF53GIMvAirZfB27McK9txcAP8GDPAYrDTwI0K\
                         vgdl/mUDzl/qZq3rwzS5yCzx1Zb3UvVltfh9nuZ6l5g==";

    fn sha512_line(user: &str, password: &str, salt: &[u8], suffix: &str) -> String {
        let mut hasher = Sha512::new();
        hasher.update(password.as_bytes());
        hasher.update(salt);
        let digest = BASE64.encode(hasher.finalize());
        format!("{user}:$6${}${digest}{suffix}", BASE64.encode(salt))
    }

    #[test]
    fn a_mosquitto_passwd_line_verifies() {
        let users = Users::parse(ALICE).unwrap();
        assert_eq!(users.check("pantau-agent-alice", "alice", "secret"), Ok(()));
        assert_eq!(
            users.check("pantau-agent-alice", "alice", "Secret"),
            Err(Refusal::BadPassword)
        );
        assert_eq!(
            users.check("pantau-agent-bob", "bob", "secret"),
            Err(Refusal::UnknownUser)
        );
    }

    #[test]
    fn a_user_may_only_use_its_own_client_id() {
        let users = Users::parse(ALICE).unwrap();
        for stolen in ["pantau-agent-bob", "pantau-agent-alice2", "alice", ""] {
            assert_eq!(
                users.check(stolen, "alice", "secret"),
                Err(Refusal::ClientIdNotAllowed),
                "{stolen}"
            );
        }
    }

    #[test]
    fn the_old_sha512_format_and_client_id_patterns() {
        let text = format!(
            "# sensors\n\n{}\n{}\n",
            sha512_line("room", "pw", b"0123456789ab", ":tasmota_*"),
            sha512_line("collector2", "pw2", b"salt", ":pantau-collector-*"),
        );
        let users = Users::parse(&text).unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users.check("tasmota_A1B2", "room", "pw"), Ok(()));
        assert_eq!(
            users.check("pantau-agent-room", "room", "pw"),
            Err(Refusal::ClientIdNotAllowed)
        );
        assert_eq!(
            users.check("pantau-collector-7", "collector2", "pw2"),
            Ok(())
        );
        assert_eq!(users.check("x", "room", "nope"), Err(Refusal::BadPassword));
    }

    #[test]
    fn bad_lines_are_named_without_their_hash() {
        let cases = [
            ("bob", 1, "user 'bob' has no password hash"),
            (
                "bob:plaintext",
                1,
                "user 'bob': the hash is not in mosquitto_passwd's format",
            ),
            (
                "# c\nbob:$7$0$AA==$AA==",
                2,
                "user 'bob': iteration count '0'",
            ),
            ("bob:$7$101$!!$AA==", 1, "user 'bob': salt is not base64"),
            (":$6$AA==$AA==", 1, "empty user name"),
        ];
        for (text, line, expected) in cases {
            let (number, why) = Users::parse(text).unwrap_err();
            assert_eq!(number, line, "{text}");
            assert!(why.starts_with(expected), "{text}: {why}");
        }
        let twice = format!("{ALICE}\n{ALICE}");
        assert_eq!(Users::parse(&twice).unwrap_err().0, 2);
    }

    #[test]
    fn globs() {
        for (pattern, text, expected) in [
            ("tasmota_*", "tasmota_1", true),
            ("tasmota_*", "tasmota_", true),
            ("tasmota_*", "xtasmota_1", false),
            ("*-sensor", "room-sensor", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXcYYb", false),
            ("exact", "exact", true),
            ("exact", "exact2", false),
            ("*", "", true),
        ] {
            assert_eq!(glob_matches(pattern, text), expected, "{pattern} {text}");
        }
    }
}
