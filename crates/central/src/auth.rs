//! Password checks with bounded cost, for sites and for the administrator.
//!
//! One argon2 verification takes about 19 MiB and tens of milliseconds. Run for every request
//! that carries a password, it lets anyone with a list of wrong passwords exhaust the server's
//! memory and starve the sites that sync honestly. So [`Verifier`]:
//! - runs at most a few verifications at once, each in a memory block kept for the next one
//!   (so the server's memory for argon2 is fixed, whatever the load);
//! - refuses for a while, with a retry delay, an account or an address that keeps failing
//!   ([`Failures`]), and logs it;
//! - remembers credentials it verified, keyed on the stored hash too, so that a site's syncs pay
//!   argon2 once per process, and a password changed anywhere (another process, another server
//!   on the same PostgreSQL) is never taken from memory: the caller reads the stored hash on
//!   every request, which is cheap.

use argon2::password_hash::PasswordHash;
use argon2::{Algorithm, Argon2, Block, Params, Version};
use blake2::digest::{KeyInit, Mac};
use blake2::Blake2sMac256;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Whose password is checked.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Account {
    Site(String),
    Admin,
}

impl fmt::Display for Account {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Account::Site(site) => write!(f, "site `{site}`"),
            Account::Admin => f.write_str("the administrator"),
        }
    }
}

/// Why a password was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// An unknown account, or a wrong password.
    Wrong,
    /// Too many recent failures for this account or from this address: not even checked.
    Throttled { retry_after: Duration, because: String },
    /// Every verification slot stayed taken for too long.
    Busy { retry_after: Duration },
}

impl Refusal {
    /// The delay to put in a `Retry-After` header, in whole seconds (at least one).
    pub fn retry_after_secs(&self) -> Option<u64> {
        match self {
            Refusal::Wrong => None,
            Refusal::Throttled { retry_after, .. } | Refusal::Busy { retry_after } => {
                Some(retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0)).map(|s| s.max(1))
            }
        }
    }
}

/// How many wrong passwords an account may have before it is slowed down.
const ACCOUNT_FREE_FAILURES: u32 = 5;
/// How many an address may have: higher, because many sites may sit behind one address.
const ADDRESS_FREE_FAILURES: u32 = 50;
/// The first refusal lasts this long; each further failure doubles it, up to [`MAX_BLOCK`].
const FIRST_BLOCK: Duration = Duration::from_secs(1);
const MAX_BLOCK: Duration = Duration::from_secs(60);
/// Failures older than this are forgotten.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// At most this many accounts and addresses are tracked (an attacker may use many addresses).
const MAX_TRACKED: usize = 10_000;
/// How long a request waits for a verification slot before it is told to come back.
const SLOT_WAIT: Duration = Duration::from_secs(2);
/// The largest argon2 memory (in 1 KiB blocks) a stored hash may ask for: 64 MiB.
const MAX_BLOCKS: usize = 64 * 1024;

/// What failed recently.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Account(Account),
    Address(IpAddr),
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Account(account) => write!(f, "for {account}"),
            Key::Address(addr) => write!(f, "from {addr}"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    count: u32,
    last: Instant,
    blocked_until: Instant,
}

/// Recent failed sign-ins, by account and by address, and the refusals they earn. Pure: the
/// caller gives the time.
#[derive(Debug, Default)]
pub struct Failures {
    entries: HashMap<Key, Entry>,
}

impl Failures {
    /// Whether `key` is refused at `now`, and for how much longer.
    fn blocked(&self, key: &Key, now: Instant) -> Option<Duration> {
        let entry = self.entries.get(key)?;
        (entry.blocked_until > now).then(|| entry.blocked_until - now)
    }

    /// Counts a failure; returns the refusal it starts, if any.
    fn record(&mut self, key: Key, free: u32, now: Instant) -> Option<Duration> {
        if !self.entries.contains_key(&key) && self.entries.len() >= MAX_TRACKED {
            self.make_room(now);
        }
        let entry = self.entries.entry(key).or_insert(Entry { count: 0, last: now, blocked_until: now });
        if now.duration_since(entry.last) > FORGET_AFTER {
            entry.count = 0;
        }
        entry.count = entry.count.saturating_add(1);
        entry.last = now;
        let over = entry.count.checked_sub(free + 1)?;
        let block = FIRST_BLOCK.saturating_mul(1u32 << over.min(16)).min(MAX_BLOCK);
        entry.blocked_until = now + block;
        Some(block)
    }

    fn clear(&mut self, key: &Key) {
        self.entries.remove(key);
    }

    fn make_room(&mut self, now: Instant) {
        self.entries.retain(|_, e| now.duration_since(e.last) <= FORGET_AFTER || e.blocked_until > now);
        if self.entries.len() >= MAX_TRACKED {
            if let Some(oldest) = self.entries.iter().min_by_key(|(_, e)| e.last).map(|(k, _)| k.clone()) {
                self.entries.remove(&oldest);
            }
        }
    }
}

/// Checks passwords against stored argon2 hashes with bounded cost (see the module's doc).
#[derive(Debug)]
pub struct Verifier {
    slots: Semaphore,
    /// argon2's working memory, one block per slot at most, reused from one check to the next.
    memory: Mutex<Vec<Vec<Block>>>,
    failures: Mutex<Failures>,
    /// A keyed digest of (account, password, stored hash) last verified, per account.
    verified: Mutex<HashMap<Account, [u8; 32]>>,
    /// The key of those digests, random per process: memory alone does not reveal a password.
    key: [u8; 32],
    /// argon2 checks run, and those that found no free slot at once (for `/metrics`).
    checks: std::sync::atomic::AtomicU64,
    waited: std::sync::atomic::AtomicU64,
}

impl Default for Verifier {
    fn default() -> Verifier {
        // Two to four at once: enough for sites that sign in after a restart, little memory.
        let slots = std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 4));
        Verifier::new(slots)
    }
}

impl Verifier {
    /// A verifier running at most `slots` argon2 verifications at once.
    pub fn new(slots: usize) -> Verifier {
        let mut key = [0u8; 32];
        // Without the OS random source the digests are still keyed on the stored hash; only
        // the protection of a memory dump is lost.
        if getrandom::fill(&mut key).is_err() {
            tracing::warn!("the operating system's random source is unavailable");
        }
        Verifier {
            slots: Semaphore::new(slots.max(1)),
            memory: Mutex::new(Vec::new()),
            failures: Mutex::default(),
            verified: Mutex::default(),
            key,
            checks: Default::default(),
            waited: Default::default(),
        }
    }

    /// How many argon2 checks ran, and how many of them waited for a slot.
    pub fn stats(&self) -> crate::metrics::Argon2Stats {
        use std::sync::atomic::Ordering::Relaxed;
        crate::metrics::Argon2Stats { checks: self.checks.load(Relaxed), waited: self.waited.load(Relaxed) }
    }

    /// Checks `password` for `account`, whose stored hash is `stored` (`None`: no such
    /// account), asked from `addr`.
    pub async fn check(
        &self,
        account: &Account,
        addr: Option<IpAddr>,
        password: &str,
        stored: Option<String>,
    ) -> Result<(), Refusal> {
        let Some(stored) = stored else {
            // Nothing to verify, so nothing costly; only the address is counted (account names
            // that do not exist would let anyone fill the table). A refused address is refused
            // alike for every name, so that its answers do not tell which sites exist.
            self.throttled(None, addr)?;
            self.failed(None, addr);
            return Err(Refusal::Wrong);
        };
        let digest = self.digest(account, password, &stored);
        if self.verified.lock().is_ok_and(|v| v.get(account) == Some(&digest)) {
            return Ok(());
        }
        self.throttled(Some(account), addr)?;
        use std::sync::atomic::Ordering::Relaxed;
        self.checks.fetch_add(1, Relaxed);
        let permit = match self.slots.try_acquire() {
            Ok(permit) => permit,
            Err(_) => {
                self.waited.fetch_add(1, Relaxed);
                match tokio::time::timeout(SLOT_WAIT, self.slots.acquire()).await {
                    Ok(Ok(permit)) => permit,
                    _ => return Err(Refusal::Busy { retry_after: Duration::from_secs(1) }),
                }
            }
        };
        // Failures may have piled up while this request waited.
        self.throttled(Some(account), addr)?;
        let mut memory = self.memory.lock().ok().and_then(|mut pool| pool.pop()).unwrap_or_default();
        let password_owned = password.to_owned();
        let (ok, memory) = tokio::task::spawn_blocking(move || {
            let ok = verify_in(&password_owned, &stored, &mut memory);
            (ok, memory)
        })
        .await
        .unwrap_or_else(|e| {
            tracing::error!(%account, error = %e, "checking a password failed; taken as a wrong password");
            (false, Vec::new())
        });
        if let Ok(mut pool) = self.memory.lock() {
            pool.push(memory);
        }
        drop(permit);
        if ok {
            if let Ok(mut failures) = self.failures.lock() {
                failures.clear(&Key::Account(account.clone()));
            }
            if let Ok(mut verified) = self.verified.lock() {
                verified.insert(account.clone(), digest);
            }
            Ok(())
        } else {
            self.failed(Some(account), addr);
            Err(Refusal::Wrong)
        }
    }

    fn digest(&self, account: &Account, password: &str, stored: &str) -> [u8; 32] {
        let name = match account {
            Account::Site(site) => site.as_str(),
            Account::Admin => "",
        };
        // The key is 32 bytes, which Blake2s accepts.
        let Ok(mut mac) = <Blake2sMac256 as KeyInit>::new_from_slice(&self.key) else { return [0; 32] };
        for part in [name.as_bytes(), password.as_bytes(), stored.as_bytes()] {
            mac.update(&(part.len() as u64).to_le_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    fn throttled(&self, account: Option<&Account>, addr: Option<IpAddr>) -> Result<(), Refusal> {
        let now = Instant::now();
        let Ok(failures) = self.failures.lock() else { return Ok(()) };
        let keys = account.map(|a| Key::Account(a.clone())).into_iter().chain(addr.map(Key::Address));
        let longest =
            keys.filter_map(|key| failures.blocked(&key, now).map(|wait| (wait, key))).max_by_key(|(w, _)| *w);
        match longest {
            Some((retry_after, key)) => Err(Refusal::Throttled { retry_after, because: key.to_string() }),
            None => Ok(()),
        }
    }

    fn failed(&self, account: Option<&Account>, addr: Option<IpAddr>) {
        let now = Instant::now();
        let Ok(mut failures) = self.failures.lock() else { return };
        let keys = account
            .map(|a| (Key::Account(a.clone()), ACCOUNT_FREE_FAILURES))
            .into_iter()
            .chain(addr.map(|a| (Key::Address(a), ADDRESS_FREE_FAILURES)));
        for (key, free) in keys {
            let what = key.to_string();
            if let Some(block) = failures.record(key, free, now) {
                tracing::warn!("repeated failed sign-ins {what}; refusing further attempts for {} s", block.as_secs());
            }
        }
        let who = account.map_or_else(|| "an unknown account".to_owned(), ToString::to_string);
        let from = addr.map_or_else(|| "an unknown address".to_owned(), |a| a.to_string());
        tracing::warn!("sign-in failed for {who} from {from}: unknown account or wrong password");
    }
}

/// Checks a password against a stored argon2 hash (PHC string), in `memory`, which is grown to
/// what the hash needs and kept by the caller for the next check.
fn verify_in(password: &str, stored: &str, memory: &mut Vec<Block>) -> bool {
    let Ok(hash) = PasswordHash::new(stored) else { return false };
    let (Ok(algorithm), Ok(params)) = (Algorithm::try_from(hash.algorithm), Params::try_from(&hash)) else {
        return false;
    };
    let version = match hash.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(version)) => version,
        Some(Err(_)) => return false,
    };
    let (Some(salt), Some(expected)) = (hash.salt, hash.hash) else { return false };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_bytes) else { return false };
    let blocks = params.block_count();
    if blocks > MAX_BLOCKS {
        tracing::error!(blocks, "a stored password hash asks for more argon2 memory than allowed");
        return false;
    }
    if memory.len() < blocks {
        memory.resize(blocks, Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    let hashed = Argon2::new(algorithm, version, params).hash_password_into_with_memory(
        password.as_bytes(),
        salt,
        &mut out,
        &mut memory[..blocks],
    );
    hashed.is_ok() && constant_time_eq(&out, expected.as_bytes())
}

/// Compares without stopping at the first difference.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::hash_password;

    #[test]
    fn verification_in_reused_memory_accepts_the_password_and_nothing_else() {
        let hash = hash_password("correct horse").expect("hash");
        let mut memory = Vec::new();
        assert!(verify_in("correct horse", &hash, &mut memory));
        assert!(!verify_in("correct horsf", &hash, &mut memory));
        assert!(verify_in("correct horse", &hash, &mut memory), "the reused memory gives the same answer");
        assert!(!verify_in("correct horse", "not a hash", &mut memory));
    }

    #[test]
    fn an_account_is_refused_for_a_while_after_repeated_failures_and_longer_each_time() {
        let mut failures = Failures::default();
        let key = Key::Account(Account::Site("north".into()));
        let t0 = Instant::now();
        for _ in 0..ACCOUNT_FREE_FAILURES {
            assert_eq!(failures.record(key.clone(), ACCOUNT_FREE_FAILURES, t0), None);
        }
        assert_eq!(failures.blocked(&key, t0), None);
        assert_eq!(failures.record(key.clone(), ACCOUNT_FREE_FAILURES, t0), Some(FIRST_BLOCK));
        assert_eq!(failures.blocked(&key, t0), Some(FIRST_BLOCK));
        assert_eq!(failures.blocked(&key, t0 + FIRST_BLOCK), None);
        assert_eq!(failures.record(key.clone(), ACCOUNT_FREE_FAILURES, t0), Some(FIRST_BLOCK * 2));
        for _ in 0..20 {
            failures.record(key.clone(), ACCOUNT_FREE_FAILURES, t0);
        }
        assert_eq!(failures.blocked(&key, t0), Some(MAX_BLOCK));
        // Forgotten after a quiet while.
        let later = t0 + FORGET_AFTER + Duration::from_secs(61);
        assert_eq!(failures.record(key.clone(), ACCOUNT_FREE_FAILURES, later), None);
    }

    #[test]
    fn the_failure_table_stays_bounded() {
        let mut failures = Failures::default();
        let now = Instant::now();
        for i in 0..(MAX_TRACKED as u32 + 100) {
            failures.record(Key::Address(IpAddr::from(i.to_be_bytes())), ADDRESS_FREE_FAILURES, now);
        }
        assert!(failures.entries.len() <= MAX_TRACKED);
    }

    #[tokio::test]
    async fn a_verified_password_is_remembered_until_the_stored_hash_changes() {
        let verifier = Verifier::new(2);
        let north = Account::Site("north".into());
        let old = hash_password("old password").expect("hash");
        assert_eq!(verifier.check(&north, None, "old password", Some(old.clone())).await, Ok(()));
        assert!(verifier.verified.lock().expect("lock").contains_key(&north));
        assert_eq!(verifier.check(&north, None, "old password", Some(old.clone())).await, Ok(()));
        // A wrong guess does not make the site pay argon2 (and risk a refusal) again.
        assert_eq!(verifier.check(&north, None, "a guess", Some(old.clone())).await, Err(Refusal::Wrong));
        let remembered = verifier.verified.lock().expect("lock").get(&north).copied();
        assert_eq!(remembered, Some(verifier.digest(&north, "old password", &old)));
        let new = hash_password("new password").expect("hash");
        assert_eq!(verifier.check(&north, None, "old password", Some(new.clone())).await, Err(Refusal::Wrong));
        assert_eq!(verifier.check(&north, None, "new password", Some(new)).await, Ok(()));
        assert_eq!(verifier.check(&north, None, "new password", None).await, Err(Refusal::Wrong));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn argon2_memory_is_held_once_per_slot_whatever_the_load() {
        let verifier = std::sync::Arc::new(Verifier::new(2));
        let hash = hash_password("right").expect("hash");
        let checks: Vec<_> = (0..12)
            .map(|i| {
                let (verifier, hash) = (verifier.clone(), hash.clone());
                tokio::spawn(
                    async move { verifier.check(&Account::Site(format!("s{i}")), None, "wrong", Some(hash)).await },
                )
            })
            .collect();
        for check in checks {
            assert_eq!(check.await.expect("the check ran"), Err(Refusal::Wrong));
        }
        assert!(verifier.memory.lock().expect("lock").len() <= 2, "more argon2 memory blocks than slots");
    }

    #[test]
    fn retry_after_is_rounded_up_to_whole_seconds() {
        let busy = Refusal::Busy { retry_after: Duration::from_millis(1500) };
        assert_eq!(busy.retry_after_secs(), Some(2));
        let soon = Refusal::Throttled { retry_after: Duration::from_millis(10), because: String::new() };
        assert_eq!(soon.retry_after_secs(), Some(1));
        assert_eq!(Refusal::Wrong.retry_after_secs(), None);
    }
}
