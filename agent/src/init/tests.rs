//! `init` per role into temp dirs: the written config passes the agent's own check, every
//! file has its mode, and a bad bundle or an existing config stops it before any write.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::*;
use crate::config::AgentConfig;

/// A throwaway CA and a client certificate it signed (openssl, valid for a century): the
/// config check loads them with rustls.
const CA_PEM: &str = include_str!("../../testdata/init/ca.pem");
const CLIENT_PEM: &str = include_str!("../../testdata/init/agent.pem");
const CLIENT_KEY: &str = include_str!("../../testdata/init/agent.key");

fn bundle(role: AgentRole) -> Bundle {
    Bundle {
        agent_id: "gor-link-01".into(),
        role,
        site: Some("gor-satria".into()),
        broker_urls: vec![
            "mqtts://collector.kominfo.lan:8883".into(),
            "mqtts://collector2.kominfo.lan:8883".into(),
        ],
        prefix: "pantau".into(),
        ca_pem: CA_PEM.into(),
        username: "gor-link-01".into(),
        password: "0123456789abcdef0123456789abcdef".into(),
        command_key: (role == AgentRole::Sound).then(|| "k".repeat(43)),
        client_cert_pem: None,
        client_key_pem: None,
    }
}

struct Host {
    _dir: tempfile::TempDir,
    layout: Layout,
    owners: Owners,
}

/// A temp etc dir and state dir, owned by whoever runs the test.
fn host() -> Host {
    let dir = tempfile::tempdir().unwrap();
    let meta = std::fs::metadata(dir.path()).unwrap();
    let me = (meta.uid(), meta.gid());
    let layout = Layout::new(
        &dir.path().join("etc/pantau"),
        &dir.path().join("var/agent"),
    );
    Host {
        _dir: dir,
        layout,
        owners: Owners::with_ids(me, me, "pantau"),
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn install_role(role: AgentRole) -> (Host, Result<Vec<String>, InitError>) {
    let host = host();
    let result = install(&bundle(role), &host.layout, &host.owners, false);
    (host, result)
}

fn load(host: &Host) -> crate::config::Resolved {
    AgentConfig::load(Some(&host.layout.config)).unwrap()
}

#[test]
fn every_role_writes_a_config_that_passes_the_check() {
    for role in [AgentRole::Server, AgentRole::Link, AgentRole::Device] {
        let (host, result) = install_role(role);
        let written = result.unwrap_or_else(|error| panic!("{role:?}: {error}"));
        assert!(written[0].contains("agent.toml"), "{written:?}");
        let resolved = load(&host);
        assert_eq!(resolved.id, "gor-link-01");
        let config = &resolved.config;
        assert_eq!(config.agent.site, "gor-satria");
        assert_eq!(config.agent.state_dir, host.layout.state_dir);
        assert_eq!(config.mqtt.username.as_deref(), Some("gor-link-01"));
        assert_eq!(
            config.mqtt.ca_file.as_deref(),
            Some(host.layout.ca.as_path())
        );
        assert!(
            config.mqtt.password.is_none(),
            "the password is in agent.env only"
        );
        assert_eq!(resolved.endpoints.len(), 2);
        assert!(resolved.endpoints.iter().all(|e| e.tls && e.port == 8883));
        assert!(
            config.host.is_some(),
            "{role:?}: host metrics for every role"
        );
        // Nothing that sends traffic anywhere until the admin writes it.
        assert!(
            config.probes.is_empty() && config.links.is_empty(),
            "{role:?}"
        );
        assert!(config.ups.is_empty() && config.snmp.is_empty(), "{role:?}");
        assert!(config.sound.is_none(), "{role:?}");
    }
}

#[test]
fn files_get_their_modes_and_the_env_file_holds_the_password() {
    let (host, result) = install_role(AgentRole::Server);
    result.unwrap();
    let layout = &host.layout;
    assert_eq!(mode(&layout.config), 0o640);
    assert_eq!(mode(&layout.env), 0o600);
    assert_eq!(mode(&layout.ca), 0o644);
    assert_eq!(mode(&layout.state_dir), 0o750);
    assert_eq!(
        std::fs::read_to_string(&layout.env).unwrap(),
        "PANTAU_MQTT__PASSWORD=0123456789abcdef0123456789abcdef\n"
    );
    assert_eq!(std::fs::read_to_string(&layout.ca).unwrap(), CA_PEM);
    let config = std::fs::read_to_string(&layout.config).unwrap();
    assert!(
        !config.contains("0123456789abcdef"),
        "no password in agent.toml"
    );
    assert!(
        !config.contains("{{"),
        "every placeholder filled:\n{config}"
    );
    assert!(!layout.client_cert.exists() && !layout.sound_key.exists());
    let leftovers: Vec<_> = std::fs::read_dir(layout.config.parent().unwrap())
        .unwrap()
        .map(|entry| entry.unwrap().file_name())
        .filter(|name| {
            name.to_string_lossy().contains("tmp") || name.to_string_lossy().ends_with(".new")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn client_certificates_are_written_and_configured() {
    let host = host();
    let mut with_cert = bundle(AgentRole::Server);
    with_cert.client_cert_pem = Some(CLIENT_PEM.into());
    with_cert.client_key_pem = Some(CLIENT_KEY.into());
    install(&with_cert, &host.layout, &host.owners, false).unwrap();
    assert_eq!(mode(&host.layout.client_cert), 0o644);
    assert_eq!(mode(&host.layout.client_key), 0o640);
    let config = load(&host).config;
    assert_eq!(
        config.mqtt.client_cert_file.as_deref(),
        Some(host.layout.client_cert.as_path())
    );
    assert_eq!(
        config.mqtt.client_key_file.as_deref(),
        Some(host.layout.client_key.as_path())
    );
}

#[cfg(feature = "sound")]
#[test]
fn a_sound_agent_gets_its_key_and_sound_section() {
    let (host, result) = install_role(AgentRole::Sound);
    result.unwrap();
    assert_eq!(
        std::fs::read_to_string(&host.layout.sound_key).unwrap(),
        format!("{}\n", "k".repeat(43))
    );
    assert_eq!(mode(&host.layout.sound_key), 0o640);
    let sound = load(&host).config.sound.unwrap();
    assert_eq!(sound.key_file, host.layout.sound_key);
}

#[cfg(not(feature = "sound"))]
#[test]
fn a_sound_bundle_without_the_sound_role_fails_the_check_and_writes_no_config() {
    let (host, result) = install_role(AgentRole::Sound);
    let error = result.unwrap_err().to_string();
    assert!(error.contains("sound"), "{error}");
    assert!(!host.layout.config.exists());
}

#[test]
fn an_existing_config_needs_force() {
    let (host, result) = install_role(AgentRole::Server);
    result.unwrap();
    let again = install(&bundle(AgentRole::Link), &host.layout, &host.owners, false);
    assert!(matches!(again, Err(InitError::Exists(_))));
    install(&bundle(AgentRole::Link), &host.layout, &host.owners, true).unwrap();
}

#[test]
fn a_damaged_bundle_is_named_before_anything_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gor-link-01.bundle");
    let mut line = bundle(AgentRole::Link).encode();
    line.truncate(line.len() / 2);
    std::fs::write(&file, &line).unwrap();
    let error = read_bundle(&file).unwrap_err().to_string();
    assert!(
        error.starts_with(&format!(
            "--bundle {}: the bundle is damaged",
            file.display()
        )),
        "{error}"
    );
    let missing = read_bundle(&dir.path().join("nope"))
        .unwrap_err()
        .to_string();
    assert!(missing.contains("No such file"), "{missing}");
}

#[test]
fn a_bundle_without_a_site_gets_the_default_and_a_note() {
    let host = host();
    let mut no_site = bundle(AgentRole::Server);
    no_site.site = None;
    install(&no_site, &host.layout, &host.owners, false).unwrap();
    assert_eq!(load(&host).config.agent.site, render::DEFAULT_SITE);
    let text = std::fs::read_to_string(&host.layout.config).unwrap();
    assert!(text.contains("set this host's site here"), "{text}");
}
