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
//!   with [`CloseReason::RateLimited`] instead of being delivered.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

use super::Core;
use super::conn::SlotState;
use super::paged::PagedTable;
use crate::codec::Codec;
use crate::error::CloseReason;
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
pub(super) enum Verdict {
    /// Deliver it.
    Deliver,
    /// Deliver it, then stop reading: the bucket is empty.
    DeliverThenPause,
    /// Do not deliver it: the connection is closed.
    Closed,
}

impl<C: Codec> Core<C> {
    /// Charges one message of `slot` to its bucket (call only when
    /// `self.rate.on()`).
    pub(super) fn rate_charge(&mut self, slot: usize) -> Verdict {
        let Some(limit) = self.rate.limit else {
            return Verdict::Deliver;
        };
        let now = self.clock.now_ns();
        let (interval, tolerance) = (limit.interval_ns(), limit.tolerance_ns());
        let stamp = &mut self.rate.stamps[slot];
        let tat = stamp.saturating_sub(1).max(now);
        if tat > now + tolerance {
            // Only under the close policy can a message arrive over the
            // budget (under pause, reading stopped before it).
            if limit.policy == RateLimitPolicy::Close {
                self.stats.rate_limit_closes += 1;
                tracing::debug!(slot, "message rate over its limit; closing");
                self.begin_close(slot, CloseReason::RateLimited, true);
                return Verdict::Closed;
            }
        }
        let tat = tat + interval;
        *stamp = tat + 1;
        if limit.policy == RateLimitPolicy::Pause && tat > now + tolerance {
            let resume_at = tat - tolerance;
            let s = &mut self.conns[slot];
            if s.state == SlotState::Open && !s.held_by_rate() {
                s.set_held_by_rate(true);
                let generation = s.generation;
                self.rate
                    .held
                    .push(Reverse((resume_at, slot as u32, generation)));
                self.stats.rate_limit_pauses += 1;
                self.pause_reading(slot);
            }
            return Verdict::DeliverThenPause;
        }
        Verdict::Deliver
    }

    /// Resumes the connections whose bucket has a token again.
    pub(super) fn resume_rate_held(&mut self) {
        if self.rate.held.is_empty() {
            return;
        }
        let now = self.clock.now_ns();
        while let Some(&Reverse((at, slot, generation))) = self.rate.held.peek() {
            if at > now {
                break;
            }
            self.rate.held.pop();
            let slot = slot as usize;
            let s = &mut self.conns[slot];
            if s.generation != generation || !s.held_by_rate() {
                continue;
            }
            s.set_held_by_rate(false);
            self.resume_reading_if_free(slot);
        }
    }
}
