//! Site credentials on a real central server process: wrong passwords cannot exhaust its memory
//! (argon2 runs a few at a time, repeated failures are refused for a while with 429 and
//! `Retry-After`), good syncs go on meanwhile, and a password reset made by another process is
//! seen at once by every running server.

mod common;

use common::{basic, good_headers, on_each_backend, peak_rss_kib, run, Backend, Http, Network};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

on_each_backend!(a_password_reset_from_another_process_is_seen_by_every_running_server);

/// A raw status request: the status code, the `Retry-After` header and the body.
fn status_request(agent: &ureq::Agent, base: &str, site: &str, password: &str) -> (u16, Option<String>, String) {
    let mut response = agent
        .get(format!("{base}/api/v1/sites/{site}/status"))
        .header("authorization", basic(site, password))
        .header("outpost-protocol", protocol::PROTOCOL_VERSION.to_string())
        .header(protocol::MACHINE_HEADER, common::machine(site))
        .call()
        .expect("the server answers");
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body = response.body_mut().read_to_string().unwrap_or_default();
    (status, retry_after, body)
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

fn a_password_reset_from_another_process_is_seen_by_every_running_server(backend: &Backend) {
    let network = Network::new(backend, &["north"]);
    let central = &network.central;
    let mut second = central.another_server("second");
    let second_url = second.start();
    let north = network.site("north");
    // Both servers have verified (and remember) north's password.
    north.sync();
    let old = north.password.clone();
    let agent = agent();
    for url in [central.url(), second_url.clone()] {
        assert_eq!(status_request(&agent, &url, "north", &old).0, 200);
    }

    let out = central.admin("central site reset-password", &["site", "reset-password", "north"]);
    let new = out.last_line().to_owned();
    for url in [central.url(), second_url] {
        let (status, _, body) = status_request(&agent, &url, "north", &old);
        assert_eq!(status, 401, "the old password still works on {url}: {body}");
        assert_eq!(status_request(&agent, &url, "north", &new).0, 200, "the new password works on {url}");
    }
    let synced = run("site sync with the old password", &mut north.command(&["sync"])).failed();
    assert!(synced.stderr.contains("401 unauthorized"), "{}", synced.stderr);
}

#[test]
fn a_flood_of_wrong_passwords_keeps_memory_bounded_and_good_requests_going() {
    const CONNECTIONS: usize = 50;
    const REQUESTS: usize = 300;
    // Fifty connections from 127.0.0.1, more than one address may hold by default: the flood is
    // about the password checks, so the per-address limit is off here.
    let network = Network::with(&Backend::Sqlite, &["north", "south"], |central| {
        central.serve_with(&["--max-connections-per-address", "0"]);
    });
    let central = &network.central;
    let url = central.url();
    let north = network.site("north");
    north.sync();

    let done = Arc::new(AtomicBool::new(false));
    let flood: Vec<_> = (0..CONNECTIONS)
        .map(|i| {
            let url = url.clone();
            std::thread::spawn(move || {
                let agent = agent();
                let mut statuses = Vec::new();
                for j in 0..REQUESTS / CONNECTIONS {
                    let site = ["north", "south", "nobody"][(i + j) % 3];
                    statuses.push(status_request(&agent, &url, site, &format!("wrong-{i}-{j}")).0);
                }
                statuses
            })
        })
        .collect();
    // Meanwhile north, whose password the server has verified, keeps being served.
    let good = {
        let (url, password, done) = (url.clone(), north.password.clone(), done.clone());
        std::thread::spawn(move || {
            let agent = agent();
            let mut slowest = Duration::ZERO;
            let mut served = 0;
            while !done.load(Ordering::SeqCst) || served < 5 {
                let started = Instant::now();
                let (status, _, body) = status_request(&agent, &url, "north", &password);
                assert_eq!(status, 200, "a good request was refused during the flood: {body}");
                slowest = slowest.max(started.elapsed());
                served += 1;
            }
            (served, slowest)
        })
    };
    let mut statuses = Vec::new();
    for thread in flood {
        statuses.extend(thread.join().expect("a flood connection"));
    }
    done.store(true, Ordering::SeqCst);
    let (served, slowest) = good.join().expect("the good requests");
    assert!(statuses.iter().all(|s| *s == 401 || *s == 429), "a wrong password got through: {statuses:?}");
    let peak_mb = peak_rss_kib(central.pid()) / 1024;
    eprintln!("{REQUESTS} wrong passwords from {CONNECTIONS} connections: peak RSS {peak_mb} MB; {served} good requests, slowest {slowest:?}");
    assert!(peak_mb < 300, "the central server reached {peak_mb} MB resident");
    assert!(slowest < Duration::from_secs(2), "a good request took {slowest:?} during the flood");
    assert!(central.log().contains("failed"), "the failures are logged");
    north.sync();
}

#[test]
fn repeated_wrong_passwords_are_refused_for_a_while_with_retry_after() {
    let mut network = Network::new(&Backend::Sqlite, &["north", "south"]);
    // A fresh process: south's good password is not remembered yet.
    network.central.kill();
    let url = network.central.start();
    let agent = agent();
    let mut refused = None;
    for i in 0..30 {
        let (status, retry_after, body) = status_request(&agent, &url, "south", &format!("guess-{i}"));
        if status == 429 {
            refused = Some((retry_after, body));
            break;
        }
        assert_eq!(status, 401, "{body}");
    }
    let (retry_after, body) = refused.expect("thirty wrong passwords in a row are slowed down");
    let seconds: u64 = retry_after.expect("a Retry-After header").parse().expect("Retry-After in seconds");
    assert!((1..=600).contains(&seconds), "Retry-After: {seconds}");
    let error: protocol::ErrorBody = serde_json::from_str(&body).expect("the one JSON error body");
    assert_eq!(error.error.code, "too_many_requests");
    assert!(error.error.message.contains("south"), "{}", error.error.message);
    assert!(network.central.log().contains("failed"), "the failures are logged");

    // The site itself, with its good password, is told to come back later, clearly.
    let south = network.site("south");
    let out = south.try_sync_once().failed();
    assert!(out.stderr.contains("429 too_many_requests") && out.stderr.contains("try again"), "{}", out.stderr);
    // A sync that may try again waits, and gets in once the refusal is over.
    let waited = south.sync();
    assert!(
        waited.stderr.contains("429 too_many_requests") && waited.stderr.contains("retrying in"),
        "{}",
        waited.stderr
    );
    // Another site is not held up by south's failures.
    let north = network.site("north");
    let http = Http::new(&url);
    let answer = http.get("/api/v1/sites/north/status", &good_headers("north", &north.password).as_refs());
    assert_eq!(answer.status, 200);
}
