//! The receive side's turn-by-turn bookkeeping: receives to post again at
//! the end of the turn, paused connections whose backlog is replayed when
//! they resume, connections held by a full outbox, the bulk receives
//! posted, and the message being handled (so that a reply quoting it is
//! queued by reference).
//!
//! The input states themselves (framer, backlog) are `inputs.rs`; the
//! decisions (when to pause, resume, post a direct or bulk receive) are
//! `input.rs` and `direct.rs`, which record here what follows from them.

use bytes::Bytes;

/// Bulk receives posted at a time per shard: what bounds the memory of
/// bulk mode (each holds a buffer of at most `direct::BULK_MAX` bytes and a
/// few, even while its connection is idle), 16 MiB; connections beyond it
/// use the multishot receive.
pub(super) const BULK_CONNECTIONS: usize = 64;

/// See the module docs.
#[derive(Default)]
pub(super) struct Receives {
    /// Receives that ended and may be posted again this turn.
    rearm: Vec<u32>,
    /// Paused connections whose queue drained: their backlog is replayed.
    resumed: Vec<u32>,
    /// Connections whose reading paused because the shard's outbox was
    /// over half full when their message produced traffic for other
    /// shards; resumed together once it drains.
    outbox_held: Vec<u32>,
    /// Bulk receives posted, bounded per shard.
    bulk_posted: usize,
    /// The message being handled, when the framer or protocol handed it
    /// over as owned `Bytes` (a reassembled large frame).
    current: Option<Bytes>,
    /// The longest message delivered by the current feed (bulk mode).
    largest: usize,
}

impl Receives {
    /// `slot`'s receive ended and may be posted again at the end of the
    /// turn.
    #[inline]
    pub fn rearm_later(&mut self, slot: usize) {
        self.rearm.push(slot as u32);
    }

    /// A slot whose receive may be posted again.
    #[inline]
    pub fn next_rearm(&mut self) -> Option<usize> {
        self.rearm.pop().map(|slot| slot as usize)
    }

    /// `slot` resumed reading: its backlog is replayed this turn.
    #[inline]
    pub fn resume_later(&mut self, slot: usize) {
        self.resumed.push(slot as u32);
    }

    /// A resumed slot whose backlog is to be replayed.
    #[inline]
    pub fn next_resumed(&mut self) -> Option<usize> {
        self.resumed.pop().map(|slot| slot as usize)
    }

    /// `slot` paused for the outbox.
    pub fn hold_for_outbox(&mut self, slot: usize) {
        self.outbox_held.push(slot as u32);
    }

    /// Whether any connection waits for the outbox to drain.
    #[inline]
    pub fn any_held_by_outbox(&self) -> bool {
        !self.outbox_held.is_empty()
    }

    /// Every connection paused for the outbox (the list is emptied).
    pub fn release_outbox_held(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.outbox_held)
    }

    /// Whether the shard may post one more bulk receive.
    #[inline]
    pub fn bulk_room(&self) -> bool {
        self.bulk_posted < BULK_CONNECTIONS
    }

    /// A bulk receive was posted.
    pub fn bulk_started(&mut self) {
        debug_assert!(self.bulk_room());
        self.bulk_posted += 1;
    }

    /// A bulk receive completed or was abandoned.
    pub fn bulk_ended(&mut self) {
        self.bulk_posted -= 1;
    }

    /// Bulk receives posted now.
    #[cfg(test)]
    pub fn bulk_posted(&self) -> usize {
        self.bulk_posted
    }

    /// A feed starts: no message delivered yet.
    #[inline]
    pub fn feed_starts(&mut self) {
        self.largest = 0;
    }

    /// The handler is about to be given a message of `len` bytes, `owned`
    /// when its bytes are shared (`Bytes`).
    #[inline]
    pub fn handling(&mut self, len: usize, owned: Option<Bytes>) {
        self.largest = self.largest.max(len);
        self.current = owned;
    }

    /// The handler is done with the message.
    #[inline]
    pub fn handled(&mut self) {
        self.current = None;
    }

    /// The longest message of the feed that just ended.
    #[inline]
    pub fn take_largest(&mut self) -> usize {
        std::mem::take(&mut self.largest)
    }

    /// `payload`, if it lies within the message being handled, as a
    /// reference to it (no copy: e.g. an echo of a large message).
    #[inline]
    pub fn quote(&self, payload: &[u8]) -> Option<Bytes> {
        let current = self.current.as_ref()?;
        let within = current.as_ptr_range();
        let wanted = payload.as_ptr_range();
        (!payload.is_empty() && within.start <= wanted.start && wanted.end <= within.end)
            .then(|| current.slice_ref(payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_within_the_message_being_handled_is_a_reference_to_it() {
        let mut r = Receives::default();
        let message = Bytes::from(vec![7u8; 100]);
        r.handling(100, Some(message.clone()));
        let part = r.quote(&message[10..20]).expect("within");
        assert_eq!(part.as_ptr(), message[10..].as_ptr(), "no copy");
        assert_eq!(part.len(), 10);
        assert!(r.quote(&message[..0]).is_none(), "empty");
        let other = vec![7u8; 10];
        assert!(r.quote(&other).is_none(), "other bytes are copied");
        r.handled();
        assert!(r.quote(&message[10..20]).is_none(), "only while handled");
    }

    #[test]
    fn the_feed_remembers_its_longest_message() {
        let mut r = Receives::default();
        r.feed_starts();
        for len in [5, 90, 20] {
            r.handling(len, None);
            r.handled();
        }
        assert_eq!(r.take_largest(), 90);
        assert_eq!(r.take_largest(), 0);
    }

    #[test]
    fn bulk_receives_are_bounded_per_shard() {
        let mut r = Receives::default();
        for _ in 0..BULK_CONNECTIONS {
            assert!(r.bulk_room());
            r.bulk_started();
        }
        assert!(!r.bulk_room());
        r.bulk_ended();
        assert!(r.bulk_room());
        assert_eq!(r.bulk_posted(), BULK_CONNECTIONS - 1);
    }

    #[test]
    fn outbox_held_connections_are_released_together() {
        let mut r = Receives::default();
        assert!(!r.any_held_by_outbox());
        r.hold_for_outbox(3);
        r.hold_for_outbox(5);
        assert!(r.any_held_by_outbox());
        assert_eq!(r.release_outbox_held(), vec![3, 5]);
        assert!(!r.any_held_by_outbox());
    }

    #[test]
    fn rearms_and_resumes_come_back_once_each() {
        let mut r = Receives::default();
        r.rearm_later(1);
        r.resume_later(2);
        assert_eq!((r.next_rearm(), r.next_rearm()), (Some(1), None));
        assert_eq!((r.next_resumed(), r.next_resumed()), (Some(2), None));
    }
}
