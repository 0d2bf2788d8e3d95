use crate::{Result, StoreError, Write};
use model::network::TOPOLOGY_TABLES;
use model::{
    check_write, recipients, registry, Action, Audience, ChangeRef, Network, Op, RecordId, RecordKeys, Registry, Seq,
    SiteId,
};
use rusqlite::{params, Connection, OptionalExtension};
use std::cell::RefCell;
use std::fmt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

const SCHEMA: &str = include_str!("schema.sql");
const SCHEMA_VERSION: i64 = 2;

/// A node's database: a SQLite file (every node), or a PostgreSQL database that several central
/// server processes share (feature `postgres`). Cheap to share behind an `Arc`. On SQLite, one
/// writer at a time, as SQLite allows; on PostgreSQL, a small pool of connections, so
/// transactions run side by side.
#[derive(Debug)]
pub struct Db {
    backend: Backend,
    registry: &'static Registry,
}

#[derive(Debug)]
enum Backend {
    Sqlite(Mutex<Inner>),
    #[cfg(feature = "postgres")]
    Postgres(crate::pg::PgDb),
}

/// A connection to read from (the read-only queries of `queries.rs` and `sync_state.rs`).
pub(crate) enum Conn<'a> {
    Sqlite(&'a Connection),
    #[cfg(feature = "postgres")]
    Postgres(&'a mut crate::pg::PgConn),
}

#[derive(Debug)]
struct Inner {
    conn: Connection,
    /// The network as this node's records describe it, kept in step with every topology write.
    network: Network,
    /// SQLite's `data_version` when the network was last read (it changes on other
    /// connections' commits only).
    data_version: Option<i64>,
}

impl Db {
    /// Opens (creating if needed) a database file, in WAL mode, and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Db> {
        Self::from_connection(Connection::open(path)?)
    }

    /// A private in-memory database, for tests and benchmarks.
    pub fn open_in_memory() -> Result<Db> {
        Self::from_connection(Connection::open_in_memory()?)
    }

    /// Opens a PostgreSQL database (`postgres://user@host:port/database`, or the `key=value`
    /// form), shared with other server processes, and brings its schema up to date. With
    /// `schema`, the tables live in that PostgreSQL schema, created if needed; without, in the
    /// connection's default (`public`).
    #[cfg(feature = "postgres")]
    pub fn open_postgres(url: &str, schema: Option<&str>) -> Result<Db> {
        Ok(Db { backend: Backend::Postgres(crate::pg::PgDb::open(url, schema)?), registry: registry() })
    }

    fn from_connection(conn: Connection) -> Result<Db> {
        // Records are a few hundred bytes: larger pages mean fewer splits (only effective
        // before the first table is created).
        conn.pragma_update(None, "page_size", 16_384)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "cache_size", -262_144)?;
        // Reads through a memory map, not a pread (and a copy) per page: an initialisation reads
        // a whole store in key order, which is not the order the rows were written in.
        conn.pragma_update(None, "mmap_size", 4_i64 << 30)?;
        conn.pragma_update(None, "busy_timeout", 10_000)?;
        migrate(&conn)?;
        let network = load_network(&conn)?;
        let data_version = conn.pragma_query_value(None, "data_version", |r| r.get(0)).ok();
        Ok(Db { backend: Backend::Sqlite(Mutex::new(Inner { conn, network, data_version })), registry: registry() })
    }

    pub fn registry(&self) -> &'static Registry {
        self.registry
    }

    fn lock(inner: &Mutex<Inner>) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave SQLite half-written (the transaction rolls
        // back on drop), so a poisoned lock is still safe to use once the network, which may have
        // absorbed records that rolled back, is read again from the database.
        let mut guard = inner.lock().unwrap_or_else(|poisoned| {
            let mut guard = poisoned.into_inner();
            if let Ok(network) = load_network(&guard.conn) {
                guard.network = network;
                inner.clear_poison();
            }
            guard
        });
        // Another process (an admin command beside a running server) may have committed
        // topology changes: SQLite's data_version says so, cheaply.
        let version: Option<i64> = guard.conn.pragma_query_value(None, "data_version", |r| r.get(0)).ok();
        if version.is_some() && version != guard.data_version {
            if let Ok(network) = load_network(&guard.conn) {
                guard.network = network;
                guard.data_version = version;
            }
        }
        guard
    }

    /// Runs `f` in one transaction: all of it is committed, or none of it.
    pub fn transaction<T>(&self, f: impl FnOnce(&mut Tx<'_>) -> Result<T>) -> Result<T> {
        match &self.backend {
            Backend::Sqlite(inner) => {
                let mut guard = Self::lock(inner);
                let inner = &mut *guard;
                let result = {
                    // Immediate: the write lock is taken (waiting up to the busy timeout) before
                    // the first read. A deferred transaction that reads, then writes, fails at
                    // once with "database is locked" when another process (a person's write
                    // beside a running sync) committed in between.
                    let sql = inner.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
                    let mut tx = Tx {
                        sql: TxSql::Sqlite(sql),
                        network: NetSlot::Borrowed(&mut inner.network),
                        registry: self.registry,
                        topology_changed: false,
                        looked_up: RefCell::new(None),
                    };
                    match f(&mut tx) {
                        Ok(value) => tx.commit().map(|_| value),
                        Err(e) => Err(e),
                    }
                };
                if result.is_err() {
                    // The transaction rolled back; the network may have absorbed records that are
                    // not there any more.
                    inner.network = load_network(&inner.conn)?;
                }
                result
            }
            #[cfg(feature = "postgres")]
            Backend::Postgres(pg) => pg.transaction(self.registry, f),
        }
    }

    /// Runs a closure on a connection, outside any transaction: for reads, and for a single
    /// statement that commits on its own (`mark_pulled`).
    pub(crate) fn read<T>(&self, f: impl FnOnce(Conn<'_>) -> Result<T>) -> Result<T> {
        match &self.backend {
            Backend::Sqlite(inner) => {
                let guard = Self::lock(inner);
                f(Conn::Sqlite(&guard.conn))
            }
            #[cfg(feature = "postgres")]
            Backend::Postgres(pg) => {
                let mut conn = pg.connection()?;
                f(Conn::Postgres(&mut conn))
            }
        }
    }

    /// A copy of the network as this node sees it.
    pub fn network(&self) -> Network {
        match &self.backend {
            Backend::Sqlite(inner) => Self::lock(inner).network.clone(),
            #[cfg(feature = "postgres")]
            Backend::Postgres(pg) => match pg.network() {
                Ok(network) => Network::clone(&network),
                Err(e) => {
                    // The last network read stands in until the database answers again.
                    tracing::warn!(error = %e, "could not check the network for changes; using the last one read");
                    Network::clone(&pg.cached_network())
                }
            },
        }
    }

    /// This node's own site id, set when the node was initialised.
    pub fn local_site(&self) -> Result<SiteId> {
        self.state("local_site")?.map(SiteId).ok_or(StoreError::NotInitialised)
    }

    /// Writes records made on this node, each checked against `authority`, all in one
    /// transaction. Returns each write's change-log position.
    pub fn write(&self, writes: &[Write]) -> Result<Vec<Seq>> {
        let me = self.local_site()?;
        self.transaction(|tx| writes.iter().map(|w| tx.write_checked(w, &me)).collect())
    }

    pub fn state(&self, key: &str) -> Result<Option<String>> {
        self.read(|conn| match conn {
            Conn::Sqlite(conn) => {
                Ok(conn.query_row("SELECT value FROM state WHERE key = ?1", [key], |r| r.get(0)).optional()?)
            }
            #[cfg(feature = "postgres")]
            Conn::Postgres(conn) => conn.session().state(key),
        })
    }

    pub fn set_state(&self, key: &str, value: &str) -> Result<()> {
        self.transaction(|tx| tx.set_state(key, value))
    }
}

fn migrate(conn: &Connection) -> Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version < 1 {
        conn.execute_batch(SCHEMA)?;
    } else if version < 2 {
        // Version 2: refused changes an administrator has looked at; the last batch applied.
        conn.execute_batch(
            "ALTER TABLE rejection ADD COLUMN resolved_at TEXT;
             ALTER TABLE site_sync ADD COLUMN push_from INTEGER;
             ALTER TABLE site_sync ADD COLUMN push_digest TEXT;",
        )?;
    }
    if version < SCHEMA_VERSION {
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    }
    Ok(())
}

fn load_network(conn: &Connection) -> Result<Network> {
    let placeholders = vec!["?"; TOPOLOGY_TABLES.len()].join(",");
    let mut stmt = conn.prepare(&format!(
        "SELECT tbl, id, data FROM record WHERE tbl IN ({placeholders}) AND data IS NOT NULL
         ORDER BY CASE tbl WHEN 'site' THEN 0 WHEN 'store' THEN 1 ELSE 2 END"
    ))?;
    let rows = stmt.query_map(rusqlite::params_from_iter(TOPOLOGY_TABLES), |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
    })?;
    let mut records = Vec::new();
    for row in rows {
        records.push(row?);
    }
    network_from_records(records)
}

/// The network described by topology records (sites first, then stores, then the rest).
pub(crate) fn network_from_records(rows: Vec<(String, String, String)>) -> Result<Network> {
    let mut records = Vec::with_capacity(rows.len());
    for (tbl, id, data) in rows {
        let value: serde_json::Value = serde_json::from_str(&data).map_err(|source| StoreError::CorruptRecord {
            table: tbl.clone(),
            id: id.clone(),
            source,
        })?;
        records.push((tbl, id, value));
    }
    Ok(Network::from_records(records.iter().map(|(t, i, v)| (t.as_str(), i.as_str(), v.clone()))))
}

/// One transaction on a node's database.
pub struct Tx<'a> {
    pub(crate) sql: TxSql<'a>,
    network: NetSlot<'a>,
    registry: &'static Registry,
    /// Whether a topology record was written (on PostgreSQL, other processes are told at commit).
    topology_changed: bool,
    /// The record [`Tx::current`] found last, until the transaction writes a record.
    looked_up: RefCell<Option<Lookup>>,
}

/// A record as [`Tx::current`] found it, with its keys. The write that usually follows the
/// look-up (a pushed change is checked, then written) uses it rather than looking again. Nothing
/// else can change the record meanwhile: SQLite has one writer, and on PostgreSQL the look-up
/// locks the row.
#[derive(Debug)]
struct Lookup {
    table: String,
    id: String,
    current: Current,
    keys: RecordKeys,
}

impl fmt::Debug for Tx<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let backend = match &self.sql {
            TxSql::Sqlite(_) => "sqlite",
            #[cfg(feature = "postgres")]
            TxSql::Postgres(_) => "postgres",
        };
        f.debug_struct("Tx").field("backend", &backend).field("topology_changed", &self.topology_changed).finish()
    }
}

/// The database transaction under a [`Tx`].
pub(crate) enum TxSql<'a> {
    Sqlite(rusqlite::Transaction<'a>),
    /// In a `RefCell` because the postgres client needs `&mut` even to read, and `Tx`'s reads
    /// take `&self`.
    #[cfg(feature = "postgres")]
    Postgres(RefCell<crate::pg::PgTx<'a>>),
}

/// The network a transaction sees and updates.
pub(crate) enum NetSlot<'a> {
    /// SQLite: the database's own copy, reloaded if the transaction fails.
    Borrowed(&'a mut Network),
    /// PostgreSQL: the copy shared by the handle's transactions, copied on the first topology
    /// write (other transactions of this process run at the same time).
    #[cfg(feature = "postgres")]
    Shared(std::sync::Arc<Network>),
}

impl NetSlot<'_> {
    fn get(&self) -> &Network {
        match self {
            NetSlot::Borrowed(network) => network,
            #[cfg(feature = "postgres")]
            NetSlot::Shared(network) => network,
        }
    }

    fn get_mut(&mut self) -> &mut Network {
        match self {
            NetSlot::Borrowed(network) => network,
            #[cfg(feature = "postgres")]
            NetSlot::Shared(network) => std::sync::Arc::make_mut(network),
        }
    }
}

/// What a committed transaction leaves behind (read on PostgreSQL only).
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) struct Committed {
    /// The network as the transaction left it (SQLite's stays in place: `None`).
    pub(crate) network: Option<std::sync::Arc<Network>>,
    pub(crate) topology_changed: bool,
}

/// A record as it stands before a write.
#[derive(Debug, Clone)]
pub struct Current {
    /// `None` for a tombstone (the record was deleted).
    pub data: Option<String>,
    pub log_seq: Option<Seq>,
}

/// What a checked write did.
#[derive(Debug, Clone)]
pub struct Written {
    pub seq: Seq,
    pub op: Op,
    pub keys: RecordKeys,
    /// Who must receive the change (the central server routes it by this).
    pub audience: Audience,
}

/// A change as it reaches [`Tx::write_as`]: typed on this node, or pushed by a site.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    pub table: &'a str,
    pub id: &'a RecordId,
    pub action: &'a Action,
    /// The record as JSON text (an object); required for an upsert, ignored otherwise.
    pub data: Option<&'a str>,
}

/// One record write, with its change-log entry. Crate-private: outside the storage crate a
/// record is written only through [`Tx::write_as`] (checked and logged) or
/// [`Tx::apply_received`] (a change from the central server).
#[derive(Debug)]
pub(crate) struct Put<'a> {
    pub table: &'a str,
    pub id: &'a RecordId,
    pub action: &'a Action,
    /// The document, serialised; `None` for a delete or merge.
    pub data: Option<&'a str>,
    pub keys: &'a RecordKeys,
    pub origin: &'a SiteId,
    /// Whether the change goes into this node's change log (a site logs only its own changes;
    /// the central server logs everything it receives, to route it on).
    pub log: bool,
    /// The shared bucket of a wide audience (central server only).
    pub bucket: Option<&'a str>,
}

impl Put<'_> {
    pub(crate) fn merge_into(&self) -> Option<&str> {
        match self.action {
            Action::MergeInto(into) => Some(into.as_str()),
            _ => None,
        }
    }

    /// The document as stored: none for a delete or a merge.
    pub(crate) fn stored_data(&self) -> Option<&str> {
        match self.action {
            Action::Upsert => self.data,
            Action::Delete | Action::MergeInto(_) => None,
        }
    }
}

impl<'a> Tx<'a> {
    /// Commits, telling other processes of a topology change (PostgreSQL).
    pub(crate) fn commit(self) -> Result<Committed> {
        let Tx { sql, network, topology_changed, .. } = self;
        match sql {
            TxSql::Sqlite(sql) => sql.commit()?,
            #[cfg(feature = "postgres")]
            TxSql::Postgres(pg) => pg.into_inner().commit(topology_changed)?,
        }
        let network = match network {
            NetSlot::Borrowed(_) => None,
            #[cfg(feature = "postgres")]
            NetSlot::Shared(network) => Some(network),
        };
        Ok(Committed { network, topology_changed })
    }

    #[cfg(feature = "postgres")]
    pub(crate) fn postgres(
        pg: crate::pg::PgTx<'a>,
        network: std::sync::Arc<Network>,
        registry: &'static Registry,
    ) -> Self {
        Tx {
            sql: TxSql::Postgres(RefCell::new(pg)),
            network: NetSlot::Shared(network),
            registry,
            topology_changed: false,
            looked_up: RefCell::new(None),
        }
    }
}

impl Tx<'_> {
    pub fn network(&self) -> &Network {
        self.network.get()
    }

    pub fn registry(&self) -> &Registry {
        self.registry
    }

    /// A record as it stands (`None` if it never existed). On PostgreSQL the record stays locked
    /// until the transaction ends, so that a concurrent write of it waits for this one.
    pub fn current(&self, table: &str, id: &str) -> Result<Option<Current>> {
        if let Some(found) = self.looked_up.borrow().as_ref().filter(|l| l.table == table && l.id == id) {
            return Ok(Some(found.current.clone()));
        }
        let found = match &self.sql {
            TxSql::Sqlite(sql) => {
                let mut stmt = sql.prepare_cached(
                    "SELECT data, log_seq, store_id, other_store_id, name_id FROM record WHERE tbl = ?1 AND id = ?2",
                )?;
                stmt.query_row(params![table, id], |r| {
                    let current = Current { data: r.get(0)?, log_seq: r.get::<_, Option<i64>>(1)?.map(Seq) };
                    let keys = RecordKeys {
                        store: r.get::<_, Option<String>>(2)?.map(Into::into),
                        other_store: r.get::<_, Option<String>>(3)?.map(Into::into),
                        name: r.get::<_, Option<String>>(4)?.map(Into::into),
                        home_store: None,
                    };
                    Ok((current, keys))
                })
                .optional()?
            }
            #[cfg(feature = "postgres")]
            TxSql::Postgres(pg) => pg.borrow_mut().session().current(table, id)?,
        };
        Ok(found.map(|(current, keys)| {
            let lookup = Lookup { table: table.to_owned(), id: id.to_owned(), current: current.clone(), keys };
            *self.looked_up.borrow_mut() = Some(lookup);
            current
        }))
    }

    /// What a change does to a record that stands as `current`.
    pub fn op_for(action: &Action, current: Option<&Current>) -> Op {
        match action {
            Action::Upsert if current.is_some_and(|c| c.data.is_some()) => Op::Update,
            Action::Upsert => Op::Create,
            Action::Delete => Op::Delete,
            Action::MergeInto(into) => Op::MergeInto(into.clone()),
        }
    }

    /// A write made on this node, checked against `authority` first.
    pub fn write_checked(&mut self, write: &Write, me: &SiteId) -> Result<Seq> {
        self.write_as(write.incoming(), me).map(|w| w.seq)
    }

    /// [`Tx::write_as`] for a [`Write`] (the central server routes its own writes with what it
    /// returns).
    pub fn write_checked_full(&mut self, write: &Write, me: &SiteId) -> Result<Written> {
        self.write_as(write.incoming(), me)
    }

    /// **The one checked write.** Every change that enters a node's log comes through here: a
    /// person's edit on a site, the central server's own writes, and every change a site pushes
    /// (with `writer` the pushing site). In order, before anything is written:
    /// - the id and the document are within [`model::limits`];
    /// - the table is synced and the document is a JSON object with readable routing keys;
    /// - `writer` has authority over the record as it arrives, and, when the change re-keys a
    ///   stored record (another store, name or sending store), over the record as it is stored;
    /// - a site's edit of a patient or prescriber keeps its home store (only the central server
    ///   moves a patient);
    /// - the change can be routed (its recipients resolve);
    /// - a topology record keeps the network possible (a mobile site has one active store).
    ///
    /// A refusal is [`StoreError::Refused`] or [`StoreError::Invalid`], and writes nothing.
    pub fn write_as(&mut self, change: Incoming<'_>, writer: &SiteId) -> Result<Written> {
        let refused = |refusal| StoreError::Refused {
            table: change.table.to_owned(),
            id: change.id.clone(),
            refusal: Box::new(refusal),
        };
        let invalid =
            |reason: String| StoreError::Invalid { table: change.table.to_owned(), id: change.id.clone(), reason };
        model::limits::check_id(change.id.as_str()).map_err(refused)?;
        let (table, _) = self
            .registry
            .table(change.table)
            .ok_or_else(|| refused(model::Refusal::UnknownTable(change.table.to_owned())))?;
        let data = match (change.action, change.data) {
            (Action::Upsert, Some(text)) => {
                model::limits::check_document(text).map_err(refused)?;
                Some(text)
            }
            (Action::Upsert, None) => return Err(invalid("an upsert needs the record".into())),
            (Action::MergeInto(into), _) => {
                model::limits::check_id(into.as_str()).map_err(refused)?;
                None
            }
            (Action::Delete, _) => None,
        };
        let keys = match data {
            Some(text) => parse_local_keys(table, change.id, text)
                .map_err(|e| invalid(format!("an upsert needs the record as a JSON object: {e}")))?,
            None => self.stored_keys(change.table, change.id.as_str())?.unwrap_or_default(),
        };
        let put = Put {
            table: change.table,
            id: change.id,
            action: change.action,
            data,
            keys: &keys,
            origin: writer,
            log: true,
            bucket: None,
        };
        // Most writes create a record: try that first, and look the record up only if it exists.
        if *change.action == Action::Upsert {
            let create = ChangeRef { table: change.table, op: &Op::Create, keys: &keys };
            if check_write(self.registry, self.network.get(), &create, writer).is_ok() {
                let audience = recipients(self.registry, self.network.get(), &create).map_err(refused)?;
                self.check_topology(&put).map_err(refused)?;
                if let Some(seq) = self.insert_new(&put)? {
                    return Ok(Written { seq, op: Op::Create, keys: keys.clone(), audience });
                }
            }
        }
        let current = self.current(change.table, change.id.as_str())?;
        let op = Self::op_for(change.action, current.as_ref());
        let as_written = ChangeRef { table: change.table, op: &op, keys: &keys };
        check_write(self.registry, self.network.get(), &as_written, writer).map_err(refused)?;
        if op != Op::Create {
            // A change that re-keys a record (moves it to another store or name) needs authority
            // over the record where it stands too, or a site could take over another's record.
            if let Some(stored) = self.stored_keys(change.table, change.id.as_str())? {
                if (&stored.store, &stored.other_store, &stored.name) != (&keys.store, &keys.other_store, &keys.name) {
                    let as_stored = ChangeRef { table: change.table, op: &op, keys: &stored };
                    check_write(self.registry, self.network.get(), &as_stored, writer).map_err(refused)?;
                }
            }
        }
        if *change.action == Action::Upsert {
            self.network
                .get()
                .check_home_store(change.table, change.id, keys.home_store.as_ref(), writer)
                .map_err(refused)?;
        }
        let audience = recipients(self.registry, self.network.get(), &as_written).map_err(refused)?;
        self.check_topology(&put).map_err(refused)?;
        let seq = self.put_with_current(&put, current)?;
        Ok(Written { seq, op, keys: keys.clone(), audience })
    }

    /// A topology record must leave a network the rules can work with.
    fn check_topology(&self, put: &Put<'_>) -> Result<(), model::Refusal> {
        if !TOPOLOGY_TABLES.contains(&put.table) {
            return Ok(());
        }
        let new = put.stored_data().and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok());
        self.network.get().check_topology(put.table, put.id.as_str(), new.as_ref())
    }

    /// Inserts a record that does not exist yet, with its change-log entry; `None` (and nothing
    /// written) when it exists already.
    fn insert_new(&mut self, put: &Put<'_>) -> Result<Option<Seq>> {
        self.looked_up.get_mut().take();
        let inserted = match &mut self.sql {
            TxSql::Sqlite(sql) => sqlite_insert_new(sql, put)?,
            #[cfg(feature = "postgres")]
            TxSql::Postgres(pg) => pg.get_mut().session().insert_new(put)?,
        };
        if inserted.is_some() {
            self.absorb(put, None)?;
        }
        Ok(inserted)
    }

    /// Keeps the network in step when a topology record changes.
    fn absorb(&mut self, put: &Put<'_>, old: Option<&str>) -> Result<()> {
        if !TOPOLOGY_TABLES.contains(&put.table) {
            return Ok(());
        }
        let parse = |text: &str| {
            serde_json::from_str::<serde_json::Value>(text).map_err(|source| StoreError::CorruptRecord {
                table: put.table.to_owned(),
                id: put.id.to_string(),
                source,
            })
        };
        let old = old.map(parse).transpose()?;
        let new = match put.action {
            Action::Upsert => put.data.map(parse).transpose()?,
            _ => None,
        };
        self.network.get_mut().absorb(put.table, put.id.as_str(), old.as_ref(), new.as_ref());
        self.topology_changed = true;
        Ok(())
    }

    /// The routing keys stored with a record.
    pub fn stored_keys(&self, table: &str, id: &str) -> Result<Option<RecordKeys>> {
        if let Some(found) = self.looked_up.borrow().as_ref().filter(|l| l.table == table && l.id == id) {
            return Ok(Some(found.keys.clone()));
        }
        match &self.sql {
            TxSql::Sqlite(sql) => {
                let mut stmt = sql.prepare_cached(
                    "SELECT store_id, other_store_id, name_id FROM record WHERE tbl = ?1 AND id = ?2",
                )?;
                Ok(stmt
                    .query_row(params![table, id], |r| {
                        Ok(RecordKeys {
                            store: r.get::<_, Option<String>>(0)?.map(Into::into),
                            other_store: r.get::<_, Option<String>>(1)?.map(Into::into),
                            name: r.get::<_, Option<String>>(2)?.map(Into::into),
                            home_store: None,
                        })
                    })
                    .optional()?)
            }
            #[cfg(feature = "postgres")]
            TxSql::Postgres(pg) => pg.borrow_mut().session().stored_keys(table, id),
        }
    }

    /// Writes a record and its change-log entry. Returns the entry's position (or the record's
    /// previous one when the change is not logged here).
    pub(crate) fn put(&mut self, put: &Put<'_>) -> Result<Seq> {
        // A record just looked up is written over as it was found.
        let found = self.looked_up.get_mut().take().filter(|l| l.table == put.table && l.id == put.id.as_str());
        if let Some(found) = found {
            return self.put_with_current(put, Some(found.current));
        }
        // Most records arrive new (an initialisation is nothing else): insert first, and look
        // the record up only when it exists.
        if *put.action == Action::Upsert {
            if let Some(seq) = self.insert_new(put)? {
                return Ok(seq);
            }
        }
        let current = self.current(put.table, put.id.as_str())?;
        self.put_with_current(put, current)
    }

    fn put_with_current(&mut self, put: &Put<'_>, current: Option<Current>) -> Result<Seq> {
        self.looked_up.get_mut().take();
        let old_seq = current.as_ref().and_then(|c| c.log_seq);
        let seq = match &mut self.sql {
            TxSql::Sqlite(sql) => sqlite_write_record(sql, put, old_seq)?,
            #[cfg(feature = "postgres")]
            TxSql::Postgres(pg) => pg.get_mut().session().write_record(put, old_seq)?,
        };
        self.absorb(put, current.as_ref().and_then(|c| c.data.as_deref()))?;
        Ok(seq.or(old_seq).unwrap_or_default())
    }

    /// Puts a logged change in a shared bucket (a wide audience on the central server).
    pub fn set_bucket(&mut self, seq: Seq, bucket: &str) -> Result<()> {
        match &mut self.sql {
            TxSql::Sqlite(sql) => {
                sql.prepare_cached("UPDATE change_log SET bucket = ?2 WHERE seq = ?1")?
                    .execute(params![seq.0, bucket])?;
            }
            #[cfg(feature = "postgres")]
            TxSql::Postgres(pg) => pg.get_mut().session().set_bucket(seq, bucket)?,
        }
        Ok(())
    }

    /// Sends a logged change to one site (a narrow audience on the central server).
    pub fn add_outbox(&mut self, site: &SiteId, seq: Seq) -> Result<()> {
        match &mut self.sql {
            TxSql::Sqlite(sql) => {
                sql.prepare_cached("INSERT OR IGNORE INTO outbox (site_id, seq) VALUES (?1, ?2)")?
                    .execute(params![site.as_str(), seq.0])?;
            }
            #[cfg(feature = "postgres")]
            TxSql::Postgres(pg) => pg.get_mut().session().add_outbox(site, seq)?,
        }
        Ok(())
    }

    pub fn state(&self, key: &str) -> Result<Option<String>> {
        match &self.sql {
            TxSql::Sqlite(sql) => {
                Ok(sql.query_row("SELECT value FROM state WHERE key = ?1", [key], |r| r.get(0)).optional()?)
            }
            #[cfg(feature = "postgres")]
            TxSql::Postgres(pg) => pg.borrow_mut().session().state(key),
        }
    }

    pub fn set_state(&mut self, key: &str, value: &str) -> Result<()> {
        match &mut self.sql {
            TxSql::Sqlite(sql) => {
                sql.prepare_cached(
                    "INSERT INTO state (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                )?
                .execute(params![key, value])?;
            }
            #[cfg(feature = "postgres")]
            TxSql::Postgres(pg) => pg.get_mut().session().set_state(key, value)?,
        }
        Ok(())
    }
}

/// SQLite: inserts a new record and its log entry; `None` (nothing written) if it exists.
fn sqlite_insert_new(sql: &rusqlite::Transaction<'_>, put: &Put<'_>) -> Result<Option<Seq>> {
    let seq = if put.log { Some(sqlite_append_log(sql, put)?) } else { None };
    let keys = put.keys;
    let inserted = sql
        .prepare_cached(
            "INSERT INTO record (tbl, id, store_id, other_store_id, name_id, data, log_seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (tbl, id) DO NOTHING",
        )?
        .execute(params![
            put.table,
            put.id.as_str(),
            keys.store.as_ref().map(|s| s.as_str()),
            keys.other_store.as_ref().map(|s| s.as_str()),
            keys.name.as_ref().map(|s| s.as_str()),
            put.data,
            seq.map(|s| s.0),
        ])?;
    if inserted == 0 {
        if let Some(seq) = seq {
            // Nobody has seen this entry: it is the newest, and removing it leaves no gap.
            sql.prepare_cached("DELETE FROM change_log WHERE seq = ?1")?.execute([seq.0])?;
        }
        return Ok(None);
    }
    Ok(Some(seq.unwrap_or_default()))
}

fn sqlite_append_log(sql: &rusqlite::Transaction<'_>, put: &Put<'_>) -> Result<Seq> {
    sql.prepare_cached(
        "INSERT INTO change_log (tbl, record_id, action, merge_into, origin_site, bucket) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![put.table, put.id.as_str(), put.action.code(), put.merge_into(), put.origin.as_str(), put.bucket])?;
    Ok(Seq(sql.last_insert_rowid()))
}

/// SQLite: writes a record over its current state, with a new log entry that supersedes the old
/// one when the change is logged. Returns the new entry's position, if any.
fn sqlite_write_record(sql: &rusqlite::Transaction<'_>, put: &Put<'_>, old_seq: Option<Seq>) -> Result<Option<Seq>> {
    let seq = if put.log {
        let seq = sqlite_append_log(sql, put)?;
        if let Some(old) = old_seq {
            // The record's earlier entry is superseded: a late reader needs only the latest.
            sql.prepare_cached("DELETE FROM change_log WHERE seq = ?1")?.execute([old.0])?;
        }
        Some(seq)
    } else {
        None
    };
    let keys = put.keys;
    sql.prepare_cached(
        "INSERT INTO record (tbl, id, store_id, other_store_id, name_id, data, log_seq) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (tbl, id) DO UPDATE SET store_id = excluded.store_id, other_store_id = excluded.other_store_id,
           name_id = excluded.name_id, data = excluded.data, log_seq = COALESCE(excluded.log_seq, record.log_seq)",
    )?
    .execute(params![
        put.table,
        put.id.as_str(),
        keys.store.as_ref().map(|s| s.as_str()),
        keys.other_store.as_ref().map(|s| s.as_str()),
        keys.name.as_ref().map(|s| s.as_str()),
        put.stored_data(),
        seq.map(|s| s.0),
    ])?;
    Ok(seq)
}

impl Tx<'_> {
    /// Applies a change received from the central server: written as it came, not logged for
    /// pushing (this node did not make it). Unknown tables are refused, not skipped.
    pub fn apply_received(&mut self, change: &model::Change) -> Result<()> {
        let (table, _) = self.registry.table(&change.table).ok_or_else(|| StoreError::Refused {
            table: change.table.clone(),
            id: change.id.clone(),
            refusal: Box::new(model::Refusal::UnknownTable(change.table.clone())),
        })?;
        let keys = match &change.data {
            Some(raw) => parse_keys(table, &change.id, raw.get()).map_err(|reason| StoreError::Invalid {
                table: change.table.clone(),
                id: change.id.clone(),
                reason,
            })?,
            None => self.stored_keys(&change.table, change.id.as_str())?.unwrap_or_default(),
        };
        self.put(&Put {
            table: &change.table,
            id: &change.id,
            action: &change.action,
            data: change.data.as_ref().map(|d| d.get()),
            keys: &keys,
            origin: &change.origin,
            log: false,
            bucket: None,
        })?;
        Ok(())
    }
}

impl Tx<'_> {
    /// The central server's own `site` record, written when the network is created: the one
    /// record that exists before anybody has authority (it is what says who is central). Logged
    /// into the `all` bucket like any central data. Refused once the network has a central server.
    pub fn write_founding_site(&mut self, site: &SiteId, data: &serde_json::Value) -> Result<Seq> {
        let id = RecordId::from(site.as_str());
        if !self.network.get().central.as_str().is_empty() {
            return Err(StoreError::Refused {
                table: "site".into(),
                id,
                refusal: Box::new(model::Refusal::NotAuthorised {
                    what: "the founding site record".into(),
                    writer: "a database that is not a node yet".into(),
                    site: site.clone(),
                    why: format!(" (this database's central server is `{}`)", self.network.get().central),
                }),
            });
        }
        let text = data.to_string();
        self.put(&Put {
            table: "site",
            id: &id,
            action: &Action::Upsert,
            data: Some(&text),
            keys: &RecordKeys::default(),
            origin: site,
            log: true,
            bucket: Some("all"),
        })
    }

    /// A site puts back a record whose change the central server refused: to the version the
    /// central server holds (`central_version`), or, when it holds none this site may see, to
    /// nothing (a tombstone, not logged, so it is never pushed). Only if the record still stands
    /// as the refused change left it (`refused_seq`): a later edit is pushed, and judged, on its
    /// own. Returns whether the record was put back.
    pub fn undo_refused(
        &mut self,
        table: &str,
        id: &str,
        refused_seq: Seq,
        central_version: Option<&str>,
    ) -> Result<bool> {
        let Some(current) = self.current(table, id)? else { return Ok(false) };
        if current.log_seq != Some(refused_seq) {
            return Ok(false);
        }
        let Some((def, _)) = self.registry.table(table) else { return Ok(false) };
        let record_id = RecordId::from(id);
        let invalid = |reason: String| StoreError::Invalid { table: table.to_owned(), id: record_id.clone(), reason };
        let (action, keys) = match central_version {
            Some(text) => (Action::Upsert, parse_keys(def, &record_id, text).map_err(invalid)?),
            None => (Action::Delete, self.stored_keys(table, id)?.unwrap_or_default()),
        };
        let me = SiteId::default();
        self.put(&Put {
            table,
            id: &record_id,
            action: &action,
            data: central_version,
            keys: &keys,
            origin: &me,
            log: false,
            bucket: None,
        })?;
        Ok(true)
    }

    /// How many of `origin`'s own changes come after `after` (what still waits to be pushed).
    pub fn count_changes_after(&self, after: Seq, origin: &SiteId) -> Result<u64> {
        match &self.sql {
            TxSql::Sqlite(sql) => Ok(sql
                .prepare_cached("SELECT count(*) FROM change_log WHERE seq > ?1 AND origin_site = ?2")?
                .query_row(params![after.0, origin.as_str()], |r| r.get(0))?),
            #[cfg(feature = "postgres")]
            TxSql::Postgres(pg) => pg.borrow_mut().session().count_changes_after(after, origin),
        }
    }

    /// A site restored from a backup (the central server acknowledged `acked`, beyond what this
    /// log holds): every change written after `pushed` moves up, in order, past `acked`, so that
    /// it is pushed as new and not taken for one the central server already holds, and the log
    /// goes on numbering after them. Returns how many changes moved.
    pub fn renumber_after(&mut self, pushed: Seq, acked: Seq) -> Result<u64> {
        let shift = acked.0 - pushed.0;
        if shift <= 0 {
            return Ok(0);
        }
        let moved = match &mut self.sql {
            TxSql::Sqlite(sql) => {
                // Through negative numbers: no entry takes a position another still holds.
                let moved =
                    sql.execute("UPDATE change_log SET seq = -(seq + ?2) WHERE seq > ?1", params![pushed.0, shift])?;
                sql.execute("UPDATE change_log SET seq = -seq WHERE seq < 0", [])?;
                sql.execute("UPDATE record SET log_seq = log_seq + ?2 WHERE log_seq > ?1", params![pushed.0, shift])?;
                moved as u64
            }
            #[cfg(feature = "postgres")]
            TxSql::Postgres(_) => {
                return Err(StoreError::Invalid {
                    table: "change_log".into(),
                    id: RecordId::from(""),
                    reason: "a central server's log is never renumbered".into(),
                })
            }
        };
        self.start_log_after(acked)?;
        Ok(moved)
    }
}

/// Reads a record's routing keys from its JSON text, which must be an object.
fn parse_keys(table: &model::TableDef, id: &RecordId, text: &str) -> Result<RecordKeys, String> {
    RecordKeys::parse(table, id, text).map_err(|e| e.to_string())
}

/// Like [`parse_keys`], for text typed on this node: a record with no routing keys is not read
/// by the keys parser, so it is checked to be JSON here (text from the wire was checked when
/// the batch was decoded).
fn parse_local_keys(table: &model::TableDef, id: &RecordId, text: &str) -> Result<RecordKeys, String> {
    if table.scope == model::Scope::Global {
        serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(|e| e.to_string())?;
    }
    parse_keys(table, id, text)
}
