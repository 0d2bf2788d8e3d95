-- Migration 8: the fields the indexes of migrations 4 and 7 find (a line's parent record, an
-- invoice line's item, a transaction's kind and serial number) kept as columns beside the
-- document, read from it once per write by the storage code. An index over `json_extract` made
-- SQLite parse every line's document once per index on each write, and, since a function may
-- fail half-way through a statement, kept every statement that writes many rows from going
-- without a journal of its own (a copy of each page it changes).
ALTER TABLE record ADD COLUMN parent_id TEXT;
ALTER TABLE record ADD COLUMN item_id TEXT;
ALTER TABLE record ADD COLUMN kind TEXT;
ALTER TABLE record ADD COLUMN serial REAL;

UPDATE record SET
    parent_id = CASE WHEN json_type(data, '$.transaction_id') = 'text' THEN json_extract(data, '$.transaction_id') END,
    item_id = CASE WHEN json_type(data, '$.item_id') = 'text' THEN json_extract(data, '$.item_id') END
WHERE tbl = 'transaction_line' AND data IS NOT NULL;
UPDATE record SET parent_id = CASE WHEN json_type(data, '$.requisition_id') = 'text' THEN json_extract(data, '$.requisition_id') END
WHERE tbl = 'requisition_line' AND data IS NOT NULL;
UPDATE record SET parent_id = CASE WHEN json_type(data, '$.purchase_order_id') = 'text' THEN json_extract(data, '$.purchase_order_id') END
WHERE tbl = 'purchase_order_line' AND data IS NOT NULL;
UPDATE record SET parent_id = CASE WHEN json_type(data, '$.goods_received_id') = 'text' THEN json_extract(data, '$.goods_received_id') END
WHERE tbl = 'goods_received_line' AND data IS NOT NULL;
UPDATE record SET
    kind = CASE WHEN json_type(data, '$.type') = 'text' THEN json_extract(data, '$.type') END,
    serial = CASE WHEN json_type(data, '$.serial_number') IN ('integer', 'real') THEN json_extract(data, '$.serial_number') END
WHERE tbl = 'transaction' AND data IS NOT NULL;

DROP INDEX IF EXISTS transaction_line_parent;
DROP INDEX IF EXISTS requisition_line_parent;
DROP INDEX IF EXISTS purchase_order_line_parent;
DROP INDEX IF EXISTS goods_received_line_parent;
DROP INDEX IF EXISTS transaction_serial;
DROP INDEX IF EXISTS transaction_line_item;

CREATE INDEX IF NOT EXISTS record_parent ON record (tbl, parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS record_item ON record (item_id) WHERE item_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS transaction_serial ON record (store_id, kind, serial) WHERE serial IS NOT NULL;
