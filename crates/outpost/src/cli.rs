//! The command line: clap's definitions of every command, and where a node's database is.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use store::Db;

/// Offline-first synchronisation for health supply chains.
///
/// One central server that every site syncs with; remote sites that work offline and, when the
/// link is up, push their own changes and then pull what concerns them.
#[derive(Parser, Debug)]
#[command(name = "outpost", version, about, long_about)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Command {
    /// Run a whole network on this machine (a central server and three sites), sync it, report.
    Demo {
        /// Where to leave the demo's databases, for inspection.
        #[arg(long, default_value = "outpost-demo")]
        dir: PathBuf,
        /// Transactions made per site.
        #[arg(long, default_value_t = 1500)]
        transactions: usize,
    },
    /// Show who edits and who receives each synced table ("why did this record not reach that site?").
    Rules {
        /// One table (e.g. `item`, `transaction`); all tables when omitted.
        table: Option<String>,
    },
    /// The central (sync) server.
    #[command(subcommand)]
    Central(CentralCommand),
    /// A remote site.
    #[command(subcommand)]
    Site(SiteCommand),
}

#[derive(Args, Debug)]
pub(crate) struct DataDir {
    /// The node's data directory (holds `outpost.sqlite`).
    #[arg(long, env = "OUTPOST_DATA")]
    pub(crate) data: PathBuf,
}

impl DataDir {
    pub(crate) fn open(&self) -> Result<Arc<Db>, String> {
        let file = db_file(&self.data);
        if !file.exists() {
            return Err(format!("no Outpost database in {} (run `init` first)", self.data.display()));
        }
        Db::open(&file).map(Arc::new).map_err(|e| format!("opening {}: {e}", file.display()))
    }
}

fn db_file(dir: &Path) -> PathBuf {
    dir.join("outpost.sqlite")
}

/// Where a central server keeps its data: a SQLite file in a directory (the default), or a
/// PostgreSQL database that several server processes may share.
#[derive(Args, Debug)]
pub(crate) struct CentralDb {
    /// The data directory (holds `outpost.sqlite`), when the database is SQLite.
    #[arg(long, env = "OUTPOST_DATA", required_unless_present = "database")]
    pub(crate) data: Option<PathBuf>,
    /// A PostgreSQL database instead, e.g. postgres://outpost@db.example/outpost.
    #[arg(long, env = "OUTPOST_DATABASE", conflicts_with = "data")]
    pub(crate) database: Option<String>,
    /// The schema within that PostgreSQL database (default: the user's search path).
    #[arg(long, env = "OUTPOST_DB_SCHEMA", requires = "database")]
    pub(crate) db_schema: Option<String>,
}

impl CentralDb {
    pub(crate) fn describe(&self) -> String {
        match (&self.database, &self.data) {
            (Some(url), _) => {
                format!("{url}{}", self.db_schema.as_ref().map(|s| format!(" (schema {s})")).unwrap_or_default())
            }
            (None, Some(dir)) => dir.display().to_string(),
            (None, None) => String::new(),
        }
    }

    /// Opens the database, creating it when `create` (a SQLite file must exist otherwise).
    pub(crate) fn open_or_create(&self, create: bool) -> Result<Arc<Db>, String> {
        if let Some(url) = &self.database {
            return open_postgres(url, self.db_schema.as_deref());
        }
        let dir = self.data.as_ref().ok_or("give --data DIR or --database URL")?;
        let file = db_file(dir);
        if create {
            std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        } else if !file.exists() {
            return Err(format!("no Outpost database in {} (run `init` first)", dir.display()));
        }
        Db::open(&file).map(Arc::new).map_err(|e| format!("opening {}: {e}", file.display()))
    }

    pub(crate) fn open(&self) -> Result<Arc<Db>, String> {
        self.open_or_create(false)
    }
}

#[cfg(feature = "postgres")]
fn open_postgres(url: &str, schema: Option<&str>) -> Result<Arc<Db>, String> {
    Db::open_postgres(url, schema).map(Arc::new).map_err(|e| format!("opening {url}: {e}"))
}

#[cfg(not(feature = "postgres"))]
fn open_postgres(_url: &str, _schema: Option<&str>) -> Result<Arc<Db>, String> {
    Err("this outpost was built without PostgreSQL support; build it with `--features postgres`".into())
}

#[derive(Subcommand, Debug)]
pub(crate) enum CentralCommand {
    /// Create a central server (the primary too, unless --primary names a remote site).
    Init {
        #[command(flatten)]
        data: CentralDb,
        /// This server's site id.
        #[arg(long, default_value = "central")]
        name: String,
        /// Mirrored sync: the remote site that edits central data (add it with `site add`).
        #[arg(long)]
        primary: Option<String>,
        /// Read the dashboard administrator's password from this file (else from
        /// OUTPOST_ADMIN_PASSWORD, else from a prompt; never from the command line).
        #[arg(long)]
        admin_password_file: Option<PathBuf>,
    },
    /// Serve the sync API and the dashboard.
    Serve {
        #[command(flatten)]
        data: CentralDb,
        #[arg(long, default_value = "127.0.0.1:8640")]
        listen: SocketAddr,
        /// Serve the dashboard on this address instead, and only the sync API on --listen.
        #[arg(long)]
        dashboard_listen: Option<SocketAddr>,
        /// Serve HTTPS with this PEM certificate chain (needs --tls-key; feature `tls`).
        #[arg(long, requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The PEM private key of --tls-cert.
        #[arg(long, requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        #[command(flatten)]
        limits: ConnectionLimits,
    },
    /// Sites: add one, or give one a new password.
    #[command(subcommand)]
    Site(CentralSiteCommand),
    /// The dashboard's administrator.
    #[command(subcommand)]
    Admin(CentralAdminCommand),
    /// Stores: add one, set its sync type on a site.
    #[command(subcommand)]
    Store(CentralStoreCommand),
    /// Patients and prescribers: move one to another home store.
    #[command(subcommand)]
    Patient(CentralPatientCommand),
    /// Make a name (customer, supplier, patient) visible in a store.
    ShowName {
        name: String,
        store: String,
        #[command(flatten)]
        data: CentralDb,
    },
    /// Make an item visible in a store.
    ShowItem {
        item: String,
        store: String,
        #[command(flatten)]
        data: CentralDb,
    },
    /// Write one record on the central server (checked like any write), e.g. an item.
    Write {
        table: String,
        id: String,
        /// The record, as a JSON object.
        json: String,
        #[command(flatten)]
        data: CentralDb,
    },
    /// Merge a record into another of its table (items, units and names on the primary):
    /// every record that names it is rewritten, here and on every site, and so is any that
    /// arrives later still naming it.
    Merge {
        table: String,
        id: String,
        /// The record it is merged into (kept).
        #[arg(long)]
        into: String,
        #[command(flatten)]
        data: CentralDb,
    },
    /// Make another site the primary, the one that edits central data (a remote desktop site:
    /// mirrored sync; or the central server itself). The old primary hands over on its next
    /// sync, so that two sites never edit central data at once.
    SetPrimary {
        site: String,
        #[command(flatten)]
        data: CentralDb,
    },
    /// Print the dashboard's summary: sites, last syncs, rejections.
    Status {
        #[command(flatten)]
        data: CentralDb,
    },
}

/// What `central serve` allows a client before it closes its connection.
#[derive(Args, Debug)]
pub(crate) struct ConnectionLimits {
    /// Close a connection that keeps the server waiting this long: a request head not complete
    /// this long after the connection opened or sent its last answer, a request body of which
    /// no byte arrives for this long, a TLS handshake that takes longer; and an answer the
    /// client reads nothing of for ten times as long. A slow transfer that keeps moving is never
    /// cut.
    #[arg(long, env = "OUTPOST_IDLE_TIMEOUT_SECS", value_name = "SECONDS",
          default_value_t = central::server::DEFAULT_IDLE_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    pub(crate) idle_timeout_secs: u64,
    /// How many connections one client address may have open at once (0: no limit). Sites
    /// behind one address (a NAT, a reverse proxy on this machine) share it.
    #[arg(long, env = "OUTPOST_MAX_CONNECTIONS_PER_ADDRESS", value_name = "N",
          default_value_t = central::server::DEFAULT_MAX_CONNECTIONS_PER_ADDRESS)]
    pub(crate) max_connections_per_address: usize,
}

impl ConnectionLimits {
    pub(crate) fn limits(&self) -> central::Limits {
        central::Limits {
            idle: Duration::from_secs(self.idle_timeout_secs),
            per_address: self.max_connections_per_address,
        }
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum CentralSiteCommand {
    /// Add a remote site; prints its password once (only a hash is kept).
    Add {
        name: String,
        #[arg(long)]
        mobile: bool,
        #[command(flatten)]
        data: CentralDb,
    },
    /// List every site: its kind, its stores and how it holds each, its last push and pull,
    /// what it is still owed, refused changes waiting, and whether it is disabled.
    List {
        #[command(flatten)]
        data: CentralDb,
    },
    /// Refuse a site's sync requests (a clear 403) until it is enabled again; everything it
    /// synced is kept.
    Disable {
        name: String,
        #[command(flatten)]
        data: CentralDb,
    },
    /// Let a disabled site sync again; it goes on where it stopped.
    Enable {
        name: String,
        #[command(flatten)]
        data: CentralDb,
    },
    /// Remove a site that has no active store (move its stores first). Its records stay.
    Remove {
        name: String,
        #[command(flatten)]
        data: CentralDb,
    },
    /// Write a seed file for a new site: everything it must hold now, compressed and
    /// checksummed, with the address it syncs with and a new password for it (the old one
    /// stops working; keep the file as you would the password). `outpost site import` starts
    /// the site from it without a network; it then syncs only what changed since.
    Export {
        name: String,
        /// Where to write the file.
        #[arg(long)]
        out: PathBuf,
        /// The address the site will sync with (as it reaches this central server).
        #[arg(long)]
        central_url: String,
        #[command(flatten)]
        data: CentralDb,
    },
    /// Give a site a new password (printed once).
    ResetPassword {
        name: String,
        #[command(flatten)]
        data: CentralDb,
    },
    /// Let a site sync from new hardware: it is bound to the machine of its first sync, and
    /// its next sync binds it to the machine it comes from.
    Unbind {
        name: String,
        #[command(flatten)]
        data: CentralDb,
    },
    /// List a site's refused changes that wait for an administrator (a site with too many is
    /// quarantined); `--clear` marks them as looked at, keeps them, and lifts the quarantine.
    Rejected {
        name: String,
        #[arg(long)]
        clear: bool,
        #[command(flatten)]
        data: CentralDb,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum CentralAdminCommand {
    /// Set a new administrator password (from OUTPOST_ADMIN_PASSWORD, --admin-password-file,
    /// or a prompt). Every open dashboard session ends.
    #[command(visible_alias = "reset-password")]
    SetPassword {
        #[command(flatten)]
        data: CentralDb,
        #[arg(long)]
        admin_password_file: Option<PathBuf>,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum CentralStoreCommand {
    /// Add a store, active on a site.
    Add {
        name: String,
        #[arg(long)]
        active_on: String,
        /// A dispensary store (patients, prescriptions, dispensary data).
        #[arg(long)]
        dispensary: bool,
        #[command(flatten)]
        data: CentralDb,
    },
    /// List every store: where it is active, which other sites hold it and how, and its move
    /// if one is under way.
    List {
        #[command(flatten)]
        data: CentralDb,
    },
    /// Move a store to another site, safely: its old site pushes everything it has for the
    /// store and hands it over on its next sync (the store is read-only there from then on);
    /// then the store becomes active on the new site, which receives its current records.
    Move {
        store: String,
        /// The site the store moves to.
        #[arg(long)]
        to: String,
        /// What the old site keeps of the store: none, transfer or collector.
        #[arg(long, default_value = "none")]
        leave_as: String,
        /// Complete a pending move without its old site, when that site is lost for good. What
        /// it had not pushed is not on the central server; the command says since when.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        data: CentralDb,
    },
    /// Set how a store exists on a site other than its active one: collector, transfer or
    /// none (`store move` makes it active elsewhere).
    SyncType {
        store: String,
        site: String,
        sync_type: String,
        #[command(flatten)]
        data: CentralDb,
    },
    /// Whether a dispensary store's transactions, stock, prescriptions and stocktakes are synced
    /// (`on`) or stay on its site (`off`, the default). Switched on, what the store already
    /// holds on its site is sent too.
    IncludeTransactions {
        store: String,
        /// `on` or `off`.
        setting: String,
        #[command(flatten)]
        data: CentralDb,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum CentralPatientCommand {
    /// Move a patient (or prescriber) to another home store, a dispensary store. The patient is
    /// read-only everywhere until its old home store's site next syncs: that site pushes what it
    /// wrote, hands the patient over, and the new home store's site receives the patient and
    /// its records on its next sync.
    Move {
        patient: String,
        /// The new home store.
        #[arg(long)]
        to: String,
        #[command(flatten)]
        data: CentralDb,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum SiteCommand {
    /// Create a remote site's database. The password comes from OUTPOST_SITE_PASSWORD, from
    /// --password-file, or from a prompt; never from the command line, where `ps` shows it.
    Init {
        #[command(flatten)]
        data: DataDir,
        #[arg(long)]
        central: String,
        #[arg(long)]
        site: String,
        #[arg(long)]
        password_file: Option<PathBuf>,
        /// Trust only this certificate authority (PEM) for the central server's HTTPS
        /// certificate, e.g. a self-signed central server (feature `tls`).
        #[arg(long)]
        ca_cert: Option<PathBuf>,
    },
    /// Start a new site from a seed file made by `outpost central site export`, without a
    /// network. The file is checked whole first; a damaged, expired or other site's file is
    /// refused and nothing is written.
    Import {
        file: PathBuf,
        #[command(flatten)]
        data: DataDir,
        /// Refuse the file unless it is for this site.
        #[arg(long)]
        site: Option<String>,
        /// Sync with this address instead of the one in the file.
        #[arg(long)]
        central: Option<String>,
        /// Trust only this certificate authority (PEM) for the central server's HTTPS
        /// certificate (feature `tls`).
        #[arg(long)]
        ca_cert: Option<PathBuf>,
    },
    /// Sync once now: push, then pull.
    Sync {
        #[command(flatten)]
        data: DataDir,
    },
    /// Sync on a schedule and serve the local API.
    Serve {
        #[command(flatten)]
        data: DataDir,
        #[arg(long, default_value = "127.0.0.1:8641")]
        listen: SocketAddr,
        /// Seconds between syncs.
        #[arg(long, default_value_t = 300)]
        every: u64,
    },
    /// What waits to be pushed, the last good sync, the last error, paused or disabled.
    Status {
        #[command(flatten)]
        data: DataDir,
    },
    /// Changes the central server refused (and received changes that could not be applied).
    Rejected {
        #[command(flatten)]
        data: DataDir,
    },
    /// Start the pull again from a fresh snapshot (after an unreadable position; nothing is
    /// lost: records are re-sent and applied again).
    ResetCursor {
        #[command(flatten)]
        data: DataDir,
    },
    /// Skip scheduled syncs until resumed (`site sync` still works).
    Pause {
        #[command(flatten)]
        data: DataDir,
    },
    /// Turn sync back on.
    Resume {
        #[command(flatten)]
        data: DataDir,
    },
    /// No sync at all until resumed.
    Disable {
        #[command(flatten)]
        data: DataDir,
    },
    /// Write one record on this site (checked against authority).
    Write {
        table: String,
        id: String,
        json: String,
        #[command(flatten)]
        data: DataDir,
    },
    /// Merge a record into another of its table (patients and prescribers of one home store,
    /// locations of one store): every record that names it is rewritten, on every node.
    Merge {
        table: String,
        id: String,
        /// The record it is merged into (kept).
        #[arg(long)]
        into: String,
        #[command(flatten)]
        data: DataDir,
    },
    /// With centralised procurement on (set on the primary), enter a store's purchase orders,
    /// tenders and quotes on this site (`local`) or on the primary again (`central`).
    Procurement {
        store: String,
        /// `local` or `central`.
        setting: String,
        #[command(flatten)]
        data: DataDir,
    },
    /// Print one record held on this site.
    Get {
        table: String,
        id: String,
        #[command(flatten)]
        data: DataDir,
    },
}
