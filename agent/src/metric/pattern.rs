//! A regular expression from the config, compiled while the config is read: a bad pattern is a
//! config error naming its key, and no collector has to handle "does not compile" later.

use std::fmt;

use regex_lite::Regex;
use serde::{Deserialize, Deserializer};

/// A compiled pattern; the empty string (and the default) is "not set" and matches nothing,
/// as node_exporter treats an empty flag.
#[derive(Clone, Default)]
pub struct Pattern {
    regex: Option<Regex>,
}

impl Pattern {
    pub fn new(source: &str) -> Result<Self, String> {
        if source.is_empty() {
            return Ok(Self::default());
        }
        match Regex::new(source) {
            Ok(regex) => Ok(Self { regex: Some(regex) }),
            Err(error) => {
                // regex-lite's syntax errors may span several lines; the last one says what is wrong.
                let text = error.to_string();
                let why = text.lines().last().unwrap_or_default();
                let why = why.strip_prefix("error: ").unwrap_or(why);
                Err(format!(
                    "'{source}' is not a valid regular expression ({why})"
                ))
            }
        }
    }

    pub fn is_set(&self) -> bool {
        self.regex.is_some()
    }

    /// Whether `text` matches; an unset pattern matches nothing.
    pub fn is_match(&self, text: &str) -> bool {
        self.regex
            .as_ref()
            .is_some_and(|regex| regex.is_match(text))
    }

    pub fn as_str(&self) -> &str {
        self.regex.as_ref().map_or("", Regex::as_str)
    }
}

impl fmt::Debug for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl<'de> Deserialize<'de> for Pattern {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let source = String::deserialize(deserializer)?;
        Pattern::new(&source).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_matches_and_explains() {
        let pattern = Pattern::new("^eth").unwrap();
        assert!(pattern.is_set() && pattern.is_match("eth0") && !pattern.is_match("lo"));
        let empty = Pattern::new("").unwrap();
        assert!(!empty.is_set() && !empty.is_match("anything"));
        assert_eq!(
            Pattern::new("(unclosed").err().unwrap(),
            "'(unclosed' is not a valid regular expression (found open group without closing ')')"
        );
    }
}
