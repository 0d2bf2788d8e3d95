//! Typed identifiers, so that a store id can never be passed where a site id is meant.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            pub fn new(id: impl Into<String>) -> Self {
                Self(id.into())
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }
        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self(s.to_owned())
            }
        }
        impl From<String> for $name {
            fn from(s: String) -> Self {
                Self(s)
            }
        }
    };
}

string_id!(
    /// A sync site: the central server, the primary, or a remote site.
    SiteId
);
impl SiteId {
    /// No site: the empty id, which no site is ever given (`central::admin` refuses an empty
    /// site id). It stands where a site is not known (yet): the central server and primary of a
    /// network before its `site` records are read ([`crate::Network::has_central`]), the active
    /// site of a store known so far only from another record, and the origin of a record the
    /// store puts back without logging it (only a logged change keeps its origin).
    pub const NONE: SiteId = SiteId(String::new());

    /// Whether this is [`SiteId::NONE`].
    pub fn is_none(&self) -> bool {
        self.0.is_empty()
    }
}

string_id!(
    /// A store (warehouse, clinic, dispensary). Active on exactly one site.
    StoreId
);
string_id!(
    /// The id of one record of a synced table (unique within its table).
    RecordId
);

/// A position in a node's change log. Strictly increasing on the node that assigned it.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Seq(pub i64);

impl fmt::Display for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}
impl fmt::Debug for Seq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Seq({})", self.0)
    }
}

/// A position in the central server's log, in the order changes became visible: by writing
/// transaction, then by sequence. On SQLite (one writer) `xid` is always 0 and the order is the
/// sequence's; on PostgreSQL several writers commit out of sequence order, and the transaction
/// id orders them safely (see the store's PostgreSQL pulls).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Debug, Serialize, Deserialize)]
pub struct LogPos {
    pub xid: i64,
    pub seq: Seq,
}

impl LogPos {
    pub fn new(xid: i64, seq: Seq) -> LogPos {
        LogPos { xid, seq }
    }
}
