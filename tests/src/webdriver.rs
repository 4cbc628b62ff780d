//! A small blocking W3C WebDriver client for the console tests: starts Debian's `chromedriver`
//! on a free port (killed on drop), opens a headless Chromium session with its own profile in
//! the test's dir, and drives it: navigate, find, click, type, read text, cookies, screenshots.
//!
//! WebDriver is JSON over HTTP; `ureq` (already here for the other HTTP calls) is all it needs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};
use ureq::Agent;

use crate::{ChildGuard, TestDir, free_port, poll_until, wait_until};

/// The key of an element reference in W3C WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// A live browser session; ends the session and stops chromedriver when dropped.
pub struct Browser {
    agent: Agent,
    base: String,
    _driver: ChildGuard,
}

/// An element of the current page.
#[derive(Debug, Clone)]
pub struct Element(String);

impl Browser {
    /// chromedriver plus a headless Chromium with a fresh profile under `dir`.
    pub fn start(dir: &TestDir) -> Browser {
        let port = free_port();
        let logs = dir.join("chromedriver");
        std::fs::create_dir_all(&logs).expect("create the chromedriver log dir");
        let driver = ChildGuard::spawn(
            "chromedriver",
            Command::new("chromedriver")
                .arg(format!("--port={port}"))
                .arg("--allowed-ips=127.0.0.1"),
            &logs,
        );
        let agent: Agent = Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .proxy(None)
            .build()
            .into();
        let url = format!("http://127.0.0.1:{port}");
        wait_until("chromedriver to be ready", Duration::from_secs(20), || {
            let mut response = agent.get(&format!("{url}/status")).call().ok()?;
            let text = response.body_mut().read_to_string().ok()?;
            let value: Value = serde_json::from_str(&text).ok()?;
            (value["value"]["ready"] == true).then_some(())
        });
        let profile = dir.join("chromium-profile");
        std::fs::create_dir_all(&profile).expect("create the chromium profile dir");
        // No internet here: without these Chromium keeps trying to reach Google's services.
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1366,768",
        ]
        .iter()
        .map(|a| a.to_string())
        .chain([format!("--user-data-dir={}", profile.display())])
        .collect::<Vec<_>>();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": args}
        }}});
        let answer = send(
            &agent,
            "POST",
            &format!("{url}/session"),
            Some(&capabilities),
        )
        .expect("a WebDriver session");
        let session = answer["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        Browser {
            agent,
            base: format!("{url}/session/{session}"),
            _driver: driver,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        send(&self.agent, method, &format!("{}{path}", self.base), body)
    }

    fn must(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        self.call(method, path, body)
            .unwrap_or_else(|error| panic!("WebDriver {method} {path}: {error}"))
    }

    pub fn goto(&self, url: &str) {
        self.must("POST", "/url", Some(&json!({ "url": url })));
    }

    pub fn current_url(&self) -> String {
        self.must("GET", "/url", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The page's HTML as the browser has it now.
    pub fn source(&self) -> String {
        self.must("GET", "/source", None)
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The first element matching `css`, if any.
    pub fn find(&self, css: &str) -> Option<Element> {
        let value = self
            .call(
                "POST",
                "/element",
                Some(&json!({"using": "css selector", "value": css})),
            )
            .ok()?;
        value[ELEMENT].as_str().map(|id| Element(id.to_owned()))
    }

    /// Waits (bounded) for an element matching `css`.
    pub fn wait_for(&self, css: &str, timeout: Duration) -> Element {
        wait_until(&format!("element '{css}'"), timeout, || self.find(css))
    }

    pub fn click(&self, element: &Element) {
        self.must(
            "POST",
            &format!("/element/{}/click", element.0),
            Some(&json!({})),
        );
    }

    pub fn type_text(&self, element: &Element, text: &str) {
        self.must(
            "POST",
            &format!("/element/{}/value", element.0),
            Some(&json!({ "text": text })),
        );
    }

    pub fn text(&self, element: &Element) -> String {
        self.call("GET", &format!("/element/{}/text", element.0), None)
            .ok()
            .and_then(|value| value.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    /// Waits (bounded) until the first element matching `css` reads `expected`: after a click
    /// the old page may still be showing, with the same element and another text.
    pub fn wait_for_text(&self, css: &str, expected: &str, timeout: Duration) {
        let found = crate::poll_until(timeout, || (self.text_of(css) == expected).then_some(()));
        if found.is_none() {
            panic!(
                "'{css}' reads {:?}, not {expected:?}, after {timeout:?}",
                self.text_of(css)
            );
        }
    }

    /// The text of the first element matching `css`, or "" (also when the page reloaded
    /// between finding and reading).
    pub fn text_of(&self, css: &str) -> String {
        self.find(css)
            .map(|element| self.text(&element))
            .unwrap_or_default()
    }

    pub fn attribute(&self, element: &Element, name: &str) -> Option<String> {
        self.call(
            "GET",
            &format!("/element/{}/attribute/{name}", element.0),
            None,
        )
        .ok()?
        .as_str()
        .map(str::to_owned)
    }

    /// A cookie's value (HttpOnly ones too: WebDriver sees them, page scripts do not).
    pub fn cookie(&self, name: &str) -> Option<String> {
        let value = self.call("GET", &format!("/cookie/{name}"), None).ok()?;
        value["value"].as_str().map(str::to_owned)
    }

    pub fn delete_cookies(&self) {
        self.must("DELETE", "/cookie", None);
    }

    /// Runs `script` in the page and returns its value.
    pub fn execute(&self, script: &str) -> Value {
        self.must(
            "POST",
            "/execute/sync",
            Some(&json!({"script": script, "args": []})),
        )
    }

    /// Makes the viewport `width`×`height` CSS pixels (the window is sized so that the inner
    /// size matches).
    pub fn viewport(&self, width: i64, height: i64) {
        let (mut outer_w, mut outer_h) = (width, height);
        for _ in 0..3 {
            self.must(
                "POST",
                "/window/rect",
                Some(&json!({"width": outer_w, "height": outer_h})),
            );
            let inner = self.execute("return [window.innerWidth, window.innerHeight];");
            let (w, h) = (
                inner[0].as_i64().unwrap_or(0),
                inner[1].as_i64().unwrap_or(0),
            );
            if (w, h) == (width, height) {
                return;
            }
            outer_w += width - w;
            outer_h += height - h;
        }
    }

    /// Saves a PNG of the viewport to `path`.
    pub fn screenshot(&self, path: &Path) {
        use base64::Engine;
        let value = self.must("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(value.as_str().expect("base64 PNG"))
            .expect("a valid base64 screenshot");
        std::fs::write(path, png).expect("write the screenshot");
    }

    /// Polls (bounded) until `url` is the current one's prefix.
    pub fn wait_for_url(&self, prefix: &str, timeout: Duration) -> String {
        poll_until(timeout, || {
            let url = self.current_url();
            url.starts_with(prefix).then_some(url)
        })
        .unwrap_or_else(|| {
            panic!(
                "the browser never went to {prefix}: at {}",
                self.current_url()
            )
        })
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends Chromium; chromedriver itself is killed by its guard.
        let _ = send(&self.agent, "DELETE", &self.base, None);
    }
}

/// Where screenshots go: `$PANTAU_ARTIFACTS_DIR/console-screenshots` or
/// `target/console-screenshots`.
pub fn screenshot_dir() -> PathBuf {
    let dir = match std::env::var_os("PANTAU_ARTIFACTS_DIR") {
        Some(dir) => PathBuf::from(dir).join("console-screenshots"),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/console-screenshots"),
    };
    std::fs::create_dir_all(&dir).expect("create the screenshot dir");
    dir
}

fn send(agent: &Agent, method: &str, url: &str, body: Option<&Value>) -> Result<Value, String> {
    let result = match method {
        "GET" => agent.get(url).call(),
        "DELETE" => agent.delete(url).call(),
        _ => agent
            .post(url)
            .header("Content-Type", "application/json")
            .send(&serde_json::to_vec(body.unwrap_or(&json!({}))).unwrap_or_default()[..]),
    };
    let mut response = result.map_err(|error| format!("{method} {url}: {error}"))?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .read_to_string()
        .map_err(|error| format!("{method} {url}: {error}"))?;
    let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if status != 200 {
        return Err(format!(
            "{status}: {} {}",
            value["value"]["error"], value["value"]["message"]
        ));
    }
    Ok(value["value"].clone())
}
