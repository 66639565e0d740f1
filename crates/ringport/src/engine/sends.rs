//! The output part: the send queues' chunk pool, the connections with
//! something to send this turn, the queue bounds (high water, limit) and
//! the slow consumers to close.
//!
//! A connection has at most one send in flight. Anything queued marks it
//! *dirty* (once; a connection with a send in flight is marked again by
//! that send's completion), and at the end of the turn every dirty
//! connection with queued data gets one send of everything queued. Reading
//! pauses at the high-water mark and resumes at half of it; a send that
//! does not come from the connection's own handler call is refused at the
//! queue limit, which makes the connection a slow consumer.

use super::conn::{Slot, SlotState};
use super::table::ConnTable;
use crate::config::{ServerConfig, SlowConsumerPolicy};
use crate::send_queue::ChunkPool;
use crate::stats::Stats;
use crate::sys::Op;

/// A shard's output bookkeeping (see the module docs).
pub(super) struct Sends {
    pool: ChunkPool,
    /// Connections marked for a send at the end of the turn.
    dirty: Vec<u32>,
    /// Slow consumers to close (policy `Disconnect`).
    victims: Vec<u32>,
    high_water: usize,
    queue_limit: usize,
    policy: SlowConsumerPolicy,
}

impl Sends {
    /// The output part for `config`, with frames up to `max_frame` bytes.
    pub fn new(config: &ServerConfig, max_frame: usize) -> Self {
        Sends {
            pool: ChunkPool::new(1024),
            dirty: Vec::new(),
            victims: Vec::new(),
            high_water: config.send_high_water,
            queue_limit: config.effective_send_queue_limit(max_frame),
            policy: config.slow_consumer,
        }
    }

    /// The chunks the send queues are made of.
    #[inline]
    pub fn pool(&mut self) -> &mut ChunkPool {
        &mut self.pool
    }

    /// The bytes a send queue may hold before sends to it are refused.
    #[inline]
    pub fn queue_limit(&self) -> usize {
        self.queue_limit
    }

    /// Whether a queue of `len` bytes stops its connection's reading.
    #[inline]
    pub fn over_high_water(&self, len: usize) -> bool {
        len >= self.high_water
    }

    /// Whether a connection paused by its own queue may read again: the
    /// queue drained to half the high-water mark and nothing else holds
    /// its reading.
    #[inline]
    pub fn may_resume(&self, s: &Slot) -> bool {
        s.recv_paused()
            && s.queue.len() <= self.high_water / 2
            && !s.held_by_outbox()
            && !s.held_by_app()
            && !s.held_by_rate()
    }

    /// Accounts for one message queued to `s` (slot `slot`, whose queue
    /// held `before` bytes) at `now_ms`, and marks it for a send.
    #[inline]
    pub fn queued(
        &mut self,
        s: &mut Slot,
        slot: usize,
        before: usize,
        stats: &mut Stats,
        now_ms: u64,
    ) {
        stats.send_queue_bytes += (s.queue.len() - before) as u64;
        stats.messages_out += 1;
        s.last_output = now_ms as u32;
        self.mark(s, slot);
    }

    /// Marks `s` (slot `slot`) for a send at the end of the turn, unless it
    /// is marked already or a send is in flight (its completion marks it
    /// again).
    #[inline]
    pub fn mark(&mut self, s: &mut Slot, slot: usize) {
        if !s.in_dirty() && !s.send_in_flight() {
            s.set_in_dirty(true);
            self.dirty.push(slot as u32);
        }
    }

    /// Asks for one send for every marked connection that is open or
    /// flushing its close, has queued data and no send in flight.
    pub fn start_sends(&mut self, conns: &mut ConnTable, ops: &mut Vec<Op>) {
        while let Some(slot) = self.dirty.pop() {
            let s = &mut conns[slot as usize];
            s.set_in_dirty(false);
            if matches!(s.state, SlotState::Open | SlotState::Closing)
                && !s.discard()
                && !s.send_in_flight()
                && !s.queue.is_empty()
            {
                s.set_send_in_flight(true);
                let generation = s.generation;
                ops.push(Op::Send { slot, generation });
            }
        }
    }

    /// `n` bytes of `s`'s queue were sent.
    #[inline]
    pub fn sent(&mut self, s: &mut Slot, n: usize, stats: &mut Stats) {
        let n = n.min(s.queue.len());
        s.queue.consume(&mut self.pool, n);
        s.bytes_out += n as u64;
        stats.bytes_out += n as u64;
        stats.send_queue_bytes = stats.send_queue_bytes.saturating_sub(n as u64);
    }

    /// Drops everything queued to `s` (its connection is gone).
    pub fn drop_queue(&mut self, s: &mut Slot, stats: &mut Stats) {
        let dropped = s.queue.len() as u64;
        s.queue.clear(&mut self.pool);
        stats.send_queue_bytes = stats.send_queue_bytes.saturating_sub(dropped);
    }

    /// The slow-consumer rule for a send to `s` (slot `slot`) that did not
    /// come from its own handler call: whether to queue it. Refused at the
    /// queue limit; with policy `Disconnect` the connection is then closed
    /// ([`Self::next_victim`]).
    #[inline]
    pub fn admit_remote(&mut self, s: &Slot, slot: usize, stats: &mut Stats) -> bool {
        if s.queue.len() < self.queue_limit {
            return true;
        }
        stats.slow_consumers += 1;
        if self.policy == SlowConsumerPolicy::Disconnect {
            self.victims.push(slot as u32);
        }
        false
    }

    /// A slow consumer to close, if any is left.
    #[inline]
    pub fn next_victim(&mut self) -> Option<usize> {
        self.victims.pop().map(|slot| slot as usize)
    }

    /// Gives pooled chunks back to the allocator beyond what the pool keeps.
    pub fn trim(&mut self) {
        self.pool.trim();
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    fn config(high_water: usize, limit: usize, policy: SlowConsumerPolicy) -> ServerConfig {
        ServerConfig {
            send_high_water: high_water,
            send_queue_limit: Some(limit),
            slow_consumer: policy,
            ..ServerConfig::default()
        }
    }

    fn table_with_open(slots: usize) -> ConnTable {
        let mut t = ConnTable::new(0, 8);
        for slot in 0..slots {
            assert!(t.claim(slot));
            t.open(slot, SocketAddr::from(([127, 0, 0, 1], 9)), 0);
        }
        t
    }

    fn queue(sends: &mut Sends, t: &mut ConnTable, slot: usize, bytes: &[u8], stats: &mut Stats) {
        let s = &mut t[slot];
        let before = s.queue.len();
        s.queue.push_copy(sends.pool(), &[bytes]);
        sends.queued(s, slot, before, stats, 7);
    }

    #[test]
    fn one_send_per_connection_per_turn_however_much_is_queued() {
        let mut sends = Sends::new(&config(100, 200, SlowConsumerPolicy::Disconnect), 64);
        let (mut t, mut stats, mut ops) = (table_with_open(2), Stats::default(), Vec::new());
        for _ in 0..3 {
            queue(&mut sends, &mut t, 0, b"abc", &mut stats);
        }
        queue(&mut sends, &mut t, 1, b"xy", &mut stats);
        assert_eq!((stats.messages_out, stats.send_queue_bytes), (4, 11));
        assert_eq!(t[0].last_output, 7);
        sends.start_sends(&mut t, &mut ops);
        assert_eq!(ops.len(), 2, "{ops:?}");

        // Queued while a send is in flight: no second send until it completes.
        queue(&mut sends, &mut t, 0, b"d", &mut stats);
        ops.clear();
        sends.start_sends(&mut t, &mut ops);
        assert!(ops.is_empty(), "{ops:?}");

        t[0].set_send_in_flight(false);
        sends.sent(&mut t[0], 9, &mut stats);
        assert_eq!(
            (t[0].queue.len(), t[0].bytes_out, stats.bytes_out),
            (1, 9, 9)
        );
        sends.mark(&mut t[0], 0);
        sends.start_sends(&mut t, &mut ops);
        assert_eq!(ops.len(), 1);
        for slot in 0..2 {
            sends.drop_queue(&mut t[slot], &mut stats);
        }
        assert_eq!(stats.send_queue_bytes, 0);
    }

    #[test]
    fn a_connection_closing_without_flush_gets_no_send() {
        let mut sends = Sends::new(&config(100, 200, SlowConsumerPolicy::Disconnect), 64);
        let (mut t, mut stats, mut ops) = (table_with_open(1), Stats::default(), Vec::new());
        queue(&mut sends, &mut t, 0, b"abc", &mut stats);
        t.close(0);
        t[0].set_discard(true);
        sends.start_sends(&mut t, &mut ops);
        assert!(ops.is_empty());
        sends.drop_queue(&mut t[0], &mut stats);
    }

    #[test]
    fn a_send_from_elsewhere_is_refused_at_the_limit_and_the_policy_decides() {
        for (policy, victims) in [
            (SlowConsumerPolicy::Disconnect, Some(0)),
            (SlowConsumerPolicy::DropMessage, None),
        ] {
            let mut sends = Sends::new(&config(4, 6, policy), 64);
            let (mut t, mut stats) = (table_with_open(1), Stats::default());
            assert!(sends.admit_remote(&t[0], 0, &mut stats));
            queue(&mut sends, &mut t, 0, b"abcdef", &mut stats);
            assert!(!sends.admit_remote(&t[0], 0, &mut stats));
            assert_eq!(stats.slow_consumers, 1);
            assert_eq!(sends.next_victim(), victims, "{policy:?}");
            assert_eq!(sends.next_victim(), None);
            sends.drop_queue(&mut t[0], &mut stats);
        }
    }

    #[test]
    fn reading_pauses_at_high_water_and_resumes_at_half_unless_held_elsewhere() {
        let mut sends = Sends::new(&config(10, 100, SlowConsumerPolicy::Disconnect), 64);
        let (mut t, mut stats) = (table_with_open(1), Stats::default());
        queue(&mut sends, &mut t, 0, &[0; 10], &mut stats);
        assert!(sends.over_high_water(t[0].queue.len()));
        t[0].set_recv_paused(true);
        assert!(!sends.may_resume(&t[0]));
        sends.sent(&mut t[0], 5, &mut stats);
        assert!(sends.may_resume(&t[0]));
        t[0].set_held_by_app(true);
        assert!(!sends.may_resume(&t[0]), "the application holds it");
        t[0].set_held_by_app(false);
        t[0].set_held_by_outbox(true);
        assert!(!sends.may_resume(&t[0]), "the outbox holds it");
        sends.drop_queue(&mut t[0], &mut stats);
    }
}
