//! # outpost-site
//!
//! A remote site: a local database where its stores are active, and the client that keeps it
//! in sync with the central server. A site starts every sync; it pushes its own changes first,
//! then pulls what concerns it ([`sync`]). Between syncs it keeps working offline.
//!
//! **Architecture invariant:** the pull cursor is stored in the same transaction as the batch it
//! covers, so it never moves past anything that was not committed.

pub mod client;
pub mod init;
pub mod link;
pub mod local_api;
pub mod machine;
pub mod page;
pub mod status;
pub mod sync;

pub use client::{Client, ClientError};
pub use init::{import_seed, initialise, ImportError, ImportReport, InitError, InitReport};
pub use status::{SiteStatus, SyncState};
pub use sync::{sync_once, Progress, SyncError, SyncReport};
