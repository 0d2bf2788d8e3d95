//! Site initialisation (`outpost site init`): a new remote site's database, made only once the
//! central server has accepted the site's credentials.

use crate::client::{Client, ClientError};
use model::{Seq, SiteId};
use std::path::{Path, PathBuf};
use store::{Db, StateKey, StoreError};

/// The database file inside a node's data directory.
pub const DB_FILE: &str = "outpost.sqlite";

/// Why a site could not be initialised. Nothing is written to the database in any of these
/// cases (the data directory may have been created).
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// The certificate authority given for the central server could not be used.
    #[error("{0}")]
    Trust(#[source] ClientError),
    /// The central server could not be reached, or refused the site and password.
    #[error("checking the credentials with the central server: {0}")]
    Credentials(#[source] ClientError),
    #[error("creating {}: {source}", dir.display())]
    CreateDir { dir: PathBuf, source: std::io::Error },
    #[error("{0}")]
    Open(#[source] StoreError),
    /// The directory already holds a site; initialising it again would mix two sites' data.
    #[error("{} is already site `{existing}`", dir.display())]
    AlreadySite { dir: PathBuf, existing: SiteId },
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// A newly initialised site.
#[derive(Debug)]
pub struct InitReport {
    /// The site's database, open.
    pub db: Db,
    /// A client for the central server, with the site's credentials (and trust).
    pub client: Client,
    /// The central server's site id.
    pub central: SiteId,
    /// The last change of this site the central server already holds (zero for a new site).
    pub acked: Seq,
}

/// Initialises a remote site in `data_dir`: checks `site` and `password` with the central server
/// at `central_url` (trusting only `ca_pem` for HTTPS when it is not empty), creates the
/// database, refuses a directory that is already a site, then stores the credentials.
///
/// The change log starts after the position the central server acknowledged from this site. A
/// site initialised again (its disk was lost) must number its new changes after those the
/// server already holds from it; if it started again from 1, the server would skip them as
/// already applied, and they would be lost without a word. An entry with no record marks where
/// the log starts: it is never pushed nor counted as waiting.
pub fn initialise(
    data_dir: &Path,
    central_url: &str,
    site: &SiteId,
    password: &str,
    ca_pem: &str,
) -> Result<InitReport, InitError> {
    let mut client = Client::new(central_url, site, password);
    if !ca_pem.is_empty() {
        client = client.trusting(ca_pem.as_bytes()).map_err(InitError::Trust)?;
    }
    let answer = client.status().map_err(InitError::Credentials)?;
    std::fs::create_dir_all(data_dir).map_err(|source| InitError::CreateDir { dir: data_dir.to_owned(), source })?;
    let db = Db::open(&data_dir.join(DB_FILE)).map_err(InitError::Open)?;
    match db.local_site() {
        Ok(existing) => return Err(InitError::AlreadySite { dir: data_dir.to_owned(), existing }),
        Err(StoreError::NotInitialised) => {}
        Err(e) => return Err(e.into()),
    }
    db.transaction(|tx| {
        tx.start_log_after(answer.acked)?;
        for (key, value) in [
            (StateKey::LocalSite, site.as_str()),
            (StateKey::CentralUrl, central_url),
            (StateKey::Password, password),
            (StateKey::CaCertPem, ca_pem),
            (StateKey::Role, "site"),
        ] {
            tx.set_state(key, value)?;
        }
        Ok(())
    })?;
    Ok(InitReport { db, client, central: answer.central, acked: answer.acked })
}
