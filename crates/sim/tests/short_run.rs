//! The simulator's short run, part of every test run (the long one is
//! `cargo run --release -p outpost-sim -- simulate --seeds 10000`): a few hundred seeds of a
//! small network, each checked against the rules at its end; a seed replays exactly; and the
//! checks do find a network that lost a change.

use outpost_sim::{run, Config};

#[test]
fn two_hundred_seeds_end_as_the_rules_say() {
    let config = Config::default();
    let (mut faults, mut kills, mut full) = (0, 0, 0);
    for seed in 0..200 {
        let summary = run(seed, &config).unwrap_or_else(|failure| panic!("{failure}"));
        faults += summary.faults;
        kills += summary.kills;
        full += summary.disk_full_writes;
    }
    assert!(faults > 1_000, "the exchanges failed often enough to matter: {faults} faults");
    assert!(kills > 100, "nodes were killed often enough to matter: {kills} kills");
    assert!(full > 0, "a full disk refused some writes: {full}");
}

#[test]
fn a_seed_replays_exactly() {
    let config = Config { steps: 120, ..Config::default() };
    let first = run(42, &config).unwrap_or_else(|failure| panic!("{failure}"));
    assert_eq!(run(42, &config).unwrap_or_else(|failure| panic!("{failure}")), first);
    assert!(first.syncs > 0 && first.faults > 0 && first.transfers > 0, "{first:?}");
    assert_ne!(run(43, &config).ok(), Some(first), "another seed is another run");
}

#[test]
fn the_checks_find_a_saved_record_that_never_reached_the_central_server() {
    let config = Config { forget_commits_on_kill: true, kills: 50, steps: 120, ..Config::default() };
    let failed = (0..40).find_map(|seed| run(seed, &config).err());
    let failure = failed.expect("some seed must show the forgotten write");
    assert!(failure.what.contains("the central server never received it"), "{failure}");
}

#[test]
fn the_checks_find_a_site_that_lost_a_pulled_change() {
    let config = Config { lose_a_pulled_change: true, steps: 120, ..Config::default() };
    let failed = (0..20).find_map(|seed| run(seed, &config).err());
    let failure = failed.expect("some seed must show the lost change");
    assert!(failure.what.contains("unlike the central server"), "{failure}");
    assert!(
        failure.to_string().contains(&format!("--seed {}", failure.seed)),
        "the failure says how to replay it: {failure}"
    );
}
