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
        protocol::decode(&self.body).expect("a zstd JSON pull answer")
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
