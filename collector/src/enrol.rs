//! `pantau-collector agent add|remove|list`: enrolling an agent with the LAN broker is one
//! command here (a login in Mosquitto's password file, a reload, a bundle file) and one on the
//! agent's host (`pantau-agent init --bundle FILE`); revoking is `agent remove`.
//!
//! Everything comes from the collector's `[enrolment]` section (`config.rs`). The bundle
//! (`pantau_protocol::Bundle`) is a secret: it holds the agent's broker password and, for a
//! sound agent, its own command key, so it is written root-only (0600 in a 0700 dir).

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Subcommand;
use pantau_protocol::{AgentRole, Bundle};

use crate::broker_logins::{self, LoginsError};
use crate::config::{CollectorConfig, EnrolmentConfig};

/// The collector's config file as the packages install it.
const DEFAULT_CONFIG: &str = "/etc/pantau/collector.toml";

/// A client certificate's validity: Apple's limit for TLS certificates (398 days) less a day,
/// which also suits a yearly renewal.
const CLIENT_CERT_DAYS: u32 = 397;

/// `pantau-collector agent ...`.
#[derive(Debug, Subcommand)]
pub enum AgentAction {
    /// Enrol agent ID: a broker login (Mosquitto reloads), and a bundle file holding
    /// everything its host needs (`pantau-agent init --bundle FILE` there).
    Add {
        id: String,
        /// What the agent does: server, link, device or sound.
        #[arg(long)]
        role: AgentRole,
        /// The agent's site (agent.site), e.g. gor-satria; without it `pantau-agent init`
        /// writes site "default".
        #[arg(long)]
        site: Option<String>,
        /// The collector's config, whose [enrolment] section says where things go.
        #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Issue new credentials for an agent that has a login already (the old ones stop
        /// working at the reload).
        #[arg(long)]
        replace: bool,
    },
    /// Revoke agent ID: remove its login, reload Mosquitto (which ends its connection) and
    /// delete its bundle.
    Remove {
        id: String,
        #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// List the logins in the broker's password file, marking those with a bundle.
    List {
        #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
}

/// Why an agent cannot be enrolled or revoked; never shows a password or key.
#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    #[error("invalid config {path}: {source}")]
    Config {
        path: String,
        source: pantau_runtime::config::ConfigError,
    },
    #[error(
        "{0} has no [enrolment] section (`pantau-collector init` writes one; see docs/enrolment.md)"
    )]
    NoEnrolment(String),
    #[error("agent id '{id}': {why}")]
    BadId { id: String, why: String },
    #[error("--site '{site}': {why}")]
    BadSite { site: String, why: String },
    #[error(
        "agent '{id}' already has a login in {file}; give --replace to issue new credentials \
         (its old ones stop working)"
    )]
    Exists { id: String, file: String },
    #[error("agent '{id}' has neither a login in {file} nor a bundle in {dir}")]
    Unknown {
        id: String,
        file: String,
        dir: String,
    },
    #[error(transparent)]
    Logins(#[from] LoginsError),
    #[error(
        "a sound agent needs the master command key: set announcements.key_file in {0} \
         (the collector signs announcements with it)"
    )]
    NoMasterKey(String),
    #[error("announcements.key_file: '{path}' {why}")]
    MasterKey { path: String, why: String },
    #[error("enrolment.ca_file: cannot read '{path}': {why}")]
    Ca { path: String, why: String },
    #[error("the bundle would be refused by `pantau-agent init`: {0}")]
    Bundle(#[from] pantau_protocol::BundleError),
    #[error("client certificate: {0}")]
    ClientCert(String),
    #[error("cannot write the bundle {path}: {source}")]
    WriteBundle {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot delete the bundle {path}: {source}")]
    DeleteBundle {
        path: String,
        source: std::io::Error,
    },
    #[error("{done}, but {pending} until Mosquitto reloads: `{command}` {why}")]
    Reload {
        done: String,
        pending: &'static str,
        command: String,
        why: String,
    },
}

/// Runs `agent add|remove|list`; the text to print on success.
pub fn run(action: AgentAction) -> Result<String, EnrolError> {
    match action {
        AgentAction::Add {
            id,
            role,
            site,
            config,
            replace,
        } => {
            let (collector, enrolment) = load(&config)?;
            let master_key = match role {
                AgentRole::Sound => Some(master_key(&collector, &config)?),
                _ => None,
            };
            let request = AddRequest {
                id,
                role,
                site,
                replace,
                prefix: collector.mqtt.prefix.clone(),
                master_key,
            };
            add(&enrolment, &request).map(|added| added.report())
        }
        AgentAction::Remove { id, config } => remove(&load(&config)?.1, &id),
        AgentAction::List { config } => list(&load(&config)?.1),
    }
}

fn load(path: &Path) -> Result<(CollectorConfig, EnrolmentConfig), EnrolError> {
    let config =
        CollectorConfig::load_unopened(Some(path)).map_err(|source| EnrolError::Config {
            path: path.display().to_string(),
            source,
        })?;
    let enrolment = config
        .enrolment
        .clone()
        .ok_or_else(|| EnrolError::NoEnrolment(path.display().to_string()))?;
    Ok((config, enrolment))
}

fn master_key(config: &CollectorConfig, path: &Path) -> Result<Vec<u8>, EnrolError> {
    let key_file = config
        .announcements
        .key_file
        .as_ref()
        .ok_or_else(|| EnrolError::NoMasterKey(path.display().to_string()))?;
    pantau_protocol::read_key(key_file).map_err(|why| EnrolError::MasterKey {
        path: key_file.display().to_string(),
        why,
    })
}

/// What `agent add` was asked for, with what it needs from the rest of the config.
#[derive(Debug)]
pub struct AddRequest {
    pub id: String,
    pub role: AgentRole,
    pub site: Option<String>,
    pub replace: bool,
    /// `mqtt.prefix`.
    pub prefix: String,
    /// The master key (`announcements.key_file`), for a sound agent.
    pub master_key: Option<Vec<u8>>,
}

/// An enrolled agent.
#[derive(Debug)]
pub struct Added {
    pub id: String,
    pub bundle_file: PathBuf,
    pub line: String,
    pub password_file: PathBuf,
}

impl Added {
    /// What the admin reads: the bundle is a secret, where it is, and the next step.
    pub fn report(&self) -> String {
        let Added {
            id,
            bundle_file,
            line,
            password_file,
        } = self;
        let file = bundle_file.display();
        format!(
            "enrolled agent '{id}': its login is in {} and Mosquitto has reloaded.\n\
             \n\
             The bundle is a SECRET: it holds the agent's broker password (and a sound agent's \
             command key).\nCopy it to the agent's host over SSH only, and delete the copy there \
             after init.\n\
             \n\
             bundle file: {file} (mode 0600, root only)\n\
             bundle line:\n{line}\n\
             \n\
             Next, as root on the agent's host:\n  \
             pantau-agent init --bundle {id}.bundle     (the file copied over, e.g. with scp)\n\
             or paste the line instead (a leading space keeps it out of the shell's history):\n   \
             echo 'LINE' | pantau-agent init --bundle -",
            password_file.display()
        )
    }
}

/// Enrols `request.id`: login, bundle file, reload. A failed reload is an error that says
/// the login and bundle are written but not active yet.
pub fn add(enrolment: &EnrolmentConfig, request: &AddRequest) -> Result<Added, EnrolError> {
    let id = &request.id;
    pantau_protocol::validate_id(id).map_err(|why| EnrolError::BadId {
        id: id.clone(),
        why,
    })?;
    if let Some(site) = &request.site {
        pantau_protocol::validate_id(site).map_err(|why| EnrolError::BadSite {
            site: site.clone(),
            why,
        })?;
    }
    let password_file = &enrolment.mosquitto_password_file;
    if !request.replace && broker_logins::list_logins(password_file)?.contains(id) {
        return Err(EnrolError::Exists {
            id: id.clone(),
            file: password_file.display().to_string(),
        });
    }
    let command_key = request
        .master_key
        .as_ref()
        .map(|master| pantau_protocol::derive_agent_key(master, id));
    let ca_pem = std::fs::read_to_string(&enrolment.ca_file).map_err(|error| EnrolError::Ca {
        path: enrolment.ca_file.display().to_string(),
        why: error.to_string(),
    })?;
    let (client_cert_pem, client_key_pem) = match enrolment.client_certificates {
        true => {
            let (cert, key) = client_certificate(enrolment, id)?;
            (Some(cert), Some(key))
        }
        false => (None, None),
    };
    let password = broker_logins::random_password();
    let bundle = Bundle {
        agent_id: id.clone(),
        role: request.role,
        site: request.site.clone(),
        broker_urls: enrolment.broker_urls.clone(),
        prefix: request.prefix.clone(),
        ca_pem,
        username: id.clone(),
        password: password.clone(),
        command_key,
        client_cert_pem,
        client_key_pem,
    };
    let line = bundle.encode();
    // Checked before anything is written: `agent init` must accept what is handed out.
    Bundle::decode(&line)?;
    broker_logins::set_login(password_file, id, &password)?;
    let bundle_file = bundle_path(enrolment, id);
    write_bundle(&enrolment.bundle_dir, &bundle_file, &line)?;
    let added = Added {
        id: id.clone(),
        bundle_file,
        line,
        password_file: password_file.clone(),
    };
    reload(enrolment).map_err(|(command, why)| EnrolError::Reload {
        done: format!(
            "agent '{id}' has a login in {} and its bundle is {}",
            password_file.display(),
            added.bundle_file.display()
        ),
        pending: "it cannot log in",
        command,
        why,
    })?;
    Ok(added)
}

/// Revokes `id`: its login goes, Mosquitto reloads (and so drops its connection), its
/// bundle is deleted.
pub fn remove(enrolment: &EnrolmentConfig, id: &str) -> Result<String, EnrolError> {
    pantau_protocol::validate_id(id).map_err(|why| EnrolError::BadId {
        id: id.to_owned(),
        why,
    })?;
    let password_file = &enrolment.mosquitto_password_file;
    let bundle_file = bundle_path(enrolment, id);
    let had_login = broker_logins::list_logins(password_file)?
        .iter()
        .any(|login| login == id);
    let had_bundle = bundle_file.exists();
    if !had_login && !had_bundle {
        return Err(EnrolError::Unknown {
            id: id.to_owned(),
            file: password_file.display().to_string(),
            dir: enrolment.bundle_dir.display().to_string(),
        });
    }
    // The login first: once it is gone the bundle is worthless, whatever fails next.
    if had_login {
        broker_logins::remove_login(password_file, id)?;
    }
    if had_bundle {
        std::fs::remove_file(&bundle_file).map_err(|source| EnrolError::DeleteBundle {
            path: bundle_file.display().to_string(),
            source,
        })?;
    }
    if !had_login {
        return Ok(format!(
            "agent '{id}' had no login in {}; deleted its bundle {}",
            password_file.display(),
            bundle_file.display()
        ));
    }
    reload(enrolment).map_err(|(command, why)| EnrolError::Reload {
        done: format!(
            "removed the login of agent '{id}' from {}",
            password_file.display()
        ),
        pending: "a connected agent stays connected",
        command,
        why,
    })?;
    Ok(format!(
        "revoked agent '{id}': its login is gone from {} and Mosquitto has reloaded, which \
         ended its live connection; it cannot log in again.{}",
        password_file.display(),
        match had_bundle {
            true => format!(" Deleted its bundle {}.", bundle_file.display()),
            false => String::new(),
        }
    ))
}

/// The logins of the password file, one a line, with the bundle of those that have one.
pub fn list(enrolment: &EnrolmentConfig) -> Result<String, EnrolError> {
    let password_file = &enrolment.mosquitto_password_file;
    let mut lines = vec![format!("logins in {}:", password_file.display())];
    for login in broker_logins::list_logins(password_file)? {
        let bundle = bundle_path(enrolment, &login);
        lines.push(match bundle.exists() {
            true => format!("  {login}  bundle {}", bundle.display()),
            false => format!("  {login}"),
        });
    }
    lines.push(
        "(a login without a bundle is the collector's own, a room sensor's, an agent enrolled \
         by hand, or one whose bundle was deleted after use)"
            .to_owned(),
    );
    Ok(lines.join("\n"))
}

fn bundle_path(enrolment: &EnrolmentConfig, id: &str) -> PathBuf {
    enrolment.bundle_dir.join(format!("{id}.bundle"))
}

/// The bundle, root-only: the dir is made (or made again) 0700, the file written 0600
/// through a temporary file, so no other user can read it at any moment.
fn write_bundle(dir: &Path, path: &Path, line: &str) -> Result<(), EnrolError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let failed = |source| EnrolError::WriteBundle {
        path: path.display().to_string(),
        source,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(failed)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(failed)?;
    crate::commands::write_secret(path, &format!("{line}\n")).map_err(failed)
}

/// Runs `enrolment.mosquitto_reload_command`; on failure the command and why.
fn reload(enrolment: &EnrolmentConfig) -> Result<(), (String, String)> {
    let argv = &enrolment.mosquitto_reload_command;
    let shown = argv.join(" ");
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| (shown.clone(), "is empty".to_owned()))?;
    match Command::new(program).args(args).output() {
        Ok(output) if output.status.success() => Ok(()),
        Ok(output) => Err((
            shown,
            format!(
                "failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        )),
        Err(error) => Err((shown, format!("cannot run: {error}"))),
    }
}

/// A client certificate and key (PEM) for `id` (its CN, which Mosquitto's
/// `use_identity_as_username` would take as the login), signed by the office CA.
fn client_certificate(
    enrolment: &EnrolmentConfig,
    id: &str,
) -> Result<(String, String), EnrolError> {
    let ca = crate::pki::Ca::load(&enrolment.ca_file, &enrolment.ca_key_file).map_err(|error| {
        EnrolError::ClientCert(format!(
            "enrolment.ca_file/ca_key_file ('{}', '{}'): {error}",
            enrolment.ca_file.display(),
            enrolment.ca_key_file.display()
        ))
    })?;
    crate::pki::issue_client(&ca, id, CLIENT_CERT_DAYS)
        .map_err(|error| EnrolError::ClientCert(error.to_string()))
}

#[cfg(test)]
mod tests;
