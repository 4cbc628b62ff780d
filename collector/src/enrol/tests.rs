//! `agent add|remove|list` on temp files, with `true`/`false` as the reload command.

use std::os::unix::fs::PermissionsExt;

use super::*;

const CA_PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

fn enrolment_in(dir: &Path, reload: &[&str]) -> EnrolmentConfig {
    std::fs::write(dir.join("ca.pem"), CA_PEM).unwrap();
    EnrolmentConfig {
        broker_urls: vec!["mqtts://collector.kominfo.lan:8883".into()],
        ca_file: dir.join("ca.pem"),
        ca_key_file: dir.join("ca.key"),
        client_certificates: false,
        mosquitto_password_file: dir.join("passwd"),
        mosquitto_reload_command: reload.iter().map(|s| (*s).to_owned()).collect(),
        bundle_dir: dir.join("agents"),
    }
}

fn request(id: &str, role: AgentRole) -> AddRequest {
    AddRequest {
        id: id.into(),
        role,
        site: Some("gor-satria".into()),
        replace: false,
        prefix: "pantau".into(),
        master_key: None,
    }
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn add_writes_a_login_and_a_root_only_bundle_the_agent_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let enrolment = enrolment_in(dir.path(), &["true"]);
    let added = add(&enrolment, &request("gor-link-01", AgentRole::Link)).unwrap();
    assert_eq!(
        broker_logins::list_logins(&enrolment.mosquitto_password_file).unwrap(),
        ["gor-link-01"]
    );
    assert_eq!(
        added.bundle_file,
        dir.path().join("agents/gor-link-01.bundle")
    );
    assert_eq!(mode(&added.bundle_file), 0o600);
    assert_eq!(mode(&enrolment.bundle_dir), 0o700);
    let line = std::fs::read_to_string(&added.bundle_file).unwrap();
    let bundle = Bundle::decode(&line).unwrap();
    assert_eq!(bundle.agent_id, "gor-link-01");
    assert_eq!(bundle.username, "gor-link-01");
    assert_eq!(bundle.site.as_deref(), Some("gor-satria"));
    assert_eq!(bundle.ca_pem, CA_PEM);
    assert_eq!(bundle.command_key, None);
    let report = added.report();
    assert!(report.contains("SECRET"), "{report}");
    assert!(report.contains(line.trim()), "{report}");
    assert!(report.contains("pantau-agent init --bundle"), "{report}");
    assert!(!report.contains(&bundle.password) || line.contains(&bundle.password));
}

#[test]
fn an_existing_login_needs_replace_and_then_gets_a_new_password() {
    let dir = tempfile::tempdir().unwrap();
    let enrolment = enrolment_in(dir.path(), &["true"]);
    let first = add(&enrolment, &request("dc-srv-01", AgentRole::Server)).unwrap();
    let error = add(&enrolment, &request("dc-srv-01", AgentRole::Server))
        .unwrap_err()
        .to_string();
    assert!(error.contains("--replace"), "{error}");
    let mut again = request("dc-srv-01", AgentRole::Server);
    again.replace = true;
    let second = add(&enrolment, &again).unwrap();
    let password = |line: &str| Bundle::decode(line).unwrap().password;
    assert_ne!(password(&first.line), password(&second.line));
    assert_eq!(
        broker_logins::list_logins(&enrolment.mosquitto_password_file).unwrap(),
        ["dc-srv-01"]
    );
}

#[test]
fn a_sound_agent_gets_its_derived_key() {
    let dir = tempfile::tempdir().unwrap();
    let enrolment = enrolment_in(dir.path(), &["true"]);
    let mut sound = request("office-sound", AgentRole::Sound);
    sound.master_key = Some(b"the office master key 0001".to_vec());
    let added = add(&enrolment, &sound).unwrap();
    let bundle = Bundle::decode(&added.line).unwrap();
    assert_eq!(
        bundle.command_key.as_deref(),
        Some(
            pantau_protocol::derive_agent_key(b"the office master key 0001", "office-sound")
                .as_str()
        )
    );
}

#[test]
fn a_sound_agent_without_a_master_key_is_refused_naming_the_setting() {
    let config = CollectorConfig::default();
    let error = master_key(&config, Path::new("/etc/pantau/collector.toml"))
        .unwrap_err()
        .to_string();
    assert!(error.contains("announcements.key_file"), "{error}");
}

#[test]
fn bad_ids_are_named_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let enrolment = enrolment_in(dir.path(), &["true"]);
    let error = add(&enrolment, &request("a/b", AgentRole::Server))
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("agent id 'a/b':"), "{error}");
    assert!(!enrolment.mosquitto_password_file.exists());
    assert!(!enrolment.bundle_dir.exists());
}

#[test]
fn a_failed_reload_says_the_login_is_not_active_yet() {
    let dir = tempfile::tempdir().unwrap();
    let enrolment = enrolment_in(dir.path(), &["false"]);
    let error = add(&enrolment, &request("dc-srv-01", AgentRole::Server))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("cannot log in until Mosquitto reloads"),
        "{error}"
    );
    assert!(error.contains("`false` failed"), "{error}");
    let missing = enrolment_in(dir.path(), &["/nonexistent/reload"]);
    let error = remove(&missing, "dc-srv-01").unwrap_err().to_string();
    assert!(
        error.contains("a connected agent stays connected until Mosquitto reloads"),
        "{error}"
    );
    assert!(error.contains("cannot run"), "{error}");
}

#[test]
fn remove_revokes_the_login_and_deletes_the_bundle_keeping_other_logins() {
    let dir = tempfile::tempdir().unwrap();
    let enrolment = enrolment_in(dir.path(), &["true"]);
    let file = &enrolment.mosquitto_password_file;
    broker_logins::set_login(file, "pantau-collector", "collector-password-0123").unwrap();
    let added = add(&enrolment, &request("gor-link-01", AgentRole::Link)).unwrap();
    add(&enrolment, &request("dc-srv-01", AgentRole::Server)).unwrap();
    let listed = list(&enrolment).unwrap();
    assert!(listed.contains("  pantau-collector\n"), "{listed}");
    assert!(
        listed.contains(&format!(
            "  gor-link-01  bundle {}",
            added.bundle_file.display()
        )),
        "{listed}"
    );
    let done = remove(&enrolment, "gor-link-01").unwrap();
    assert!(done.contains("ended its live connection"), "{done}");
    assert!(!added.bundle_file.exists());
    assert_eq!(
        broker_logins::list_logins(file).unwrap(),
        ["pantau-collector", "dc-srv-01"]
    );
    let error = remove(&enrolment, "gor-link-01").unwrap_err().to_string();
    assert!(error.contains("neither a login"), "{error}");
}

#[test]
fn with_client_certificates_the_bundle_holds_one_for_the_agent_signed_by_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let mut enrolment = enrolment_in(dir.path(), &["true"]);
    let ca = crate::pki::new_ca("Pantau test CA").unwrap();
    std::fs::write(&enrolment.ca_file, &ca.cert_pem).unwrap();
    std::fs::write(&enrolment.ca_key_file, &ca.key_pem).unwrap();
    enrolment.client_certificates = true;
    let added = add(&enrolment, &request("gor-link-01", AgentRole::Link)).unwrap();
    let bundle = Bundle::decode(&added.line).unwrap();
    let cert = bundle.client_cert_pem.unwrap();
    assert!(bundle.client_key_pem.unwrap().contains("PRIVATE KEY"));
    let der = x509_parser::pem::parse_x509_pem(cert.as_bytes())
        .unwrap()
        .1
        .contents;
    let (_, x509) = x509_parser::parse_x509_certificate(&der).unwrap();
    assert_eq!(x509.subject().to_string(), "CN=gor-link-01");
    let days =
        (x509.validity().not_after.timestamp() - x509.validity().not_before.timestamp()) / 86_400;
    assert!((396..=398).contains(&days), "{days} days");

    std::fs::remove_file(&enrolment.ca_key_file).unwrap();
    let mut again = request("gor-link-02", AgentRole::Link);
    again.replace = true;
    let error = add(&enrolment, &again).unwrap_err().to_string();
    assert!(error.contains("enrolment.ca_file/ca_key_file"), "{error}");
}
