//! The agent.toml that `pantau-agent init` writes: a common part (`[agent]`, `[outbox]`,
//! `[mqtt]`) and one part per role, each a template file in agent/templates/.
//!
//! Link and device templates hold their probes and devices as comments only: init must never
//! make an agent send traffic to an address nobody chose on this host.

use std::path::Path;

use pantau_protocol::{AgentRole, Bundle};

const COMMON: &str = include_str!("../../templates/common.toml");
const SERVER: &str = include_str!("../../templates/server.toml");
const LINK: &str = include_str!("../../templates/link.toml");
const DEVICE: &str = include_str!("../../templates/device.toml");
const SOUND: &str = include_str!("../../templates/sound.toml");

/// The site written when the bundle names none.
pub const DEFAULT_SITE: &str = "default";

/// Where the agent's files go, from `--etc-dir` and `--state-dir`.
#[derive(Debug, Clone)]
pub struct Layout {
    pub config: std::path::PathBuf,
    pub env: std::path::PathBuf,
    pub tls_dir: std::path::PathBuf,
    pub ca: std::path::PathBuf,
    pub client_cert: std::path::PathBuf,
    pub client_key: std::path::PathBuf,
    pub sound_key: std::path::PathBuf,
    pub state_dir: std::path::PathBuf,
}

impl Layout {
    pub fn new(etc_dir: &Path, state_dir: &Path) -> Layout {
        let tls_dir = etc_dir.join("tls");
        Layout {
            config: etc_dir.join("agent.toml"),
            env: etc_dir.join("agent.env"),
            ca: tls_dir.join("agent-ca.pem"),
            client_cert: tls_dir.join("agent.pem"),
            client_key: tls_dir.join("agent.key"),
            tls_dir,
            sound_key: etc_dir.join("sound.key"),
            state_dir: state_dir.to_owned(),
        }
    }
}

/// The agent.toml for `bundle`, its files at `layout`.
pub fn config(bundle: &Bundle, layout: &Layout) -> String {
    let role = match bundle.role {
        AgentRole::Server => SERVER,
        AgentRole::Link => LINK,
        AgentRole::Device => DEVICE,
        AgentRole::Sound => SOUND,
    };
    let path = |path: &Path| toml_string(&path.display().to_string());
    let urls: Vec<String> = bundle.broker_urls.iter().map(|u| toml_string(u)).collect();
    let client_certificate = match bundle.client_cert_pem {
        Some(_) => format!(
            "# This agent's client certificate (CN {}), for a broker that requires one.\n\
             client_cert_file = {}\nclient_key_file = {}",
            bundle.agent_id,
            path(&layout.client_cert),
            path(&layout.client_key)
        ),
        None => "# No client certificate: the broker asks only for the login.".to_owned(),
    };
    let site_note = match bundle.site {
        Some(_) => "",
        None => " `agent add` named none (--site): set this host's site here.",
    };
    let values: [(&str, String); 14] = [
        ("agent_id", toml_string(&bundle.agent_id)),
        ("role", bundle.role.as_str().to_owned()),
        (
            "site",
            toml_string(bundle.site.as_deref().unwrap_or(DEFAULT_SITE)),
        ),
        ("site_note", site_note.to_owned()),
        ("state_dir", path(&layout.state_dir)),
        ("broker_urls", format!("[{}]", urls.join(", "))),
        ("prefix", toml_string(&bundle.prefix)),
        ("username", toml_string(&bundle.username)),
        ("ca_file", path(&layout.ca)),
        ("client_certificate", client_certificate),
        ("env_file", layout.env.display().to_string()),
        ("config_file", layout.config.display().to_string()),
        ("sound_key_file", path(&layout.sound_key)),
        ("clips_dir", path(&layout.state_dir.join("clips"))),
    ];
    let mut text = format!("{COMMON}{role}");
    for (name, value) in values {
        text = text.replace(&format!("{{{{{name}}}}}"), &value);
    }
    text
}

/// `text` as a TOML basic string. The bundle's fields are validated, but paths come from the
/// command line and may hold anything.
fn toml_string(text: &str) -> String {
    let mut quoted = String::with_capacity(text.len() + 2);
    quoted.push('"');
    for c in text.chars() {
        match c {
            '"' => quoted.push_str("\\\""),
            '\\' => quoted.push_str("\\\\"),
            c if c.is_control() => quoted.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    quoted
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_quoted_for_toml() {
        assert_eq!(toml_string("a\"b\\c\n"), r#""a\"b\\c\u000A""#);
        assert_eq!(toml_string("/etc/pantau"), "\"/etc/pantau\"");
    }
}
