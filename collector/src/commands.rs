//! The collector's subcommands, run instead of the service:
//!
//! - `pantau-collector user add|passwd|remove`: edits `api.users_file` (default
//!   `/var/lib/pantau/collector/api-users`). The password is read from the first line of standard input, so
//!   it never shows in the process list or the shell history:
//!   `printf '%s\n' "$PASSWORD" | pantau-collector user add rina --role operator`.
//! - `pantau-collector login-limits --config CONFIG --admin NAME [--clear ...]`: who the
//!   running collector's login limiter holds back, through its API (`login_limits_cli.rs`).
//! - `pantau-collector backup --config CONFIG FILE`: a consistent copy of the SQLite database
//!   in the `[storage] dir` of the collector's config, safe while the collector runs.
//! - `pantau-collector key derive AGENT_ID --key-file MASTER [--output FILE]`: a sound agent's
//!   own command key (its `sound.key_file`), derived from the master key
//!   (`announcements.key_file`); written mode 0600 to FILE, or to standard output.
//! - `pantau-collector init`: the secure first run of an installed host (`init/`).
//! - `pantau-collector cert renew`: a new server certificate from the office CA
//!   (`cert_renew.rs`).
//! - `pantau-collector agent add|remove|list`: enrol and revoke agents with the LAN broker
//!   (`enrol.rs`).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use crate::api::accounts::{Accounts, Role};
use crate::config::CollectorConfig;

// The collector's subcommands. A plain comment: clap would make a doc comment the program's
// `about`, replacing the one `main` gives.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage the people who may log in to the API (api.users_file).
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// List the addresses and user names the running collector's login limiter holds back,
    /// or with --clear let them in again (an admin's password on standard input).
    LoginLimits(crate::login_limits_cli::LoginLimitsArgs),
    /// Copy the announcement database (history, audit log, schedules) to FILE, consistently,
    /// while the collector runs; FILE must not exist. The database is found through the
    /// collector's config ([storage] dir, PANTAU_STORAGE__DIR). Restore by stopping the
    /// collector and putting FILE in storage.dir as pantau.sqlite.
    Backup {
        file: PathBuf,
        /// The collector's config file (the one it runs with).
        #[arg(long, value_name = "CONFIG")]
        config: Option<PathBuf>,
    },
    /// Command keys: derive a sound agent's own key from the master key.
    Key {
        #[command(subcommand)]
        action: KeyAction,
    },
    /// Enrol (add), revoke (remove) and list agents of the LAN broker ([enrolment] section).
    Agent {
        #[command(subcommand)]
        action: crate::enrol::AgentAction,
    },
    /// First run on an installed host (as root): the office CA, HTTPS and MQTT-over-TLS
    /// certificates, keys, tokens, the first console admin and Mosquitto's listeners.
    Init(Box<crate::init::InitArgs>),
    /// The HTTPS/MQTT server certificate.
    Cert {
        #[command(subcommand)]
        action: crate::cert_renew::CertAction,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyAction {
    /// Print (or write to --output, mode 0600) the command key of agent AGENT_ID, derived
    /// from the master key; install it as that agent's sound.key_file.
    Derive {
        agent_id: String,
        /// The master key: the collector's announcements.key_file.
        #[arg(long, value_name = "MASTER")]
        key_file: PathBuf,
        /// Write the key here (replacing it, mode 0600) instead of to standard output.
        #[arg(long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserAction {
    /// Add a user; the password is the first line of standard input.
    Add {
        name: String,
        #[arg(long, value_enum, default_value_t = Role::Viewer)]
        role: Role,
        #[arg(long, default_value = DEFAULT_FILE)]
        file: PathBuf,
    },
    /// Set a user's password (read from standard input), and role if given.
    Passwd {
        name: String,
        #[arg(long, value_enum)]
        role: Option<Role>,
        #[arg(long, default_value = DEFAULT_FILE)]
        file: PathBuf,
    },
    /// Remove a user.
    Remove {
        name: String,
        #[arg(long, default_value = DEFAULT_FILE)]
        file: PathBuf,
    },
}

/// Where the packages keep the users file: in the collector's state directory, because the
/// collector rewrites it itself (console Users page) by temp file and rename.
const DEFAULT_FILE: &str = "/var/lib/pantau/collector/api-users";

/// Runs a subcommand; prints what it did or why not.
pub fn run(command: Command) -> ExitCode {
    let (name, result) = match command {
        Command::User { action } => ("user", user(action)),
        Command::Backup { file, config } => ("backup", backup(&file, config.as_deref())),
        Command::LoginLimits(args) => ("login-limits", crate::login_limits_cli::run(args)),
        Command::Key { action } => ("key", key(action)),
        Command::Agent { action } => (
            "agent",
            crate::enrol::run(action).map_err(|e| e.to_string()),
        ),
        Command::Init(args) => ("init", crate::init::run(*args).map_err(|e| e.to_string())),
        Command::Cert { action } => ("cert", crate::cert_renew::run(action)),
    };
    match result {
        Ok(done) => {
            println!("{done}");
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("pantau-collector {name}: {why}");
            ExitCode::FAILURE
        }
    }
}

fn user(action: UserAction) -> Result<String, String> {
    let (file, done) = match &action {
        UserAction::Add { name, file, .. } => (file, format!("added user '{name}'")),
        UserAction::Passwd { name, file, .. } => (file, format!("changed user '{name}'")),
        UserAction::Remove { name, file } => (file, format!("removed user '{name}'")),
    };
    let at = |why: String| format!("{}: {why}", file.display());
    let mut accounts =
        Accounts::load(file, matches!(action, UserAction::Add { .. })).map_err(at)?;
    match &action {
        UserAction::Add { name, role, .. } => {
            accounts.set(name, Some(*role), &read_password()?, false)?;
        }
        UserAction::Passwd { name, role, .. } => {
            accounts.set(name, *role, &read_password()?, true)?;
        }
        UserAction::Remove { name, .. } => accounts.remove(name)?,
    }
    accounts.save(file)?;
    Ok(done)
}

fn backup(file: &Path, config: Option<&Path>) -> Result<String, String> {
    let dir =
        CollectorConfig::storage_dir(config).map_err(|error| format!("invalid config: {error}"))?;
    let dir = dir.as_path();
    if !dir.join(crate::announce::store::FILE_NAME).exists() {
        return Err(format!(
            "storage.dir: no database in '{}' (give the collector's config with --config)",
            dir.display()
        ));
    }
    if file.exists() {
        return Err(format!("'{}' exists; give a new file", file.display()));
    }
    let store = crate::announce::Store::open(dir).map_err(|error| error.to_string())?;
    store
        .backup(file)
        .map_err(|error| format!("cannot write '{}': {error}", file.display()))?;
    Ok(format!("backed up {} to {}", dir.display(), file.display()))
}

fn key(action: KeyAction) -> Result<String, String> {
    let KeyAction::Derive {
        agent_id,
        key_file,
        output,
    } = action;
    pantau_protocol::validate_id(&agent_id)
        .map_err(|why| format!("agent id '{agent_id}': {why}"))?;
    let master = pantau_protocol::read_key(&key_file)
        .map_err(|why| format!("--key-file: '{}' {why}", key_file.display()))?;
    let key = pantau_protocol::derive_agent_key(&master, &agent_id);
    let Some(path) = output else {
        return Ok(key);
    };
    write_secret(&path, &format!("{key}\n"))
        .map_err(|error| format!("--output: cannot write '{}': {error}", path.display()))?;
    Ok(format!(
        "wrote the command key of agent '{agent_id}' to {} (mode 0600); set it as that agent's sound.key_file",
        path.display()
    ))
}

/// Writes `text` to `path`, ours and mode 0600 from its first byte (owned_files), so the key
/// is never readable by others, not even for a moment.
pub(crate) fn write_secret(path: &Path, text: &str) -> std::io::Result<()> {
    let ownership = pantau_runtime::owned_files::Ownership {
        uid: rustix::process::geteuid().as_raw(),
        gid: rustix::process::getegid().as_raw(),
        mode: 0o600,
    };
    pantau_runtime::owned_files::install(path, text.as_bytes(), ownership)
}

/// The first line of standard input, without its line end: passwords never go on the
/// command line, where the process list shows them.
pub fn read_password() -> Result<String, String> {
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|error| format!("cannot read the password from standard input: {error}"))?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn key_derive_writes_the_agents_key_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let master = dir.path().join("master.key");
        std::fs::write(&master, "the office master key 0001\n").unwrap();
        let output = dir.path().join("aula.key");
        let derive = |agent: &str, output: Option<PathBuf>| {
            key(KeyAction::Derive {
                agent_id: agent.to_owned(),
                key_file: master.clone(),
                output,
            })
        };
        let done = derive("aula", Some(output.clone())).unwrap();
        assert!(done.contains("aula"), "{done}");
        let expected = pantau_protocol::derive_agent_key(b"the office master key 0001", "aula");
        assert_eq!(
            std::fs::read_to_string(&output).unwrap(),
            format!("{expected}\n")
        );
        let mode = std::fs::metadata(&output).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(derive("aula", None).unwrap(), expected, "to stdout");
        assert!(
            derive("a b", None)
                .unwrap_err()
                .starts_with("agent id 'a b':"),
            "a bad id is named"
        );
        std::fs::write(&master, "short").unwrap();
        assert!(derive("aula", None).unwrap_err().contains("--key-file"));
    }
}
