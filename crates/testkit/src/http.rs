//! Raw HTTP to the central server, for requests a well-behaved site never makes: any headers,
//! any body ([`Http`]), the headers a site sends ([`good_headers`], [`basic`], [`machine`]), and
//! what came back ([`Answer`]).

use std::time::Duration;

use crate::process::TEST_MACHINE_ID;

/// What `site` sends as its machine from the test machine.
pub fn machine(site: &str) -> String {
    site::machine::fingerprint_of(TEST_MACHINE_ID, site)
}

/// Raw HTTP to the central server, for requests a well-behaved site never makes.
#[derive(Debug)]
pub struct Http {
    agent: ureq::Agent,
    base: String,
}

/// A raw answer: status, headers that matter, body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub content_encoding: Option<String>,
    pub body: Vec<u8>,
}

impl Answer {
    /// The `error.code` of a JSON error body (panics when the body is not one).
    pub fn error_code(&self) -> String {
        let body: protocol::ErrorBody = serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not a JSON error body ({e}): {}", String::from_utf8_lossy(&self.body)));
        assert!(!body.error.message.is_empty(), "an error without a message");
        body.error.code
    }

    pub fn push_response(&self) -> protocol::PushResponse {
        assert_eq!(self.status, 200, "{}", String::from_utf8_lossy(&self.body));
        protocol::decode(&self.body).expect("a zstd JSON push answer")
    }

    pub fn pull_response(&self) -> protocol::PullResponse {
        assert_eq!(self.status, 200, "{}", String::from_utf8_lossy(&self.body));
        protocol::decode_pull(&protocol::decompress(&self.body).expect("a zstd body")).expect("a JSON pull answer")
    }
}

pub fn basic(site: &str, password: &str) -> String {
    use base64::Engine as _;
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{site}:{password}")))
}

impl Http {
    pub fn new(base: &str) -> Http {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build();
        Http { agent: config.into(), base: base.trim_end_matches('/').to_owned() }
    }

    /// POSTs `body` to `/api/v1/sites/{site}/{action}` with these headers.
    pub fn post(&self, site: &str, action: &str, headers: &[(&str, &str)], body: &[u8]) -> Answer {
        let mut request = self.agent.post(format!("{}/api/v1/sites/{site}/{action}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut response = request.send(body).unwrap_or_else(|e| panic!("POST {action}: {e}"));
        Self::answer(&mut response)
    }

    pub fn get(&self, path: &str, headers: &[(&str, &str)]) -> Answer {
        let mut request = self.agent.get(format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut response = request.call().unwrap_or_else(|e| panic!("GET {path}: {e}"));
        Self::answer(&mut response)
    }

    fn answer(response: &mut ureq::http::Response<ureq::Body>) -> Answer {
        let status = response.status().as_u16();
        let content_encoding =
            response.headers().get("content-encoding").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let body = response.body_mut().with_config().limit(128 << 20).read_to_vec().expect("read the body");
        Answer { status, content_encoding, body }
    }

    /// A push as a site makes it: credentials, protocol version, zstd JSON.
    pub fn push(&self, site: &str, password: &str, request: &protocol::PushRequest) -> Answer {
        self.post(site, "push", &good_headers(site, password).as_refs(), &protocol::encode(request))
    }
}

/// The headers of a well-formed request.
#[derive(Debug)]
pub struct Headers(pub Vec<(String, String)>);

impl Headers {
    pub fn as_refs(&self) -> Vec<(&str, &str)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect()
    }
}

pub fn good_headers(site: &str, password: &str) -> Headers {
    Headers(vec![
        ("authorization".into(), basic(site, password)),
        ("outpost-protocol".into(), protocol::PROTOCOL_VERSION.to_string()),
        (protocol::MACHINE_HEADER.into(), machine(site)),
        ("content-type".into(), "application/json".into()),
        ("content-encoding".into(), "zstd".into()),
    ])
}

/// A change as a site's log holds it (built from JSON text: the record travels as raw JSON).
pub fn change(seq: i64, origin: &str, table: &str, id: &str, data: &serde_json::Value) -> model::Change {
    let text = serde_json::json!({
        "seq": seq, "table": table, "id": id, "action": "upsert", "data": data, "origin": origin,
    })
    .to_string();
    serde_json::from_str(&text).expect("a change")
}

/// The administrator signed in to the dashboard of the central server at `base`, as a browser
/// does it: the login form, its CSRF token and cookie, the session cookie.
#[derive(Debug)]
pub struct AdminSession {
    agent: ureq::Agent,
    base: String,
    cookie: String,
}

impl AdminSession {
    pub fn sign_in(base: &str) -> AdminSession {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let mut form = agent.get(format!("{base}/login")).call().expect("GET /login");
        let login_cookie = set_cookie(&form, "outpost_login");
        let body = form.body_mut().read_to_string().expect("the login page");
        let csrf = csrf_of(&body).unwrap_or_else(|| panic!("no CSRF field in: {body}"));
        let encode = |v: &str| v.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
        let signed_in = agent
            .post(format!("{base}/login"))
            .header("cookie", &login_cookie)
            .content_type("application/x-www-form-urlencoded")
            .send(format!("password={}&csrf={}", encode(crate::ADMIN_PASSWORD), encode(csrf)))
            .expect("POST /login");
        assert_eq!(signed_in.status(), 303, "the administrator could not sign in");
        let cookie = set_cookie(&signed_in, "outpost_session");
        AdminSession { agent, base: base.to_owned(), cookie }
    }

    /// A page of the dashboard: its status and body.
    pub fn get(&self, path: &str) -> (u16, String) {
        let (status, _, body) = self.download(path);
        (status, body)
    }

    /// A GET with the answer's `content-type` and `content-disposition` (a file to download).
    pub fn download(&self, path: &str) -> (u16, [String; 2], String) {
        let mut page =
            self.agent.get(format!("{}{path}", self.base)).header("cookie", &self.cookie).call().expect("GET");
        let header = |name: &str| page.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        let headers = [header("content-type"), header("content-disposition")];
        (page.status().as_u16(), headers, page.body_mut().read_to_string().expect("the page"))
    }
}

/// The `name=value` of a cookie the answer sets.
fn set_cookie(response: &ureq::http::Response<ureq::Body>, name: &str) -> String {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.split(';').next().filter(|pair| pair.starts_with(&format!("{name}="))).map(str::to_owned))
        .unwrap_or_else(|| panic!("no `{name}` cookie"))
}

/// The CSRF token of the first form of a page.
pub fn csrf_of(html: &str) -> Option<&str> {
    let marker = r#"name="csrf" value=""#;
    html.split_once(marker)?.1.split('"').next()
}
