//! Wrong passwords against a real `outpost central serve` process: floods of 1,000 requests with
//! wrong passwords from 200 connections at once (three in a row: memory must not grow from one
//! to the next), while a site keeps syncing (one record written, pushed, then a pull). Prints the
//! server's peak resident memory (`VmHWM`), how each flood was answered, and the latency of the
//! site's syncs during the floods beside the same syncs measured just before, with no flood.
//!
//! `cargo bench -p outpost --bench auth_flood` (Linux: reads /proc). OUTPOST_FLOOD_REQUESTS,
//! OUTPOST_FLOOD_CONNECTIONS and OUTPOST_FLOOD_ROUNDS change the shape.

use central::admin;
use serde_json::json;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};
use store::{Db, Write};

const BIN: &str = env!("CARGO_BIN_EXE_outpost");
const BASELINE_SYNCS: usize = 50;

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The server process, killed when the benchmark ends however it ends.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(data: &Path) -> Result<Server, Box<dyn std::error::Error>> {
        let mut child = Command::new(BIN)
            .args(["central", "serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            // The flood comes from 127.0.0.1 over many connections: it measures the password
            // checks, not the per-address limit.
            .args(["--max-connections-per-address", "0"])
            .env("OUTPOST_LOG", "error")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().ok_or("the server said nothing")??;
        let url = first.strip_prefix("central server listening on ").ok_or("no address")?.trim().to_owned();
        // Keep draining what it prints.
        std::thread::spawn(move || lines.for_each(drop));
        Ok(Server { child, url })
    }

    /// Peak resident memory so far, in MiB.
    fn peak_rss_mib(&self) -> Result<u64, Box<dyn std::error::Error>> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or("no VmHWM")?;
        Ok(kib / 1024)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summary(mut latencies: Vec<Duration>) -> String {
    latencies.sort();
    format!(
        "{} syncs, p50 {:.1?}, p99 {:.1?}, max {:.1?}",
        latencies.len(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or_default()
    )
}

/// One sync of the site, with one new record to push; its duration.
fn sync(db: &Db, client: &site::Client, n: usize) -> Result<Duration, Box<dyn std::error::Error>> {
    db.write(&[Write::upsert(
        "stock_line",
        format!("sl-{n}").as_str(),
        &json!({"store_id": "clinic-store", "total_packs": n}),
    )])?;
    let started = Instant::now();
    site::sync_once(db, client, &mut |_: site::sync::Step, _: u64, _: u64| {})?;
    Ok(started.elapsed())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let requests = env("OUTPOST_FLOOD_REQUESTS", 1000);
    let connections = env("OUTPOST_FLOOD_CONNECTIONS", 200).max(1);
    let rounds = env("OUTPOST_FLOOD_ROUNDS", 3).max(1);
    let dir = tempfile::tempdir()?;
    let central_dir = dir.path().join("central");
    std::fs::create_dir_all(&central_dir)?;
    let password = {
        let db = Arc::new(Db::open(&central_dir.join("outpost.sqlite"))?);
        let engine = admin::init(&db, &"central".into(), None)?;
        admin::set_admin_password(&db, "bench admin passphrase")?;
        admin::add_site(&engine, &"victim".into(), false)?;
        let password = admin::add_site(&engine, &"clinic".into(), false)?;
        admin::add_store(&engine, &"clinic-store".into(), &"clinic".into(), false)?;
        password
    };
    let server = Server::start(&central_dir)?;

    let site_dir = dir.path().join("clinic");
    let init = Command::new(BIN)
        .args(["site", "init", "--site", "clinic", "--central", &server.url, "--data"])
        .arg(&site_dir)
        .env("OUTPOST_SITE_PASSWORD", &password)
        .output()?;
    if !init.status.success() {
        return Err(format!("site init: {}", String::from_utf8_lossy(&init.stderr)).into());
    }
    let site_db = Db::open(&site_dir.join("outpost.sqlite"))?;
    let client = site::Client::new(&server.url, &"clinic".into(), &password);
    site::sync_once(&site_db, &client, &mut |_: site::sync::Step, _: u64, _: u64| {})?;
    let baseline = (0..BASELINE_SYNCS).map(|n| sync(&site_db, &client, n)).collect::<Result<Vec<_>, _>>()?;
    let rss_before = server.peak_rss_mib()?;

    println!(
        "auth flood: {rounds} rounds of {requests} requests with wrong passwords from {connections} connections at \
         once, against a real `outpost central serve`, while site `clinic` syncs"
    );
    let mut during = Vec::new();
    for round in 1..=rounds {
        let (answers, elapsed, latencies) = flood(&server.url, requests, connections, &site_db, &client, during.len())?;
        let answers: Vec<String> = answers.iter().map(|(answer, count)| format!("{count} × {answer}")).collect();
        println!(
            "  round {round}: answered in {elapsed:.2?} ({}); server peak RSS so far {} MiB",
            answers.join(", "),
            server.peak_rss_mib()?
        );
        during.extend(latencies);
    }
    let rss_after = server.peak_rss_mib()?;
    println!(
        "  server peak RSS (VmHWM): {rss_before} MiB before the floods, {rss_after} MiB after (target: under 300 MB)"
    );
    println!("  site syncs with no flood (baseline): {}", summary(baseline));
    println!("  site syncs during the floods:        {} (target: p99 under 1 s)", summary(during));
    Ok(())
}

/// Answers to the flood, by status and code.
type Answers = BTreeMap<String, usize>;

/// One flood: `requests` wrong passwords over `connections` connections (one keep-alive
/// connection each), all at once, while the site syncs in a loop. Returns the answers, how long
/// the flood lasted, and the latency of each sync made meanwhile.
fn flood(
    url: &str,
    requests: usize,
    connections: usize,
    site_db: &Db,
    client: &site::Client,
    synced: usize,
) -> Result<(Answers, Duration, Vec<Duration>), Box<dyn std::error::Error>> {
    let start = Arc::new(Barrier::new(connections + 1));
    let threads: Vec<_> = (0..connections)
        .map(|i| {
            let (url, start) = (url.to_owned(), start.clone());
            let share = requests / connections + usize::from(i < requests % connections);
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .timeout_global(Some(Duration::from_secs(60)))
                    .build()
                    .into();
                let mut answers = Answers::new();
                start.wait();
                for j in 0..share {
                    // Guesses at a real site, at the syncing site, and at one that does not exist.
                    let target = ["victim", "clinic", "nobody"][(i + j) % 3];
                    *answers.entry(guess(&agent, &url, target, &format!("guess-{i}-{j}"))).or_default() += 1;
                }
                answers
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut answers = Answers::new();
    let started = Instant::now();
    start.wait();
    let mut threads = threads.into_iter().peekable();
    // Syncs go on until every flood connection has had all its answers.
    while threads.peek().is_some() {
        latencies.push(sync(site_db, client, synced + latencies.len())?);
        while let Some(thread) = threads.next_if(|t| t.is_finished()) {
            for (answer, count) in thread.join().map_err(|_| "a flood thread panicked")? {
                *answers.entry(answer).or_default() += count;
            }
        }
    }
    Ok((answers, started.elapsed(), latencies))
}

/// One status request with a wrong password; its answer as `STATUS CODE`.
fn guess(agent: &ureq::Agent, url: &str, site: &str, password: &str) -> String {
    let request = agent
        .get(format!("{url}/api/v1/sites/{site}/status"))
        .header("authorization", format!("Basic {}", base64(format!("{site}:{password}").as_bytes())))
        .header(protocol::VERSION_HEADER, protocol::PROTOCOL_VERSION.to_string());
    match request.call() {
        Ok(mut response) => {
            let status = response.status().as_u16();
            let body = response.body_mut().read_to_string().unwrap_or_default();
            let code = serde_json::from_str::<protocol::ErrorBody>(&body).map_or_else(|_| "?".into(), |b| b.error.code);
            if status == 200 {
                "200 (a wrong password got in!)".to_owned()
            } else {
                format!("{status} {code}")
            }
        }
        Err(e) => format!("error: {e}"),
    }
}

fn base64(input: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(input)
}
