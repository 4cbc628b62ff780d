//! Who may write through the API: bearer tokens from `[api] token_file` (one per line, `#`
//! comments and blank lines skipped; a token may do what an operator may), and people from
//! `[api] users_file` with HTTP Basic and their role (`accounts`). Every write needs one; a
//! request without credentials or with wrong ones is refused with 401, a role too low with
//! 403, each counted in `pantau_collector_api_auth_failures_total{reason}`. Reads stay open.

use std::path::{Path, PathBuf};

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::accounts::Role;
use super::{ApiError, AppState};

/// `[api]`: who may change things through the API.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Bearer tokens allowed to write (announce, stop), one per line. Without it every write
    /// is refused with 401.
    #[serde(default, deserialize_with = "crate::config::empty_path_is_none")]
    pub token_file: Option<PathBuf>,
    /// People who may log in with HTTP Basic, with their role; written by
    /// `pantau-collector user add|passwd|remove`.
    #[serde(default, deserialize_with = "crate::config::empty_path_is_none")]
    pub users_file: Option<PathBuf>,
}

/// The tokens of `api.token_file`.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    tokens: Vec<String>,
}

/// Shortest token accepted: 16 characters of a random string.
const MIN_TOKEN_CHARS: usize = 16;

impl Tokens {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text =
            std::fs::read_to_string(path).map_err(|error| format!("cannot be read: {error}"))?;
        Self::parse(&text)
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let mut tokens = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            if line.len() < MIN_TOKEN_CHARS || line.contains(char::is_whitespace) {
                return Err(format!(
                    "line {}: a token is one word of at least {MIN_TOKEN_CHARS} characters",
                    index + 1
                ));
            }
            tokens.push(line.to_owned());
        }
        Ok(Self { tokens })
    }

    /// The name a token goes by in the audit log: `token:` and the start of its SHA-256, so
    /// the log tells tokens apart without holding them.
    fn name(token: &str) -> String {
        let digest = Sha256::digest(token.as_bytes());
        let hex: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
        format!("token:{hex}")
    }

    /// Compares with every token in constant time, so timing tells nothing of a near miss.
    fn check(&self, presented: &str) -> Option<String> {
        let mut found = false;
        for token in &self.tokens {
            found |= bool::from(token.as_bytes().ct_eq(presented.as_bytes()));
        }
        found.then(|| Self::name(presented))
    }
}

/// A caller allowed to write (operator or admin); the name is what the audit log records.
#[derive(Debug, Clone)]
pub struct Writer(pub String);

impl FromRequestParts<AppState> for Writer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let (who, role) = authenticate(parts, app).await?;
        if role < Role::Operator {
            app.telemetry
                .api_auth_failures
                .with_label_values(&["forbidden"])
                .inc();
            return Err(ApiError::Forbidden(format!(
                "user '{who}' is a {role}; this needs an operator or admin"
            )));
        }
        Ok(Writer(who))
    }
}

/// A caller with the admin role (schedules); the name is what the audit log records.
#[derive(Debug, Clone)]
pub struct Admin(pub String);

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let (who, role) = authenticate(parts, app).await?;
        if role < Role::Admin {
            app.telemetry
                .api_auth_failures
                .with_label_values(&["forbidden"])
                .inc();
            return Err(ApiError::Forbidden(format!(
                "'{who}' has the role {role}; this needs an admin"
            )));
        }
        Ok(Admin(who))
    }
}

/// Who is calling and in which role: a bearer token (operator) or a user (HTTP Basic).
async fn authenticate(parts: &Parts, app: &AppState) -> Result<(String, Role), ApiError> {
    let refuse = |reason: &str, message: &str| {
        app.telemetry
            .api_auth_failures
            .with_label_values(&[reason])
            .inc();
        ApiError::Unauthorized(message.to_owned())
    };
    let Some(header) = parts.headers.get(AUTHORIZATION) else {
        return Err(refuse(
            "missing",
            "this needs a bearer token (Authorization: Bearer ...) or a user (HTTP Basic)",
        ));
    };
    let value = header.to_str().unwrap_or_default();
    if let Some(token) = value.strip_prefix("Bearer ") {
        return match app.tokens.check(token.trim()) {
            Some(name) => Ok((name, Role::Operator)),
            None => Err(refuse("wrong", "the bearer token is not valid")),
        };
    }
    let Some((name, password)) = value.strip_prefix("Basic ").and_then(basic) else {
        return Err(refuse(
            "wrong",
            "the Authorization header is neither Bearer nor Basic",
        ));
    };
    let accounts = app.accounts.clone();
    let checked_name = name.clone();
    // Argon2 takes tens of milliseconds on purpose: not on the async workers.
    let role = tokio::task::spawn_blocking(move || {
        accounts
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .verify(&checked_name, &password)
    })
    .await
    .map_err(ApiError::internal)?;
    match role {
        Some(role) => Ok((name, role)),
        None => Err(refuse("wrong", "wrong user name or password")),
    }
}

/// `user:password` from a Basic credential.
fn basic(encoded: &str) -> Option<(String, String)> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (name, password) = text.split_once(':')?;
    Some((name.to_owned(), password.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_file_lines() {
        let tokens = Tokens::parse("# ops\n\n0123456789abcdef\n").unwrap();
        assert!(tokens.check("0123456789abcdef").is_some());
        assert!(tokens.check("0123456789abcdeX").is_none());
        assert!(tokens.check("").is_none());
        assert_eq!(
            Tokens::parse("short\n").unwrap_err(),
            "line 1: a token is one word of at least 16 characters"
        );
    }
}
