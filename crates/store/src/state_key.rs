//! The keys of a node's `state` table: one variant per value a node keeps beside its records.
//!
//! Databases already hold these keys, so [`StateKey::as_str`] is part of the stored format: a
//! variant may be renamed, its string never (the store's `state_key` tests pin every one).

use std::fmt;

/// One value of a node's `state` table (read with [`crate::Db::state`], written with
/// [`crate::Db::set_state`] or [`crate::Tx::set_state`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum StateKey {
    // Every node.
    /// This node's own site id. Written once when the node is initialised (`central::admin::init`
    /// on the central server, `site::init` on a remote site); read by [`crate::Db::local_site`].
    LocalSite,
    /// What this node is: `central` or `site`. Written once at initialisation, beside
    /// [`StateKey::LocalSite`].
    Role,

    // Central server.
    /// The site named as primary at initialisation (mirrored sync) before it has been added:
    /// written by `central::admin::init`, read by `central::admin::add_site`, which makes that
    /// site the primary when it is added.
    PendingPrimary,
    /// The argon2 hash of the administrator's password (empty or absent: no administrator).
    /// Written by `central::admin::set_admin_password`.
    AdminPasswordHash,
    /// The key that signs administrator sessions, in hex. Made by the first
    /// `central::admin::set_admin_password`, kept afterwards.
    SessionKey,
    /// A random value every administrator session is bound to: changed by
    /// `central::admin::set_admin_password` and `central::admin::end_sessions` (a logout) to end
    /// every open session, on every server process.
    AdminSessionGeneration,

    // Remote site: how to reach the central server (written by `site::init`).
    /// The central server's URL.
    CentralUrl,
    /// This site's password at the central server.
    Password,
    /// The PEM certificate the site trusts for the central server (empty: the system's roots).
    CaCertPem,

    // Remote site: where sync stands (written by `site::sync`).
    /// Where the pull stands at the central server (its opaque cursor; empty: pull a fresh
    /// snapshot). Cleared by `outpost site reset-cursor`.
    PullCursor,
    /// The last of this site's own changes the central server acknowledged.
    PushedSeq,
    /// A push sent and not answered yet, as `AFTER:LAST` (empty: none).
    PushInFlight,
    /// The link rates measured by the last sync (see `site::Link::to_state`).
    LinkRates,
    /// When the last sync succeeded.
    LastSyncAt,
    /// What went wrong in the last sync, with its time (empty: it succeeded).
    LastError,
    /// The central server's last notice to this site (e.g. that the site was reset).
    LastNotice,
    /// Whether the site syncs: `paused`, `disabled`, or active otherwise. Written by
    /// `site::status::set_sync_state` (`outpost site pause|resume|disable`).
    SyncState,
}

impl StateKey {
    /// Every key, in declaration order.
    pub const ALL: [StateKey; 17] = [
        StateKey::LocalSite,
        StateKey::Role,
        StateKey::PendingPrimary,
        StateKey::AdminPasswordHash,
        StateKey::SessionKey,
        StateKey::AdminSessionGeneration,
        StateKey::CentralUrl,
        StateKey::Password,
        StateKey::CaCertPem,
        StateKey::PullCursor,
        StateKey::PushedSeq,
        StateKey::PushInFlight,
        StateKey::LinkRates,
        StateKey::LastSyncAt,
        StateKey::LastError,
        StateKey::LastNotice,
        StateKey::SyncState,
    ];

    /// The key as databases store it. Never change one: stored state would be orphaned.
    pub const fn as_str(self) -> &'static str {
        match self {
            StateKey::LocalSite => "local_site",
            StateKey::Role => "role",
            StateKey::PendingPrimary => "pending_primary",
            StateKey::AdminPasswordHash => "admin_password_hash",
            StateKey::SessionKey => "session_key",
            StateKey::AdminSessionGeneration => "admin_session_generation",
            StateKey::CentralUrl => "central_url",
            StateKey::Password => "password",
            StateKey::CaCertPem => "ca_cert_pem",
            StateKey::PullCursor => "pull_cursor",
            StateKey::PushedSeq => "pushed_seq",
            StateKey::PushInFlight => "push_in_flight",
            StateKey::LinkRates => "link_rates",
            StateKey::LastSyncAt => "last_sync_at",
            StateKey::LastError => "last_error",
            StateKey::LastNotice => "last_notice",
            StateKey::SyncState => "sync_state",
        }
    }

    /// The key a stored string names, if it is one of these.
    pub fn parse(stored: &str) -> Option<StateKey> {
        StateKey::ALL.into_iter().find(|key| key.as_str() == stored)
    }
}

impl fmt::Display for StateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::StateKey;

    /// The stored strings, written out: databases hold them, so a renamed variant must keep its
    /// string, and a changed string fails here rather than silently orphaning stored state.
    #[test]
    fn every_key_keeps_its_stored_string() {
        let expected = [
            (StateKey::LocalSite, "local_site"),
            (StateKey::Role, "role"),
            (StateKey::PendingPrimary, "pending_primary"),
            (StateKey::AdminPasswordHash, "admin_password_hash"),
            (StateKey::SessionKey, "session_key"),
            (StateKey::AdminSessionGeneration, "admin_session_generation"),
            (StateKey::CentralUrl, "central_url"),
            (StateKey::Password, "password"),
            (StateKey::CaCertPem, "ca_cert_pem"),
            (StateKey::PullCursor, "pull_cursor"),
            (StateKey::PushedSeq, "pushed_seq"),
            (StateKey::PushInFlight, "push_in_flight"),
            (StateKey::LinkRates, "link_rates"),
            (StateKey::LastSyncAt, "last_sync_at"),
            (StateKey::LastError, "last_error"),
            (StateKey::LastNotice, "last_notice"),
            (StateKey::SyncState, "sync_state"),
        ];
        assert_eq!(expected.len(), StateKey::ALL.len(), "every key is pinned");
        for (key, stored) in expected {
            assert_eq!(key.as_str(), stored, "{key:?}");
            assert_eq!(StateKey::parse(stored), Some(key), "{stored}");
        }
        for (i, key) in StateKey::ALL.into_iter().enumerate() {
            assert_eq!(expected[i].0, key, "ALL lists every key once, in order");
        }
    }
}
