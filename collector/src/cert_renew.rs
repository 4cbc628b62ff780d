//! `pantau-collector cert renew`: a new server certificate from the office CA for the same
//! names, before the old one expires (the expiry metric and `PantauCertificateExpiresSoon`
//! say when). Run as root: only root reads the CA key. It writes the collector's copy and
//! Mosquitto's, keeping each file's owner and mode, then reloads both services, which pick
//! the new certificate up without dropping connections.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Subcommand;

use crate::config::CollectorConfig;
use crate::init::{Ownership, SERVER_CERT_DAYS, install, mosquitto_cert_files};
use crate::pki;

#[derive(Debug, Subcommand)]
pub enum CertAction {
    /// Issue a new HTTPS/MQTT server certificate for the same names when the current one
    /// expires within --within-days (or with --force), and reload the services.
    Renew {
        /// The collector's config (http.tls_cert_file, [enrolment] ca_file and ca_key_file).
        #[arg(
            long,
            value_name = "FILE",
            default_value = "/etc/pantau/collector.toml"
        )]
        config: PathBuf,
        #[arg(long, value_name = "N", default_value_t = 45)]
        within_days: u32,
        /// Renew whatever the expiry.
        #[arg(long)]
        force: bool,
        /// Do not reload mosquitto and pantau-collector.
        #[arg(long)]
        no_reload: bool,
    },
}

const RELOAD_COMMANDS: [&[&str]; 2] = [
    &["systemctl", "reload", "mosquitto"],
    &["systemctl", "reload", "pantau-collector"],
];

pub fn run(action: CertAction) -> Result<String, String> {
    let CertAction::Renew {
        config,
        within_days,
        force,
        no_reload,
    } = action;
    let config = CollectorConfig::parse_only(Some(&config))
        .map_err(|error| format!("invalid config: {error}"))?;
    let (Some(cert_file), Some(key_file)) = (&config.http.tls_cert_file, &config.http.tls_key_file)
    else {
        return Err(
            "http.tls_cert_file and http.tls_key_file are not set: no HTTPS certificate \
                    to renew"
                .to_owned(),
        );
    };
    let enrolment = config.enrolment.as_ref().ok_or(
        "the config has no [enrolment] section naming the CA (ca_file, ca_key_file); \
         `pantau-collector init` writes it",
    )?;
    let current = std::fs::read_to_string(cert_file)
        .map_err(|error| format!("http.tls_cert_file: '{}' {error}", cert_file.display()))?;
    let info = pki::inspect(&current)
        .map_err(|error| format!("http.tls_cert_file: '{}' {error}", cert_file.display()))?;
    let now = jiff::Timestamp::now().as_second();
    let days_left = (info.not_after - now).div_euclid(86_400);
    if !force && days_left > i64::from(within_days) {
        return Ok(format!(
            "not renewed: {} expires in {days_left} days, more than --within-days {within_days}",
            cert_file.display()
        ));
    }
    let ca = pki::Ca::load(&enrolment.ca_file, &enrolment.ca_key_file)
        .map_err(|error| format!("the office CA ([enrolment] ca_file, ca_key_file): {error}"))?;
    let (cert_pem, key_pem) =
        pki::issue_server(&ca, &info.dns_names, &info.ip_addresses, SERVER_CERT_DAYS)
            .map_err(|error| error.to_string())?;
    let mut written = Vec::new();
    let mosquitto_dir = enrolment
        .mosquitto_password_file
        .parent()
        .unwrap_or(Path::new("/etc/mosquitto"));
    let (_, broker_cert, broker_key) = mosquitto_cert_files(mosquitto_dir);
    // The key before the certificate: a reload in between fails on the mismatch and keeps
    // the old pair, where the other order could not be told from a good pair.
    for (path, text, required) in [
        (key_file.as_path(), &key_pem, true),
        (cert_file.as_path(), &cert_pem, true),
        (broker_key.as_path(), &key_pem, false),
        (broker_cert.as_path(), &cert_pem, false),
    ] {
        let Some(ownership) = ownership_of(path) else {
            match required {
                true => return Err(format!("'{}' does not exist", path.display())),
                // The broker may use a certificate of the office's own.
                false => continue,
            }
        };
        install(path, text.as_bytes(), ownership).map_err(|error| error.to_string())?;
        written.push(path.display().to_string());
    }
    let new = pki::inspect(&cert_pem).map_err(|error| error.to_string())?;
    let names: Vec<String> = info
        .dns_names
        .iter()
        .cloned()
        .chain(info.ip_addresses.iter().map(ToString::to_string))
        .collect();
    let mut out = format!(
        "renewed the server certificate for {} (serial {}, valid until {}): wrote {}",
        names.join(", "),
        new.serial,
        jiff::Timestamp::from_second(new.not_after)
            .map(|time| time.to_string())
            .unwrap_or_default(),
        written.join(", ")
    );
    if no_reload || !Path::new("/run/systemd/system").exists() {
        out.push_str(
            "\nnot reloaded: run `systemctl reload mosquitto` and `systemctl reload \
             pantau-collector` (SIGHUP)",
        );
        return Ok(out);
    }
    for command in RELOAD_COMMANDS {
        let status = Command::new(command[0])
            .args(&command[1..])
            .status()
            .map_err(|error| format!("{}: {error}", command.join(" ")))?;
        if !status.success() {
            return Err(format!("{out}\n`{}` failed ({status})", command.join(" ")));
        }
        out.push_str(&format!("\nran {}", command.join(" ")));
    }
    Ok(out)
}

fn ownership_of(path: &Path) -> Option<Ownership> {
    let metadata = std::fs::metadata(path).ok()?;
    Some(Ownership {
        uid: metadata.uid(),
        gid: metadata.gid(),
        mode: metadata.mode() & 0o7777,
    })
}
