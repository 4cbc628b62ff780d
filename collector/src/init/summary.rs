//! What `init` tells the admin at the end: every file and its owner, the URLs, the admin's
//! login (a random password shown this once), and the CA fingerprint to compare on devices.

use std::net::IpAddr;
use std::path::Path;

use super::{InitArgs, Paths, certificate_names, first_host, mosquitto_cert_files};
use crate::pki;

pub(super) fn summary(
    args: &InitArgs,
    paths: &Paths,
    ca: &pki::Ca,
    admin_password: &str,
    notes: &[String],
    started: Option<String>,
) -> String {
    let host = first_host(args).unwrap_or_default();
    let (mosquitto_ca, mosquitto_cert, mosquitto_key) = mosquitto_cert_files(&args.mosquitto_dir);
    let service = &args.service_user;
    let group = &args.mosquitto_group;
    let files: [(&Path, String, &str); 18] = [
        (
            &paths.config,
            format!("root:{service} 0640"),
            "the collector's config",
        ),
        (
            &paths.env,
            "root:root 0600".into(),
            "the collector's broker password",
        ),
        (
            &paths.master_key,
            format!("root:{service} 0640"),
            "command master key",
        ),
        (
            &paths.api_tokens,
            format!("root:{service} 0640"),
            "operator token (Alertmanager, scripts)",
        ),
        (
            &paths.metrics_tokens,
            format!("root:{service} 0640"),
            "Prometheus's /metrics token",
        ),
        (
            &paths.ca_cert,
            "root:root 0644".into(),
            "the office CA certificate",
        ),
        (
            &paths.ca_key,
            "root:root 0600".into(),
            "the office CA key (root only)",
        ),
        (&paths.cert, "root:root 0644".into(), "HTTPS certificate"),
        (&paths.key, format!("root:{service} 0640"), "HTTPS key"),
        (
            &paths.bundle_dir,
            "root:root 0700".into(),
            "agent enrolment bundles",
        ),
        (
            &paths.users,
            format!("{service}:{service} 0600"),
            "console/API users",
        ),
        (
            &paths.mosquitto_conf,
            "root:root 0644".into(),
            "Mosquitto listeners",
        ),
        (
            &paths.mosquitto_passwd,
            format!("root:{group} 0640"),
            "broker logins",
        ),
        (
            &paths.mosquitto_acl,
            "root:root 0644".into(),
            "broker topic rules",
        ),
        (
            &mosquitto_ca,
            "root:root 0644".into(),
            "CA copy for Mosquitto",
        ),
        (
            &mosquitto_cert,
            "root:root 0644".into(),
            "broker certificate",
        ),
        (&mosquitto_key, format!("root:{group} 0640"), "broker key"),
        (
            &args.state_dir,
            format!("{service}:{service} 0750"),
            "storage.dir",
        ),
    ];
    let mut out = String::from("Pantau collector set up. Files:\n");
    for (file, owner, what) in files {
        out.push_str(&format!("  {:<48} {owner:<22} {what}\n", file.display()));
    }
    for note in notes {
        out.push_str(&format!("  ({note})\n"));
    }
    let (names, addresses) = certificate_names(args);
    let sans: Vec<String> = names
        .iter()
        .cloned()
        .chain(addresses.iter().map(IpAddr::to_string))
        .collect();
    out.push_str(&format!(
        "\nCertificate names: {}\nConsole: https://{host}:{}/console/\nAgents' broker: \
         mqtts://{host}:{} (Mosquitto; the collector uses mqtt://127.0.0.1:{} locally)\n",
        sans.join(", "),
        args.http_listen.port(),
        args.mqtts_port,
        args.mqtt_local_port,
    ));
    match args.admin_password_stdin {
        true => out.push_str(&format!(
            "\nConsole admin: {} (the password given on standard input)\n",
            args.admin
        )),
        false => out.push_str(&format!(
            "\nConsole admin: {}\nPassword:      {admin_password}\n\
             >>> Write this password down now: it is shown only this once and stored only as a \
             hash. <<<\n",
            args.admin
        )),
    }
    out.push_str(&format!(
        "\nOffice CA: {}\nSHA-256 fingerprint: {}\nInstall it as a trusted CA on every phone \
         and PC that opens the console (docs/install.md, \"Trusting the office CA\"); compare \
         the fingerprint before trusting it.\n",
        paths.ca_cert.display(),
        ca.fingerprint().unwrap_or_default()
    ));
    match started {
        Some(commands) => out.push_str(&format!("\nStarted: {commands}\n")),
        None => out.push_str(&format!(
            "\nNot started. To start: systemctl restart mosquitto && systemctl enable --now \
             pantau-collector (or run: pantau-collector --config {} with {}'s variables)\n",
            paths.config.display(),
            paths.env.display()
        )),
    }
    out.push_str(&format!(
        "Open {}/tcp (HTTPS) and {}/tcp (MQTT over TLS) in the firewall; the plain MQTT port \
         {} stays on loopback.\n",
        args.http_listen.port(),
        args.mqtts_port,
        args.mqtt_local_port
    ));
    out
}
