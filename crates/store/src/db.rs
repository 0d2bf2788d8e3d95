use crate::{Result, StoreError, Write};
use model::network::TOPOLOGY_TABLES;
use model::{check_write, registry, Action, ChangeRef, Network, Op, RecordId, RecordKeys, Registry, Seq, SiteId};
use rusqlite::{params, Connection, OptionalExtension};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};

const SCHEMA: &str = include_str!("schema.sql");
const SCHEMA_VERSION: i64 = 1;

/// A node's database. Cheap to share behind an `Arc`; one writer at a time, as SQLite allows.
#[derive(Debug)]
pub struct Db {
    inner: Mutex<Inner>,
    registry: &'static Registry,
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

    fn from_connection(conn: Connection) -> Result<Db> {
        // Records are a few hundred bytes: larger pages mean fewer splits (only effective
        // before the first table is created).
        conn.pragma_update(None, "page_size", 16_384)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "cache_size", -262_144)?;
        conn.pragma_update(None, "busy_timeout", 10_000)?;
        migrate(&conn)?;
        let network = load_network(&conn)?;
        let data_version = conn.pragma_query_value(None, "data_version", |r| r.get(0)).ok();
        Ok(Db { inner: Mutex::new(Inner { conn, network, data_version }), registry: registry() })
    }

    pub fn registry(&self) -> &'static Registry {
        self.registry
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave SQLite half-written (the transaction rolls
        // back on drop), so a poisoned lock is still safe to use once the network, which may have
        // absorbed records that rolled back, is read again from the database.
        let mut guard = self.inner.lock().unwrap_or_else(|poisoned| {
            let mut guard = poisoned.into_inner();
            if let Ok(network) = load_network(&guard.conn) {
                guard.network = network;
                self.inner.clear_poison();
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
        let mut guard = self.lock();
        let inner = &mut *guard;
        let result = {
            let sql = inner.conn.transaction()?;
            let mut tx = Tx { sql, network: &mut inner.network, registry: self.registry };
            match f(&mut tx) {
                Ok(value) => tx.sql.commit().map(|()| value).map_err(StoreError::from),
                Err(e) => Err(e),
            }
        };
        if result.is_err() {
            // The transaction rolled back; the network may have absorbed records that are not
            // there any more.
            inner.network = load_network(&inner.conn)?;
        }
        result
    }

    /// Runs a read-only closure on the connection.
    pub fn read<T>(&self, f: impl FnOnce(&Connection, &Network) -> Result<T>) -> Result<T> {
        let guard = self.lock();
        f(&guard.conn, &guard.network)
    }

    /// A copy of the network as this node sees it.
    pub fn network(&self) -> Network {
        self.lock().network.clone()
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
        self.read(|conn, _| {
            Ok(conn.query_row("SELECT value FROM state WHERE key = ?1", [key], |r| r.get(0)).optional()?)
        })
    }

    pub fn set_state(&self, key: &str, value: &str) -> Result<()> {
        self.transaction(|tx| tx.set_state(key, value))
    }
}

fn migrate(conn: &Connection) -> Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version < SCHEMA_VERSION {
        conn.execute_batch(SCHEMA)?;
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
        let (tbl, id, data) = row?;
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
#[derive(Debug)]
pub struct Tx<'a> {
    pub(crate) sql: rusqlite::Transaction<'a>,
    network: &'a mut Network,
    registry: &'a Registry,
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
}

/// One record write, with its change-log entry.
#[derive(Debug)]
pub struct Put<'a> {
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

impl Tx<'_> {
    pub fn network(&self) -> &Network {
        self.network
    }

    pub fn registry(&self) -> &Registry {
        self.registry
    }

    pub fn connection(&self) -> &Connection {
        &self.sql
    }

    pub fn current(&self, table: &str, id: &str) -> Result<Option<Current>> {
        let mut stmt = self.sql.prepare_cached("SELECT data, log_seq FROM record WHERE tbl = ?1 AND id = ?2")?;
        Ok(stmt
            .query_row(params![table, id], |r| {
                Ok(Current { data: r.get(0)?, log_seq: r.get::<_, Option<i64>>(1)?.map(Seq) })
            })
            .optional()?)
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
        self.write_checked_full(write, me).map(|w| w.seq)
    }

    /// [`Tx::write_checked`], also saying what the write did and the record's keys (the central
    /// server routes its own writes with them).
    pub fn write_checked_full(&mut self, write: &Write, me: &SiteId) -> Result<Written> {
        let refused = |refusal| StoreError::Refused { table: write.table.clone(), id: write.id.clone(), refusal };
        let invalid = |reason: String| StoreError::Invalid { table: write.table.clone(), id: write.id.clone(), reason };
        let (table, _) = self
            .registry
            .table(&write.table)
            .ok_or_else(|| refused(model::Refusal::UnknownTable(write.table.clone())))?;
        let keys = match (&write.action, write.data.as_deref()) {
            (Action::Upsert, Some(text)) => parse_local_keys(table, &write.id, text)
                .map_err(|e| invalid(format!("an upsert needs the record as a JSON object: {e}")))?,
            (Action::Upsert, None) => return Err(invalid("an upsert needs the record".into())),
            _ => self.stored_keys(&write.table, write.id.as_str())?.unwrap_or_default(),
        };
        let data = match write.action {
            Action::Upsert => write.data.as_deref(),
            _ => None,
        };
        let put = Put {
            table: &write.table,
            id: &write.id,
            action: &write.action,
            data,
            keys: &keys,
            origin: me,
            log: true,
            bucket: None,
        };
        // Most writes create a record: try that first, and look the record up only if it exists.
        if write.action == Action::Upsert {
            let create = ChangeRef { table: &write.table, op: &Op::Create, keys: &keys };
            if check_write(self.registry, self.network, &create, me).is_ok() {
                if let Some(seq) = self.insert_new(&put)? {
                    return Ok(Written { seq, op: Op::Create, keys: keys.clone() });
                }
            }
        }
        let current = self.current(&write.table, write.id.as_str())?;
        let op = Self::op_for(&write.action, current.as_ref());
        check_write(self.registry, self.network, &ChangeRef { table: &write.table, op: &op, keys: &keys }, me)
            .map_err(refused)?;
        if op == Op::Update {
            // An update that re-keys a record (moves it to another store or name) needs authority
            // over the record where it stands too, or a site could take over another's record.
            if let Some(stored) = self.stored_keys(&write.table, write.id.as_str())? {
                if (&stored.store, &stored.other_store, &stored.name) != (&keys.store, &keys.other_store, &keys.name) {
                    let as_stored = ChangeRef { table: &write.table, op: &op, keys: &stored };
                    check_write(self.registry, self.network, &as_stored, me).map_err(refused)?;
                }
            }
        }
        let seq = self.put_with_current(&put, current)?;
        Ok(Written { seq, op, keys: keys.clone() })
    }

    /// Inserts a record that does not exist yet, with its change-log entry; `None` (and nothing
    /// written) when it exists already.
    fn insert_new(&mut self, put: &Put<'_>) -> Result<Option<Seq>> {
        let seq = if put.log { Some(self.append_log(put)?) } else { None };
        let keys = put.keys;
        let inserted = self
            .sql
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
                self.sql.prepare_cached("DELETE FROM change_log WHERE seq = ?1")?.execute([seq.0])?;
            }
            return Ok(None);
        }
        self.absorb(put, None)?;
        Ok(Some(seq.unwrap_or_default()))
    }

    fn append_log(&mut self, put: &Put<'_>) -> Result<Seq> {
        let merge_into = match put.action {
            Action::MergeInto(into) => Some(into.as_str()),
            _ => None,
        };
        self.sql
            .prepare_cached(
                "INSERT INTO change_log (tbl, record_id, action, merge_into, origin_site, bucket) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![put.table, put.id.as_str(), put.action.code(), merge_into, put.origin.as_str(), put.bucket])?;
        Ok(Seq(self.sql.last_insert_rowid()))
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
        self.network.absorb(put.table, put.id.as_str(), old.as_ref(), new.as_ref());
        Ok(())
    }

    /// The routing keys stored with a record.
    pub fn stored_keys(&self, table: &str, id: &str) -> Result<Option<RecordKeys>> {
        let mut stmt = self
            .sql
            .prepare_cached("SELECT store_id, other_store_id, name_id FROM record WHERE tbl = ?1 AND id = ?2")?;
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

    /// Writes a record and its change-log entry. Returns the entry's position (or the record's
    /// previous one when the change is not logged here).
    pub fn put(&mut self, put: &Put<'_>) -> Result<Seq> {
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
        let old_seq = current.as_ref().and_then(|c| c.log_seq);
        let seq = if put.log {
            let seq = self.append_log(put)?;
            if let Some(old) = old_seq {
                // The record's earlier entry is superseded: a late reader needs only the latest.
                self.sql.prepare_cached("DELETE FROM change_log WHERE seq = ?1")?.execute([old.0])?;
            }
            Some(seq)
        } else {
            None
        };
        let data = match put.action {
            Action::Upsert => put.data,
            Action::Delete | Action::MergeInto(_) => None,
        };
        let keys = put.keys;
        self.sql
            .prepare_cached(
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
                data,
                seq.map(|s| s.0),
            ])?;
        self.absorb(put, current.as_ref().and_then(|c| c.data.as_deref()))?;
        Ok(seq.or(old_seq).unwrap_or_default())
    }

    /// Puts a logged change in a shared bucket (a wide audience on the central server).
    pub fn set_bucket(&mut self, seq: Seq, bucket: &str) -> Result<()> {
        self.sql.prepare_cached("UPDATE change_log SET bucket = ?2 WHERE seq = ?1")?.execute(params![seq.0, bucket])?;
        Ok(())
    }

    /// Sends a logged change to one site (a narrow audience on the central server).
    pub fn add_outbox(&mut self, site: &SiteId, seq: Seq) -> Result<()> {
        self.sql
            .prepare_cached("INSERT OR IGNORE INTO outbox (site_id, seq) VALUES (?1, ?2)")?
            .execute(params![site.as_str(), seq.0])?;
        Ok(())
    }

    pub fn state(&self, key: &str) -> Result<Option<String>> {
        Ok(self.sql.query_row("SELECT value FROM state WHERE key = ?1", [key], |r| r.get(0)).optional()?)
    }

    pub fn set_state(&mut self, key: &str, value: &str) -> Result<()> {
        self.sql
            .prepare_cached(
                "INSERT INTO state (key, value) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?
            .execute(params![key, value])?;
        Ok(())
    }
}

impl Tx<'_> {
    /// Applies a change received from the central server: written as it came, not logged for
    /// pushing (this node did not make it). Unknown tables are refused, not skipped.
    pub fn apply_received(&mut self, change: &model::Change) -> Result<()> {
        let (table, _) = self.registry.table(&change.table).ok_or_else(|| StoreError::Refused {
            table: change.table.clone(),
            id: change.id.clone(),
            refusal: model::Refusal::UnknownTable(change.table.clone()),
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
