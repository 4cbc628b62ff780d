//! `/metrics?site=<site>` and `/metrics?agent=<id>`: one scrape target per part of a large
//! fleet, so Prometheus can scrape the parts in parallel; `/metrics?scope=collector` for the
//! collector's own series alone.
//!
//! A filtered scrape carries only agents' series (relayed and `pantau_agent_*`). The
//! collector's own series come only with the unfiltered scrape or `scope=collector`: with
//! `honor_labels` they carry no per-agent `instance`, so N split targets serving them would
//! give Prometheus the same series N times (README "Splitting a large fleet").

use pantau_protocol::validate_id;
use thiserror::Error;

/// Which agents' series a scrape shows, and whether the collector's own come with them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Everything: the collector's own series and every agent's.
    All,
    /// Only the agents matching the filter, without the collector's own series.
    Agents(AgentFilter),
    /// Only the collector's own series.
    Collector,
}

/// Agents of one site and/or one agent id; both given means both must match.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AgentFilter {
    pub site: Option<String>,
    pub agent: Option<String>,
}

impl AgentFilter {
    pub fn matches(&self, id: &str, site: &str) -> bool {
        self.site.as_deref().is_none_or(|want| want == site)
            && self.agent.as_deref().is_none_or(|want| want == id)
    }
}

/// Why a scrape's query was refused (400).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ScopeError {
    #[error("unknown parameter {0:?}: /metrics takes site, agent or scope=collector")]
    UnknownParameter(String),
    #[error("parameter {0:?} given more than once")]
    Repeated(String),
    #[error("site {value:?}: {why}")]
    InvalidSite { value: String, why: String },
    #[error("agent {value:?}: {why}")]
    InvalidAgent { value: String, why: String },
    #[error("scope {0:?}: the only scope is \"collector\"")]
    InvalidScope(String),
    #[error("scope=collector cannot be combined with site or agent")]
    Conflicting,
}

impl ScopeError {
    /// Every value of the `reason` label of `pantau_collector_bad_scrape_requests_total`.
    pub const REASONS: [&'static str; 6] = [
        "unknown_parameter",
        "repeated_parameter",
        "invalid_site",
        "invalid_agent",
        "invalid_scope",
        "conflicting_parameters",
    ];

    pub fn reason(&self) -> &'static str {
        match self {
            ScopeError::UnknownParameter(_) => "unknown_parameter",
            ScopeError::Repeated(_) => "repeated_parameter",
            ScopeError::InvalidSite { .. } => "invalid_site",
            ScopeError::InvalidAgent { .. } => "invalid_agent",
            ScopeError::InvalidScope(_) => "invalid_scope",
            ScopeError::Conflicting => "conflicting_parameters",
        }
    }
}

impl Scope {
    /// The scope of a query's `(name, value)` pairs, in order.
    pub fn parse(pairs: &[(String, String)]) -> Result<Self, ScopeError> {
        let mut filter = AgentFilter::default();
        let mut collector = false;
        for (name, value) in pairs {
            let slot = match name.as_str() {
                "site" => &mut filter.site,
                "agent" => &mut filter.agent,
                "scope" => {
                    if collector {
                        return Err(ScopeError::Repeated(name.clone()));
                    }
                    if value != "collector" {
                        return Err(ScopeError::InvalidScope(value.clone()));
                    }
                    collector = true;
                    continue;
                }
                _ => return Err(ScopeError::UnknownParameter(name.clone())),
            };
            if slot.is_some() {
                return Err(ScopeError::Repeated(name.clone()));
            }
            validate_id(value).map_err(|why| {
                let (value, why) = (value.clone(), why.to_string());
                if name == "site" {
                    ScopeError::InvalidSite { value, why }
                } else {
                    ScopeError::InvalidAgent { value, why }
                }
            })?;
            *slot = Some(value.clone());
        }
        let filtered = filter.site.is_some() || filter.agent.is_some();
        match (collector, filtered) {
            (true, true) => Err(ScopeError::Conflicting),
            (true, false) => Ok(Scope::Collector),
            (false, true) => Ok(Scope::Agents(filter)),
            (false, false) => Ok(Scope::All),
        }
    }

    /// Whether the collector's own series are part of this scrape.
    pub fn own_series(&self) -> bool {
        !matches!(self, Scope::Agents(_))
    }

    /// The agents whose series are part of this scrape: `None` for none at all.
    pub fn agents(&self) -> Option<AgentFilter> {
        match self {
            Scope::All => Some(AgentFilter::default()),
            Scope::Agents(filter) => Some(filter.clone()),
            Scope::Collector => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(query: &[(&str, &str)]) -> Result<Scope, ScopeError> {
        let pairs: Vec<(String, String)> = query
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Scope::parse(&pairs)
    }

    #[test]
    fn scopes_from_queries() {
        assert_eq!(parse(&[]), Ok(Scope::All));
        assert_eq!(parse(&[("scope", "collector")]), Ok(Scope::Collector));
        let site = AgentFilter {
            site: Some("dc".to_owned()),
            agent: None,
        };
        assert_eq!(parse(&[("site", "dc")]), Ok(Scope::Agents(site)));
        let both = parse(&[("site", "dc"), ("agent", "srv-1")]).expect("valid");
        let filter = both.agents().expect("agents");
        assert!(filter.matches("srv-1", "dc"));
        assert!(!filter.matches("srv-2", "dc"));
        assert!(!filter.matches("srv-1", "hq"));
        assert!(!both.own_series());
        assert!(Scope::All.own_series() && Scope::Collector.own_series());
        assert_eq!(Scope::Collector.agents(), None);
    }

    #[test]
    fn bad_queries_are_refused_with_a_reason() {
        let cases: [(&[(&str, &str)], &str); 7] = [
            (&[("sites", "dc")], "unknown_parameter"),
            (&[("site", "dc"), ("site", "hq")], "repeated_parameter"),
            (&[("site", "a/b")], "invalid_site"),
            (&[("site", "")], "invalid_site"),
            (&[("agent", "x+y")], "invalid_agent"),
            (&[("scope", "all")], "invalid_scope"),
            (
                &[("scope", "collector"), ("site", "dc")],
                "conflicting_parameters",
            ),
        ];
        for (query, reason) in cases {
            let error = parse(query).expect_err("refused");
            assert_eq!(error.reason(), reason, "{query:?}");
            assert!(ScopeError::REASONS.contains(&error.reason()));
        }
    }
}
