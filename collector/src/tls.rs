//! HTTPS for `/metrics` and the API: `http.tls_cert_file` and `http.tls_key_file` (PEM), served
//! by rustls with the `ring` provider. Both files are read at start (and by
//! `--check-config`), so a missing or mismatched pair is named before the service runs, and
//! again on SIGHUP, so a renewed certificate (`pantau-collector cert renew`) is served without
//! a restart; a pair that fails to load then keeps the old one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use prometheus::{IntGaugeVec, Opts, Registry};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ConfigBuilder, ServerConfig, WantsVerifier};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The served certificate: read from its files at start and on [`HttpCertificate::reload`];
/// every new handshake gets the current one.
#[derive(Debug)]
pub struct HttpCertificate {
    cert_file: PathBuf,
    key_file: PathBuf,
    /// Handshakes only clone the `Arc` under the read lock, so a reload never waits long.
    current: RwLock<Loaded>,
}

#[derive(Debug, Clone)]
struct Loaded {
    key: Arc<CertifiedKey>,
    /// notAfter, Unix seconds (for the expiry metric).
    not_after: i64,
}

impl HttpCertificate {
    /// Reads the pair; errors name the field and the file.
    pub fn load(cert_file: &Path, key_file: &Path) -> Result<Arc<Self>, String> {
        Ok(Arc::new(HttpCertificate {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            current: RwLock::new(read_loaded(cert_file, key_file)?),
        }))
    }

    /// Reads the files again; on any error the old certificate stays. Returns the new
    /// notAfter.
    pub fn reload(&self) -> Result<i64, String> {
        let loaded = read_loaded(&self.cert_file, &self.key_file)?;
        let not_after = loaded.not_after;
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = loaded;
        Ok(not_after)
    }

    /// notAfter of the served certificate, Unix seconds.
    pub fn not_after(&self) -> i64 {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .not_after
    }
}

impl ResolvesServerCert for HttpCertificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(
            self.current
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .key
                .clone(),
        )
    }
}

fn read_loaded(cert_file: &Path, key_file: &Path) -> Result<Loaded, String> {
    let (certs, key) = read_pair(
        ("http.tls_cert_file", cert_file),
        ("http.tls_key_file", key_file),
    )?;
    let not_after = certs
        .first()
        .and_then(|der| x509_parser::parse_x509_certificate(der).ok())
        .map(|(_, cert)| cert.validity().not_after.timestamp())
        .ok_or_else(|| {
            format!(
                "http.tls_cert_file: '{}' holds no readable certificate",
                cert_file.display()
            )
        })?;
    let key = CertifiedKey::from_der(certs, key, &rustls::crypto::ring::default_provider())
        .map_err(|error| mismatch("http.tls_key_file", key_file, &error))?;
    Ok(Loaded {
        key: Arc::new(key),
        not_after,
    })
}

/// A rustls server config that serves `certificate`'s current pair.
pub fn server_config_with(certificate: Arc<HttpCertificate>) -> Result<Arc<ServerConfig>, String> {
    let mut config = builder()?
        .with_no_client_auth()
        .with_cert_resolver(certificate);
    // HTTP/1.1 only: the server's header, body and idle deadlines (serve/) are HTTP/1's.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A rustls server config from PEM files: the certificate chain and its private key.
#[cfg(test)]
pub fn server_config(cert_file: &Path, key_file: &Path) -> Result<Arc<ServerConfig>, String> {
    server_config_with(HttpCertificate::load(cert_file, key_file)?)
}

/// `pantau_collector_tls_certificate_expiry_timestamp_seconds{certificate}`: when a served
/// certificate expires, so an alert fires weeks before browsers and agents refuse it.
pub fn register_expiry(registry: &Registry) -> prometheus::Result<IntGaugeVec> {
    let gauge = IntGaugeVec::new(
        Opts::new(
            "pantau_collector_tls_certificate_expiry_timestamp_seconds",
            "notAfter of a certificate the collector serves, Unix seconds",
        ),
        &["certificate"],
    )?;
    registry.register(Box::new(gauge.clone()))?;
    Ok(gauge)
}

/// A server config builder on the `ring` provider, before its client-auth choice.
pub fn builder() -> Result<ConfigBuilder<ServerConfig, WantsVerifier>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| error.to_string())
}

/// The certificates in a PEM file, at least one; errors name `field` and the file.
pub fn read_certs(field: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| format!("{field}: '{}' {error}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{field}: '{}' holds no certificate",
            path.display()
        ));
    }
    Ok(certs)
}

/// A certificate chain and its private key, each from the PEM file of its field.
pub fn read_pair(
    (cert_field, cert_file): (&str, &Path),
    (key_field, key_file): (&str, &Path),
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let certs = read_certs(cert_field, cert_file)?;
    let key = PrivateKeyDer::from_pem_file(key_file)
        .map_err(|error| format!("{key_field}: '{}' {error}", key_file.display()))?;
    Ok((certs, key))
}

/// The error for a key that does not belong to its certificate.
pub fn mismatch(key_field: &str, key_file: &Path, error: &rustls::Error) -> String {
    format!(
        "{key_field}: '{}' does not fit the certificate: {error}",
        key_file.display()
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use axum::Router;
    use axum::routing::get;
    use rustls::RootCertStore;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::serve::{Deadlines, HttpMetrics, Limits, Server};

    #[tokio::test]
    async fn serves_https_with_the_configured_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert_file = dir.path().join("cert.pem");
        let key_file = dir.path().join("key.pem");
        std::fs::write(&cert_file, certified.cert.pem()).unwrap();
        std::fs::write(&key_file, certified.key_pair.serialize_pem()).unwrap();
        let config = server_config(&cert_file, &key_file).unwrap();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let app = Router::new().route("/healthz", get(|| async { "ok\n" }));
        let metrics = HttpMetrics::register(&prometheus::Registry::new()).unwrap();
        let server = Server {
            app,
            tls: Some(config),
            limits: Limits {
                deadlines: Deadlines {
                    header_read: Duration::from_millis(500),
                    idle: Duration::from_secs(5),
                },
                max_connections: 10,
                max_connections_per_address: 10,
            },
            metrics: metrics.clone(),
        };
        let shutdown = tokio_util::sync::CancellationToken::new();
        let server = tokio::spawn(server.run(listener, shutdown.clone()));

        // A client that starts a handshake and stalls is closed at the header timeout.
        let mut stalled = tokio::net::TcpStream::connect(address).await.unwrap();
        stalled.write_all(&[0x16, 0x03]).await.unwrap();
        let mut rest = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stalled.read_to_end(&mut rest))
            .await
            .unwrap()
            .ok();
        let failed = metrics.tls_failures.with_label_values(&["timeout"]).get();
        assert_eq!(failed, 1);

        let mut roots = RootCertStore::empty();
        roots.add(certified.cert.der().clone()).unwrap();
        let client = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(client));
        let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
        let mut tls = connector.connect(name, tcp).await.unwrap();
        tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(10), tls.read_to_string(&mut answer))
            .await
            .unwrap()
            .unwrap();
        assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
        assert!(answer.ends_with("ok\n"), "{answer}");
        shutdown.cancel();
        server.await.unwrap().unwrap();
    }

    #[test]
    fn bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let cert_file = dir.path().join("cert.pem");
        std::fs::write(&cert_file, "not a certificate").unwrap();
        let error = server_config(&cert_file, &cert_file).unwrap_err();
        assert!(error.starts_with("http.tls_cert_file: '"), "{error}");
        assert!(error.ends_with("holds no certificate"), "{error}");
        let one = rcgen::generate_simple_self_signed(vec!["a".to_owned()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["b".to_owned()]).unwrap();
        std::fs::write(&cert_file, one.cert.pem()).unwrap();
        let key_file = dir.path().join("key.pem");
        std::fs::write(&key_file, other.key_pair.serialize_pem()).unwrap();
        let error = server_config(&cert_file, &key_file).unwrap_err();
        assert!(error.contains("does not fit the certificate"), "{error}");
    }
}
