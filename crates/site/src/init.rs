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
    let db = create(data_dir, &answer, central_url, password, ca_pem)?;
    Ok(InitReport { db, client, central: answer.central, acked: answer.acked })
}

/// The database of a new site, once the central server has answered its first status
/// (`answer`, for the site it names): [`initialise`] after its check, and the simulator's sites.
pub fn create(
    data_dir: &Path,
    answer: &protocol::StatusResponse,
    central_url: &str,
    password: &str,
    ca_pem: &str,
) -> Result<Db, InitError> {
    std::fs::create_dir_all(data_dir).map_err(|source| InitError::CreateDir { dir: data_dir.to_owned(), source })?;
    let db = Db::open(&data_dir.join(DB_FILE)).map_err(InitError::Open)?;
    match db.local_site() {
        Ok(existing) => return Err(InitError::AlreadySite { dir: data_dir.to_owned(), existing }),
        Err(StoreError::NotInitialised) => {}
        Err(e) => return Err(e.into()),
    }
    db.transaction(|tx| set_identity(tx, answer.acked, &answer.site, central_url, password, ca_pem))?;
    Ok(db)
}

/// What makes a database this site: its id, its central server and credentials, and where its
/// own change log starts (after `acked`, the last of its changes the central server holds).
fn set_identity(
    tx: &mut store::Tx<'_>,
    acked: Seq,
    site: &SiteId,
    central_url: &str,
    password: &str,
    ca_pem: &str,
) -> Result<(), StoreError> {
    tx.start_log_after(acked)?;
    // What the central server holds of this site is pushed: a pull answer that says it holds
    // more tells a site it was restored from a backup (`sync::realign`).
    tx.set_state(StateKey::PushedSeq, &acked.0.to_string())?;
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
}

/// Why a seed file could not be imported. Nothing is written in any of these cases.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("{0}")]
    Seed(#[from] protocol::seed::SeedError),
    #[error("{} holds a site already; a seed file starts a new site in an empty data directory", dir.display())]
    NotEmpty { dir: PathBuf },
    #[error("creating {}: {source}", dir.display())]
    CreateDir { dir: PathBuf, source: std::io::Error },
    #[error("applying the seed file: {0} (nothing was kept)")]
    Apply(String),
}

/// What an import did.
#[derive(Debug)]
pub struct ImportReport {
    pub header: protocol::seed::SeedHeader,
    pub applied: u64,
}

/// Starts a site in `data_dir` from a seed file, without a network: the file is checked whole
/// first (checksum, site when `site` is given, expiry, every page readable), then its pages are
/// applied as pulled pages are (`sync::apply_batch`), in one new database whose pulls continue
/// from the file's position. The site syncs with the file's central server address unless
/// `central_url` says otherwise. On any error nothing is left behind.
pub fn import_seed(
    data_dir: &Path,
    bytes: &[u8],
    site: Option<&SiteId>,
    central_url: Option<&str>,
    ca_pem: &str,
) -> Result<ImportReport, ImportError> {
    let seed = protocol::seed::Seed::read(bytes, site, &protocol::now_rfc3339())?;
    let (site, password) = (&seed.header.site, seed.header.password.as_str());
    let central_url = central_url.unwrap_or(&seed.header.central_url);
    let file = data_dir.join(DB_FILE);
    if file.exists() {
        return Err(ImportError::NotEmpty { dir: data_dir.to_owned() });
    }
    std::fs::create_dir_all(data_dir).map_err(|source| ImportError::CreateDir { dir: data_dir.to_owned(), source })?;
    // The database is made under another name and takes its own once whole: an import that
    // stopped half-way (a power cut) leaves a file the next import replaces, never a site.
    let partial = data_dir.join(format!("{DB_FILE}.importing"));
    let remove_partial = || {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", partial.display()));
        }
    };
    remove_partial();
    let applied = apply_seed(&partial, &seed, site, central_url, password, ca_pem)
        .and_then(|applied| {
            std::fs::rename(&partial, &file).map_err(|e| ImportError::Apply(format!("naming the database: {e}")))?;
            Ok(applied)
        })
        .inspect_err(|_| remove_partial())?;
    tracing::info!(%site, records = applied, "a site was started from a seed file");
    Ok(ImportReport { header: seed.header, applied })
}

/// Applies the file's pages in a new database at `file`, each decoded on another thread while
/// the one before is applied. (The checksum has already shown the file whole: a page that
/// cannot be read is an error the caller cleans up after, like any other.)
fn apply_seed(
    file: &Path,
    seed: &protocol::seed::Seed<'_>,
    site: &SiteId,
    central_url: &str,
    password: &str,
    ca_pem: &str,
) -> Result<u64, ImportError> {
    let failed = |e: &dyn std::fmt::Display| ImportError::Apply(e.to_string());
    let db = Db::open(file).map_err(|e| failed(&e))?;
    // A failed import deletes the file: until it is whole, a journal would only write it twice.
    db.bulk_load(true).map_err(|e| failed(&e))?;
    db.transaction(|tx| set_identity(tx, seed.header.acked, site, central_url, password, ca_pem))
        .map_err(|e| failed(&e))?;
    let (sender, receiver) = std::sync::mpsc::sync_channel(1);
    std::thread::scope(|scope| {
        scope.spawn(move || {
            for i in 0..seed.page_count() {
                let page = seed.page(i);
                let stop = page.is_err();
                if sender.send(page).is_err() || stop {
                    return;
                }
            }
        });
        // One transaction for the whole file: a page's B-tree pages are written to the file once,
        // at the end, not again at every page's commit.
        let mut unreadable = None;
        let applied = db.transaction(|tx| {
            let mut applied = 0;
            for page in receiver {
                let page = match page {
                    Ok(page) => page,
                    Err(e) => {
                        unreadable = Some(e);
                        return Err(store::StoreError::Invalid {
                            table: "seed".into(),
                            id: "page".into(),
                            reason: "unreadable".into(),
                        });
                    }
                };
                let cursor = serde_json::to_string(&page.next).map_err(|e| store::StoreError::Invalid {
                    table: "sync_state".into(),
                    id: "pull_cursor".into(),
                    reason: e.to_string(),
                })?;
                crate::sync::apply_in(tx, site, &page.changes, &cursor)?;
                applied += page.changes.len() as u64;
            }
            Ok(applied)
        });
        if let Some(e) = unreadable {
            return Err(e.into());
        }
        let applied = applied.map_err(|e| failed(&e))?;
        db.bulk_load(false).map_err(|e| failed(&e))?;
        Ok(applied)
    })
}
