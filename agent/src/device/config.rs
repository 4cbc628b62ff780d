//! `[[ups]]`: UPSes served by a NUT server (upsd) that this agent polls.

use std::path::PathBuf;

use pantau_runtime::config::ConfigError;
use serde::Deserialize;

/// One UPS behind a NUT server.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpsConfig {
    /// `host:port` of upsd; the port defaults to NUT's 3493.
    pub address: String,
    /// The UPS's name in upsd (`ups.conf` section), also the `ups` label.
    pub name: String,
    /// Log in as this upsd.users user (it needs `upsmon secondary`); none reads anonymously.
    pub username: Option<String>,
    /// File holding the user's password (first line); needed with `username`.
    pub password_file: Option<PathBuf>,
    /// Poll cadence; default `agent.interval_seconds`.
    pub interval_seconds: Option<u64>,
    /// A poll that takes longer fails as `timeout`.
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: u64,
}

fn default_timeout_seconds() -> u64 {
    5
}

/// Most UPSes one agent polls.
pub const MAX_UPS: usize = 32;

impl UpsConfig {
    /// `address` with NUT's default port when none is given.
    pub fn socket_address(&self) -> String {
        match self.address.rsplit_once(':') {
            Some((_, port)) if port.parse::<u16>().is_ok() && !self.address.ends_with(']') => {
                self.address.clone()
            }
            _ => format!("{}:3493", self.address),
        }
    }

    /// Reads the password file: its first line, without the line end.
    pub fn password(&self) -> Result<Option<String>, ConfigError> {
        let Some(path) = &self.password_file else {
            return Ok(None);
        };
        super::first_line(path, "ups.password_file").map(Some)
    }
}

/// Checks every `[[ups]]` table: names, addresses, the password file, cadences.
pub fn validate(ups: &[UpsConfig]) -> Result<(), ConfigError> {
    if ups.len() > MAX_UPS {
        return Err(ConfigError::invalid(
            "ups",
            format!("{} tables", ups.len()),
            format!("at most {MAX_UPS} UPSes per agent"),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (index, entry) in ups.iter().enumerate() {
        let field = |key: &str| format!("ups[{index}].{key}");
        super::check_name(field("name"), &entry.name, " (the UPS's name in upsd)")?;
        if !seen.insert((entry.socket_address(), entry.name.clone())) {
            return Err(ConfigError::invalid(
                field("name"),
                &entry.name,
                "is configured twice for the same address",
            ));
        }
        let (host, port) = entry
            .socket_address()
            .rsplit_once(':')
            .map(|(h, p)| (h.to_owned(), p.to_owned()))
            .unwrap_or_default();
        if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
            return Err(ConfigError::invalid(
                field("address"),
                &entry.address,
                "must be host or host:port of upsd",
            ));
        }
        match (&entry.username, &entry.password_file) {
            (Some(_), None) => {
                return Err(ConfigError::invalid(
                    field("password_file"),
                    "(none)",
                    "is needed with `username`",
                ));
            }
            (None, Some(path)) => {
                return Err(ConfigError::invalid(
                    field("username"),
                    "(none)",
                    format!("is needed with `password_file` ({})", path.display()),
                ));
            }
            _ => {}
        }
        entry.password().map_err(|error| match error {
            ConfigError::Invalid { value, reason, .. } => {
                ConfigError::invalid(field("password_file"), value, reason)
            }
            other => other,
        })?;
        if let Some(interval) = entry.interval_seconds
            && !(1..=3600).contains(&interval)
        {
            return Err(ConfigError::invalid(
                field("interval_seconds"),
                interval,
                "must be 1 to 3600",
            ));
        }
        if !(1..=60).contains(&entry.timeout_seconds) {
            return Err(ConfigError::invalid(
                field("timeout_seconds"),
                entry.timeout_seconds,
                "must be 1 to 60",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ups(address: &str, name: &str) -> UpsConfig {
        UpsConfig {
            address: address.to_owned(),
            name: name.to_owned(),
            username: None,
            password_file: None,
            interval_seconds: None,
            timeout_seconds: 5,
        }
    }

    #[test]
    fn the_port_defaults_to_nuts() {
        assert_eq!(ups("nut.lan", "a").socket_address(), "nut.lan:3493");
        assert_eq!(
            ups("127.0.0.1:4000", "a").socket_address(),
            "127.0.0.1:4000"
        );
    }

    #[test]
    fn bad_tables_name_the_field_and_value() {
        let error = validate(&[ups("nut.lan", "dc ups")])
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("ups[0].name") && error.contains("dc ups"),
            "{error}"
        );
        let mut entry = ups("nut.lan", "dc-ups");
        entry.username = Some("monitor".to_owned());
        let error = validate(&[entry]).unwrap_err().to_string();
        assert!(error.contains("ups[0].password_file"), "{error}");
        let mut entry = ups("nut.lan", "dc-ups");
        entry.timeout_seconds = 0;
        let error = validate(&[entry]).unwrap_err().to_string();
        assert!(error.contains("ups[0].timeout_seconds"), "{error}");
        let error = validate(&[ups("nut.lan", "a"), ups("nut.lan:3493", "a")])
            .unwrap_err()
            .to_string();
        assert!(error.contains("twice"), "{error}");
        let mut entry = ups("nut.lan", "dc-ups");
        entry.username = Some("monitor".to_owned());
        entry.password_file = Some("/nonexistent/pantau-test".into());
        let error = validate(&[entry]).unwrap_err().to_string();
        assert!(error.contains("cannot be read"), "{error}");
    }
}
