//! `pantau-collector init`: the secure first run of an installed collector. It makes the
//! office CA, the HTTPS/MQTT server certificate, the collector's keys and tokens, the first
//! console admin, and Mosquitto's drop-in (a TLS listener for the LAN, a plain one on loopback
//! for the collector), every file with the owner and mode of docs/install.md, then starts the
//! services when systemd runs.
//!
//! It never destroys what it cannot recreate: without `--force` it stops when collector.toml
//! exists, and with `--force` it keeps an existing CA, master key and token files (agents and
//! browsers already trust or hold them) and every other login in Mosquitto's password file.
//! collector.toml is written last, so an init that failed half way can simply be run again.

mod files;
mod summary;
mod templates;

use std::io::{BufRead, IsTerminal, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;

use crate::api::accounts::{Accounts, Role};
use crate::broker_logins;
use crate::pki;
pub(crate) use files::{FileError, Ids, Ownership, install};

/// The shipped topic rules (the package also installs them under /usr/share/pantau).
const ACL: &str = include_str!("../../../configs/mosquitto/pantau-acl");

/// How long a server certificate is valid: 397 days, the longest browsers accept.
pub const SERVER_CERT_DAYS: u32 = 397;

/// The collector's login at Mosquitto (pantau-acl gives it its topics).
const COLLECTOR_LOGIN: &str = "pantau-collector";

/// `init`'s options.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// A DNS name agents and browsers use for this host (repeatable); the first one (else the
    /// first --address) goes into the agents' broker URL and the console URL.
    #[arg(long = "name", value_name = "DNS")]
    pub names: Vec<String>,
    /// An IP address agents and browsers use for this host (repeatable).
    #[arg(long = "address", value_name = "IP")]
    pub addresses: Vec<IpAddr>,
    /// The first console user, with the admin role.
    #[arg(long, default_value = "admin")]
    pub admin: String,
    /// Read the admin's password from the first line of standard input; otherwise a random
    /// one is printed once.
    #[arg(long)]
    pub admin_password_stdin: bool,
    /// Where the console, the API and /metrics listen (HTTPS).
    #[arg(long, default_value = "0.0.0.0:9810")]
    pub http_listen: SocketAddr,
    /// Mosquitto's TLS listener for the LAN.
    #[arg(long, default_value_t = 8883)]
    pub mqtts_port: u16,
    /// Mosquitto's plain listener for the collector, on 127.0.0.1 only.
    #[arg(long, default_value_t = 1883)]
    pub mqtt_local_port: u16,
    /// The TLS listener also requires a client certificate from the office CA (agents still
    /// log in with passwords).
    #[arg(long)]
    pub client_certificates: bool,
    #[arg(long, default_value = "/etc/pantau")]
    pub etc_dir: PathBuf,
    /// The collector's state (systemd's StateDirectory).
    #[arg(long, default_value = "/var/lib/pantau/collector")]
    pub state_dir: PathBuf,
    #[arg(long, default_value = "/etc/mosquitto")]
    pub mosquitto_dir: PathBuf,
    /// The user the collector runs as; it must exist.
    #[arg(long, default_value = "pantau")]
    pub service_user: String,
    /// The group Mosquitto reads its password file and key as.
    #[arg(long, default_value = "mosquitto")]
    pub mosquitto_group: String,
    /// Do not (re)start mosquitto and pantau-collector; print what to start.
    #[arg(long)]
    pub no_start: bool,
    /// Run again over an existing setup: rewrites the configs, the server certificate and
    /// the collector's broker login; keeps the CA, the master key and the token files.
    #[arg(long)]
    pub force: bool,
}

/// Why `init` stopped.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(
        "'{0}' exists: this host is set up already. Nothing was changed. Run with --force to \
         rewrite the configs and the server certificate (the CA, keys and tokens are kept)"
    )]
    AlreadyDone(PathBuf),
    #[error("give --name or --address: the names agents and browsers reach this host by")]
    NoName,
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Pki(#[from] pki::PkiError),
    #[error(transparent)]
    Logins(#[from] broker_logins::LoginsError),
    #[error("{0}")]
    Other(String),
}

/// Where everything goes.
struct Paths {
    config: PathBuf,
    env: PathBuf,
    master_key: PathBuf,
    api_tokens: PathBuf,
    metrics_tokens: PathBuf,
    ca_dir: PathBuf,
    ca_cert: PathBuf,
    ca_key: PathBuf,
    tls_dir: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    bundle_dir: PathBuf,
    users: PathBuf,
    mosquitto_conf: PathBuf,
    mosquitto_passwd: PathBuf,
    mosquitto_acl: PathBuf,
    mosquitto_certs: PathBuf,
}

impl Paths {
    fn new(args: &InitArgs) -> Self {
        let etc = &args.etc_dir;
        let mosquitto = &args.mosquitto_dir;
        let certs = mosquitto.join("certs");
        Paths {
            config: etc.join("collector.toml"),
            env: etc.join("collector.env"),
            master_key: etc.join("command-master.key"),
            api_tokens: etc.join("api-tokens"),
            metrics_tokens: etc.join("metrics-tokens"),
            ca_dir: etc.join("ca"),
            ca_cert: etc.join("tls/ca.pem"),
            ca_key: etc.join("ca/ca.key"),
            tls_dir: etc.join("tls"),
            cert: etc.join("tls/collector.pem"),
            key: etc.join("tls/collector.key"),
            bundle_dir: etc.join("agents"),
            users: args.state_dir.join("api-users"),
            mosquitto_conf: mosquitto.join("conf.d/pantau.conf"),
            mosquitto_passwd: mosquitto.join("pantau-passwd"),
            mosquitto_acl: mosquitto.join("pantau-acl"),
            mosquitto_certs: certs,
        }
    }
}

/// The Mosquitto copies of the CA and the server certificate, relative to its directory:
/// Mosquitto reads them as its own user, which cannot enter /etc/pantau.
pub fn mosquitto_cert_files(mosquitto_dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let certs = mosquitto_dir.join("certs");
    (
        certs.join("pantau-ca.pem"),
        certs.join("pantau-broker.pem"),
        certs.join("pantau-broker.key"),
    )
}

/// Runs `init`; returns what to tell the admin.
pub fn run(mut args: InitArgs) -> Result<String, InitError> {
    let paths = Paths::new(&args);
    if paths.config.exists() && !args.force {
        return Err(InitError::AlreadyDone(paths.config.clone()));
    }
    if args.names.is_empty() && args.addresses.is_empty() {
        ask_names(&mut args)?;
    }
    let admin_password = match args.admin_password_stdin {
        true => crate::commands::read_password().map_err(InitError::Other)?,
        false => broker_logins::random_password(),
    };
    // The admin's name and password are checked before anything is written.
    let mut accounts = Accounts::load(&paths.users, true).map_err(InitError::Other)?;
    let replace = accounts.find(&args.admin).is_some();
    accounts
        .set(&args.admin, Some(Role::Admin), &admin_password, replace)
        .map_err(|why| InitError::Other(format!("--admin: {why}")))?;
    let ids = Ids::look_up(&args.service_user, &args.mosquitto_group)?;

    files::directory(&args.etc_dir, ids.root_service(0o750))?;
    files::directory(&paths.tls_dir, ids.root(0o755))?;
    files::directory(&paths.ca_dir, ids.root(0o700))?;
    files::directory(&paths.bundle_dir, ids.root(0o700))?;
    files::directory(&args.state_dir, ids.service(0o750))?;
    for dir in [
        args.mosquitto_dir.clone(),
        args.mosquitto_dir.join("conf.d"),
        paths.mosquitto_certs.clone(),
    ] {
        files::directory(&dir, ids.root(0o755))?;
    }
    let mut notes = Vec::new();

    let ca = match paths.ca_cert.exists() && paths.ca_key.exists() {
        true => {
            notes.push(format!("kept the existing CA {}", paths.ca_cert.display()));
            pki::Ca::load(&paths.ca_cert, &paths.ca_key)?
        }
        false => {
            let first = first_host(&args).unwrap_or_default();
            let ca = pki::new_ca(&format!("Pantau office CA ({first})"))?;
            install(&paths.ca_key, ca.key_pem.as_bytes(), ids.root(0o600))?;
            install(&paths.ca_cert, ca.cert_pem.as_bytes(), ids.root(0o644))?;
            ca
        }
    };
    let (names, addresses) = certificate_names(&args);
    let (cert_pem, key_pem) = pki::issue_server(&ca, &names, &addresses, SERVER_CERT_DAYS)?;
    install(&paths.key, key_pem.as_bytes(), ids.root_service(0o640))?;
    install(&paths.cert, cert_pem.as_bytes(), ids.root(0o644))?;
    let (mosquitto_ca, mosquitto_cert, mosquitto_key) = mosquitto_cert_files(&args.mosquitto_dir);
    install(&mosquitto_ca, ca.cert_pem.as_bytes(), ids.root(0o644))?;
    install(&mosquitto_cert, cert_pem.as_bytes(), ids.root(0o644))?;
    install(
        &mosquitto_key,
        key_pem.as_bytes(),
        ids.root_mosquitto(0o640),
    )?;

    let secrets = [
        (&paths.master_key, master_key()),
        (
            &paths.api_tokens,
            format!("{} operator\n", broker_logins::random_password()),
        ),
        (
            &paths.metrics_tokens,
            format!("{}\n", broker_logins::random_password()),
        ),
    ];
    for (path, text) in secrets {
        match path.exists() {
            true => notes.push(format!("kept the existing {}", path.display())),
            false => install(path, text.as_bytes(), ids.root_service(0o640))?,
        }
    }
    install(
        &paths.users,
        accounts.to_text().as_bytes(),
        ids.service(0o600),
    )?;

    let collector_password = broker_logins::random_password();
    if !paths.mosquitto_passwd.exists() {
        install(&paths.mosquitto_passwd, b"", ids.root_mosquitto(0o640))?;
    }
    // Keeps the file's owner and mode and every agent's login.
    broker_logins::set_login(
        &paths.mosquitto_passwd,
        COLLECTOR_LOGIN,
        &collector_password,
    )?;
    install(&paths.mosquitto_acl, ACL.as_bytes(), ids.root(0o644))?;
    install(
        &paths.mosquitto_conf,
        templates::mosquitto_conf(&args, &paths).as_bytes(),
        ids.root(0o644),
    )?;
    install(
        &paths.env,
        format!("PANTAU_MQTT__PASSWORD={collector_password}\n").as_bytes(),
        ids.root(0o600),
    )?;
    install(
        &paths.config,
        templates::collector_toml(&args, &paths).as_bytes(),
        ids.root_service(0o640),
    )?;

    let started = match args.no_start || !Path::new("/run/systemd/system").exists() {
        true => None,
        false => Some(start_services()?),
    };
    Ok(summary::summary(
        &args,
        &paths,
        &ca,
        &admin_password,
        &notes,
        started,
    ))
}

/// Without --name or --address: asks on a terminal, refuses otherwise (a script must never
/// hang on a question nobody sees).
fn ask_names(args: &mut InitArgs) -> Result<(), InitError> {
    if !std::io::stdin().is_terminal() {
        return Err(InitError::NoName);
    }
    print!(
        "DNS names and IP addresses agents and browsers reach this host by, separated by \
         spaces (e.g. pantau.kantor.lan 192.168.1.10): "
    );
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|error| InitError::Other(format!("cannot read the answer: {error}")))?;
    for word in line.split_whitespace() {
        match word.parse::<IpAddr>() {
            Ok(address) => args.addresses.push(address),
            Err(_) => args.names.push(word.to_owned()),
        }
    }
    match args.names.is_empty() && args.addresses.is_empty() {
        true => Err(InitError::NoName),
        false => Ok(()),
    }
}

/// The first name, else the first address, as it goes into a URL.
fn first_host(args: &InitArgs) -> Option<String> {
    args.names.first().cloned().or_else(|| {
        args.addresses.first().map(|address| match address {
            IpAddr::V6(v6) => format!("[{v6}]"),
            IpAddr::V4(v4) => v4.to_string(),
        })
    })
}

/// The server certificate's names: those given, plus localhost and 127.0.0.1 so that a
/// Prometheus, a script or an agent on this host can verify it too.
fn certificate_names(args: &InitArgs) -> (Vec<String>, Vec<IpAddr>) {
    let mut names = args.names.clone();
    if !names.iter().any(|name| name == "localhost") {
        names.push("localhost".to_owned());
    }
    let mut addresses = args.addresses.clone();
    let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
    if !addresses.contains(&loopback) {
        addresses.push(loopback);
    }
    (names, addresses)
}

/// 32 random bytes, base64: the command master key.
fn master_key() -> String {
    use argon2::password_hash::rand_core::{OsRng, RngCore};
    let mut key = [0u8; 32];
    OsRng.fill_bytes(&mut key);
    format!(
        "{}\n",
        base64::engine::general_purpose::STANDARD.encode(key)
    )
}

/// systemd's commands, in order: Mosquitto first, so the collector finds its broker.
const START_COMMANDS: [&[&str]; 3] = [
    &["systemctl", "restart", "mosquitto"],
    &["systemctl", "enable", "pantau-collector"],
    &["systemctl", "restart", "pantau-collector"],
];

fn start_services() -> Result<String, InitError> {
    for command in START_COMMANDS {
        let status = Command::new(command[0])
            .args(&command[1..])
            .status()
            .map_err(|error| InitError::Other(format!("{}: {error}", command.join(" "))))?;
        if !status.success() {
            return Err(InitError::Other(format!(
                "`{}` failed ({status}); the files are written, see `journalctl -u mosquitto -u \
                 pantau-collector`",
                command.join(" ")
            )));
        }
    }
    Ok(START_COMMANDS
        .iter()
        .map(|command| command.join(" "))
        .collect::<Vec<_>>()
        .join("; "))
}

#[cfg(test)]
pub(super) mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        init: InitArgs,
    }

    /// `init` with these flags, as clap reads them (also for templates.rs's tests).
    pub(in crate::init) fn args(extra: &[&str]) -> InitArgs {
        let mut argv = vec!["init"];
        argv.extend_from_slice(extra);
        Cli::parse_from(argv).init
    }

    #[test]
    fn the_certificate_also_names_this_host_once() {
        let (names, addresses) =
            certificate_names(&args(&["--name", "pantau.lan", "--address", "127.0.0.1"]));
        assert_eq!(names, ["pantau.lan", "localhost"]);
        assert_eq!(addresses, [IpAddr::V4(Ipv4Addr::LOCALHOST)]);
        let (names, addresses) = certificate_names(&args(&["--address", "10.0.0.5"]));
        assert_eq!(names, ["localhost"]);
        assert_eq!(addresses.len(), 2);
        assert_eq!(
            first_host(&args(&["--address", "fd00::1"])).as_deref(),
            Some("[fd00::1]")
        );
    }

    #[test]
    fn without_a_terminal_a_missing_name_is_an_error_not_a_question() {
        let mut args = args(&[]);
        // The test runner's stdin is not a terminal.
        if !std::io::stdin().is_terminal() {
            assert!(matches!(ask_names(&mut args), Err(InitError::NoName)));
        }
    }
}
