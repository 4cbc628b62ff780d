//! A real Prometheus server per test: scrapes, remote-write receiver, rules, queries.

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use crate::alertmanager::Alertmanager;
use crate::http::{encode_query_value, http_get};
use crate::process::{ChildGuard, start_on_free_port, wait_ready};
use crate::wait::poll_until;

/// How long Prometheus gets to open its TSDB and become ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long Prometheus gets to report its configured targets and Alertmanagers as active.
/// Its service discovery publishes the first targets after 5 s (hard-coded in 2.42).
const DISCOVERY_TIMEOUT: Duration = Duration::from_secs(20);

/// What Prometheus should scrape and where it should send alerts; start with
/// [`Prometheus::builder`]. Scrape and rule evaluation intervals are 1 s.
#[derive(Debug, Default, Clone)]
pub struct PrometheusBuilder {
    jobs: Vec<(String, String, String)>,
    scrape_self: bool,
    out_of_order_time_window: Option<String>,
    rule_files: Vec<PathBuf>,
    alertmanager_ports: Vec<u16>,
    extra_yaml: String,
}

impl PrometheusBuilder {
    /// Adds a scrape job `job` for `target` (`"127.0.0.1:PORT"`) at `/metrics`, with
    /// `honor_labels: true` so a per-agent `instance` label from the collector survives.
    /// Job names must be unique.
    pub fn scrape(self, job: &str, target: &str) -> PrometheusBuilder {
        self.scrape_path(job, target, "/metrics")
    }

    /// [`PrometheusBuilder::scrape`] with another metrics path.
    pub fn scrape_path(mut self, job: &str, target: &str, path: &str) -> PrometheusBuilder {
        self.jobs
            .push((job.to_owned(), target.to_owned(), path.to_owned()));
        self
    }

    /// Adds job `prometheus` scraping this server's own `/metrics`.
    pub fn scrape_self(mut self) -> PrometheusBuilder {
        self.scrape_self = true;
        self
    }

    /// Accepts samples older than the head block by up to `window` (e.g. `"2h"`): history
    /// replayed by remote write after an outage.
    pub fn out_of_order_time_window(mut self, window: &str) -> PrometheusBuilder {
        self.out_of_order_time_window = Some(window.to_owned());
        self
    }

    /// Loads a rule file (alerting or recording rules), evaluated every second.
    pub fn rule_file(mut self, path: impl Into<PathBuf>) -> PrometheusBuilder {
        self.rule_files.push(path.into());
        self
    }

    /// Sends firing alerts to `alertmanager`.
    pub fn alertmanager(mut self, alertmanager: &Alertmanager) -> PrometheusBuilder {
        self.alertmanager_ports.push(alertmanager.port());
        self
    }

    /// Appends `yaml` to the config file as further top-level sections (e.g. `remote_write:`).
    /// It must not repeat a section the builder writes (`global`, `scrape_configs`, `storage`,
    /// `rule_files`, `alerting`).
    pub fn extra_yaml(mut self, yaml: &str) -> PrometheusBuilder {
        self.extra_yaml.push_str(yaml);
        self.extra_yaml.push('\n');
        self
    }

    /// Writes the config, starts `prometheus` with `--web.enable-remote-write-receiver`, waits
    /// until `/-/ready` answers 200, and then until every scrape target and Alertmanager is
    /// active. That last wait takes about 5 s (Prometheus's service discovery publishes its
    /// first targets after 5 s); a server with neither is ready in well under a second.
    pub fn start(self) -> Prometheus {
        self.launch(None)
    }

    /// As [`PrometheusBuilder::start`], on `port` of 127.0.0.1 (one a collector was told to
    /// send to before Prometheus ran).
    ///
    /// # Panics
    /// When the port is taken.
    pub fn start_on(self, port: u16) -> Prometheus {
        self.launch(Some(port))
    }

    fn launch(self, fixed_port: Option<u16>) -> Prometheus {
        let dir = tempfile::Builder::new()
            .prefix("pantau-prometheus-")
            .tempdir()
            .expect("create a temp dir for prometheus");
        let attempt = |port: u16| {
            let config = dir.path().join("prometheus.yml");
            fs::write(&config, self.config(port))
                .unwrap_or_else(|err| panic!("write {}: {err}", config.display()));
            let mut child = ChildGuard::spawn(
                "prometheus",
                Command::new("prometheus")
                    .arg(format!("--config.file={}", config.display()))
                    .arg(format!(
                        "--storage.tsdb.path={}",
                        dir.path().join("data").display()
                    ))
                    .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                    .arg("--web.enable-remote-write-receiver")
                    // Re-send firing alerts every second instead of every minute: an alert
                    // that fired before the Alertmanager was discovered arrives a second later.
                    .arg("--rules.alert.resend-delay=1s"),
                dir.path(),
            );
            let ready = format!("http://127.0.0.1:{port}/-/ready");
            wait_ready(&mut child, START_TIMEOUT, || {
                matches!(http_get(&ready), Ok((200, _)))
            })
            .map(|()| (child, port))
        };
        let (child, port) = match fixed_port {
            None => start_on_free_port("prometheus", attempt),
            Some(port) => attempt(port)
                .unwrap_or_else(|_| panic!("prometheus: port {port} is taken by another process")),
        };
        let prometheus = Prometheus {
            child,
            port,
            _dir: dir,
        };
        self.wait_discovered(&prometheus);
        prometheus
    }

    /// Waits until every scrape target and Alertmanager is active, so that a test's timeouts
    /// start counting from a server that is really scraping and alerting.
    fn wait_discovered(&self, prometheus: &Prometheus) {
        let targets = self.jobs.len() + usize::from(self.scrape_self);
        let alertmanagers = self.alertmanager_ports.len();
        if targets == 0 && alertmanagers == 0 {
            return;
        }
        let active = |path: &str, key: &str| -> usize {
            let Ok((200, body)) = http_get(&format!("{}{path}", prometheus.url())) else {
                return 0;
            };
            let answer: Value = serde_json::from_str(&body).unwrap_or_default();
            answer["data"][key].as_array().map_or(0, Vec::len)
        };
        let discovered = poll_until(DISCOVERY_TIMEOUT, || {
            let done = active("/api/v1/targets?state=active", "activeTargets") >= targets
                && active("/api/v1/alertmanagers", "activeAlertmanagers") >= alertmanagers;
            done.then_some(())
        });
        if discovered.is_none() {
            panic!(
                "prometheus did not report {targets} scrape targets and {alertmanagers} \
                 alertmanagers as active within {DISCOVERY_TIMEOUT:?}\n{}",
                prometheus.logs()
            );
        }
    }

    fn config(&self, port: u16) -> String {
        // Strings are written as JSON strings, which are valid YAML scalars.
        let quote = |text: &str| serde_json::to_string(text).expect("serialize a string");
        let mut yaml = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n",
        );
        let own_target = format!("127.0.0.1:{port}");
        let own_job = self
            .scrape_self
            .then(|| ("prometheus".to_owned(), own_target, "/metrics".to_owned()));
        yaml.push_str("scrape_configs:\n");
        if self.jobs.is_empty() && own_job.is_none() {
            yaml.push_str("  []\n");
        }
        for (job, target, path) in self.jobs.iter().chain(own_job.as_ref()) {
            let _ = write!(
                yaml,
                "  - job_name: {}\n    honor_labels: true\n    metrics_path: {}\n    static_configs:\n      - targets: [{}]\n",
                quote(job),
                quote(path),
                quote(target),
            );
        }
        if let Some(window) = &self.out_of_order_time_window {
            let _ = write!(
                yaml,
                "storage:\n  tsdb:\n    out_of_order_time_window: {window}\n"
            );
        }
        if !self.rule_files.is_empty() {
            yaml.push_str("rule_files:\n");
            for path in &self.rule_files {
                let _ = writeln!(yaml, "  - {}", quote(&path.display().to_string()));
            }
        }
        if !self.alertmanager_ports.is_empty() {
            yaml.push_str(
                "alerting:\n  alertmanagers:\n    - static_configs:\n        - targets:\n",
            );
            for port in &self.alertmanager_ports {
                let _ = writeln!(yaml, "            - \"127.0.0.1:{port}\"");
            }
        }
        yaml.push_str(&self.extra_yaml);
        yaml
    }
}

/// A running `prometheus` on 127.0.0.1, stopped on drop.
#[derive(Debug)]
pub struct Prometheus {
    // Dropped before the temp dir.
    child: ChildGuard,
    port: u16,
    _dir: TempDir,
}

impl Prometheus {
    /// Options: `Prometheus::builder().scrape("collector", &target).start()`.
    pub fn builder() -> PrometheusBuilder {
        PrometheusBuilder::default()
    }

    /// A server that scrapes nothing; it still accepts remote write.
    pub fn start() -> Prometheus {
        PrometheusBuilder::default().start()
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The HTTP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:PORT/api/v1/write`, the remote-write endpoint.
    pub fn remote_write_url(&self) -> String {
        format!("{}/api/v1/write", self.url())
    }

    /// Prometheus's output so far.
    pub fn logs(&self) -> String {
        self.child.logs()
    }

    /// Runs an instant query now and returns `data.result` (an array of
    /// `{"metric": {...}, "value": [time, "value"]}` for a vector).
    ///
    /// # Panics
    /// When Prometheus does not answer `status: success` (a bad query is a bug in the test).
    pub fn query(&self, promql: &str) -> Value {
        let url = format!(
            "{}/api/v1/query?query={}",
            self.url(),
            encode_query_value(promql)
        );
        let (status, body) = http_get(&url).unwrap_or_else(|err| panic!("{err}\n{}", self.logs()));
        let mut answer: Value = serde_json::from_str(&body).unwrap_or_else(|err| {
            panic!("query {promql:?}: HTTP {status}, not JSON ({err}): {body}")
        });
        if status != 200 || answer["status"] != "success" {
            panic!("query {promql:?}: HTTP {status}: {body}");
        }
        answer["data"]["result"].take()
    }

    /// The raw samples of every series matching `selector` (e.g. `node_load1{job="pantau"}`)
    /// with timestamps in (`end` - `seconds`, `end`], as `(series labels, [(unix seconds,
    /// value)])`: an instant query of a range vector, which returns stored samples, not
    /// evaluated steps.
    pub fn raw_samples(
        &self,
        selector: &str,
        end: f64,
        seconds: u64,
    ) -> Vec<(Value, Vec<(f64, f64)>)> {
        let promql = format!("{selector}[{seconds}s]");
        let url = format!(
            "{}/api/v1/query?query={}&time={end:.3}",
            self.url(),
            encode_query_value(&promql)
        );
        let (status, body) = http_get(&url).unwrap_or_else(|err| panic!("{err}\n{}", self.logs()));
        let answer: Value = serde_json::from_str(&body).unwrap_or_else(|err| {
            panic!("query {promql:?}: HTTP {status}, not JSON ({err}): {body}")
        });
        if status != 200 || answer["status"] != "success" {
            panic!("query {promql:?}: HTTP {status}: {body}");
        }
        let series = answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        series
            .into_iter()
            .map(|series| {
                let points = series["values"]
                    .as_array()
                    .map(|values| {
                        values
                            .iter()
                            .filter_map(|point| {
                                let time = point[0].as_f64()?;
                                let value = point[1].as_str()?.parse().ok()?;
                                Some((time, value))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                (series["metric"].clone(), points)
            })
            .collect()
    }

    /// Repeats [`Prometheus::query`] until it returns a non-empty result, and returns it.
    ///
    /// # Panics
    /// When the result is still empty after `timeout`.
    pub fn wait_for_query(&self, promql: &str, timeout: Duration) -> Vec<Value> {
        let result = poll_until(timeout, || match self.query(promql) {
            Value::Array(series) if !series.is_empty() => Some(series),
            _ => None,
        });
        result.unwrap_or_else(|| {
            panic!(
                "query {promql:?} still empty after {timeout:?}\n{}",
                self.logs()
            )
        })
    }
}
