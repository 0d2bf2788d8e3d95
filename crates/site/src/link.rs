//! What a site knows about its link to the central server: the bytes moving right now, and the
//! rates measured on the last exchanges, from which it sizes the next page.
//!
//! Our sites sit on links from 9.6 kbit/s to a LAN. One fixed page size cannot suit both: a
//! page that takes a second on loopback takes ten minutes at 9.6 kbit/s, and a cut near its end
//! throws all of it away. So every push batch and pull page is sized to take a bounded time
//! ([`PUSH_SECS`], [`PULL_SECS`]) at the rate measured so far, and the timeouts are about
//! silence ([`stall_timeout`]), never about the length of honest work.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

/// How long a push batch should take on the wire. Long enough that a round trip of a second is
/// a small part of it, short enough that a cut (which costs the whole batch) costs little.
pub const PUSH_SECS: f64 = 10.0;
/// How long a pull page should take. Longer than a push batch: a cut page keeps what arrived
/// whole of it, so a long page costs little more when cut, and each page costs a round trip
/// (the next is asked for once this one is in).
pub const PULL_SECS: f64 = 20.0;

/// The site gives a connection up after this long without a byte moving either way, unless
/// `OUTPOST_STALL_SECS` says otherwise. TCP backs off its retransmissions after a cut (up to a
/// minute and more between tries); a new connection after a short silence is quicker.
pub const DEFAULT_STALL_SECS: u64 = 20;

/// The environment variable that changes [`DEFAULT_STALL_SECS`].
pub const STALL_ENV: &str = "OUTPOST_STALL_SECS";

/// The slowest rate a site is expected to have (9.6 kbit/s, in bytes per second), assumed until
/// a rate is measured.
pub const SLOWEST_RATE: f64 = 1_200.0;

/// An exchange moving fewer bytes than this says more about the round trip than about the
/// rate, and is not measured.
const MEASURABLE_BYTES: u64 = 4 * 1024;

/// The silence after which a connection is given up.
pub fn stall_timeout() -> Duration {
    let secs = std::env::var(STALL_ENV).ok().and_then(|v| v.trim().parse::<f64>().ok()).filter(|s| *s > 0.0);
    Duration::from_secs_f64(secs.unwrap_or(DEFAULT_STALL_SECS as f64))
}

/// One direction of the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Site to central server (pushes).
    Up,
    /// Central server to site (pulls).
    Down,
}

/// The link as this site measured it. Shared by the threads of one sync (the pull fetcher and
/// the one applying pages) and by whatever shows progress.
#[derive(Debug, Default)]
pub struct Link {
    sent: AtomicU64,
    received: AtomicU64,
    measured: Mutex<Measured>,
}

/// Bytes per second of wall time for a whole exchange (round trip and server time included:
/// what a page really costs), and records bytes per wire byte (how well the pages compress).
#[derive(Debug, Default, Clone, Copy)]
struct Measured {
    up: Option<f64>,
    down: Option<f64>,
    up_ratio: Option<f64>,
    down_ratio: Option<f64>,
}

impl Link {
    /// Request body bytes handed to the connection so far (compressed, as on the wire).
    pub fn sent(&self) -> u64 {
        self.sent.load(Relaxed)
    }

    /// Response body bytes received so far (compressed, as on the wire).
    pub fn received(&self) -> u64 {
        self.received.load(Relaxed)
    }

    /// Counts request bytes handed to the connection. (`count_sent`, `count_received`,
    /// `record` and `record_ratio` are what an exchange reports; HTTP's in `client.rs`, the
    /// simulator's over its simulated link.)
    pub fn count_sent(&self, bytes: usize) {
        self.sent.fetch_add(bytes as u64, Relaxed);
    }

    pub fn count_received(&self, bytes: usize) {
        self.received.fetch_add(bytes as u64, Relaxed);
    }

    /// The measured rate one way, in bytes per second, if any.
    pub fn rate(&self, direction: Direction) -> Option<f64> {
        let measured = self.measured();
        match direction {
            Direction::Up => measured.up,
            Direction::Down => measured.down,
        }
    }

    /// Notes one exchange: `bytes` moved the way that mattered, in `elapsed` of wall time.
    pub fn record(&self, direction: Direction, bytes: u64, elapsed: Duration) {
        if bytes < MEASURABLE_BYTES || elapsed.is_zero() {
            return;
        }
        let sample = bytes as f64 / elapsed.as_secs_f64();
        let mut measured = self.measured.lock().unwrap_or_else(|e| e.into_inner());
        let slot = match direction {
            Direction::Up => &mut measured.up,
            Direction::Down => &mut measured.down,
        };
        // Half the old and half the new: quick to follow a link that changes, not thrown by
        // one odd page.
        *slot = Some(slot.map_or(sample, |old| (old + sample) / 2.0));
    }

    /// Notes how many bytes of records one wire byte carried.
    pub fn record_ratio(&self, direction: Direction, records: usize, wire: usize) {
        if wire == 0 || records < MEASURABLE_BYTES as usize {
            return;
        }
        let ratio = records as f64 / wire as f64;
        let mut measured = self.measured.lock().unwrap_or_else(|e| e.into_inner());
        match direction {
            Direction::Up => measured.up_ratio = Some(ratio),
            Direction::Down => measured.down_ratio = Some(ratio),
        }
    }

    /// After a stall or a cut the link is worse than measured: the next page is half the size.
    pub(crate) fn slowed(&self) {
        let mut measured = self.measured.lock().unwrap_or_else(|e| e.into_inner());
        measured.up = measured.up.map(|r| r / 2.0);
        measured.down = measured.down.map(|r| r / 2.0);
    }

    /// The bytes of records the next page one way should hold: about [`PUSH_SECS`] or
    /// [`PULL_SECS`] at the
    /// measured rate, between `min` and `max`, and never more than four times `previous` (a
    /// page grows only as fast as its measurements can follow). `first` is the size of a page
    /// when nothing is measured yet.
    pub fn page_bytes(
        &self,
        direction: Direction,
        previous: Option<usize>,
        first: usize,
        min: usize,
        max: usize,
    ) -> usize {
        let measured = self.measured();
        let (rate, ratio, secs) = match direction {
            Direction::Up => (measured.up, measured.up_ratio, PUSH_SECS),
            Direction::Down => (measured.down, measured.down_ratio, PULL_SECS),
        };
        let Some(rate) = rate else { return previous.unwrap_or(first).clamp(min, max) };
        // Before the first measured page, assume records compress as ours do (about 1:7).
        let wire = rate * secs;
        let records = (wire * ratio.unwrap_or(7.0)) as usize;
        let records = previous.map_or(records, |p| records.min(p.saturating_mul(4)));
        records.clamp(min, max)
    }

    /// How long the central server may be silent after a request of `body` bytes, before its
    /// answer: the stall timeout, plus the time the request may still need to leave this
    /// machine (a write returns once the kernel holds the bytes, not once they are sent).
    pub(crate) fn answer_timeout(&self, stall: Duration, body: usize) -> Duration {
        let rate = self.rate(Direction::Up).unwrap_or(SLOWEST_RATE).max(SLOWEST_RATE);
        let draining = Duration::from_secs_f64(body as f64 / rate);
        (stall + draining).min(Duration::from_secs(3_600))
    }

    /// The measured rates, as a site stores them between syncs (`up:down`, bytes per second,
    /// 0 for a way not measured).
    pub fn to_state(&self) -> Option<String> {
        let measured = self.measured();
        if measured.up.is_none() && measured.down.is_none() {
            return None;
        }
        Some(format!("{:.0}:{:.0}", measured.up.unwrap_or(0.0), measured.down.unwrap_or(0.0)))
    }

    /// Starts from rates measured by an earlier sync (see [`Link::to_state`]), unless this
    /// link has measured its own.
    pub fn resume_from_state(&self, text: &str) {
        let Some((up, down)) = text.split_once(':') else { return };
        let (Ok(up), Ok(down)) = (up.parse::<f64>(), down.parse::<f64>()) else { return };
        let mut measured = self.measured.lock().unwrap_or_else(|e| e.into_inner());
        if up > 0.0 && measured.up.is_none() {
            measured.up = Some(up);
        }
        if down > 0.0 && measured.down.is_none() {
            measured.down = Some(down);
        }
    }

    fn measured(&self) -> Measured {
        *self.measured.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIRST: usize = 64 * 1024;
    const MIN: usize = 16 * 1024;
    const MAX: usize = 6 * 1024 * 1024;

    #[test]
    fn pages_are_sized_to_the_measured_link() {
        let slow = Link::default();
        // 9.6 kbit/s: 1,200 bytes/s; records compress 1:7. A pull page takes 20 s, a push
        // batch 10 s.
        slow.record(Direction::Down, 12_000, Duration::from_secs(10));
        slow.record_ratio(Direction::Down, 84_000, 12_000);
        assert_eq!(slow.page_bytes(Direction::Down, None, FIRST, MIN, MAX), 168_000);
        slow.record(Direction::Up, 12_000, Duration::from_secs(10));
        slow.record_ratio(Direction::Up, 84_000, 12_000);
        assert_eq!(slow.page_bytes(Direction::Up, None, FIRST, MIN, MAX), 84_000);

        let loopback = Link::default();
        loopback.record(Direction::Down, 50_000_000, Duration::from_secs(1));
        assert_eq!(loopback.page_bytes(Direction::Down, None, FIRST, MIN, MAX), MAX);
    }

    #[test]
    fn a_page_grows_at_most_fourfold_and_starts_small() {
        let link = Link::default();
        assert_eq!(link.page_bytes(Direction::Up, None, FIRST, MIN, MAX), FIRST);
        link.record(Direction::Up, 1_000_000, Duration::from_secs(1));
        assert_eq!(link.page_bytes(Direction::Up, Some(FIRST), FIRST, MIN, MAX), 4 * FIRST);
    }

    #[test]
    fn a_stall_halves_the_next_page_and_tiny_exchanges_are_not_measured() {
        let link = Link::default();
        link.record(Direction::Down, 100, Duration::from_secs(1));
        assert_eq!(link.rate(Direction::Down), None);
        link.record(Direction::Down, 20_000, Duration::from_secs(1));
        link.slowed();
        assert_eq!(link.rate(Direction::Down), Some(10_000.0));
    }

    #[test]
    fn the_answer_may_wait_for_a_request_still_leaving() {
        let link = Link::default();
        let stall = Duration::from_secs(20);
        // Nothing measured: the slowest link is assumed.
        assert_eq!(link.answer_timeout(stall, 12_000), Duration::from_secs(30));
        link.record(Direction::Up, 100_000, Duration::from_secs(1));
        assert_eq!(link.answer_timeout(stall, 100_000), Duration::from_secs(21));
    }

    #[test]
    fn rates_survive_between_syncs() {
        let link = Link::default();
        assert_eq!(link.to_state(), None);
        link.record(Direction::Down, 8_000, Duration::from_secs(1));
        assert_eq!(link.to_state().as_deref(), Some("0:8000"));
        link.record(Direction::Up, 10_000, Duration::from_secs(1));
        link.record(Direction::Down, 20_000, Duration::from_secs(1));
        let next = Link::default();
        next.resume_from_state(&link.to_state().expect("both measured"));
        assert_eq!((next.rate(Direction::Up), next.rate(Direction::Down)), (Some(10_000.0), Some(14_000.0)));
        next.resume_from_state("garbage");
        assert_eq!(next.rate(Direction::Up), Some(10_000.0));
    }
}
