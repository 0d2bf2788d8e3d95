//! A small network of real processes for one test: a central server, running, and remote sites
//! each with one active store `store-NAME`, initialised (not synced yet), all under one
//! temporary directory ([`Network`]); and [`on_each_backend!`](crate::on_each_backend), which
//! runs a test body once per central server backend.

use crate::central::{Backend, Central};
use crate::process::Binary;
use crate::site::Site;

/// A small network: a central server (also the primary), running, and remote sites each with
/// one active store `store-NAME`, initialised (not synced yet).
#[derive(Debug)]
pub struct Network<B: Binary> {
    // Dropped in this order: the server (showing its log if the test failed) before the
    // temporary directory that holds the log.
    pub central: Central<B>,
    pub sites: Vec<Site<B>>,
    pub root: tempfile::TempDir,
}

impl<B: Binary> Network<B> {
    pub fn new(backend: &Backend, sites: &[&str]) -> Network<B> {
        Self::with(backend, sites, |_| {})
    }

    /// Like [`Network::new`], with `prepare` run on the central server before it starts.
    pub fn with(backend: &Backend, sites: &[&str], prepare: impl FnOnce(&Central<B>)) -> Network<B> {
        let root = tempfile::tempdir().expect("temporary directory");
        let mut central = Central::init(root.path(), backend);
        let mut passwords = Vec::new();
        for site in sites {
            passwords.push(central.add_site(site));
            central.add_store(&format!("store-{site}"), site);
        }
        prepare(&central);
        let url = central.start();
        let sites = sites
            .iter()
            .zip(passwords)
            .map(|(name, password)| Site::init(root.path(), name, &url, &password))
            .collect();
        Network { central, sites, root }
    }

    pub fn site(&self, name: &str) -> &Site<B> {
        self.sites.iter().find(|s| s.name == name).unwrap_or_else(|| panic!("no site `{name}`"))
    }
}

/// Runs each named test body (`fn name(backend: &Backend)`) once per central server backend,
/// as `sqlite::name` and `postgres::name`, so that a failure names its backend. A PostgreSQL
/// test is reported skipped when there is no PostgreSQL to reach, or fails where PostgreSQL is
/// required (see the kit's `postgres` module).
/// Attributes before a name (`#[ignore = "…"]`) go on both tests. The PostgreSQL tests are
/// compiled with the calling crate's `postgres` feature (which turns on the kit's).
#[macro_export]
macro_rules! on_each_backend {
    ($($(#[$meta:meta])* $name:ident),* $(,)?) => {
        mod sqlite {
            $(
                $(#[$meta])*
                #[test]
                fn $name() {
                    super::$name(&$crate::central::Backend::Sqlite);
                }
            )*
        }

        #[cfg(feature = "postgres")]
        mod postgres {
            $(
                $(#[$meta])*
                #[test]
                fn $name() {
                    if let Some(backend) = $crate::central::Backend::postgres() {
                        super::$name(&backend);
                    }
                }
            )*
        }
    };
}
