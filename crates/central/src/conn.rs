//! The central server's connections: who may open one, and how long one may keep the server
//! waiting.
//!
//! A client that opens a connection and sends nothing, or sends part of a push and goes
//! silent, would otherwise hold its connection (a socket, a task, a handler waiting on the body)
//! for ever, and a few such clients would hold every connection the server can have. So:
//! - each connection counts against its client's address, and beyond
//!   [`Limits::per_address`] open ones a new connection from that address is closed at once
//!   ([`Gate`]);
//! - over TLS, the handshake must end within [`Limits::idle`];
//! - the socket ([`IdleIo`]) closes a connection whose request head is not complete
//!   [`Limits::idle`] after the connection fell idle (it was accepted, or it finished sending an
//!   answer), which also ends the keep-alive connections nobody uses, and a connection whose
//!   client reads nothing of its answer for [`WRITE_STALL_IDLES`] times as long;
//! - the request body ([`IdleBody`]) fails a request, and so closes its connection, when no
//!   byte of it arrives for [`Limits::idle`]. A body is timed on its silences, not its length: a
//!   site on a slow link that keeps sending is never cut, however long its push takes.
//!
//! While a request is handled (a big push applied on PostgreSQL, say) the server waits for
//! nothing from the client, and nothing is timed. hyper's own `header_read_timeout` measures
//! what the head deadline here measures, but it cannot say why it closed a connection nor tell
//! an unused keep-alive connection from a slow head (and `axum_server`'s accept loop, which the
//! TLS listener used, drops connection errors unseen). Kept here, the deadline serves both
//! listeners, HTTP/1.1 and (over TLS) HTTP/2, and the log says what each connection waited for.

use axum::body::Bytes;
use axum::extract::ConnectInfo;
use axum::http::{Request, Response};
use axum::{BoxError, Router};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, Sleep};
use tower_service::Service;

/// How long a client may keep the server waiting, by default: for the rest of a request head,
/// for the end of a TLS handshake, for the next byte of a request body (and, ten times as
/// long, for the client to read an answer).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// How many connections one client address may have open at once, by default. A site syncs over
/// one or two; sites behind one address (a NAT, a reverse proxy on the server's machine) share
/// the limit, which `central serve --max-connections-per-address` raises.
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 32;

/// How many idle times an answer may wait for its client to read on. A socket accepts no
/// more bytes while its kernel buffer is full, and that buffer holds minutes of a slow link
/// (measured on loopback: 75 s without room for a byte while the client read 1.2 KB/s), so a
/// write that waits says little at first about whether the client still reads.
const WRITE_STALL_IDLES: u32 = 10;

/// Each kind of report (a refusal, a connection closed while waiting for something) is logged at
/// most this often per address, with the count of those not logged.
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// What the server allows a client before it closes its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// How long the server waits for a client that sends (or reads) nothing; see the module
    /// documentation.
    pub idle: Duration,
    /// Open connections per client address; 0 for no limit.
    pub per_address: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { idle: DEFAULT_IDLE_TIMEOUT, per_address: DEFAULT_MAX_CONNECTIONS_PER_ADDRESS }
    }
}

/// What a closed connection was waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stall {
    /// The end of the TLS handshake.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    Handshake,
    /// The rest of a request head (or its first byte, on a new connection).
    Headers,
    /// The next byte of a request body.
    Body,
    /// The client, to read the answer.
    Reader,
    /// The next request on a keep-alive connection: not a fault, logged only for debugging.
    NextRequest,
}

/// The index of refusals among the reports of an address (after every [`Stall`]).
const REFUSED: usize = 5;
const REPORTS: usize = REFUSED + 1;

impl fmt::Display for Stall {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stall::Handshake => "the TLS handshake",
            Stall::Headers => "the request headers",
            Stall::Body => "the request body",
            Stall::Reader => "the client to read the answer",
            Stall::NextRequest => "another request",
        })
    }
}

/// Why the server closed a connection: the client kept it waiting. Returned as the I/O error
/// of the socket, or the error of the request body.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stalled {
    stall: Stall,
    idle: Duration,
}

impl fmt::Display for Stalled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.stall {
            Stall::Body => write!(f, "no byte of the request body arrived for {} s", self.idle.as_secs()),
            stall => write!(f, "waited {} s for {stall}", self.idle.as_secs()),
        }
    }
}

impl std::error::Error for Stalled {}

/// The open connections of each client address, and what was reported about it lately.
#[derive(Debug)]
pub(crate) struct Gate {
    limits: Limits,
    addresses: Mutex<Addresses>,
}

#[derive(Debug)]
struct Addresses {
    by_ip: HashMap<IpAddr, Address>,
    /// Forgotten addresses are swept when the table reaches this size (then twice what is left).
    sweep_at: usize,
}

#[derive(Debug, Default)]
struct Address {
    open: usize,
    /// For each kind of report: when one was last logged, and how many were not logged since.
    reports: [Option<(Instant, u64)>; REPORTS],
}

impl Address {
    /// Whether a report of `kind` is to be logged now, and how many went unlogged before it.
    fn report(&mut self, kind: usize, now: Instant) -> Option<u64> {
        match &mut self.reports[kind] {
            Some((at, unlogged)) if now.duration_since(*at) < REPORT_EVERY => {
                *unlogged += 1;
                None
            }
            slot => {
                let unlogged = slot.map_or(0, |(_, n)| n);
                *slot = Some((now, 0));
                Some(unlogged)
            }
        }
    }

    /// Whether this address must still be remembered (to keep its reports to one a minute).
    fn remembered(&self, now: Instant) -> bool {
        self.open > 0 || self.reports.iter().flatten().any(|(at, _)| now.duration_since(*at) < REPORT_EVERY)
    }
}

impl Gate {
    pub(crate) fn new(limits: Limits) -> Arc<Gate> {
        Arc::new(Gate { limits, addresses: Mutex::new(Addresses { by_ip: HashMap::new(), sweep_at: 1024 }) })
    }

    fn lock(&self) -> MutexGuard<'_, Addresses> {
        // The table stays consistent whatever panicked while it was held.
        self.addresses.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Counts a new connection from `peer`, or refuses it when its address has as many open as
    /// it may (the caller then drops the connection, which closes it).
    pub(crate) fn admit(self: &Arc<Self>, peer: SocketAddr) -> Option<Permit> {
        let ip = peer.ip().to_canonical();
        let now = Instant::now();
        let mut addresses = self.lock();
        if !addresses.by_ip.contains_key(&ip) && addresses.by_ip.len() >= addresses.sweep_at {
            addresses.by_ip.retain(|_, address| address.remembered(now));
            addresses.sweep_at = (addresses.by_ip.len() * 2).max(1024);
        }
        let address = addresses.by_ip.entry(ip).or_default();
        if self.limits.per_address != 0 && address.open >= self.limits.per_address {
            if let Some(unlogged) = address.report(REFUSED, now) {
                tracing::warn!(
                    peer = %ip,
                    open = address.open,
                    unlogged,
                    "refusing connections from an address that has as many open as it may \
                     (--max-connections-per-address); reported once a minute"
                );
            }
            return None;
        }
        address.open += 1;
        Some(Permit { gate: self.clone(), ip })
    }

    /// Logs that a connection from `peer` was closed while waiting for `stall` (at most once a
    /// minute per address and kind; an unused keep-alive connection only for debugging).
    fn closed(&self, peer: SocketAddr, stall: Stall) {
        let idle_secs = self.limits.idle.as_secs();
        if stall == Stall::NextRequest {
            tracing::debug!(peer = %peer, idle_secs, "closed an unused keep-alive connection");
            return;
        }
        // The address may have no connection left (a TLS handshake gives up its socket when it
        // fails): it is remembered for the time its reports are held back.
        let unlogged =
            self.lock().by_ip.entry(peer.ip().to_canonical()).or_default().report(stall as usize, Instant::now());
        if let Some(unlogged) = unlogged {
            tracing::info!(
                peer = %peer,
                waiting_for = %stall,
                idle_secs,
                unlogged,
                "closed a connection that kept the server waiting"
            );
        }
    }
}

/// One open connection of an address, counted until it is dropped.
#[derive(Debug)]
pub(crate) struct Permit {
    gate: Arc<Gate>,
    ip: IpAddr,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let now = Instant::now();
        let mut addresses = self.gate.lock();
        if let Some(address) = addresses.by_ip.get_mut(&self.ip) {
            address.open = address.open.saturating_sub(1);
            if !address.remembered(now) {
                addresses.by_ip.remove(&self.ip);
            }
        }
    }
}

/// What one connection is doing, shared by its socket and its requests.
#[derive(Debug)]
pub(crate) struct Conn {
    peer: SocketAddr,
    gate: Arc<Gate>,
    state: Mutex<ConnState>,
}

#[derive(Debug)]
struct ConnState {
    /// Requests being handled or answered, and the TLS handshake: while any is, the socket is
    /// not timed on its reads (the server reads only to notice a client that hangs up).
    busy: usize,
    /// When `busy` last fell to zero, or when the connection was accepted.
    idle_since: Instant,
    /// Whether bytes arrived since then: a request head has begun.
    heard: bool,
    /// Whether a request came on this connection (it is kept alive after its answer).
    served: bool,
    /// Whether the connection speaks HTTP/2, whose idle connections exchange frames too: bytes
    /// that arrive when no request is open are no sign of a request head begun.
    multiplexed: bool,
    /// The task reading the socket, woken when the connection falls idle (or a waiting write
    /// goes through) so that the head deadline starts even if nothing else wakes it.
    reader: Option<Waker>,
}

impl Conn {
    pub(crate) fn new(peer: SocketAddr, gate: Arc<Gate>) -> Arc<Conn> {
        let state = ConnState {
            busy: 0,
            idle_since: Instant::now(),
            heard: false,
            served: false,
            multiplexed: false,
            reader: None,
        };
        Arc::new(Conn { peer, gate, state: Mutex::new(state) })
    }

    fn lock(&self) -> MutexGuard<'_, ConnState> {
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn idle(&self) -> Duration {
        self.gate.limits.idle
    }

    /// Marks the connection busy (a request, the TLS handshake) until the guard is dropped.
    pub(crate) fn busy(self: &Arc<Self>) -> Busy {
        self.lock().busy += 1;
        Busy(self.clone())
    }

    /// Marks the connection busy with a request until the guard is dropped.
    fn request(self: &Arc<Self>) -> Busy {
        self.lock().served = true;
        self.busy()
    }

    /// Closes on `stall`: logs it and gives the error to end the connection or the request with.
    fn stalled(&self, stall: Stall) -> Stalled {
        self.gate.closed(self.peer, stall);
        Stalled { stall, idle: self.idle() }
    }
}

/// A connection busy with a request (or its TLS handshake); see [`Conn::busy`].
#[derive(Debug)]
pub(crate) struct Busy(Arc<Conn>);

impl Drop for Busy {
    fn drop(&mut self) {
        let reader = {
            let mut state = self.0.lock();
            state.busy = state.busy.saturating_sub(1);
            if state.busy > 0 {
                return;
            }
            state.idle_since = Instant::now();
            state.heard = false;
            state.reader.take()
        };
        if let Some(reader) = reader {
            reader.wake();
        }
    }
}

/// A deadline polled from a task: allocated once, moved when the deadline changes.
#[derive(Debug, Default)]
struct Timer(Option<Pin<Box<Sleep>>>);

impl Timer {
    /// Whether `deadline` has passed; if not, the task is woken when it does.
    fn passed(&mut self, deadline: Instant, cx: &mut Context<'_>) -> bool {
        let sleep = match &mut self.0 {
            Some(sleep) => {
                if sleep.deadline() != deadline {
                    sleep.as_mut().reset(deadline);
                }
                sleep
            }
            None => self.0.insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        sleep.as_mut().poll(cx).is_ready()
    }
}

/// A wait for the client that may last `idle` without progress: it starts when a wait is first
/// found pending, and again after each progress.
#[derive(Debug, Default)]
struct Silence {
    timer: Timer,
    since: Option<Instant>,
}

impl Silence {
    /// Whether a wait is pending.
    fn waiting(&self) -> bool {
        self.since.is_some()
    }

    /// The wait is still pending: whether it has lasted `idle`.
    fn too_long(&mut self, idle: Duration, cx: &mut Context<'_>) -> bool {
        let since = *self.since.get_or_insert_with(Instant::now);
        self.timer.passed(since + idle, cx)
    }

    fn progressed(&mut self) {
        self.since = None;
    }
}

/// The socket of one connection, closed (with an I/O error) when the client keeps it waiting
/// for a request head or for the client to read, and counted against its address until it is
/// dropped.
#[derive(Debug)]
pub(crate) struct IdleIo<T> {
    io: T,
    conn: Arc<Conn>,
    head: Timer,
    writes: Silence,
    /// When a write last went through: an answer is still being sent after its body was handed
    /// over (hyper holds it), and the head deadline starts when the sending ends.
    wrote_at: Instant,
    _permit: Permit,
}

impl<T> IdleIo<T> {
    pub(crate) fn new(io: T, conn: Arc<Conn>, permit: Permit) -> IdleIo<T> {
        IdleIo {
            io,
            conn,
            head: Timer::default(),
            writes: Silence::default(),
            wrote_at: Instant::now(),
            _permit: permit,
        }
    }

    /// A read found nothing to read: the error to close with, once the head deadline has passed
    /// on an idle connection (no request open, no answer being sent).
    fn head_overdue(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        let (deadline, stall) = {
            let mut state = self.conn.lock();
            // While a write waits it is timed instead; the reader is woken when it goes through.
            if state.busy > 0 || self.writes.waiting() {
                match &mut state.reader {
                    Some(reader) => reader.clone_from(cx.waker()),
                    None => state.reader = Some(cx.waker().clone()),
                }
                return None;
            }
            let unused = state.served && (!state.heard || state.multiplexed);
            let stall = if unused { Stall::NextRequest } else { Stall::Headers };
            (state.idle_since.max(self.wrote_at) + self.conn.idle(), stall)
        };
        self.head.passed(deadline, cx).then(|| io::Error::new(io::ErrorKind::TimedOut, self.conn.stalled(stall)))
    }

    /// The result of a write: bytes that went through move the head deadline (a flush, which
    /// hyper calls at every turn, does not).
    fn sent(&mut self, cx: &mut Context<'_>, result: Poll<io::Result<usize>>) -> Poll<io::Result<usize>> {
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.wrote_at = Instant::now();
        }
        self.wrote(cx, result)
    }

    /// The result of a write (or flush): a write that cannot go on is an error once it has
    /// waited [`WRITE_STALL_IDLES`] idle times.
    fn wrote<R>(&mut self, cx: &mut Context<'_>, result: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if result.is_ready() {
            if self.writes.waiting() {
                self.writes.progressed();
                let reader = self.conn.lock().reader.take();
                if let Some(reader) = reader {
                    reader.wake();
                }
            }
            return result;
        }
        if self.writes.too_long(self.conn.idle() * WRITE_STALL_IDLES, cx) {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, self.conn.stalled(Stall::Reader))));
        }
        Poll::Pending
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let mut state = this.conn.lock();
                    state.heard |= state.busy == 0;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Pending => match this.head_overdue(cx) {
                Some(error) => Poll::Ready(Err(error)),
                None => Poll::Pending,
            },
            failed => failed,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write(cx, buf);
        this.sent(cx, result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.sent(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_flush(cx);
        this.wrote(cx, result)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_shutdown(cx);
        this.wrote(cx, result)
    }
}

/// A request body that fails with [`Stalled`] when no byte of it arrives for the idle time
/// while the handler waits for it.
#[derive(Debug)]
pub(crate) struct IdleBody {
    body: Incoming,
    conn: Arc<Conn>,
    silence: Silence,
}

impl HttpBody for IdleBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.body).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.silence.progressed();
                Poll::Ready(frame.map(|frame| frame.map_err(BoxError::from)))
            }
            Poll::Pending if this.silence.too_long(this.conn.idle(), cx) => {
                Poll::Ready(Some(Err(Box::new(this.conn.stalled(Stall::Body)))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// An answer's body, which keeps its connection busy until it is sent (or dropped).
#[derive(Debug)]
pub(crate) struct Answer<B> {
    body: B,
    _busy: Busy,
}

impl<B: HttpBody + Unpin> HttpBody for Answer<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// The router, for one connection: each request gets the peer's address (`ConnectInfo`, as
/// `into_make_service_with_connect_info` gives it) and an [`IdleBody`], and keeps the connection
/// busy until its answer is sent.
#[derive(Debug, Clone)]
pub(crate) struct Requests {
    router: Router,
    conn: Arc<Conn>,
}

impl Service<Request<Incoming>> for Requests {
    type Response = Response<Answer<axum::body::Body>>;
    type Error = std::convert::Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Service::<Request<IdleBody>>::poll_ready(&mut self.router, cx)
    }

    fn call(&mut self, request: Request<Incoming>) -> Self::Future {
        let busy = self.conn.request();
        let conn = self.conn.clone();
        let mut request = request.map(|body| IdleBody { body, conn, silence: Silence::default() });
        request.extensions_mut().insert(ConnectInfo(self.conn.peer));
        let answer = self.router.call(request);
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|body| Answer { body, _busy: busy }))
        })
    }
}

/// How a listener's connections speak.
#[derive(Debug, Clone)]
pub(crate) enum Transport {
    /// Plain HTTP/1.1.
    Http,
    /// HTTPS: HTTP/1.1 or HTTP/2 over rustls, whose handshake must end within the idle time.
    #[cfg(feature = "tls")]
    Https(axum_server::tls_rustls::RustlsAcceptor),
}

/// Serves `router` on `listener` until the process is stopped, each connection within `gate`'s
/// limits.
pub(crate) async fn serve(listener: TcpListener, router: Router, gate: Arc<Gate>, transport: Transport) {
    loop {
        let (stream, peer) = accept(&listener).await;
        let Some(permit) = gate.admit(peer) else { continue };
        let conn = Conn::new(peer, gate.clone());
        let requests = Requests { router: router.clone(), conn: conn.clone() };
        let io = IdleIo::new(stream, conn, permit);
        let transport = transport.clone();
        tokio::spawn(async move {
            let served = match transport {
                Transport::Http => hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(io), TowerToHyperService::new(requests))
                    .await
                    .map_err(BoxError::from),
                #[cfg(feature = "tls")]
                Transport::Https(tls) => serve_tls(io, requests, &tls).await,
            };
            if let Err(e) = served {
                tracing::debug!(peer = %peer, error = ?e, "connection ended with an error");
            }
        });
    }
}

/// The TLS handshake (bounded by the acceptor's handshake timeout, the idle time), then HTTP/1.1
/// or HTTP/2 as the client chose.
#[cfg(feature = "tls")]
async fn serve_tls(
    io: IdleIo<TcpStream>,
    requests: Requests,
    tls: &axum_server::tls_rustls::RustlsAcceptor,
) -> Result<(), BoxError> {
    use axum_server::accept::Accept as _;
    let conn = io.conn.clone();
    let handshake = conn.busy();
    let accepted = tls.accept(io, requests).await;
    drop(handshake);
    let (stream, requests) = match accepted {
        Ok(accepted) => accepted,
        Err(e) => {
            // A socket that stalled said so already; a handshake that took too long is said here.
            if e.kind() == io::ErrorKind::TimedOut && !e.get_ref().is_some_and(|inner| inner.is::<Stalled>()) {
                conn.stalled(Stall::Handshake);
            }
            return Err(e.into());
        }
    };
    conn.lock().multiplexed = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(requests))
        .await
}

/// The next connection; errors that concern one client are skipped, others (out of file
/// descriptors) are logged and retried a second later.
async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => {
                // An answer's last small segment goes at once, not after the site's delayed
                // acknowledgement of the one before it (up to 40 ms a request on Linux).
                let _ = accepted.0.set_nodelay(true);
                return accepted;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::ConnectionRefused
                ) => {}
            Err(e) => {
                tracing::error!(error = %e, "accepting a connection failed; trying again in a second");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn peer(ip: [u8; 4], port: u16) -> SocketAddr {
        SocketAddr::from((ip, port))
    }

    #[test]
    fn an_address_may_hold_only_so_many_connections_and_gets_them_back_as_they_close() {
        let gate = Gate::new(Limits { idle: DEFAULT_IDLE_TIMEOUT, per_address: 2 });
        let first = gate.admit(peer([10, 0, 0, 1], 1)).expect("the first connection");
        let _second = gate.admit(peer([10, 0, 0, 1], 2)).expect("the second connection");
        assert!(gate.admit(peer([10, 0, 0, 1], 3)).is_none(), "a third is refused");
        assert!(gate.admit(peer([10, 0, 0, 2], 1)).is_some(), "another address is not");
        drop(first);
        assert!(gate.admit(peer([10, 0, 0, 1], 4)).is_some(), "a closed connection frees its place");
    }

    #[test]
    fn an_ipv4_address_counts_the_same_when_it_comes_mapped_into_ipv6() {
        let gate = Gate::new(Limits { idle: DEFAULT_IDLE_TIMEOUT, per_address: 1 });
        let _v4 = gate.admit(peer([10, 0, 0, 1], 1)).expect("the first connection");
        let mapped = SocketAddr::new(IpAddr::V6(std::net::Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped()), 2);
        assert!(gate.admit(mapped).is_none());
    }

    #[test]
    fn no_limit_when_the_limit_is_zero() {
        let gate = Gate::new(Limits { idle: DEFAULT_IDLE_TIMEOUT, per_address: 0 });
        let open: Vec<_> = (0..100).map(|port| gate.admit(peer([10, 0, 0, 1], port))).collect();
        assert!(open.iter().all(Option::is_some));
    }

    #[test]
    fn a_report_is_logged_once_a_minute_with_the_count_of_those_that_were_not() {
        let mut address = Address::default();
        let start = Instant::now();
        assert_eq!(address.report(REFUSED, start), Some(0));
        for s in 1..=3 {
            assert_eq!(address.report(REFUSED, start + Duration::from_secs(s)), None);
        }
        assert_eq!(address.report(Stall::Body as usize, start), Some(0), "each kind on its own");
        assert_eq!(address.report(REFUSED, start + REPORT_EVERY), Some(3));
    }

    #[test]
    fn addresses_with_nothing_open_and_nothing_to_hold_back_are_forgotten() {
        let gate = Gate::new(Limits { idle: DEFAULT_IDLE_TIMEOUT, per_address: 1 });
        drop(gate.admit(peer([10, 0, 0, 1], 1)));
        assert!(gate.lock().by_ip.is_empty());
        let _held = gate.admit(peer([10, 0, 0, 2], 1));
        assert!(gate.admit(peer([10, 0, 0, 2], 2)).is_none());
        drop(_held);
        assert_eq!(gate.lock().by_ip.len(), 1, "kept while its refusal holds back the next report");
    }

    /// A socket pair: the server's end in an [`IdleIo`], and the client's end.
    fn idle_io(idle: Duration) -> (IdleIo<tokio::io::DuplexStream>, Arc<Conn>, tokio::io::DuplexStream) {
        let gate = Gate::new(Limits { idle, per_address: 0 });
        let peer = peer([10, 0, 0, 1], 1);
        let permit = gate.admit(peer).expect("no limit");
        let conn = Conn::new(peer, gate);
        let (server, client) = tokio::io::duplex(64);
        (IdleIo::new(server, conn.clone(), permit), conn, client)
    }

    fn stall_of(error: &io::Error) -> Option<Stall> {
        error.get_ref().and_then(|e| e.downcast_ref::<Stalled>()).map(|s| s.stall)
    }

    #[tokio::test]
    async fn a_head_that_stops_arriving_is_cut_after_the_idle_time() {
        let idle = Duration::from_millis(200);
        let (mut server, _conn, mut client) = idle_io(idle);
        client.write_all(b"GET / HT").await.expect("write");
        let mut buf = [0u8; 64];
        assert_eq!(server.read(&mut buf).await.expect("read"), 8);
        let error = server.read(&mut buf).await.expect_err("the head never ends");
        assert_eq!(stall_of(&error), Some(Stall::Headers));
    }

    #[tokio::test]
    async fn a_connection_busy_with_a_request_is_not_timed_on_its_reads() {
        let idle = Duration::from_millis(200);
        let (mut server, conn, _client) = idle_io(idle);
        let busy = conn.request();
        let mut buf = [0u8; 8];
        let waiting = tokio::time::timeout(idle * 3, server.read(&mut buf)).await;
        assert!(waiting.is_err(), "the read was cut while a request was handled: {waiting:?}");
        drop(busy);
        let error = server.read(&mut buf).await.expect_err("idle again");
        assert_eq!(stall_of(&error), Some(Stall::NextRequest), "nothing came after the answer");
    }

    #[tokio::test]
    async fn the_head_deadline_starts_when_the_answer_is_sent_even_if_nothing_else_wakes_the_reader() {
        let idle = Duration::from_millis(200);
        let (mut server, conn, _client) = idle_io(idle);
        let busy = conn.request();
        let reading = tokio::spawn(async move {
            let mut buf = [0u8; 8];
            server.read(&mut buf).await.map_err(|e| stall_of(&e))
        });
        tokio::time::sleep(idle * 2).await;
        let answered = Instant::now();
        drop(busy);
        let read = tokio::time::timeout(idle * 5, reading).await.expect("the connection is closed");
        assert_eq!(read.expect("the reader"), Err(Some(Stall::NextRequest)));
        let took = answered.elapsed();
        assert!(took >= idle, "closed {took:?} after the answer, before the idle time");
    }

    #[tokio::test]
    async fn an_answer_nobody_reads_is_cut_after_ten_idle_times() {
        let idle = Duration::from_millis(50);
        let (mut server, _conn, _client) = idle_io(idle);
        let started = Instant::now();
        let error = server.write_all(&[0u8; 1024]).await.expect_err("the client reads nothing");
        assert_eq!(stall_of(&error), Some(Stall::Reader));
        assert!(started.elapsed() >= idle * WRITE_STALL_IDLES, "cut after {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_connection_still_sending_its_answer_is_not_timed_on_its_reads() {
        let idle = Duration::from_millis(100);
        let (server, _conn, mut client) = idle_io(idle);
        let (mut reads, mut writes) = tokio::io::split(server);
        // The answer leaves slowly, for far longer than the idle time, as hyper sends it after the
        // handler is done; meanwhile hyper reads, waiting for the next request.
        let sending = tokio::spawn(async move {
            writes.write_all(&[0u8; 4096]).await.map(|()| Instant::now()).map_err(|e| stall_of(&e))
        });
        let reading = tokio::spawn(async move { reads.read(&mut [0u8; 8]).await.map_err(|e| stall_of(&e)) });
        let mut received = 0;
        while received < 4096 {
            received += client.read(&mut [0u8; 64]).await.expect("the answer");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let sent = sending.await.expect("the writer").expect("the answer is sent whole");
        let read = tokio::time::timeout(idle * 10, reading).await.expect("the connection is closed when idle");
        assert_eq!(read.expect("the reader"), Err(Some(Stall::Headers)));
        assert!(sent.elapsed() >= idle, "the head deadline ran while the answer was sent");
    }

    #[tokio::test]
    async fn flushes_with_nothing_to_send_do_not_put_off_the_head_deadline() {
        let idle = Duration::from_millis(200);
        let (server, _conn, _client) = idle_io(idle);
        let (mut reads, mut writes) = tokio::io::split(server);
        // hyper flushes at every turn of its loop, a request or not.
        let flushing = tokio::spawn(async move {
            loop {
                writes.flush().await.expect("a flush");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        let read = tokio::time::timeout(idle * 5, reads.read(&mut [0u8; 8])).await;
        flushing.abort();
        let error = read.expect("the head deadline passed").expect_err("no request came");
        assert_eq!(stall_of(&error), Some(Stall::Headers));
    }
}
