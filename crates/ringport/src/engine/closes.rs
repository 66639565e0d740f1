//! The close protocol's bookkeeping: the reason and flush deadline of every
//! closing connection, from `begin_close` until its slot is free.
//!
//! A closing connection's queued data is still sent until its deadline
//! (`close_timeout`, or `stop_timeout` when the server stops, whichever
//! comes first). At the deadline the engine drops what is left; the reason
//! becomes [`CloseReason::SlowConsumer`], unless the server is stopping,
//! which stays the reason.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::error::CloseReason;

/// Why and until when one connection closes.
struct Closing {
    reason: CloseReason,
    /// When queued data stops being waited for.
    deadline: Instant,
}

/// A shard's closing connections, by slot.
#[derive(Default)]
pub(super) struct Closes {
    closing: BTreeMap<u32, Closing>,
}

impl Closes {
    /// `slot` starts closing for `reason`; its queued data is waited for
    /// until `deadline`.
    pub fn begin(&mut self, slot: u32, reason: CloseReason, deadline: Instant) {
        self.closing.insert(slot, Closing { reason, deadline });
    }

    /// The server stops: `slot`'s flush ends by `deadline` at the latest.
    pub fn cap_deadline(&mut self, slot: u32, deadline: Instant) {
        if let Some(c) = self.closing.get_mut(&slot) {
            c.deadline = c.deadline.min(deadline);
        }
    }

    /// The closing slots whose deadline is `now` or past (no allocation
    /// when there is none).
    pub fn overdue(&self, now: Instant) -> Vec<u32> {
        self.closing
            .iter()
            .filter(|(_, c)| c.deadline <= now)
            .map(|(&slot, _)| slot)
            .collect()
    }

    /// `slot`'s peer did not take its data in time: a slow consumer, unless
    /// the server is stopping (which stays the reason).
    pub fn timed_out(&mut self, slot: u32) {
        if let Some(c) = self.closing.get_mut(&slot)
            && c.reason != CloseReason::ServerStopping
        {
            c.reason = CloseReason::SlowConsumer;
        }
    }

    /// `slot` is free: the reason it closed for, if it was closing (a
    /// connection that never opened was not).
    pub fn finish(&mut self, slot: u32) -> Option<CloseReason> {
        self.closing.remove(&slot).map(|c| c.reason)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::tests::virtual_t0;
    use super::*;

    #[test]
    fn a_close_keeps_its_reason_until_the_slot_is_free() {
        let t0 = virtual_t0();
        let mut c = Closes::default();
        c.begin(3, CloseReason::PeerClosed, t0);
        assert_eq!(c.finish(3), Some(CloseReason::PeerClosed));
        assert_eq!(c.finish(3), None, "told once");
        assert_eq!(c.finish(4), None, "never closing");
    }

    #[test]
    fn only_slots_at_or_past_their_deadline_are_overdue() {
        let t0 = virtual_t0();
        let s = Duration::from_secs(1);
        let mut c = Closes::default();
        c.begin(1, CloseReason::Local, t0 + s);
        c.begin(2, CloseReason::Local, t0 + 2 * s);
        c.begin(3, CloseReason::Local, t0 + 3 * s);
        assert_eq!(
            c.overdue(t0 + 2 * s),
            vec![1, 2],
            "at the deadline included"
        );
        assert!(c.overdue(t0).is_empty());
    }

    #[test]
    fn a_stop_only_brings_deadlines_forward() {
        let t0 = virtual_t0();
        let s = Duration::from_secs(1);
        let mut c = Closes::default();
        c.begin(1, CloseReason::ServerStopping, t0 + 5 * s);
        c.begin(2, CloseReason::ServerStopping, t0 + s);
        c.cap_deadline(1, t0 + 2 * s);
        c.cap_deadline(2, t0 + 2 * s);
        c.cap_deadline(7, t0); // not closing: nothing
        assert_eq!(c.overdue(t0 + s), vec![2], "the earlier deadline stays");
        assert_eq!(
            c.overdue(t0 + 2 * s),
            vec![1, 2],
            "the later one was brought forward"
        );
    }

    #[test]
    fn a_timed_out_flush_is_a_slow_consumer_unless_the_server_stops() {
        let t0 = virtual_t0();
        let mut c = Closes::default();
        c.begin(1, CloseReason::Local, t0);
        c.begin(2, CloseReason::ServerStopping, t0);
        c.timed_out(1);
        c.timed_out(2);
        c.timed_out(3); // not closing: nothing
        assert_eq!(c.finish(1), Some(CloseReason::SlowConsumer));
        assert_eq!(c.finish(2), Some(CloseReason::ServerStopping));
    }
}
