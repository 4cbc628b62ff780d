//! MQTT over TLS for both binaries: the rustls client config (`ring` provider) built from
//! `[mqtt] ca_file`, `client_cert_file` and `client_key_file`, the password read from
//! `password_file`, and telling a TLS failure apart from other connection errors.
//!
//! Server name verification is always on: rustls checks the broker's certificate against
//! the host in `mqtt.url` (a DNS name or an IP address in its subjectAltName). There is no
//! switch to turn it off; a test CA is trusted with `ca_file` instead.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rumqttc::{ConnectionError, StateError};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::ConfigError;
use crate::mqtt::MqttSettings;

/// The rustls client config for an `mqtts://` broker, reading every file now so that a bad
/// one is named at start (and by `--check-config`) rather than on each reconnect.
pub fn client_config(settings: &MqttSettings) -> Result<Arc<ClientConfig>, ConfigError> {
    let roots = match &settings.ca_file {
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs("mqtt.ca_file", path)? {
                roots.add(cert).map_err(|error| {
                    ConfigError::invalid(
                        "mqtt.ca_file",
                        path.display(),
                        format!("holds a certificate rustls cannot use as a CA: {error}"),
                    )
                })?;
            }
            roots
        }
        None => system_roots()?,
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|error| ConfigError::Parse(format!("rustls: {error}")))?
        .with_root_certificates(roots);
    let config = match (&settings.client_cert_file, &settings.client_key_file) {
        (None, None) => builder.with_no_client_auth(),
        (Some(cert_file), Some(key_file)) => {
            let certs = read_certs("mqtt.client_cert_file", cert_file)?;
            let key = PrivateKeyDer::from_pem_file(key_file).map_err(|error| {
                ConfigError::invalid(
                    "mqtt.client_key_file",
                    key_file.display(),
                    format!("holds no usable private key: {error}"),
                )
            })?;
            builder.with_client_auth_cert(certs, key).map_err(|error| {
                ConfigError::invalid(
                    "mqtt.client_key_file",
                    key_file.display(),
                    format!(
                        "does not fit mqtt.client_cert_file '{}': {error}",
                        cert_file.display()
                    ),
                )
            })?
        }
        (Some(cert_file), None) => {
            return Err(ConfigError::invalid(
                "mqtt.client_cert_file",
                cert_file.display(),
                "is set but mqtt.client_key_file is not",
            ));
        }
        (None, Some(key_file)) => {
            return Err(ConfigError::invalid(
                "mqtt.client_key_file",
                key_file.display(),
                "is set but mqtt.client_cert_file is not",
            ));
        }
    };
    Ok(Arc::new(config))
}

/// The password in `path`: its first line, without the line break.
pub fn read_password(path: &Path) -> Result<String, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        ConfigError::invalid(
            "mqtt.password_file",
            path.display(),
            format!("cannot be read: {error}"),
        )
    })?;
    let password = text.lines().next().unwrap_or_default();
    if password.is_empty() {
        return Err(ConfigError::invalid(
            "mqtt.password_file",
            path.display(),
            "is empty",
        ));
    }
    Ok(password.to_owned())
}

fn read_certs(field: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|error| ConfigError::invalid(field, path.display(), error.to_string()))?;
    if certs.is_empty() {
        return Err(ConfigError::invalid(
            field,
            path.display(),
            "holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
        ));
    }
    Ok(certs)
}

fn system_roots() -> Result<RootCertStore, ConfigError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    // Unparsable system certificates are skipped, as every TLS client does.
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
        return Err(ConfigError::invalid(
            "mqtt.ca_file",
            "",
            format!(
                "is not set and the system has no CA certificates ({}); set it to the CA \
                 that signed the broker's certificate",
                errors.join("; ")
            ),
        ));
    }
    Ok(roots)
}

/// Whether `error` is a failed TLS handshake or a TLS alert from the broker (a refused client
/// certificate arrives as an alert after the client's side of a TLS 1.3 handshake is done).
pub fn is_tls_error(error: &ConnectionError) -> bool {
    match error {
        ConnectionError::Tls(_) => true,
        ConnectionError::Io(error)
        | ConnectionError::MqttState(StateError::Io(error))
        | ConnectionError::MqttState(StateError::Deserialization(rumqttc::mqttbytes::Error::Io(
            error,
        ))) => is_tls_io_error(error),
        _ => false,
    }
}

/// Whether the broker answered with bytes that are not MQTT: typically a TLS port's alert
/// record read by a plain `mqtt://` client.
pub fn is_not_mqtt(error: &ConnectionError) -> bool {
    matches!(
        error,
        ConnectionError::MqttState(StateError::Deserialization(error))
            if !matches!(error, rumqttc::mqttbytes::Error::Io(_))
    )
}

fn is_tls_io_error(error: &io::Error) -> bool {
    error
        .get_ref()
        .is_some_and(|inner| inner.downcast_ref::<rustls::Error>().is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> MqttSettings {
        MqttSettings {
            url: Some("mqtts://127.0.0.1:8883".into()),
            ..MqttSettings::default()
        }
    }

    #[test]
    fn bad_files_are_named_with_their_field() {
        let dir = std::env::temp_dir().join(format!("pantau-mqtt-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("not.pem");
        std::fs::write(&not_pem, "hello\n").unwrap();
        let missing = dir.join("missing.pem");

        let mut with_ca = settings();
        with_ca.ca_file = Some(missing.clone());
        let error = client_config(&with_ca).unwrap_err().to_string();
        assert!(error.starts_with("mqtt.ca_file: '"), "{error}");
        assert!(error.contains("missing.pem"), "{error}");

        with_ca.ca_file = Some(not_pem.clone());
        let error = client_config(&with_ca).unwrap_err().to_string();
        assert!(error.ends_with("holds no PEM certificate (-----BEGIN CERTIFICATE-----)"));

        let mut half = settings();
        half.client_key_file = Some(not_pem.clone());
        let error = client_config(&half).unwrap_err().to_string();
        assert!(error.contains("mqtt.client_cert_file is not"), "{error}");

        std::fs::write(dir.join("empty"), "").unwrap();
        let error = read_password(&dir.join("empty")).unwrap_err().to_string();
        assert!(error.starts_with("mqtt.password_file: '"), "{error}");
        std::fs::write(dir.join("password"), "s3cret\n").unwrap();
        assert_eq!(read_password(&dir.join("password")).unwrap(), "s3cret");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn tls_errors_are_told_apart() {
        let alert = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired),
        );
        let read = rumqttc::mqttbytes::Error::Io(io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::AlertReceived(rustls::AlertDescription::CertificateRequired),
        ));
        assert!(is_tls_error(&ConnectionError::Io(alert)));
        assert!(is_tls_error(&ConnectionError::MqttState(
            StateError::Deserialization(read)
        )));
        let alert_as_mqtt = rumqttc::mqttbytes::Error::BoundaryCrossed(768);
        assert!(is_not_mqtt(&ConnectionError::MqttState(
            StateError::Deserialization(alert_as_mqtt)
        )));
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert!(!is_tls_error(&ConnectionError::Io(reset)));
    }
}
