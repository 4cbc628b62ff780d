//! `[[snmp]]`: switches and routers this agent polls over SNMP (v2c or v3 USM), read once and
//! validated at load so a poll never meets a bad setting.

use std::path::PathBuf;

use async_snmp::{Auth, AuthProtocol, PrivProtocol, UsmConfig};
use pantau_runtime::config::ConfigError;
use pantau_runtime::mqtt::Secret;
use serde::Deserialize;

use super::first_line;

/// One SNMP device.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnmpConfig {
    /// The device's label (`device` on every series); letters, digits, `-`, `_`, `.`.
    pub name: String,
    /// `host:port` of the device's SNMP agent; the port defaults to 161.
    pub target: String,
    /// `"2c"` or `"3"`.
    #[serde(default = "default_version")]
    pub version: String,
    /// v2c community, written here (kept out of debug output); prefer `community_file`.
    pub community: Option<Secret>,
    /// v2c: file holding the community (first line).
    pub community_file: Option<PathBuf>,
    /// v3 USM user name.
    pub username: Option<String>,
    /// v3: MD5, SHA (SHA-1), SHA-224, SHA-256, SHA-384 or SHA-512.
    pub auth_protocol: Option<String>,
    /// v3: file holding the authentication password (first line, at least 8 characters).
    pub auth_password_file: Option<PathBuf>,
    /// v3: DES, 3DES, AES (AES-128), AES-192-BLUMENTHAL, AES-256-BLUMENTHAL, AES-192-REEDER or
    /// AES-256-REEDER.
    pub privacy_protocol: Option<String>,
    /// v3: file holding the privacy password (first line, at least 8 characters).
    pub privacy_password_file: Option<PathBuf>,
    /// v3: `noAuthNoPriv`, `authNoPriv` or `authPriv`; derived from the protocols when absent,
    /// and must agree with them when given.
    pub security_level: Option<String>,
    /// ifName or ifDescr values of the interfaces to report; empty reports every interface.
    #[serde(default)]
    pub interfaces: Vec<String>,
    /// Poll cadence; default `agent.interval_seconds`.
    pub interval_seconds: Option<u64>,
    /// Wait for each SNMP answer this long before retrying.
    #[serde(default = "default_timeout_seconds")]
    pub timeout_seconds: u64,
    /// Retries of an unanswered request.
    #[serde(default = "default_retries")]
    pub retries: u32,
}

fn default_version() -> String {
    "2c".to_owned()
}

fn default_timeout_seconds() -> u64 {
    2
}

fn default_retries() -> u32 {
    1
}

/// Most SNMP devices one agent polls.
pub const MAX_DEVICES: usize = 64;
/// Most entries in `interfaces`.
pub const MAX_WATCHED: usize = 1024;

impl SnmpConfig {
    /// `target` with SNMP's default port when none is given.
    pub fn socket_address(&self) -> String {
        let has_port = match self.target.rsplit_once(':') {
            Some((host, port)) => {
                port.parse::<u16>().is_ok() && (!host.contains(':') || host.ends_with(']'))
            }
            None => false,
        };
        if has_port {
            self.target.clone()
        } else {
            format!("{}:161", self.target)
        }
    }

    /// The credentials, read from their files: what the client is built from.
    pub fn auth(&self) -> Result<Auth, ConfigError> {
        self.auth_at(0)
    }

    /// For a v3 user with privacy, the same user with authentication only: the probe that tells
    /// a wrong privacy password (an encrypted request the agent cannot read gets no answer)
    /// from a dead device.
    pub fn auth_without_privacy(&self) -> Result<Option<Auth>, ConfigError> {
        if self.version != "3" || self.privacy_protocol.is_none() {
            return Ok(None);
        }
        self.usm(0, false).map(|usm| Some(usm.into()))
    }

    fn auth_at(&self, index: usize) -> Result<Auth, ConfigError> {
        let field = |key: &str| format!("snmp[{index}].{key}");
        let v3_keys = [
            ("username", self.username.is_some()),
            ("auth_protocol", self.auth_protocol.is_some()),
            ("auth_password_file", self.auth_password_file.is_some()),
            ("privacy_protocol", self.privacy_protocol.is_some()),
            (
                "privacy_password_file",
                self.privacy_password_file.is_some(),
            ),
            ("security_level", self.security_level.is_some()),
        ];
        match self.version.as_str() {
            "2c" => {
                if let Some((key, _)) = v3_keys.iter().find(|(_, set)| *set) {
                    return Err(ConfigError::invalid(
                        field(key),
                        "(set)",
                        "is an SNMPv3 setting; this table has version = \"2c\"",
                    ));
                }
                let community = match (&self.community, &self.community_file) {
                    (Some(text), None) => text.0.clone(),
                    (None, Some(path)) => first_line(path, &field("community_file"))?,
                    (Some(_), Some(_)) => {
                        return Err(ConfigError::invalid(
                            field("community"),
                            "(set)",
                            "give `community` or `community_file`, not both",
                        ));
                    }
                    (None, None) => {
                        return Err(ConfigError::invalid(
                            field("community_file"),
                            "(none)",
                            "SNMPv2c needs `community_file` or `community`",
                        ));
                    }
                };
                if community.is_empty() || community.len() > 255 {
                    return Err(ConfigError::invalid(
                        field("community"),
                        "(hidden)",
                        "must be 1 to 255 bytes",
                    ));
                }
                Ok(Auth::v2c(community))
            }
            "3" => self.usm(index, true).map(Auth::from),
            other => Err(ConfigError::invalid(
                field("version"),
                other,
                "must be \"2c\" or \"3\" (SNMPv1 is not supported)",
            )),
        }
    }

    fn usm(&self, index: usize, with_privacy: bool) -> Result<UsmConfig, ConfigError> {
        let field = |key: &str| format!("snmp[{index}].{key}");
        if self.community.is_some() || self.community_file.is_some() {
            return Err(ConfigError::invalid(
                field("community"),
                "(set)",
                "is an SNMPv2c setting; this table has version = \"3\"",
            ));
        }
        let user = self.username.as_deref().unwrap_or("");
        if user.is_empty() || user.len() > 32 {
            return Err(ConfigError::invalid(
                field("username"),
                user,
                "SNMPv3 needs a user name of 1 to 32 bytes",
            ));
        }
        if self.privacy_protocol.is_some() && self.auth_protocol.is_none() {
            return Err(ConfigError::invalid(
                field("auth_protocol"),
                "(none)",
                "SNMPv3 privacy needs authentication too",
            ));
        }
        let auth = match &self.auth_protocol {
            Some(name) => {
                let protocol: AuthProtocol = name.parse().map_err(|_| {
                    ConfigError::invalid(
                        field("auth_protocol"),
                        name,
                        "must be MD5, SHA, SHA-224, SHA-256, SHA-384 or SHA-512",
                    )
                })?;
                Some((protocol, password(self, index, "auth_password_file")?))
            }
            None => None,
        };
        let privacy = match &self.privacy_protocol {
            Some(name) if with_privacy => {
                let protocol: PrivProtocol = name.parse().map_err(|_| {
                    ConfigError::invalid(
                        field("privacy_protocol"),
                        name,
                        "must be DES, 3DES, AES, AES-192-BLUMENTHAL, AES-256-BLUMENTHAL, \
                         AES-192-REEDER or AES-256-REEDER",
                    )
                })?;
                Some((protocol, password(self, index, "privacy_password_file")?))
            }
            _ => None,
        };
        let derived = match (&auth, &privacy) {
            // Privacy without authentication was refused above.
            (None, _) => "noAuthNoPriv",
            (Some(_), None) => "authNoPriv",
            (Some(_), Some(_)) => "authPriv",
        };
        for (key, protocol_set, file_set) in [
            (
                "auth_password_file",
                auth.is_some(),
                self.auth_password_file.is_some(),
            ),
            (
                "privacy_password_file",
                self.privacy_protocol.is_some(),
                self.privacy_password_file.is_some(),
            ),
        ] {
            if file_set && !protocol_set {
                return Err(ConfigError::invalid(
                    field(key),
                    "(set)",
                    "is given without its protocol",
                ));
            }
        }
        if let Some(level) = &self.security_level
            && with_privacy
            && level != derived
        {
            return Err(ConfigError::invalid(
                field("security_level"),
                level,
                format!("the protocols given make it {derived}"),
            ));
        }
        let usm = UsmConfig::new(user.to_owned());
        let built = match (auth, privacy) {
            (None, _) => Ok(usm),
            (Some((a, ap)), None) => usm.auth(a, ap),
            (Some((a, ap)), Some((p, pp))) => usm.auth_priv(a, ap, p, pp),
        };
        built.map_err(|error| {
            ConfigError::invalid(field("auth_protocol"), "(set)", error.to_string())
        })
    }
}

fn password(config: &SnmpConfig, index: usize, key: &str) -> Result<String, ConfigError> {
    let field = format!("snmp[{index}].{key}");
    let path = match key {
        "auth_password_file" => &config.auth_password_file,
        _ => &config.privacy_password_file,
    };
    let Some(path) = path else {
        return Err(ConfigError::invalid(
            field,
            "(none)",
            "is needed with its protocol",
        ));
    };
    let text = first_line(path, &field)?;
    // RFC 3414 key localisation and net-snmp both refuse shorter passwords.
    if text.len() < 8 {
        return Err(ConfigError::invalid(
            field,
            path.display(),
            "holds a password shorter than 8 characters",
        ));
    }
    Ok(text)
}

/// Checks every `[[snmp]]` table.
pub fn validate(devices: &[SnmpConfig]) -> Result<(), ConfigError> {
    if devices.len() > MAX_DEVICES {
        return Err(ConfigError::invalid(
            "snmp",
            format!("{} tables", devices.len()),
            format!("at most {MAX_DEVICES} SNMP devices per agent"),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (index, entry) in devices.iter().enumerate() {
        let field = |key: &str| format!("snmp[{index}].{key}");
        super::check_name(field("name"), &entry.name, "")?;
        if !seen.insert(entry.name.clone()) {
            return Err(ConfigError::invalid(
                field("name"),
                &entry.name,
                "names two [[snmp]] tables",
            ));
        }
        let address = entry.socket_address();
        let (host, port) = address.rsplit_once(':').unwrap_or_default();
        if host.is_empty() || host.contains(char::is_whitespace) || port.parse::<u16>() == Ok(0) {
            return Err(ConfigError::invalid(
                field("target"),
                &entry.target,
                "must be host or host:port of the SNMP agent",
            ));
        }
        entry.auth_at(index)?;
        if entry.interfaces.len() > MAX_WATCHED {
            return Err(ConfigError::invalid(
                field("interfaces"),
                format!("{} entries", entry.interfaces.len()),
                format!("at most {MAX_WATCHED}"),
            ));
        }
        if let Some(bad) = entry
            .interfaces
            .iter()
            .find(|name| name.is_empty() || name.len() > 255)
        {
            return Err(ConfigError::invalid(
                field("interfaces"),
                bad,
                "each must be an ifName or ifDescr of 1 to 255 bytes",
            ));
        }
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
        if entry.retries > 10 {
            return Err(ConfigError::invalid(
                field("retries"),
                entry.retries,
                "must be 0 to 10",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> SnmpConfig {
        toml::from_str(toml_text).expect("a [[snmp]] table")
    }

    fn fails(toml_text: &str) -> String {
        validate(&[parse(toml_text)]).unwrap_err().to_string()
    }

    fn secret(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().expect("temp file");
        std::fs::write(file.path(), format!("{text}\n")).expect("write secret");
        file
    }

    #[test]
    fn the_port_defaults_to_161() {
        let config = |target: &str| {
            parse(&format!(
                "name = \"a\"\ntarget = \"{target}\"\ncommunity = \"c\""
            ))
        };
        assert_eq!(config("sw1.lan").socket_address(), "sw1.lan:161");
        assert_eq!(config("10.0.0.2:1161").socket_address(), "10.0.0.2:1161");
        assert_eq!(config("[::1]:1161").socket_address(), "[::1]:1161");
        assert_eq!(config("[::1]").socket_address(), "[::1]:161");
    }

    #[test]
    fn v2c_and_v3_tables_validate() {
        validate(&[parse(
            "name = \"sw1\"\ntarget = \"sw1.lan\"\ncommunity = \"public\"",
        )])
        .expect("v2c");
        let auth = secret("authpass1");
        let privacy = secret("privpass1");
        let v3 = format!(
            "name = \"core\"\ntarget = \"core.lan\"\nversion = \"3\"\nusername = \"pantau\"\n\
             auth_protocol = \"SHA-256\"\nauth_password_file = \"{}\"\nprivacy_protocol = \"AES\"\n\
             privacy_password_file = \"{}\"\nsecurity_level = \"authPriv\"",
            auth.path().display(),
            privacy.path().display()
        );
        validate(&[parse(&v3)]).expect("v3 authPriv");
        // The probe for a wrong privacy key: the same user, authentication only, even though
        // the table says authPriv.
        assert!(parse(&v3).auth_without_privacy().expect("probe").is_some());
        let v2c = parse("name = \"sw1\"\ntarget = \"sw1.lan\"\ncommunity = \"public\"");
        assert!(v2c.auth_without_privacy().expect("none").is_none());
        let wrong_level = v3.replace("\"authPriv\"", "\"authNoPriv\"");
        let error = validate(&[parse(&wrong_level)]).unwrap_err().to_string();
        assert!(
            error.contains("snmp[0].security_level") && error.contains("authPriv"),
            "{error}"
        );
    }

    #[test]
    fn bad_tables_name_the_field_and_value() {
        let error = fails("name = \"sw 1\"\ntarget = \"sw1\"\ncommunity = \"c\"");
        assert!(
            error.contains("snmp[0].name") && error.contains("sw 1"),
            "{error}"
        );
        let error = fails("name = \"sw1\"\ntarget = \"sw1\"\nversion = \"1\"\ncommunity = \"c\"");
        assert!(
            error.contains("snmp[0].version") && error.contains("'1'"),
            "{error}"
        );
        let error = fails("name = \"sw1\"\ntarget = \"sw1\"");
        assert!(error.contains("snmp[0].community_file"), "{error}");
        let error = fails("name = \"sw1\"\ntarget = \"sw1\"\ncommunity = \"c\"\nusername = \"u\"");
        assert!(error.contains("snmp[0].username"), "{error}");
        let error = fails(
            "name = \"sw1\"\ntarget = \"sw1\"\nversion = \"3\"\nusername = \"u\"\nauth_protocol = \"SHA-3\"",
        );
        assert!(
            error.contains("snmp[0].auth_protocol") && error.contains("SHA-3"),
            "{error}"
        );
        let short = secret("short");
        let error = fails(&format!(
            "name = \"sw1\"\ntarget = \"sw1\"\nversion = \"3\"\nusername = \"u\"\n\
             auth_protocol = \"SHA\"\nauth_password_file = \"{}\"",
            short.path().display()
        ));
        assert!(error.contains("shorter than 8"), "{error}");
        let error =
            fails("name = \"sw1\"\ntarget = \"sw1\"\ncommunity = \"c\"\ntimeout_seconds = 0");
        assert!(
            error.contains("snmp[0].timeout_seconds") && error.contains("'0'"),
            "{error}"
        );
        let error =
            fails("name = \"sw1\"\ntarget = \"sw1\"\ncommunity = \"c\"\ninterfaces = [\"\"]");
        assert!(error.contains("snmp[0].interfaces"), "{error}");
        let twice = parse("name = \"sw1\"\ntarget = \"sw1\"\ncommunity = \"c\"");
        let error = validate(&[twice.clone(), twice]).unwrap_err().to_string();
        assert!(error.contains("snmp[1].name"), "{error}");
    }
}
