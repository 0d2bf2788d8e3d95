//! The seeds' three reports, over the records of the stores a node holds (on the central server:
//! the collector copy of every store): stock on hand per store and location, the value of all
//! stock on hand, and monthly usage of an item. The database adds them up; on PostgreSQL over
//! columns and an index that hold what they read of each line (migration 7), so that a
//! national network's million stock lines are not a million documents parsed per report.
//!
//! What they count, in the terms of the typed views (`model::transfer`):
//! - a stock line holds `total_number_of_packs` packs of `pack_size` units, worth
//!   `cost_price_per_pack` each (a line without a cost counts as worth nothing);
//! - usage is what left a store on finalised customer invoices: the units of their lines, in the
//!   month of the invoice's `finalised_date` (an invoice without one is in the month "none").

use crate::{Db, Result};
use serde::{Deserialize, Serialize};

/// Stock of one item in one place of a store.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StockRow {
    pub store: String,
    pub store_name: Option<String>,
    pub item: String,
    pub item_name: Option<String>,
    pub location: Option<String>,
    /// Stock lines (batches) it is made of.
    pub lines: u64,
    /// Packs times pack size.
    pub units: f64,
    pub value: f64,
}

/// All stock of one store.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ValueRow {
    pub store: String,
    pub store_name: Option<String>,
    pub lines: u64,
    pub units: f64,
    pub value: f64,
}

/// Units of an item that left one store in one month.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageRow {
    pub store: String,
    pub store_name: Option<String>,
    /// `YYYY-MM`, or `none` for invoices without a finalised date.
    pub month: String,
    pub units: f64,
}

/// Which records a report reads: the stores (empty: every store) and, for stock, one item.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scope {
    pub stores: Vec<String>,
    pub item: Option<String>,
}

impl Scope {
    /// The stores as the query binds them: `None` for every store.
    pub(crate) fn store_list(&self) -> Option<&[String]> {
        (!self.stores.is_empty()).then_some(self.stores.as_slice())
    }
}

/// What the reports read of a stock line or a transaction line, taken from its document as it
/// is written (PostgreSQL keeps them as columns). A field of the wrong type is left out, so a
/// line the rules let through is never refused by the database.
#[derive(Debug, Clone, Default, PartialEq)]
#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
pub(crate) struct LineFacts {
    pub item: Option<String>,
    pub location: Option<String>,
    pub packs: Option<f64>,
    pub pack_size: Option<f64>,
    pub cost_per_pack: Option<f64>,
}

#[cfg_attr(not(feature = "postgres"), allow(dead_code))]
impl LineFacts {
    pub(crate) fn read(table: &str, data: Option<&str>) -> LineFacts {
        #[derive(Deserialize)]
        struct Fields {
            item_id: Option<serde_json::Value>,
            location_id: Option<serde_json::Value>,
            total_number_of_packs: Option<serde_json::Value>,
            number_of_packs: Option<serde_json::Value>,
            pack_size: Option<serde_json::Value>,
            cost_price_per_pack: Option<serde_json::Value>,
        }
        let (Some(data), "stock_line" | "transaction_line") = (data, table) else { return LineFacts::default() };
        let Ok(f) = serde_json::from_str::<Fields>(data) else { return LineFacts::default() };
        let text = |v: Option<serde_json::Value>| v.and_then(|v| v.as_str().map(str::to_owned));
        let number = |v: Option<serde_json::Value>| v.and_then(|v| v.as_f64()).filter(|n| n.is_finite());
        let packs = if table == "stock_line" { f.total_number_of_packs } else { f.number_of_packs };
        LineFacts {
            item: text(f.item_id),
            location: if table == "stock_line" { text(f.location_id) } else { None },
            packs: number(packs),
            pack_size: number(f.pack_size),
            cost_per_pack: number(f.cost_price_per_pack),
        }
    }
}

impl Db {
    /// Stock on hand per store, item and location, in that order.
    pub fn stock_on_hand(&self, scope: &Scope) -> Result<Vec<StockRow>> {
        self.read(|sql| sql.stock_on_hand(scope))
    }

    /// The value of all stock on hand, per store.
    pub fn stock_value(&self, scope: &Scope) -> Result<Vec<ValueRow>> {
        self.read(|sql| sql.stock_value(scope))
    }

    /// Units of `item` that left each store, per month, oldest month first.
    pub fn monthly_usage(&self, scope: &Scope, item: &str) -> Result<Vec<UsageRow>> {
        self.read(|sql| sql.monthly_usage(scope, item))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_of_a_stock_line_and_of_an_invoice_line() {
        let stock = r#"{"store_id":"s","item_id":"i","location_id":"shelf","total_number_of_packs":3,"number_of_packs":9,"pack_size":10,"cost_price_per_pack":1.5}"#;
        let facts = LineFacts::read("stock_line", Some(stock));
        let want = LineFacts {
            item: Some("i".into()),
            location: Some("shelf".into()),
            packs: Some(3.0),
            pack_size: Some(10.0),
            cost_per_pack: Some(1.5),
        };
        assert_eq!(facts, want);
        let line = LineFacts::read("transaction_line", Some(stock));
        assert_eq!((line.packs, line.location), (Some(9.0), None));
    }

    #[test]
    fn a_field_of_the_wrong_type_is_left_out_and_other_tables_have_none() {
        let odd = r#"{"item_id":7,"total_number_of_packs":"ten","pack_size":1e400}"#;
        assert_eq!(LineFacts::read("stock_line", Some(odd)), LineFacts::default());
        let odd = r#"{"item_id":"i","total_number_of_packs":"ten"}"#;
        assert_eq!(LineFacts::read("stock_line", Some(odd)).packs, None);
        assert_eq!(LineFacts::read("item", Some(r#"{"item_id":"i"}"#)), LineFacts::default());
        assert_eq!(LineFacts::read("stock_line", None), LineFacts::default());
    }
}
