//! The protocols part: the per-connection protocol states of listeners
//! with a protocol of their own (`crate::protocol::ConnProtocol`), by slot;
//! the opening handshakes' deadlines; the scratch buffers a protocol step
//! reads from and writes to; what the protocols keep of a message being
//! fanned out; the kind of the message being handled. `protocols.rs`
//! coordinates it with the connections' queues and the handler.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use super::paged::PagedTable;
use super::scratch::Scratch;
use crate::codec::Partial;
use crate::protocol::{ConnProtocol, ListenerProtocol, MessageKind, SharedCache};

/// A shard's protocol connections (see the module docs).
pub(crate) struct Protocols {
    /// The protocol of each listener (by index), `None` for framed ones.
    listeners: Vec<Option<Arc<dyn ListenerProtocol>>>,
    /// By slot (a page of the table is allocated when a protocol
    /// connection first lands in it: no hashing, no per-entry overhead).
    conns: PagedTable<Option<Box<dyn ConnProtocol>>>,
    /// Protocol connections in `conns`.
    count: usize,
    /// Received bytes being read (the connection's leftover, then the new
    /// ones).
    input: Scratch,
    /// The protocol's own output of one step.
    out: Scratch,
    /// Connections in their opening handshake: (slot, generation,
    /// deadline), earliest deadline first.
    upgrades: VecDeque<(u32, u32, Instant)>,
    /// The kind of the message being handled.
    current_kind: MessageKind,
    /// What the protocols keep of the message being fanned out (a
    /// broadcast or publish), emptied for each.
    fanout: SharedCache,
}

impl Protocols {
    /// Protocols for the listeners (by index) of a table of `table` slots.
    pub fn new(listeners: Vec<Option<Arc<dyn ListenerProtocol>>>, table: usize) -> Protocols {
        Protocols {
            listeners,
            conns: PagedTable::new(table),
            count: 0,
            input: Scratch::default(),
            out: Scratch::default(),
            upgrades: VecDeque::new(),
            current_kind: MessageKind::Binary,
            fanout: None,
        }
    }

    /// The protocol of listener `index`, if it has one.
    pub fn listener(&self, index: u8) -> Option<&Arc<dyn ListenerProtocol>> {
        self.listeners.get(usize::from(index))?.as_ref()
    }

    /// Whether any connection has a protocol.
    #[inline]
    pub fn any(&self) -> bool {
        self.count > 0
    }

    /// Whether `slot` has a protocol connection.
    #[inline]
    pub fn has(&self, slot: usize) -> bool {
        self.count > 0 && self.conns.get(slot).is_some_and(Option::is_some)
    }

    /// The protocol state of `slot`, if it has one.
    #[inline]
    pub fn get_mut(&mut self, slot: usize) -> Option<&mut Box<dyn ConnProtocol>> {
        self.conns
            .get_mut_if_allocated(slot)
            .and_then(Option::as_mut)
    }

    /// Whether `slot` has a protocol still in its opening handshake.
    #[inline]
    pub fn upgrading(&self, slot: usize) -> bool {
        self.conns
            .get(slot)
            .and_then(Option::as_ref)
            .is_some_and(|p| !p.is_open())
    }

    /// Gives `slot` its protocol state.
    pub fn insert(&mut self, slot: usize, conn: Box<dyn ConnProtocol>) {
        if self.conns[slot].replace(conn).is_none() {
            self.count += 1;
        }
    }

    /// Takes `slot`'s protocol state out (to give back with
    /// [`Self::insert`], or for good when the slot is freed).
    pub fn take(&mut self, slot: usize) -> Option<Box<dyn ConnProtocol>> {
        let taken = self.conns.get_mut_if_allocated(slot).and_then(Option::take);
        if taken.is_some() {
            self.count -= 1;
        }
        taken
    }

    /// The connection of `generation` in `slot` must complete its opening
    /// handshake by `deadline`.
    pub fn expect_upgrade(&mut self, slot: usize, generation: u32, deadline: Instant) {
        // Deadlines differ by listener: kept in order of deadline.
        let at = self.upgrades.partition_point(|&(_, _, d)| d <= deadline);
        self.upgrades
            .insert(at, (slot as u32, generation, deadline));
    }

    /// The opening handshake with the earliest deadline, if it is `now` or
    /// past: (slot, generation); it is no longer tracked.
    pub fn next_overdue_upgrade(&mut self, now: Instant) -> Option<(usize, u32)> {
        let &(slot, generation, deadline) = self.upgrades.front()?;
        if deadline > now {
            return None;
        }
        self.upgrades.pop_front();
        Some((slot as usize, generation))
    }

    /// The message `slot`'s protocol is receiving, if it absorbed part of
    /// one.
    pub fn partial(&self, slot: usize) -> Option<Partial> {
        self.conns.get(slot)?.as_ref()?.partial()
    }

    /// Heap bytes held by the protocol state of `slot` (reassembly,
    /// compression contexts).
    pub fn heap_bytes(&self, slot: usize) -> u64 {
        if self.count == 0 {
            return 0;
        }
        self.conns
            .get(slot)
            .and_then(Option::as_ref)
            .map_or(0, |c| c.heap_bytes() as u64)
    }

    /// The buffer a protocol step writes its own output to, empty.
    #[inline]
    pub fn take_out(&mut self) -> Vec<u8> {
        self.out.take()
    }

    /// Gives the output buffer back ([`Scratch::put`]).
    #[inline]
    pub fn put_out(&mut self, out: Vec<u8>) {
        self.out.put(out);
    }

    /// The buffer received bytes are read from, empty.
    #[inline]
    pub fn take_input(&mut self) -> Vec<u8> {
        self.input.take()
    }

    /// Gives the input buffer back ([`Scratch::put`]).
    #[inline]
    pub fn put_input(&mut self, input: Vec<u8>) {
        self.input.put(input);
    }

    /// A new message to fan out: what the protocols kept of the previous
    /// one goes.
    pub fn begin_fanout(&mut self) {
        self.fanout = None;
    }

    /// What the protocols keep of the message being fanned out.
    pub fn fanout_cache(&mut self) -> &mut SharedCache {
        &mut self.fanout
    }

    /// The kind of the message being handled (binary outside a protocol
    /// connection's message).
    #[inline]
    pub fn current_kind(&self) -> MessageKind {
        self.current_kind
    }

    /// The handler is given a message of `kind` (binary again after it).
    pub fn set_current_kind(&mut self, kind: MessageKind) {
        self.current_kind = kind;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::tests::virtual_t0;
    use super::*;
    use crate::codec::LengthDelimited;
    use crate::protocol::framed::{FramedConn, FramedListener};

    fn table() -> Protocols {
        let framed: Arc<dyn ListenerProtocol> =
            Arc::new(FramedListener::new(LengthDelimited::new()));
        Protocols::new(vec![None, Some(framed)], 16)
    }

    fn conn() -> Box<dyn ConnProtocol> {
        Box::new(FramedConn::new(LengthDelimited::new()))
    }

    #[test]
    fn a_slot_has_a_protocol_from_insert_to_take() {
        let mut p = table();
        assert!(p.listener(0).is_none() && p.listener(1).is_some() && p.listener(2).is_none());
        assert!(!p.any() && !p.has(3));
        p.insert(3, conn());
        assert!(p.any() && p.has(3) && !p.has(4));
        assert!(!p.upgrading(3), "the framed protocol has no handshake");
        assert!(p.get_mut(3).is_some());
        assert!(p.take(3).is_some());
        assert!(p.take(3).is_none(), "taken once");
        assert!(!p.any());
    }

    #[test]
    fn opening_handshakes_come_due_in_deadline_order() {
        let (mut p, t0) = (table(), virtual_t0());
        let s = Duration::from_secs(1);
        p.expect_upgrade(1, 10, t0 + 3 * s);
        p.expect_upgrade(2, 20, t0 + s);
        p.expect_upgrade(3, 30, t0 + 2 * s);
        assert_eq!(p.next_overdue_upgrade(t0), None);
        assert_eq!(p.next_overdue_upgrade(t0 + 2 * s), Some((2, 20)));
        assert_eq!(p.next_overdue_upgrade(t0 + 2 * s), Some((3, 30)));
        assert_eq!(p.next_overdue_upgrade(t0 + 2 * s), None);
        assert_eq!(p.next_overdue_upgrade(t0 + 3 * s), Some((1, 10)));
    }
}
