//! HTTPS between a site and the central server (feature `tls`): real processes, a certificate
//! signed by a throwaway test CA (tests/fixtures), and the site trusting only that CA.
#![cfg(feature = "tls")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn outpost() -> Command {
    Command::new(env!("CARGO_BIN_EXE_outpost"))
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn run(command: &mut Command) -> Output {
    let output = command.output().expect("outpost runs");
    assert!(output.status.success(), "{command:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    output
}

/// Kills the server when the test ends, however it ends.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_site_syncs_over_https_with_a_central_server_it_trusts_and_refuses_one_it_does_not() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let central = init_central(dir.path());
    let added = run(outpost().args(["central", "site", "add", "north", "--data"]).arg(&central));
    let password = String::from_utf8_lossy(&added.stdout).lines().last().expect("a password").trim().to_owned();
    run(outpost()
        .args(["central", "write", "item", "item-1", r#"{"name":"Amoxicillin 250 mg"}"#, "--data"])
        .arg(&central));

    let (server, stdout) = serve_tls(&central, &[]);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("the server says where it listens");
    let url = line.trim().rsplit(' ').next().expect("an address").to_owned();
    assert!(url.starts_with("https://127.0.0.1:"), "{line}");

    // Without the CA, the certificate is not trusted: a clear error, and no site is created.
    let untrusted = dir.path().join("untrusted");
    let refused = outpost()
        .args(["site", "init", "--site", "north", "--central", &url, "--data"])
        .arg(&untrusted)
        .env("OUTPOST_SITE_PASSWORD", &password)
        .output()
        .expect("outpost runs");
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("could not reach the central server"), "{message}");
    assert!(!untrusted.join("outpost.sqlite").exists(), "nothing is created for a server that was not trusted");

    // Trusting the test CA, the site initialises and syncs over HTTPS.
    let north = dir.path().join("north");
    run(outpost()
        .args(["site", "init", "--site", "north", "--central", &url, "--data"])
        .arg(&north)
        .arg("--ca-cert")
        .arg(fixture("ca.pem"))
        .env("OUTPOST_SITE_PASSWORD", &password));
    run(outpost().args(["site", "sync", "--data"]).arg(&north));
    let item = run(outpost().args(["site", "get", "item", "item-1", "--data"]).arg(&north));
    assert!(String::from_utf8_lossy(&item.stdout).contains("Amoxicillin 250 mg"));
    drop(server);
}

#[test]
fn over_https_the_dashboard_cookies_are_secure() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let central = init_central(dir.path());
    let (_server, stdout) = serve_tls(&central, &["--dashboard-listen", "127.0.0.1:0"]);
    let mut lines = BufReader::new(stdout).lines();
    let _sync = lines.next().expect("the sync address").expect("readable");
    let dashboard = lines.next().expect("the dashboard address").expect("readable");
    let url = dashboard.trim().rsplit(' ').next().expect("an address").trim_end_matches('/').to_owned();
    assert!(url.starts_with("https://127.0.0.1:"), "{dashboard}");

    let pem = std::fs::read(fixture("ca.pem")).expect("the test CA");
    let certs: Vec<_> = ureq::tls::parse_pem(&pem)
        .filter_map(|item| match item {
            Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
            _ => None,
        })
        .collect();
    let tls =
        ureq::tls::TlsConfig::builder().root_certs(ureq::tls::RootCerts::Specific(std::sync::Arc::new(certs))).build();
    let agent: ureq::Agent = ureq::Agent::config_builder().tls_config(tls).http_status_as_error(false).build().into();
    let response = agent.get(format!("{url}/login")).call().expect("the login page over HTTPS");
    assert_eq!(response.status(), 200);
    let cookie = response.headers().get("set-cookie").and_then(|v| v.to_str().ok()).expect("a login cookie");
    assert!(cookie.split("; ").any(|a| a == "Secure"), "`{cookie}` is not marked Secure over HTTPS");
}

#[test]
fn over_https_a_handshake_that_stalls_is_closed_after_the_idle_timeout_and_logged() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let central = init_central(dir.path());
    let (server, stdout) = serve_tls(&central, &["--idle-timeout-secs", "2"]);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("the server says where it listens");
    let addr: std::net::SocketAddr =
        line.trim().rsplit("https://").next().and_then(|a| a.parse().ok()).expect("an address");

    // One client sends nothing, another the first bytes of a TLS ClientHello, each from its own
    // loopback address (what is logged is held back per address).
    let stalled =
        [(Ipv4Addr::new(127, 0, 70, 1), &b""[..]), (Ipv4Addr::new(127, 0, 70, 2), &[0x16, 0x03, 0x01, 0x00][..])];
    let started = Instant::now();
    for (source, sent) in stalled {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("a socket");
        socket.bind(&std::net::SocketAddr::from((source, 0)).into()).expect("bind to a loopback address");
        socket.connect(&addr.into()).expect("connect");
        let mut stream: TcpStream = socket.into();
        stream.write_all(sent).expect("write");
        stream.set_read_timeout(Some(Duration::from_secs(7))).expect("a read timeout");
        let read = stream.read(&mut [0u8; 64]);
        assert!(
            matches!(&read, Ok(0)) || read.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
            "the stalled handshake from {source} is still open after {:?}: {read:?}",
            started.elapsed()
        );
    }
    // The socket closes as the handshake gives up, a moment before the log says so.
    let told = |log: &str| {
        stalled.iter().all(|(source, _)| {
            log.lines().any(|l| l.contains(&format!("{source}:")) && l.contains("the TLS handshake"))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut log = String::new();
    while !told(&log) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
        log = std::fs::read_to_string(server_log(&central)).expect("the server's log");
    }
    assert!(told(&log), "the log says why each connection was closed:\n{log}");
    drop(server);
}

/// Where [`serve_tls`] writes the server's log (standard error).
fn server_log(central: &Path) -> PathBuf {
    central.with_extension("log")
}

/// `outpost central serve` over HTTPS with the test certificate, on a free port; the running
/// server and its standard output (where it says where it listens). Its log goes to
/// [`server_log`].
fn serve_tls(central: &std::path::Path, extra: &[&str]) -> (Server, std::process::ChildStdout) {
    let mut child = outpost()
        .args(["central", "serve", "--listen", "127.0.0.1:0"])
        .args(extra)
        .arg("--data")
        .arg(central)
        .arg("--tls-cert")
        .arg(fixture("cert.pem"))
        .arg("--tls-key")
        .arg(fixture("key.pem"))
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(server_log(central)).expect("the server's log"))
        .spawn()
        .expect("the server starts");
    let stdout = child.stdout.take().expect("stdout");
    (Server(child), stdout)
}

/// A new central server's data directory under `dir`.
fn init_central(dir: &std::path::Path) -> std::path::PathBuf {
    let central = dir.join("central");
    run(outpost()
        .args(["central", "init", "--data"])
        .arg(&central)
        .env("OUTPOST_ADMIN_PASSWORD", "test admin passphrase"));
    central
}
