//! Config loading: a TOML file, then `PANTAU_<SECTION>__<KEY>` environment variables on top,
//! deserialized once into the binary's typed config. Errors name the key, the bad value and
//! where it came from (file or variable), so an operator can fix it without reading code.

use std::fmt::{self, Display};
use std::path::{Path, PathBuf};

use figment::error::Kind;
use figment::providers::{Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider};
use serde::de::DeserializeOwned;
use thiserror::Error;

/// Prefix of environment overrides; `__` separates a section from its key.
pub const ENV_PREFIX: &str = "PANTAU_";

/// A config that could not be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file or an override does not fit the config's shape.
    #[error("{0}")]
    Parse(String),
    /// Parsed, but a value is out of range or inconsistent.
    #[error("{field}: '{value}' {reason}")]
    Invalid {
        field: String,
        value: String,
        reason: String,
    },
}

impl ConfigError {
    /// A validation failure of `field`, quoting `value`.
    pub fn invalid(
        field: impl Into<String>,
        value: impl Display,
        reason: impl Into<String>,
    ) -> Self {
        ConfigError::Invalid {
            field: field.into(),
            value: value.to_string(),
            reason: reason.into(),
        }
    }
}

/// Reads `path` (when given) and the environment overrides for `sections` into `T`.
///
/// Only variables whose first segment names one of `sections` are applied, so a shell that
/// exports the agent's `PANTAU_AGENT__ID` can still start the collector; a misspelt key inside a
/// known section is still an error.
pub fn load<T: DeserializeOwned>(path: Option<&Path>, sections: &[&str]) -> Result<T, ConfigError> {
    let mut figment = Figment::new();
    if let Some(path) = path {
        figment = figment.merge(Toml::file_exact(path));
    }
    figment = figment.merge(EnvOverrides {
        sections: sections
            .iter()
            .map(|section| (*section).to_owned())
            .collect(),
    });
    figment
        .extract_lossy()
        .map_err(|error| ConfigError::Parse(describe(error, path)))
}

/// Checks a folder of deliberately bad configs (bottom's `tests/invalid_configs`): each
/// `*.toml` starts with `# error: <text>`, the exact message `load` must fail with (`{path}`
/// stands for the file's path). Returns how many were checked, or what went wrong. Shared by
/// the binaries' tests.
pub fn check_invalid_configs(
    dir: &Path,
    load: impl Fn(&Path) -> Result<(), ConfigError>,
) -> Result<usize, String> {
    let entries = std::fs::read_dir(dir).map_err(|error| format!("{}: {error}", dir.display()))?;
    let mut checked = 0;
    for entry in entries {
        let path = entry.map_err(|error| error.to_string())?.path();
        if path.extension().is_none_or(|extension| extension != "toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).map_err(|error| error.to_string())?;
        let expected = text
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("# error: "))
            .ok_or_else(|| format!("{} lacks a '# error: ' first line", path.display()))?
            .replace("{path}", &path.display().to_string());
        match load(&path) {
            Ok(()) => return Err(format!("{} was accepted", path.display())),
            Err(error) if error.to_string() == expected => checked += 1,
            Err(error) => {
                return Err(format!(
                    "{}:\n  expected: {expected}\n  got:      {error}",
                    path.display()
                ));
            }
        }
    }
    Ok(checked)
}

/// Environment overrides as strings. figment's own `Env` provider parses values (`123` becomes a
/// number, `007` becomes 7), which breaks string keys like `agent.id`; here every value stays a
/// string and `extract_lossy` converts it where the field wants a number or a bool.
struct EnvOverrides {
    sections: Vec<String>,
}

impl Provider for EnvOverrides {
    fn metadata(&self) -> Metadata {
        Metadata::named("environment variable").interpolater(|_profile, keys| {
            // A list element's index is part of the key path, not of the variable's name.
            let named: Vec<&str> = keys
                .iter()
                .copied()
                .filter(|key| key.parse::<usize>().is_err())
                .collect();
            format!("{ENV_PREFIX}{}", named.join("__").to_ascii_uppercase())
        })
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut root = Dict::new();
        for (name, value) in std::env::vars_os() {
            let (Some(name), Some(value)) = (name.to_str(), value.to_str()) else {
                continue;
            };
            let Some(key) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let path: Vec<String> = key.split("__").map(str::to_ascii_lowercase).collect();
            if path.len() < 2 || !self.sections.contains(&path[0]) {
                continue;
            }
            // A list is written as `[cpu, meminfo]`; everything else stays a string.
            let value = if value.trim_start().starts_with('[') {
                value.parse().unwrap_or_else(|never| match never {})
            } else {
                Value::from(value.to_owned())
            };
            insert(&mut root, &path, value);
        }
        Ok(Profile::Default.collect(root))
    }
}

fn insert(dict: &mut Dict, path: &[String], value: Value) {
    match path {
        [] => {}
        [last] => {
            dict.insert(last.clone(), value);
        }
        [first, rest @ ..] => {
            let child = dict
                .entry(first.clone())
                .or_insert_with(|| Value::from(Dict::new()));
            if child.as_dict().is_none() {
                *child = Value::from(Dict::new());
            }
            if let Value::Dict(_, child) = child {
                insert(child, rest, value);
            }
        }
    }
}

/// Formats figment's error chain as `key: problem (from source)` lines.
fn describe(error: figment::Error, path: Option<&Path>) -> String {
    let lines: Vec<String> = error
        .into_iter()
        .map(|error| {
            let source = Source::of(&error, path);
            let mut path = render_path(&error.path);
            let message = match &error.kind {
                // An unreadable file or TOML syntax error: figment's text already says it all.
                Kind::Message(text) => text.clone(),
                Kind::UnknownField(_, expected) => {
                    format!("unknown key, expected one of: {}", expected.join(", "))
                }
                Kind::UnknownVariant(found, expected) => {
                    format!(
                        "unknown value '{found}', expected one of: {}",
                        expected.join(", ")
                    )
                }
                Kind::MissingField(name) => {
                    path = if path.is_empty() {
                        name.to_string()
                    } else {
                        format!("{path}.{name}")
                    };
                    "is required".to_owned()
                }
                kind => kind.to_string(),
            };
            match (path.is_empty(), source) {
                (true, Source::File(file)) => format!("{}: {message}", file.display()),
                (true, source) => format!("{message}{source}"),
                (false, source) => format!("{path}: {message}{source}"),
            }
        })
        .collect();
    lines.join("\n")
}

/// `host.collectors.0` becomes `host.collectors[0]`.
fn render_path(path: &[String]) -> String {
    let mut rendered = String::new();
    for segment in path {
        if segment.parse::<usize>().is_ok() {
            rendered.push_str(&format!("[{segment}]"));
        } else {
            if !rendered.is_empty() {
                rendered.push('.');
            }
            rendered.push_str(segment);
        }
    }
    rendered
}

enum Source {
    File(PathBuf),
    Variable(String),
    Unknown,
}

impl Source {
    fn of(error: &figment::Error, path: Option<&Path>) -> Self {
        match &error.metadata {
            Some(metadata) if metadata.name.contains("environment") => {
                let profile = error.profile.clone().unwrap_or_default();
                Source::Variable(metadata.interpolate(&profile, &error.path))
            }
            Some(_) => path.map_or(Source::Unknown, |p| Source::File(p.to_owned())),
            None => Source::Unknown,
        }
    }
}

impl Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::File(path) => write!(f, " (in {})", path.display()),
            Source::Variable(name) => write!(f, " (from environment variable {name})"),
            Source::Unknown => Ok(()),
        }
    }
}

#[cfg(test)]
// figment::Jail fixes the closure's error type; its size is not ours to choose.
#[allow(clippy::result_large_err)]
mod tests {
    use figment::Jail;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Demo {
        agent: DemoAgent,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct DemoAgent {
        id: String,
        #[serde(default)]
        interval_seconds: u64,
        #[serde(default)]
        tags: Vec<String>,
    }

    fn error_of(path: &str) -> String {
        load::<Demo>(Some(Path::new(path)), &["agent"])
            .unwrap_err()
            .to_string()
    }

    // figment's Jail serialises tests that touch the environment and gives each a temp dir.
    #[test]
    fn file_then_environment() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "a.toml",
                "[agent]\nid = \"from-file\"\ninterval_seconds = 5\n",
            )?;
            let loaded: Demo = load(Some(Path::new("a.toml")), &["agent"]).unwrap();
            assert_eq!(loaded.agent.id, "from-file");

            // A numeric-looking id stays a string; a section the binary lacks is ignored.
            jail.set_env("PANTAU_AGENT__ID", "123");
            jail.set_env("PANTAU_AGENT__INTERVAL_SECONDS", "30");
            jail.set_env("PANTAU_SOUND__VOLUME", "ignored");
            jail.set_env("PANTAU_AGENT__TAGS", "[cpu, meminfo]");
            let loaded: Demo = load(Some(Path::new("a.toml")), &["agent"]).unwrap();
            assert_eq!(
                loaded.agent,
                DemoAgent {
                    id: "123".to_owned(),
                    interval_seconds: 30,
                    tags: vec!["cpu".to_owned(), "meminfo".to_owned()],
                }
            );
            Ok(())
        });
    }

    #[test]
    fn environment_errors_name_the_variable() {
        Jail::expect_with(|jail| {
            jail.create_file("a.toml", "[agent]\nid = \"x\"\n")?;
            jail.set_env("PANTAU_AGENT__INTERVAL_SECONDS", "soon");
            assert_eq!(
                error_of("a.toml"),
                "agent.interval_seconds: invalid type: found string \"soon\", expected u64 \
                 (from environment variable PANTAU_AGENT__INTERVAL_SECONDS)"
            );
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.create_file("a.toml", "[agent]\nid = \"x\"\n")?;
            jail.set_env("PANTAU_AGENT__INTERVAL", "5");
            let error = error_of("a.toml");
            assert_eq!(
                error,
                "agent.interval: unknown key, expected one of: id, interval_seconds, tags \
                 (from environment variable PANTAU_AGENT__INTERVAL)"
            );
            Ok(())
        });
    }

    #[test]
    fn file_errors_name_the_file() {
        Jail::expect_with(|jail| {
            jail.create_file("broken.toml", "[agent\nid = 1\n")?;
            let error = error_of("broken.toml");
            assert!(error.contains("TOML parse error"), "{error}");

            jail.create_file("typed.toml", "[agent]\nid = 7\n")?;
            assert_eq!(
                error_of("typed.toml"),
                "agent.id: invalid type: found signed int `7`, expected a string (in typed.toml)"
            );

            jail.create_file("empty.toml", "[agent]\n")?;
            assert_eq!(
                error_of("empty.toml"),
                "agent.id: is required (in empty.toml)"
            );

            let error = error_of("missing.toml");
            assert!(error.contains("missing.toml"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn invalid_renders_field_value_reason() {
        let error = ConfigError::invalid("agent.interval_seconds", 0, "must be at least 1");
        assert_eq!(
            error.to_string(),
            "agent.interval_seconds: '0' must be at least 1"
        );
    }
}
