//! # outpost-model
//!
//! The rules of Outpost, with no I/O: which synced tables exist and what data type each carries
//! (the [`registry`], a transcription of the seeds' data-type table), the [`network`] of sites and
//! stores, and the two functions every node obeys: [`authority`] (where may this record be
//! written?) and [`recipients`] (which sites must receive this change?).
//!
//! **Architecture invariant:** nothing in this crate touches a disk, a socket or a clock, so every
//! rule is tested exhaustively by plain unit tests.

pub mod change;
pub mod describe;
pub mod ids;
pub mod limits;
pub mod merge;
pub mod network;
pub mod registry;
pub mod rules;
pub mod transfer;

pub use change::{Action, Change};
pub use ids::{LogPos, RecordId, Seq, SiteId, StoreId};
pub use network::{MoveStatus, Network, PatientMove, Prefs, PrimaryMove, SiteKind, StoreInfo, StoreMove, SyncType};
pub use registry::{registry, DataType, Editor, Entry, Registry, Scope, Special, TableDef};
pub use rules::{
    authority, check_not_handed_over, check_not_moving, check_write, held_where_written, recipients, Audience,
    ChangeRef, Op, RecordKeys, Refusal, Rule, Writer,
};
