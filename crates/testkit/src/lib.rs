//! Outpost's test kit (dev-only, never published): what the integration tests of
//! `crates/outpost` and `crates/store` share.
//!
//! The system is tested from outside: real `outpost` processes (the binary the calling package
//! builds, see [`process::Binary`]) talking real HTTP on loopback. Each site has its own SQLite
//! file in a temporary directory; the central server has one too, or, on the PostgreSQL backend,
//! a fresh schema of its own on the test PostgreSQL (dropped at the end), which several server
//! processes may share. The databases are inspected read-only from the test, beside the
//! processes, with the same SQL on both backends.
//!
//! | module | for |
//! |---|---|
//! | [`process`] | the binary under test, commands and child processes that die with the test |
//! | [`central`] | central servers: their backend, `central init`, `central serve` processes |
//! | [`site`] | remote sites and their commands, writes around the binary |
//! | [`network`] | a central server and its sites for one test, [`on_each_backend!`] |
//! | [`http`] | raw HTTP requests to the central server |
//! | [`dump`] | reading a node's database: rows, records, dumps |
//! | [`proxy`] | a proxy that cuts connections after so many bytes |
//! | [`link`] | a shaping proxy for slow links: rates, delay, stalls, cuts |
//! | `postgres` | finding the test PostgreSQL, schemas of its own, skips reported by name |
//!
//! Features: `nodes` (central servers, sites, networks, HTTP, dumps: for `crates/outpost`'s
//! tests) and `postgres` (the test PostgreSQL); without them the kit is std only.

pub mod link;
pub mod process;
pub mod proxy;

#[cfg(feature = "postgres")]
pub mod postgres;

#[cfg(feature = "nodes")]
pub mod browser;
#[cfg(feature = "nodes")]
pub mod central;
#[cfg(feature = "nodes")]
pub mod dump;
#[cfg(feature = "nodes")]
pub mod http;
#[cfg(feature = "nodes")]
pub mod network;
#[cfg(feature = "nodes")]
pub mod site;

pub use process::{
    masked, outpost, peak_rss_kib, run, test_machine_file, wait_until, Binary, ChildGuard, Run, COMMAND_TIMEOUT,
    TEST_MACHINE_ID,
};
pub use proxy::{Cut, Proxy};

#[cfg(feature = "nodes")]
pub use central::{write_items, Backend, Central, CentralDb, Server, ADMIN_PASSWORD};
#[cfg(feature = "nodes")]
pub use dump::{
    count, db_file, dump, dump_table, footprint, open_ro, record, row, rows, state, DbRef, Dump, Footprint, FromRow,
    Inspect, Value,
};
#[cfg(feature = "nodes")]
pub use http::{basic, change, good_headers, machine, Answer, Headers, Http};
#[cfg(feature = "nodes")]
pub use network::Network;
#[cfg(feature = "nodes")]
pub use site::{write_behind_the_checks, write_stock_lines, Site};
