//! A site whose people keep writing while it syncs, between real processes on loopback: the
//! sync pushes what was waiting when it started, then pulls, every time; what is written
//! meanwhile goes with the next sync. The central server runs on each backend.

mod common;

use common::{count, on_each_backend, record, Backend, Network};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use store::Write;

on_each_backend!(a_site_whose_users_keep_writing_still_pulls,);

fn a_site_whose_users_keep_writing_still_pulls(backend: &Backend) {
    let network = Network::new(backend, &["north"]);
    let north = network.site("north");
    let central = &network.central;
    north.sync();
    for n in 0..50 {
        north.write("stock_line", &format!("waiting-{n}"), &json!({"store_id": "store-north", "total_packs": n}));
    }
    let item = json!({"code": "PCM", "name": "Paracetamol 500mg"});
    central.write("item", "item-pcm", &item);

    // A dispensary at work: a new line every fraction of a millisecond, through the site's own write path,
    // for as long as the sync runs (and at most a minute).
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (db, stop) = (north.db(), stop.clone());
        std::thread::spawn(move || {
            let started = Instant::now();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) && started.elapsed() < Duration::from_secs(60) {
                let line = json!({"store_id": "store-north", "total_packs": n});
                db.write(&[Write::upsert("stock_line", format!("busy-{n}"), &line)]).expect("a pharmacist's write");
                n += 1;
                std::thread::sleep(Duration::from_micros(200));
            }
            n
        })
    };
    std::thread::sleep(Duration::from_millis(100));
    let mut sync = north.spawn_sync();
    let status = sync.wait(Duration::from_secs(30));
    stop.store(true, Ordering::SeqCst);
    let written = writer.join().expect("the writer");
    assert!(status.success(), "the sync finished while people kept writing: {}", north.status());
    assert!(written > 0);

    assert_eq!(north.get("item", "item-pcm"), Some(item), "the pull happened");
    for n in 0..50 {
        assert!(record(central, "stock_line", &format!("waiting-{n}")).is_some(), "what waited was pushed");
    }
    // What was written during the sync goes with the next one; nothing is lost.
    north.sync();
    let busy = count(central, "SELECT count(*) FROM record WHERE tbl = 'stock_line' AND id LIKE 'busy-%'");
    assert_eq!(busy, written as i64);
    assert!(north.status().contains("waiting to push:   0 change(s)"), "{}", north.status());
}
