//! Which sites this collector owns (`mqtt.sites`), so that several collectors can share one
//! broker or cluster: each subscribes to its own sites' topics only.
//!
//! Splitting by site, not by MQTT shared subscriptions (`$share/group/...`), keeps all of one
//! agent's messages on one collector, in order: the sequence accounting needs that (README,
//! "Beyond one machine").

use pantau_protocol::Topic;

/// The sites owned, or every site.
#[derive(Debug, Clone)]
pub struct SiteFilter {
    prefix: String,
    sites: Option<Vec<String>>,
}

impl SiteFilter {
    /// `sites` of `None` owns every site (today's single `<prefix>/#` subscription).
    pub fn new(prefix: &str, sites: Option<Vec<String>>) -> Self {
        Self {
            prefix: prefix.to_owned(),
            sites,
        }
    }

    /// The subscription filters: `<prefix>/#`, or `<prefix>/+/<site>/#` per owned site. The
    /// version level stays a wildcard, so a newer agent of an owned site still shows up as
    /// `unknown_schema` instead of silence.
    pub fn filters(&self) -> Vec<String> {
        match &self.sites {
            None => vec![Topic::subscription_filter(&self.prefix)],
            Some(sites) => sites
                .iter()
                .map(|site| format!("{}/+/{site}/#", self.prefix))
                .collect(),
        }
    }

    /// Whether `topic` lies under the prefix but belongs to a site this collector does not
    /// own. Such messages still arrive when a persistent session kept an older, wider
    /// subscription, or from a filter of the room sensors that overlaps.
    pub fn is_foreign(&self, topic: &str) -> bool {
        let Some(sites) = &self.sites else {
            return false;
        };
        let Some(rest) = topic
            .strip_prefix(self.prefix.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
        else {
            return false;
        };
        let mut levels = rest.split('/');
        let _version = levels.next();
        match levels.next() {
            Some(site) => !sites.iter().any(|owned| owned == site),
            // Too short to name a site: the decoder rejects it as an invalid topic.
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_site_by_default() {
        let filter = SiteFilter::new("pantau", None);
        assert_eq!(filter.filters(), ["pantau/#"]);
        assert!(!filter.is_foreign("pantau/v1/gor/gor-srv-01/metrics"));
    }

    #[test]
    fn owned_sites_only() {
        let filter = SiteFilter::new(
            "kominfo/pantau",
            Some(vec!["dc".to_owned(), "gor".to_owned()]),
        );
        assert_eq!(
            filter.filters(),
            ["kominfo/pantau/+/dc/#", "kominfo/pantau/+/gor/#"]
        );
        assert!(!filter.is_foreign("kominfo/pantau/v1/dc/dc-srv-01/metrics"));
        assert!(!filter.is_foreign("kominfo/pantau/v2/gor/gor-01/status"));
        assert!(filter.is_foreign("kominfo/pantau/v1/bone/bone-01/metrics"));
        // "dcx" is not "dc": whole levels are compared.
        assert!(filter.is_foreign("kominfo/pantau/v1/dcx/a/metrics"));
        // Outside the prefix (room sensors) or too short: not this check's business.
        assert!(!filter.is_foreign("zigbee2mqtt/room-1"));
        assert!(!filter.is_foreign("kominfo/pantau/v1"));
    }
}
