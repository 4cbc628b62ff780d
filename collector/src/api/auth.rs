//! Who may use the API: bearer tokens from `[api] token_file` (one per line, `TOKEN` or
//! `TOKEN viewer|operator`; a token without a role is an operator, so older files and the
//! Alertmanager webhook keep working), and people from `[api] users_file` with HTTP Basic and
//! their role (`accounts`). Everything under `/api/v1/` needs at least a viewer; writes need an
//! operator, schedules an admin. A request without credentials or with wrong ones is refused
//! with 401 (offering both `Bearer` and `Basic`), a role too low with 403, too many failures
//! with 429 and a busy password pool with 503, each counted in
//! `pantau_collector_api_auth_failures_total{reason}`. Passwords go through `login`: one
//! limiter and one bounded hashing pool for every route.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use pantau_runtime::config::ConfigError;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tracing::warn;

use super::accounts::Role;
use super::login::{Refusal, Thresholds, loggable_user};
use super::{ApiError, AppState};

/// `[api]`: who may use the API, and how password guessing is slowed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Bearer tokens, one per line: `TOKEN` (an operator) or `TOKEN viewer|operator`. Without
    /// it only users of `users_file` get in.
    #[serde(default, deserialize_with = "crate::config::empty_path_is_none")]
    pub token_file: Option<PathBuf>,
    /// People who may log in with HTTP Basic and to the console, with their role; written by
    /// `pantau-collector user add|passwd|remove` and the console's Users page.
    #[serde(default, deserialize_with = "crate::config::empty_path_is_none")]
    pub users_file: Option<PathBuf>,
    /// Failed password checks allowed per remote address (IPv6: per /64) within
    /// `login_window_seconds`, on every route that checks passwords; more answer 429.
    #[serde(default = "default_failures_per_address")]
    pub max_login_failures_per_address: u32,
    /// Failed checks allowed per user name, across addresses, within the window. Beyond it,
    /// addresses that have failed themselves are refused for that name; a clean address still
    /// gets in, so nobody can lock staff out.
    #[serde(default = "default_failures_per_user")]
    pub max_login_failures_per_user: u32,
    #[serde(default = "default_login_window")]
    pub login_window_seconds: u64,
    /// Password hashes (Argon2id, 19 MiB each) computed at once; 0 means one per core.
    #[serde(default)]
    pub max_concurrent_password_checks: usize,
    /// How long a login waits for a free hashing thread before it is answered 503.
    #[serde(default = "default_password_check_wait")]
    pub password_check_wait_seconds: u64,
}

fn default_failures_per_address() -> u32 {
    10
}
fn default_failures_per_user() -> u32 {
    30
}
fn default_login_window() -> u64 {
    300
}
fn default_password_check_wait() -> u64 {
    5
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            token_file: None,
            users_file: None,
            max_login_failures_per_address: default_failures_per_address(),
            max_login_failures_per_user: default_failures_per_user(),
            login_window_seconds: default_login_window(),
            max_concurrent_password_checks: 0,
            password_check_wait_seconds: default_password_check_wait(),
        }
    }
}

impl ApiConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ranges: [(&str, u64, u64, u64); 5] = [
            (
                "api.max_login_failures_per_address",
                u64::from(self.max_login_failures_per_address),
                1,
                1000,
            ),
            (
                "api.max_login_failures_per_user",
                u64::from(self.max_login_failures_per_user),
                1,
                100_000,
            ),
            (
                "api.login_window_seconds",
                self.login_window_seconds,
                1,
                86_400,
            ),
            (
                "api.max_concurrent_password_checks",
                self.max_concurrent_password_checks as u64,
                0,
                64,
            ),
            (
                "api.password_check_wait_seconds",
                self.password_check_wait_seconds,
                1,
                60,
            ),
        ];
        for (field, value, min, max) in ranges {
            if !(min..=max).contains(&value) {
                return Err(ConfigError::invalid(
                    field,
                    value,
                    format!("must be from {min} to {max}"),
                ));
            }
        }
        Ok(())
    }

    pub fn thresholds(&self) -> Thresholds {
        Thresholds {
            per_address: self.max_login_failures_per_address,
            per_user: self.max_login_failures_per_user,
            window: Duration::from_secs(self.login_window_seconds),
        }
    }

    /// Hashing threads: the configured number, or one per core.
    pub fn password_threads(&self) -> usize {
        match self.max_concurrent_password_checks {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
            threads => threads,
        }
    }
}

/// The tokens of `api.token_file` (or `http.metrics_token_file`), each with its role.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    tokens: Vec<(String, Role)>,
}

/// Shortest token accepted: 16 characters of a random string.
const MIN_TOKEN_CHARS: usize = 16;

impl Tokens {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text =
            std::fs::read_to_string(path).map_err(|error| format!("cannot be read: {error}"))?;
        Self::parse(&text)
    }

    /// Reads an optional token file, naming `field` in the error.
    pub fn load_optional(field: &str, path: Option<&Path>) -> Result<Self, String> {
        match path {
            Some(path) => {
                Self::load(path).map_err(|why| format!("{field}: '{}' {why}", path.display()))
            }
            None => Ok(Self::default()),
        }
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let mut tokens = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |why: String| format!("line {}: {why}", index + 1);
            let mut words = line.split_whitespace();
            let (Some(token), role, None) = (words.next(), words.next(), words.next()) else {
                return Err(at("expected TOKEN or TOKEN viewer|operator".to_owned()));
            };
            if token.len() < MIN_TOKEN_CHARS {
                return Err(at(format!(
                    "a token is one word of at least {MIN_TOKEN_CHARS} characters"
                )));
            }
            let role = match role {
                None | Some("operator") => Role::Operator,
                Some("viewer") => Role::Viewer,
                Some(other) => {
                    return Err(at(format!(
                        "role '{}' is not viewer or operator",
                        other.escape_debug()
                    )));
                }
            };
            tokens.push((token.to_owned(), role));
        }
        Ok(Self { tokens })
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// The name a token goes by in the audit log: `token:` and the start of its SHA-256, so
    /// the log tells tokens apart without holding them.
    fn name(token: &str) -> String {
        let digest = Sha256::digest(token.as_bytes());
        let hex: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
        format!("token:{hex}")
    }

    /// Compares with every token in constant time, so timing tells nothing of a near miss.
    pub fn check(&self, presented: &str) -> Option<(String, Role)> {
        let mut found = None;
        for (token, role) in &self.tokens {
            if bool::from(token.as_bytes().ct_eq(presented.as_bytes())) {
                found = Some(*role);
            }
        }
        found.map(|role| (Self::name(presented), role))
    }
}

/// Who is calling, once authenticated; the name is what the audit log records.
#[derive(Debug, Clone)]
pub struct Caller {
    pub who: String,
    pub role: Role,
}

/// A caller allowed to write (operator or admin).
#[derive(Debug, Clone)]
pub struct Writer(pub String);

/// A caller with the admin role (schedules, login limits).
#[derive(Debug, Clone)]
pub struct Admin(pub String);

/// The caller, from the login middleware or (outside it) by authenticating now, checked
/// against `needed`.
async fn caller_with(parts: &mut Parts, app: &AppState, needed: Role) -> Result<String, ApiError> {
    let caller = match parts.extensions.get::<Caller>() {
        Some(caller) => caller.clone(),
        None => authenticate(parts, app).await?,
    };
    if caller.role < needed {
        app.telemetry
            .api_auth_failures
            .with_label_values(&["forbidden"])
            .inc();
        // The wording of each refusal is what API clients have seen so far.
        return Err(ApiError::Forbidden(match needed {
            Role::Admin => format!(
                "'{}' has the role {}; this needs an admin",
                caller.who, caller.role
            ),
            _ => format!(
                "user '{}' is a {}; this needs an operator or admin",
                caller.who, caller.role
            ),
        }));
    }
    Ok(caller.who)
}

impl FromRequestParts<AppState> for Writer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        caller_with(parts, app, Role::Operator).await.map(Writer)
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        caller_with(parts, app, Role::Admin).await.map(Admin)
    }
}

/// Middleware for every route under `/api/v1/`: at least a viewer, authenticated once (the
/// handler's `Writer`/`Admin` then reads the same caller, with no second Argon2 run).
pub async fn require_login(
    State(app): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let (mut parts, body) = request.into_parts();
    let caller = authenticate(&parts, &app).await?;
    parts.extensions.insert(caller);
    Ok(next.run(Request::from_parts(parts, body)).await)
}

/// The remote address of a request (unspecified outside a real connection, as in tests).
pub fn remote_address(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip())
}

/// Who is calling and in which role: a bearer token or a user (HTTP Basic).
async fn authenticate(parts: &Parts, app: &AppState) -> Result<Caller, ApiError> {
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
        let found = app.credentials.tokens().check(token.trim());
        return match found {
            Some((who, role)) => Ok(Caller { who, role }),
            None => Err(refuse("wrong", "the bearer token is not valid")),
        };
    }
    let Some((name, password)) = value.strip_prefix("Basic ").and_then(basic) else {
        return Err(refuse(
            "wrong",
            "the Authorization header is neither Bearer nor Basic",
        ));
    };
    let address = remote_address(parts);
    let accounts = &app.credentials.accounts;
    match app.login.check(accounts, address, &name, password).await {
        Ok(role) => Ok(Caller { who: name, role }),
        Err(Refusal::Wrong) => {
            if let pantau_runtime::ratelimit::Verdict::Log { suppressed } =
                app.auth_log.check("api:wrong")
            {
                warn!(%address, user = %loggable_user(accounts, &name), suppressed,
                    "api: wrong user name or password");
            }
            Err(refuse("wrong", "wrong user name or password"))
        }
        Err(Refusal::Limited { retry_after }) => {
            app.telemetry
                .api_auth_failures
                .with_label_values(&["rate_limited"])
                .inc();
            if let pantau_runtime::ratelimit::Verdict::Log { suppressed } =
                app.auth_log.check("api:rate_limited")
            {
                warn!(%address, user = %loggable_user(accounts, &name), suppressed,
                    "api: login refused, too many failures");
            }
            Err(ApiError::TooManyRequests {
                message: "too many failed logins; wait before trying again".to_owned(),
                retry_after,
            })
        }
        Err(Refusal::Busy) => {
            app.telemetry
                .api_auth_failures
                .with_label_values(&["busy"])
                .inc();
            Err(ApiError::Busy(
                "every password check is busy; try again shortly".to_owned(),
            ))
        }
    }
}

/// Checks `/metrics`'s bearer token when `http.metrics_token_file` is set.
pub fn check_metrics_token(parts: &Parts, app: &AppState) -> Result<(), ApiError> {
    let tokens = app.credentials.metrics_tokens();
    let Some(tokens) = tokens.as_ref() else {
        return Ok(());
    };
    let presented = parts
        .headers
        .get(AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "));
    let reason = match presented {
        Some(token) if tokens.check(token.trim()).is_some() => return Ok(()),
        Some(_) => "wrong",
        None => "missing",
    };
    app.telemetry
        .api_auth_failures
        .with_label_values(&[reason])
        .inc();
    Err(ApiError::Unauthorized(
        "/metrics needs the bearer token of http.metrics_token_file".to_owned(),
    ))
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
        let tokens = Tokens::parse("# ops\n\n0123456789abcdef\nfedcba9876543210 viewer\n").unwrap();
        assert_eq!(
            tokens.check("0123456789abcdef").map(|(_, role)| role),
            Some(Role::Operator)
        );
        assert_eq!(
            tokens.check("fedcba9876543210").map(|(_, role)| role),
            Some(Role::Viewer)
        );
        assert!(tokens.check("0123456789abcdeX").is_none());
        assert!(tokens.check("").is_none());
        assert_eq!(
            Tokens::parse("short\n").unwrap_err(),
            "line 1: a token is one word of at least 16 characters"
        );
        assert_eq!(
            Tokens::parse("0123456789abcdef admin\n").unwrap_err(),
            "line 1: role 'admin' is not viewer or operator"
        );
        assert_eq!(
            Tokens::parse("0123456789abcdef viewer extra\n").unwrap_err(),
            "line 1: expected TOKEN or TOKEN viewer|operator"
        );
    }

    #[test]
    fn login_settings_are_range_checked() {
        let config = ApiConfig {
            max_login_failures_per_address: 0,
            ..ApiConfig::default()
        };
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "api.max_login_failures_per_address: '0' must be from 1 to 1000"
        );
        assert!(ApiConfig::default().validate().is_ok());
    }
}
