//! The shaping proxy of the test kit ([`testkit::link::Link`]) against tiny servers on loopback:
//! it keeps its rate and its delay, and each of its controls does what the slow-link tests rely
//! on (a stall holds bytes, a cut closes, a half-open link stays open and silent).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use testkit::link::{Link, Shape};
use testkit::wait_until;

/// A server on loopback for a link to forward to, running `handle` on each connection in a
/// thread of its own, and counting the connections whose end reached it.
struct Upstream {
    addr: SocketAddr,
    ended: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
}

impl Upstream {
    fn start(handle: fn(TcpStream)) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the upstream server");
        let addr = listener.local_addr().expect("the upstream address");
        let (ended, stop) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicBool::new(false)));
        let acceptor = {
            let (ended, stop) = (ended.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let ended = ended.clone();
                    std::thread::spawn(move || {
                        handle(stream);
                        ended.fetch_add(1, Ordering::SeqCst);
                    });
                }
            })
        };
        Upstream { addr, ended, stop, acceptor: Some(acceptor) }
    }

    /// An echo server: every byte comes back.
    fn echo() -> Upstream {
        Upstream::start(|mut stream| {
            let mut back = stream.try_clone().expect("clone the echo stream");
            let _ = std::io::copy(&mut stream, &mut back);
        })
    }

    /// A source: each line `N` asks for `N` bytes of [`pattern`].
    fn source() -> Upstream {
        Upstream::start(|stream| {
            let mut out = stream.try_clone().expect("clone the source stream");
            let mut lines = std::io::BufReader::new(stream);
            let mut line = String::new();
            while std::io::BufRead::read_line(&mut lines, &mut line).is_ok_and(|n| n > 0) {
                let n = line.trim().parse().expect("a byte count");
                if out.write_all(&pattern(n)).is_err() {
                    return;
                }
                line.clear();
            }
        })
    }

    fn ended(&self) -> usize {
        self.ended.load(Ordering::SeqCst)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        drop(TcpStream::connect(self.addr));
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Bytes that show their order (251 is prime: no chunk size lines up with it).
fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

fn connect(link: &Link) -> TcpStream {
    let stream = TcpStream::connect(link.addr()).expect("connect through the link");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("a read timeout");
    stream
}

/// Sends `message` to an echo server and reads it back.
fn echo(stream: &mut TcpStream, message: &[u8]) {
    stream.write_all(message).expect("send");
    let mut back = vec![0; message.len()];
    stream.read_exact(&mut back).expect("read the echo");
    assert_eq!(back, message);
}

/// Asks a source for `n` bytes and reads them all.
fn fetch(stream: &mut TcpStream, n: usize) {
    stream.write_all(format!("{n}\n").as_bytes()).expect("ask");
    let mut got = vec![0; n];
    stream.read_exact(&mut got).expect("read what was asked");
    assert_eq!(got, pattern(n));
}

/// Whether the stream's end (or a reset) reaches the client within `within`; false if it times
/// out with the connection still open.
fn ends_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream.set_read_timeout(Some(within)).expect("a read timeout");
    let mut byte = [0; 1];
    match stream.read(&mut byte) {
        Ok(0) => true,
        Ok(_) => panic!("a byte came where the stream should have ended or stayed silent"),
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => false,
        Err(_) => true,
    }
}

fn seconds(since: Instant) -> f64 {
    since.elapsed().as_secs_f64()
}

#[test]
fn a_64_kbit_link_moves_16_kb_down_in_about_two_seconds() {
    let source = Upstream::source();
    let link = Link::start(source.addr, Shape { down_bits_per_sec: Some(64_000), ..Shape::default() });
    let mut stream = connect(&link);
    let started = Instant::now();
    fetch(&mut stream, 16 * 1024);
    let took = seconds(started);
    eprintln!("16 KiB down at 64 kbit/s: {took:.3} s (the bits alone: 2.048 s)");
    assert!((1.7..3.0).contains(&took), "16 KiB at 64 kbit/s took {took:.3} s");
    assert_eq!(link.bytes_down(), 16 * 1024);
    assert_eq!(link.bytes_up(), "16384\n".len() as u64);
    assert_eq!(link.connections(), 1);
}

#[test]
fn a_9600_bit_link_with_a_long_delay_keeps_its_rate_and_delivers_smoothly() {
    let source = Upstream::source();
    let delay = Duration::from_millis(250);
    let link = Link::start(source.addr, Shape::symmetric(9_600, delay));
    let mut stream = connect(&link);
    let started = Instant::now();
    stream.write_all(b"2400\n").expect("ask");
    let (mut got, mut arrivals) = (Vec::new(), Vec::new());
    let mut buf = [0; 4096];
    while got.len() < 2400 {
        let n = stream.read(&mut buf).expect("read");
        assert!(n > 0, "the stream ended early");
        got.extend_from_slice(&buf[..n]);
        arrivals.push(started.elapsed());
    }
    let took = seconds(started);
    let gap = arrivals.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default();
    eprintln!("2,400 bytes at 9.6 kbit/s, {delay:?} each way: {took:.3} s (bits 2.0 s + the trips 0.5 s), largest gap {gap:?}");
    assert_eq!(got, pattern(2400));
    // The delay is paid once, not once per chunk: the bytes in flight queue on the link.
    assert!((2.4..3.2).contains(&took), "2,400 bytes at 9.6 kbit/s over 250 ms took {took:.3} s");
    assert!(gap < Duration::from_millis(100), "bytes arrive smoothly, not in bursts (largest gap {gap:?})");
}

#[test]
fn an_up_rate_paces_what_the_client_sends() {
    let echo_server = Upstream::echo();
    let link = Link::start(echo_server.addr, Shape { up_bits_per_sec: Some(128_000), ..Shape::default() });
    let mut stream = connect(&link);
    let started = Instant::now();
    echo(&mut stream, &pattern(16_000));
    let took = seconds(started);
    eprintln!("16,000 bytes up at 128 kbit/s: {took:.3} s (the bits alone: 1.000 s)");
    assert!((0.85..1.6).contains(&took), "16,000 bytes at 128 kbit/s took {took:.3} s");
}

#[test]
fn connections_at_once_share_the_rate_of_the_link() {
    let source = Upstream::source();
    let link = Link::start(source.addr, Shape { down_bits_per_sec: Some(64_000), ..Shape::default() });
    let started = Instant::now();
    let fetches: Vec<_> = (0..2)
        .map(|_| {
            let mut stream = connect(&link);
            std::thread::spawn(move || {
                fetch(&mut stream, 8 * 1024);
                Instant::now()
            })
        })
        .collect();
    let ends: Vec<Instant> = fetches.into_iter().map(|f| f.join().expect("a fetch")).collect();
    let last = ends.iter().map(|end| end.duration_since(started).as_secs_f64()).fold(0.0, f64::max);
    eprintln!("2 × 8 KiB down at once at 64 kbit/s: the last done after {last:.3} s (the bits alone: 2.048 s)");
    assert!((1.7..3.0).contains(&last), "two 8 KiB fetches sharing 64 kbit/s took {last:.3} s");
    assert_eq!(link.bytes_down(), 16 * 1024);
}

#[test]
fn a_request_and_its_response_take_a_round_trip() {
    let echo_server = Upstream::echo();
    let delay = Duration::from_millis(150);
    let link = Link::start(echo_server.addr, Shape { one_way_delay: delay, ..Shape::default() });
    // The first on a fresh connection (whose setup the link delays too), then another on it.
    let mut stream = connect(&link);
    let started = Instant::now();
    echo(&mut stream, b"ping");
    let first = started.elapsed();
    let started = Instant::now();
    echo(&mut stream, b"pong");
    let second = started.elapsed();
    eprintln!("with {delay:?} each way: a fresh connection's echo {first:?}, the next {second:?}");
    for took in [first, second] {
        assert!(took >= 2 * delay, "an echo took {took:?}, less than a round trip");
        assert!(took < 3 * delay, "an echo took {took:?}, far more than a round trip");
    }
}

#[test]
fn a_stall_holds_the_bytes_and_unstalling_delivers_them_all_in_order() {
    let echo_server = Upstream::echo();
    let link = Link::start(echo_server.addr, Shape::default());
    let mut stream = connect(&link);
    echo(&mut stream, b"hello");
    link.stall(true);

    let message = pattern(64 * 1024);
    let sender = {
        let (mut stream, message) = (stream.try_clone().expect("clone"), message.clone());
        std::thread::spawn(move || stream.write_all(&message).expect("send while stalled"))
    };
    assert!(!ends_within(&mut stream, Duration::from_millis(300)), "a stalled link keeps the connection open");
    assert_eq!((link.bytes_up(), link.bytes_down()), (5, 5), "nothing moved while stalled");

    link.stall(false);
    let started = Instant::now();
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("a read timeout");
    let mut back = vec![0; message.len()];
    stream.read_exact(&mut back).expect("what was held");
    eprintln!("64 KiB held by a stall, delivered {:?} after it ended", started.elapsed());
    assert!(back == message, "the held bytes arrive whole and in order");
    sender.join().expect("the sender");
}

#[test]
fn cutting_closes_every_open_connection_and_new_ones_work() {
    let echo_server = Upstream::echo();
    let link = Link::start(echo_server.addr, Shape::default());
    let mut open: Vec<TcpStream> = (0..2).map(|_| connect(&link)).collect();
    for stream in &mut open {
        echo(stream, b"hello");
    }
    link.cut_now();
    for stream in &mut open {
        assert!(ends_within(stream, Duration::from_secs(2)), "the client sees its connection end");
    }
    wait_until("the server to see both connections end", Duration::from_secs(2), || echo_server.ended() == 2);
    assert_eq!(link.cuts(), 2);

    echo(&mut connect(&link), b"again");
    assert_eq!((link.connections(), link.cuts()), (3, 2));
}

#[test]
fn a_down_byte_budget_cuts_at_that_byte_count() {
    let source = Upstream::source();
    // Chunks of 1,250 bytes at 1 Mbit/s: the budget ends inside the third.
    let link = Link::start(source.addr, Shape { down_bits_per_sec: Some(1_000_000), ..Shape::default() });
    link.cut_after_down_bytes(3000);
    let mut stream = connect(&link);
    stream.write_all(b"10000\n").expect("ask");
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    assert_eq!(got.len(), 3000, "the connection is cut after exactly the budget");
    assert_eq!(got, pattern(3000));
    assert_eq!((link.cuts(), link.bytes_down()), (1, 3000));

    // One cut only: the next connection gets everything.
    fetch(&mut connect(&link), 10_000);
    assert_eq!(link.cuts(), 1);
}

#[test]
fn a_repeated_byte_budget_cuts_each_time_then_forwards() {
    let source = Upstream::source();
    let link = Link::start(source.addr, Shape::default());
    link.cut_every_down_bytes(1000, 3);
    for _ in 0..3 {
        let mut stream = connect(&link);
        stream.write_all(b"5000\n").expect("ask");
        let mut got = Vec::new();
        let _ = stream.read_to_end(&mut got);
        assert_eq!(got, pattern(1000));
    }
    fetch(&mut connect(&link), 5000);
    assert_eq!((link.cuts(), link.connections()), (3, 4));
}

#[test]
fn an_up_byte_budget_cuts_what_the_client_sends() {
    let echo_server = Upstream::echo();
    let link = Link::start(echo_server.addr, Shape::default());
    link.cut_after_up_bytes(10);
    let mut stream = connect(&link);
    stream.write_all(b"0123456789abcdef").expect("send");
    let mut got = Vec::new();
    let _ = stream.read_to_end(&mut got);
    assert!(got.len() <= 10 && b"0123456789".starts_with(&got), "only the budget went up: {got:?}");
    assert_eq!((link.cuts(), link.bytes_up()), (1, 10));
}

#[test]
fn a_half_open_link_keeps_the_sockets_open_and_moves_nothing() {
    let echo_server = Upstream::echo();
    let link = Link::start(echo_server.addr, Shape::default());
    let mut stream = connect(&link);
    echo(&mut stream, b"hello");
    link.half_open();

    stream.write_all(b"anyone there?").expect("the client's side still takes bytes");
    assert!(!ends_within(&mut stream, Duration::from_millis(300)), "the connection neither answers nor ends");
    assert_eq!((link.bytes_up(), link.bytes_down()), (5, 5), "nothing moved");
    // The client gives up; the server never learns of it.
    drop(stream);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(echo_server.ended(), 0, "the server's socket stays open");

    // New connections are not part of what vanished.
    echo(&mut connect(&link), b"again");
    assert_eq!(link.cuts(), 0);
}

#[test]
fn a_refusing_link_closes_new_connections_until_it_is_up_again() {
    let echo_server = Upstream::echo();
    let link = Link::start(echo_server.addr, Shape::default());
    link.refuse(true);
    assert!(ends_within(&mut connect(&link), Duration::from_secs(2)), "a down link closes the connection");
    link.refuse(false);
    echo(&mut connect(&link), b"up again");
    assert_eq!(link.connections(), 2);
}

#[test]
fn a_schedule_cuts_the_connections_open_at_each_step() {
    let echo_server = Upstream::echo();
    let link = Link::start(echo_server.addr, Shape::default());
    let mut first = connect(&link);
    echo(&mut first, b"hello");
    link.cut_every(Duration::from_millis(200), 2);
    assert!(ends_within(&mut first, Duration::from_secs(2)), "the first step cuts");
    let mut second = connect(&link);
    echo(&mut second, b"hello");
    assert!(ends_within(&mut second, Duration::from_secs(2)), "the second step cuts");
    assert_eq!(link.cuts(), 2);
    let mut third = connect(&link);
    assert!(!ends_within(&mut third, Duration::from_millis(400)), "two steps only");
    echo(&mut third, b"still here");
}

#[test]
fn dropping_the_link_closes_its_port_and_every_connection() {
    let echo_server = Upstream::echo();
    let link = Link::start(echo_server.addr, Shape::default());
    let addr = link.addr();
    let mut vanished = connect(&link);
    echo(&mut vanished, b"hello");
    link.half_open();
    let mut stream = connect(&link);
    echo(&mut stream, b"hello");
    // A connection whose setup waits for a long delay holds the drop no more than the others.
    link.set_shape(Shape { one_way_delay: Duration::from_secs(30), ..Shape::default() });
    let mut connecting = connect(&link);
    connecting.write_all(b"hello").expect("send");

    let started = Instant::now();
    drop(link);
    assert!(started.elapsed() < Duration::from_secs(1), "the drop joined its threads at once");
    assert!(TcpStream::connect(addr).is_err(), "the port is closed");
    assert!(ends_within(&mut stream, Duration::from_secs(2)), "the client's connection ends");
    assert!(ends_within(&mut vanished, Duration::from_secs(2)), "the half-open one too");
    assert!(ends_within(&mut connecting, Duration::from_secs(2)), "and the one not yet set up");
    wait_until("the server to see its connections end", Duration::from_secs(2), || echo_server.ended() == 2);
}
