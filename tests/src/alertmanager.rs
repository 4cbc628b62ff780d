//! A real Alertmanager per test, delivering to a webhook.

use std::fs;
use std::process::Command;
use std::time::Duration;

use tempfile::TempDir;

use crate::http::http_get;
use crate::process::{ChildGuard, start_on_free_port, wait_ready};

/// How long Alertmanager gets to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `prometheus-alertmanager` on 127.0.0.1 without clustering, stopped on drop.
///
/// One route sends every alert to one webhook, grouped by `alertname`, with `group_wait: 1s`,
/// `group_interval: 1s` (so a test sees a notification about a second after an alert arrives)
/// and `send_resolved: true`.
#[derive(Debug)]
pub struct Alertmanager {
    // Dropped before the temp dir.
    child: ChildGuard,
    port: u16,
    _dir: TempDir,
}

impl Alertmanager {
    /// Starts Alertmanager delivering notifications to `webhook_url` (usually
    /// [`crate::WebhookReceiver::url`]) and waits until `/-/ready` answers 200.
    pub fn start(webhook_url: &str) -> Alertmanager {
        Alertmanager::start_with_bearer(webhook_url, None)
    }

    /// As [`Alertmanager::start`], sending `Authorization: Bearer <token>` with each
    /// notification when a token is given.
    pub fn start_with_bearer(webhook_url: &str, token: Option<&str>) -> Alertmanager {
        let url = serde_json::to_string(webhook_url).expect("serialize a string");
        let auth = token.map_or(String::new(), |token| {
            let token = serde_json::to_string(token).expect("serialize a string");
            format!(
                "        http_config:
          authorization:
            type: Bearer
            credentials: {token}
"
            )
        });
        let yaml = format!(
            "route:
  receiver: webhook
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: webhook
    webhook_configs:
      - url: {url}
        send_resolved: true
{auth}"
        );
        Alertmanager::start_config(&yaml)
    }

    /// Starts Alertmanager with `yaml` as its whole configuration (routes, receivers,
    /// inhibition), e.g. the shipped dashboards/alertmanager/alertmanager.yml with its addresses
    /// pointed at the test's own services.
    pub fn start_config(yaml: &str) -> Alertmanager {
        let dir = tempfile::Builder::new()
            .prefix("pantau-alertmanager-")
            .tempdir()
            .expect("create a temp dir for alertmanager");
        let config = dir.path().join("alertmanager.yml");
        fs::write(&config, yaml).unwrap_or_else(|err| panic!("write {}: {err}", config.display()));
        let (child, port) = start_on_free_port("alertmanager", |port| {
            let mut child = ChildGuard::spawn(
                "alertmanager",
                Command::new("prometheus-alertmanager")
                    .arg(format!("--config.file={}", config.display()))
                    .arg(format!(
                        "--storage.path={}",
                        dir.path().join("data").display()
                    ))
                    .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                    // Empty disables clustering, which would otherwise bind 0.0.0.0:9094.
                    .arg("--cluster.listen-address="),
                dir.path(),
            );
            let ready = format!("http://127.0.0.1:{port}/-/ready");
            wait_ready(&mut child, START_TIMEOUT, || {
                matches!(http_get(&ready), Ok((200, _)))
            })
            .map(|()| (child, port))
        });
        Alertmanager {
            child,
            port,
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:PORT`; alerts are posted to `{url}/api/v2/alerts`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The HTTP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Alertmanager's output so far.
    pub fn logs(&self) -> String {
        self.child.logs()
    }
}
