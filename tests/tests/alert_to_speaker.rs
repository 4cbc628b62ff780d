//! A link cut becomes a spoken announcement through the shipped alerting: a probe agent on the
//! data-centre side pings a host across a veth link this test owns; the link is cut; real
//! Prometheus, with the shipped rules (their `for:` shortened), fires LinkDown; real Alertmanager,
//! with the shipped routes and inhibitions, delivers it to the collector's webhook with the
//! token; the sound agent speaks it into the ALSA capture. The packet-loss alert across the same
//! link fires too but is inhibited by LinkDown, so it is never spoken.

use std::path::Path;
use std::time::Duration;

use pantau_tests::{
    Agent, Alertmanager, AudioCapture, Collector, Mosquitto, NetnsPair, Prometheus, TestDir,
    example_config, http_get, wait_until,
};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(60);
const KEY: &[u8] = b"kominfo-sound-key-for-tests-0001";
const TOKEN: &str = "alertmanager-token-0123456789";
const SPEAKER: &str = "alarm-sound";
const LINK: &str = "gor";
/// A chunk this loud is sound, not silence (full scale is 32767).
const LOUD: i32 = 1000;

fn dashboards(path: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../dashboards")
        .join(path)
}

/// The shipped rules with every `for: Nm` thirty times shorter (1m becomes 2s, 5m 10s), so the
/// order in which alerts fire is kept and the test takes seconds.
fn fast_rules(dir: &TestDir) -> std::path::PathBuf {
    let rules = std::fs::read_to_string(dashboards("prometheus/rules/pantau.rules.yml"))
        .expect("shipped rules");
    let fast: Vec<String> = rules
        .lines()
        .map(|line| {
            let Some(duration) = line.trim().strip_prefix("for: ") else {
                return line.to_owned();
            };
            let indent = &line[..line.len() - line.trim_start().len()];
            let seconds = match duration.split_at(duration.len() - 1) {
                (n, "m") => n.parse::<u64>().expect("minutes") * 60,
                (n, "h") => n.parse::<u64>().expect("hours") * 3600,
                _ => panic!("unexpected duration {duration}"),
            };
            format!("{indent}for: {}s", (seconds / 30).max(1))
        })
        .collect();
    dir.write("rules.yml", fast.join("\n"))
}

/// The shipped Alertmanager config, pointed at this test's collector and token file; the staff
/// mail receiver has no address here (no mail leaves the machine), and the speaker route takes
/// warnings too, so that only the inhibition stands between the loss alert and the speakers.
fn alertmanager_config(collector: &Collector, token_file: &Path) -> String {
    let shipped = std::fs::read_to_string(dashboards("alertmanager/alertmanager.yml"))
        .expect("shipped alertmanager config");
    let replace = |text: String, from: &str, to: &str| {
        assert!(
            text.contains(from),
            "the shipped config no longer has {from:?}"
        );
        text.replace(from, to)
    };
    let config = replace(
        shipped,
        "https://pantau-collector.kominfo.lan:9810/api/v1/alertmanager",
        &format!("{}/api/v1/alertmanager", collector.url()),
    );
    // This test's collector serves plain HTTP: no office CA to trust.
    let config = replace(
        config,
        "          tls_config:\n            ca_file: /etc/pantau/tls/ca.pem\n",
        "",
    );
    let config = replace(
        config,
        "/etc/prometheus/pantau-api-token",
        &token_file.display().to_string(),
    );
    let config = replace(
        config,
        "    email_configs:\n      - to: \"noc@kominfo.lan\"\n        send_resolved: true\n",
        "",
    );
    let config = replace(
        config,
        "matchers: [severity=\"critical\"]",
        "matchers: [severity=~\"critical|warning\"]",
    );
    replace(config, "group_wait: 5s", "group_wait: 1s")
}

fn announcements(collector: &Collector) -> Vec<Value> {
    let (status, body) = collector.api("/api/v1/announcements");
    assert_eq!(status, 200, "{body}");
    body["announcements"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[test]
fn a_cut_link_is_spoken_and_the_loss_behind_it_is_not() {
    let dir = TestDir::new();
    let ns = NetnsPair::new();
    let broker = Mosquitto::start();
    dir.write("sound.key", KEY);
    let token_file = dir.write("api-tokens", format!("{TOKEN}\n"));

    let collector_config = std::fs::read_to_string(example_config("collector.toml"))
        .expect("collector example")
        + &format!(
            r#"
[[announcements.alert_rules]]
name = "link-down"
alertname = "LinkDown"
message = "Perhatian: jaringan {{{{ $labels.link }}}} terputus"
targets = ["{SPEAKER}"]

[[announcements.alert_rules]]
name = "link-loss"
alertname = "LinkPacketLoss"
message = "Perhatian: paket hilang di jaringan {{{{ $labels.link }}}}"
targets = ["{SPEAKER}"]
"#
        );
    let collector_config = dir.write("collector.toml", collector_config);
    let key = dir.join("sound.key").display().to_string();
    let tokens = token_file.display().to_string();
    let storage = dir.join("storage").display().to_string();
    let collector = Collector::with_config(
        &dir,
        &broker,
        &collector_config,
        &[
            ("PANTAU_ANNOUNCEMENTS__KEY_FILE", key.as_str()),
            ("PANTAU_API__TOKEN_FILE", tokens.as_str()),
            ("PANTAU_STORAGE__DIR", storage.as_str()),
        ],
    );

    let probe_config = dir.write(
        "agent-probe.toml",
        format!(
            r#"[agent]
id = "dc-probe"
site = "dc"
interval_seconds = 1

[[probes]]
kind = "icmp"
name = "gor-ping"
target = "{far}"
link = "{LINK}"
count = 3
interval_seconds = 1
"#,
            far = ns.far_v4
        ),
    );
    let _probe = Agent::start_config(
        &dir,
        &probe_config.display().to_string(),
        "dc-probe",
        "dc",
        &broker.url(),
        1,
        &[],
    );

    let capture = AudioCapture::new(&dir);
    let _sound = Agent::start_sound(
        &dir,
        SPEAKER,
        "office",
        &broker.url(),
        &capture,
        &dir.join("sound.key"),
    );

    // Alertmanager's credentials_file holds exactly one token; the collector's token file also
    // holds the harness's viewer token.
    let webhook_token = dir.write("alertmanager-token", TOKEN);
    let alertmanager = Alertmanager::start_config(&alertmanager_config(&collector, &webhook_token));
    let prometheus = Prometheus::builder()
        .scrape("pantau", &collector.url().replace("http://", ""))
        .rule_file(fast_rules(&dir))
        .alertmanager(&alertmanager)
        .start();
    prometheus.wait_for_query(&format!(r#"probe_success{{link="{LINK}"}} == 1"#), WAIT);
    assert!(
        announcements(&collector).is_empty(),
        "nothing is spoken while the link is up"
    );

    ns.link_down();

    let spoken = wait_until("LinkDown to be announced", WAIT, || {
        announcements(&collector).into_iter().find(|a| {
            a["args"]["text"] == format!("Perhatian: jaringan {LINK} terputus")
                && a["targets"][0]["status"] == "finished"
        })
    });
    assert_eq!(spoken["args"]["priority"], "alert", "{spoken}");
    let loud: f64 = capture
        .loud_spans(LOUD, 25)
        .iter()
        .map(|(first, last)| last.time - first.time)
        .sum();
    assert!(loud > 1.0, "only {loud:.2} s of sound in the capture");

    // The loss alert fires in Prometheus and reaches Alertmanager, which holds it back.
    prometheus.wait_for_query(
        r#"ALERTS{alertname="LinkPacketLoss",alertstate="firing"}"#,
        WAIT,
    );
    let alerts_url = format!("{}/api/v2/alerts", alertmanager.url());
    wait_until("Alertmanager to inhibit the loss alert", WAIT, || {
        let (_, body) = http_get(&alerts_url).ok()?;
        let alerts: Value = serde_json::from_str(&body).ok()?;
        alerts.as_array()?.iter().find_map(|alert| {
            (alert["labels"]["alertname"] == "LinkPacketLoss"
                && alert["status"]["state"] == "suppressed"
                && alert["status"]["inhibitedBy"]
                    .as_array()
                    .is_some_and(|by| !by.is_empty()))
            .then_some(())
        })
    });
    // Give a wrongly delivered loss alert the time Alertmanager would have needed (group_wait
    // 1s, group_interval 1m is not involved for a first notification) before looking.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        let texts: Vec<String> = announcements(&collector)
            .iter()
            .filter_map(|a| a["args"]["text"].as_str().map(str::to_owned))
            .collect();
        assert!(
            !texts.iter().any(|t| t.contains("paket hilang")),
            "the inhibited loss alert was spoken: {texts:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let (_, audit) = collector.api("/api/v1/audit");
    assert!(
        !audit.to_string().contains("LinkPacketLoss"),
        "the loss alert reached the collector: {audit}"
    );
}
