-- Migration 6: what the dashboard shows of each site over time (central server). A row per sync
-- session: the requests of one site that follow each other within two minutes (its push and the
-- pulls after it), with when, how long the server worked on them, and records and bytes each way
-- (bytes as on the wire). And samples of each site's sync debt, taken every hour, with the end of
-- the central server's log then: the trend of what waits for a site, and when the oldest change
-- it has not received was already in the log. Times are Unix seconds. Both are pruned as they grow.
CREATE TABLE IF NOT EXISTS sync_session (
    id          INTEGER PRIMARY KEY,
    site_id     TEXT NOT NULL,
    started_at  INTEGER NOT NULL,
    ended_at    INTEGER NOT NULL,
    requests    INTEGER NOT NULL,
    pushed      INTEGER NOT NULL,
    pulled      INTEGER NOT NULL,
    bytes_up    INTEGER NOT NULL,
    bytes_down  INTEGER NOT NULL,
    busy_ms     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sync_session_by_site ON sync_session (site_id, ended_at);
CREATE TABLE IF NOT EXISTS debt_sample (
    site_id    TEXT NOT NULL,
    at         INTEGER NOT NULL,
    owed       INTEGER NOT NULL,
    owed_bytes INTEGER NOT NULL,
    log_seq    INTEGER NOT NULL,
    PRIMARY KEY (site_id, at)
);
CREATE INDEX IF NOT EXISTS debt_sample_by_time ON debt_sample (at, log_seq);
