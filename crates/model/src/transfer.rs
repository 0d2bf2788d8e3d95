//! Typed views of the records transfers need, and the rules that make the responding half of a
//! transfer. The JSON documents stay the storage; these views are how processors (and reports)
//! read and write them. Fields a view does not name are kept as they are.

use crate::ids::{RecordId, SiteId, StoreId};
use crate::network::Network;
use crate::rules::Refusal;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What a transaction is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransactionKind {
    CustomerInvoice,
    SupplierInvoice,
    #[serde(other)]
    Other,
}

/// Where a transaction, a requisition, a purchase order or a goods received stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    New,
    OnHold,
    Confirmed,
    Finalised,
    #[serde(other)]
    Other,
}

/// A `transaction` record: a customer invoice (goods going out) or a supplier invoice (goods
/// coming in).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Transaction {
    pub store_id: StoreId,
    /// The other party's store, for a transfer between stores.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_store_id: Option<StoreId>,
    #[serde(rename = "type")]
    pub kind: TransactionKind,
    pub status: Status,
    /// The store's own number for it; -1 on a responding half until its store's site numbers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<i64>,
    /// On a responding half: the initiating transaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linked_transaction_id: Option<RecordId>,
    /// The requisition it fulfils: on a customer invoice, the response requisition; on the
    /// supplier invoice it makes, the request requisition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requisition_id: Option<RecordId>,
    /// On the customer invoice an internal requisition makes: the purchase order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purchase_order_id: Option<RecordId>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// A `transaction_line` record: one item, batch and quantity of a transaction. Read by hand
/// (below): the most read view, and `flatten` buffers a whole document before reading it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TransactionLine {
    pub store_id: StoreId,
    pub transaction_id: RecordId,
    pub item_id: RecordId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_date: Option<String>,
    #[serde(default = "one")]
    pub pack_size: f64,
    pub number_of_packs: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_price_per_pack: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sell_price_per_pack: Option<f64>,
    /// On a customer invoice: the stock line it takes from (else the item's earliest expiring).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stock_line_id: Option<RecordId>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

impl<'de> Deserialize<'de> for TransactionLine {
    /// As `#[derive(Deserialize)]` would with its attributes: the named fields typed (`pack_size`
    /// one when absent, the optional ones `None`), every other field kept in `rest`.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Line;
        impl<'de> serde::de::Visitor<'de> for Line {
            type Value = TransactionLine;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a transaction line")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<TransactionLine, A::Error> {
                use serde::de::Error;
                let (mut store_id, mut transaction_id, mut item_id, mut number_of_packs) = (None, None, None, None);
                let (mut batch, mut expiry_date, mut pack_size, mut stock_line_id) = (None, None, None, None);
                let (mut cost_price_per_pack, mut sell_price_per_pack, mut rest) = (None, None, Map::new());
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    match key.as_ref() {
                        "store_id" => store_id = Some(map.next_value()?),
                        "transaction_id" => transaction_id = Some(map.next_value()?),
                        "item_id" => item_id = Some(map.next_value()?),
                        "number_of_packs" => number_of_packs = Some(map.next_value()?),
                        "pack_size" => pack_size = Some(map.next_value()?),
                        "batch" => batch = map.next_value()?,
                        "expiry_date" => expiry_date = map.next_value()?,
                        "cost_price_per_pack" => cost_price_per_pack = map.next_value()?,
                        "sell_price_per_pack" => sell_price_per_pack = map.next_value()?,
                        "stock_line_id" => stock_line_id = map.next_value()?,
                        _ => {
                            rest.insert(key.into_owned(), map.next_value()?);
                        }
                    }
                }
                Ok(TransactionLine {
                    store_id: store_id.ok_or_else(|| A::Error::missing_field("store_id"))?,
                    transaction_id: transaction_id.ok_or_else(|| A::Error::missing_field("transaction_id"))?,
                    item_id: item_id.ok_or_else(|| A::Error::missing_field("item_id"))?,
                    batch,
                    expiry_date,
                    pack_size: pack_size.unwrap_or_else(one),
                    number_of_packs: number_of_packs.ok_or_else(|| A::Error::missing_field("number_of_packs"))?,
                    cost_price_per_pack,
                    sell_price_per_pack,
                    stock_line_id,
                    rest,
                })
            }
        }
        deserializer.deserialize_map(Line)
    }
}

/// What a requisition is: a store's request to its supplier, or the supplier's response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequisitionKind {
    Request,
    Response,
    #[serde(other)]
    Other,
}

/// A `requisition` record: a request for stock from a supplying store, or its response.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Requisition {
    pub store_id: StoreId,
    /// On a request: the supplying store; on a response: the requesting store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_store_id: Option<StoreId>,
    #[serde(rename = "type")]
    pub kind: RequisitionKind,
    pub status: Status,
    /// On a response: the request it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linked_requisition_id: Option<RecordId>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// A `requisition_line` record: one item asked for.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequisitionLine {
    pub store_id: StoreId,
    pub requisition_id: RecordId,
    pub item_id: RecordId,
    pub requested_quantity: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supply_quantity: Option<f64>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// A `purchase_order` record: an order of store B; with `other_store_id`, to another store A of
/// the network (an internal requisition).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PurchaseOrder {
    pub store_id: StoreId,
    /// The supplying store, for an internal requisition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_store_id: Option<StoreId>,
    pub status: Status,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// A `purchase_order_line` record: one item ordered, and how much of it has been received.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PurchaseOrderLine {
    pub store_id: StoreId,
    pub purchase_order_id: RecordId,
    pub item_id: RecordId,
    pub quantity: f64,
    #[serde(default)]
    pub received_quantity: f64,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// A `goods_received` record: what store B receives against a purchase order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GoodsReceived {
    pub store_id: StoreId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_store_id: Option<StoreId>,
    pub status: Status,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purchase_order_id: Option<RecordId>,
    /// The supplying store's customer invoice it was made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linked_transaction_id: Option<RecordId>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// A `goods_received_line` record: one item, batch and quantity received.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GoodsReceivedLine {
    pub store_id: StoreId,
    pub goods_received_id: RecordId,
    pub item_id: RecordId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purchase_order_line_id: Option<RecordId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_date: Option<String>,
    #[serde(default = "one")]
    pub pack_size: f64,
    pub number_of_packs: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_price_per_pack: Option<f64>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// A `stock_line` record: packs of one batch of an item held in a store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StockLine {
    pub store_id: StoreId,
    pub item_id: RecordId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_date: Option<String>,
    #[serde(default = "one")]
    pub pack_size: f64,
    pub total_number_of_packs: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_price_per_pack: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sell_price_per_pack: Option<f64>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

fn one() -> f64 {
    1.0
}

/// The lookups by a field of a document that have an index (storage migration 4): a line's
/// parent record. Processors read an invoice's lines on every finalised invoice, so these must
/// not be scans. (Stock lines have none: they are the most written records, and an invoice line
/// names the stock line it takes from.)
pub const INDEXED_FIELDS: &[(&str, &str)] = &[
    ("transaction_line", "transaction_id"),
    ("requisition_line", "requisition_id"),
    ("purchase_order_line", "purchase_order_id"),
    ("goods_received_line", "goods_received_id"),
];

/// The serial number a responding half carries until its store's site numbers it (the seeds).
pub const UNNUMBERED: i64 = -1;

/// Checks a line of a transaction or a goods received as it is written (its JSON text, read
/// once, for the two quantities only): a quantity is never negative, a pack holds something. A
/// document that is not a line at all (fields missing) is left to the caller.
pub fn check_line(text: &str) -> Result<(), Refusal> {
    #[derive(Deserialize)]
    struct Quantities {
        #[serde(default = "one")]
        pack_size: f64,
        number_of_packs: f64,
    }
    let Ok(line) = serde_json::from_str::<Quantities>(text) else { return Ok(()) };
    let bad = |why: &str| Err(Refusal::BadLine { why: why.to_owned() });
    if line.number_of_packs.is_nan() || line.number_of_packs < 0.0 {
        return bad("its number of packs is negative");
    }
    if line.pack_size.is_nan() || line.pack_size <= 0.0 {
        return bad("its pack size is not above zero");
    }
    Ok(())
}

/// The id of the responding half of the record `initiating` (and of each of its lines): one
/// id for one initiating record, so that the half is made exactly once.
pub fn responding_id(initiating: &RecordId) -> RecordId {
    RecordId(format!("{initiating}:received"))
}

/// The id of the stock line a received line adds: one per line, so stock is added once.
pub fn stock_line_id(line: &RecordId) -> RecordId {
    RecordId(format!("{line}:stock"))
}

/// Which node makes the responding half of a transfer that `initiator` started for store
/// `target`: the initiator itself when `target` is active there too (the same-site case, at
/// once), else the central server, which routes it. `None` when `target` is not active
/// anywhere the network knows.
pub fn responder<'n>(network: &'n Network, initiator: &'n SiteId, target: &StoreId) -> Option<&'n SiteId> {
    let site = network.active_site(target)?;
    Some(if site == initiator { initiator } else { &network.central })
}

/// The responding half of a transfer: its header and lines, with their ids.
#[derive(Clone, Debug, PartialEq)]
pub struct Half<H, L> {
    pub id: RecordId,
    pub header: H,
    pub lines: Vec<(RecordId, L)>,
}

/// Whether a customer invoice is a stock transfer to another store: finalised, for a store,
/// and not itself a responding half or an internal requisition's invoice.
pub fn is_stock_transfer(invoice: &Transaction) -> bool {
    invoice.kind == TransactionKind::CustomerInvoice
        && invoice.status == Status::Finalised
        && invoice.other_store_id.is_some()
        && invoice.linked_transaction_id.is_none()
        && invoice.purchase_order_id.is_none()
}

/// The responding half of a stock transfer (the seeds): a finalised customer invoice from store
/// A to store B makes a supplier invoice in B, on hold, numbered `serial` (-1 until B's site
/// numbers it), with the same lines. `request`: the request requisition the invoice fulfils,
/// which the supplier invoice is linked to. `None` when `invoice` is not a stock transfer.
pub fn supplier_invoice_for(
    id: &RecordId,
    invoice: &Transaction,
    lines: &[(RecordId, TransactionLine)],
    request: Option<RecordId>,
    serial: i64,
) -> Option<Half<Transaction, TransactionLine>> {
    if !is_stock_transfer(invoice) {
        return None;
    }
    let to = invoice.other_store_id.clone()?;
    let half_id = responding_id(id);
    let header = Transaction {
        store_id: to.clone(),
        other_store_id: Some(invoice.store_id.clone()),
        kind: TransactionKind::SupplierInvoice,
        status: Status::OnHold,
        serial_number: Some(serial),
        linked_transaction_id: Some(id.clone()),
        requisition_id: request,
        purchase_order_id: None,
        rest: Map::new(),
    };
    let lines = lines.iter().map(|(line_id, line)| supplier_invoice_line(&half_id, &to, line_id, line)).collect();
    Some(Half { id: half_id, header, lines })
}

/// A line of the supplier invoice `half_id` in store `to`, for the customer invoice's line.
pub fn supplier_invoice_line(
    half_id: &RecordId,
    to: &StoreId,
    line_id: &RecordId,
    line: &TransactionLine,
) -> (RecordId, TransactionLine) {
    let copy =
        TransactionLine { store_id: to.clone(), transaction_id: half_id.clone(), stock_line_id: None, ..line.clone() };
    (responding_id(line_id), copy)
}

/// The response to a finalised request requisition of store B: a response requisition in the
/// supplying store A (a customer requisition, as A's users see it), new, with the same lines.
pub fn response_requisition_for(
    id: &RecordId,
    request: &Requisition,
    lines: &[(RecordId, RequisitionLine)],
) -> Option<Half<Requisition, RequisitionLine>> {
    if request.kind != RequisitionKind::Request || request.status != Status::Finalised {
        return None;
    }
    let to = request.other_store_id.clone()?;
    let half_id = responding_id(id);
    let header = Requisition {
        store_id: to.clone(),
        other_store_id: Some(request.store_id.clone()),
        kind: RequisitionKind::Response,
        status: Status::New,
        linked_requisition_id: Some(id.clone()),
        rest: Map::new(),
    };
    let lines = lines.iter().map(|(line_id, line)| response_line(&half_id, &to, line_id, line)).collect();
    Some(Half { id: half_id, header, lines })
}

/// A line of the response requisition `half_id` in store `to`, for the request's line.
pub fn response_line(
    half_id: &RecordId,
    to: &StoreId,
    line_id: &RecordId,
    line: &RequisitionLine,
) -> (RecordId, RequisitionLine) {
    let copy = RequisitionLine {
        store_id: to.clone(),
        requisition_id: half_id.clone(),
        supply_quantity: None,
        ..line.clone()
    };
    (responding_id(line_id), copy)
}

/// The first stage of an internal requisition: a purchase order of store B, confirmed, for a
/// supplying store A of the network, makes a customer invoice in A (new, unnumbered until A's
/// site numbers it) to fill it.
pub fn invoice_for_purchase_order(
    id: &RecordId,
    order: &PurchaseOrder,
    serial: i64,
) -> Option<(RecordId, Transaction)> {
    if !matches!(order.status, Status::Confirmed | Status::Finalised) {
        return None;
    }
    let supplier = order.other_store_id.clone()?;
    let invoice = Transaction {
        store_id: supplier,
        other_store_id: Some(order.store_id.clone()),
        kind: TransactionKind::CustomerInvoice,
        status: Status::New,
        serial_number: Some(serial),
        linked_transaction_id: None,
        requisition_id: None,
        purchase_order_id: Some(id.clone()),
        rest: Map::new(),
    };
    Some((responding_id(id), invoice))
}

/// The second stage: a line of the internal requisition's customer invoice makes the matching
/// goods-received line in the ordering store, against the purchase-order line of its item.
pub fn goods_received_line_for(
    invoice_id: &RecordId,
    invoice: &Transaction,
    line_id: &RecordId,
    line: &TransactionLine,
    order_lines: &[(RecordId, PurchaseOrderLine)],
) -> Option<(RecordId, GoodsReceivedLine)> {
    let to = invoice.other_store_id.clone()?;
    invoice.purchase_order_id.as_ref()?;
    let order_line = order_lines.iter().find(|(_, ordered)| ordered.item_id == line.item_id).map(|(id, _)| id.clone());
    let received = GoodsReceivedLine {
        store_id: to,
        goods_received_id: responding_id(invoice_id),
        item_id: line.item_id.clone(),
        purchase_order_line_id: order_line,
        batch: line.batch.clone(),
        expiry_date: line.expiry_date.clone(),
        pack_size: line.pack_size,
        number_of_packs: line.number_of_packs,
        cost_price_per_pack: line.cost_price_per_pack.or(line.sell_price_per_pack),
        rest: Map::new(),
    };
    Some((responding_id(line_id), received))
}

/// When store A finalises the internal requisition's customer invoice, a goods received record
/// appears in the ordering store B (its lines were made as the invoice's were).
pub fn goods_received_for(invoice_id: &RecordId, invoice: &Transaction) -> Option<(RecordId, GoodsReceived)> {
    if invoice.kind != TransactionKind::CustomerInvoice || invoice.status != Status::Finalised {
        return None;
    }
    let received = GoodsReceived {
        store_id: invoice.other_store_id.clone()?,
        other_store_id: Some(invoice.store_id.clone()),
        status: Status::New,
        purchase_order_id: Some(invoice.purchase_order_id.clone()?),
        linked_transaction_id: Some(invoice_id.clone()),
        rest: Map::new(),
    };
    Some((responding_id(invoice_id), received))
}

/// How much of the purchase-order line `order_line` the goods received lines bring (packs
/// times pack size).
pub fn received_quantity(order_line: &RecordId, received: &[(RecordId, GoodsReceivedLine)]) -> f64 {
    received
        .iter()
        .filter(|(_, line)| line.purchase_order_line_id.as_ref() == Some(order_line))
        .map(|(_, line)| line.number_of_packs * line.pack_size)
        .sum()
}

/// What a received line brings, whichever record it is a line of.
#[derive(Clone, Copy, Debug)]
pub struct Arrival<'a> {
    pub item: &'a RecordId,
    pub batch: Option<&'a String>,
    pub expiry: Option<&'a String>,
    pub pack_size: f64,
    pub packs: f64,
    pub cost: Option<f64>,
}

impl<'a> From<&'a TransactionLine> for Arrival<'a> {
    fn from(line: &'a TransactionLine) -> Self {
        Arrival {
            item: &line.item_id,
            batch: line.batch.as_ref(),
            expiry: line.expiry_date.as_ref(),
            pack_size: line.pack_size,
            packs: line.number_of_packs,
            cost: line.cost_price_per_pack,
        }
    }
}

impl<'a> From<&'a GoodsReceivedLine> for Arrival<'a> {
    fn from(line: &'a GoodsReceivedLine) -> Self {
        Arrival {
            item: &line.item_id,
            batch: line.batch.as_ref(),
            expiry: line.expiry_date.as_ref(),
            pack_size: line.pack_size,
            packs: line.number_of_packs,
            cost: line.cost_price_per_pack,
        }
    }
}

/// The stock line a received line (of a supplier invoice or a goods received) adds to its
/// store when it is finalised.
pub fn received_stock(line_id: &RecordId, store: &StoreId, arrival: Arrival<'_>) -> (RecordId, StockLine) {
    let stock = StockLine {
        store_id: store.clone(),
        item_id: arrival.item.clone(),
        batch: arrival.batch.cloned(),
        expiry_date: arrival.expiry.cloned(),
        pack_size: arrival.pack_size,
        total_number_of_packs: arrival.packs,
        cost_price_per_pack: arrival.cost,
        sell_price_per_pack: None,
        rest: Map::new(),
    };
    (stock_line_id(line_id), stock)
}

/// What finalising a customer invoice's line takes from its store's stock: from the stock line
/// it names, else from the item's stock lines earliest expiry first (the same pack size).
/// Refused when the store does not hold enough: stock on hand never goes below zero.
pub fn take_stock(
    line: &TransactionLine,
    held: &mut [(RecordId, StockLine)],
) -> Result<Vec<(RecordId, StockLine)>, Refusal> {
    let mut wanted = line.number_of_packs;
    let mut candidates: Vec<&mut (RecordId, StockLine)> = held
        .iter_mut()
        .filter(|(id, stock)| match &line.stock_line_id {
            Some(named) => id == named,
            None => stock.item_id == line.item_id && stock.pack_size == line.pack_size,
        })
        .collect();
    // Earliest expiry first; a batch without an expiry date last.
    candidates.sort_by(|a, b| {
        (a.1.expiry_date.is_none(), &a.1.expiry_date, &a.0).cmp(&(b.1.expiry_date.is_none(), &b.1.expiry_date, &b.0))
    });
    let have: f64 = candidates.iter().map(|(_, stock)| stock.total_number_of_packs).sum();
    if have + 1e-9 < wanted {
        return Err(Refusal::NotEnoughStock {
            item: line.item_id.clone(),
            store: line.store_id.clone(),
            have: packs(have),
            want: packs(wanted),
        });
    }
    let mut taken = Vec::new();
    for (id, stock) in candidates {
        if wanted <= 0.0 {
            break;
        }
        let take = stock.total_number_of_packs.min(wanted);
        if take <= 0.0 {
            continue;
        }
        stock.total_number_of_packs -= take;
        wanted -= take;
        taken.push((id.clone(), stock.clone()));
    }
    Ok(taken)
}

/// A number of packs as a person reads it: `3`, `2.5`.
pub fn packs(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// What `#[derive(Deserialize)]` makes of a line, with the attributes the view had.
    #[derive(Debug, Deserialize, PartialEq)]
    struct Derived {
        store_id: StoreId,
        transaction_id: RecordId,
        item_id: RecordId,
        #[serde(default)]
        batch: Option<String>,
        #[serde(default)]
        expiry_date: Option<String>,
        #[serde(default = "one")]
        pack_size: f64,
        number_of_packs: f64,
        #[serde(default)]
        cost_price_per_pack: Option<f64>,
        #[serde(default)]
        sell_price_per_pack: Option<f64>,
        #[serde(default)]
        stock_line_id: Option<RecordId>,
        #[serde(flatten)]
        rest: Map<String, Value>,
    }

    #[test]
    fn a_line_reads_as_the_derived_reader_reads_it() {
        let base = json!({"store_id": "s", "transaction_id": "t", "item_id": "i", "number_of_packs": 2});
        let mut docs = vec![base.clone()];
        let full = json!({"store_id": "s", "transaction_id": "t", "item_id": "i", "number_of_packs": 2.5,
                          "batch": "B1", "expiry_date": "2027-01-01", "pack_size": 10, "cost_price_per_pack": 1.5,
                          "sell_price_per_pack": null, "stock_line_id": "sl-1", "note": {"a": [1, "x"]}, "z": null});
        docs.push(full);
        for missing in ["store_id", "transaction_id", "item_id", "number_of_packs"] {
            let mut doc = base.clone();
            doc.as_object_mut().expect("object").remove(missing);
            docs.push(doc);
        }
        for (field, wrong) in [("pack_size", json!("ten")), ("batch", json!(5)), ("item_id", json!(null))] {
            let mut doc = base.clone();
            doc[field] = wrong;
            docs.push(doc);
        }
        docs.push(json!([1, 2]));
        for doc in docs {
            let text = doc.to_string();
            let ours = serde_json::from_str::<TransactionLine>(&text).ok();
            let derived = serde_json::from_str::<Derived>(&text).ok();
            let as_derived = ours.map(|l| Derived {
                store_id: l.store_id,
                transaction_id: l.transaction_id,
                item_id: l.item_id,
                batch: l.batch,
                expiry_date: l.expiry_date,
                pack_size: l.pack_size,
                number_of_packs: l.number_of_packs,
                cost_price_per_pack: l.cost_price_per_pack,
                sell_price_per_pack: l.sell_price_per_pack,
                stock_line_id: l.stock_line_id,
                rest: l.rest,
            });
            assert_eq!(as_derived, derived, "{text}");
        }
    }

    fn network() -> Network {
        let mut net = Network::new("central");
        net.add_site("north", crate::SiteKind::Desktop).add_site("south", crate::SiteKind::Desktop);
        net.add_store("store-north", "north").add_store("store-south", "south").add_store("north-2", "north");
        net
    }

    #[test]
    fn the_central_server_responds_between_sites_and_a_site_between_its_own_stores() {
        let net = network();
        let north = SiteId::from("north");
        assert_eq!(responder(&net, &north, &StoreId::from("store-south")), Some(&SiteId::from("central")));
        assert_eq!(responder(&net, &north, &StoreId::from("north-2")), Some(&north));
        assert_eq!(responder(&net, &north, &StoreId::from("nowhere")), None);
    }

    fn invoice(to: &str, status: &str) -> Transaction {
        let doc =
            json!({"store_id": "store-north", "other_store_id": to, "type": "customer_invoice", "status": status});
        serde_json::from_value(doc).expect("a transaction")
    }

    fn line() -> (RecordId, TransactionLine) {
        let doc =
            json!({"store_id": "store-north", "transaction_id": "ci-1", "item_id": "item-1", "number_of_packs": 2.0});
        (RecordId::from("l-1"), serde_json::from_value(doc).expect("a line"))
    }

    #[test]
    fn a_finalised_invoice_to_a_store_on_another_site_makes_an_unnumbered_supplier_invoice_there() {
        let half = supplier_invoice_for(
            &RecordId::from("ci-1"),
            &invoice("store-south", "finalised"),
            &[line()],
            None,
            UNNUMBERED,
        )
        .expect("a half");
        assert_eq!(half.id, RecordId::from("ci-1:received"));
        assert_eq!(half.header.store_id, StoreId::from("store-south"));
        assert_eq!(half.header.kind, TransactionKind::SupplierInvoice);
        assert_eq!(half.header.status, Status::OnHold);
        assert_eq!(half.header.serial_number, Some(UNNUMBERED));
        assert_eq!(half.lines[0].0, RecordId::from("l-1:received"));
        assert_eq!(half.lines[0].1.transaction_id, RecordId::from("ci-1:received"));
        assert_eq!(half.lines[0].1.store_id, StoreId::from("store-south"));
    }

    #[test]
    fn no_half_before_finalisation_nor_for_a_half_itself() {
        let id = RecordId::from("ci-1");
        assert_eq!(supplier_invoice_for(&id, &invoice("store-south", "confirmed"), &[line()], None, -1), None);
        let mut half = invoice("store-south", "finalised");
        half.linked_transaction_id = Some(RecordId::from("other"));
        assert_eq!(supplier_invoice_for(&id, &half, &[line()], None, -1), None);
    }

    fn stock(id: &str, packs: f64, expiry: Option<&str>) -> (RecordId, StockLine) {
        let doc = json!({"store_id": "store-north", "item_id": "item-1", "pack_size": 1.0,
            "total_number_of_packs": packs, "expiry_date": expiry});
        (RecordId::from(id), serde_json::from_value(doc).expect("a stock line"))
    }

    #[test]
    fn finalising_an_invoice_takes_the_earliest_expiring_stock_first_and_never_more_than_is_held() {
        let (_, mut wanted) = line();
        wanted.number_of_packs = 5.0;
        let mut held = vec![
            stock("late", 10.0, Some("2028-01-01")),
            stock("early", 3.0, Some("2027-01-01")),
            stock("none", 9.0, None),
        ];
        let taken = take_stock(&wanted, &mut held).expect("enough");
        let left: Vec<(&str, f64)> = taken.iter().map(|(id, s)| (id.as_str(), s.total_number_of_packs)).collect();
        assert_eq!(left, vec![("early", 0.0), ("late", 8.0)]);
        wanted.number_of_packs = 100.0;
        assert!(matches!(take_stock(&wanted, &mut held), Err(Refusal::NotEnoughStock { .. })));
        wanted.stock_line_id = Some(RecordId::from("none"));
        wanted.number_of_packs = 9.0;
        let taken = take_stock(&wanted, &mut held).expect("the named line holds 9");
        assert_eq!(taken, vec![(RecordId::from("none"), stock("none", 0.0, None).1)]);
    }

    #[test]
    fn a_confirmed_purchase_order_to_a_store_makes_an_invoice_there_whose_lines_make_goods_received_lines() {
        let order: PurchaseOrder = serde_json::from_value(
            json!({"store_id": "store-south", "other_store_id": "store-north", "status": "confirmed"}),
        )
        .expect("an order");
        let (ci, invoice) = invoice_for_purchase_order(&RecordId::from("po-1"), &order, -1).expect("an invoice");
        assert_eq!(
            (ci.as_str(), invoice.store_id.as_str(), invoice.status),
            ("po-1:received", "store-north", Status::New)
        );
        let ordered: PurchaseOrderLine = serde_json::from_value(
            json!({"store_id": "store-south", "purchase_order_id": "po-1", "item_id": "item-1", "quantity": 20.0}),
        )
        .expect("an order line");
        let order_lines = [(RecordId::from("pol-1"), ordered)];
        let (_, line) = line();
        let (gr_line, received) =
            goods_received_line_for(&ci, &invoice, &RecordId::from("l-1"), &line, &order_lines).expect("a line");
        assert_eq!(gr_line.as_str(), "l-1:received");
        assert_eq!(received.goods_received_id.as_str(), "po-1:received:received");
        assert_eq!(received.purchase_order_line_id, Some(RecordId::from("pol-1")));
        assert_eq!(received_quantity(&RecordId::from("pol-1"), &[(gr_line, received)]), 2.0);
        assert_eq!(goods_received_for(&ci, &invoice), None, "not before the invoice is finalised");
    }

    #[test]
    fn a_line_with_a_negative_quantity_or_an_empty_pack_is_refused() {
        let line = |packs: f64, size: f64| json!({"store_id": "s", "transaction_id": "t", "item_id": "i", "number_of_packs": packs, "pack_size": size});
        assert_eq!(check_line(&line(2.0, 10.0).to_string()), Ok(()));
        assert!(check_line(&line(-1.0, 10.0).to_string()).is_err());
        assert!(check_line(&line(1.0, 0.0).to_string()).is_err());
    }
}
