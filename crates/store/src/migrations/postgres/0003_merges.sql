-- Migration 3: the merges this node knows (a record merged into another of its table). A record
-- written or received later that still names the merged-away one is rewritten to name the one
-- it was merged into (`model::merge`).
CREATE TABLE IF NOT EXISTS merged (
    tbl     TEXT COLLATE "C" NOT NULL,
    id      TEXT COLLATE "C" NOT NULL,
    into_id TEXT NOT NULL,
    PRIMARY KEY (tbl, id)
);
