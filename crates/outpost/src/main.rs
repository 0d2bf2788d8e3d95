//! `outpost`: the one binary. A thin command line over the library crates.

mod demo;
mod progress;
mod rules;

use clap::{Args, Parser, Subcommand};
use model::SyncType;
pub(crate) use site::client::human_bytes;
use std::io::{IsTerminal, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use store::{Db, Write};

/// Offline-first synchronisation for health supply chains.
///
/// One central server that every site syncs with; remote sites that work offline and, when the
/// link is up, push their own changes and then pull what concerns them.
#[derive(Parser, Debug)]
#[command(name = "outpost", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
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
struct DataDir {
    /// The node's data directory (holds `outpost.sqlite`).
    #[arg(long, env = "OUTPOST_DATA")]
    data: PathBuf,
}

impl DataDir {
    fn open(&self) -> Result<Arc<Db>, String> {
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
struct CentralDb {
    /// The data directory (holds `outpost.sqlite`), when the database is SQLite.
    #[arg(long, env = "OUTPOST_DATA", required_unless_present = "database")]
    data: Option<PathBuf>,
    /// A PostgreSQL database instead, e.g. postgres://outpost@db.example/outpost.
    #[arg(long, env = "OUTPOST_DATABASE", conflicts_with = "data")]
    database: Option<String>,
    /// The schema within that PostgreSQL database (default: the user's search path).
    #[arg(long, env = "OUTPOST_DB_SCHEMA", requires = "database")]
    db_schema: Option<String>,
}

impl CentralDb {
    fn describe(&self) -> String {
        match (&self.database, &self.data) {
            (Some(url), _) => {
                format!("{url}{}", self.db_schema.as_ref().map(|s| format!(" (schema {s})")).unwrap_or_default())
            }
            (None, Some(dir)) => dir.display().to_string(),
            (None, None) => String::new(),
        }
    }

    /// Opens the database, creating it when `create` (a SQLite file must exist otherwise).
    fn open_or_create(&self, create: bool) -> Result<Arc<Db>, String> {
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

    fn open(&self) -> Result<Arc<Db>, String> {
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
enum CentralCommand {
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
    /// Print the dashboard's summary: sites, last syncs, rejections.
    Status {
        #[command(flatten)]
        data: CentralDb,
    },
}

/// What `central serve` allows a client before it closes its connection.
#[derive(Args, Debug)]
struct ConnectionLimits {
    /// Close a connection that keeps the server waiting this long: a request head not complete
    /// this long after the connection opened or sent its last answer, a request body of which
    /// no byte arrives for this long, a TLS handshake that takes longer; and an answer the
    /// client reads nothing of for ten times as long. A slow transfer that keeps moving is never
    /// cut.
    #[arg(long, env = "OUTPOST_IDLE_TIMEOUT_SECS", value_name = "SECONDS",
          default_value_t = central::server::DEFAULT_IDLE_TIMEOUT.as_secs(),
          value_parser = clap::value_parser!(u64).range(1..))]
    idle_timeout_secs: u64,
    /// How many connections one client address may have open at once (0: no limit). Sites
    /// behind one address (a NAT, a reverse proxy on this machine) share it.
    #[arg(long, env = "OUTPOST_MAX_CONNECTIONS_PER_ADDRESS", value_name = "N",
          default_value_t = central::server::DEFAULT_MAX_CONNECTIONS_PER_ADDRESS)]
    max_connections_per_address: usize,
}

impl ConnectionLimits {
    fn limits(&self) -> central::Limits {
        central::Limits {
            idle: Duration::from_secs(self.idle_timeout_secs),
            per_address: self.max_connections_per_address,
        }
    }
}

#[derive(Subcommand, Debug)]
enum CentralSiteCommand {
    /// Add a remote site; prints its password once (only a hash is kept).
    Add {
        name: String,
        #[arg(long)]
        mobile: bool,
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
enum CentralAdminCommand {
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
enum CentralStoreCommand {
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
    /// Set how a store exists on a site: active, collector, transfer or none.
    SyncType {
        store: String,
        site: String,
        sync_type: String,
        #[command(flatten)]
        data: CentralDb,
    },
}

#[derive(Subcommand, Debug)]
enum SiteCommand {
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
    /// Print one record held on this site.
    Get {
        table: String,
        id: String,
        #[command(flatten)]
        data: DataDir,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match &cli.command {
        Command::Central(CentralCommand::Serve { .. }) | Command::Site(SiteCommand::Serve { .. }) => "info",
        _ => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("OUTPOST_LOG").unwrap_or_else(|_| default_level.into()),
        )
        .with_writer(progress::LogWriter)
        .init();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Demo { dir, transactions } => demo::run(&dir, transactions),
        Command::Rules { table } => {
            print!("{}", rules::render(table.as_deref())?);
            Ok(())
        }
        Command::Central(command) => central(command),
        Command::Site(command) => site(command),
    }
}

fn parse_json(json: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(json).map_err(|e| format!("the record is not valid JSON: {e}"))
}

fn central(command: CentralCommand) -> Result<(), String> {
    use central::admin;
    let engine = |data: &CentralDb| data.open().map(central::Engine::new);
    match command {
        CentralCommand::Init { data, name, primary, admin_password_file } => {
            // Asked first, so that nothing is created without an administrator.
            let admin_password = read_admin_password(admin_password_file.as_deref())?;
            let db = data.open_or_create(true)?;
            admin::init(&db, &name, primary.as_deref()).map_err(|e| e.to_string())?;
            admin::set_admin_password(&db, &admin_password).map_err(|e| e.to_string())?;
            println!("central server `{name}` created in {}", data.describe());
            println!(
                "administrator password set: `outpost central serve` asks for it at /login before it shows the dashboard"
            );
        }
        CentralCommand::Admin(CentralAdminCommand::SetPassword { data, admin_password_file }) => {
            let admin_password = read_admin_password(admin_password_file.as_deref())?;
            let db = data.open()?;
            db.local_site().map_err(|e| format!("{}: {e}", data.describe()))?;
            admin::set_admin_password(&db, &admin_password).map_err(|e| e.to_string())?;
            println!("administrator password set for {}; every open dashboard session has ended", data.describe());
        }
        CentralCommand::Serve { data, listen, dashboard_listen, tls_cert: Some(cert), tls_key: Some(key), limits } => {
            serve_tls(engine(&data)?, listen, dashboard_listen, &cert, &key, limits.limits())?;
        }
        CentralCommand::Serve { data, listen, dashboard_listen, limits, .. } => {
            let engine = engine(&data)?;
            let limits = limits.limits();
            let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let bind = |addr: SocketAddr| async move {
                    tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("listening on {addr}: {e}"))
                };
                let listener = bind(listen).await?;
                let dashboard = match dashboard_listen {
                    Some(addr) => Some(bind(addr).await?),
                    None => None,
                };
                let local = |l: &tokio::net::TcpListener| l.local_addr().map_err(|e| e.to_string());
                let sync_addr = local(&listener)?;
                let dashboard_addr = dashboard.as_ref().map_or(Ok(sync_addr), local)?;
                announce(&format!(
                    "central server listening on http://{sync_addr}\ndashboard on http://{dashboard_addr}/\n"
                ));
                match dashboard {
                    None => central::serve(engine, listener, limits).await.map_err(|e| e.to_string()),
                    Some(dashboard) => central::server::serve_apart(engine, listener, dashboard, limits)
                        .await
                        .map_err(|e| e.to_string()),
                }
            })?;
        }
        CentralCommand::Site(CentralSiteCommand::Add { name, mobile, data }) => {
            let password = admin::add_site(&engine(&data)?, &name, mobile).map_err(|e| e.to_string())?;
            println!("site `{name}` added. Its password (shown once, keep it safe):\n{password}");
        }
        CentralCommand::Site(CentralSiteCommand::ResetPassword { name, data }) => {
            let password = admin::reset_password(&engine(&data)?, &name).map_err(|e| e.to_string())?;
            println!("new password for `{name}` (shown once):\n{password}");
        }
        CentralCommand::Site(CentralSiteCommand::Unbind { name, data }) => {
            if !data.open()?.unbind_machine(&name).map_err(|e| e.to_string())? {
                return Err(format!("there is no site `{name}`"));
            }
            println!(
                "site `{name}` is no longer bound to a machine; its next sync binds it to the machine it comes from"
            );
        }
        CentralCommand::Site(CentralSiteCommand::Rejected { name, clear, data }) => {
            let db = data.open()?;
            let open = db.open_rejections(&name).map_err(|e| e.to_string())?;
            for r in &open {
                println!("{}  {} `{}` (change {}): {}", r.at, r.table, r.id, r.seq, r.reason);
            }
            let quarantined = open.len() as u64 >= central::engine::MAX_OPEN_REJECTIONS;
            match (open.len(), clear) {
                (0, _) => println!("no refused changes of `{name}` wait for an administrator"),
                (n, false) => println!(
                    "{n} refused change(s) of `{name}` wait for an administrator{}; `--clear` marks them as looked at (they are kept)",
                    if quarantined { " (the site is quarantined: its pushes are refused)" } else { "" }
                ),
                (_, true) => {
                    let cleared = db.resolve_rejections(&name).map_err(|e| e.to_string())?;
                    println!("{cleared} refused change(s) of `{name}` marked as looked at (kept); its pushes are accepted again");
                }
            }
        }
        CentralCommand::Store(CentralStoreCommand::Add { name, active_on, dispensary, data }) => {
            admin::add_store(&engine(&data)?, &name, &active_on, dispensary).map_err(|e| e.to_string())?;
            println!("store `{name}` added, active on `{active_on}`");
        }
        CentralCommand::Store(CentralStoreCommand::SyncType { store, site, sync_type, data }) => {
            let sync = SyncType::parse(&sync_type)
                .ok_or_else(|| format!("`{sync_type}` is not a sync type: use active, collector, transfer or none"))?;
            admin::set_sync_type(&engine(&data)?, &store, &site, sync).map_err(|e| e.to_string())?;
            println!("store `{store}` is now `{}` on `{site}`", sync.as_str());
        }
        CentralCommand::ShowName { name, store, data } => {
            admin::show_name(&engine(&data)?, &name, &store).map_err(|e| e.to_string())?;
        }
        CentralCommand::ShowItem { item, store, data } => {
            admin::show_item(&engine(&data)?, &item, &store).map_err(|e| e.to_string())?;
        }
        CentralCommand::Write { table, id, json, data } => {
            let doc = parse_json(&json)?;
            engine(&data)?.write(&[Write::upsert(&table, id.as_str(), &doc)]).map_err(|e| e.to_string())?;
        }
        CentralCommand::Status { data } => {
            let view = central::dashboard::view(&engine(&data)?).map_err(|e| e.to_string())?;
            println!("central `{}`, primary `{}`", view.central, view.primary);
            for s in &view.sites {
                println!(
                    "  {:<16} {:<8} last push {:<24} last pull {:<24} rejected {}{}",
                    s.site,
                    s.kind,
                    s.last_push_at.as_deref().unwrap_or("never"),
                    s.last_pull_at.as_deref().unwrap_or("never"),
                    s.rejections,
                    if s.stale { "  (no sync for over a month)" } else { "" }
                );
            }
        }
    }
    Ok(())
}

/// Says where a server listens, in one write, and goes on serving if nobody reads it: a
/// supervisor that reads only the first line and closes the pipe must not stop the server (as
/// `println!` would, panicking on the broken pipe).
fn announce(text: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        tracing::warn!(error = %e, "could not print where the server listens");
    }
}

/// A site's password: from OUTPOST_SITE_PASSWORD, a file, or standard input.
fn read_password(file: Option<&Path>) -> Result<String, String> {
    read_secret("OUTPOST_SITE_PASSWORD", file, "password for this site: ")?
        .ok_or_else(|| "no password given (set OUTPOST_SITE_PASSWORD, use --password-file, or type it)".into())
}

/// The dashboard administrator's password: from OUTPOST_ADMIN_PASSWORD, a file, or standard
/// input; long enough to face the internet.
fn read_admin_password(file: Option<&Path>) -> Result<String, String> {
    let password = read_secret("OUTPOST_ADMIN_PASSWORD", file, "administrator password for the dashboard: ")?.ok_or(
        "no administrator password given (set OUTPOST_ADMIN_PASSWORD, use --admin-password-file FILE, or type it)",
    )?;
    central::admin::check_admin_password(&password).map_err(|e| e.to_string())?;
    if std::env::var_os("OUTPOST_ADMIN_PASSWORD").is_none() && file.is_none() && std::io::stdin().is_terminal() {
        let again = read_secret("", None, "the same again: ")?.unwrap_or_default();
        if again != password {
            return Err("the two passwords differ; nothing was changed".into());
        }
    }
    Ok(password)
}

/// A secret from the environment variable `var`, else from `file`, else a line of standard
/// input (prompted on a terminal); never from the command line, where `ps` shows it. `None`
/// when nothing was given.
fn read_secret(var: &str, file: Option<&Path>, prompt: &str) -> Result<Option<String>, String> {
    if let Some(secret) = std::env::var(var).ok().filter(|_| !var.is_empty()) {
        return Ok(Some(secret));
    }
    if let Some(file) = file {
        let text = std::fs::read_to_string(file).map_err(|e| format!("reading {}: {e}", file.display()))?;
        return Ok(Some(text.trim().to_owned()));
    }
    if std::io::stdin().is_terminal() {
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).map_err(|e| format!("reading the password: {e}"))?;
    let secret = line.trim().to_owned();
    Ok((!secret.is_empty()).then_some(secret))
}

fn client_for(db: &Db) -> Result<site::Client, String> {
    let get = |key: &str| {
        db.state(key)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("this site has no `{key}`; run `outpost site init`"))
    };
    let client = site::Client::new(&get("central_url")?, &get("local_site")?, &get("password")?);
    match db.state("ca_cert_pem").map_err(|e| e.to_string())? {
        Some(pem) if !pem.is_empty() => client.trusting(pem.as_bytes()).map_err(|e| e.to_string()),
        _ => Ok(client),
    }
}

#[cfg(feature = "tls")]
fn serve_tls(
    engine: central::Engine,
    listen: SocketAddr,
    dashboard_listen: Option<SocketAddr>,
    cert: &Path,
    key: &Path,
    limits: central::Limits,
) -> Result<(), String> {
    let bind = |addr: SocketAddr| std::net::TcpListener::bind(addr).map_err(|e| format!("listening on {addr}: {e}"));
    let listener = bind(listen)?;
    let dashboard = dashboard_listen.map(bind).transpose()?;
    let sync_addr = listener.local_addr().map_err(|e| e.to_string())?;
    let dashboard_addr = dashboard.as_ref().map_or(Ok(sync_addr), |d| d.local_addr()).map_err(|e| e.to_string())?;
    announce(&format!("central server listening on https://{sync_addr}\ndashboard on https://{dashboard_addr}/\n"));
    let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    runtime
        .block_on(central::serve_tls(engine, listener, dashboard, cert, key, limits))
        .map_err(|e| format!("serving HTTPS: {e}"))
}

#[cfg(not(feature = "tls"))]
fn serve_tls(
    _engine: central::Engine,
    _listen: SocketAddr,
    _dashboard_listen: Option<SocketAddr>,
    _cert: &Path,
    _key: &Path,
    _limits: central::Limits,
) -> Result<(), String> {
    Err("this outpost was built without TLS; build it with `--features tls`".into())
}

fn site(command: SiteCommand) -> Result<(), String> {
    use site::status::{self, SyncState};
    match command {
        SiteCommand::Init { data, central, site, password_file, ca_cert } => {
            let password = read_password(password_file.as_deref())?;
            let ca_pem = match &ca_cert {
                Some(file) => std::fs::read_to_string(file).map_err(|e| format!("reading {}: {e}", file.display()))?,
                None => String::new(),
            };
            let report =
                site::initialise(&data.data, &central, &site, &password, &ca_pem).map_err(|e| e.to_string())?;
            println!(
                "site `{site}` initialised against central server `{}`; run `outpost site sync` to receive its data",
                report.central
            );
        }
        SiteCommand::Sync { data } => {
            let db = data.open()?;
            let client = client_for(&db)?;
            let mut bar = progress::Terminal::new(client.link().clone());
            let report = site::sync_once(&db, &client, &mut bar).map_err(|e| e.to_string());
            bar.finish();
            let report = report?;
            println!(
                "synced in {:.2?}: pushed {} ({} rejected), pulled {}; {} sent, {} received",
                report.duration,
                report.pushed,
                report.rejected,
                report.pulled,
                human_bytes(report.bytes_sent),
                human_bytes(report.bytes_received)
            );
            if report.confirmed > 0 {
                println!(
                    "{} change(s) sent by an earlier sync had arrived (its answer was lost on the way back): not sent again",
                    report.confirmed
                );
            }
            if report.rejected > 0 {
                println!("see `outpost site rejected` for the reasons");
            }
        }
        SiteCommand::Serve { data, listen, every } => {
            let db = data.open()?;
            let client = client_for(&db)?;
            let runtime = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
            runtime.block_on(async move {
                let listener =
                    tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("listening on {listen}: {e}"))?;
                println!(
                    "site API on http://{}, syncing every {every} s",
                    listener.local_addr().map_err(|e| e.to_string())?
                );
                site::local_api::serve(db, client, listener, Duration::from_secs(every))
                    .await
                    .map_err(|e| e.to_string())
            })?;
        }
        SiteCommand::Status { data } => {
            println!("{}", status::status(&*data.open()?).map_err(|e| e.to_string())?);
        }
        SiteCommand::Rejected { data } => {
            let rejected = status::rejected(&*data.open()?).map_err(|e| e.to_string())?;
            if rejected.is_empty() {
                println!("no rejected changes");
            }
            for r in rejected {
                println!("{}  {} `{}` (change {} from {}): {}", r.at, r.table, r.id, r.seq, r.from, r.reason);
            }
        }
        SiteCommand::ResetCursor { data } => {
            data.open()?.set_state("pull_cursor", "").map_err(|e| e.to_string())?;
            println!("the next sync pulls a fresh snapshot of everything this site holds");
        }
        SiteCommand::Pause { data } => {
            status::set_sync_state(&*data.open()?, SyncState::Paused).map_err(|e| e.to_string())?
        }
        SiteCommand::Resume { data } => {
            status::set_sync_state(&*data.open()?, SyncState::Active).map_err(|e| e.to_string())?
        }
        SiteCommand::Disable { data } => {
            status::set_sync_state(&*data.open()?, SyncState::Disabled).map_err(|e| e.to_string())?
        }
        SiteCommand::Write { table, id, json, data } => {
            let doc = parse_json(&json)?;
            data.open()?.write(&[Write::upsert(&table, id.as_str(), &doc)]).map_err(|e| e.to_string())?;
        }
        SiteCommand::Get { table, id, data } => match data.open()?.record(&table, &id).map_err(|e| e.to_string())? {
            Some(doc) => println!("{doc}"),
            None => return Err(format!("no `{table}` record `{id}` on this site")),
        },
    }
    Ok(())
}
