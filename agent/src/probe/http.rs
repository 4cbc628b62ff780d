//! HTTP(S) GET, as blackbox_exporter's `http` prober: status code, the duration of each phase
//! (`resolve`, `connect`, `tls`, `processing`, `transfer`), the earliest expiry among the
//! certificates the server sent, expected status codes and an optional body regex.
//!
//! The phases are timed by hand around hyper's HTTP/1.1 connection (a client library that
//! pools and resolves by itself would hide them); TLS is rustls with the ring provider.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::http::Uri;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::config::ProbeConfig;
use super::{Detail, Outcome};
use crate::metric::{FamilySet, Pattern};
use pantau_runtime::config::ConfigError;

/// Largest body read (and matched against `body_regex`).
const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// A validated HTTP probe.
#[derive(Clone)]
pub struct HttpSpec {
    pub uri: Uri,
    pub host: String,
    pub port: u16,
    pub valid_status_codes: Vec<u16>,
    pub body_regex: Option<Pattern>,
    /// Set for `https://` targets.
    pub tls: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for HttpSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSpec")
            .field("uri", &self.uri)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl HttpSpec {
    pub fn parse(
        config: &ProbeConfig,
        field: &dyn Fn(&str) -> String,
    ) -> Result<Self, ConfigError> {
        let invalid = |why: &str| ConfigError::invalid(field("target"), &config.target, why);
        let uri: Uri = config.target.parse().map_err(|_| invalid("is not a URL"))?;
        let https = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            _ => return Err(invalid("must be an http:// or https:// URL")),
        };
        let host = uri
            .host()
            .ok_or_else(|| invalid("has no host"))?
            .trim_matches(['[', ']'])
            .to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        if let Some(codes) = &config.valid_status_codes
            && let Some(bad) = codes.iter().find(|code| !(100..=599).contains(*code))
        {
            return Err(ConfigError::invalid(
                field("valid_status_codes"),
                bad,
                "is not an HTTP status code",
            ));
        }
        let tls = match https {
            false => None,
            true => Some(Arc::new(tls_config(config, field)?)),
        };
        Ok(Self {
            uri,
            host,
            port,
            valid_status_codes: config.valid_status_codes.clone().unwrap_or_default(),
            body_regex: config.body_regex.clone().filter(Pattern::is_set),
            tls,
        })
    }
}

fn tls_config(
    config: &ProbeConfig,
    field: &dyn Fn(&str) -> String,
) -> Result<ClientConfig, ConfigError> {
    let mut roots = rustls::RootCertStore::empty();
    match &config.ca_file {
        Some(path) => {
            let certificates = CertificateDer::pem_file_iter(path)
                .and_then(|iter| iter.collect::<Result<Vec<_>, _>>())
                .map_err(|error| {
                    ConfigError::invalid(
                        field("ca_file"),
                        path.display(),
                        format!("cannot be read as PEM certificates ({error})"),
                    )
                })?;
            let (added, _) = roots.add_parsable_certificates(certificates);
            if added == 0 {
                return Err(ConfigError::invalid(
                    field("ca_file"),
                    path.display(),
                    "holds no usable certificate",
                ));
            }
        }
        None => {
            // No roots is not a config error: the probe fails and says why.
            roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| {
            ConfigError::invalid(field("target"), &config.target, error.to_string())
        })?;
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// What the last request saw.
#[derive(Debug, Clone, Default)]
pub struct HttpResult {
    pub status: Option<u16>,
    /// `(phase, seconds)` for the phases reached.
    pub phases: Vec<(&'static str, Duration)>,
    pub content_length: Option<usize>,
    pub tls: bool,
    /// Unix seconds of the earliest `notAfter` of the server's certificates.
    pub earliest_cert_expiry: Option<i64>,
    pub body_matched: Option<bool>,
}

pub async fn run(spec: &HttpSpec, timeout: Duration) -> Outcome {
    let started = Instant::now();
    let mut result = HttpResult::default();
    let outcome = tokio::time::timeout(timeout, request(spec, &mut result)).await;
    let failure = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(why)) => Some(why),
        Err(_) => Some(format!("timed out after {timeout:?}")),
    };
    let resolve = result
        .phases
        .iter()
        .find(|(phase, _)| *phase == "resolve")
        .map(|(_, duration)| *duration);
    Outcome {
        success: failure.is_none(),
        duration: started.elapsed(),
        failure,
        resolve,
        detail: Detail::Http(result),
    }
}

async fn request(spec: &HttpSpec, result: &mut HttpResult) -> Result<(), String> {
    let (address, resolve) = super::resolve(&spec.host, spec.port).await?;
    result.phases.push(("resolve", resolve));
    let phase_started = Instant::now();
    let stream = TcpStream::connect(address)
        .await
        .map_err(|error| format!("connect to {address}: {error}"))?;
    result.phases.push(("connect", phase_started.elapsed()));
    match &spec.tls {
        None => exchange(spec, stream, result).await,
        Some(config) => {
            result.tls = true;
            let tls_started = Instant::now();
            let name = ServerName::try_from(spec.host.clone())
                .map_err(|error| format!("{}: {error}", spec.host))?;
            let stream = TlsConnector::from(config.clone())
                .connect(name, stream)
                .await
                .map_err(|error| format!("TLS handshake with {address}: {error}"))?;
            result.phases.push(("tls", tls_started.elapsed()));
            result.earliest_cert_expiry = stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(earliest_expiry);
            exchange(spec, stream, result).await
        }
    }
}

async fn exchange<S>(spec: &HttpSpec, stream: S, result: &mut HttpResult) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let processing_started = Instant::now();
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(TokioIo::new(stream))
            .await
            .map_err(|error| format!("HTTP handshake: {error}"))?;
    // The connection future drives the socket; it ends with the request (or the timeout).
    let driver = tokio::spawn(connection);
    let authority = spec
        .uri
        .authority()
        .map(|authority| authority.as_str().to_owned())
        .unwrap_or_else(|| spec.host.clone());
    let path = spec
        .uri
        .path_and_query()
        .map_or("/", |path| path.as_str())
        .to_owned();
    let request = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .header(
            hyper::header::USER_AGENT,
            concat!("pantau-agent/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::new())
        .map_err(|error| error.to_string())?;
    let outcome = async {
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| format!("request: {error}"))?;
        result
            .phases
            .push(("processing", processing_started.elapsed()));
        let status = response.status().as_u16();
        result.status = Some(status);
        let transfer_started = Instant::now();
        let body = Limited::new(response.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|error| format!("reading the body: {error}"))?
            .to_bytes();
        result.phases.push(("transfer", transfer_started.elapsed()));
        result.content_length = Some(body.len());
        let status_ok = match spec.valid_status_codes.is_empty() {
            true => (200..300).contains(&status),
            false => spec.valid_status_codes.contains(&status),
        };
        if !status_ok {
            return Err(format!("status {status} is not a valid status code"));
        }
        if let Some(regex) = &spec.body_regex {
            let matched = regex.is_match(&String::from_utf8_lossy(&body));
            result.body_matched = Some(matched);
            if !matched {
                return Err(format!("body does not match '{}'", regex.as_str()));
            }
        }
        Ok(())
    }
    .await;
    driver.abort();
    outcome
}

/// The earliest `notAfter` among `certificates`, in Unix seconds.
fn earliest_expiry(certificates: &[CertificateDer<'_>]) -> Option<i64> {
    certificates
        .iter()
        .filter_map(|der| x509_parser::parse_x509_certificate(der.as_ref()).ok())
        .map(|(_, certificate)| certificate.validity().not_after.timestamp())
        .min()
}

impl HttpResult {
    pub fn write(&self, labels: &[(&str, &str)], set: &mut FamilySet) {
        set.gauge(
            "probe_http_status_code",
            "blackbox_exporter: Response HTTP status code",
        )
        .sample(labels, f64::from(self.status.unwrap_or(0)));
        for (phase, duration) in &self.phases {
            let mut with_phase: Vec<(&str, &str)> = labels.to_vec();
            with_phase.push(("phase", phase));
            set.gauge(
                "probe_http_duration_seconds",
                "blackbox_exporter: Duration of http request by phase, summed over all redirects",
            )
            .sample(&with_phase, duration.as_secs_f64());
        }
        if let Some(length) = self.content_length {
            set.gauge(
                "probe_http_content_length",
                "blackbox_exporter: Length of http content response",
            )
            .sample(labels, length as f64);
        }
        set.gauge(
            "probe_http_ssl",
            "blackbox_exporter: Indicates if SSL was used for the final redirect",
        )
        .sample(labels, if self.tls { 1.0 } else { 0.0 });
        if let Some(expiry) = self.earliest_cert_expiry {
            set.gauge(
                "probe_ssl_earliest_cert_expiry",
                "blackbox_exporter: Returns last SSL chain expiry in unixtime",
            )
            .sample(labels, expiry as f64);
        }
        if let Some(matched) = self.body_matched {
            set.gauge(
                "probe_failed_due_to_regex",
                "blackbox_exporter: Indicates if probe failed due to regex",
            )
            .sample(labels, if matched { 0.0 } else { 1.0 });
        }
    }
}
