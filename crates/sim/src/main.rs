//! `outpost-sim simulate [--seeds N] [--first S] [--seed S] [--sites K] [--steps M]`: runs seeds
//! `S..S+N` (or the one seed `S`), each a whole simulated network checked at its end, and stops
//! at the first that fails, printing it.

use outpost_sim::{check_summary, run, Config};
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) != Some("simulate") {
        eprintln!("usage: outpost-sim simulate [--seeds N] [--first S] [--seed S] [--sites K] [--steps M]");
        return ExitCode::from(2);
    }
    let mut config = Config::default();
    let (mut first, mut seeds) = (0_u64, 100_u64);
    let mut rest = args[1..].iter();
    while let Some(flag) = rest.next() {
        let Some(value) = rest.next().and_then(|v| v.parse::<u64>().ok()) else {
            eprintln!("error: {flag} needs a number");
            return ExitCode::from(2);
        };
        match flag.as_str() {
            "--seeds" => seeds = value,
            "--first" => first = value,
            "--seed" => (first, seeds) = (value, 1),
            "--sites" => config.sites = value as usize,
            "--steps" => config.steps = value as usize,
            other => {
                eprintln!("error: unknown flag {other}");
                return ExitCode::from(2);
            }
        }
    }
    let started = Instant::now();
    let (mut syncs, mut faults, mut transfers, mut restores, mut kills, mut full) = (0, 0, 0, 0, 0, 0);
    let (mut outages, mut link_secs) = (0, 0);
    for seed in first..first + seeds {
        match run(seed, &config) {
            Ok(summary) => {
                syncs += summary.syncs;
                faults += summary.faults;
                transfers += summary.transfers;
                restores += summary.restores;
                kills += summary.kills;
                full += summary.disk_full_writes;
                outages += summary.outages;
                link_secs += summary.link_secs;
            }
            Err(failure) => {
                eprintln!("{failure}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!(
        "{seeds} seeds passed ({} sites, {} steps each; {syncs} syncs, {faults} faults, {transfers} transfers, {restores} restores, {kills} kills, {full} writes refused by a full disk, {outages} outages, {:.1} days on the simulated links) in {:.1} s: {}",
        config.sites,
        config.steps,
        link_secs as f64 / 86_400.0,
        started.elapsed().as_secs_f64(),
        check_summary()
    );
    ExitCode::SUCCESS
}
