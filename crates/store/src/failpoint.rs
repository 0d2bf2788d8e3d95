//! Failpoints: named places in the real code where a test kills the process.
//!
//! Every transaction passes two ([`BEFORE_COMMIT`], [`AFTER_COMMIT`]), on every node. With the
//! feature `failpoints` off (every build but the simulator's and the tests'), [`hit`] is empty
//! and compiles to nothing. With it on, a thread can [`arm`] a countdown: the hit that brings it
//! to zero unwinds with [`Killed`], as a process killed at that instant would stop. The
//! transaction it was in rolls back (as SQLite's journal undoes an uncommitted transaction
//! after a crash), and the caller opens the database again, as a restarted process does.
//!
//! The countdown belongs to the thread that armed it, so tests running side by side never kill
//! each other, and a simulated run stays deterministic.

/// Reached when a transaction's work is done and it is about to commit.
pub const BEFORE_COMMIT: &str = "before commit";
/// Reached just after a transaction committed, before its caller learns it.
pub const AFTER_COMMIT: &str = "after commit";

/// The unwinding payload of a killed "process": where it stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Killed {
    pub at: &'static str,
}

#[cfg(feature = "failpoints")]
mod armed {
    use super::Killed;
    use std::cell::Cell;

    thread_local! {
        static COUNTDOWN: Cell<Option<u64>> = const { Cell::new(None) };
    }

    /// Kills this thread at its `after`-th failpoint from now (0: the next one).
    pub fn arm(after: u64) {
        COUNTDOWN.with(|c| c.set(Some(after)));
    }

    /// Stops the countdown; true if it had not fired yet.
    pub fn disarm() -> bool {
        COUNTDOWN.with(|c| c.take().is_some())
    }

    pub fn hit(at: &'static str) {
        let fire = COUNTDOWN.with(|c| match c.get() {
            Some(0) => {
                c.set(None);
                true
            }
            Some(n) => {
                c.set(Some(n - 1));
                false
            }
            None => false,
        });
        if fire {
            std::panic::panic_any(Killed { at });
        }
    }
}

#[cfg(feature = "failpoints")]
pub use armed::{arm, disarm, hit};

/// A failpoint (feature `failpoints` off: nothing).
#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_at: &'static str) {}
