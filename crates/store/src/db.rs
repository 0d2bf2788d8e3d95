use crate::backend::{Backend, Deferred, Sql, TxSql};
use crate::{failpoint, Result, RoutedBy, StateKey, StoreError, Write};
use model::network::TOPOLOGY_TABLES;
use model::{
    check_write, recipients, registry, Action, Audience, ChangeRef, Network, Op, RecordId, RecordKeys, Refusal,
    Registry, Seq, SiteId, StoreId,
};
use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// The smallest batch [`Tx::prefetch_all`] looks up ahead. Measured on PostgreSQL over
/// loopback: a batch of 20 written record by record costs 2.2 ms, looked up and sent together
/// 2.3 ms, and 1,000 sites pushing such batches at once ingested 25,000 changes/s record by
/// record against 5,000-8,000 together; 100,000 records a transaction went from minutes to
/// 1.5 s. Small batches stay on the record-by-record path.
pub const PREFETCH_FROM: usize = 256;

/// A node's database: a SQLite file (every node), or a PostgreSQL database that several central
/// server processes share (feature `postgres`). Cheap to share behind an `Arc`. On SQLite, one
/// writer at a time, as SQLite allows, and readers beside it; on PostgreSQL, a pool of
/// connections, so transactions run side by side. Which backend answers is the business of
/// `backend/` alone.
#[derive(Debug)]
pub struct Db {
    backend: Backend,
    registry: &'static Registry,
}

impl Db {
    pub(crate) fn with_backend(backend: Backend) -> Db {
        Db { backend, registry: registry() }
    }

    pub fn registry(&self) -> &'static Registry {
        self.registry
    }

    /// Runs `f` in one transaction: all of it is committed, or none of it.
    pub fn transaction<T>(&self, f: impl FnOnce(&mut Tx<'_>) -> Result<T>) -> Result<T> {
        let value = self.backend.transaction(self.registry, |tx| {
            let value = f(tx)?;
            failpoint::hit(failpoint::BEFORE_COMMIT);
            Ok(value)
        })?;
        failpoint::hit(failpoint::AFTER_COMMIT);
        Ok(value)
    }

    /// Lets the database grow by `spare_pages` more pages and no further, as a disk that is
    /// nearly full; `None` gives it room again. Only for the simulator (SQLite; a PostgreSQL
    /// database is left as it is).
    #[cfg(feature = "failpoints")]
    pub fn limit_disk(&self, spare_pages: Option<u64>) -> Result<()> {
        self.backend.limit_disk(spare_pages)
    }

    /// Loads a new database that is thrown away if the load fails (a seed file's import):
    /// `true` writes each page once, with no journal and no wait for the disk, so a crash
    /// meanwhile leaves a file to delete, not one to trust; `false` turns the write-ahead log
    /// back on and flushes what was written. PostgreSQL is left as it is.
    pub fn bulk_load(&self, on: bool) -> Result<()> {
        self.backend.bulk_load(on)
    }

    /// Runs read-only statements outside any transaction (the queries of `queries.rs` and
    /// `sync_state.rs`).
    pub(crate) fn read<T>(&self, f: impl FnOnce(&mut dyn Sql) -> Result<T>) -> Result<T> {
        self.backend.read(f)
    }

    /// Runs a single statement that commits on its own, when the writer is free
    /// (`mark_pulled`).
    pub(crate) fn write_soon(&self, f: Deferred) -> Result<()> {
        self.backend.write_soon(f)
    }

    /// The network as this node sees it (shared: cheap to take, never waits for a writer on
    /// SQLite).
    pub fn network(&self) -> Arc<Network> {
        self.backend.network()
    }

    /// This node's own site id, set when the node was initialised.
    pub fn local_site(&self) -> Result<SiteId> {
        self.state(StateKey::LocalSite)?.map(SiteId).ok_or(StoreError::NotInitialised)
    }

    /// Writes records made on this node, each checked against `authority`, all in one
    /// transaction. Returns each write's change-log position.
    pub fn write(&self, writes: &[Write]) -> Result<Vec<Seq>> {
        let me = self.local_site()?;
        self.transaction(|tx| {
            tx.prefetch_all(writes.iter().map(|w| (w.table.as_str(), w.id.as_str())))?;
            let mut checked = |tx: &mut Tx<'_>, writes: &[Write]| tx.write_all_checked(writes, &me);
            crate::transfers::write_here(tx, &me, writes, &mut checked)
        })
    }

    /// One value of this node's state (`None`: never written).
    pub fn state(&self, key: StateKey) -> Result<Option<String>> {
        self.read(|sql| sql.state(key.as_str()))
    }

    /// Writes one value of this node's state, in a transaction of its own.
    pub fn set_state(&self, key: StateKey, value: &str) -> Result<()> {
        self.transaction(|tx| tx.set_state(key, value))
    }
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
    sql: TxSql<'a>,
    /// The network this transaction sees and updates: copied on its first topology write if
    /// others hold it too.
    network: Arc<Network>,
    registry: &'static Registry,
    /// Whether a topology record was written (on PostgreSQL, other processes are told at commit).
    topology_changed: bool,
    /// The record [`Tx::current`] found last, until the transaction writes a record.
    looked_up: RefCell<Option<Lookup>>,
    /// Records looked up together by [`Tx::prefetch`], by table and id: `None` for one that does
    /// not exist. An entry goes once its record is written.
    prefetched: HashMap<String, HashMap<String, Option<(Current, RecordKeys)>>>,
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
        f.debug_struct("Tx")
            .field("backend", &self.sql.name())
            .field("topology_changed", &self.topology_changed)
            .finish()
    }
}

/// What a committed transaction leaves behind.
pub(crate) struct Committed {
    /// The network as the transaction left it.
    pub(crate) network: Arc<Network>,
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

impl Incoming<'_> {
    /// The error that refuses this change.
    fn refused(&self, refusal: Refusal) -> StoreError {
        StoreError::Refused { table: self.table.to_owned(), id: self.id.clone(), refusal: Box::new(refusal) }
    }
}

/// An incoming change after the checks every change passes ([`Tx::write_as`]).
struct Checked<'c> {
    table: &'static model::TableDef,
    /// The document as it is stored (names of merged-away records rewritten).
    data: Option<Cow<'c, str>>,
    keys: RecordKeys,
}

impl Checked<'_> {
    fn put<'p>(&'p self, change: &Incoming<'p>, writer: &'p SiteId, log: bool) -> Put<'p> {
        Put {
            table: change.table,
            id: change.id,
            action: change.action,
            data: self.data.as_deref(),
            keys: &self.keys,
            origin: writer,
            log,
            bucket: None,
        }
    }
}

/// What the checks of a create decided: whether it is logged, and who receives it.
struct Create {
    log: bool,
    audience: Audience,
}

/// A checked change waiting in [`Tx::write_all_as`] to be inserted with others.
struct NewRecord<'c> {
    /// Its place in the batch.
    at: usize,
    change: Incoming<'c>,
    checked: Checked<'c>,
    audience: Audience,
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

    /// The routing keys as the columns store them (store, other store, name).
    pub(crate) fn key_columns(&self) -> (Option<&str>, Option<&str>, Option<&str>) {
        let keys = self.keys;
        (
            keys.store.as_ref().map(|s| s.as_str()),
            keys.other_store.as_ref().map(|s| s.as_str()),
            keys.name.as_ref().map(|s| s.as_str()),
        )
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
    pub(crate) fn new(sql: TxSql<'a>, network: Arc<Network>, registry: &'static Registry) -> Self {
        Tx {
            sql,
            network,
            registry,
            topology_changed: false,
            looked_up: RefCell::new(None),
            prefetched: HashMap::new(),
        }
    }

    /// Commits, telling other processes of a topology change (PostgreSQL).
    pub(crate) fn commit(self) -> Result<Committed> {
        let Tx { sql, network, topology_changed, .. } = self;
        sql.commit(topology_changed)?;
        Ok(Committed { network, topology_changed })
    }

    /// Runs statements of this transaction.
    pub(crate) fn sql<T>(&self, f: impl FnOnce(&mut dyn Sql) -> T) -> T {
        self.sql.with(f)
    }
}

impl Tx<'_> {
    pub fn network(&self) -> &Network {
        &self.network
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
        let found = match self.prefetched(table, id) {
            Some(found) => found.clone(),
            None => self.sql(|sql| sql.current(table, id))?,
        };
        Ok(found.map(|(current, keys)| {
            let lookup = Lookup { table: table.to_owned(), id: id.to_owned(), current: current.clone(), keys };
            *self.looked_up.borrow_mut() = Some(lookup);
            current
        }))
    }

    /// Looks up many records of one table before writing them: on PostgreSQL one round trip
    /// (the rows that exist stay locked, as [`Tx::current`] locks one), after which the checks
    /// of [`Tx::write_as`] need no look-up of their own and new records are sent together. On
    /// SQLite, where a look-up is a call in the same process, it does nothing.
    pub fn prefetch(&mut self, table: &str, ids: &[&str]) -> Result<()> {
        let Some(found) = self.sql(|sql| sql.current_many(table, ids))? else { return Ok(()) };
        let known = self.prefetched.entry(table.to_owned()).or_default();
        for id in ids {
            known.entry((*id).to_owned()).or_insert(None);
        }
        for (id, current, keys) in found {
            known.insert(id, Some((current, keys)));
        }
        Ok(())
    }

    /// [`Tx::prefetch`] for the records of a batch, a table at a time, when the batch has at
    /// least [`PREFETCH_FROM`] records. Ids beyond the limits are left to the checked write,
    /// which refuses them.
    pub fn prefetch_all<'r>(&mut self, records: impl ExactSizeIterator<Item = (&'r str, &'r str)>) -> Result<()> {
        // Not on SQLite, where it would only sort the batch's ids for nothing.
        if records.len() < PREFETCH_FROM || !self.sql(|sql| sql.looks_up_ahead()) {
            return Ok(());
        }
        let mut by_table: std::collections::BTreeMap<&str, Vec<&str>> = std::collections::BTreeMap::new();
        for (table, id) in records.filter(|(_, id)| model::limits::check_id(id).is_ok()) {
            by_table.entry(table).or_default().push(id);
        }
        for (table, ids) in by_table {
            self.prefetch(table, &ids)?;
        }
        Ok(())
    }

    /// What [`Tx::prefetch`] found for a record: `Some(None)` when it does not exist.
    fn prefetched(&self, table: &str, id: &str) -> Option<&Option<(Current, RecordKeys)>> {
        self.prefetched.get(table).and_then(|known| known.get(id))
    }

    /// Forgets what [`Tx::prefetch`] found for a record about to be written; returns it.
    fn forget_prefetched(&mut self, table: &str, id: &str) -> Option<Option<(Current, RecordKeys)>> {
        self.prefetched.get_mut(table).and_then(|known| known.remove(id))
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

    /// A write made on this node, checked against `authority` first. A new patient (or
    /// prescriber) is also made visible in the other dispensary stores of its home site.
    pub fn write_checked(&mut self, write: &Write, me: &SiteId) -> Result<Seq> {
        Ok(self.write_all_checked(std::slice::from_ref(write), me)?[0])
    }

    /// [`Tx::write_checked`] for writes made together, the new records inserted together
    /// ([`Tx::write_all_as`]). Each write's log position, in order.
    pub fn write_all_checked(&mut self, writes: &[Write], me: &SiteId) -> Result<Vec<Seq>> {
        let incoming: Vec<Incoming<'_>> = writes.iter().map(Write::incoming).collect();
        let written = self.write_all_as(&incoming, me)?;
        for (write, written) in writes.iter().zip(&written) {
            if written.op != Op::Create || !matches!(write.table.as_str(), "patient" | "prescriber") {
                continue;
            }
            let (visibility, field) = match write.table.as_str() {
                "patient" => ("name_visibility", "name_id"),
                _ => ("prescriber_visibility", "prescriber_id"),
            };
            let home = written.keys.home_store.clone();
            let stores = home.map(|home| self.network.stores_seeing_new_patients_of(&home)).unwrap_or_default();
            for store in stores {
                let row = serde_json::json!({ field: write.id, "store_id": store });
                self.write_as(Write::upsert(visibility, format!("{}@{store}", write.id), &row).incoming(), me)?;
            }
        }
        Ok(written.iter().map(|w| w.seq).collect())
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
        let checked = self.check_incoming(change)?;
        let create = self.check_create(&change, &checked, writer)?;
        self.write_checked_one(change, checked, create, writer)
    }

    /// [`Tx::write_as`] for changes by one writer, in order: each checked as it would be alone,
    /// with the records that are new written together (on SQLite, many to a statement: one by
    /// one, a statement's own cost is as much as the row's). The first refusal is the error, and
    /// the caller's transaction is not to be committed. A change of a record that turns out to
    /// exist is written after the others taken to be new with it, as an update.
    pub fn write_all_as(&mut self, changes: &[Incoming<'_>], writer: &SiteId) -> Result<Vec<Written>> {
        let mut written: Vec<Option<Written>> = vec![None; changes.len()];
        let mut new: Vec<NewRecord<'_>> = Vec::new();
        for (at, change) in changes.iter().enumerate() {
            let checked = self.check_incoming(*change)?;
            match self.check_create(change, &checked, writer)? {
                Some(create) if create.log && self.may_insert_together(change) => {
                    new.push(NewRecord { at, change: *change, checked, audience: create.audience });
                }
                create => {
                    self.insert_together(std::mem::take(&mut new), &mut written, writer)?;
                    written[at] = Some(self.write_checked_one(*change, checked, create, writer)?);
                }
            }
        }
        self.insert_together(new, &mut written, writer)?;
        Ok(written.into_iter().map(|w| w.expect("every change is written or refused")).collect())
    }

    /// Whether a change taken to be a new record may wait to be inserted with others: not one
    /// that reshapes the network (each is absorbed as it is written), nor one a prefetch found.
    fn may_insert_together(&self, change: &Incoming<'_>) -> bool {
        !TOPOLOGY_TABLES.contains(&change.table)
            && !self.prefetched.get(change.table).is_some_and(|known| known.contains_key(change.id.as_str()))
    }

    /// Inserts the checked new records of [`Tx::write_all_as`] together; one that exists is
    /// written over through the look-up path.
    fn insert_together(
        &mut self,
        new: Vec<NewRecord<'_>>,
        written: &mut [Option<Written>],
        writer: &SiteId,
    ) -> Result<()> {
        if new.is_empty() {
            return Ok(());
        }
        let puts: Vec<Put<'_>> = new.iter().map(|n| n.checked.put(&n.change, writer, true)).collect();
        self.looked_up.get_mut().take();
        let seqs = self.sql(|sql| sql.insert_new_logged(&puts))?;
        drop(puts);
        for (record, seq) in new.into_iter().zip(seqs) {
            written[record.at] = Some(match seq {
                Some(seq) => Written { seq, op: Op::Create, keys: record.checked.keys, audience: record.audience },
                None => self.write_checked_one(record.change, record.checked, None, writer)?,
            });
        }
        Ok(())
    }

    /// The checks every change passes first: the id and the document are within
    /// [`model::limits`], the table is synced, the document is a JSON object with readable
    /// routing keys. Names of merged-away records are rewritten.
    fn check_incoming<'c>(&self, change: Incoming<'c>) -> Result<Checked<'c>> {
        let refused = |refusal| change.refused(refusal);
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
                Some(self.rewrite_merged(text).map_or(Cow::Borrowed(text), Cow::Owned))
            }
            (Action::Upsert, None) => return Err(invalid("an upsert needs the record".into())),
            (Action::MergeInto(into), _) => {
                model::limits::check_id(into.as_str()).map_err(refused)?;
                None
            }
            (Action::Delete, _) => None,
        };
        let keys = match data.as_deref() {
            Some(text) => parse_local_keys(table, change.id, text)
                .map_err(|e| invalid(format!("an upsert needs the record as a JSON object: {e}")))?,
            None => self.stored_keys(change.table, change.id.as_str())?.unwrap_or_default(),
        };
        Ok(Checked { table, data, keys })
    }

    /// The checks of an upsert taken to create its record (most writes do: the record is looked
    /// up only if it turns out to exist). `None` when it is not one the writer may create, so
    /// that it is looked up and checked as it stands.
    fn check_create(&self, change: &Incoming<'_>, checked: &Checked<'_>, writer: &SiteId) -> Result<Option<Create>> {
        if *change.action != Action::Upsert {
            return Ok(None);
        }
        let create = ChangeRef { table: change.table, op: &Op::Create, keys: &checked.keys };
        if check_write(self.registry, &self.network, &create, writer).is_err() {
            return Ok(None);
        }
        let refused = |refusal| change.refused(refusal);
        self.network.check_prescription(checked.table, &checked.keys, writer).map_err(refused)?;
        self.check_not_moving(&create, change.id, writer)?;
        if matches!(change.table, "transaction_line" | "goods_received_line") {
            model::transfer::check_line(checked.data.as_deref().unwrap_or_default()).map_err(refused)?;
        }
        let log = self.travels(&create, change.id, writer)?;
        let audience = recipients(self.registry, &self.network, &create).map_err(refused)?;
        self.check_topology(&checked.put(change, writer, log)).map_err(refused)?;
        Ok(Some(Create { log, audience }))
    }

    /// Writes one checked change: inserted when it passed the checks of a create and the record
    /// is new; else looked up and checked as it stands, then written.
    fn write_checked_one(
        &mut self,
        change: Incoming<'_>,
        checked: Checked<'_>,
        create: Option<Create>,
        writer: &SiteId,
    ) -> Result<Written> {
        let refused = |refusal| change.refused(refusal);
        let (table, data, keys) = (checked.table, checked.data.as_deref(), &checked.keys);
        if let Some(create) = create {
            if let Some(seq) = self.insert_new(&checked.put(&change, writer, create.log))? {
                return Ok(Written { seq, op: Op::Create, keys: keys.clone(), audience: create.audience });
            }
        }
        let current = self.current(change.table, change.id.as_str())?;
        let op = Self::op_for(change.action, current.as_ref());
        let as_written = ChangeRef { table: change.table, op: &op, keys };
        check_write(self.registry, &self.network, &as_written, writer).map_err(refused)?;
        if op != Op::Create {
            // A change that re-keys a record (moves it to another store or name) needs authority
            // over the record where it stands too, or a site could take over another's record.
            if let Some(stored) = self.stored_keys(change.table, change.id.as_str())? {
                if (&stored.store, &stored.other_store, &stored.name) != (&keys.store, &keys.other_store, &keys.name) {
                    let as_stored = ChangeRef { table: change.table, op: &op, keys: &stored };
                    check_write(self.registry, &self.network, &as_stored, writer).map_err(refused)?;
                }
            }
        }
        if *change.action == Action::Upsert {
            self.network
                .check_home_store(change.table, change.id, keys.home_store.as_ref(), writer)
                .map_err(refused)?;
            self.network.check_prescription(table, keys, writer).map_err(refused)?;
            if table.has(model::Special::PatientMove) {
                let doc = data.and_then(|text| serde_json::from_str(text).ok()).unwrap_or_default();
                self.network.check_handover(change.id, &doc, writer).map_err(refused)?;
            }
            if table.has(model::Special::PrimaryMove) {
                let doc = data.and_then(|text| serde_json::from_str(text).ok()).unwrap_or_default();
                self.network.check_primary_handover(&doc, writer).map_err(refused)?;
            }
            if table.has(model::Special::StoreMove) {
                let doc = data.and_then(|text| serde_json::from_str(text).ok()).unwrap_or_default();
                let store = StoreId::from(change.id.as_str());
                self.network.check_store_handover(&store, &doc, writer).map_err(refused)?;
            }
            if matches!(change.table, "transaction_line" | "goods_received_line") {
                model::transfer::check_line(data.unwrap_or_default()).map_err(refused)?;
            }
        }
        self.check_not_moving(&as_written, change.id, writer)?;
        let log = self.travels(&as_written, change.id, writer)?;
        let audience = recipients(self.registry, &self.network, &as_written).map_err(refused)?;
        let put = checked.put(&change, writer, log);
        self.check_topology(&put).map_err(refused)?;
        if let Action::MergeInto(into) = change.action {
            self.check_merge(change.table, change.id, keys, into).map_err(refused)?;
        }
        let seq = self.put_with_current(&put, current)?;
        if let Action::MergeInto(into) = change.action {
            self.apply_merge(change.table, change.id, into)?;
        }
        Ok(Written { seq, op, keys: keys.clone(), audience })
    }

    /// A merge is into another record this node holds: not into itself, and for a location,
    /// one of the same store (the seeds).
    fn check_merge(&self, table: &str, id: &RecordId, keys: &RecordKeys, into: &RecordId) -> Result<(), Refusal> {
        if into == id {
            return Err(Refusal::MergeIntoItself);
        }
        let held = self.current(table, into.as_str()).ok().flatten().is_some_and(|c| c.data.is_some());
        if !held {
            return Err(Refusal::MergeTargetUnknown { table: table.to_owned(), into: into.clone() });
        }
        if table == "location" {
            let target = self.stored_keys(table, into.as_str()).ok().flatten().unwrap_or_default();
            if let (Some(from), Some(to)) = (&keys.store, &target.store) {
                if from != to {
                    return Err(Refusal::MergeAcrossStores(from.clone(), to.clone()));
                }
            }
        }
        Ok(())
    }

    /// A document that names merged-away records, rewritten to name the records they were
    /// merged into; `None` when it names none (most writes: nothing is parsed while this node
    /// knows no merge).
    fn rewrite_merged(&self, text: &str) -> Option<String> {
        if self.network.merged.is_empty() {
            return None;
        }
        let mut doc: serde_json::Value = serde_json::from_str(text).ok()?;
        model::merge::rewrite_references(&self.network, &mut doc).then(|| doc.to_string())
    }

    /// Central server: the positions of the log entries in a shared bucket (`all`,
    /// `dispensary`, `remote`), in log order.
    pub fn seqs_in_bucket(&self, bucket: &str) -> Result<Vec<Seq>> {
        self.sql(|sql| sql.seqs_in_bucket(bucket))
    }

    /// The record `table`/`id` as a typed view (`None`: not held here, deleted, or not of that
    /// shape): how processors and reports read the JSON documents.
    pub fn view<T: serde::de::DeserializeOwned>(&self, table: &str, id: &RecordId) -> Result<Option<T>> {
        Ok(self.current(table, id.as_str())?.and_then(|c| c.data).and_then(|text| serde_json::from_str(&text).ok()))
    }

    /// The live records of `table` whose `field` is `parent` (an invoice's lines, a stock line's
    /// item), by id, as typed views, found through an index: only the lookups of
    /// [`model::transfer::INDEXED_FIELDS`]; any other is a programming error.
    pub fn lines<T: serde::de::DeserializeOwned>(
        &self,
        table: &str,
        field: &str,
        parent: &RecordId,
    ) -> Result<Vec<(RecordId, T)>> {
        let lookup = model::transfer::INDEXED_FIELDS
            .iter()
            .position(|&(t, f)| (t, f) == (table, field))
            .unwrap_or_else(|| panic!("`{table}`.`{field}` has no index (model::transfer::INDEXED_FIELDS)"));
        // Sorted here: an `ORDER BY id` leads SQLite to the (tbl, id) key instead of the index.
        let mut found = self.sql(|sql| sql.records_by(lookup, parent.as_str()))?;
        found.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        Ok(found.into_iter().filter_map(|(id, data)| serde_json::from_str(&data).ok().map(|view| (id, view))).collect())
    }

    /// The highest serial number of the transactions of `store` whose `type` is `kind` (through
    /// an index; a serial that is not a number is not counted).
    pub fn max_serial(&self, store: &model::StoreId, kind: &str) -> Result<Option<i64>> {
        self.sql(|sql| sql.max_serial(store.as_str(), kind))
    }

    /// The live records of `table` whose document contains `text` (a JSON-encoded value, e.g.
    /// `"\"12345\""`): candidates for the caller to check field by field.
    pub fn records_containing(&self, table: &str, text: &str) -> Result<Vec<(RecordId, serde_json::Value)>> {
        let found = self.sql(|sql| sql.records_containing(Some(table), text))?;
        Ok(found
            .into_iter()
            .filter_map(|(_, id, data)| serde_json::from_str(&data).ok().map(|doc| (id, doc)))
            .collect())
    }

    /// Records the merge of `table`/`id` into `into`, and rewrites every record here that names
    /// the merged-away one (not logged: every node that holds them does the same when the merge
    /// reaches it, and rewrites what arrives later).
    fn apply_merge(&mut self, table: &str, id: &RecordId, into: &RecordId) -> Result<()> {
        self.sql(|sql| sql.add_merged(table, id.as_str(), into.as_str()))?;
        Arc::make_mut(&mut self.network).merged.insert((table.to_owned(), id.clone()), into.clone());
        self.topology_changed = true;
        if model::merge::fields_naming(table).next().is_none() {
            return Ok(());
        }
        let needle = serde_json::Value::String(id.0.clone()).to_string();
        let candidates = self.sql(|sql| sql.records_containing(None, &needle))?;
        let mut rewritten = 0;
        for (other_table, other_id, text) in candidates {
            let Some(new_text) = self.rewrite_merged(&text) else { continue };
            let Some((def, _)) = self.registry.table(&other_table) else { continue };
            let keys = parse_keys(def, &other_id, &new_text).unwrap_or_default();
            self.put(&Put {
                table: &other_table,
                id: &other_id,
                action: &Action::Upsert,
                data: Some(&new_text),
                keys: &keys,
                origin: &SiteId::NONE,
                log: false,
                bucket: None,
            })?;
            rewritten += 1;
        }
        tracing::info!(table, %id, %into, rewritten, "merged; the records that named it now name the record it was merged into");
        Ok(())
    }

    /// Whether a change is logged here, to travel on. What is held where it was written
    /// (`model::held_where_written`: local data, a dispensary's transactions while it does not
    /// include them in sync) is not logged, so never pushed; and no node takes it from another
    /// (a site older than this rule, or one writing behind its checks, is refused).
    fn travels(&self, change: &ChangeRef<'_>, id: &RecordId, writer: &SiteId) -> Result<bool> {
        let refused = |refusal| StoreError::Refused {
            table: change.table.to_owned(),
            id: id.clone(),
            refusal: Box::new(refusal),
        };
        let Some(why) = model::held_where_written(self.registry, &self.network, change).map_err(refused)? else {
            return Ok(true);
        };
        if self.state(StateKey::LocalSite)?.as_deref() == Some(writer.as_str()) {
            return Ok(false);
        }
        Err(refused(model::Refusal::StaysOnSite { table: change.table.to_owned(), why, site: writer.clone() }))
    }

    /// A patient moving to another home store is read-only here until the move completes
    /// (`model::check_not_moving`); what its old home site pushes is still taken. A store its
    /// site handed over is read-only for that site (`model::check_not_handed_over`).
    fn check_not_moving(&self, change: &ChangeRef<'_>, id: &RecordId, writer: &SiteId) -> Result<()> {
        if !self.network.store_moves.is_empty() || self.network.primary_move.is_some() {
            model::check_not_handed_over(self.registry, &self.network, change, writer).map_err(|refusal| {
                StoreError::Refused { table: change.table.to_owned(), id: id.clone(), refusal: Box::new(refusal) }
            })?;
        }
        if self.network.moves.is_empty() {
            return Ok(());
        }
        let here = self.state(StateKey::LocalSite)?;
        let local_edit = here.as_deref() == Some(writer.as_str()) && !self.network.is_central(writer);
        model::check_not_moving(self.registry, &self.network, change, local_edit).map_err(|refusal| {
            StoreError::Refused { table: change.table.to_owned(), id: id.clone(), refusal: Box::new(refusal) }
        })
    }

    /// A topology record must leave a network the rules can work with.
    fn check_topology(&self, put: &Put<'_>) -> Result<(), model::Refusal> {
        if !TOPOLOGY_TABLES.contains(&put.table) {
            return Ok(());
        }
        let new = put.stored_data().and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok());
        self.network.check_topology(put.table, put.id.as_str(), new.as_ref())
    }

    /// Inserts a record that does not exist yet, with its change-log entry; `None` (and nothing
    /// written) when it exists already.
    fn insert_new(&mut self, put: &Put<'_>) -> Result<Option<Seq>> {
        self.looked_up.get_mut().take();
        let inserted = match self.forget_prefetched(put.table, put.id.as_str()) {
            Some(Some(found)) => {
                // It exists: put back what was found, for the update that follows.
                self.prefetched.entry(put.table.to_owned()).or_default().insert(put.id.to_string(), Some(found));
                None
            }
            Some(None) => Some(self.sql(|sql| sql.insert_absent(put))?),
            None => self.sql(|sql| sql.insert_new(put))?,
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
        Arc::make_mut(&mut self.network).absorb(put.table, put.id.as_str(), old.as_ref(), new.as_ref());
        self.topology_changed = true;
        Ok(())
    }

    /// The routing keys stored with a record.
    pub fn stored_keys(&self, table: &str, id: &str) -> Result<Option<RecordKeys>> {
        if let Some(found) = self.looked_up.borrow().as_ref().filter(|l| l.table == table && l.id == id) {
            return Ok(Some(found.keys.clone()));
        }
        if let Some(found) = self.prefetched(table, id) {
            return Ok(found.as_ref().map(|(_, keys)| keys.clone()));
        }
        self.sql(|sql| sql.stored_keys(table, id))
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
        self.forget_prefetched(put.table, put.id.as_str());
        let old_seq = current.as_ref().and_then(|c| c.log_seq);
        let seq = self.sql(|sql| sql.write_record(put, old_seq))?;
        self.absorb(put, current.as_ref().and_then(|c| c.data.as_deref()))?;
        Ok(seq.or(old_seq).unwrap_or_default())
    }

    /// Central server: the logged, live records of a store or of a name (what a site that comes
    /// to see the store or the name must be sent).
    pub fn logged_records(&self, routed_by: RoutedBy<'_>) -> Result<Vec<(String, RecordId, RecordKeys, Seq)>> {
        self.sql(|sql| sql.logged_records(routed_by.column(), routed_by.value()))
    }

    /// Central server: moves records' log entries to the end of the log, in the order given,
    /// with the routing they had, so that they can be sent to a site whose cursor is past them;
    /// the new positions, in the same order. One call for a whole backfill: each call reads the
    /// outbox and the records once.
    pub fn relog_all(&mut self, seqs: &[Seq]) -> Result<Vec<Seq>> {
        self.sql(|sql| sql.relog_all(seqs))
    }

    /// Puts a logged change in a shared bucket (a wide audience on the central server).
    pub fn set_bucket(&mut self, seq: Seq, bucket: &str) -> Result<()> {
        self.sql(|sql| sql.set_bucket(seq, bucket))?;
        Ok(())
    }

    /// Sends a logged change to one site (a narrow audience on the central server).
    pub fn add_outbox(&mut self, site: &SiteId, seq: Seq) -> Result<()> {
        self.sql(|sql| sql.add_outbox(site, seq))?;
        Ok(())
    }

    /// [`Tx::add_outbox`] for many changes and sites at once (on SQLite, many to a statement).
    pub fn add_outbox_all(&mut self, entries: &[(&SiteId, Seq)]) -> Result<()> {
        self.sql(|sql| sql.add_outbox_all(entries))
    }

    /// One value of this node's state, as this transaction sees it.
    pub fn state(&self, key: StateKey) -> Result<Option<String>> {
        self.sql(|sql| sql.state(key.as_str()))
    }

    /// Writes one value of this node's state in this transaction.
    pub fn set_state(&mut self, key: StateKey, value: &str) -> Result<()> {
        self.sql(|sql| sql.set_state(key.as_str(), value))?;
        Ok(())
    }
}

impl Tx<'_> {
    /// Applies a change received from the central server: written as it came, not logged for
    /// pushing (this node did not make it). Unknown tables are refused, not skipped.
    pub fn apply_received(&mut self, change: &model::Change) -> Result<()> {
        let keys = self.received_keys(change)?;
        let held_before = self.held_stores(&change.table);
        let received = change.data.as_ref().map(|d| d.get());
        let rewritten = received.and_then(|text| self.rewrite_merged(text));
        let keys = match (&rewritten, self.registry.table(&change.table)) {
            (Some(text), Some((def, _))) => parse_keys(def, &change.id, text).unwrap_or(keys),
            _ => keys,
        };
        self.put(&Put {
            table: &change.table,
            id: &change.id,
            action: &change.action,
            data: rewritten.as_deref().or(received),
            keys: &keys,
            origin: &change.origin,
            log: false,
            bucket: None,
        })?;
        if let Action::MergeInto(into) = &change.action {
            self.apply_merge(&change.table, &change.id, into)?;
        }
        if let Some(held_before) = held_before {
            let held_now = self.held_stores(&change.table).unwrap_or_default();
            for store in held_before.difference(&held_now) {
                self.release_held(store)?;
            }
        }
        Ok(())
    }

    /// Applies received changes in order, as [`Tx::apply_received`] applies each (the same
    /// writes, the same refusals, one result per change), with the records that arrive new and
    /// need nothing more inserted many to a statement. `Err` is an error the transaction cannot
    /// go on after; a refused change is its own result.
    pub fn apply_received_all(&mut self, changes: &[&model::Change]) -> Result<Vec<Result<()>>> {
        let mut results = Vec::with_capacity(changes.len());
        let mut new: Vec<(&model::Change, RecordKeys)> = Vec::new();
        for change in changes {
            if !self.is_plain_upsert(change) {
                self.insert_received(&new)?;
                new.clear();
                results.push(refusal_or_fatal(self.apply_received(change))?);
                continue;
            }
            match self.received_keys(change) {
                Ok(keys) => {
                    new.push((change, keys));
                    results.push(Ok(()));
                }
                Err(e) => results.push(refusal_or_fatal(Err(e))?),
            }
        }
        self.insert_received(&new)?;
        Ok(results)
    }

    /// Whether a received change is a document written as it came and nothing else: no merge
    /// to follow, no reference to rewrite, nothing of the network or of a held store to update.
    fn is_plain_upsert(&self, change: &model::Change) -> bool {
        let Some(data) = &change.data else { return false };
        change.action == Action::Upsert
            && !TOPOLOGY_TABLES.contains(&change.table.as_str())
            && !matches!(change.table.as_str(), "store" | "store_sync")
            && !self.prefetched.get(&change.table).is_some_and(|known| known.contains_key(change.id.as_str()))
            && self.rewrite_merged(data.get()).is_none()
    }

    /// Inserts received plain upserts that are new; one that exists is written over as
    /// [`Tx::put`] writes it.
    fn insert_received(&mut self, new: &[(&model::Change, RecordKeys)]) -> Result<()> {
        if new.is_empty() {
            return Ok(());
        }
        let puts: Vec<Put<'_>> = new
            .iter()
            .map(|(change, keys)| Put {
                table: &change.table,
                id: &change.id,
                action: &change.action,
                data: change.data.as_ref().map(|d| d.get()),
                keys,
                origin: &change.origin,
                log: false,
                bucket: None,
            })
            .collect();
        self.looked_up.get_mut().take();
        let inserted = self.sql(|sql| sql.insert_new_unlogged(&puts))?;
        for (put, inserted) in puts.iter().zip(inserted) {
            if !inserted {
                let current = self.current(put.table, put.id.as_str())?;
                self.put_with_current(put, current)?;
            }
        }
        Ok(())
    }

    /// A received change's routing keys: from its document, or as stored for a delete.
    fn received_keys(&mut self, change: &model::Change) -> Result<RecordKeys> {
        let (table, _) = self.registry.table(&change.table).ok_or_else(|| StoreError::Refused {
            table: change.table.clone(),
            id: change.id.clone(),
            refusal: Box::new(model::Refusal::UnknownTable(change.table.clone())),
        })?;
        Ok(match &change.data {
            Some(raw) => parse_keys(table, &change.id, raw.get()).map_err(|reason| StoreError::Invalid {
                table: change.table.clone(),
                id: change.id.clone(),
                reason,
            })?,
            None => self.stored_keys(&change.table, change.id.as_str())?.unwrap_or_default(),
        })
    }

    /// The dispensary stores whose transactions stay on their site, when a write to `table` may
    /// change that (the store record, its sync preferences); `None` for every other table.
    fn held_stores(&self, table: &str) -> Option<std::collections::BTreeSet<StoreId>> {
        matches!(table, "store" | "store_sync").then(|| {
            let held = self.network.stores.values().filter(|s| s.dispensary && !s.include_transactions_in_sync);
            held.map(|s| s.id.clone()).collect()
        })
    }

    /// A dispensary store active here now includes its transactions in sync: what it held on
    /// this site is logged, so the next push sends it, not only what is written from now on.
    fn release_held(&mut self, store: &StoreId) -> Result<()> {
        let Some(me) = self.state(StateKey::LocalSite)?.map(SiteId) else { return Ok(()) };
        if self.network.active_site(store) != Some(&me) {
            return Ok(());
        }
        let tables: Vec<&str> = self
            .registry
            .tables()
            .filter(|(table, _)| table.has(model::Special::DispensaryStock))
            .map(|(table, _)| table.name)
            .collect();
        let mut logged = 0;
        for table in tables {
            logged += self.sql(|sql| sql.log_unlogged(table, store.as_str(), &me))?;
        }
        tracing::info!(store = %store, logged, "the store now includes its transactions in sync: what it held is sent on the next push");
        Ok(())
    }
}

impl Tx<'_> {
    /// The central server's own `site` record, written when the network is created: the one
    /// record that exists before anybody has authority (it is what says who is central). Logged
    /// into the `all` bucket like any central data. Refused once the network has a central server.
    pub fn write_founding_site(&mut self, site: &SiteId, data: &serde_json::Value) -> Result<Seq> {
        let id = RecordId::from(site.as_str());
        if self.network.has_central() {
            return Err(StoreError::Refused {
                table: "site".into(),
                id,
                refusal: Box::new(model::Refusal::NotAuthorised {
                    what: "The founding site record is written once (table `site`)".into(),
                    writer: "a database that is not a node yet".into(),
                    site: site.clone(),
                    why: format!(" (this database's central server is `{}`)", self.network.central),
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
        // Not logged, so the put has no origin to keep: no site made this change.
        let no_origin = SiteId::NONE;
        self.put(&Put {
            table,
            id: &record_id,
            action: &action,
            data: central_version,
            keys: &keys,
            origin: &no_origin,
            log: false,
            bucket: None,
        })?;
        Ok(true)
    }

    /// How many of `origin`'s own changes come after `after` (what still waits to be pushed).
    pub fn count_changes_after(&self, after: Seq, origin: &SiteId) -> Result<u64> {
        self.sql(|sql| sql.count_changes_after(after, origin))
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
        let moved = self.sql(|sql| sql.shift_log_after(pushed, shift))?;
        self.start_log_after(acked)?;
        Ok(moved)
    }
}

/// Reads a record's routing keys from its JSON text, which must be an object.
/// A refusal as the change's own result; any other error as the caller's.
fn refusal_or_fatal(result: Result<()>) -> Result<Result<()>> {
    match result {
        Err(e @ (StoreError::Refused { .. } | StoreError::Invalid { .. })) => Ok(Err(e)),
        Err(other) => Err(other),
        Ok(()) => Ok(Ok(())),
    }
}

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
