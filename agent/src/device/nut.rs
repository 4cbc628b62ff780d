//! A client for Network UPS Tools' network protocol (upsd, TCP 3493): one line per request and
//! per answer. Only what the device role needs: optional login, `LIST VAR <ups>`, `LOGOUT`.
//! The protocol is specified in NUT's docs/net-protocol.txt.

use std::collections::BTreeMap;
use std::time::Duration;

use thiserror::Error;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Most variables read from one UPS; a real one has about 50 to 100.
pub const MAX_VARIABLES: usize = 500;
/// Longest answer line; upsd's own limit on a value is 256 bytes.
const MAX_LINE: usize = 1024;

/// Why a poll failed, each kind reported as such.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum NutError {
    #[error("cannot connect to {address}: {detail}")]
    Connect { address: String, detail: String },
    #[error("no answer from {address} within {seconds} s")]
    Timeout { address: String, seconds: u64 },
    #[error(
        "upsd refused the login of user '{user}' ({code}): wrong username or password, or the user lacks `upsmon` in upsd.users"
    )]
    Login { user: String, code: String },
    #[error("upsd does not know the UPS '{ups}' (UNKNOWN-UPS)")]
    UnknownUps { ups: String },
    #[error("the UPS driver for '{ups}' is not connected to upsd (DRIVER-NOT-CONNECTED)")]
    DriverNotConnected { ups: String },
    #[error("upsd answered ERR {code}")]
    Refused { code: String },
    #[error("upsd sent an answer that is not NUT's protocol: {line:?}")]
    Protocol { line: String },
    #[error("the connection to {address} closed: {detail}")]
    Io { address: String, detail: String },
}

impl NutError {
    /// A short machine-readable reason, for the metric's `reason` label.
    pub fn reason(&self) -> &'static str {
        match self {
            NutError::Connect { .. } => "connect",
            NutError::Timeout { .. } => "timeout",
            NutError::Login { .. } => "login",
            NutError::UnknownUps { .. } => "unknown_ups",
            NutError::DriverNotConnected { .. } => "driver_not_connected",
            NutError::Refused { .. } => "refused",
            NutError::Protocol { .. } => "protocol",
            NutError::Io { .. } => "io",
        }
    }
}

/// What to poll and how.
#[derive(Debug, Clone)]
pub struct Target {
    pub address: String,
    pub ups: String,
    pub login: Option<(String, String)>,
    pub timeout: Duration,
}

/// Reads every variable of the UPS: name to raw value (`ups.status` = `OL CHRG`).
pub async fn list_variables(target: &Target) -> Result<BTreeMap<String, String>, NutError> {
    let seconds = target.timeout.as_secs();
    match tokio::time::timeout(target.timeout, session(target)).await {
        Ok(result) => result,
        Err(_) => Err(NutError::Timeout {
            address: target.address.clone(),
            seconds,
        }),
    }
}

async fn session(target: &Target) -> Result<BTreeMap<String, String>, NutError> {
    let stream = TcpStream::connect(&target.address)
        .await
        .map_err(|error| NutError::Connect {
            address: target.address.clone(),
            detail: error.to_string(),
        })?;
    let mut connection = Connection {
        stream: BufReader::new(stream),
        address: target.address.clone(),
    };
    if let Some((user, password)) = &target.login {
        // upsd answers OK to USERNAME and PASSWORD whatever they are; LOGIN is where it checks
        // them (and it needs `upsmon` rights), so a wrong password is found here, not later.
        connection
            .expect_ok(&format!("USERNAME {}", quote(user)))
            .await?;
        connection
            .expect_ok(&format!("PASSWORD {}", quote(password)))
            .await
            .map_err(|error| login_error(error, user))?;
        connection
            .expect_ok(&format!("LOGIN {}", quote(&target.ups)))
            .await
            .map_err(|error| match error {
                NutError::Refused { code } if code == "UNKNOWN-UPS" => NutError::UnknownUps {
                    ups: target.ups.clone(),
                },
                other => login_error(other, user),
            })?;
    }
    let variables = connection.list_var(&target.ups).await?;
    // A polite goodbye; its answer does not matter.
    let _ = connection.send("LOGOUT").await;
    Ok(variables)
}

fn login_error(error: NutError, user: &str) -> NutError {
    match error {
        NutError::Refused { code } => NutError::Login {
            user: user.to_owned(),
            code,
        },
        other => other,
    }
}

struct Connection {
    stream: BufReader<TcpStream>,
    address: String,
}

impl Connection {
    async fn send(&mut self, line: &str) -> Result<(), NutError> {
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(b'\n');
        self.stream
            .get_mut()
            .write_all(&bytes)
            .await
            .map_err(|error| self.io(error))
    }

    async fn read_line(&mut self) -> Result<String, NutError> {
        let mut line = Vec::new();
        let read = (&mut self.stream)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await
            .map_err(|error| self.io(error))?;
        if read == 0 {
            return Err(NutError::Io {
                address: self.address.clone(),
                detail: "closed by upsd".to_owned(),
            });
        }
        if line.last() != Some(&b'\n') {
            return Err(NutError::Protocol {
                line: String::from_utf8_lossy(&line).chars().take(80).collect(),
            });
        }
        line.pop();
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        String::from_utf8(line).map_err(|error| NutError::Protocol {
            line: String::from_utf8_lossy(error.as_bytes()).into_owned(),
        })
    }

    async fn expect_ok(&mut self, request: &str) -> Result<(), NutError> {
        self.send(request).await?;
        let line = self.read_line().await?;
        if line == "OK" || line.starts_with("OK ") {
            return Ok(());
        }
        Err(error_line(&line))
    }

    async fn list_var(&mut self, ups: &str) -> Result<BTreeMap<String, String>, NutError> {
        self.send(&format!("LIST VAR {}", quote(ups))).await?;
        let first = self.read_line().await?;
        if first != format!("BEGIN LIST VAR {ups}") {
            return Err(match error_line(&first) {
                NutError::Refused { code } if code == "UNKNOWN-UPS" => NutError::UnknownUps {
                    ups: ups.to_owned(),
                },
                NutError::Refused { code } if code == "DRIVER-NOT-CONNECTED" => {
                    NutError::DriverNotConnected {
                        ups: ups.to_owned(),
                    }
                }
                other => other,
            });
        }
        let end = format!("END LIST VAR {ups}");
        let mut variables = BTreeMap::new();
        loop {
            let line = self.read_line().await?;
            if line == end {
                return Ok(variables);
            }
            let (name, value) = parse_var(&line, ups).ok_or_else(|| NutError::Protocol {
                line: line.chars().take(80).collect(),
            })?;
            if variables.len() < MAX_VARIABLES {
                variables.insert(name, value);
            }
        }
    }

    fn io(&self, error: std::io::Error) -> NutError {
        NutError::Io {
            address: self.address.clone(),
            detail: error.to_string(),
        }
    }
}

/// `ERR <code> [...]` as an error; anything else is not the protocol.
fn error_line(line: &str) -> NutError {
    match line.strip_prefix("ERR ") {
        Some(rest) => NutError::Refused {
            code: rest.split_whitespace().next().unwrap_or("").to_owned(),
        },
        None => NutError::Protocol {
            line: line.chars().take(80).collect(),
        },
    }
}

/// `VAR <ups> <name> "<value>"`, the value with `\"` and `\\` escapes.
fn parse_var(line: &str, ups: &str) -> Option<(String, String)> {
    let rest = line
        .strip_prefix("VAR ")?
        .strip_prefix(ups)?
        .strip_prefix(' ')?;
    let (name, quoted) = rest.split_once(' ')?;
    let inner = quoted.strip_prefix('"')?.strip_suffix('"')?;
    let mut value = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => value.push(chars.next()?),
            '"' => return None,
            c => value.push(c),
        }
    }
    (!name.is_empty()).then(|| (name.to_owned(), value))
}

/// A request argument, quoted when it needs it.
fn quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\')
    {
        return word.to_owned();
    }
    let escaped = word.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn var_lines_parse_with_escapes() {
        assert_eq!(
            parse_var(r#"VAR dc-ups battery.charge "100""#, "dc-ups"),
            Some(("battery.charge".to_owned(), "100".to_owned()))
        );
        assert_eq!(
            parse_var(r#"VAR dc-ups ups.status "OL CHRG""#, "dc-ups"),
            Some(("ups.status".to_owned(), "OL CHRG".to_owned()))
        );
        assert_eq!(
            parse_var(
                r#"VAR dc-ups device.model "a \"quoted\" \\ model""#,
                "dc-ups"
            ),
            Some((
                "device.model".to_owned(),
                r#"a "quoted" \ model"#.to_owned()
            ))
        );
        assert_eq!(parse_var(r#"VAR other x "1""#, "dc-ups"), None);
        assert_eq!(parse_var(r#"VAR dc-ups x 1"#, "dc-ups"), None);
        assert_eq!(parse_var(r#"VAR dc-ups x "a"b""#, "dc-ups"), None);
    }

    #[test]
    fn errors_keep_their_code() {
        assert_eq!(
            error_line("ERR ACCESS-DENIED"),
            NutError::Refused {
                code: "ACCESS-DENIED".to_owned()
            }
        );
        assert!(matches!(error_line("HELLO"), NutError::Protocol { .. }));
    }

    #[test]
    fn arguments_are_quoted_only_when_needed() {
        assert_eq!(quote("dc-ups"), "dc-ups");
        assert_eq!(quote("pass word"), "\"pass word\"");
        assert_eq!(quote(r#"a"b"#), r#""a\"b""#);
    }

    /// A scripted upsd on loopback: answers each expected request with its lines.
    async fn fake_upsd(script: Vec<(&'static str, &'static str)>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut stream = BufReader::new(stream);
            for (request, answer) in script {
                let mut line = String::new();
                stream.read_line(&mut line).await.unwrap();
                assert_eq!(line.trim_end(), request);
                stream.get_mut().write_all(answer.as_bytes()).await.unwrap();
            }
        });
        address
    }

    fn target(address: String, login: Option<(&str, &str)>) -> Target {
        Target {
            address,
            ups: "dc-ups".to_owned(),
            login: login.map(|(u, p)| (u.to_owned(), p.to_owned())),
            timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn a_listing_is_read_to_its_end() {
        let address = fake_upsd(vec![
            (
                "LIST VAR dc-ups",
                "BEGIN LIST VAR dc-ups\nVAR dc-ups battery.charge \"87\"\nVAR dc-ups ups.status \"OB DISCHRG\"\nEND LIST VAR dc-ups\n",
            ),
            ("LOGOUT", "OK Goodbye\n"),
        ])
        .await;
        let variables = list_variables(&target(address, None)).await.unwrap();
        assert_eq!(variables["battery.charge"], "87");
        assert_eq!(variables["ups.status"], "OB DISCHRG");
    }

    #[tokio::test]
    async fn a_refused_login_is_reported_as_a_login_error() {
        let address = fake_upsd(vec![
            ("USERNAME monitor", "OK\n"),
            ("PASSWORD wrong", "OK\n"),
            ("LOGIN dc-ups", "ERR ACCESS-DENIED\n"),
        ])
        .await;
        let error = list_variables(&target(address, Some(("monitor", "wrong"))))
            .await
            .unwrap_err();
        assert_eq!(error.reason(), "login", "{error}");
        assert!(error.to_string().contains("ACCESS-DENIED"), "{error}");
    }

    #[tokio::test]
    async fn an_unknown_ups_and_a_silent_server_are_named() {
        let address = fake_upsd(vec![("LIST VAR dc-ups", "ERR UNKNOWN-UPS\n")]).await;
        let error = list_variables(&target(address, None)).await.unwrap_err();
        assert_eq!(error.reason(), "unknown_ups");

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let mut silent = target(address, None);
        silent.timeout = Duration::from_millis(200);
        let error = list_variables(&silent).await.unwrap_err();
        assert_eq!(error.reason(), "timeout");
        drop(listener);
    }
}
