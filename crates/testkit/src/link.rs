//! A shaping TCP proxy for slow links: what `netem` would do, which the test machines' kernels
//! lack. A [`Link`] sits on loopback between a site and the central server and gives the path
//! between them a rate in each direction, a one-way delay, and faults a test switches on while
//! it runs: a silent link ([`Link::stall`]), cut connections ([`Link::cut_now`], after so many
//! bytes, on a [schedule](Link::schedule)), a link that is down ([`Link::refuse`]) and a peer
//! that vanished ([`Link::half_open`]).
//!
//! The link is one pipe per direction, shared by every connection, as a radio or a modem is:
//! two downloads at once each get half of the rate. Bytes move in small chunks, each of which
//! occupies its direction's pipe for as long as its bits take at the rate, then travels for the
//! one-way delay. A chunk read at time `t` is therefore written on no earlier than `t + delay`,
//! and the bytes in flight meanwhile wait in a queue, as on a real link.
//!
//! Each connection runs four threads (a reader and a writer per direction): the reader takes a
//! chunk from one socket and books its slot in the pipe, the writer waits for the chunk's arrival
//! and writes it to the other socket. Reading on while earlier chunks travel is what keeps the
//! pipe full over a long delay.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What the link does to the bytes. `up` is from the client (the site) to the server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    /// The rate from client to server; `None` for as fast as loopback goes.
    pub up_bits_per_sec: Option<u64>,
    /// The rate from server to client; `None` for as fast as loopback goes.
    pub down_bits_per_sec: Option<u64>,
    /// How long a byte travels each way, after the rate has let it onto the link.
    pub one_way_delay: Duration,
}

impl Shape {
    /// The same rate both ways, with this delay (a modem, a satellite link).
    pub fn symmetric(bits_per_sec: u64, one_way_delay: Duration) -> Shape {
        Shape { up_bits_per_sec: Some(bits_per_sec), down_bits_per_sec: Some(bits_per_sec), one_way_delay }
    }

    fn rate(&self, dir: Dir) -> Option<u64> {
        match dir {
            Dir::Up => self.up_bits_per_sec,
            Dir::Down => self.down_bits_per_sec,
        }
    }
}

/// What a [schedule](Link::schedule) does at one of its steps: the controls of [`Link`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// [`Link::cut_now`].
    Cut,
    /// [`Link::stall`].
    Stall(bool),
    /// [`Link::refuse`].
    Refuse(bool),
    /// [`Link::half_open`].
    HalfOpen,
    /// [`Link::set_shape`].
    Shape(Shape),
}

/// The largest chunk: what an unshaped link moves per read and write.
const MAX_CHUNK: usize = 16 * 1024;

/// The smallest chunk, so that a very slow link does not move single bytes.
const MIN_CHUNK: usize = 32;

/// How many chunks may travel at once in each direction of a connection. Far above the
/// bandwidth-delay product of any shaped link (chunks are a hundredth of a second of the rate),
/// it only bounds the memory a fast sender over a long delay could fill (16 MiB unshaped); a
/// sender beyond it waits, as it would for a full queue.
const IN_FLIGHT: usize = 1024;

/// How late a pipe may be and still catch up. A reader wakes a little after its chunk has left;
/// without this slack every wake-up's lateness would add up and slow the link below its rate.
/// It is also all the credit an idle link earns (a token bucket of 10 ms).
const SLACK: Duration = Duration::from_millis(10);

/// How long the connection to the upstream server may take (it is on loopback: at once).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A shaping proxy on `127.0.0.1`, forwarding every connection it accepts to one upstream
/// address. Dropping it closes every connection and joins every thread it started.
#[derive(Debug)]
pub struct Link {
    addr: SocketAddr,
    inner: Arc<Inner>,
    acceptor: Option<JoinHandle<()>>,
}

impl Link {
    /// Listens on a free port of loopback and forwards to `upstream`, shaped by `shape`.
    pub fn start(upstream: SocketAddr, shape: Shape) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the link");
        let addr = listener.local_addr().expect("the link's address");
        let inner = Arc::new(Inner::new(upstream, shape));
        let shared = inner.clone();
        let acceptor = std::thread::spawn(move || accept(&listener, &shared));
        Link { addr, inner, acceptor: Some(acceptor) }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, what a site is given as its central server.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Shapes the bytes read from now on (those already in flight keep their arrival time).
    pub fn set_shape(&self, shape: Shape) {
        self.inner.set_shape(shape);
    }

    /// While true, no byte moves either way, and new connections do not reach the server; the
    /// sockets stay open and the bytes are held, in order, until the link is unstalled. (A chunk
    /// already being written when the stall begins finishes.)
    pub fn stall(&self, stalled: bool) {
        self.inner.stall(stalled);
    }

    /// While true, the link is down: each new connection is accepted (the kernel has done that
    /// already) and closed at once. Open connections are left alone.
    pub fn refuse(&self, refused: bool) {
        self.inner.refuse(refused);
    }

    /// Closes every open connection at once, both sides; the link accepts new ones afterwards.
    ///
    /// Std cannot send a reset (it has no `SO_LINGER`), so each socket is shut down both ways:
    /// the client and the server see the end of the stream at once, in the middle of whatever
    /// they were sending, and what they write afterwards is answered with a reset.
    pub fn cut_now(&self) {
        self.inner.cut_all();
    }

    /// Like a peer that vanished (a NAT or a radio that lost the connections): every open
    /// connection stops forwarding either way and is never closed, even when one end closes its
    /// side, so that its sockets stay ESTABLISHED until [`Link::cut_now`] or the link is dropped.
    /// New connections work; with [`Link::stall`] they hang too.
    pub fn half_open(&self) {
        self.inner.half_open();
    }

    /// Cuts every open connection ([`Link::cut_now`]) once `n` more bytes have gone down, then
    /// forwards as before.
    pub fn cut_after_down_bytes(&self, n: u64) {
        self.cut_every_down_bytes(n, 1);
    }

    /// Cuts every open connection once `n` more bytes have gone up, then forwards as before.
    pub fn cut_after_up_bytes(&self, n: u64) {
        self.cut_every_up_bytes(n, 1);
    }

    /// Cuts every open connection each time another `n` bytes have gone down, `times` times:
    /// cuts land in the middle of a long sync however its requests are spaced in time.
    pub fn cut_every_down_bytes(&self, n: u64, times: usize) {
        *lock(&self.inner.budgets[Dir::Down.index()]) = Budget::new(n, times);
    }

    /// Cuts every open connection each time another `n` bytes have gone up, `times` times.
    pub fn cut_every_up_bytes(&self, n: u64, times: usize) {
        *lock(&self.inner.budgets[Dir::Up.index()]) = Budget::new(n, times);
    }

    /// Runs `steps` in a background thread, each one `after` the one before it (the first after
    /// the call), e.g. `[(2 s, Stall(true)), (1 s, Stall(false))]`. Dropping the link stops it.
    pub fn schedule(&self, steps: impl IntoIterator<Item = (Duration, Action)>) {
        let steps: Vec<_> = steps.into_iter().collect();
        let inner = self.inner.clone();
        let thread = std::thread::spawn(move || {
            let mut at = Instant::now();
            for (after, action) in steps {
                at += after;
                if !inner.wait(None, Some(at), false) {
                    return;
                }
                inner.apply(action);
            }
        });
        lock(&self.inner.threads).push(thread);
    }

    /// Cuts every open connection every `interval`, `times` times. A cut when no connection is
    /// open cuts nothing: to be sure of landing inside a sync, prefer
    /// [`Link::cut_every_down_bytes`].
    pub fn cut_every(&self, interval: Duration, times: usize) {
        self.schedule(std::iter::repeat_n((interval, Action::Cut), times));
    }

    /// Bytes forwarded from client to server (HTTP headers and all), since the start or
    /// [`Link::reset_counters`].
    pub fn bytes_up(&self) -> u64 {
        self.inner.bytes[Dir::Up.index()].load(Ordering::SeqCst)
    }

    /// Bytes forwarded from server to client.
    pub fn bytes_down(&self) -> u64 {
        self.inner.bytes[Dir::Down.index()].load(Ordering::SeqCst)
    }

    /// Connections accepted (those closed at once by [`Link::refuse`] included).
    pub fn connections(&self) -> usize {
        self.inner.connections.load(Ordering::SeqCst)
    }

    /// Connections cut by the controls ([`Link::cut_now`], byte budgets, schedules).
    pub fn cuts(&self) -> usize {
        self.inner.cuts.load(Ordering::SeqCst)
    }

    pub fn reset_counters(&self) {
        for bytes in &self.inner.bytes {
            bytes.store(0, Ordering::SeqCst);
        }
        self.inner.connections.store(0, Ordering::SeqCst);
        self.inner.cuts.store(0, Ordering::SeqCst);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        {
            let mut controls = lock(&self.inner.controls);
            controls.stopped = true;
            self.inner.changed.notify_all();
        }
        // A connection registered from now on sees `stopped` and closes itself.
        for conn in lock(&self.inner.conns).iter() {
            conn.close();
        }
        // Wake the acceptor so that it sees the flag.
        drop(TcpStream::connect(self.addr));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        // Nothing starts a thread any more: the acceptor is gone and the test is here.
        let threads = std::mem::take(&mut *lock(&self.inner.threads));
        for thread in threads {
            let _ = thread.join();
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Up,
    Down,
}

impl Dir {
    fn index(self) -> usize {
        self as usize
    }
}

/// What the threads wait on, under one lock with [`Inner::changed`].
#[derive(Debug, Default)]
struct Controls {
    stalled: bool,
    refused: bool,
    stopped: bool,
}

/// Bytes left before the next cut of a direction, and how many cuts remain.
#[derive(Debug, Clone, Copy)]
struct Budget {
    left: u64,
    every: u64,
    times: usize,
}

impl Budget {
    fn new(every: u64, times: usize) -> Option<Budget> {
        (times > 0).then_some(Budget { left: every, every, times })
    }
}

#[derive(Debug)]
struct Inner {
    upstream: SocketAddr,
    shape: Mutex<Shape>,
    /// When each direction's pipe is free again: the end of the last chunk booked on it.
    pipes: [Mutex<Instant>; 2],
    /// Changed only with [`Inner::changed`] notified, like the flags of each [`Conn`].
    controls: Mutex<Controls>,
    changed: Condvar,
    budgets: [Mutex<Option<Budget>>; 2],
    conns: Mutex<Vec<Arc<Conn>>>,
    /// The connections' and the schedules' threads, joined on drop.
    threads: Mutex<Vec<JoinHandle<()>>>,
    bytes: [AtomicU64; 2],
    connections: AtomicUsize,
    cuts: AtomicUsize,
}

/// One proxied connection: its two sockets, for the controls to close.
#[derive(Debug)]
struct Conn {
    client: TcpStream,
    server: Mutex<ServerEnd>,
    /// Cut by the controls: every thread of the connection stops.
    cut: AtomicBool,
    /// [`Link::half_open`]: nothing moves and nothing closes.
    vanished: AtomicBool,
}

#[derive(Debug, Default)]
struct ServerEnd {
    stream: Option<TcpStream>,
    /// The connection was closed, maybe before the server was connected: a server connected
    /// afterwards is closed at once.
    closed: bool,
}

impl Conn {
    /// Shuts both sockets down both ways, which wakes every thread blocked on them.
    fn close(&self) {
        let _ = self.client.shutdown(Shutdown::Both);
        let mut server = lock(&self.server);
        server.closed = true;
        if let Some(stream) = &server.stream {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    fn set_server(&self, stream: &TcpStream) {
        let mut server = lock(&self.server);
        match stream.try_clone() {
            Ok(clone) => server.stream = Some(clone),
            Err(_) => server.closed = true,
        }
        if server.closed {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Inner {
    fn new(upstream: SocketAddr, shape: Shape) -> Inner {
        let now = Instant::now();
        Inner {
            upstream,
            shape: Mutex::new(shape),
            pipes: [Mutex::new(now), Mutex::new(now)],
            controls: Mutex::default(),
            changed: Condvar::new(),
            budgets: [Mutex::new(None), Mutex::new(None)],
            conns: Mutex::default(),
            threads: Mutex::default(),
            bytes: [AtomicU64::new(0), AtomicU64::new(0)],
            connections: AtomicUsize::new(0),
            cuts: AtomicUsize::new(0),
        }
    }

    fn set_shape(&self, shape: Shape) {
        *lock(&self.shape) = shape;
    }

    fn stall(&self, stalled: bool) {
        lock(&self.controls).stalled = stalled;
        self.changed.notify_all();
    }

    fn refuse(&self, refused: bool) {
        lock(&self.controls).refused = refused;
        self.changed.notify_all();
    }

    fn half_open(&self) {
        let conns = lock(&self.conns);
        let _controls = lock(&self.controls);
        for conn in conns.iter() {
            conn.vanished.store(true, Ordering::SeqCst);
        }
        self.changed.notify_all();
    }

    fn cut_all(&self) {
        let conns = lock(&self.conns);
        {
            let _controls = lock(&self.controls);
            for conn in conns.iter() {
                if !conn.cut.swap(true, Ordering::SeqCst) {
                    self.cuts.fetch_add(1, Ordering::SeqCst);
                }
            }
            self.changed.notify_all();
        }
        for conn in conns.iter() {
            conn.close();
        }
    }

    fn apply(&self, action: Action) {
        match action {
            Action::Cut => self.cut_all(),
            Action::Stall(stalled) => self.stall(stalled),
            Action::Refuse(refused) => self.refuse(refused),
            Action::HalfOpen => self.half_open(),
            Action::Shape(shape) => self.set_shape(shape),
        }
    }

    /// Blocks until `deadline` has passed and, if `hold`, the bytes may move (the link is not
    /// stalled, the connection has not vanished). False as soon as the link stops or `conn` is
    /// cut: the caller then gives up.
    fn wait(&self, conn: Option<&Conn>, deadline: Option<Instant>, hold: bool) -> bool {
        let mut controls = lock(&self.controls);
        loop {
            let cut = conn.is_some_and(|c| c.cut.load(Ordering::SeqCst));
            if controls.stopped || cut {
                return false;
            }
            let held = hold && (controls.stalled || conn.is_some_and(|c| c.vanished.load(Ordering::SeqCst)));
            let left = deadline.and_then(|d| d.checked_duration_since(Instant::now())).filter(|d| !d.is_zero());
            controls = match (left, held) {
                (None, false) => return true,
                (Some(left), _) => self.changed.wait_timeout(controls, left).unwrap_or_else(PoisonError::into_inner).0,
                (None, true) => self.changed.wait(controls).unwrap_or_else(PoisonError::into_inner),
            };
        }
    }

    /// How many bytes a reader takes at once: a hundredth of a second at the rate, so that a
    /// slow link delivers smoothly rather than in bursts.
    fn chunk(&self, dir: Dir) -> usize {
        match lock(&self.shape).rate(dir) {
            None => MAX_CHUNK,
            Some(bits) => usize::try_from(bits / 8 / 100).unwrap_or(MAX_CHUNK).clamp(MIN_CHUNK, MAX_CHUNK),
        }
    }

    /// Books `n` bytes read now on `dir`'s pipe: when they have left (the reader reads on then)
    /// and when they arrive (the writer writes them then).
    fn book(&self, dir: Dir, n: usize) -> (Instant, Instant) {
        let shape = *lock(&self.shape);
        let now = Instant::now();
        let left = match shape.rate(dir) {
            None => now,
            Some(bits) => {
                let mut free = lock(&self.pipes[dir.index()]);
                let start = (*free).max(now.checked_sub(SLACK).unwrap_or(now));
                let nanos = (n as u128 * 8 * 1_000_000_000) / u128::from(bits.max(1));
                *free = start + Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX));
                *free
            }
        };
        (left, left.max(now) + shape.one_way_delay)
    }

    /// How many of `n` bytes about to go `dir` may go, and whether the connections are to be
    /// cut once they have.
    fn spend(&self, dir: Dir, n: usize) -> (usize, bool) {
        let mut budget = lock(&self.budgets[dir.index()]);
        let Some(b) = budget.as_mut() else { return (n, false) };
        if b.left > n as u64 {
            b.left -= n as u64;
            return (n, false);
        }
        let allowed = b.left as usize;
        b.times -= 1;
        b.left = b.every;
        if b.times == 0 {
            *budget = None;
        }
        (allowed, true)
    }

    fn register(&self, conn: &Arc<Conn>) {
        lock(&self.conns).push(conn.clone());
        // Dropping the link closes the connections it has seen; this one it may have missed.
        if lock(&self.controls).stopped {
            conn.close();
        }
    }

    fn deregister(&self, conn: &Arc<Conn>) {
        lock(&self.conns).retain(|c| !Arc::ptr_eq(c, conn));
    }
}

/// A poisoned lock (a thread panicked holding it) still guards consistent data here.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn accept(listener: &TcpListener, inner: &Arc<Inner>) {
    for client in listener.incoming() {
        let controls = lock(&inner.controls);
        if controls.stopped {
            return;
        }
        let refused = controls.refused;
        drop(controls);
        let Ok(client) = client else { continue };
        inner.connections.fetch_add(1, Ordering::SeqCst);
        if refused {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let accepted = Instant::now();
        let shared = inner.clone();
        let thread = std::thread::spawn(move || connection(client, accepted, &shared));
        let mut threads = lock(&inner.threads);
        threads.retain(|t| !t.is_finished());
        threads.push(thread);
    }
}

/// A chunk on its way, and when it arrives; empty for the end of the stream.
#[derive(Debug)]
struct Chunk {
    arrives: Instant,
    bytes: Vec<u8>,
}

/// Forwards one connection. The client's bytes are read (and their delay counted) from the
/// start, while the connection to the server waits one one-way delay, the trip of the SYN: a
/// fresh connection's first request and response thus cost about one round trip. (The client's
/// own connect returned at once, the kernel having finished the handshake on the listener.)
fn connection(client: TcpStream, accepted: Instant, inner: &Arc<Inner>) {
    let _ = client.set_nodelay(true);
    let Ok(client_end) = client.try_clone() else { return };
    let conn = Arc::new(Conn {
        client: client_end,
        server: Mutex::default(),
        cut: AtomicBool::new(false),
        vanished: AtomicBool::new(false),
    });
    inner.register(&conn);
    let mut threads = Vec::new();
    let (up_tx, up_rx) = mpsc::sync_channel(IN_FLIGHT);
    if let Ok(from) = client.try_clone() {
        let (inner, conn) = (inner.clone(), conn.clone());
        threads.push(std::thread::spawn(move || read(from, Dir::Up, &up_tx, &conn, &inner)));
    }
    let delay = lock(&inner.shape).one_way_delay;
    let server = if inner.wait(Some(&conn), Some(accepted + delay), true) {
        TcpStream::connect_timeout(&inner.upstream, CONNECT_TIMEOUT).ok()
    } else {
        None
    };
    match server {
        Some(server) => {
            let _ = server.set_nodelay(true);
            conn.set_server(&server);
            let (down_tx, down_rx) = mpsc::sync_channel(IN_FLIGHT);
            if let Ok(from) = server.try_clone() {
                let (inner, conn) = (inner.clone(), conn.clone());
                threads.push(std::thread::spawn(move || read(from, Dir::Down, &down_tx, &conn, &inner)));
            }
            {
                let (inner, conn) = (inner.clone(), conn.clone());
                threads.push(std::thread::spawn(move || write(client, Dir::Down, &down_rx, &conn, &inner)));
            }
            write(server, Dir::Up, &up_rx, &conn, inner);
        }
        // The server is not there (or the link stopped): the client sees the connection close.
        None => conn.close(),
    }
    for thread in threads {
        let _ = thread.join();
    }
    inner.deregister(&conn);
}

/// Reads chunks from one socket into the pipe of `dir`, each when the one before it has left.
fn read(mut from: TcpStream, dir: Dir, to: &SyncSender<Chunk>, conn: &Conn, inner: &Inner) {
    let mut buf = vec![0; MAX_CHUNK];
    loop {
        let size = inner.chunk(dir);
        // The end of the stream (or a reset) travels too, as an empty chunk, behind the bytes.
        let n = from.read(&mut buf[..size]).unwrap_or(0);
        if !inner.wait(Some(conn), None, true) {
            return conn.close();
        }
        let (left, arrives) = inner.book(dir, n);
        if to.send(Chunk { arrives, bytes: buf[..n].to_vec() }).is_err() || n == 0 {
            return;
        }
        if !inner.wait(Some(conn), Some(left), false) {
            return conn.close();
        }
    }
}

/// Writes each chunk to the other socket when it arrives, spending the byte budget of `dir`,
/// until the end of the stream arrives.
fn write(mut to: TcpStream, dir: Dir, from: &Receiver<Chunk>, conn: &Conn, inner: &Inner) {
    for chunk in from {
        // A connection that vanished never passes anything on, not even its end.
        if !inner.wait(Some(conn), Some(chunk.arrives), true) {
            return conn.close();
        }
        if chunk.bytes.is_empty() {
            let _ = to.shutdown(Shutdown::Write);
            return;
        }
        let (allowed, cut) = inner.spend(dir, chunk.bytes.len());
        // Counted first, so that a test that has read the bytes finds them counted.
        inner.bytes[dir.index()].fetch_add(allowed as u64, Ordering::SeqCst);
        if to.write_all(&chunk.bytes[..allowed]).is_err() {
            // One end is gone: a proxy does not keep the other waiting.
            return conn.close();
        }
        if cut {
            return inner.cut_all();
        }
    }
}
