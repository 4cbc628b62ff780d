//! Several collectors on one broker, split by site (issue 16, "Beyond one machine"): with
//! disjoint `mqtt.sites` and one Prometheus scraping both, every agent appears exactly once;
//! messages of another site that still reach a collector are ignored and counted.

use std::collections::BTreeMap;
use std::time::Duration;

use pantau_tests::{Agent, Collector, Mosquitto, Prometheus, TestDir, sample, wait_until};

const WAIT: Duration = Duration::from_secs(30);
const AGENTS: [(&str, &str); 6] = [
    ("dc-srv-01", "dc"),
    ("dc-srv-02", "dc"),
    ("gor-srv-01", "gor"),
    ("gor-srv-02", "gor"),
    ("bone-srv-01", "bone"),
    ("bone-srv-02", "bone"),
];

#[test]
fn collectors_split_by_site_show_every_agent_once() {
    let (dir_a, dir_b, dir_agents) = (TestDir::new(), TestDir::new(), TestDir::new());
    let broker = Mosquitto::start();
    // Collector A once ran without `mqtt.sites`: its persistent session on the broker still
    // holds the subscription to every site, so other sites' messages keep reaching it.
    let before = Collector::with_env(
        &dir_a,
        &broker,
        &[("PANTAU_MQTT__CLIENT_ID", "collector-a")],
    );
    drop(before);
    let collector_a = Collector::with_env(
        &dir_a,
        &broker,
        &[
            ("PANTAU_MQTT__CLIENT_ID", "collector-a"),
            ("PANTAU_MQTT__SITES", "[dc]"),
        ],
    );
    let collector_b = Collector::with_env(
        &dir_b,
        &broker,
        &[
            ("PANTAU_MQTT__CLIENT_ID", "collector-b"),
            ("PANTAU_MQTT__SITES", "[gor, bone]"),
        ],
    );
    let _agents: Vec<Agent> = AGENTS
        .iter()
        .map(|(id, site)| {
            Agent::start_with(
                &dir_agents,
                id,
                site,
                &broker.url(),
                1,
                &[("PANTAU_HOST__COLLECTORS", "[loadavg]")],
            )
        })
        .collect();
    let target = |c: &Collector| c.url().trim_start_matches("http://").to_owned();
    let prometheus = Prometheus::builder()
        .scrape("pantau-a", &target(&collector_a))
        .scrape("pantau-b", &target(&collector_b))
        .start();

    let expected: BTreeMap<String, String> = AGENTS
        .iter()
        .map(|(id, _)| ((*id).to_owned(), "1".to_owned()))
        .collect();
    let counts = wait_until("every agent in Prometheus", WAIT * 2, || {
        let result = prometheus.query("count by (instance) (pantau_agent_up == 1)");
        let counts: BTreeMap<String, String> = result
            .as_array()?
            .iter()
            .filter_map(|series| {
                Some((
                    series["metric"]["instance"].as_str()?.to_owned(),
                    series["value"][1].as_str()?.to_owned(),
                ))
            })
            .collect();
        (counts.len() == AGENTS.len()).then_some(counts)
    });
    assert_eq!(counts, expected, "each agent exactly once");
    // And from the right collector.
    let jobs = prometheus.query("count by (job) (pantau_agent_up == 1)");
    let jobs: BTreeMap<String, String> = jobs
        .as_array()
        .expect("a vector")
        .iter()
        .map(|series| {
            (
                series["metric"]["job"].as_str().expect("job").to_owned(),
                series["value"][1].as_str().expect("value").to_owned(),
            )
        })
        .collect();
    assert_eq!(
        jobs.get("pantau-a").map(String::as_str),
        Some("2"),
        "{jobs:?}"
    );
    assert_eq!(
        jobs.get("pantau-b").map(String::as_str),
        Some("4"),
        "{jobs:?}"
    );

    // The old, wider subscription still delivers gor and bone to A: ignored and counted.
    let foreign = r#"pantau_collector_ignored_messages_total{reason="foreign_site"}"#;
    collector_a.wait_for_sample(foreign, WAIT, |n| n >= 4.0);
    assert_eq!(sample(&collector_b.metrics(), foreign), Some(0.0));
    assert!(
        !collector_a.metrics().contains(r#"instance="gor-srv-01""#),
        "a foreign agent reached A's state"
    );
}
