//! The HTTP client a site uses to talk to the central server.

use protocol::{
    ErrorBody, PullRequest, PullResponse, PushRequest, PushResponse, StatusResponse, MACHINE_HEADER, PROTOCOL_VERSION,
    VERSION_HEADER,
};
use std::time::Duration;

/// Why a request to the central server failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("could not reach the central server at {url}: {source}")]
    Transport { url: String, source: Box<ureq::Error> },
    #[error("the central server refused the request ({status} {code}): {message}")]
    Refused { status: u16, code: String, message: String },
    #[error("the central server's answer could not be read: {0}")]
    Decode(#[from] protocol::DecodeError),
    #[error("the certificate authority to trust could not be read: {0}")]
    Certificate(String),
}

impl ClientError {
    /// Whether trying again later may succeed: the link, not the request, was the problem, or
    /// the central server asked to come back later (429, too many sign-ins at once).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Transport { .. } | ClientError::Decode(_) => true,
            ClientError::Refused { status, .. } => *status >= 500 || *status == 429,
            ClientError::Certificate(_) => false,
        }
    }
}

#[cfg(feature = "tls")]
type Tls = ureq::tls::TlsConfig;
#[cfg(not(feature = "tls"))]
type Tls = std::convert::Infallible;

/// A site's connection to the central server.
#[derive(Debug, Clone)]
pub struct Client {
    agent: ureq::Agent,
    base: String,
    site: String,
    authorization: String,
    /// This machine's fingerprint ([`crate::machine`]), sent with every request.
    machine: String,
    /// Bytes sent and received so far (compressed, as on the wire; bodies only).
    pub sent: std::sync::Arc<std::sync::atomic::AtomicU64>,
    pub received: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Client {
    pub fn new(central_url: &str, site: &str, password: &str) -> Client {
        Client {
            agent: Self::agent(None),
            base: central_url.trim_end_matches('/').to_owned(),
            site: site.to_owned(),
            authorization: format!("Basic {}", base64_encode(format!("{site}:{password}").as_bytes())),
            machine: crate::machine::fingerprint(site).unwrap_or_default(),
            sent: Default::default(),
            received: Default::default(),
        }
    }

    fn agent(tls: Option<Tls>) -> ureq::Agent {
        let builder = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // A timeout about silence, not about the length of honest work.
            .timeout_connect(Some(Duration::from_secs(15)))
            .timeout_recv_response(Some(Duration::from_secs(300)))
            .timeout_recv_body(Some(Duration::from_secs(120)));
        match tls {
            #[cfg(feature = "tls")]
            Some(tls) => builder.tls_config(tls).build().into(),
            #[cfg(not(feature = "tls"))]
            Some(never) => match never {},
            None => builder.build().into(),
        }
    }

    /// Trusts only this certificate authority (PEM) for the central server's HTTPS certificate:
    /// a ministry's own CA, or a self-signed central server.
    #[cfg(feature = "tls")]
    pub fn trusting(mut self, ca_pem: &[u8]) -> Result<Client, ClientError> {
        use ureq::tls::{Certificate, RootCerts, TlsConfig};
        let certs: Vec<Certificate<'static>> = ureq::tls::parse_pem(ca_pem)
            .filter_map(|item| match item {
                Ok(ureq::tls::PemItem::Certificate(cert)) => Some(Ok(cert)),
                Ok(_) => None,
                Err(e) => Some(Err(ClientError::Certificate(e.to_string()))),
            })
            .collect::<Result<_, _>>()?;
        if certs.is_empty() {
            return Err(ClientError::Certificate("no certificate in the file".into()));
        }
        let tls = TlsConfig::builder().root_certs(RootCerts::Specific(std::sync::Arc::new(certs))).build();
        self.agent = Self::agent(Some(tls));
        Ok(self)
    }

    /// Without the `tls` feature there is no HTTPS to trust a certificate for.
    #[cfg(not(feature = "tls"))]
    pub fn trusting(self, _ca_pem: &[u8]) -> Result<Client, ClientError> {
        Err(ClientError::Certificate("this outpost was built without TLS; build it with `--features tls`".into()))
    }

    fn url(&self, action: &str) -> String {
        format!("{}/api/v1/sites/{}/{action}", self.base, self.site)
    }

    fn exchange<T: for<'de> serde::Deserialize<'de>>(
        &self,
        action: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        use std::sync::atomic::Ordering::Relaxed;
        let url = self.url(action);
        let transport = |source: ureq::Error| ClientError::Transport { url: url.clone(), source: Box::new(source) };
        let result = match body {
            Some(body) => {
                self.sent.fetch_add(body.len() as u64, Relaxed);
                self.agent
                    .post(&url)
                    .header("authorization", &self.authorization)
                    .header(VERSION_HEADER, PROTOCOL_VERSION.to_string())
                    .header(MACHINE_HEADER, &self.machine)
                    .header("content-type", "application/json")
                    .header("content-encoding", "zstd")
                    .send(&body[..])
            }
            None => self
                .agent
                .get(&url)
                .header("authorization", &self.authorization)
                .header(VERSION_HEADER, PROTOCOL_VERSION.to_string())
                .header(MACHINE_HEADER, &self.machine)
                .call(),
        };
        let mut response = result.map_err(transport)?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let bytes = response
            .body_mut()
            .with_config()
            .limit(protocol::MAX_DECODED_BYTES as u64)
            .read_to_vec()
            .map_err(transport)?;
        self.received.fetch_add(bytes.len() as u64, Relaxed);
        if status >= 400 {
            let (code, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
                Ok(body) => (body.error.code, body.error.message),
                Err(_) => ("unknown".to_owned(), String::from_utf8_lossy(&bytes).into_owned()),
            };
            // A refusal for now, not for good: say when to come back if the server did not.
            let message = match retry_after {
                Some(secs) if status == 429 && !message.contains("try again") => {
                    format!("{message}; this is temporary, try again in {secs} s")
                }
                _ => message,
            };
            return Err(ClientError::Refused { status, code, message });
        }
        Ok(protocol::decode(&bytes)?)
    }

    pub fn push(&self, request: &PushRequest) -> Result<PushResponse, ClientError> {
        self.exchange("push", Some(protocol::encode(request)))
    }

    pub fn pull(&self, request: &PullRequest) -> Result<PullResponse, ClientError> {
        self.exchange("pull", Some(protocol::encode(request)))
    }

    pub fn status(&self) -> Result<StatusResponse, ClientError> {
        self.exchange("status", None)
    }
}

/// Standard base64 with padding (RFC 4648), for the Basic authorization header.
fn base64_encode(input: &[u8]) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_encodes_credentials() {
        assert_eq!(super::base64_encode(b"north:s3cret"), "bm9ydGg6czNjcmV0");
        assert_eq!(super::base64_encode(b"a"), "YQ==");
        assert_eq!(super::base64_encode(b"ab"), "YWI=");
    }
}
