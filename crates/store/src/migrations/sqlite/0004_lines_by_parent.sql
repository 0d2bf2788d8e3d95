-- Migration 4: a line's parent record (an invoice's lines, a requisition's, a purchase order's, a
-- goods received's) found by an index, not a scan: the transfer processors read an invoice's
-- lines on every finalised invoice. Partial expression indexes over the document, so that no
-- write path changes and records of other tables pay nothing. `model::LINE_TABLES` is the list.
CREATE INDEX IF NOT EXISTS transaction_line_parent ON record (json_extract(data, '$.transaction_id')) WHERE tbl = 'transaction_line';
CREATE INDEX IF NOT EXISTS requisition_line_parent ON record (json_extract(data, '$.requisition_id')) WHERE tbl = 'requisition_line';
CREATE INDEX IF NOT EXISTS purchase_order_line_parent ON record (json_extract(data, '$.purchase_order_id')) WHERE tbl = 'purchase_order_line';
CREATE INDEX IF NOT EXISTS goods_received_line_parent ON record (json_extract(data, '$.goods_received_id')) WHERE tbl = 'goods_received_line';
-- A store's highest serial number of a kind of transaction, read when a received invoice is
-- numbered: the last matching entry of this index (text serials sort after numbers, and are
-- skipped by the query's range).
CREATE INDEX IF NOT EXISTS transaction_serial ON record (store_id, json_extract(data, '$.type'), json_extract(data, '$.serial_number')) WHERE tbl = 'transaction';
