//! A change: the unit that travels from a site's change log to the central server and on to
//! the sites that must receive it.

use crate::ids::{RecordId, Seq, SiteId};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// What a change does, as written in a change log (whether it creates or updates is decided by
/// the node that applies it, from what it already holds).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Upsert,
    Delete,
    /// Merge this record into another; the other one stays, references are rewritten.
    MergeInto(RecordId),
}

impl Action {
    pub fn code(&self) -> &'static str {
        match self {
            Action::Upsert => "upsert",
            Action::Delete => "delete",
            Action::MergeInto(_) => "merge",
        }
    }
}

/// One entry of a change log, with the record's document as it is now.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Change {
    /// The position in the log of the node that sent it.
    pub seq: Seq,
    pub table: String,
    pub id: RecordId,
    pub action: Action,
    /// The record's JSON document (absent for a delete). Kept as raw text end to end: the
    /// engine reads only the routing keys and never re-serialises a record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Box<RawValue>>,
    /// The site whose write this is.
    pub origin: SiteId,
}
