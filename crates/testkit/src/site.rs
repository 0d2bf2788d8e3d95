//! Remote sites of real `outpost` processes: a data directory and an identity ([`Site`]),
//! `outpost site …` commands on it (init, sync, write, get, status), and writes that go around
//! the binary: many at once with the library ([`write_stock_lines`]), or straight into the file
//! as an old or misbehaving site would ([`write_behind_the_checks`]).

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::dump::{db_file, DbRef, Inspect};
use crate::process::{outpost, run, Binary, ChildGuard, Run};

/// A remote site's data directory and identity; `B` is the binary its commands run.
#[derive(Debug, Clone)]
pub struct Site<B: Binary> {
    pub name: String,
    pub data: PathBuf,
    pub password: String,
    pub binary: PhantomData<fn() -> B>,
}

impl<B: Binary> Site<B> {
    /// `outpost site init` in `root/NAME` against `central_url`.
    pub fn init(root: &Path, name: &str, central_url: &str, password: &str) -> Site<B> {
        Self::init_in(&root.join(name), name, central_url, password)
    }

    pub fn init_in(data: &Path, name: &str, central_url: &str, password: &str) -> Site<B> {
        run(
            "site init",
            outpost::<B>()
                .args(["site", "init", "--central", central_url, "--site", name, "--data"])
                .arg(data)
                .env("OUTPOST_SITE_PASSWORD", password),
        )
        .ok();
        Site { name: name.to_owned(), data: data.to_owned(), password: password.to_owned(), binary: PhantomData }
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = outpost::<B>();
        command.arg("site").args(args).arg("--data").arg(&self.data);
        command
    }

    /// `outpost site sync`, which may fail.
    pub fn try_sync(&self) -> Run {
        run(&format!("site sync ({})", self.name), &mut self.command(&["sync"]))
    }

    /// `outpost site sync` that tries each exchange once (no retry after a broken link), which
    /// may fail.
    pub fn try_sync_once(&self) -> Run {
        run(
            &format!("site sync, one attempt ({})", self.name),
            self.command(&["sync"]).env(site::sync::ATTEMPTS_ENV, "1"),
        )
    }

    /// `outpost site sync`, which must succeed.
    pub fn sync(&self) -> Run {
        self.try_sync().ok()
    }

    /// `outpost site sync` in the background (to be killed, or waited for).
    pub fn spawn_sync(&self) -> ChildGuard {
        ChildGuard::spawn(
            format!("site sync ({})", self.name),
            self.command(&["sync"]).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()),
        )
    }

    /// `outpost site serve` on a free local port, syncing hourly: its process, and the address
    /// it printed.
    pub fn serve(&self) -> (ChildGuard, String) {
        use std::io::BufRead;
        let mut command = self.command(&["serve", "--listen", "127.0.0.1:0", "--every", "3600"]);
        command.stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = ChildGuard::spawn(format!("site serve ({})", self.name), &mut command);
        let mut line = String::new();
        std::io::BufReader::new(child.take_stdout()).read_line(&mut line).expect("site serve says where it listens");
        let url = line.split_whitespace().find(|w| w.starts_with("http://")).expect("an address").trim_end_matches(',');
        (child, url.to_owned())
    }

    /// Points the site at another central server (the `central_url` that `site init` stored).
    pub fn set_central(&self, url: &str) {
        self.db().set_state(store::StateKey::CentralUrl, url).expect("set the site's central URL");
    }

    pub fn write(&self, table: &str, id: &str, json: &serde_json::Value) {
        run("site write", &mut self.command(&["write", table, id, &json.to_string()])).ok();
    }

    /// `outpost site get`: the record, or `None` when the site does not hold it.
    pub fn get(&self, table: &str, id: &str) -> Option<serde_json::Value> {
        let out = run("site get", &mut self.command(&["get", table, id]));
        if out.success() {
            Some(serde_json::from_str(out.stdout.trim()).expect("`site get` prints JSON"))
        } else {
            assert!(out.stderr.contains("no `"), "`site get` failed otherwise: {}", out.stderr);
            None
        }
    }

    pub fn status(&self) -> String {
        run("site status", &mut self.command(&["status"])).ok().stdout
    }

    pub fn rejected(&self) -> String {
        run("site rejected", &mut self.command(&["rejected"])).ok().stdout
    }

    /// Opens this site's database with the library (e.g. to write many records at once).
    pub fn db(&self) -> store::Db {
        store::Db::open(&db_file(&self.data)).expect("open the site's database")
    }
}

impl<B: Binary> Inspect for Site<B> {
    fn db_ref(&self) -> DbRef<'_> {
        DbRef::Sqlite(&self.data)
    }
}

/// Writes as an old or misbehaving site would: straight into its SQLite file, a record and its
/// change-log entry in one transaction, without the checks that `outpost site write` makes.
pub fn write_behind_the_checks<B: Binary>(site: &Site<B>, table: &str, id: &str, data: &serde_json::Value) -> i64 {
    let mut conn = rusqlite::Connection::open(db_file(&site.data)).expect("open the site's file");
    let tx = conn.transaction().expect("begin");
    tx.execute(
        "INSERT INTO change_log (tbl, record_id, action, origin_site) VALUES (?1, ?2, 'upsert', ?3)",
        rusqlite::params![table, id, site.name],
    )
    .expect("log the change");
    let seq = tx.last_insert_rowid();
    let store = data.get("store_id").and_then(|s| s.as_str());
    tx.execute(
        "INSERT INTO record (tbl, id, store_id, data, log_seq) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (tbl, id) DO UPDATE SET data = excluded.data, store_id = excluded.store_id, log_seq = excluded.log_seq",
        rusqlite::params![table, id, store, data.to_string(), seq],
    )
    .expect("write the record");
    tx.commit().expect("commit");
    seq
}

/// Writes `n` stock lines of the site's store on the site, with the library (checked and logged
/// like `outpost site write`, in one transaction).
pub fn write_stock_lines<B: Binary>(site: &Site<B>, n: usize) {
    let started = Instant::now();
    let store = format!("store-{}", site.name);
    let writes: Vec<store::Write> = (1..=n)
        .map(|i| {
            store::Write::upsert(
                "stock_line",
                format!("sl-{i:06}"),
                &serde_json::json!({"store_id": store, "item_id": format!("item-{:06}", i % 1000), "batch": format!("B{i:06}"), "expiry_date": "2027-12-31", "pack_size": 10, "total_number_of_packs": i % 500, "cost_price_per_pack": 2.5}),
            )
        })
        .collect();
    site.db().write(&writes).expect("write the stock lines");
    eprintln!("wrote {n} stock lines on `{}` in {:.1?}", site.name, started.elapsed());
}
