//! Sync over the links our users have, between real processes, through the shaping proxy of
//! the test kit (`testkit::link`): a few kilobits a second, a long round trip, cuts, stalls and
//! peers that vanish. Each test names the point of issue 9 it holds to. The central server runs
//! on each backend.
//!
//! The site's stall timeout is 2 s here (`OUTPOST_STALL_SECS`), so that a stall is told from
//! honest slow work in seconds rather than in the 20 s a site waits by default.

mod common;

use common::{count, dump_table, on_each_backend, write_items, write_stock_lines, Backend, ChildGuard, Network, Site};
use serde_json::json;
use std::io::Read;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use store::Write;
use testkit::link::{Link, Shape};

on_each_backend!(
    a_busy_site_on_a_slow_link_still_pulls,
    a_pull_through_a_link_that_goes_silent_reconnects_and_finishes,
    a_page_that_takes_long_but_keeps_moving_is_not_cut,
    a_lost_push_answer_is_asked_about_not_sent_again,
    an_initialisation_cut_five_times_downloads_little_twice,
    a_dead_link_gives_up_saying_what_was_delivered_and_what_waits,
    the_progress_line_moves_from_the_first_second_and_logs_stay_above_it,
);

const STALL: &str = "2";

fn kbit(n: u64) -> Option<u64> {
    Some(n * 1000)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// `outpost site sync` through the link, with the test stall timeout, in the background.
fn spawn_sync(site: &Site, extra: &[(&str, &str)]) -> ChildGuard {
    let mut command = site.command(&["sync"]);
    command.env("OUTPOST_STALL_SECS", STALL).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (key, value) in extra {
        command.env(key, value);
    }
    ChildGuard::spawn(format!("site sync ({})", site.name), &mut command)
}

/// What a finished sync printed, with a deadline: a sync that hangs fails the test.
struct Finished {
    success: bool,
    stdout: String,
    stderr: String,
}

fn finish(mut sync: ChildGuard, deadline: Duration) -> Finished {
    let mut out = sync.take_stdout();
    let mut err = sync.take_stderr();
    let readers = (
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = out.read_to_string(&mut text);
            text
        }),
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        }),
    );
    let status = sync.wait(deadline);
    Finished {
        success: status.success(),
        stdout: readers.0.join().expect("stdout"),
        stderr: readers.1.join().expect("stderr"),
    }
}

/// Point 1: a site whose people keep writing, over a slow link with a long round trip, pushes
/// what was waiting and pulls, every time.
fn a_busy_site_on_a_slow_link_still_pulls(backend: &Backend) {
    let network = Network::new(backend, &["north"]);
    let north = network.site("north");
    let central = &network.central;
    north.sync();
    write_stock_lines(north, 50);
    central.write("item", "item-pcm", &json!({"code": "PCM", "name": "Paracetamol 500mg"}));
    let link = Link::start(central.addr(), Shape::symmetric(64_000, ms(250)));
    north.set_central(&link.url());

    // A new line every 50 ms while the sync runs: each would be a push of its own over a
    // 0.5 s round trip if the push went on while anything waited.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (db, stop) = (north.db(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) && n < 1_000 {
                let line = json!({"store_id": "store-north", "total_packs": n});
                db.write(&[Write::upsert("stock_line", format!("busy-{n}"), &line)]).expect("a pharmacist's write");
                n += 1;
                std::thread::sleep(ms(50));
            }
            n
        })
    };
    let synced = finish(spawn_sync(north, &[]), Duration::from_secs(60));
    stop.store(true, Ordering::SeqCst);
    let written = writer.join().expect("the writer");
    assert!(synced.success, "{}", synced.stderr);
    assert!(synced.stdout.contains("(0 rejected), pulled 1;"), "{}", synced.stdout);
    let pushed: i64 =
        synced.stdout.split("pushed ").nth(1).and_then(|r| r.split(' ').next()?.parse().ok()).expect("a count");
    // What waited, and at most the few lines written before the sync read its log.
    assert!((50..60).contains(&pushed), "{}", synced.stdout);
    assert!(north.get("item", "item-pcm").is_some(), "the pull happened");
    assert!(written > 0);
}

/// Points 2 and 4: a connection that stops moving (the peer vanished, the link went silent) is
/// given up after the stall timeout, and the same sync reconnects and goes on.
fn a_pull_through_a_link_that_goes_silent_reconnects_and_finishes(backend: &Backend) {
    let items = if backend.is_postgres() { 3_000 } else { 6_000 };
    let network = Network::with(backend, &["north"], |central| write_items(central, items, 1));
    let north = network.site("north");
    // Our test items compress to about 5 bytes each: 32 kbit/s makes the pull last seconds.
    let link = Link::start(network.central.addr(), Shape::symmetric(32_000, ms(50)));
    north.set_central(&link.url());

    let sync = spawn_sync(north, &[]);
    common::wait_until("a part of the pull to arrive", Duration::from_secs(30), || link.bytes_down() > 6_000);
    // The connection stays open and nothing moves on it any more, as when a router drops a
    // link without a word.
    link.half_open();
    let started = Instant::now();
    let synced = finish(sync, Duration::from_secs(60));
    assert!(synced.success, "the sync reconnects and finishes: {}", synced.stderr);
    assert!(started.elapsed() < Duration::from_secs(40), "a stall of the link is noticed in seconds");
    assert!(
        synced.stderr.contains("the link stopped for 2 s while receiving the answer"),
        "the log says what happened: {}",
        synced.stderr
    );
    assert!(synced.stderr.contains("retrying in 2 s (attempt 2 of 8)"), "{}", synced.stderr);
    assert_eq!(count(&north.data, "SELECT count(*) FROM record WHERE tbl = 'item'"), items as i64);
}

/// Point 2: a timeout is about silence, never about the length of honest work. A push batch and
/// pull pages that take longer than the stall timeout each, at 24 kbit/s, are not cut.
fn a_page_that_takes_long_but_keeps_moving_is_not_cut(backend: &Backend) {
    let network = Network::with(backend, &["north"], |central| write_items(central, 2_000, 1));
    let north = network.site("north");
    north.sync();
    write_noisy_lines(north, 1_000);
    write_items(&network.central, 2_000, 2);
    let link = Link::start(network.central.addr(), Shape::symmetric(16_000, ms(100)));
    north.set_central(&link.url());
    let started = Instant::now();
    let synced = finish(spawn_sync(north, &[]), Duration::from_secs(120));
    assert!(synced.success, "{}", synced.stderr);
    assert!(!synced.stderr.contains("retrying"), "honest slow work was taken for a stall: {}", synced.stderr);
    assert!(synced.stdout.contains("pushed 1000 (0 rejected), pulled 2000;"), "{}", synced.stdout);
    // At 2 KB/s, pages of several seconds each: far beyond the stall timeout of 2 s.
    let wire = link.bytes_up() + link.bytes_down();
    assert!(wire > 30_000, "{wire} bytes moved");
    assert!(started.elapsed() > Duration::from_secs(10), "{:?}", started.elapsed());
}

/// Stock lines whose notes do not compress (a push of them is about 60 bytes a line on the
/// wire, where the usual test lines take a few).
fn write_noisy_lines(site: &Site, n: usize) {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let writes: Vec<Write> = (0..n)
        .map(|i| {
            let note: String = (0..4)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    format!("{state:016x}")
                })
                .collect();
            let line = json!({"store_id": format!("store-{}", site.name), "total_packs": i, "note": note});
            Write::upsert("stock_line", format!("noisy-{i:05}"), &line)
        })
        .collect();
    site.db().write(&writes).expect("write the lines");
}

/// Point 3: after a push whose answer was lost, the site asks the central server what it holds
/// (a small request) and does not send the batch again; its report says they arrived.
fn a_lost_push_answer_is_asked_about_not_sent_again(backend: &Backend) {
    let network = Network::new(backend, &["north"]);
    let north = network.site("north");
    let central = &network.central;
    north.sync();
    write_noisy_lines(north, 300);
    let link = Link::start(central.addr(), Shape::default());
    north.set_central(&link.url());
    // The first answer on the way back is the push's: cut it.
    link.cut_after_down_bytes(50);
    let lost = north.try_sync_once();
    assert!(!lost.success(), "{}", lost.stdout);
    assert_eq!(count(central, "SELECT count(*) FROM record WHERE tbl = 'stock_line'"), 300, "the push went in");
    let batch_bytes = link.bytes_up();

    link.reset_counters();
    let synced = north.sync();
    assert!(
        synced.stdout.contains("300 change(s) sent by an earlier sync had arrived"),
        "the report counts what was delivered: {}",
        synced.stdout
    );
    assert!(
        link.bytes_up() < batch_bytes / 4,
        "the batch ({batch_bytes} bytes) was sent again: {} bytes up",
        link.bytes_up()
    );
    assert!(north.status().contains("waiting to push:   0 change(s)"), "{}", north.status());
    assert_eq!(count(central, "SELECT count(*) FROM change_log WHERE tbl = 'stock_line'"), 300);
}

/// Point 3: an initialisation cut five times costs little more than an uncut one: the same
/// sync goes on after each cut, and what arrived whole of a cut page is kept.
fn an_initialisation_cut_five_times_downloads_little_twice(backend: &Backend) {
    let items = if backend.is_postgres() { 8_000 } else { 20_000 };
    let network = Network::with(backend, &["north", "south"], |central| write_items(central, items, 1));
    let shape = Shape { up_bits_per_sec: kbit(256), down_bits_per_sec: kbit(1_024), one_way_delay: ms(20) };

    let uncut = Link::start(network.central.addr(), shape);
    let north = network.site("north");
    north.set_central(&uncut.url());
    let first = finish(spawn_sync(north, &[]), Duration::from_secs(120));
    assert!(first.success, "{}", first.stderr);
    let whole = uncut.bytes_down();

    let cut = Link::start(network.central.addr(), shape);
    let south = network.site("south");
    south.set_central(&cut.url());
    cut.cut_every_down_bytes(whole / 6, 5);
    let mut syncs = 0;
    loop {
        syncs += 1;
        let synced = finish(spawn_sync(south, &[]), Duration::from_secs(120));
        if synced.success {
            break;
        }
        assert!(syncs < 10, "the initialisation never finished: {}", synced.stderr);
    }
    assert_eq!(cut.cuts(), 5, "the link was cut five times");
    let ratio = cut.bytes_down() as f64 / whole as f64;
    eprintln!("uncut {whole} bytes; cut five times {} bytes ({ratio:.2}x) in {syncs} sync(s)", cut.bytes_down());
    assert_eq!(syncs, 1, "one sync rides out the cuts");
    assert!(ratio < 1.3, "cut five times, {ratio:.2}x the bytes of an uncut initialisation");
    assert!(dump_table(&south.data, "item") == dump_table(&network.central, "item"));
}

/// Point 4: a link that dies for good ends the sync after a few attempts, with an error that
/// says what happened, what was delivered and what waits; the next sync delivers the rest.
fn a_dead_link_gives_up_saying_what_was_delivered_and_what_waits(backend: &Backend) {
    let network = Network::new(backend, &["north"]);
    let north = network.site("north");
    north.sync();
    write_stock_lines(north, 3_000);
    let link = Link::start(network.central.addr(), Shape::symmetric(256_000, ms(20)));
    north.set_central(&link.url());
    let sync = spawn_sync(north, &[("OUTPOST_SYNC_ATTEMPTS", "3")]);
    let acknowledged = || common::state(&north.data, "pushed_seq").and_then(|s| s.parse::<i64>().ok()).unwrap_or(0) > 0;
    common::wait_until("a first push batch to be acknowledged", Duration::from_secs(30), acknowledged);
    link.half_open();
    link.refuse(true);
    let failed = finish(sync, Duration::from_secs(60));
    assert!(!failed.success);
    let error = failed.stderr.lines().find(|l| l.starts_with("error: ")).unwrap_or_else(|| panic!("{}", failed.stderr));
    let delivered = count(&network.central, "SELECT count(*) FROM record WHERE tbl = 'stock_line'");
    for words in ["error: pushing ", "gave up after 3 attempt(s)", "the rest waits on this site for the next sync"] {
        assert!(error.contains(words), "`{words}` is not in `{error}`");
    }
    // What the site knows was delivered (an answer lost in the cut is not counted).
    let said: i64 = error
        .split(" pushed and 0 pulled so far")
        .next()
        .and_then(|r| r.rsplit('(').next()?.parse().ok())
        .expect("a count");
    assert!(said > 0 && said <= delivered, "{said} of {delivered}: {error}");
    assert!(
        ["could not reach the central server", "the link stopped for 2 s", "the connection was cut"]
            .iter()
            .any(|what| error.contains(what)),
        "{error}"
    );
    link.refuse(false);
    north.sync();
    assert_eq!(count(&network.central, "SELECT count(*) FROM record WHERE tbl = 'stock_line'"), 3_000);
}

/// Point 6: `site sync` shows what it does from the first second, its byte counts move while a
/// page is on the wire, and a log line is written above the progress line, not into it.
fn the_progress_line_moves_from_the_first_second_and_logs_stay_above_it(backend: &Backend) {
    let network = Network::with(backend, &["north"], |central| write_items(central, 3_000, 1));
    let north = network.site("north");
    let link = Link::start(network.central.addr(), Shape::symmetric(16_000, ms(250)));
    north.set_central(&link.url());
    let started = Instant::now();
    let mut sync = spawn_sync(north, &[("OUTPOST_PROGRESS", "always")]);
    let mut err = sync.take_stderr();
    // Every piece of standard error, with when it came.
    let pieces = Arc::new(Mutex::new(Vec::<(Duration, String)>::new()));
    let reader = {
        let pieces = pieces.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                pieces.lock().expect("pieces").push((started.elapsed(), text));
            }
        })
    };
    // A cut in the middle of the pull, for a warning to be logged while the line is shown.
    common::wait_until("a part of the pull to arrive", Duration::from_secs(30), || link.bytes_down() > 6_000);
    link.cut_now();
    let status = sync.wait(Duration::from_secs(90));
    reader.join().expect("the reader");
    assert!(status.success());
    let pieces = pieces.lock().expect("pieces");
    let text: String = pieces.iter().map(|(_, t)| t.as_str()).collect();

    let first_line = pieces.iter().find(|(_, t)| {
        t.contains("connecting to the central server") || t.contains("pull: waiting for the first page")
    });
    assert!(
        first_line.is_some_and(|(at, _)| *at < Duration::from_millis(1_500)),
        "nothing said in the first second: {pieces:?}"
    );
    // The counts move while the pages arrive, not only when one ends.
    let received: std::collections::BTreeSet<&str> =
        text.split("\r\x1b[2K").filter_map(|line| line.split(" sent, ").nth(1)?.split(" received").next()).collect();
    assert!(received.len() >= 8, "the byte count moved only {} times: {received:?}", received.len());
    assert!(text.contains("pull ["), "{text}");
    // The warning about the cut starts on a cleared line and the progress line is drawn again
    // after it, on a line of its own.
    let warning = text.find("WARN").unwrap_or_else(|| panic!("no warning logged: {text}"));
    let line_start = text[..warning].rfind("\r\x1b[2K").expect("the line is cleared before the warning");
    assert!(
        !text[line_start..warning].contains(" received"),
        "the warning was written into the progress line: {:?}",
        &text[line_start..warning + 20]
    );
    let after = &text[warning..];
    let end_of_warning = after.find('\n').expect("the warning ends its line");
    assert!(
        !after[..end_of_warning].contains(" sent, "),
        "the progress line ran into the warning: {}",
        &after[..end_of_warning]
    );
}
