//! A proxy that cuts connections: on loopback between a site and the central server, [`Proxy`]
//! forwards bytes until a budget is spent in one direction, then closes both sides (the
//! connection that breaks in the middle of a request or an answer). For a slow or faulty link
//! over time, see [`crate::link`].

use std::io::{Read, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Where a [`Proxy`] cuts the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Forward everything.
    Never,
    /// After this many bytes from the site to the central server.
    Requests(u64),
    /// After this many bytes from the central server to the site.
    Responses(u64),
}

#[derive(Debug)]
struct ProxyState {
    cut: Mutex<Cut>,
    up: AtomicU64,
    down: AtomicU64,
    cuts: AtomicUsize,
    stop: AtomicBool,
}

/// A TCP proxy on loopback between a site and the central server that forwards bytes until a
/// budget is spent, then closes both sides of the connection (and refuses further ones).
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
    acceptor: Option<JoinHandle<()>>,
}

impl Proxy {
    pub fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(ProxyState {
            cut: Mutex::new(Cut::Never),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            cuts: AtomicUsize::new(0),
            stop: AtomicBool::new(false),
        });
        let shared = state.clone();
        let acceptor = std::thread::spawn(move || {
            for client in listener.incoming() {
                if shared.stop.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let state = shared.clone();
                std::thread::spawn(move || connect(client, upstream, state));
            }
        });
        Proxy { addr, state, acceptor: Some(acceptor) }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sets where to cut from now on, with fresh byte counts.
    pub fn set(&self, cut: Cut) {
        let mut current = self.state.cut.lock().expect("proxy lock");
        self.state.up.store(0, Ordering::SeqCst);
        self.state.down.store(0, Ordering::SeqCst);
        *current = cut;
    }

    /// How many times a connection was cut.
    pub fn cuts(&self) -> usize {
        self.state.cuts.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        // Wake the acceptor so that it sees the flag.
        let _ = TcpStream::connect(self.addr);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

fn connect(client: TcpStream, upstream: SocketAddr, state: Arc<ProxyState>) {
    let Ok(server) = TcpStream::connect(upstream) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else { return };
    let ends = (client.try_clone().ok(), server.try_clone().ok());
    let both = Arc::new(Mutex::new(ends));
    let up_state = state.clone();
    let up_both = both.clone();
    let up = std::thread::spawn(move || pump(client, server, true, &up_state, &up_both));
    pump(server2, client2, false, &state, &both);
    let _ = up.join();
}

/// Copies bytes one way; on reaching the budget, forwards what fits and closes both sockets.
fn pump(
    mut from: TcpStream,
    mut to: TcpStream,
    upward: bool,
    state: &ProxyState,
    both: &Mutex<(Option<TcpStream>, Option<TcpStream>)>,
) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = to.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
        };
        let cut = *state.cut.lock().expect("proxy lock");
        let budget = match (cut, upward) {
            (Cut::Requests(limit), true) | (Cut::Responses(limit), false) => Some(limit),
            _ => None,
        };
        let counter = if upward { &state.up } else { &state.down };
        let before = counter.fetch_add(n as u64, Ordering::SeqCst);
        let allowed = budget.map_or(n, |limit| limit.saturating_sub(before).min(n as u64) as usize);
        if allowed > 0 && to.write_all(&buf[..allowed]).is_err() {
            return;
        }
        if allowed < n {
            state.cuts.fetch_add(1, Ordering::SeqCst);
            if let Ok(ends) = both.lock() {
                for end in [&ends.0, &ends.1].into_iter().flatten() {
                    let _ = end.shutdown(Shutdown::Both);
                }
            }
            return;
        }
    }
}
