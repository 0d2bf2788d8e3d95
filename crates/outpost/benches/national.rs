//! Every figure of the national-scale issue in one run, each beside the baseline its own
//! benchmark measures in the same run (they are the benchmarks of this directory and of
//! `outpost-store`, run one after the other, unchanged):
//!
//! 1. storage writes: 1,000,000 records through a site's write path vs a raw SQLite insert;
//! 2. initial sync of 1,000,000 records vs a raw SQLite insert of the same rows, the longest
//!    wait for the site's database meanwhile, wire bytes vs plain JSON (catalogue, store data),
//!    an empty sync;
//! 3. ingest: 1,000 sites pushing at once, on PostgreSQL (feature `postgres`) then SQLite, with
//!    p50/p99 latency and the rate of the last tenth vs the first;
//! 4. a site a week behind over 64 and 20 kbit/s with a 1 s round trip vs its bytes at that rate;
//! 5. transfers processed on the central server vs the plain push of the same records;
//! 6. a new site from a seed file vs its initial sync.
//!
//! `cargo bench -p outpost --features postgres --bench national` (about 25 minutes);
//! `OUTPOST_BENCH_QUICK=1` makes every part small, for a smoke run.

// Each benchmark brings its own copy of the shared catalogue, as it does when built alone.
#![allow(clippy::duplicate_mod)]

// Each benchmark is a module here; its `main` is what `cargo bench --bench <name>` runs.
#[path = "load.rs"]
mod load;
#[path = "seed.rs"]
mod seed;
#[path = "slow_link.rs"]
mod slow_link;
#[path = "sync.rs"]
mod sync;
#[path = "transfers.rs"]
mod transfers;
#[path = "../../store/benches/write.rs"]
mod write;

// The storage benchmark names the store crate as its own package does.
extern crate store as outpost_store;

type Part = (&'static str, fn() -> Result<(), Box<dyn std::error::Error>>);

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("OUTPOST_BENCH_QUICK").is_some() {
        for (name, value) in
            [("OUTPOST_BENCH_RECORDS", "20000"), ("OUTPOST_LOAD_SITES", "50"), ("OUTPOST_BENCH_INVOICES", "500")]
        {
            // Set before any part runs, on this thread, before any other thread exists.
            std::env::set_var(name, value);
        }
    }
    let parts: [Part; 6] = [
        ("storage writes", write::main),
        ("initial sync, wire bytes, empty sync", sync::main),
        ("ingest from 1,000 sites", load::main),
        ("a site a week behind on a slow link", || slow_link::main().map_err(|e| e.to_string().into())),
        ("transfers", transfers::main),
        ("a new site from a seed file", seed::main),
    ];
    let started = std::time::Instant::now();
    for (i, (name, part)) in parts.iter().enumerate() {
        println!("\n== {}. {name} ==", i + 1);
        part()?;
    }
    println!("\nall parts in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}
