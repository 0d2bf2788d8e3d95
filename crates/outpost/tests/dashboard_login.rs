//! The central server's dashboard behind the administrator's login, over real HTTP to real
//! `outpost central serve` processes: a session cookie (`HttpOnly`, `SameSite=Strict`) that every
//! server process of one database accepts, CSRF tokens on every form, logout, a listener of its
//! own for the dashboard, and the pages a person reads when something is missing.

mod common;

use common::{on_each_backend, outpost, run, Backend, ChildGuard, Network, ADMIN_PASSWORD};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

on_each_backend!(
    the_dashboard_needs_a_login,
    a_wrong_admin_password_is_refused,
    logging_in_gives_a_strict_http_only_cookie_that_opens_the_dashboard,
    a_post_without_its_csrf_token_is_forbidden,
    logging_out_ends_the_session,
    a_session_works_on_every_server_process_of_one_database,
    a_database_without_an_administrator_says_how_to_set_one,
);

/// A browser without JavaScript: it keeps cookies, follows no redirect, and shows every answer.
struct Browser {
    agent: ureq::Agent,
    base: String,
    cookies: BTreeMap<String, String>,
}

/// One answer: the status, the headers a test looks at, the body.
#[derive(Debug)]
struct Page {
    status: u16,
    location: Option<String>,
    set_cookies: Vec<String>,
    retry_after: Option<String>,
    body: String,
}

impl Page {
    /// The `Set-Cookie` header that sets `name`.
    fn set_cookie(&self, name: &str) -> Option<&str> {
        self.set_cookies.iter().map(String::as_str).find(|c| c.starts_with(&format!("{name}=")))
    }

    /// The value of the hidden `csrf` field of the page's form.
    fn csrf(&self) -> String {
        let marker = "name=\"csrf\" value=\"";
        let start = self.body.find(marker).unwrap_or_else(|| panic!("no CSRF field in: {}", self.body)) + marker.len();
        self.body[start..].split('"').next().expect("a quoted value").to_owned()
    }

    fn error_code(&self) -> String {
        let body: protocol::ErrorBody =
            serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not a JSON error ({e}): {}", self.body));
        body.error.code
    }
}

impl Browser {
    fn new(base: &str) -> Browser {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        Browser { agent, base: base.trim_end_matches('/').to_owned(), cookies: BTreeMap::new() }
    }

    fn cookie_header(&self) -> String {
        self.cookies.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("; ")
    }

    fn get(&mut self, path: &str) -> Page {
        let request = self.agent.get(format!("{}{path}", self.base)).header("cookie", self.cookie_header());
        let page = Self::page(request.call().unwrap_or_else(|e| panic!("GET {path}: {e}")));
        self.keep(&page);
        page
    }

    fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={}", form_encode(v))).collect();
        let request = self
            .agent
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .content_type("application/x-www-form-urlencoded");
        let page = Self::page(request.send(body.join("&")).unwrap_or_else(|e| panic!("POST {path}: {e}")));
        self.keep(&page);
        page
    }

    fn page(mut response: ureq::http::Response<ureq::Body>) -> Page {
        let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (location, retry_after) = (header("location"), header("retry-after"));
        let set_cookies = response
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .map(str::to_owned)
            .collect();
        Page {
            status: response.status().as_u16(),
            location,
            set_cookies,
            retry_after,
            body: response.body_mut().read_to_string().unwrap_or_default(),
        }
    }

    /// Keeps what `Set-Cookie` sets, and forgets what it expires.
    fn keep(&mut self, page: &Page) {
        for cookie in &page.set_cookies {
            let pair = cookie.split(';').next().unwrap_or_default();
            let Some((name, value)) = pair.split_once('=') else { continue };
            if value.is_empty() || cookie.contains("Max-Age=0") {
                self.cookies.remove(name.trim());
            } else {
                self.cookies.insert(name.trim().to_owned(), value.trim().to_owned());
            }
        }
    }

    /// Opens the login page, then signs in with `password`.
    fn log_in(&mut self, password: &str) -> Page {
        let form = self.get("/login");
        assert_eq!(form.status, 200, "{}", form.body);
        self.post("/login", &[("password", password), ("csrf", &form.csrf())])
    }
}

fn form_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            b' ' => "+".to_owned(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// What a person reads on a page: its text, without the markup, one line per block.
fn visible_text(html: &str) -> String {
    let html = html.split("</head>").last().unwrap_or(html);
    let mut text = String::new();
    let mut in_tag = false;
    let mut tag = String::new();
    for c in html.chars() {
        match c {
            '<' => {
                in_tag = true;
                tag.clear();
            }
            '>' if in_tag => {
                in_tag = false;
                let name = tag.trim_start_matches('/').split([' ', '>']).next().unwrap_or_default();
                if matches!(name, "h1" | "h2" | "p" | "pre" | "form" | "label" | "button" | "tr" | "li" | "div") {
                    text.push('\n');
                }
            }
            c if in_tag => tag.push(c),
            c => text.push(c),
        }
    }
    let text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&amp;", "&");
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

fn the_dashboard_needs_a_login(backend: &Backend) {
    let network = Network::new(backend, &["north"]);
    let mut browser = Browser::new(&network.central.url());
    let page = browser.get("/");
    assert_eq!(page.status, 303, "the dashboard opened without a login: {}", page.body);
    assert_eq!(page.location.as_deref(), Some("/login"));
    let api = browser.get("/api/v1/dashboard");
    assert_eq!(api.status, 401, "{}", api.body);
    assert_eq!(api.error_code(), "unauthorized");
    assert!(!api.body.contains("north"), "the JSON view leaked without a login");
}

fn a_wrong_admin_password_is_refused(backend: &Backend) {
    let network = Network::new(backend, &["north"]);
    let mut browser = Browser::new(&network.central.url());
    let page = browser.log_in("not the password");
    assert_eq!(page.status, 401, "{}", page.body);
    assert!(page.set_cookie("outpost_session").is_none(), "a session for a wrong password: {:?}", page.set_cookies);
    assert!(visible_text(&page.body).contains("Wrong password"), "{}", page.body);
    assert_eq!(browser.get("/").status, 303);
}

fn logging_in_gives_a_strict_http_only_cookie_that_opens_the_dashboard(backend: &Backend) {
    let network = Network::new(backend, &["north"]);
    let mut browser = Browser::new(&network.central.url());
    let page = browser.log_in(ADMIN_PASSWORD);
    assert_eq!(page.status, 303, "{}", page.body);
    assert_eq!(page.location.as_deref(), Some("/"));
    let cookie = page.set_cookie("outpost_session").unwrap_or_else(|| panic!("no session: {:?}", page.set_cookies));
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.split("; ").any(|a| a == attribute), "`{attribute}` missing from `{cookie}`");
    }
    assert!(cookie.contains("Max-Age="), "the session expires: `{cookie}`");
    let dashboard = browser.get("/");
    assert_eq!(dashboard.status, 200, "{}", dashboard.body);
    assert!(dashboard.body.contains("<h2>Sites</h2>") && dashboard.body.contains("north"), "{}", dashboard.body);
    let api = browser.get("/api/v1/dashboard");
    assert_eq!(api.status, 200, "{}", api.body);
    let view: serde_json::Value = serde_json::from_str(&api.body).expect("the JSON view");
    assert_eq!(view["sites"][0]["site"], "north");
}

fn a_post_without_its_csrf_token_is_forbidden(backend: &Backend) {
    let network = Network::new(backend, &["north"]);
    let mut browser = Browser::new(&network.central.url());
    // The login form, without its token (as a page elsewhere would post it).
    browser.get("/login");
    let page = browser.post("/login", &[("password", ADMIN_PASSWORD)]);
    assert_eq!(page.status, 403, "{}", page.body);
    assert!(page.set_cookie("outpost_session").is_none());
    // Logout without the token, or with another session's, changes nothing.
    assert_eq!(browser.log_in(ADMIN_PASSWORD).status, 303);
    let mut other = Browser::new(&network.central.url());
    assert_eq!(other.log_in(ADMIN_PASSWORD).status, 303);
    let others_token = other.get("/").csrf();
    assert_eq!(browser.post("/logout", &[]).status, 403);
    assert_eq!(browser.post("/logout", &[("csrf", &others_token)]).status, 403);
    assert_eq!(browser.get("/").status, 200, "a refused logout ended the session");
}

fn logging_out_ends_the_session(backend: &Backend) {
    let network = Network::new(backend, &["north"]);
    let mut browser = Browser::new(&network.central.url());
    assert_eq!(browser.log_in(ADMIN_PASSWORD).status, 303);
    let kept = browser.cookies.clone();
    let token = browser.get("/").csrf();
    let page = browser.post("/logout", &[("csrf", &token)]);
    assert_eq!(page.status, 303, "{}", page.body);
    assert_eq!(page.location.as_deref(), Some("/login"));
    assert_eq!(browser.get("/").status, 303, "the browser is logged out");
    // A copy of the cookie from before the logout opens nothing either.
    let mut copy = Browser::new(&network.central.url());
    copy.cookies = kept;
    assert_eq!(copy.get("/").status, 303, "a session outlived its logout");
    assert_eq!(copy.get("/api/v1/dashboard").status, 401);
}

fn a_session_works_on_every_server_process_of_one_database(backend: &Backend) {
    let network = Network::new(backend, &["north"]);
    let mut second = network.central.another_server("second");
    let second_url = second.start();
    let mut browser = Browser::new(&network.central.url());
    assert_eq!(browser.log_in(ADMIN_PASSWORD).status, 303);
    let mut elsewhere = Browser::new(&second_url);
    elsewhere.cookies = browser.cookies.clone();
    assert_eq!(elsewhere.get("/").status, 200, "the other process refused the session");
    // Logging out on one process ends the session on the other.
    let token = elsewhere.get("/").csrf();
    assert_eq!(elsewhere.post("/logout", &[("csrf", &token)]).status, 303);
    assert_eq!(browser.get("/").status, 303, "the first process still accepts a session ended on the second");
}

fn a_database_without_an_administrator_says_how_to_set_one(backend: &Backend) {
    let network = Network::new(backend, &["north"]);
    let central = &network.central;
    // A database made before there were administrators.
    central.db.execute("DELETE FROM state WHERE key = 'admin_password_hash'");
    let mut browser = Browser::new(&central.url());
    let page = browser.get("/");
    assert_eq!(page.status, 503, "{}", page.body);
    expect_text(
        &page.body,
        "No administrator yet
This central server has no administrator password, so its dashboard stays closed.
On the server, set one with:
outpost central admin set-password --data DIR
(or --database URL for PostgreSQL). The password is read from a prompt, from --admin-password-file FILE, or from OUTPOST_ADMIN_PASSWORD.
Then reload this page.",
    );
    assert_eq!(browser.get("/login").status, 503);
    assert_eq!(browser.post("/login", &[("password", "anything"), ("csrf", "x")]).status, 503);
    let api = browser.get("/api/v1/dashboard");
    assert_eq!((api.status, api.error_code().as_str()), (503, "no_administrator"));

    // The operator sets one; the running server takes it at once.
    let set = run(
        "central admin set-password",
        outpost()
            .args(["central", "admin", "set-password"])
            .args(central.db.args())
            .env("OUTPOST_ADMIN_PASSWORD", "a new admin passphrase"),
    )
    .ok();
    assert!(set.stdout.contains("administrator password set"), "{}", set.stdout);
    assert_eq!(browser.log_in("a new admin passphrase").status, 303);
    assert_eq!(browser.get("/").status, 200);
    // A new password ends the sessions opened with the old one.
    run(
        "central admin set-password",
        outpost()
            .args(["central", "admin", "set-password"])
            .args(central.db.args())
            .env("OUTPOST_ADMIN_PASSWORD", "yet another passphrase"),
    )
    .ok();
    assert_eq!(browser.get("/").status, 303, "a session outlived a new administrator password");
}

/// Panics, showing both texts, unless the page reads exactly as `expected`.
fn expect_text(html: &str, expected: &str) {
    let actual = visible_text(html);
    assert_eq!(actual, expected, "the page reads:\n{actual}\n\nexpected:\n{expected}");
}

#[test]
fn the_login_page_reads_well() {
    let network = Network::new(&Backend::Sqlite, &[]);
    let mut browser = Browser::new(&network.central.url());
    let page = browser.get("/login");
    assert_eq!(page.status, 200);
    assert!(page.body.contains(r#"<form method="post" action="/login">"#), "{}", page.body);
    assert!(!page.body.contains("http://") && !page.body.contains("https://"), "the page loads nothing from elsewhere");
    expect_text(
        &page.body,
        "Outpost central server
Sign in as the administrator to see the dashboard.
Administrator password
Sign in
Forgot the password? On the server, set a new one with outpost central admin set-password --data DIR.",
    );
    let wrong = browser.post("/login", &[("password", "nope"), ("csrf", &page.csrf())]);
    assert!(visible_text(&wrong.body).starts_with("Outpost central server\nWrong password."), "{}", wrong.body);
}

#[test]
fn central_init_says_how_to_log_in_and_never_takes_the_password_from_the_command_line() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let data = dir.path().join("central");
    let init = |env: Option<&str>, extra: &[&std::ffi::OsStr]| {
        let mut command = outpost();
        command.args(["central", "init", "--data"]).arg(&data).args(extra);
        if let Some(password) = env {
            command.env("OUTPOST_ADMIN_PASSWORD", password);
        }
        run("central init", &mut command)
    };
    // No password at all: refused, saying where one comes from, and nothing is created.
    let refused = init(None, &[]).failed();
    assert_eq!(
        refused.stderr.trim(),
        "error: no administrator password given (set OUTPOST_ADMIN_PASSWORD, use --admin-password-file FILE, or type it)"
    );
    assert!(!data.join("outpost.sqlite").exists(), "a half-made central server was left");
    let short = init(Some("short"), &[]).failed();
    assert!(short.stderr.contains("at least 10 characters"), "{}", short.stderr);

    let file = dir.path().join("admin-password");
    std::fs::write(&file, "from a file, kept safe\n").expect("write the password file");
    let made = init(None, &["--admin-password-file".as_ref(), file.as_os_str()]).ok();
    assert_eq!(
        made.stdout.replace(&data.display().to_string(), "DIR"),
        "central server `central` created in DIR
administrator password set: `outpost central serve` asks for it at /login before it shows the dashboard
"
    );
    // The password from the file opens the dashboard.
    let server = Serve::start(&data, &[]);
    let mut browser = Browser::new(&server.sync_url);
    assert_eq!(browser.log_in("from a file, kept safe").status, 303);
    assert_eq!(browser.get("/").status, 200);
}

/// `outpost central serve` with extra arguments, and the addresses it prints.
struct Serve {
    sync_url: String,
    dashboard_url: String,
    _process: ChildGuard,
}

impl Serve {
    fn start(data: &std::path::Path, extra: &[&str]) -> Serve {
        let mut process = ChildGuard::spawn(
            "central serve",
            outpost()
                .args(["central", "serve", "--listen", "127.0.0.1:0", "--data"])
                .arg(data)
                .args(extra)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::null()),
        );
        let stdout = process.take_stdout();
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let line = || receiver.recv_timeout(Duration::from_secs(20)).expect("a line").expect("readable");
        let first = line();
        let sync_url = first.strip_prefix("central server listening on ").expect(&first).trim().to_owned();
        let second = line();
        let dashboard_url =
            second.strip_prefix("dashboard on ").expect(&second).trim().trim_end_matches('/').to_owned();
        Serve { sync_url, dashboard_url, _process: process }
    }
}

#[test]
fn the_dashboard_can_have_a_listener_of_its_own() {
    let network = Network::new(&Backend::Sqlite, &["north"]);
    let data = network.central.data().to_owned();
    let north = network.site("north");
    let server = Serve::start(&data, &["--dashboard-listen", "127.0.0.1:0"]);
    assert_ne!(server.sync_url, server.dashboard_url);

    // The sync listener serves the sync API only.
    let mut on_sync = Browser::new(&server.sync_url);
    for path in ["/", "/login", "/api/v1/dashboard"] {
        let page = on_sync.get(path);
        assert_eq!(page.status, 404, "{path} on the sync listener: {}", page.body);
        assert_eq!(page.error_code(), "not_found");
    }
    let http = common::Http::new(&server.sync_url);
    let status = http.get("/api/v1/sites/north/status", &common::good_headers("north", &north.password).as_refs());
    assert_eq!(status.status, 200);

    // The dashboard listener serves the login and the dashboard, and no sync API.
    let mut browser = Browser::new(&server.dashboard_url);
    assert_eq!(browser.log_in(ADMIN_PASSWORD).status, 303);
    assert_eq!(browser.get("/").status, 200);
    let http = common::Http::new(&server.dashboard_url);
    let status = http.get("/api/v1/sites/north/status", &common::good_headers("north", &north.password).as_refs());
    assert_eq!(status.status, 404, "the sync API answered on the dashboard listener");
}

#[test]
fn admin_logins_are_slowed_down_after_repeated_failures() {
    let network = Network::new(&Backend::Sqlite, &[]);
    let mut browser = Browser::new(&network.central.url());
    let mut refused = None;
    for i in 0..30 {
        let page = browser.log_in(&format!("guess number {i}"));
        if page.status == 429 {
            refused = Some(page);
            break;
        }
        assert_eq!(page.status, 401, "{}", page.body);
    }
    let page = refused.expect("thirty wrong administrator passwords in a row are slowed down");
    assert!(page.retry_after.as_ref().is_some_and(|s| s.parse::<u64>().is_ok_and(|s| s >= 1)), "{page:?}");
    assert!(visible_text(&page.body).contains("Too many wrong passwords"), "{}", page.body);
}
