-- Outpost storage on PostgreSQL, migration 1: the same tables as on SQLite, for central servers
-- that share one database. Several server processes write at once, so nothing here is a
-- table-wide lock: positions come from a sequence, routing rows are keyed per site, and the
-- network's change counter has one row per connection (see `topology_version`).
--
-- Keys compare byte by byte (COLLATE "C"), as in SQLite, so (table, id) order, and with it
-- snapshot paging and `dump`, is the same on both backends.

-- Every synced record, of every synced table, as a JSON document (text, kept as it came), with
-- the keys that route it as real columns.
CREATE TABLE record (
    tbl            TEXT COLLATE "C" NOT NULL,
    id             TEXT COLLATE "C" NOT NULL,
    store_id       TEXT,
    other_store_id TEXT,
    name_id        TEXT,
    data           TEXT,              -- NULL once deleted (a tombstone, so the delete can travel)
    log_seq        BIGINT,            -- this record's latest entry in this node's change log
    PRIMARY KEY (tbl, id)
);

-- The change log: one entry per record, at the position of its latest change (an older entry
-- of the same record is removed in the same transaction). `seq` comes from a sequence, so
-- concurrent writers never wait for each other to number a change; a position taken by a
-- transaction that rolled back is a gap, never reused. Positions are handed out in the order
-- transactions write, not the order they commit: `xid`, the writing transaction, lets a reader
-- hold back what may still be followed by an earlier, uncommitted position.
CREATE TABLE change_log (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    xid         BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    tbl         TEXT COLLATE "C" NOT NULL,
    record_id   TEXT COLLATE "C" NOT NULL,
    action      TEXT NOT NULL,
    merge_into  TEXT,
    origin_site TEXT NOT NULL,
    bucket      TEXT
);
CREATE INDEX change_log_bucket ON change_log (bucket, xid, seq) WHERE bucket IS NOT NULL;

-- Central server: narrow audiences, resolved when the change arrived.
CREATE TABLE outbox (
    site_id TEXT COLLATE "C" NOT NULL,
    xid     BIGINT NOT NULL DEFAULT (pg_current_xact_id()::text::bigint),
    seq     BIGINT NOT NULL,
    PRIMARY KEY (site_id, xid, seq)
);

-- Central server: what each site has pushed and pulled, its credentials, when it last synced.
-- A push locks its site's row (SELECT ... FOR UPDATE), so two server processes never apply
-- the same site's batch at once.
CREATE TABLE site_sync (
    site_id        TEXT COLLATE "C" PRIMARY KEY,
    password_hash  TEXT NOT NULL,
    acked_seq      BIGINT NOT NULL DEFAULT 0,
    last_push_at   TEXT,
    last_pull_at   TEXT,
    last_error     TEXT,
    hardware_id    TEXT
);

-- Changes that were refused, with the reason, kept where a person can see them.
CREATE TABLE rejection (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site_id     TEXT COLLATE "C" NOT NULL,
    origin_seq  BIGINT NOT NULL,
    tbl         TEXT NOT NULL,
    record_id   TEXT NOT NULL,
    action      TEXT NOT NULL,
    data        TEXT,
    reason      TEXT NOT NULL,
    at          TEXT NOT NULL DEFAULT to_char(now() AT TIME ZONE 'utc', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
    -- A pushed change is one (site, seq); received initialisation records all carry seq 0.
    UNIQUE (site_id, origin_seq, tbl, record_id)
);

-- Small named values: this node's identity, cursors, pending settings.
CREATE TABLE state (
    key   TEXT COLLATE "C" PRIMARY KEY,
    value TEXT NOT NULL
);

-- How many transactions have changed the network (a write to a topology table: site, store,
-- store_sync, visibility, patient, prescriber, option). Each connection counts its own in its
-- own row, so concurrent writers never wait on one counter; the sum over the rows grows with
-- every such commit, and a server process reloads its picture of the network when it sees the
-- sum move.
CREATE TABLE topology_version (
    backend_pid INTEGER PRIMARY KEY,
    v           BIGINT NOT NULL
);

CREATE TABLE schema_version (
    version INTEGER NOT NULL
);
