-- Migration 7: monthly usage of an item finds its invoice lines by an index (`store::reports`).
-- On SQLite the reports read the documents themselves (a central server on SQLite holds a small
-- network); PostgreSQL keeps what they read as columns.
CREATE INDEX IF NOT EXISTS transaction_line_item ON record (json_extract(data, '$.item_id')) WHERE tbl = 'transaction_line';
