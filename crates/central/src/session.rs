//! The administrator's sessions: stateless signed cookies, so that every server process on one
//! database accepts a session opened on any of them, with nothing to share but the `state`
//! table.
//!
//! A session cookie is `EXPIRY.ID.MAC`: when it ends (Unix seconds), a random id, and a keyed
//! Blake2s MAC over both and a *binding*, the stored administrator hash and the current session
//! generation. A new administrator password, or a logout (which draws a new generation), changes
//! the binding and so ends every session at once, on every process. CSRF tokens are MACs of the
//! session id (or, before login, of a random nonce kept in a cookie), so a form posted from
//! elsewhere cannot carry one. Pure: the caller gives the time and the randomness.

use crate::auth::constant_time_eq;
use blake2::digest::{KeyInit, Mac};
use blake2::Blake2sMac256;

/// How long a session lasts.
pub const SESSION_SECS: u64 = 12 * 60 * 60;

/// The secret that signs sessions (kept in the `state` table, made at `central init`).
#[derive(Clone)]
pub struct SessionKey([u8; 32]);

impl std::fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKey(…)")
    }
}

impl SessionKey {
    pub fn new(bytes: [u8; 32]) -> SessionKey {
        SessionKey(bytes)
    }

    /// From its stored hex form.
    pub fn from_hex(hex: &str) -> Option<SessionKey> {
        let bytes = from_hex(hex)?;
        Some(SessionKey(bytes.try_into().ok()?))
    }

    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }

    fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        // A 32-byte key is always accepted by Blake2s.
        let Ok(mut mac) = <Blake2sMac256 as KeyInit>::new_from_slice(&self.0) else { return [0; 32] };
        for part in parts {
            mac.update(&(part.len() as u64).to_le_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// A session cookie value for session `id`, valid until `now + SESSION_SECS`.
    pub fn issue(&self, binding: &str, id: [u8; 16], now: u64) -> String {
        let expiry = (now + SESSION_SECS).to_string();
        let id = to_hex(&id);
        let mac = self.mac(&[b"session", expiry.as_bytes(), id.as_bytes(), binding.as_bytes()]);
        format!("{expiry}.{id}.{}", to_hex(&mac))
    }

    /// The session id of a cookie value, if it was issued with this key and binding and has
    /// not expired at `now`.
    pub fn open(&self, binding: &str, cookie: &str, now: u64) -> Option<String> {
        let mut parts = cookie.split('.');
        let (expiry, id, mac) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || expiry.parse::<u64>().ok()? <= now {
            return None;
        }
        let expected = self.mac(&[b"session", expiry.as_bytes(), id.as_bytes(), binding.as_bytes()]);
        constant_time_eq(&from_hex(mac)?, &expected).then(|| id.to_owned())
    }

    /// The CSRF token of the forms of session `id` (or of the login form's nonce).
    pub fn csrf(&self, purpose: &str, id: &str) -> String {
        to_hex(&self.mac(&[b"csrf", purpose.as_bytes(), id.as_bytes()]))
    }

    /// Whether `token` is the CSRF token of `id` for `purpose`.
    pub fn csrf_ok(&self, purpose: &str, id: &str, token: &str) -> bool {
        !id.is_empty() && constant_time_eq(token.as_bytes(), self.csrf(purpose, id).as_bytes())
    }
}

pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn from_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 || !hex.is_ascii() {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).ok()).collect()
}

/// The value of cookie `name` in a `Cookie` request header.
pub fn cookie<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').filter_map(|pair| pair.trim().split_once('=')).find(|(n, _)| *n == name).map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000;

    fn key() -> SessionKey {
        SessionKey::new([7; 32])
    }

    #[test]
    fn a_session_opens_with_its_key_and_binding_until_it_expires() {
        let cookie = key().issue("hash\0gen1", [1; 16], NOW);
        assert_eq!(key().open("hash\0gen1", &cookie, NOW + 10).as_deref(), Some(to_hex(&[1; 16]).as_str()));
        assert_eq!(key().open("hash\0gen1", &cookie, NOW + SESSION_SECS), None, "expired");
        assert_eq!(key().open("hash\0gen2", &cookie, NOW), None, "after a logout");
        assert_eq!(key().open("other hash\0gen1", &cookie, NOW), None, "after a new password");
        assert_eq!(SessionKey::new([8; 32]).open("hash\0gen1", &cookie, NOW), None, "another key");
    }

    #[test]
    fn a_tampered_cookie_does_not_open() {
        let cookie = key().issue("b", [1; 16], NOW);
        let (expiry, rest) = cookie.split_once('.').expect("parts");
        let later = format!("{}.{rest}", expiry.parse::<u64>().expect("expiry") + 1000);
        assert_eq!(key().open("b", &later, NOW), None);
        for bad in ["", "1.2", "x.y.z", &format!("{cookie}.extra")] {
            assert_eq!(key().open("b", bad, NOW), None, "{bad}");
        }
    }

    #[test]
    fn a_csrf_token_belongs_to_one_session_and_one_purpose() {
        let token = key().csrf("session", "abc");
        assert!(key().csrf_ok("session", "abc", &token));
        assert!(!key().csrf_ok("session", "abd", &token));
        assert!(!key().csrf_ok("login", "abc", &token));
        assert!(!key().csrf_ok("session", "", &key().csrf("session", "")));
    }

    #[test]
    fn cookies_and_hex_are_read_back() {
        assert_eq!(cookie("a=1; outpost_session=x.y.z; b=2", "outpost_session"), Some("x.y.z"));
        assert_eq!(cookie("a=1", "outpost_session"), None);
        let k = SessionKey::new([0xab; 32]);
        assert_eq!(SessionKey::from_hex(&k.to_hex()).map(|k| k.0), Some([0xab; 32]));
        assert_eq!(from_hex("zz"), None);
    }
}
