-- Migration 6: what the dashboard shows of each site over time (central server). A row per sync
-- session: the requests of one site that follow each other within two minutes (its push and the
-- pulls after it), with when, how long the server worked on them, and records and bytes each way
-- (bytes as on the wire). And samples of each site's sync debt, taken every hour, with the end of
-- the central server's log then: the trend of what waits for a site, and when the oldest change
-- it has not received was already in the log. Times are Unix seconds. Both are pruned as they grow.
CREATE TABLE IF NOT EXISTS sync_session (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    site_id     TEXT NOT NULL,
    started_at  BIGINT NOT NULL,
    ended_at    BIGINT NOT NULL,
    requests    BIGINT NOT NULL,
    pushed      BIGINT NOT NULL,
    pulled      BIGINT NOT NULL,
    bytes_up    BIGINT NOT NULL,
    bytes_down  BIGINT NOT NULL,
    busy_ms     BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS sync_session_by_site ON sync_session (site_id, ended_at);
CREATE TABLE IF NOT EXISTS debt_sample (
    site_id    TEXT NOT NULL,
    at         BIGINT NOT NULL,
    owed       BIGINT NOT NULL,
    owed_bytes BIGINT NOT NULL,
    log_seq    BIGINT NOT NULL,
    PRIMARY KEY (site_id, at)
);
CREATE INDEX IF NOT EXISTS debt_sample_by_time ON debt_sample (at, log_seq);
