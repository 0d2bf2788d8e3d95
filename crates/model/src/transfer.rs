//! Typed views of the records transfers need, and the rules that make the responding half of a
//! transfer. The JSON documents stay the storage; these views are how processors (and reports)
//! read and write them. Fields a view does not name are kept as they are.

use crate::ids::{RecordId, StoreId};
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

/// Where a transaction stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransactionStatus {
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
    pub status: TransactionStatus,
    /// The store's own number for it; -1 on a responding half until its store's site numbers it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_number: Option<i64>,
    /// On a responding half: the initiating transaction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub linked_transaction_id: Option<RecordId>,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// A `transaction_line` record: one item, batch and quantity of a transaction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
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
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

fn one() -> f64 {
    1.0
}

/// The serial number a responding half carries until its store's site numbers it (the seeds).
pub const UNNUMBERED: i64 = -1;

/// Checks a transaction line as it is written: a quantity is never negative, a pack holds
/// something. A document that is not a line at all (fields missing) is left to the caller.
pub fn check_line(doc: &Value) -> Result<(), Refusal> {
    let Ok(line) = TransactionLine::deserialize(doc) else { return Ok(()) };
    let bad = |why: &str| Err(Refusal::BadLine { why: why.to_owned() });
    if line.number_of_packs.is_nan() || line.number_of_packs < 0.0 {
        return bad("its number of packs is negative");
    }
    if line.pack_size.is_nan() || line.pack_size <= 0.0 {
        return bad("its pack size is not above zero");
    }
    Ok(())
}

/// The id of the responding half of the transaction `initiating` (and of each of its lines):
/// one id for one initiating record, so that the half is made exactly once.
pub fn responding_id(initiating: &RecordId) -> RecordId {
    RecordId(format!("{initiating}:received"))
}

/// The responding half of a stock transfer (the seeds): a customer invoice from store A to
/// store B, finalised, where B is active on another site than A, makes a supplier invoice in B,
/// on hold, unnumbered, with the same lines. `None` when `invoice` is not such a half.
pub fn supplier_invoice_for(
    network: &Network,
    id: &RecordId,
    invoice: &Transaction,
    lines: &[(RecordId, TransactionLine)],
) -> Option<Half> {
    let to = invoice.other_store_id.as_ref()?;
    let (kind, status) = (invoice.kind, invoice.status);
    if kind != TransactionKind::CustomerInvoice
        || status != TransactionStatus::Finalised
        || invoice.linked_transaction_id.is_some()
    {
        return None;
    }
    let (from_site, to_site) = (network.active_site(&invoice.store_id)?, network.active_site(to)?);
    if from_site == to_site {
        return None; // both stores on one site: that site makes it (not yet)
    }
    let half_id = responding_id(id);
    let half = Transaction {
        store_id: to.clone(),
        other_store_id: Some(invoice.store_id.clone()),
        kind: TransactionKind::SupplierInvoice,
        status: TransactionStatus::OnHold,
        serial_number: Some(UNNUMBERED),
        linked_transaction_id: Some(id.clone()),
        rest: Map::new(),
    };
    let lines = lines
        .iter()
        .map(|(line_id, line)| {
            let copy = TransactionLine { store_id: to.clone(), transaction_id: half_id.clone(), ..line.clone() };
            (responding_id(line_id), copy)
        })
        .collect();
    Some(Half { id: half_id, transaction: half, lines })
}

/// The responding half of a transfer: its transaction and lines, with their ids.
#[derive(Clone, Debug, PartialEq)]
pub struct Half {
    pub id: RecordId,
    pub transaction: Transaction,
    pub lines: Vec<(RecordId, TransactionLine)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn network() -> Network {
        let mut net = Network::new("central");
        net.add_site("north", crate::SiteKind::Desktop).add_site("south", crate::SiteKind::Desktop);
        net.add_store("store-north", "north").add_store("store-south", "south").add_store("north-2", "north");
        net
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
        let half =
            supplier_invoice_for(&network(), &RecordId::from("ci-1"), &invoice("store-south", "finalised"), &[line()])
                .expect("a half");
        assert_eq!(half.id, RecordId::from("ci-1:received"));
        assert_eq!(half.transaction.store_id, StoreId::from("store-south"));
        assert_eq!(half.transaction.kind, TransactionKind::SupplierInvoice);
        assert_eq!(half.transaction.status, TransactionStatus::OnHold);
        assert_eq!(half.transaction.serial_number, Some(UNNUMBERED));
        assert_eq!(half.lines[0].0, RecordId::from("l-1:received"));
        assert_eq!(half.lines[0].1.transaction_id, RecordId::from("ci-1:received"));
        assert_eq!(half.lines[0].1.store_id, StoreId::from("store-south"));
    }

    #[test]
    fn no_half_before_finalisation_or_between_stores_of_one_site() {
        let id = RecordId::from("ci-1");
        assert_eq!(supplier_invoice_for(&network(), &id, &invoice("store-south", "confirmed"), &[line()]), None);
        assert_eq!(supplier_invoice_for(&network(), &id, &invoice("north-2", "finalised"), &[line()]), None);
    }

    #[test]
    fn a_line_with_a_negative_quantity_or_an_empty_pack_is_refused() {
        let line = |packs: f64, size: f64| json!({"store_id": "s", "transaction_id": "t", "item_id": "i", "number_of_packs": packs, "pack_size": size});
        assert_eq!(check_line(&line(2.0, 10.0)), Ok(()));
        assert!(check_line(&line(-1.0, 10.0)).is_err());
        assert!(check_line(&line(1.0, 0.0)).is_err());
    }
}
