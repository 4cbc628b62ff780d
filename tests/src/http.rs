//! Blocking HTTP for tests: status and body, never an error for 4xx/5xx.
//!
//! Uses `ureq` 3 without default features: it is blocking (no async runtime to set up in a
//! test), small, and without TLS, which nothing on 127.0.0.1 needs. `reqwest` would bring
//! hyper and a tokio runtime behind its blocking API for no gain here.

use std::sync::OnceLock;
use std::time::Duration;

use ureq::Agent;

/// Whole-request timeout: everything the tests talk to is on loopback.
const TIMEOUT: Duration = Duration::from_secs(10);

fn agent() -> &'static Agent {
    static AGENT: OnceLock<Agent> = OnceLock::new();
    AGENT.get_or_init(|| {
        Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(TIMEOUT))
            // Never send loopback requests to a proxy from the environment.
            .proxy(None)
            .max_redirects(0)
            .build()
            .into()
    })
}

/// `GET url`: `Ok((status, body))` for any HTTP answer, including 4xx and 5xx;
/// `Err(message)` when there was no answer (connection refused, timeout after 10 s).
pub fn http_get(url: &str) -> Result<(u16, String), String> {
    let response = agent()
        .get(url)
        .call()
        .map_err(|err| format!("GET {url}: {err}"))?;
    read(response, "GET", url)
}

/// `GET url` with extra `headers` (e.g. `Authorization`); answers as [`http_get`].
pub fn http_get_with(url: &str, headers: &[(&str, &str)]) -> Result<(u16, String), String> {
    let mut request = agent().get(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.call().map_err(|err| format!("GET {url}: {err}"))?;
    read(response, "GET", url)
}

/// `POST url` with `value` as a JSON body (`Content-Type: application/json`); answers as
/// [`http_get`].
pub fn http_post_json(url: &str, value: &serde_json::Value) -> Result<(u16, String), String> {
    let body = serde_json::to_vec(value).expect("serialize a serde_json::Value");
    http_post(url, &[("Content-Type", "application/json")], &body)
}

/// `POST url` with raw `body` and extra `headers` (e.g. a snappy remote-write request:
/// `Content-Encoding: snappy`, `Content-Type: application/x-protobuf`,
/// `X-Prometheus-Remote-Write-Version: 0.1.0`); answers as [`http_get`].
pub fn http_post(
    url: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, String), String> {
    let mut request = agent().post(url);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request
        .send(body)
        .map_err(|err| format!("POST {url}: {err}"))?;
    read(response, "POST", url)
}

fn read(
    mut response: ureq::http::Response<ureq::Body>,
    method: &str,
    url: &str,
) -> Result<(u16, String), String> {
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|err| format!("{method} {url}: reading the body of a {status} answer: {err}"))?;
    Ok((status, body))
}

/// Percent-encodes a query parameter value (everything but RFC 3986 unreserved characters).
pub(crate) fn encode_query_value(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}
