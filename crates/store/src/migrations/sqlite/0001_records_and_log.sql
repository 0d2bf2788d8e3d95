-- Outpost storage on SQLite, migration 1: records, the change log, sync bookkeeping. One schema
-- for every node; a table a node does not use stays empty.

-- Every synced record, of every synced table, as a JSON document. The keys that route it are
-- real columns, so that adding a table is a registry entry, not a migration.
CREATE TABLE IF NOT EXISTS record (
    tbl            TEXT NOT NULL,
    id             TEXT NOT NULL,
    store_id       TEXT,
    other_store_id TEXT,
    name_id        TEXT,
    data           TEXT,              -- NULL once deleted (a tombstone, so the delete can travel)
    log_seq        INTEGER,           -- this record's latest entry in this node's change log
    UNIQUE (tbl, id)
);

-- The change log: one entry per record, at the position of its latest change (an older entry
-- of the same record is removed in the same transaction, so the log is its own compaction).
-- `bucket` is set on the central server for wide audiences ('all', 'dispensary', 'remote').
CREATE TABLE IF NOT EXISTS change_log (
    seq         INTEGER PRIMARY KEY,  -- max+1: the newest entry is never deleted (an update inserts first)
    tbl         TEXT NOT NULL,
    record_id   TEXT NOT NULL,
    action      TEXT NOT NULL,
    merge_into  TEXT,
    origin_site TEXT NOT NULL,
    bucket      TEXT
);
CREATE INDEX IF NOT EXISTS change_log_bucket ON change_log (bucket, seq) WHERE bucket IS NOT NULL;

-- Central server: narrow audiences, resolved when the change arrived. A row whose log entry has
-- since been superseded is skipped by the join and removed by compaction.
CREATE TABLE IF NOT EXISTS outbox (
    site_id TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    PRIMARY KEY (site_id, seq)
) WITHOUT ROWID;

-- Central server: what each site has pushed and pulled, its credentials, when it last synced.
CREATE TABLE IF NOT EXISTS site_sync (
    site_id        TEXT PRIMARY KEY,
    password_hash  TEXT NOT NULL,
    acked_seq      INTEGER NOT NULL DEFAULT 0,
    last_push_at   TEXT,
    last_pull_at   TEXT,
    last_error     TEXT,
    hardware_id    TEXT
);

-- Changes that were refused, with the reason, kept where a person can see them (both sides).
CREATE TABLE IF NOT EXISTS rejection (
    id          INTEGER PRIMARY KEY,
    site_id     TEXT NOT NULL,
    origin_seq  INTEGER NOT NULL,
    tbl         TEXT NOT NULL,
    record_id   TEXT NOT NULL,
    action      TEXT NOT NULL,
    data        TEXT,
    reason      TEXT NOT NULL,
    at          TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    -- A pushed change is one (site, seq); received initialisation records all carry seq 0.
    UNIQUE (site_id, origin_seq, tbl, record_id)
);

-- Small named values: this node's identity, cursors, last sync, pause flags.
CREATE TABLE IF NOT EXISTS state (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
