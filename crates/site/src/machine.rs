//! Which machine a site runs on. The seeds bind a site to its hardware: a copy of a site's
//! database on another machine must not sync as that site (two machines would then write the
//! same store). The identity lives outside the data directory, so copying the directory does
//! not copy it, and restoring a backup on the same machine keeps it.

use blake2::{Blake2s256, Digest};
use std::path::PathBuf;

/// Where the machine's identity is read from: `OUTPOST_MACHINE_ID_FILE` if set (tests, and
/// installations that keep it elsewhere), else the operating system's `/etc/machine-id`, else
/// a random one Outpost generates once in the user's data directory.
fn source() -> PathBuf {
    if let Some(path) = std::env::var_os("OUTPOST_MACHINE_ID_FILE") {
        return PathBuf::from(path);
    }
    let system = PathBuf::from("/etc/machine-id");
    if std::fs::read_to_string(&system).is_ok_and(|id| !id.trim().is_empty()) {
        return system;
    }
    let base = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("outpost").join("machine-id")
}

/// This machine's identity, created (random, 128 bits) if the file does not exist yet.
fn machine_id() -> std::io::Result<String> {
    let path = source();
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| std::io::Error::other(e.to_string()))?;
    let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&path, format!("{id}\n"))?;
    Ok(id)
}

/// What a site tells the central server about its machine: a digest of the machine's identity
/// and the site's id, so that the raw identity (which other programs use) never leaves it.
/// `None` when the identity cannot be read or made (the central server then refuses to bind).
pub fn fingerprint(site: &str) -> Option<String> {
    match machine_id() {
        Ok(id) => Some(fingerprint_of(&id, site)),
        Err(e) => {
            tracing::warn!(error = %e, path = %source().display(), "could not read or create this machine's identity");
            None
        }
    }
}

/// The fingerprint of site `site` on the machine whose identity is `machine_id`.
pub fn fingerprint_of(machine_id: &str, site: &str) -> String {
    let digest = Blake2s256::new()
        .chain_update(machine_id.as_bytes())
        .chain_update([0])
        .chain_update(site.as_bytes())
        .finalize();
    digest.iter().take(16).map(|b| format!("{b:02x}")).collect()
}
