//! A real browser for the tests: Debian's chromium, headless, driven by chromedriver over the W3C
//! WebDriver protocol (plain JSON over HTTP on loopback). Each browser has its own empty profile and
//! is stopped when dropped.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};

/// The (program, Debian package) pairs a browser test needs.
pub const TOOLS: &[(&str, &str)] = &[
    ("chromium", "chromium"),
    ("chromedriver", "chromium-driver"),
];

/// The W3C element reference key.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    base: String,
    profile: tempfile::TempDir,
}

impl Browser {
    /// Starts chromium with `names` resolved to 127.0.0.1 (where the tests forward the guest's
    /// ports), accepting the test's certificates (the tests check chains with curl).
    pub fn start(names: &[&str]) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().unwrap();
        let downloads = profile.path().join("downloads");
        std::fs::create_dir_all(&downloads).unwrap();
        let rules = names
            .iter()
            .map(|name| format!("MAP {name} 127.0.0.1"))
            .collect::<Vec<_>>()
            .join(",");
        // As root and in a closed network: no sandbox, no background connections to Google.
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--window-size=1200,900".into(),
            format!("--user-data-dir={}", profile.path().display()),
            format!("--host-resolver-rules={rules}"),
        ];
        let mut browser = Browser {
            driver,
            base,
            profile,
        };
        let created = browser.call(
            "POST",
            "/session",
            json!({"capabilities": {"alwaysMatch": {
                "browserName": "chrome",
                "acceptInsecureCerts": true,
                "goog:chromeOptions": {
                    "binary": "/usr/bin/chromium",
                    "args": args,
                    "prefs": {
                        "download.default_directory": downloads,
                        "download.prompt_for_download": false,
                    },
                },
            }}}),
        );
        let session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {created}"))
            .to_string();
        browser.base = format!("{}/session/{session}", browser.base);
        browser
    }

    fn call(&self, method: &str, path: &str, body: Value) -> Value {
        self.try_call(method, path, body)
            .unwrap_or_else(|error| panic!("WebDriver {method} {path}: {error}"))
    }

    /// One WebDriver command; Err with the driver's error when it answers with one.
    fn try_call(&self, method: &str, path: &str, body: Value) -> Result<Value, String> {
        let url = format!("{}{path}", self.base);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(240)))
            .http_status_as_error(false)
            .build()
            .into();
        let mut response = match method {
            "GET" => agent.get(&url).call(),
            "DELETE" => agent.delete(&url).call(),
            _ => agent
                .post(&url)
                .header("content-type", "application/json")
                .send(body.to_string()),
        }
        .map_err(|e| e.to_string())?;
        let text = response
            .body_mut()
            .read_to_string()
            .map_err(|e| e.to_string())?;
        let answer: Value =
            serde_json::from_str(&text).map_err(|e| format!("no JSON ({e}): {text}"))?;
        if response.status().as_u16() >= 400 {
            return Err(answer["value"].to_string());
        }
        Ok(answer["value"].clone())
    }

    pub fn goto(&self, url: &str) {
        self.call("POST", "/url", json!({ "url": url }));
    }

    /// Loads `url`; Err with the browser's reason when the page did not load (the server was
    /// restarting, say).
    pub fn try_goto(&self, url: &str) -> Result<(), String> {
        self.try_call("POST", "/url", json!({ "url": url }))
            .map(drop)
    }

    pub fn url(&self) -> String {
        self.call("GET", "/url", Value::Null)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The element the CSS selector finds first; panics with the page's text when none.
    pub fn find(&self, css: &str) -> String {
        let found = self.find_all(css);
        found.into_iter().next().unwrap_or_else(|| {
            panic!(
                "no element matches {css} on {}:\n{}",
                self.url(),
                self.text()
            )
        })
    }

    pub fn find_all(&self, css: &str) -> Vec<String> {
        let found = self.call(
            "POST",
            "/elements",
            json!({"using": "css selector", "value": css}),
        );
        found
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e[ELEMENT].as_str().map(str::to_string))
            .collect()
    }

    /// Types `text` into the field `css` finds (after clearing it).
    pub fn fill(&self, css: &str, text: &str) {
        let element = self.find(css);
        self.call("POST", &format!("/element/{element}/clear"), json!({}));
        self.call(
            "POST",
            &format!("/element/{element}/value"),
            json!({ "text": text }),
        );
    }

    pub fn click(&self, css: &str) {
        let element = self.find(css);
        self.click_element(&element);
    }

    /// Clicks what submits a form and waits until the browser shows the answer: the old page's
    /// document is gone (a click returns before a slow server has answered).
    pub fn click_and_wait(&self, css: &str) {
        let old_page = self.find("html");
        self.click(css);
        let deadline = Instant::now() + Duration::from_secs(240);
        while self
            .try_call("GET", &format!("/element/{old_page}/name"), Value::Null)
            .is_ok()
        {
            assert!(
                Instant::now() < deadline,
                "the page did not change after clicking {css}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn click_element(&self, element: &str) {
        self.call("POST", &format!("/element/{element}/click"), json!({}));
    }

    /// The text of the page as shown.
    pub fn text(&self) -> String {
        let body = self.call(
            "POST",
            "/element",
            json!({"using": "css selector", "value": "body"}),
        );
        let Some(id) = body[ELEMENT].as_str() else {
            return String::new();
        };
        self.call("GET", &format!("/element/{id}/text"), Value::Null)
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// The cookies of the current page, as WebDriver reports them (name, httpOnly, secure, sameSite).
    pub fn cookies(&self) -> Vec<Value> {
        self.call("GET", "/cookie", Value::Null)
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The file whose name ends with `suffix` in the download folder, once chromium has finished
    /// writing it (its partial `.crdownload` is gone).
    pub fn downloaded(&self, suffix: &str, timeout: Duration) -> std::path::PathBuf {
        let dir = self.profile.path().join("downloads");
        let deadline = Instant::now() + timeout;
        loop {
            let names: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
                .unwrap()
                .flatten()
                .map(|e| e.path())
                .collect();
            let partial = names
                .iter()
                .any(|p| p.to_string_lossy().ends_with(".crdownload"));
            if let Some(done) = names.iter().find(|p| p.to_string_lossy().ends_with(suffix)) {
                if !partial {
                    return done.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "no download ending with {suffix}: {names:?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Saves the viewport as a PNG.
    pub fn screenshot(&self, path: &Path) {
        let data = self.call("GET", "/screenshot", Value::Null);
        let png = base64::engine::general_purpose::STANDARD
            .decode(data.as_str().unwrap_or_default())
            .expect("a base64 screenshot");
        std::fs::write(path, png).unwrap();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends the session (chromium quits); errors do not matter here.
        let _ = ureq::delete(&self.base).call();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
