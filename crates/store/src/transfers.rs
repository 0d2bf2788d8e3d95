//! What a node writes when a transfer record is written or arrives: the responding half of a
//! transfer (on the central server for stores active on different sites, on the site itself for
//! two of its own stores, through the same code), the number a received invoice takes on its
//! store's site, the stock that follows a finalised invoice or goods received, and a purchase
//! order's received quantities.
//!
//! The rules are `model::transfer`; this module reads what they need and writes what they return
//! through the caller's [`WriteFn`] (the central server routes each write, a site logs it), so
//! every record here is an ordinary checked write in the caller's transaction. Each half has the
//! id of the record it answers (`transfer::responding_id`) and is made only while it does not
//! exist: a push sent again, a process killed before it answered, or a second central process
//! writing the same half at once all meet the one record with that id.

use crate::{Result, StoreError, Tx, Write};
use model::transfer::{
    self, GoodsReceived, GoodsReceivedLine, PurchaseOrder, PurchaseOrderLine, Requisition, RequisitionLine, Status,
    StockLine, Transaction, TransactionKind, TransactionLine,
};
use model::{ChangeRef, Op, RecordId, Refusal, Seq, SiteId, StoreId};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// How the caller writes: checked and logged on a site, checked, logged and routed on the
/// central server.
/// Writes come in slices: what is made together (a half's lines and header) is written
/// together.
pub type WriteFn<'f> = dyn for<'t> FnMut(&mut Tx<'t>, &[Write]) -> Result<Vec<Seq>> + 'f;

/// The tables whose records set something off (`write_here`, `respond`); a write of any other
/// table costs nothing here.
const FOLLOWED: &[&str] = &[
    "transaction",
    "transaction_line",
    "requisition",
    "requisition_line",
    "purchase_order",
    "goods_received",
    "goods_received_line",
];

/// Writes made on this node (a person's on a site, or the central server's own), in one
/// transaction, with what they set off: the checks that hold only for what is entered here (a
/// line's item is known; a finalised customer invoice has lines), the writes themselves, then
/// the stock they move and the responding half of a transfer between two stores of this node.
/// What follows is decided after the whole batch, so that a batch may hold an invoice and its
/// lines in any order.
pub fn write_here(tx: &mut Tx<'_>, me: &SiteId, writes: &[Write], write_fn: &mut WriteFn<'_>) -> Result<Vec<Seq>> {
    let mut was: BTreeMap<(&str, &RecordId), Option<Status>> = BTreeMap::new();
    for write in writes {
        check_item_known(tx, write)?;
        if matches!(write.table.as_str(), "transaction" | "goods_received")
            && !was.contains_key(&(&write.table, &write.id))
        {
            was.insert((&write.table, &write.id), stage(tx, &write.table, &write.id)?);
        }
    }
    let seqs = write_fn(tx, writes)?;
    let mut done = std::collections::BTreeSet::new();
    for write in writes.iter().filter(|w| w.data.is_some() && FOLLOWED.contains(&w.table.as_str())) {
        if !done.insert((&write.table, &write.id)) {
            continue;
        }
        check_finalised_has_lines(tx, write)?;
        let before = was.get(&(write.table.as_str(), &write.id)).copied().flatten();
        follow_stock(tx, me, &write.table, &write.id, before, write_fn)?;
        respond(tx, me, me, &write.table, &write.id, None, write_fn)?;
    }
    Ok(seqs)
}

/// What a change written here by `writer` (a pushing site on the central server, a person here,
/// or the origin of a change a site pulled) sets off on this node, `me`: the responding half of
/// a transfer this node makes ([`transfer::responder`]), a received invoice's number, and the
/// received quantities of a purchase order this node edits.
/// `doc`: the document as it was written, when the caller has it (it is not read back).
pub fn respond(
    tx: &mut Tx<'_>,
    me: &SiteId,
    writer: &SiteId,
    table: &str,
    id: &RecordId,
    doc: Option<&str>,
    write_fn: &mut WriteFn<'_>,
) -> Result<()> {
    match table {
        "transaction" => {
            let Some(invoice) = read::<Transaction>(tx, table, id, doc)? else { return Ok(()) };
            number_if_unnumbered(tx, me, id, &invoice, write_fn)?;
            invoice_written(tx, me, writer, id, &invoice, write_fn)
        }
        "transaction_line" => {
            #[derive(Deserialize)]
            struct Parent {
                transaction_id: RecordId,
            }
            let Some(Parent { transaction_id }) = read::<Parent>(tx, table, id, doc)? else { return Ok(()) };
            if tx.current("transaction", transaction_id.as_str())?.is_none() {
                return Ok(()); // a line before its invoice (the usual order): the invoice will read it
            }
            let Some(line) = read::<TransactionLine>(tx, table, id, doc)? else { return Ok(()) };
            invoice_line_written(tx, me, writer, id, &line, write_fn)
        }
        "requisition" => requisition_written(tx, me, writer, id, write_fn),
        "requisition_line" => requisition_line_written(tx, me, writer, id, write_fn),
        "purchase_order" => purchase_order_written(tx, me, writer, id, write_fn),
        "goods_received_line" => goods_received_line_written(tx, me, id, write_fn),
        _ => Ok(()),
    }
}

/// A record as a typed view: parsed from `doc` when given, else read.
fn read<T: serde::de::DeserializeOwned>(
    tx: &Tx<'_>,
    table: &str,
    id: &RecordId,
    doc: Option<&str>,
) -> Result<Option<T>> {
    match doc {
        Some(text) => Ok(serde_json::from_str(text).ok()),
        None => tx.view(table, id),
    }
}

fn refused(table: &str, id: &RecordId, refusal: Refusal) -> StoreError {
    StoreError::Refused { table: table.to_owned(), id: id.clone(), refusal: Box::new(refusal) }
}

fn upsert<T: serde::Serialize>(table: &str, id: &RecordId, view: &T) -> Result<Write> {
    let text = serde_json::to_string(view).map_err(|e| StoreError::Invalid {
        table: table.to_owned(),
        id: id.clone(),
        reason: e.to_string(),
    })?;
    Ok(Write::upsert_text(table, id.as_str(), text))
}

/// Whether this node makes the responding half of what `writer` started for `target`.
fn runs_here(tx: &Tx<'_>, me: &SiteId, writer: &SiteId, target: &StoreId) -> bool {
    transfer::responder(tx.network(), writer, target) == Some(me)
}

fn active_here(tx: &Tx<'_>, me: &SiteId, store: &StoreId) -> bool {
    // A store this site has handed over is the new site's to number and stock: it is
    // read-only here until the move completes.
    tx.network().active_site(store) == Some(me) && tx.network().handed_over_by(store, me).is_none()
}

/// Where a record stands (`status`), before a write changes it.
fn stage(tx: &Tx<'_>, table: &str, id: &RecordId) -> Result<Option<Status>> {
    #[derive(Deserialize)]
    struct Stage {
        status: Status,
    }
    Ok(tx.view::<Stage>(table, id)?.map(|s| s.status))
}

/// A line entered here is for an item this node knows (a pushed line is not checked: it may
/// arrive before an item the primary edited later).
fn check_item_known(tx: &Tx<'_>, write: &Write) -> Result<()> {
    if !matches!(
        write.table.as_str(),
        "transaction_line" | "requisition_line" | "purchase_order_line" | "goods_received_line"
    ) {
        return Ok(());
    }
    #[derive(Deserialize)]
    struct ItemOf {
        item_id: Option<RecordId>,
    }
    let Some(Ok(ItemOf { item_id: Some(item) })) = write.data.as_deref().map(serde_json::from_str::<ItemOf>) else {
        return Ok(());
    };
    let known = tx.current("item", item.as_str())?.is_some_and(|c| c.data.is_some());
    if !known && tx.network().merged_into("item", item.as_str()).is_none() {
        return Err(refused(&write.table, &write.id, Refusal::UnknownItem(item)));
    }
    Ok(())
}

/// A customer invoice finalised here has lines (a pushed header is not checked: it may arrive
/// before lines edited after it).
fn check_finalised_has_lines(tx: &Tx<'_>, write: &Write) -> Result<()> {
    if write.table != "transaction" {
        return Ok(());
    }
    let Some(invoice) = tx.view::<Transaction>(&write.table, &write.id)? else { return Ok(()) };
    if invoice.kind == TransactionKind::CustomerInvoice
        && invoice.status == Status::Finalised
        && tx.lines::<TransactionLine>("transaction_line", "transaction_id", &write.id)?.is_empty()
    {
        return Err(refused(&write.table, &write.id, Refusal::FinalisedWithoutLines));
    }
    Ok(())
}

/// Stock follows what is finalised in a store active here: a supplier invoice or a goods
/// received adds a stock line per line (one id per line, so once), a customer invoice takes its
/// lines' packs from the store's stock. Only on the step to finalised (`was`).
fn follow_stock(
    tx: &mut Tx<'_>,
    me: &SiteId,
    table: &str,
    id: &RecordId,
    was: Option<Status>,
    write_fn: &mut WriteFn<'_>,
) -> Result<()> {
    if was == Some(Status::Finalised) {
        return Ok(());
    }
    match table {
        "transaction" => {
            let Some(invoice) = tx.view::<Transaction>(table, id)? else { return Ok(()) };
            if invoice.status != Status::Finalised || !active_here(tx, me, &invoice.store_id) {
                return Ok(());
            }
            let lines = tx.lines::<TransactionLine>("transaction_line", "transaction_id", id)?;
            match invoice.kind {
                TransactionKind::SupplierInvoice => {
                    let stock: Vec<_> = lines
                        .iter()
                        .map(|(line_id, line)| transfer::received_stock(line_id, &invoice.store_id, line.into()))
                        .collect();
                    add_missing(tx, "stock_line", &stock, write_fn)?;
                }
                TransactionKind::CustomerInvoice => take_stock(tx, id, &invoice.store_id, &lines, write_fn)?,
                TransactionKind::Other => {}
            }
        }
        "goods_received" => {
            let Some(received) = tx.view::<GoodsReceived>(table, id)? else { return Ok(()) };
            if received.status != Status::Finalised || !active_here(tx, me, &received.store_id) {
                return Ok(());
            }
            let stock: Vec<_> = tx
                .lines::<GoodsReceivedLine>("goods_received_line", "goods_received_id", id)?
                .iter()
                .map(|(line_id, line)| transfer::received_stock(line_id, &received.store_id, line.into()))
                .collect();
            add_missing(tx, "stock_line", &stock, write_fn)?;
        }
        _ => {}
    }
    Ok(())
}

fn take_stock(
    tx: &mut Tx<'_>,
    invoice: &RecordId,
    store: &StoreId,
    lines: &[(RecordId, TransactionLine)],
    write_fn: &mut WriteFn<'_>,
) -> Result<()> {
    let mut held: BTreeMap<RecordId, Vec<(RecordId, StockLine)>> = BTreeMap::new();
    for (_, line) in lines {
        if held.contains_key(&line.item_id) {
            continue;
        }
        // The stock lines the invoice's lines name, read by id; when a line names none, the
        // item's stock lines in the store, found by a scan of the stock lines (slow on a large
        // store: an application names the stock line it picks from).
        let of_item: Vec<&TransactionLine> =
            lines.iter().map(|(_, l)| l).filter(|l| l.item_id == line.item_id).collect();
        let mut found = Vec::new();
        if of_item.iter().all(|l| l.stock_line_id.is_some()) {
            for named in of_item.iter().filter_map(|l| l.stock_line_id.as_ref()) {
                if let Some(stock) = tx.view::<StockLine>("stock_line", named)? {
                    found.push((named.clone(), stock));
                }
            }
        } else {
            let needle = Value::String(line.item_id.0.clone()).to_string();
            for (id, doc) in tx.records_containing("stock_line", &needle)? {
                if let Ok(stock) = serde_json::from_value::<StockLine>(doc) {
                    found.push((id, stock));
                }
            }
        }
        found.retain(|(_, stock)| stock.store_id == *store && stock.item_id == line.item_id);
        found.sort_by(|a, b| a.0.cmp(&b.0));
        found.dedup_by(|a, b| a.0 == b.0);
        held.insert(line.item_id.clone(), found);
    }
    let mut changed: BTreeMap<RecordId, StockLine> = BTreeMap::new();
    for (_, line) in lines {
        let of_item = held.get_mut(&line.item_id).expect("read above");
        let taken = transfer::take_stock(line, of_item).map_err(|r| refused("transaction", invoice, r))?;
        changed.extend(taken);
    }
    let writes = changed.iter().map(|(id, stock)| upsert("stock_line", id, stock)).collect::<Result<Vec<_>>>()?;
    write_fn(tx, &writes)?;
    Ok(())
}

/// A transaction of a store active here that arrived unnumbered (a responding half) takes the
/// store's next number for its kind: an edit of this site's own, which syncs back.
fn number_if_unnumbered(
    tx: &mut Tx<'_>,
    me: &SiteId,
    id: &RecordId,
    invoice: &Transaction,
    write_fn: &mut WriteFn<'_>,
) -> Result<()> {
    if invoice.serial_number != Some(transfer::UNNUMBERED) || !active_here(tx, me, &invoice.store_id) {
        return Ok(());
    }
    let serial = next_serial(tx, &invoice.store_id, invoice.kind)?;
    let numbered = Transaction { serial_number: Some(serial), ..invoice.clone() };
    write_fn(tx, &[upsert("transaction", id, &numbered)?])?;
    tracing::info!(invoice = %id, serial, "numbered a transaction made for this store by a transfer");
    Ok(())
}

/// The next serial number of a kind of transaction in a store: one more than the highest.
fn next_serial(tx: &Tx<'_>, store: &StoreId, kind: TransactionKind) -> Result<i64> {
    let kind = serde_json::to_value(kind).ok().and_then(|k| k.as_str().map(str::to_owned)).unwrap_or_default();
    Ok(tx.max_serial(store, &kind)?.unwrap_or(0).max(0) + 1)
}

/// The serial a half made by this node for `store` carries: the store's next, when the store is
/// active here (the same-site case); else unnumbered, for the store's site to number.
fn serial_for(tx: &Tx<'_>, me: &SiteId, store: &StoreId, kind: TransactionKind) -> Result<i64> {
    if active_here(tx, me, store) {
        next_serial(tx, store, kind)
    } else {
        Ok(transfer::UNNUMBERED)
    }
}

fn invoice_written(
    tx: &mut Tx<'_>,
    me: &SiteId,
    writer: &SiteId,
    id: &RecordId,
    invoice: &Transaction,
    write_fn: &mut WriteFn<'_>,
) -> Result<()> {
    let Some(to) = invoice.other_store_id.clone() else { return Ok(()) };
    if invoice.kind != TransactionKind::CustomerInvoice || !runs_here(tx, me, writer, &to) {
        return Ok(());
    }
    let is_internal = invoice.purchase_order_id.is_some();
    if !is_internal && !transfer::is_stock_transfer(invoice) {
        return Ok(());
    }
    let lines = tx.lines::<TransactionLine>("transaction_line", "transaction_id", id)?;
    if is_internal {
        // An internal requisition's invoice: its lines make goods-received lines as they come,
        // and finalising it makes the goods received.
        for (line_id, line) in &lines {
            goods_received_line_for(tx, me, id, invoice, line_id, line, write_fn)?;
        }
        if let Some((received_id, received)) = transfer::goods_received_for(id, invoice) {
            if tx.current("goods_received", received_id.as_str())?.is_none() {
                write_fn(tx, &[upsert("goods_received", &received_id, &received)?])?;
                tracing::info!(invoice = %id, goods_received = %received_id, "an internal requisition's goods received is made");
            }
        }
        return Ok(());
    }
    let half_id = transfer::responding_id(id);
    if tx.current("transaction", half_id.as_str())?.is_some() {
        // Made already (exactly once); a line that reached here after it joins it.
        let made: Vec<_> =
            lines.iter().map(|(line_id, line)| transfer::supplier_invoice_line(&half_id, &to, line_id, line)).collect();
        return add_missing(tx, "transaction_line", &made, write_fn);
    }
    let request = match &invoice.requisition_id {
        Some(response) => tx.view::<Requisition>("requisition", response)?.and_then(|r| r.linked_requisition_id),
        None => None,
    };
    let serial = serial_for(tx, me, &to, TransactionKind::SupplierInvoice)?;
    let Some(half) = transfer::supplier_invoice_for(id, invoice, &lines, request, serial) else { return Ok(()) };
    let mut writes = half
        .lines
        .iter()
        .map(|(line_id, line)| upsert("transaction_line", line_id, line))
        .collect::<Result<Vec<_>>>()?;
    writes.push(upsert("transaction", &half.id, &half.header)?);
    if tx.network().is_central(me) {
        let message = json!({
            "receiving_store_id": invoice.store_id,
            "type": "transfer_log",
            "transaction_id": id,
            "body": format!("supplier invoice `{}` made in store `{to}` for customer invoice `{id}` ({} lines)", half.id, half.lines.len()),
        });
        writes.push(Write::upsert("message", format!("{id}:log"), &message));
    }
    write_fn(tx, &writes)?;
    tracing::info!(invoice = %id, half = %half.id, lines = half.lines.len(), "a stock transfer's supplier invoice is made");
    Ok(())
}

/// Writes the records that do not exist yet, together (a half's lines, the stock a received
/// line adds: each is made once; edits after that are its store's).
fn add_missing<T: serde::Serialize>(
    tx: &mut Tx<'_>,
    table: &str,
    records: &[(RecordId, T)],
    write_fn: &mut WriteFn<'_>,
) -> Result<()> {
    let mut writes = Vec::new();
    for (id, record) in records {
        if tx.current(table, id.as_str())?.is_none() {
            writes.push(upsert(table, id, record)?);
        }
    }
    if !writes.is_empty() {
        write_fn(tx, &writes)?;
    }
    Ok(())
}

fn invoice_line_written(
    tx: &mut Tx<'_>,
    me: &SiteId,
    writer: &SiteId,
    id: &RecordId,
    line: &TransactionLine,
    write_fn: &mut WriteFn<'_>,
) -> Result<()> {
    let Some(invoice) = tx.view::<Transaction>("transaction", &line.transaction_id)? else { return Ok(()) };
    let Some(to) = invoice.other_store_id.clone() else { return Ok(()) };
    if invoice.kind != TransactionKind::CustomerInvoice || !runs_here(tx, me, writer, &to) {
        return Ok(());
    }
    if invoice.purchase_order_id.is_some() {
        return goods_received_line_for(tx, me, &line.transaction_id, &invoice, id, line, write_fn);
    }
    let half_id = transfer::responding_id(&line.transaction_id);
    if transfer::is_stock_transfer(&invoice) && tx.current("transaction", half_id.as_str())?.is_some() {
        let made = transfer::supplier_invoice_line(&half_id, &to, id, line);
        add_missing(tx, "transaction_line", std::slice::from_ref(&made), write_fn)?;
    }
    Ok(())
}

/// The goods-received line matching a line of an internal requisition's invoice, made once,
/// when the line first reaches the node that makes it (the central server never edits a half
/// after making it).
fn goods_received_line_for(
    tx: &mut Tx<'_>,
    me: &SiteId,
    invoice_id: &RecordId,
    invoice: &Transaction,
    line_id: &RecordId,
    line: &TransactionLine,
    write_fn: &mut WriteFn<'_>,
) -> Result<()> {
    let Some(order) = &invoice.purchase_order_id else { return Ok(()) };
    if tx.current("goods_received_line", transfer::responding_id(line_id).as_str())?.is_some() {
        return Ok(());
    }
    let order_lines = tx.lines::<PurchaseOrderLine>("purchase_order_line", "purchase_order_id", order)?;
    let Some(made) = transfer::goods_received_line_for(invoice_id, invoice, line_id, line, &order_lines) else {
        return Ok(());
    };
    write_fn(tx, &[upsert("goods_received_line", &made.0, &made.1)?])?;
    // Where this node edits the order too (the primary, or one site), it is updated now.
    goods_received_line_written(tx, me, &made.0, write_fn)
}

fn requisition_written(
    tx: &mut Tx<'_>,
    me: &SiteId,
    writer: &SiteId,
    id: &RecordId,
    write_fn: &mut WriteFn<'_>,
) -> Result<()> {
    let Some(request) = tx.view::<Requisition>("requisition", id)? else { return Ok(()) };
    let Some(to) = request.other_store_id.clone() else { return Ok(()) };
    if !runs_here(tx, me, writer, &to) {
        return Ok(());
    }
    let lines = tx.lines::<RequisitionLine>("requisition_line", "requisition_id", id)?;
    let Some(half) = transfer::response_requisition_for(id, &request, &lines) else { return Ok(()) };
    let exists = tx.current("requisition", half.id.as_str())?.is_some();
    add_missing(tx, "requisition_line", &half.lines, write_fn)?;
    if !exists {
        write_fn(tx, &[upsert("requisition", &half.id, &half.header)?])?;
        tracing::info!(request = %id, response = %half.id, lines = half.lines.len(), "a request requisition's response is made");
    }
    Ok(())
}

fn requisition_line_written(
    tx: &mut Tx<'_>,
    me: &SiteId,
    writer: &SiteId,
    id: &RecordId,
    write_fn: &mut WriteFn<'_>,
) -> Result<()> {
    let Some(line) = tx.view::<RequisitionLine>("requisition_line", id)? else { return Ok(()) };
    let Some(request) = tx.view::<Requisition>("requisition", &line.requisition_id)? else { return Ok(()) };
    let Some(to) = request.other_store_id.clone() else { return Ok(()) };
    let half_id = transfer::responding_id(&line.requisition_id);
    if transfer::response_requisition_for(&line.requisition_id, &request, &[]).is_some()
        && runs_here(tx, me, writer, &to)
        && tx.current("requisition", half_id.as_str())?.is_some()
    {
        let made = transfer::response_line(&half_id, &to, id, &line);
        add_missing(tx, "requisition_line", std::slice::from_ref(&made), write_fn)?;
    }
    Ok(())
}

fn purchase_order_written(
    tx: &mut Tx<'_>,
    me: &SiteId,
    writer: &SiteId,
    id: &RecordId,
    write_fn: &mut WriteFn<'_>,
) -> Result<()> {
    let Some(order) = tx.view::<PurchaseOrder>("purchase_order", id)? else { return Ok(()) };
    let Some(supplier) = order.other_store_id.clone() else { return Ok(()) };
    if !runs_here(tx, me, writer, &supplier) {
        return Ok(());
    }
    let serial = serial_for(tx, me, &supplier, TransactionKind::CustomerInvoice)?;
    let Some((invoice_id, invoice)) = transfer::invoice_for_purchase_order(id, &order, serial) else { return Ok(()) };
    if tx.current("transaction", invoice_id.as_str())?.is_none() {
        write_fn(tx, &[upsert("transaction", &invoice_id, &invoice)?])?;
        tracing::info!(order = %id, invoice = %invoice_id, "an internal requisition's customer invoice is made");
    }
    Ok(())
}

/// A goods-received line written or arrived where its purchase order is edited (the primary with
/// centralised procurement, else the ordering store's site) updates the order line's received
/// quantity: there only, so the order stays the editing site's own record.
fn goods_received_line_written(tx: &mut Tx<'_>, me: &SiteId, id: &RecordId, write_fn: &mut WriteFn<'_>) -> Result<()> {
    let Some(line) = tx.view::<GoodsReceivedLine>("goods_received_line", id)? else { return Ok(()) };
    let Some(order_line_id) = &line.purchase_order_line_id else { return Ok(()) };
    let Some(mut order_line) = tx.view::<PurchaseOrderLine>("purchase_order_line", order_line_id)? else {
        return Ok(());
    };
    let Some(keys) = tx.stored_keys("purchase_order_line", order_line_id.as_str())? else { return Ok(()) };
    let edit = ChangeRef { table: "purchase_order_line", op: &Op::Update, keys: &keys };
    let editable = model::check_write(tx.registry(), tx.network(), &edit, me).is_ok()
        && model::check_not_handed_over(tx.registry(), tx.network(), &edit, me).is_ok();
    if !editable {
        return Ok(());
    }
    let received =
        tx.lines::<GoodsReceivedLine>("goods_received_line", "goods_received_id", &line.goods_received_id)?;
    let quantity = transfer::received_quantity(order_line_id, &received);
    if order_line.received_quantity != quantity {
        order_line.received_quantity = quantity;
        write_fn(tx, &[upsert("purchase_order_line", order_line_id, &order_line)?])?;
    }
    Ok(())
}
