//! The two configs `init` writes, filled in from templates an admin can read and follow:
//! collector.toml and Mosquitto's conf.d/pantau.conf.

use std::path::Path;

use super::{InitArgs, Paths, first_host, mosquitto_cert_files};

/// The collector's config, with `@NAME@` placeholders.
const CONFIG_TEMPLATE: &str = include_str!("collector.toml");
/// Mosquitto's drop-in, with `@NAME@` placeholders.
const MOSQUITTO_TEMPLATE: &str = include_str!("mosquitto.conf");

/// A TOML basic string (JSON's string escapes are TOML's).
fn quoted(text: impl AsRef<str>) -> String {
    serde_json::to_string(text.as_ref()).unwrap_or_default()
}

fn path(path: &Path) -> String {
    quoted(path.display().to_string())
}

fn fill(template: &str, values: &[(&str, String)]) -> String {
    let mut text = template.to_owned();
    for (name, value) in values {
        text = text.replace(&format!("@{name}@"), value);
    }
    text
}

fn today() -> String {
    jiff::Timestamp::now().strftime("%Y-%m-%d").to_string()
}

pub(super) fn collector_toml(args: &InitArgs, paths: &Paths) -> String {
    let host = first_host(args).unwrap_or_default();
    fill(
        CONFIG_TEMPLATE,
        &[
            ("DATE", today()),
            ("CONFIG", paths.config.display().to_string()),
            ("ENV_FILE", paths.env.display().to_string()),
            ("MQTTS_PORT", args.mqtts_port.to_string()),
            ("HTTP_LISTEN", quoted(args.http_listen.to_string())),
            ("TLS_CERT_FILE", path(&paths.cert)),
            ("TLS_KEY_FILE", path(&paths.key)),
            ("METRICS_TOKEN_FILE", path(&paths.metrics_tokens)),
            (
                "MQTT_URL",
                quoted(format!("mqtt://127.0.0.1:{}", args.mqtt_local_port)),
            ),
            ("API_TOKEN_FILE", path(&paths.api_tokens)),
            ("USERS_FILE", path(&paths.users)),
            ("KEY_FILE", path(&paths.master_key)),
            ("STATE_DIR", path(&args.state_dir)),
            (
                "BROKER_URL",
                quoted(format!("mqtts://{host}:{}", args.mqtts_port)),
            ),
            ("CA_FILE", path(&paths.ca_cert)),
            ("CA_KEY_FILE", path(&paths.ca_key)),
            ("CLIENT_CERTIFICATES", args.client_certificates.to_string()),
            ("MOSQUITTO_PASSWORD_FILE", path(&paths.mosquitto_passwd)),
            ("BUNDLE_DIR", path(&paths.bundle_dir)),
        ],
    )
}

pub(super) fn mosquitto_conf(args: &InitArgs, paths: &Paths) -> String {
    let (ca, cert, key) = mosquitto_cert_files(&args.mosquitto_dir);
    fill(
        MOSQUITTO_TEMPLATE,
        &[
            ("DATE", today()),
            (
                "PASSWORD_FILE",
                paths.mosquitto_passwd.display().to_string(),
            ),
            ("ACL_FILE", paths.mosquitto_acl.display().to_string()),
            ("LOCAL_PORT", args.mqtt_local_port.to_string()),
            ("MQTTS_PORT", args.mqtts_port.to_string()),
            ("CAFILE", ca.display().to_string()),
            ("CERTFILE", cert.display().to_string()),
            ("KEYFILE", key.display().to_string()),
            ("REQUIRE_CERTIFICATE", args.client_certificates.to_string()),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CollectorConfig;
    use crate::init::tests::args;

    #[test]
    fn the_written_config_parses_and_requires_tls() {
        // validate() reads the master key.
        let etc = tempfile::tempdir().unwrap();
        std::fs::write(
            etc.path().join("command-master.key"),
            super::super::master_key(),
        )
        .unwrap();
        let etc_dir = etc.path().display().to_string();
        let args = args(&[
            "--name",
            "pantau.kantor.lan",
            "--address",
            "192.168.1.10",
            "--etc-dir",
            &etc_dir,
        ]);
        let text = collector_toml(&args, &Paths::new(&args));
        assert!(!text.contains('@'), "{text}");
        let config: CollectorConfig = toml_config(&text);
        config.validate().unwrap();
        assert!(config.security.require_tls_beyond_loopback);
        assert!(!config.broker.embedded);
        let enrolment = config.enrolment.unwrap();
        assert_eq!(enrolment.broker_urls, ["mqtts://pantau.kantor.lan:8883"]);
        assert_eq!(enrolment.ca_key_file, etc.path().join("ca/ca.key"));
        assert_eq!(
            config.api.users_file.unwrap(),
            Path::new("/var/lib/pantau/collector/api-users")
        );
        let mut config: CollectorConfig = toml_config(&text);
        config.http.tls_cert_file = None;
        let error = config.validate().unwrap_err().to_string();
        assert!(error.contains("TLS is required beyond loopback"), "{error}");
    }

    #[test]
    fn an_address_alone_names_the_broker_and_ipv6_is_bracketed() {
        let args = args(&["--address", "fd00::10", "--mqtts-port", "18883"]);
        let text = collector_toml(&args, &Paths::new(&args));
        assert!(
            text.contains(r#"broker_urls = ["mqtts://[fd00::10]:18883"]"#),
            "{text}"
        );
        let conf = mosquitto_conf(&args, &Paths::new(&args));
        assert!(conf.contains("listener 1883 127.0.0.1\n"), "{conf}");
        assert!(conf.contains("listener 18883\n"), "{conf}");
        assert!(conf.contains("require_certificate false\n"), "{conf}");
        let with_certificates = self::args(&["--address", "10.0.0.5", "--client-certificates"]);
        let conf = mosquitto_conf(&with_certificates, &Paths::new(&with_certificates));
        assert!(conf.contains("require_certificate true\n"), "{conf}");
        let text = collector_toml(&with_certificates, &Paths::new(&with_certificates));
        assert!(text.contains("client_certificates = true\n"), "{text}");
        assert!(!conf.contains('@'), "{conf}");
    }

    fn toml_config(text: &str) -> CollectorConfig {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("collector.toml");
        std::fs::write(&file, text).unwrap();
        pantau_runtime::config::load(Some(&file), &[]).unwrap()
    }
}
