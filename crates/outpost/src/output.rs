//! Printing helpers shared by the commands.

pub(crate) use site::client::human_bytes;
use std::io::Write as _;

/// Says where a server listens, in one write, and goes on serving if nobody reads it: a
/// supervisor that reads only the first line and closes the pipe must not stop the server (as
/// `println!` would, panicking on the broken pipe).
pub(crate) fn announce(text: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        tracing::warn!(error = %e, "could not print where the server listens");
    }
}
