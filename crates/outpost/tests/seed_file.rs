//! A new site from a seed file (issue 13), between real processes on each backend: `central
//! site export` writes what the site must hold, `site import` starts it without a network, and
//! its next sync receives only what changed since. A damaged, truncated, expired or other
//! site's file is refused and writes nothing; an import that stopped half-way is replaced.

mod common;

use common::{dump, on_each_backend, run, write_items, Backend, Network, Site};
use serde_json::json;
use std::path::Path;

on_each_backend!(
    a_site_from_a_seed_file_holds_what_an_initial_sync_gives_and_then_syncs_only_what_changed,
    a_damaged_truncated_or_other_sites_seed_file_writes_nothing,
);

/// `north` is running; `south` exists on the central server, holds a collector copy of
/// `store-north`, and has never synced.
fn network(backend: &Backend) -> Network {
    Network::with(backend, &["north"], |central| {
        central.add_site("south");
        central.add_store("store-south", "south");
        central.sync_type("store-north", "south", "collector");
        write_items(central, 300, 1);
    })
}

fn export(network: &Network, out: &Path) -> String {
    let central = &network.central;
    let out_arg = out.to_string_lossy().into_owned();
    central
        .admin("central site export", &["site", "export", "south", "--out", &out_arg, "--central-url", &central.url()])
        .stdout
}

fn import(file: &Path, data: &Path, extra: &[&str]) -> common::Run {
    let mut command = common::outpost();
    command.args(["site", "import"]).arg(file).arg("--data").arg(data).args(extra);
    run("site import", &mut command)
}

fn a_site_from_a_seed_file_holds_what_an_initial_sync_gives_and_then_syncs_only_what_changed(backend: &Backend) {
    let network = network(backend);
    let north = network.site("north");
    north.sync();
    for i in 0..20 {
        north.write(
            "stock_line",
            &format!("sl-{i}"),
            &json!({"store_id": "store-north", "item_id": "item-000001", "total_number_of_packs": i}),
        );
    }
    north.sync();

    let file = network.root.path().join("south.seed");
    let exported = export(&network, &file);
    assert!(exported.contains("seed file for site `south` written to"), "{exported}");
    assert!(exported.contains("It holds a new password for `south`"), "{exported}");
    let data = network.root.path().join("south-from-seed");
    let imported = import(&file, &data, &["--site", "south"]).ok().stdout;
    assert!(imported.contains("site `south` started from the seed file"), "{imported}");
    let seeded = Site { name: "south".into(), data: data.clone(), password: String::new(), binary: Default::default() };

    // The same site initialised over the network (with the password the file holds) receives
    // exactly the same records.
    let password = protocol::seed::Seed::read(&std::fs::read(&file).expect("the file"), None, &protocol::now_rfc3339())
        .expect("a good file")
        .header
        .password;
    let synced = Site::init_in(&network.root.path().join("south-synced"), "south", &network.central.url(), &password);
    synced.sync();
    let from_seed = dump(&seeded);
    assert!(from_seed.len() > 320, "the seed holds the catalogue and the collector copy: {}", from_seed.len());
    assert_eq!(from_seed, dump(&synced), "a seed file holds what an initial sync gives");

    // After the file was made: one change; the seeded site's sync receives only it.
    north.write(
        "stock_line",
        "sl-new",
        &json!({"store_id": "store-north", "item_id": "item-000001", "total_number_of_packs": 1}),
    );
    north.sync();
    let first = seeded.sync().stdout;
    assert!(first.contains("pulled 1;"), "only what changed after the file: {first}");
    assert!(seeded.get("stock_line", "sl-new").is_some());
    seeded.write(
        "stock_line",
        "sl-south",
        &json!({"store_id": "store-south", "item_id": "item-000001", "total_number_of_packs": 3}),
    );
    seeded.sync();
    assert!(common::record(&network.central, "stock_line", "sl-south").is_some(), "the seeded site pushes");
}

fn a_damaged_truncated_or_other_sites_seed_file_writes_nothing(backend: &Backend) {
    let network = network(backend);
    let file = network.root.path().join("south.seed");
    export(&network, &file);
    let bytes = std::fs::read(&file).expect("the file");
    let refused = |what: &str, bytes: &[u8], extra: &[&str], expect: &str| {
        let bad = network.root.path().join(format!("{what}.seed"));
        std::fs::write(&bad, bytes).expect("write the bad file");
        let data = network.root.path().join(format!("site-{what}"));
        let out = import(&bad, &data, extra).failed();
        assert!(out.stderr.contains(expect), "{what}: {}", out.stderr);
        assert!(!data.join("outpost.sqlite").exists(), "{what}: a database was written");
    };
    let mut damaged = bytes.clone();
    let middle = damaged.len() / 2;
    damaged[middle] ^= 0x01;
    refused("damaged", &damaged, &[], "the seed file is damaged or incomplete");
    refused("truncated", &bytes[..bytes.len() - 100], &[], "the seed file is damaged or incomplete");
    refused("other-site", &bytes, &["--site", "north"], "this seed file is for site `south`, not `north`");
    refused("not-a-seed", b"hello", &[], "this is not an Outpost seed file");

    // A data directory that holds a site already is left alone.
    let north = network.site("north");
    let out = import(&file, &north.data, &[]).failed();
    assert!(out.stderr.contains("holds a site already"), "{}", out.stderr);

    // An import that stopped half-way (a power cut) left its partial database: the next import
    // replaces it, and no partial file is left beside the site.
    let data = network.root.path().join("south-old");
    std::fs::create_dir_all(&data).expect("the data directory");
    std::fs::write(data.join("outpost.sqlite.importing"), b"half a database").expect("a partial file");
    import(&file, &data, &[]).ok();
    let left: Vec<String> = std::fs::read_dir(&data)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into())
        .collect();
    assert!(left.iter().all(|name| !name.contains("importing")), "left behind: {left:?}");

    // A file whose password was replaced by a newer export is refused at the first sync.
    export(&network, &network.root.path().join("newer.seed"));
    let old = Site { name: "south".into(), data, password: String::new(), binary: Default::default() };
    let synced = old.try_sync().failed();
    assert!(synced.stderr.contains("401"), "{}", synced.stderr);
}
