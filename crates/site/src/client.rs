//! The HTTP client a site uses to talk to the central server.

use crate::link::{Direction, Link};
use model::SiteId;
use protocol::{
    ErrorBody, PullRequest, PullResponse, PushRequest, PushResponse, StatusResponse, MACHINE_HEADER, PROTOCOL_VERSION,
    VERSION_HEADER,
};
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why a request to the central server failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No connection could be made: the link is down, or the address is wrong.
    #[error("could not reach the central server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// A connection opened but could not be used: the certificate is not trusted, or what
    /// answered is not an Outpost central server. Trying again will not help.
    #[error("could not reach the central server at {url}: {reason}")]
    Unusable { url: String, reason: String },
    /// A connection was made and then stopped or broke part way.
    #[error("{0}")]
    Interrupted(Box<Interrupted>),
    #[error("the central server refused the request ({status} {code}): {message}")]
    Refused { status: u16, code: String, message: String },
    #[error("the central server's answer could not be read: {0}")]
    Decode(#[from] protocol::DecodeError),
    #[error("the certificate authority to trust could not be read: {0}")]
    Certificate(String),
}

/// An exchange that began and did not finish: what happened, and how far it got.
#[derive(Debug)]
pub struct Interrupted {
    pub how: Interruption,
    pub when: Phase,
    /// The part of the answer that arrived before the interruption (a cut pull page still
    /// holds whole changes: [`protocol::changes_of_cut_pull`]).
    pub partial: Vec<u8>,
}

/// How an exchange stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Interruption {
    /// No byte moved for this long.
    Silent(Duration),
    /// The connection was closed or reset (the reason as the system gave it).
    Cut(String),
}

/// Where an exchange was when it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// `sent` of the request's `total` bytes had been handed to the connection.
    Sending { sent: u64, total: u64 },
    /// The request was sent; its answer had not begun.
    Waiting,
    /// `received` bytes of the answer had arrived.
    Receiving { received: u64 },
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let during = match self.when {
            Phase::Sending { sent, total } => {
                format!("while sending the request ({} of {} sent)", human_bytes(sent), human_bytes(total))
            }
            Phase::Waiting => "while waiting for the answer".to_owned(),
            Phase::Receiving { received } => format!("while receiving the answer ({} received)", human_bytes(received)),
        };
        match (&self.how, self.when) {
            (Interruption::Silent(silence), Phase::Waiting) => write!(
                f,
                "no answer from the central server for {} s after the request was sent (the link stopped, or the server is overloaded)",
                silence.as_secs()
            ),
            (Interruption::Silent(silence), _) => write!(f, "the link stopped for {} s {during}", silence.as_secs()),
            (Interruption::Cut(reason), _) => write!(f, "the connection was cut {during} ({reason})"),
        }
    }
}

impl ClientError {
    /// Whether trying again later may succeed: the link, not the request, was the problem, or
    /// the central server asked to come back later (429, too many sign-ins at once), or it gave
    /// up on a request body that stopped arriving (408).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } | ClientError::Interrupted(_) | ClientError::Decode(_) => true,
            ClientError::Refused { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            ClientError::Certificate(_) | ClientError::Unusable { .. } => false,
        }
    }

    /// Whether the central server may have received the whole request (and acted on it): not
    /// when no connection was made or the request was cut before it was all sent.
    pub fn may_have_arrived(&self) -> bool {
        match self {
            ClientError::Unreachable { .. } | ClientError::Unusable { .. } | ClientError::Certificate(_) => false,
            ClientError::Interrupted(interrupted) => !matches!(interrupted.when, Phase::Sending { .. }),
            ClientError::Refused { .. } | ClientError::Decode(_) => true,
        }
    }

    /// Whether the link itself failed (rather than the server answering no).
    pub fn is_link(&self) -> bool {
        matches!(self, ClientError::Unreachable { .. } | ClientError::Interrupted(_))
    }
}

#[cfg(feature = "tls")]
type Tls = ureq::tls::TlsConfig;
#[cfg(not(feature = "tls"))]
type Tls = std::convert::Infallible;

/// How long to wait for a connection to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Bodies move in pieces of this size, so that the bytes counted (and shown) move as they go.
const PIECE: usize = 8 * 1024;

/// A site's connection to the central server.
#[derive(Debug, Clone)]
pub struct Client {
    agent: ureq::Agent,
    base: String,
    site: String,
    authorization: String,
    /// This machine's fingerprint ([`crate::machine`]), sent with every request.
    machine: String,
    /// The silence after which an exchange is given up ([`crate::link::stall_timeout`]).
    stall: Duration,
    link: Arc<Link>,
}

impl Client {
    pub fn new(central_url: &str, site: &SiteId, password: &str) -> Client {
        let stall = crate::link::stall_timeout();
        Client {
            agent: Self::agent(None, stall),
            base: central_url.trim_end_matches('/').to_owned(),
            site: site.to_string(),
            authorization: format!("Basic {}", base64_encode(format!("{site}:{password}").as_bytes())),
            machine: crate::machine::fingerprint(site.as_str()).unwrap_or_default(),
            stall,
            link: Arc::default(),
        }
    }

    fn agent(tls: Option<Tls>, stall: Duration) -> ureq::Agent {
        // Timeouts about silence (no byte for `stall`), never about the length of honest work:
        // a page at 9.6 kbit/s takes minutes and must not be cut for it.
        let builder = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_per_read(Some(stall))
            .timeout_per_write(Some(stall))
            .output_buffer_size(PIECE);
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
        self.agent = Self::agent(Some(tls), self.stall);
        Ok(self)
    }

    /// Without the `tls` feature there is no HTTPS to trust a certificate for.
    #[cfg(not(feature = "tls"))]
    pub fn trusting(self, _ca_pem: &[u8]) -> Result<Client, ClientError> {
        Err(ClientError::Certificate("this outpost was built without TLS; build it with `--features tls`".into()))
    }

    /// The link this client measures: bytes moving now, and the rates that size the pages.
    pub fn link(&self) -> &Arc<Link> {
        &self.link
    }

    fn url(&self, action: &str) -> String {
        format!("{}/api/v1/sites/{}/{action}", self.base, self.site)
    }

    /// One request and its answer. Bodies are counted as they move; a failure says how far the
    /// exchange got.
    fn exchange(&self, action: &str, body: Option<Vec<u8>>) -> Result<Vec<u8>, ClientError> {
        let url = self.url(action);
        let started = Instant::now();
        let total = body.as_ref().map_or(0, Vec::len);
        let given = Arc::new(AtomicU64::new(0));
        let result = match body {
            Some(body) => {
                let reader = Counted { body, at: 0, given: given.clone(), link: self.link.clone() };
                self.agent
                    .post(&url)
                    .config()
                    .timeout_per_read(Some(self.link.answer_timeout(self.stall, total)))
                    .build()
                    .header("authorization", &self.authorization)
                    .header(VERSION_HEADER, PROTOCOL_VERSION.to_string())
                    .header(MACHINE_HEADER, &self.machine)
                    .header("content-type", "application/json")
                    .header("content-encoding", "zstd")
                    .header("content-length", total.to_string())
                    .send(ureq::SendBody::from_owned_reader(reader))
            }
            None => self
                .agent
                .get(&url)
                .header("authorization", &self.authorization)
                .header(VERSION_HEADER, PROTOCOL_VERSION.to_string())
                .header(MACHINE_HEADER, &self.machine)
                .call(),
        };
        let sent = given.load(Relaxed);
        let mut response = result.map_err(|e| self.failed(&url, e, sent, total as u64))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let bytes = self.read_answer(&mut response)?;
        if total > 0 {
            self.link.record(Direction::Up, total as u64, started.elapsed());
        }
        self.link.record(Direction::Down, bytes.len() as u64, started.elapsed());
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
        Ok(bytes)
    }

    /// Reads an answer piece by piece, counting each as it arrives, up to the decoding limit.
    fn read_answer(&self, response: &mut ureq::http::Response<ureq::Body>) -> Result<Vec<u8>, ClientError> {
        let limit = protocol::MAX_DECODED_BYTES as u64;
        let mut reader = response.body_mut().with_config().limit(limit).reader();
        let mut bytes = Vec::new();
        let mut piece = vec![0u8; PIECE];
        loop {
            match reader.read(&mut piece) {
                Ok(0) => return Ok(bytes),
                Ok(n) => {
                    bytes.extend_from_slice(&piece[..n]);
                    self.link.count_received(n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ureq says a read timed out with its own error inside an I/O error.
                    let timed_out = e.kind() == std::io::ErrorKind::TimedOut
                        || e.get_ref().and_then(|inner| inner.downcast_ref::<ureq::Error>()).is_some_and(|inner| {
                            matches!(inner, ureq::Error::Timeout(_))
                                || matches!(inner, ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::TimedOut)
                        });
                    let how =
                        if timed_out { Interruption::Silent(self.stall) } else { Interruption::Cut(e.to_string()) };
                    let when = Phase::Receiving { received: bytes.len() as u64 };
                    return Err(ClientError::Interrupted(Box::new(Interrupted { how, when, partial: bytes })));
                }
            }
        }
    }

    /// Says what a failed exchange was doing: `sent` of `total` request bytes had gone.
    fn failed(&self, url: &str, error: ureq::Error, sent: u64, total: u64) -> ClientError {
        use std::io::ErrorKind as Kind;
        use ureq::Timeout;
        let unreachable = |reason: String| ClientError::Unreachable { url: url.to_owned(), reason };
        let when = if sent < total { Phase::Sending { sent, total } } else { Phase::Waiting };
        let how = match error {
            ureq::Error::Timeout(Timeout::Connect | Timeout::Resolve) => {
                return unreachable(format!("no connection within {} s", CONNECT_TIMEOUT.as_secs()))
            }
            ureq::Error::HostNotFound => return unreachable("the host name is not known".into()),
            ureq::Error::ConnectionFailed => return unreachable("the connection failed".into()),
            ureq::Error::Io(e)
                if sent == 0
                    && matches!(
                        e.kind(),
                        Kind::ConnectionRefused
                            | Kind::HostUnreachable
                            | Kind::NetworkUnreachable
                            | Kind::NetworkDown
                            | Kind::AddrNotAvailable
                    ) =>
            {
                return unreachable(e.to_string())
            }
            ureq::Error::Timeout(Timeout::PerRead | Timeout::RecvResponse | Timeout::RecvBody) => {
                let silence = if total > 0 { self.link.answer_timeout(self.stall, total as usize) } else { self.stall };
                Interruption::Silent(silence)
            }
            ureq::Error::Timeout(_) => Interruption::Silent(self.stall),
            ureq::Error::Io(e) if e.kind() == Kind::TimedOut => Interruption::Silent(self.stall),
            // TLS refusing the certificate, or an answer that is not HTTP: no retry helps.
            ureq::Error::Io(e) if e.kind() == Kind::InvalidData => {
                return ClientError::Unusable { url: url.to_owned(), reason: e.to_string() }
            }
            ureq::Error::Io(e) => Interruption::Cut(e.to_string()),
            other if sent == 0 => return ClientError::Unusable { url: url.to_owned(), reason: other.to_string() },
            other => Interruption::Cut(other.to_string()),
        };
        ClientError::Interrupted(Box::new(Interrupted { how, when, partial: Vec::new() }))
    }

    fn exchange_decoded<T: for<'de> serde::Deserialize<'de>>(
        &self,
        action: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, ClientError> {
        let bytes = self.exchange(action, body)?;
        Ok(protocol::decode(&bytes)?)
    }

    /// Pushes a batch (see [`Exchange::push`]).
    pub fn push(&self, request: &PushRequest) -> Result<PushResponse, ClientError> {
        let json = serde_json::to_vec(request).unwrap_or_default();
        let body = protocol::compress(&json);
        self.link.record_ratio(Direction::Up, json.len(), body.len());
        self.exchange_decoded("push", Some(body))
    }

    pub fn pull(&self, request: &PullRequest) -> Result<PullResponse, ClientError> {
        let bytes = self.exchange("pull", Some(protocol::encode(request)))?;
        let json = protocol::decompress(&bytes)?;
        self.link.record_ratio(Direction::Down, json.len(), bytes.len());
        Ok(protocol::decode_pull(&json)?)
    }

    pub fn status(&self) -> Result<StatusResponse, ClientError> {
        self.exchange_decoded("status", None)
    }
}

/// What a sync needs of the central server: the HTTP [`Client`], or the simulator's exchange,
/// which answers from a central server in the same process and breaks exchanges as its seed
/// says, so that the simulator runs this crate's real sync code.
pub trait Exchange: Clone + Send {
    fn push(&self, request: &PushRequest) -> Result<PushResponse, ClientError>;
    fn pull(&self, request: &PullRequest) -> Result<PullResponse, ClientError>;
    fn status(&self) -> Result<StatusResponse, ClientError>;
    /// The link as measured (its rates size the pages).
    fn link(&self) -> &Arc<Link>;
    /// Waits `wait` before an exchange is tried again (a simulated clock only moves).
    fn wait(&self, wait: Duration) {
        std::thread::sleep(wait);
    }
}

impl Exchange for Client {
    fn push(&self, request: &PushRequest) -> Result<PushResponse, ClientError> {
        Client::push(self, request)
    }
    fn pull(&self, request: &PullRequest) -> Result<PullResponse, ClientError> {
        Client::pull(self, request)
    }
    fn status(&self) -> Result<StatusResponse, ClientError> {
        Client::status(self)
    }
    fn link(&self) -> &Arc<Link> {
        Client::link(self)
    }
}

/// A request body handed to the connection piece by piece, counted as it goes.
struct Counted {
    body: Vec<u8>,
    at: usize,
    given: Arc<AtomicU64>,
    link: Arc<Link>,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(PIECE).min(self.body.len() - self.at);
        buf[..n].copy_from_slice(&self.body[self.at..self.at + n]);
        self.at += n;
        self.given.fetch_add(n as u64, Relaxed);
        self.link.count_sent(n);
        Ok(n)
    }
}

/// Bytes as a person reads them: `812 B`, `12.0 KiB`, `3.4 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    match bytes {
        b if b >= 1 << 20 => format!("{:.1} MiB", b as f64 / f64::from(1 << 20)),
        b if b >= 1 << 10 => format!("{:.1} KiB", b as f64 / 1024.0),
        b => format!("{b} B"),
    }
}

/// Standard base64 with padding (RFC 4648), for the Basic authorization header.
fn base64_encode(input: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(input)
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
