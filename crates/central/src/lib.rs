//! # outpost-central
//!
//! The central (sync) server. Every remote site syncs with it: it applies each pushed batch in
//! one transaction after re-checking every change against `authority`, routes each change with
//! `recipients` (wide audiences into shared buckets, narrow ones into per-site outboxes), serves
//! pulls and the initialisation of new sites, and shows a dashboard.
//!
//! [`engine`] is the sync logic over the storage; [`admin`] the administration of sites and
//! stores; [`server`] the sync API over HTTP; [`conn`] its connections (a limit per client
//! address, and clients that keep the server waiting closed); `web` the dashboard behind the
//! administrator's login ([`session`]); [`auth`] checks passwords with bounded cost.

pub mod admin;
pub mod auth;
mod backfill;
pub mod conn;
pub mod dashboard;
pub mod engine;
pub mod metrics;
mod processors;
pub mod reports;
pub mod server;
pub mod session;
mod web;

pub use engine::{Engine, EngineError};
#[cfg(feature = "tls")]
pub use server::serve_tls;
pub use server::{serve, Limits, ServerConfig};
