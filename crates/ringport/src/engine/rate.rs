//! The per-connection message rate limit (`ServerConfig::max_message_rate`):
//! a token bucket kept as one time stamp per connection (the generic cell
//! rate algorithm), charged for every message handed to the handler.
//!
//! The stamp is the bucket's "theoretical arrival time": a message
//! conforms while it is at most `burst - 1` intervals ahead of now, and
//! each message moves it one interval on. Stamps live in their own paged
//! table, so a server without the limit never allocates one; with it, a
//! connection costs 8 bytes. Time is the engine's `now` (virtual in tests).
//!
//! - Policy pause: after a message that leaves the bucket empty, reading
//!   stops (the rest of the receive waits in the backlog, further input in
//!   the kernel) until the next message conforms; a heap of such
//!   deadlines is looked at every turn.
//! - Policy close: a message that does not conform closes the connection
//!   with [`crate::CloseReason::RateLimited`] instead of being delivered.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use super::paged::PagedTable;
use crate::limits::{MessageRateLimit, RateLimitPolicy};

/// A shard's message rate limiting.
pub(crate) struct Rates {
    limit: Option<MessageRateLimit>,
    /// Per slot: the bucket's time stamp, nanoseconds since the engine's
    /// epoch plus one (0: a fresh bucket).
    stamps: PagedTable<u64>,
    /// Connections paused by the limit: (when they may go on, slot,
    /// generation), earliest first.
    held: BinaryHeap<Reverse<(u64, u32, u32)>>,
}

impl Rates {
    pub fn new(limit: Option<MessageRateLimit>, table: usize) -> Self {
        Rates {
            limit,
            // No page is allocated without the limit (nothing writes).
            stamps: PagedTable::new(table),
            held: BinaryHeap::new(),
        }
    }

    /// Whether a limit is set (the per-message check is skipped without).
    #[inline]
    pub fn on(&self) -> bool {
        self.limit.is_some()
    }

    /// Forgets a freed slot's bucket.
    pub fn forget(&mut self, slot: usize) {
        if let Some(stamp) = self.stamps.get_mut_if_allocated(slot) {
            *stamp = 0;
        }
    }

    /// When the next held connection may go on, for the engine's wake-up.
    pub fn next_deadline(&self, epoch: Instant) -> Option<Instant> {
        self.held
            .peek()
            .map(|Reverse((at, _, _))| epoch + Duration::from_nanos(*at))
    }
}

/// What the rate limit says about a message about to be delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Charge {
    /// Deliver it.
    Deliver,
    /// Deliver it, then stop reading until `resume_at` (nanoseconds since
    /// the epoch): the bucket is empty (policy pause).
    DeliverThenPause {
        /// When the next message conforms.
        resume_at: u64,
    },
    /// Over the limit (policy close): do not deliver it, close.
    Close,
}

/// What the engine did with a message after charging it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Deliver it.
    Deliver,
    /// Deliver it, then stop reading: the bucket is empty.
    DeliverThenPause,
    /// Do not deliver it: the connection is closed.
    Closed,
}

impl Rates {
    /// Charges one message of `slot` at `now` (nanoseconds since the
    /// epoch) to its bucket.
    pub fn charge(&mut self, slot: usize, now: u64) -> Charge {
        let Some(limit) = self.limit else {
            return Charge::Deliver;
        };
        let (interval, tolerance) = (limit.interval_ns(), limit.tolerance_ns());
        let stamp = &mut self.stamps[slot];
        let tat = stamp.saturating_sub(1).max(now);
        // Only under the close policy can a message arrive over the budget
        // (under pause, reading stopped before it).
        if tat > now + tolerance && limit.policy == RateLimitPolicy::Close {
            return Charge::Close;
        }
        let tat = tat + interval;
        *stamp = tat + 1;
        if limit.policy == RateLimitPolicy::Pause && tat > now + tolerance {
            return Charge::DeliverThenPause {
                resume_at: tat - tolerance,
            };
        }
        Charge::Deliver
    }

    /// The connection of `generation` in `slot` paused until `resume_at`.
    pub fn hold(&mut self, slot: usize, generation: u32, resume_at: u64) {
        self.held
            .push(Reverse((resume_at, slot as u32, generation)));
    }

    /// A held connection (slot, generation) whose time came by `now`; it
    /// is no longer held here.
    pub fn next_due(&mut self, now: u64) -> Option<(usize, u32)> {
        let &Reverse((at, slot, generation)) = self.held.peek()?;
        if at > now {
            return None;
        }
        self.held.pop();
        Some((slot as usize, generation))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn rates(per_second: u32, burst: u32, policy: RateLimitPolicy) -> Rates {
        let limit = MessageRateLimit {
            per_second,
            burst,
            policy,
        };
        Rates::new(Some(limit), 8)
    }

    #[test]
    fn a_burst_conforms_then_each_interval_earns_one_message() {
        // 100 per second: one message per 10 ms, bursts of 3.
        let mut r = rates(100, 3, RateLimitPolicy::Close);
        let t = 1_000 * MS;
        for _ in 0..3 {
            assert_eq!(r.charge(0, t), Charge::Deliver);
        }
        assert_eq!(r.charge(0, t), Charge::Close, "the burst is spent");
        assert_eq!(r.charge(0, t + 10 * MS), Charge::Deliver, "one more earned");
        assert_eq!(r.charge(1, t), Charge::Deliver, "buckets are per slot");
    }

    #[test]
    fn under_pause_the_message_that_empties_the_bucket_says_when_to_go_on() {
        let mut r = rates(100, 2, RateLimitPolicy::Pause);
        let t = 1_000 * MS;
        assert_eq!(r.charge(0, t), Charge::Deliver);
        let Charge::DeliverThenPause { resume_at } = r.charge(0, t) else {
            panic!("the second message empties a bucket of 2");
        };
        assert_eq!(resume_at, t + 10 * MS);
        assert_eq!(
            r.charge(0, resume_at),
            Charge::DeliverThenPause {
                resume_at: resume_at + 10 * MS
            }
        );
    }

    #[test]
    fn held_connections_come_due_in_time_order() {
        let mut r = rates(100, 1, RateLimitPolicy::Pause);
        r.hold(4, 7, 30);
        r.hold(2, 9, 10);
        assert_eq!(r.next_due(5), None);
        assert_eq!(r.next_due(30), Some((2, 9)));
        assert_eq!(r.next_due(30), Some((4, 7)));
        assert_eq!(r.next_due(u64::MAX), None);
        assert!(r.next_deadline(super::super::tests::virtual_t0()).is_none());
    }

    #[test]
    fn a_freed_slot_starts_with_a_full_bucket() {
        let mut r = rates(100, 1, RateLimitPolicy::Close);
        assert_eq!(r.charge(3, 0), Charge::Deliver);
        assert_eq!(r.charge(3, 0), Charge::Close);
        r.forget(3);
        assert_eq!(r.charge(3, 0), Charge::Deliver);
    }

    #[test]
    fn without_a_limit_everything_is_delivered() {
        let mut r = Rates::new(None, 8);
        assert!(!r.on());
        assert_eq!(r.charge(0, 0), Charge::Deliver);
    }
}
