//! What the CLI reads from a person: secrets (never from the command line) and JSON records.

use std::io::{IsTerminal, Write as _};
use std::path::Path;

pub(crate) fn parse_json(json: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(json).map_err(|e| format!("the record is not valid JSON: {e}"))
}

/// A site's password: from OUTPOST_SITE_PASSWORD, a file, or standard input.
pub(crate) fn read_password(file: Option<&Path>) -> Result<String, String> {
    read_secret("OUTPOST_SITE_PASSWORD", file, "password for this site: ")?
        .ok_or_else(|| "no password given (set OUTPOST_SITE_PASSWORD, use --password-file, or type it)".into())
}

/// The dashboard administrator's password: from OUTPOST_ADMIN_PASSWORD, a file, or standard
/// input; long enough to face the internet.
pub(crate) fn read_admin_password(file: Option<&Path>) -> Result<String, String> {
    let password = read_secret("OUTPOST_ADMIN_PASSWORD", file, "administrator password for the dashboard: ")?.ok_or(
        "no administrator password given (set OUTPOST_ADMIN_PASSWORD, use --admin-password-file FILE, or type it)",
    )?;
    central::admin::check_admin_password(&password).map_err(|e| e.to_string())?;
    if std::env::var_os("OUTPOST_ADMIN_PASSWORD").is_none() && file.is_none() && std::io::stdin().is_terminal() {
        let again = read_secret("", None, "the same again: ")?.unwrap_or_default();
        if again != password {
            return Err("the two passwords differ; nothing was changed".into());
        }
    }
    Ok(password)
}

/// A secret from the environment variable `var`, else from `file`, else a line of standard
/// input (prompted on a terminal); never from the command line, where `ps` shows it. `None`
/// when nothing was given.
fn read_secret(var: &str, file: Option<&Path>, prompt: &str) -> Result<Option<String>, String> {
    if let Some(secret) = std::env::var(var).ok().filter(|_| !var.is_empty()) {
        return Ok(Some(secret));
    }
    if let Some(file) = file {
        let text = std::fs::read_to_string(file).map_err(|e| format!("reading {}: {e}", file.display()))?;
        return Ok(Some(text.trim().to_owned()));
    }
    if std::io::stdin().is_terminal() {
        eprint!("{prompt}");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).map_err(|e| format!("reading the password: {e}"))?;
    let secret = line.trim().to_owned();
    Ok((!secret.is_empty()).then_some(secret))
}
