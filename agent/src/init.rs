//! `pantau-agent init --bundle FILE|-`: sets this host up as the agent an enrolment bundle
//! (`pantau-collector agent add`) describes: agent.toml for its role, agent.env with its
//! broker password, the broker's CA, its client certificate and sound key when it has them,
//! each with the owner and mode the packaged service expects; then checks the config and
//! (under systemd) enables and restarts `pantau-agent`.
//!
//! Nothing is written until the bundle has decoded and every field checked out.

mod files;
mod render;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::{Args, Subcommand};
use pantau_protocol::{AgentRole, Bundle, MAX_BUNDLE_BYTES};

pub use files::Owners;
pub use render::Layout;

// The agent's subcommands, run instead of the service. A plain comment: clap would make a
// doc comment the program's `about`, replacing the one `main` gives.
#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Set this host up from an enrolment bundle (`pantau-collector agent add` makes it):
    /// writes agent.toml, agent.env, the broker's CA and the agent's keys, checks the config,
    /// then enables and restarts the pantau-agent service.
    Init(InitArgs),
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// The bundle file, or `-` to read the line from standard input.
    #[arg(long, value_name = "FILE|-")]
    pub bundle: PathBuf,
    /// Where agent.toml, agent.env, tls/ and sound.key go.
    #[arg(long, value_name = "DIR", default_value = "/etc/pantau")]
    pub etc_dir: PathBuf,
    /// The agent's state (agent.state_dir): systemd's StateDirectory=pantau/agent.
    #[arg(long, value_name = "DIR", default_value = "/var/lib/pantau/agent")]
    pub state_dir: PathBuf,
    /// The user the service runs as; its group may read agent.toml and the keys.
    #[arg(long, value_name = "USER", default_value = "pantau")]
    pub service_user: String,
    /// Do not enable and restart the service.
    #[arg(long)]
    pub no_start: bool,
    /// Replace an existing agent.toml (and the files beside it).
    #[arg(long)]
    pub force: bool,
}

/// Why `init` stopped; never shows the bundle's secrets.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("--bundle {path}: {why}")]
    ReadBundle { path: String, why: String },
    #[error("--bundle {path}: {source}")]
    Bundle {
        path: String,
        source: pantau_protocol::BundleError,
    },
    #[error("--service-user {user}: {why}")]
    ServiceUser { user: String, why: String },
    #[error("{0} exists; give --force to replace it (and the files beside it)")]
    Exists(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("the written config {path} does not pass its check: {why}")]
    Check { path: String, why: String },
    #[error("the files are in place, but `{command}` {why}")]
    Start { command: String, why: String },
}

/// Runs a subcommand; prints what it did or why not.
pub fn run(command: AgentCommand) -> ExitCode {
    let AgentCommand::Init(args) = command;
    match init(&args) {
        Ok(done) => {
            println!("{done}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("pantau-agent init: {error}");
            ExitCode::FAILURE
        }
    }
}

fn init(args: &InitArgs) -> Result<String, InitError> {
    let bundle = read_bundle(&args.bundle)?;
    let owners = Owners::root_and(&args.service_user, Path::new("/etc/passwd"))?;
    let layout = Layout::new(&args.etc_dir, &args.state_dir);
    let written = install(&bundle, &layout, &owners, args.force)?;
    let mut report = format!(
        "agent '{}' (role {}) is set up:\n{}\nDelete the bundle file now: it holds the \
         agent's password.",
        bundle.agent_id,
        bundle.role.as_str(),
        written.join("\n")
    );
    let systemd = Path::new("/run/systemd/system").exists();
    match (args.no_start, systemd) {
        (false, true) => {
            if bundle.role == AgentRole::Sound {
                report.push_str(&format!("\n{}", install_sound_drop_in()?));
                systemctl(&["daemon-reload"])?;
            }
            for step in [["enable", "pantau-agent"], ["restart", "pantau-agent"]] {
                systemctl(&step)?;
            }
            report
                .push_str("\nEnabled and (re)started pantau-agent: systemctl status pantau-agent");
        }
        _ => report.push_str(&format!(
            "\nStart it: systemctl enable --now pantau-agent\n\
             or, without systemd: set -a; . {}; set +a; pantau-agent --config {}",
            layout.env.display(),
            layout.config.display()
        )),
    }
    Ok(report)
}

/// The package's drop-in for sound hosts (docs/install.md "Sound hosts"): the packaged unit
/// hides /dev/snd (`PrivateDevices=yes`), and only this drop-in lets the ALSA devices in.
const SOUND_DROP_IN_SOURCE: &str = "/usr/share/pantau/systemd/pantau-agent-sound.conf";
const SOUND_DROP_IN: &str = "/etc/systemd/system/pantau-agent.service.d/sound.conf";

fn install_sound_drop_in() -> Result<String, InitError> {
    let failed = |source| InitError::Write {
        path: SOUND_DROP_IN.to_owned(),
        source,
    };
    let text = std::fs::read(SOUND_DROP_IN_SOURCE).map_err(failed)?;
    let target = Path::new(SOUND_DROP_IN);
    if let Some(dir) = target.parent() {
        std::fs::create_dir_all(dir).map_err(failed)?;
    }
    std::fs::write(target, text).map_err(failed)?;
    Ok(format!(
        "{SOUND_DROP_IN} (0644): lets the service reach the sound card"
    ))
}

fn read_bundle(path: &Path) -> Result<Bundle, InitError> {
    let shown = path.display().to_string();
    let failed = |why: String| InitError::ReadBundle {
        path: shown.clone(),
        why,
    };
    let mut text = String::new();
    // One byte more than a bundle may have, so an oversized one is refused by decode.
    let limit = MAX_BUNDLE_BYTES as u64 + 1;
    let read = match path == Path::new("-") {
        true => std::io::stdin()
            .lock()
            .take(limit)
            .read_to_string(&mut text),
        false => {
            std::fs::File::open(path).and_then(|file| file.take(limit).read_to_string(&mut text))
        }
    };
    read.map_err(|error| failed(error.to_string()))?;
    Bundle::decode(&text).map_err(|source| InitError::Bundle {
        path: shown.clone(),
        source,
    })
}

/// Writes every file of `bundle` at `layout`, agent.toml last and only once it passes the
/// agent's own config check. Returns one line per file written.
pub fn install(
    bundle: &Bundle,
    layout: &Layout,
    owners: &Owners,
    force: bool,
) -> Result<Vec<String>, InitError> {
    if layout.config.exists() && !force {
        return Err(InitError::Exists(layout.config.display().to_string()));
    }
    let etc_dir = layout.config.parent().unwrap_or(Path::new("/"));
    let (root, service) = (owners.root(), owners.service());
    files::dir(etc_dir, 0o750, (root.0, service.1))?;
    files::dir(&layout.tls_dir, 0o755, root)?;
    files::dir(&layout.state_dir, 0o750, service)?;
    let mut written = Vec::new();
    let mut write = |path: &Path, text: &str, mode: u32, owner: (u32, u32)| {
        files::write(path, text, mode, owner)?;
        written.push(format!(
            "  {} ({}, mode {mode:04o})",
            path.display(),
            owners.describe(owner)
        ));
        Ok::<(), InitError>(())
    };
    // systemd's EnvironmentFile: a plain KEY=value line, no quotes (the password is base64url).
    write(
        &layout.env,
        &format!("PANTAU_MQTT__PASSWORD={}\n", bundle.password),
        0o600,
        root,
    )?;
    write(&layout.ca, &bundle.ca_pem, 0o644, root)?;
    if let (Some(cert), Some(key)) = (&bundle.client_cert_pem, &bundle.client_key_pem) {
        write(&layout.client_cert, cert, 0o644, root)?;
        write(&layout.client_key, key, 0o640, (root.0, service.1))?;
    }
    if let (AgentRole::Sound, Some(key)) = (bundle.role, &bundle.command_key) {
        write(
            &layout.sound_key,
            &format!("{key}\n"),
            0o640,
            (root.0, service.1),
        )?;
    }
    let candidate = layout.config.with_extension("toml.new");
    files::write(
        &candidate,
        &render::config(bundle, layout),
        0o640,
        (root.0, service.1),
    )?;
    if let Err(error) = crate::config::AgentConfig::load(Some(&candidate)) {
        let _ = std::fs::remove_file(&candidate);
        return Err(InitError::Check {
            path: layout.config.display().to_string(),
            why: error.to_string(),
        });
    }
    std::fs::rename(&candidate, &layout.config).map_err(|source| InitError::Write {
        path: layout.config.display().to_string(),
        source,
    })?;
    written.insert(
        0,
        format!(
            "  {} ({}, mode 0640; checked)",
            layout.config.display(),
            owners.describe((root.0, service.1))
        ),
    );
    Ok(written)
}

fn systemctl(args: &[&str]) -> Result<(), InitError> {
    let command = format!("systemctl {}", args.join(" "));
    match Command::new("systemctl").args(args).output() {
        Ok(output) if output.status.success() => Ok(()),
        Ok(output) => Err(InitError::Start {
            command,
            why: format!(
                "failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        }),
        Err(error) => Err(InitError::Start {
            command,
            why: format!("cannot run: {error}"),
        }),
    }
}

#[cfg(test)]
mod tests;
