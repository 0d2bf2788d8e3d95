-- Migration 7: what the reports read of each stock line and transaction line, as columns, so
-- that a report over a national network's million stock lines is a scan of one index, not a
-- million documents parsed (`store::reports`). The write path fills them from the document it
-- writes (`LineFacts`); other tables leave them NULL. Existing lines are filled here, a field of
-- the wrong type left NULL as the write path does.
ALTER TABLE record
    ADD COLUMN IF NOT EXISTS item_id       TEXT COLLATE "C",
    ADD COLUMN IF NOT EXISTS location_id   TEXT COLLATE "C",
    ADD COLUMN IF NOT EXISTS packs         DOUBLE PRECISION,
    ADD COLUMN IF NOT EXISTS pack_size     DOUBLE PRECISION,
    ADD COLUMN IF NOT EXISTS cost_per_pack DOUBLE PRECISION;

UPDATE record SET
    item_id = CASE WHEN json_typeof(data::json -> 'item_id') = 'string' THEN data::json ->> 'item_id' END,
    location_id = CASE WHEN tbl = 'stock_line' AND json_typeof(data::json -> 'location_id') = 'string'
                       THEN data::json ->> 'location_id' END,
    packs = CASE WHEN (data::json ->> CASE WHEN tbl = 'stock_line' THEN 'total_number_of_packs' ELSE 'number_of_packs' END)
                      ~ '^-?[0-9]{1,30}(\.[0-9]+)?([eE][-+]?[0-9]{1,2})?$'
                 AND json_typeof(data::json -> CASE WHEN tbl = 'stock_line' THEN 'total_number_of_packs' ELSE 'number_of_packs' END) = 'number'
                 THEN (data::json ->> CASE WHEN tbl = 'stock_line' THEN 'total_number_of_packs' ELSE 'number_of_packs' END)::float8 END,
    pack_size = CASE WHEN (data::json ->> 'pack_size') ~ '^-?[0-9]{1,30}(\.[0-9]+)?([eE][-+]?[0-9]{1,2})?$'
                      AND json_typeof(data::json -> 'pack_size') = 'number'
                     THEN (data::json ->> 'pack_size')::float8 END,
    cost_per_pack = CASE WHEN (data::json ->> 'cost_price_per_pack') ~ '^-?[0-9]{1,30}(\.[0-9]+)?([eE][-+]?[0-9]{1,2})?$'
                          AND json_typeof(data::json -> 'cost_price_per_pack') = 'number'
                         THEN (data::json ->> 'cost_price_per_pack')::float8 END
WHERE tbl IN ('stock_line', 'transaction_line') AND data IS NOT NULL;

-- Stock on hand and its value: every column they read is in the index (an index-only scan), in
-- the order the report gives its rows (byte order, as everywhere), so that the sums are made as
-- the scan goes, with no sort.
CREATE INDEX IF NOT EXISTS stock_line_report ON record (store_id COLLATE "C", item_id, location_id)
    INCLUDE (packs, pack_size, cost_per_pack) WHERE tbl = 'stock_line';
-- Monthly usage of an item: its lines, wherever they are.
CREATE INDEX IF NOT EXISTS transaction_line_item ON record (item_id, store_id)
    INCLUDE (packs, pack_size) WHERE tbl = 'transaction_line';
