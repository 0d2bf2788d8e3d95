//! Clients that keep the central server waiting, against a real `outpost central serve` on
//! loopback, on both central backends:
//! - five hundred slow connections (request heads a byte at a time, push bodies a few bytes at
//!   a time), from many addresses and from one beyond its limit, do not keep a site from
//!   syncing;
//! - a connection whose request head or body stops arriving is closed after the idle timeout,
//!   and the server's log says what it waited for;
//! - an honest upload, slow but steady, is never cut, however long it takes, nor a download
//!   that goes on after its handler is done.
//!
//! The slow clients connect from addresses of 127.0.0.0/8 other than 127.0.0.1 (Linux loopback
//! answers them all), so that each address has its own count of connections.

mod common;

use common::{change, good_headers, on_each_backend, record, Backend, Central, Network, Site};
use model::Seq;
use protocol::{PullRequest, PushRequest};
use serde_json::json;
use socket2::{Domain, Socket, Type};
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

on_each_backend!(
    five_hundred_slow_connections_do_not_keep_a_site_from_syncing,
    a_push_whose_body_stops_arriving_is_closed_after_the_idle_timeout,
    connections_whose_request_never_comes_whole_are_closed_after_the_idle_timeout,
    an_honest_slow_upload_is_not_cut,
);

/// The idle timeout of the tests that wait for it, in seconds.
const IDLE: u64 = 2;

/// How long after the idle timeout a connection may still be open before the test fails.
const GRACE: Duration = Duration::from_secs(5);

/// A network whose central server closes idle connections after [`IDLE`] seconds.
fn impatient(backend: &Backend) -> Network {
    Network::with(backend, &["north"], |central| central.serve_with(&["--idle-timeout-secs", &IDLE.to_string()]))
}

/// A connection to `server` from `source` (any address of 127.0.0.0/8).
fn connect_from(source: Ipv4Addr, server: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a socket");
    socket.bind(&SocketAddr::from((source, 0)).into()).unwrap_or_else(|e| panic!("binding to {source}: {e}"));
    socket.connect(&server.into()).unwrap_or_else(|e| panic!("connecting from {source}: {e}"));
    socket.into()
}

/// The head of a push as `site` sends it, announcing a body of `length` bytes.
fn push_head(site: &Site, length: usize) -> Vec<u8> {
    let mut head =
        format!("POST /api/v1/sites/{}/push HTTP/1.1\r\nhost: central\r\ncontent-length: {length}\r\n", site.name);
    for (name, value) in good_headers(&site.name, &site.password).0 {
        head += &format!("{name}: {value}\r\n");
    }
    head += "\r\n";
    head.into_bytes()
}

/// Reads until the server closes the connection (end of stream, or reset): how long that took
/// and what the server sent first; `None` if the connection is still open after `limit`.
fn wait_closed(stream: &mut TcpStream, limit: Duration) -> Option<(Duration, Vec<u8>)> {
    let started = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.checked_sub(started.elapsed()).filter(|left| !left.is_zero())?;
        stream.set_read_timeout(Some(left)).expect("a read timeout");
        match stream.read(&mut buf) {
            Ok(0) => return Some((started.elapsed(), received)),
            Ok(n) => received.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => return None,
            Err(_) => return Some((started.elapsed(), received)),
        }
    }
}

/// Reads one answer, its head (in lower case) and its body (by its content-length), pausing
/// `pause` after each read of at most 4 KB; panics if the connection closes first.
fn read_answer(stream: &mut TcpStream, pause: Duration) -> (String, Vec<u8>) {
    let started = Instant::now();
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("a read timeout");
    let mut answer = Vec::new();
    let mut head: Option<(String, usize)> = None;
    let mut buf = [0u8; 4096];
    loop {
        if let Some((text, length)) = &head {
            if answer.len() >= *length {
                return (text.clone(), answer);
            }
        }
        let n = stream.read(&mut buf).unwrap_or_else(|e| panic!("reading the answer: {e}"));
        assert!(n > 0, "the connection closed after {} bytes of the answer, {:?}", answer.len(), started.elapsed());
        answer.extend_from_slice(&buf[..n]);
        if head.is_none() {
            if let Some(end) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
                let text = String::from_utf8_lossy(&answer[..end]).to_lowercase();
                let length = text
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or_else(|| panic!("no content-length in {text}"));
                answer.drain(..end + 4);
                head = Some((text, length));
            }
        }
        std::thread::sleep(pause);
    }
}

/// Whether the server holds the connection open and has sent nothing on it.
fn held_open(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).expect("non-blocking");
    let held = matches!((&*stream).read(&mut [0u8; 1]), Err(e) if e.kind() == ErrorKind::WouldBlock);
    stream.set_nonblocking(false).expect("blocking");
    held
}

/// The server's log without terminal colours.
fn plain_log(central: &Central) -> String {
    let log = central.log();
    let mut plain = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(|c| c.is_ascii_alphabetic());
        } else {
            plain.push(c);
        }
    }
    plain
}

/// The server's log lines about connections from `source` closed while waiting for `what`.
fn closed_for(central: &Central, source: Ipv4Addr, what: &str) -> usize {
    plain_log(central)
        .lines()
        .filter(|l| l.contains("kept the server waiting"))
        .filter(|l| l.contains(&format!("peer={source}:")) && l.contains(&format!("waiting_for={what} ")))
        .count()
}

/// The connections of a siege, and what each keeps sending.
struct Slow {
    stream: TcpStream,
    /// Sends the rest of its request head a byte at a time (else a push body, a few bytes at a
    /// time).
    head: bool,
    source: Ipv4Addr,
}

fn five_hundred_slow_connections_do_not_keep_a_site_from_syncing(backend: &Backend) {
    // The default limits: 30 s of silence, 32 connections per address.
    let network = Network::new(backend, &["north", "slow"]);
    let (central, north, slow) = (&network.central, network.site("north"), network.site("slow"));
    let addr = central.addr();
    north.sync();
    // `slow`'s password is verified once here: its slow pushes then get as far as their bodies.
    let http = common::Http::new(&central.url());
    assert_eq!(http.get("/api/v1/sites/slow/status", &good_headers("slow", &slow.password).as_refs()).status, 200);

    // 460 connections spread over 23 addresses (20 each), and 40 from one address, 8 over its
    // limit; half send a request head, half a push body, both never ending.
    let crowded = Ipv4Addr::new(127, 0, 20, 1);
    let sources: Vec<Ipv4Addr> = (1..=23)
        .flat_map(|m| std::iter::repeat_n(Ipv4Addr::new(127, 0, 10, m), 20))
        .chain(std::iter::repeat_n(crowded, 40))
        .collect();
    let started = Instant::now();
    let siege: Vec<Slow> = sources
        .iter()
        .enumerate()
        .map(|(i, source)| {
            let mut stream = connect_from(*source, addr);
            let head = i % 2 == 0;
            let first = if head {
                b"POST /api/v1/sites/slow/push HTTP/1.1\r\nx-slow: ".to_vec()
            } else {
                push_head(slow, 1 << 20)
            };
            // A connection already refused may be closed under the write: that is for later.
            let _ = stream.write_all(&first);
            Slow { stream, head, source: *source }
        })
        .collect();
    eprintln!("500 slow connections opened in {:?}", started.elapsed());
    let stop = Arc::new(AtomicBool::new(false));
    let trickle = {
        let streams: Vec<(TcpStream, bool)> =
            siege.iter().map(|s| (s.stream.try_clone().expect("a second handle"), s.head)).collect();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut tick = 0u64;
            while !stop.load(Ordering::SeqCst) {
                for (stream, head) in &streams {
                    let mut stream = stream;
                    // A head gets a byte every two seconds, a body three bytes every second; a
                    // connection the server refused fails here, which is for later.
                    let _ = match head {
                        true if tick % 2 == 0 => stream.write_all(b"a"),
                        true => Ok(()),
                        false => stream.write_all(b"abc"),
                    };
                }
                tick += 1;
                std::thread::sleep(Duration::from_secs(1));
            }
        })
    };

    // The crowded address keeps as many as it may; the others keep all of theirs.
    std::thread::sleep(Duration::from_millis(1500));
    let refused: Vec<usize> = siege
        .iter()
        .enumerate()
        .filter(|(_, s)| s.source == crowded && !held_open(&s.stream))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(refused.len(), 8, "connections beyond the limit of 32 from {crowded} are closed at once");

    // Meanwhile a site pushes and pulls as usual.
    for n in 0..3 {
        north.write("stock_line", &format!("line-{n}"), &json!({"store_id": "store-north", "total_packs": n}));
    }
    let item = json!({"code": "AMX", "name": "Amoxicillin 250 mg"});
    central.write("item", "item-amx", &item);
    let synced = Instant::now();
    let out = north.sync();
    eprintln!("the site synced in {:?} beside the siege: {}", synced.elapsed(), out.last_line());
    assert!(out.stdout.contains("pushed 3 (0 rejected)"), "{}", out.stdout);
    assert_eq!(north.get("item", "item-amx"), Some(item), "the site received the central data");
    for n in 0..3 {
        let line = record(central, "stock_line", &format!("line-{n}"));
        assert_eq!(line, Some(json!({"store_id": "store-north", "total_packs": n})), "the push arrived");
    }

    // The siege was held the whole time: every slow connection the server admitted is open.
    let held = siege.iter().enumerate().filter(|(i, s)| !refused.contains(i) && held_open(&s.stream)).count();
    assert_eq!(held, 492, "slow connections the server gave up on (after {:?})", started.elapsed());
    stop.store(true, Ordering::SeqCst);
    trickle.join().expect("the trickling thread");
    let log = plain_log(central);
    let refusals =
        log.lines().filter(|l| l.contains("refusing connections") && l.contains(&format!("peer={crowded}"))).count();
    assert_eq!(refusals, 1, "eight refusals from one address are logged once:\n{log}");
}

fn a_push_whose_body_stops_arriving_is_closed_after_the_idle_timeout(backend: &Backend) {
    let network = impatient(backend);
    let (central, north) = (&network.central, network.site("north"));
    let source = Ipv4Addr::new(127, 0, 30, 1);
    let mut stream = connect_from(source, central.addr());
    stream.write_all(&push_head(north, 65_536)).expect("the head");
    stream.write_all(&[b'{'; 1000]).expect("the first kilobyte of the body");

    let (took, answer) = wait_closed(&mut stream, Duration::from_secs(IDLE) + GRACE)
        .unwrap_or_else(|| panic!("the connection is still open {GRACE:?} after the idle timeout"));
    assert!(took >= Duration::from_secs(IDLE) / 2, "closed after {took:?}, before the idle timeout");
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("request_timeout"), "{answer}");
    assert_eq!(closed_for(central, source, "the request body"), 1, "{}", plain_log(central));
    north.sync();
}

fn connections_whose_request_never_comes_whole_are_closed_after_the_idle_timeout(backend: &Backend) {
    let network = impatient(backend);
    let (central, north) = (&network.central, network.site("north"));
    let (silent, partial, headers_only) =
        (Ipv4Addr::new(127, 0, 40, 1), Ipv4Addr::new(127, 0, 40, 2), Ipv4Addr::new(127, 0, 40, 3));
    let mut connections = [silent, partial, headers_only].map(|source| connect_from(source, central.addr()));
    connections[1].write_all(b"POST /api/v1/sites/north/push HTTP/1.1\r\nhost: central\r\ncontent-le").expect("a head");
    connections[2].write_all(&push_head(north, 100)).expect("a whole head");

    let closed: Vec<_> = std::thread::scope(|scope| {
        let waits: Vec<_> = connections
            .iter_mut()
            .map(|stream| scope.spawn(move || wait_closed(stream, Duration::from_secs(IDLE) + GRACE)))
            .collect();
        waits.into_iter().map(|w| w.join().expect("a wait")).collect()
    });
    for (source, closed) in [silent, partial, headers_only].iter().zip(&closed) {
        let (took, _) = closed.as_ref().unwrap_or_else(|| panic!("the connection from {source} is still open"));
        assert!(*took >= Duration::from_secs(IDLE) / 2, "the connection from {source} was closed after {took:?}");
    }
    assert!(closed[0].as_ref().is_some_and(|(_, answer)| answer.is_empty()), "no answer to no request");
    let answer = closed[2].as_ref().map(|(_, answer)| String::from_utf8_lossy(answer).into_owned()).unwrap_or_default();
    assert!(answer.starts_with("HTTP/1.1 408"), "a whole head without its body: {answer}");
    for (source, what) in
        [(silent, "the request headers"), (partial, "the request headers"), (headers_only, "the request body")]
    {
        assert_eq!(closed_for(central, source, what), 1, "from {source}:\n{}", plain_log(central));
    }
    north.sync();
}

fn an_honest_slow_upload_is_not_cut(backend: &Backend) {
    let network = impatient(backend);
    let (central, north) = (&network.central, network.site("north"));
    // A push of some 12 KB that compresses poorly, sent at 2 KB/s: six seconds, three times the
    // idle timeout, but never silent for long.
    let mut noise = 0x2545_f491_4f6c_dd1d_u64;
    let mut batch = PushRequest { after: Seq(0), changes: Vec::new() };
    let mut body = Vec::new();
    while body.len() < 12 * 1024 {
        let n = batch.changes.len() as i64 + 1;
        noise ^= noise << 13;
        noise ^= noise >> 7;
        noise ^= noise << 17;
        let line = json!({"store_id": "store-north", "total_packs": n, "note": format!("{noise:016x}{:016x}", noise.rotate_left(29))});
        batch.changes.push(change(n, "north", "stock_line", &format!("slow-{n}"), &line));
        body = protocol::encode(&batch);
    }
    let mut stream = connect_from(Ipv4Addr::new(127, 0, 50, 1), central.addr());
    stream.write_all(&push_head(north, body.len())).expect("the head");
    let started = Instant::now();
    for chunk in body.chunks(1024) {
        stream.write_all(chunk).expect("a kilobyte of the body");
        std::thread::sleep(Duration::from_millis(500));
    }
    let sending = started.elapsed();
    assert!(sending > Duration::from_secs(2 * IDLE), "the upload took {sending:?}");

    let (head, answer) = read_answer(&mut stream, Duration::ZERO);
    assert!(head.starts_with("http/1.1 200"), "{head}");
    let pushed: protocol::PushResponse = protocol::decode(&answer).expect("a push answer");
    let count = batch.changes.len();
    eprintln!("{} bytes ({count} changes) uploaded in {sending:?}, all applied", body.len());
    assert_eq!(pushed.applied, count as u64, "{pushed:?}");
    assert!(record(central, "stock_line", &format!("slow-{count}")).is_some());
}

/// The answer to a pull goes on being sent after its handler is done (hyper holds what the
/// socket has no room for yet): a slow reader of a big answer is not taken for a connection
/// waiting for its next request. Transport alone: on SQLite only.
#[test]
fn an_honest_slow_download_is_not_cut() {
    let network = impatient(&Backend::Sqlite);
    let (central, north) = (&network.central, network.site("north"));
    // Items that compress poorly: a first pull page of some 4 MB, more than the sockets hold.
    let mut noise = 0x2545_f491_4f6c_dd1d_u64;
    let items: Vec<store::Write> = (0..20_000)
        .map(|i| {
            let note: String = (0..24)
                .map(|_| {
                    noise ^= noise << 13;
                    noise ^= noise >> 7;
                    noise ^= noise << 17;
                    format!("{noise:016x}")
                })
                .collect();
            store::Write::upsert("item", format!("item-{i:05}"), &json!({"code": format!("C{i:05}"), "note": note}))
        })
        .collect();
    central::Engine::new(Arc::new(central.db.open())).write(&items).expect("write the items");
    let pull = protocol::encode(&PullRequest {
        cursor: None,
        max_bytes: 32 << 20,
        waiting_to_push: None,
        format: Default::default(),
    });
    let mut head =
        format!("POST /api/v1/sites/north/pull HTTP/1.1\r\nhost: central\r\ncontent-length: {}\r\n", pull.len());
    for (name, value) in good_headers(&north.name, &north.password).0 {
        head += &format!("{name}: {value}\r\n");
    }
    head += "\r\n";
    let mut stream = connect_from(Ipv4Addr::new(127, 0, 60, 1), central.addr());
    stream.write_all(head.as_bytes()).expect("the head");
    stream.write_all(&pull).expect("the body");

    // About 400 KB/s: some ten seconds, five times the idle timeout.
    let started = Instant::now();
    let (head, answer) = read_answer(&mut stream, Duration::from_millis(10));
    let took = started.elapsed();
    eprintln!("{} bytes downloaded in {took:?}", answer.len());
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(took > Duration::from_secs(2 * IDLE), "the download took only {took:?}");
    let page: protocol::PullResponse = protocol::decode(&answer).expect("a pull page");
    assert_eq!(page.changes.iter().filter(|c| c.table == "item").count(), 20_000);
}
