//! The embedded broker's TLS listener (`broker.tls_listen`): rustls (`ring`) terminates TLS
//! and passes the plain MQTT bytes to the broker's own listener over loopback, so the logins
//! behind it follow exactly the plain listener's rules (`broker.password_file`).
//!
//! Why not rumqttd's own TLS: its `use-rustls` feature builds a second rustls (0.22), and
//! client certificates are a compile-time switch (`verify-client-cert`) that makes a CA
//! mandatory on every TLS listener and moves clients whose certificate has an Organization
//! into a `/tenants/<O>/` topic namespace. Terminating here keeps one rustls, an optional
//! `broker.tls_client_ca_file`, and a counted, logged reason for every failed handshake.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use pantau_runtime::ratelimit::{LogLimiter, Verdict};
use pantau_runtime::supervise::Supervisor;
use prometheus::IntCounter;
use rustls::RootCertStore;
use rustls::server::WebPkiClientVerifier;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::BrokerConfig;
use crate::tls;

/// A client gets this long to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The TLS server config of `broker.tls_*`, or `None` without `broker.tls_listen`. Reads
/// every file, so a bad one is named at start and by `--check-config`.
pub fn server_config(config: &BrokerConfig) -> Result<Option<Arc<rustls::ServerConfig>>, String> {
    let Some(listen) = config.tls_listen else {
        return Ok(None);
    };
    let (Some(cert_file), Some(key_file)) = (&config.tls_cert_file, &config.tls_key_file) else {
        return Err(format!(
            "broker.tls_listen: '{listen}' needs broker.tls_cert_file and broker.tls_key_file"
        ));
    };
    let (certs, key) = tls::read_pair(
        ("broker.tls_cert_file", cert_file),
        ("broker.tls_key_file", key_file),
    )?;
    let builder = tls::builder()?;
    let builder = match &config.tls_client_ca_file {
        Some(ca_file) => builder.with_client_cert_verifier(client_verifier(ca_file)?),
        None => builder.with_no_client_auth(),
    };
    let server = builder
        .with_single_cert(certs, key)
        .map_err(|error| tls::mismatch("broker.tls_key_file", key_file, &error))?;
    Ok(Some(Arc::new(server)))
}

fn client_verifier(
    ca_file: &Path,
) -> Result<Arc<dyn rustls::server::danger::ClientCertVerifier>, String> {
    let field = "broker.tls_client_ca_file";
    let mut roots = RootCertStore::empty();
    for cert in tls::read_certs(field, ca_file)? {
        roots
            .add(cert)
            .map_err(|error| format!("{field}: '{}' {error}", ca_file.display()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .map_err(|error| format!("{field}: '{}' {error}", ca_file.display()))
}

/// Accepts TLS on `listener` and forwards each connection to the broker's plain listener at
/// `backend`, as the essential task `mqtt-broker-tls`. At most `max_connections` at once;
/// `failures` counts failed handshakes.
pub fn spawn(
    supervisor: &mut Supervisor,
    listener: TcpListener,
    server: Arc<rustls::ServerConfig>,
    backend: SocketAddr,
    max_connections: usize,
    failures: IntCounter,
) {
    let shutdown = supervisor.shutdown();
    let proxy = Proxy {
        acceptor: TlsAcceptor::from(server),
        backend,
        failures,
        log: Arc::new(LogLimiter::new(Duration::from_secs(10))),
    };
    supervisor.spawn("mqtt-broker-tls", async move {
        proxy.run(listener, max_connections, shutdown).await
    });
}

#[derive(Clone)]
struct Proxy {
    acceptor: TlsAcceptor,
    backend: SocketAddr,
    failures: IntCounter,
    log: Arc<LogLimiter>,
}

impl Proxy {
    async fn run(
        self,
        listener: TcpListener,
        max_connections: usize,
        shutdown: CancellationToken,
    ) -> Result<(), String> {
        let slots = Arc::new(Semaphore::new(max_connections));
        loop {
            // Waiting for a slot before accepting leaves further clients in the kernel's
            // backlog instead of holding an unbounded number of sockets here.
            let slot = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                slot = slots.clone().acquire_owned() => slot.map_err(|error| error.to_string())?,
            };
            let (tcp, peer) = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // EMFILE and the like pass; back off a little so as not to spin.
                        warn!(%error, "broker.tls_listen: accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let proxy = self.clone();
            tokio::spawn(async move {
                proxy.serve(tcp, peer).await;
                drop(slot);
            });
        }
    }

    async fn serve(&self, tcp: TcpStream, peer: SocketAddr) {
        let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, self.acceptor.accept(tcp)).await;
        let mut tls = match handshake {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => return self.refuse(peer, &error.to_string()),
            Err(_) => return self.refuse(peer, "handshake timed out"),
        };
        let mut plain = match TcpStream::connect(self.backend).await {
            Ok(plain) => plain,
            Err(error) => {
                warn!(%error, backend = %self.backend, "cannot reach the embedded broker's plain listener");
                return;
            }
        };
        if let Err(error) = tokio::io::copy_bidirectional(&mut tls, &mut plain).await {
            debug!(%peer, %error, "TLS client connection ended");
        }
    }

    fn refuse(&self, peer: SocketAddr, error: &str) {
        self.failures.inc();
        if let Verdict::Log { suppressed } = self.log.check("handshake") {
            warn!(
                %peer,
                error,
                suppressed,
                "embedded broker refused a TLS connection (a plain mqtt:// client, an \
                 untrusted or missing client certificate, or a client that does not trust \
                 broker.tls_cert_file)"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> BrokerConfig {
        let server = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
        std::fs::write(dir.join("server.pem"), server.cert.pem()).unwrap();
        std::fs::write(dir.join("server.key"), server.key_pair.serialize_pem()).unwrap();
        BrokerConfig {
            tls_listen: Some("127.0.0.1:8883".parse().unwrap()),
            tls_cert_file: Some(dir.join("server.pem")),
            tls_key_file: Some(dir.join("server.key")),
            ..BrokerConfig::default()
        }
    }

    #[test]
    fn builds_with_and_without_client_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path());
        assert!(server_config(&config).unwrap().is_some());
        // Any CA certificate will do for the verifier; the server's own is one.
        config.tls_client_ca_file = config.tls_cert_file.clone();
        assert!(server_config(&config).unwrap().is_some());
        config.tls_listen = None;
        assert!(server_config(&config).unwrap().is_none());
    }

    #[test]
    fn bad_files_are_named_with_their_field() {
        let dir = tempfile::tempdir().unwrap();
        let mut config = config(dir.path());
        std::fs::write(dir.path().join("empty.pem"), "").unwrap();
        config.tls_client_ca_file = Some(dir.path().join("empty.pem"));
        let error = server_config(&config).unwrap_err();
        assert!(
            error.starts_with("broker.tls_client_ca_file: '") && error.ends_with("no certificate"),
            "{error}"
        );
        config.tls_client_ca_file = None;
        let other = rcgen::generate_simple_self_signed(vec!["x".to_owned()]).unwrap();
        std::fs::write(
            dir.path().join("server.key"),
            other.key_pair.serialize_pem(),
        )
        .unwrap();
        let error = server_config(&config).unwrap_err();
        assert!(error.starts_with("broker.tls_key_file: '"), "{error}");
        assert!(error.contains("does not fit the certificate"), "{error}");
        config.tls_key_file = None;
        let error = server_config(&config).unwrap_err();
        assert!(error.contains("needs broker.tls_cert_file and broker.tls_key_file"));
    }
}
