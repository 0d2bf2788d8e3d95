-- Migration 3: the merges this node knows (a record merged into another of its table). A record
-- written or received later that still names the merged-away one is rewritten to name the one
-- it was merged into (`model::merge`).
CREATE TABLE IF NOT EXISTS merged (
    tbl     TEXT NOT NULL,
    id      TEXT NOT NULL,
    into_id TEXT NOT NULL,
    PRIMARY KEY (tbl, id)
);
