//! A real browser for the tests: headless Chromium driven by `chromedriver` over the W3C
//! WebDriver protocol (JSON over HTTP on loopback), with only the commands the tests use.
//! Debian's `chromium` and `chromium-driver` packages provide both (`.ci/run` installs them).
//!
//! [`Browser::start`] returns `None` (the test reports itself skipped) when there is no
//! `chromedriver` to run, except where a browser is required (`CI=true` or
//! `OUTPOST_REQUIRE_BROWSER=1`), where it panics.

use crate::process::ChildGuard;
use base64::Engine as _;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A browser session; ends (and its driver with it) when dropped.
#[derive(Debug)]
pub struct Browser {
    agent: ureq::Agent,
    /// `http://127.0.0.1:{port}/session/{id}`.
    session: String,
    downloads: tempfile::TempDir,
    _profile: tempfile::TempDir,
    _driver: ChildGuard,
}

/// An element of the page, as WebDriver names it.
#[derive(Debug, Clone)]
pub struct Element(String);

const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";

fn required() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true") || std::env::var("OUTPOST_REQUIRE_BROWSER").is_ok_and(|v| v == "1")
}

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).flat_map(|dir| names.iter().map(move |n| dir.join(n))).find(|p| p.is_file())
}

impl Browser {
    /// Starts `chromedriver` on a free port and opens a headless Chromium window of 1280×900.
    pub fn start(test: &str) -> Option<Browser> {
        let Some(driver) = find_program(&["chromedriver"]) else {
            assert!(!required(), "{test}: no `chromedriver` on PATH (install Debian's chromium and chromium-driver)");
            eprintln!("SKIPPED {test}: no `chromedriver` on PATH");
            return None;
        };
        let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port();
        let mut command = Command::new(driver);
        command.arg(format!("--port={port}")).stdout(Stdio::null()).stderr(Stdio::null());
        let driver = ChildGuard::spawn("chromedriver", &mut command);
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while agent.get(format!("{base}/status")).call().map_or(true, |r| r.status() != 200) {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().expect("a profile directory");
        let downloads = tempfile::tempdir().expect("a download directory");
        let mut args: Vec<String> = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            "--window-size=1280,900",
        ]
        .map(str::to_owned)
        .to_vec();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let mut options = json!({
            "args": args,
            "prefs": {
                "download.default_directory": downloads.path(),
                "download.prompt_for_download": false,
            },
        });
        if let Some(chromium) = find_program(&["chromium", "chromium-browser"]) {
            options["binary"] = json!(chromium);
        }
        let capabilities =
            json!({"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": options}}});
        let answer = post(&agent, &format!("{base}/session"), &capabilities);
        let id = answer["sessionId"].as_str().unwrap_or_else(|| panic!("no browser session: {answer}")).to_owned();
        Some(Browser { agent, session: format!("{base}/session/{id}"), downloads, _profile: profile, _driver: driver })
    }

    fn command(&self, path: &str, body: &Value) -> Value {
        post(&self.agent, &format!("{}{path}", self.session), body)
    }

    fn query(&self, path: &str) -> Value {
        let mut answer = self.agent.get(format!("{}{path}", self.session)).call().expect("a WebDriver command");
        value_of(&mut answer)
    }

    pub fn goto(&self, url: &str) {
        self.command("/url", &json!({"url": url}));
    }

    pub fn url(&self) -> String {
        self.query("/url").as_str().unwrap_or_default().to_owned()
    }

    /// The page's HTML as the browser holds it now.
    pub fn source(&self) -> String {
        self.query("/source").as_str().unwrap_or_default().to_owned()
    }

    pub fn find(&self, css: &str) -> Option<Element> {
        let answer = self.command("/element", &json!({"using": "css selector", "value": css}));
        answer[ELEMENT_KEY].as_str().map(|id| Element(id.to_owned()))
    }

    /// The element, once it is on the page (within 20 s).
    pub fn wait_for(&self, css: &str) -> Element {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(element) = self.find(css) {
                return element;
            }
            assert!(Instant::now() < deadline, "no `{css}` on {} after 20 s: {}", self.url(), self.source());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn click(&self, element: &Element) {
        self.command(&format!("/element/{}/click", element.0), &json!({}));
    }

    pub fn type_into(&self, element: &Element, text: &str) {
        self.command(&format!("/element/{}/value", element.0), &json!({"text": text}));
    }

    pub fn text(&self, element: &Element) -> String {
        self.query(&format!("/element/{}/text", element.0)).as_str().unwrap_or_default().to_owned()
    }

    /// A CSS property as the browser computed it (a colour reads `rgb(r, g, b)`).
    pub fn css(&self, element: &Element, property: &str) -> String {
        self.query(&format!("/element/{}/css/{property}", element.0)).as_str().unwrap_or_default().to_owned()
    }

    /// Saves what the window shows as a PNG file.
    pub fn screenshot(&self, path: &Path) {
        let answer = self.query("/screenshot");
        let png = base64::engine::general_purpose::STANDARD.decode(answer.as_str().unwrap_or_default()).expect("a PNG");
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).expect("the screenshot's directory");
        }
        std::fs::write(path, png).expect("write the screenshot");
    }

    /// A file the browser downloaded, once it is complete (within 20 s).
    pub fn downloaded(&self, name: &str) -> String {
        let path = self.downloads.path().join(name);
        let deadline = Instant::now() + Duration::from_secs(20);
        while !path.is_file() {
            assert!(Instant::now() < deadline, "the browser did not download {name}");
            std::thread::sleep(Duration::from_millis(100));
        }
        std::fs::read_to_string(path).expect("read the download")
    }
}

fn post(agent: &ureq::Agent, url: &str, body: &Value) -> Value {
    let mut answer = agent
        .post(url)
        .content_type("application/json")
        .send(body.to_string())
        .unwrap_or_else(|e| panic!("WebDriver {url}: {e}"));
    value_of(&mut answer)
}

fn value_of(answer: &mut ureq::http::Response<ureq::Body>) -> Value {
    let text = answer.body_mut().with_config().limit(64 << 20).read_to_string().expect("a WebDriver answer");
    let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("a WebDriver answer ({e}): {text}"));
    value["value"].clone()
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.agent.delete(&self.session).call();
    }
}
