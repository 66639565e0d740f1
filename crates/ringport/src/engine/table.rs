//! The connection table: a shard's slots, how many are taken, and the open
//! ones in a dense list (for broadcast, the idle sweep, stats), with each
//! open slot's position in that list kept right as slots leave it.
//!
//! The table decides nothing about a connection's life beyond its slot:
//! `conn.rs` runs the close protocol and tells the table when a slot is
//! taken, opens, stops being open and is free again. Every id handed out
//! carries the slot's generation, so a lookup with an id of an earlier
//! connection in the same slot finds nothing.

use std::net::SocketAddr;
use std::ops::{Index, IndexMut};

use super::conn::{Slot, SlotState};
use super::paged::PagedTable;
use crate::conn_id::{ConnId, next_generation};
use crate::error::SendError;

/// A shard's connection slots (see the module docs).
pub(super) struct ConnTable {
    shard: u16,
    slots: PagedTable<Slot>,
    /// Slots not free (waiting, connecting, open, closing or releasing).
    in_use: usize,
    /// The open slots, in no particular order; `Slot::open_pos` is each
    /// one's position.
    open: Vec<u32>,
}

/// What the table knew of a slot that became free.
pub(super) struct Freed {
    /// The generation of the connection that held it.
    pub generation: u32,
    /// The handler never saw the connection (refused or held at the limit).
    pub unseen: bool,
}

impl ConnTable {
    /// A table of `len` slots of shard `shard` (memory taken as slots are
    /// first used).
    pub fn new(shard: usize, len: usize) -> Self {
        ConnTable {
            shard: shard as u16,
            slots: PagedTable::new(len),
            in_use: 0,
            open: Vec::new(),
        }
    }

    /// Slots in the table.
    #[inline]
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Slots not free.
    #[inline]
    pub fn in_use(&self) -> usize {
        self.in_use
    }

    /// Open connections.
    #[inline]
    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// The open slots (in no particular order).
    pub fn open_slots(&self) -> &[u32] {
        &self.open
    }

    /// The slot at position `pos` of the open list.
    #[inline]
    pub fn open_at(&self, pos: usize) -> usize {
        self.open[pos] as usize
    }

    /// Pages of slots allocated so far.
    #[cfg(test)]
    pub fn allocated_pages(&self) -> usize {
        self.slots.allocated_pages()
    }

    /// The slot, if it is within the table.
    #[inline]
    pub fn get(&self, slot: usize) -> Option<&Slot> {
        self.slots.get(slot)
    }

    /// The slot, if its page was ever allocated (a completion for a slot
    /// never used is not worth allocating for).
    #[inline]
    pub fn get_mut_if_allocated(&mut self, slot: usize) -> Option<&mut Slot> {
        self.slots.get_mut_if_allocated(slot)
    }

    /// Takes a free slot the driver just filled (accept or socket) for a
    /// new connection: its generation moves on, and the caller gives it its
    /// next state (waiting, connecting or open). False if the slot is not
    /// free (a driver bug: drivers only fill free slots).
    pub fn claim(&mut self, slot: usize) -> bool {
        let Some(s) = self
            .slots
            .get_mut(slot)
            .filter(|s| s.state == SlotState::Free)
        else {
            return false;
        };
        s.generation = next_generation(s.generation);
        self.in_use += 1;
        true
    }

    /// Makes `slot` open with `peer`, last input and output stamped
    /// `now_ms`; returns its id.
    pub fn open(&mut self, slot: usize, peer: SocketAddr, now_ms: u64) -> ConnId {
        let open_pos = self.open.len() as u32;
        let s = &mut self.slots[slot];
        s.state = SlotState::Open;
        s.clear_flags_but_per_source();
        s.set_peer(peer);
        s.last_input = now_ms as u32;
        s.last_output = now_ms as u32;
        s.opened_at = now_ms;
        s.bytes_in = 0;
        s.bytes_out = 0;
        s.open_pos = open_pos;
        self.open.push(slot as u32);
        ConnId::new(self.shard, slot as u32, s.generation)
    }

    /// `slot` (open) starts closing: it leaves the open list.
    pub fn close(&mut self, slot: usize) {
        let s = &mut self.slots[slot];
        debug_assert_eq!(s.state, SlotState::Open);
        s.state = SlotState::Closing;
        let pos = s.open_pos as usize;
        self.open.swap_remove(pos);
        if let Some(&moved) = self.open.get(pos) {
            self.slots[moved as usize].open_pos = pos as u32;
        }
    }

    /// The socket of `slot` is closed: the slot is free, if it was
    /// releasing the connection of `generation` (else the completion is
    /// stale and nothing changes).
    pub fn free(&mut self, slot: usize, generation: u32) -> Option<Freed> {
        let s = self
            .slots
            .get_mut_if_allocated(slot)
            .filter(|s| s.state == SlotState::Releasing && s.generation == generation)?;
        s.state = SlotState::Free;
        s.set_has_protocol(false);
        let unseen = s.unseen();
        s.set_unseen(false);
        s.transport = crate::transport::Transport::default();
        self.in_use -= 1;
        Some(Freed {
            generation: s.generation,
            unseen,
        })
    }

    /// The slot of `conn` if it is open on this shard now.
    #[inline]
    pub fn live(&self, conn: ConnId) -> Option<usize> {
        self.live_slot(conn).map(|_| conn.slot() as usize)
    }

    /// The open slot of `conn`, looked up once.
    #[inline]
    fn live_slot(&self, conn: ConnId) -> Option<&Slot> {
        self.slots.get(conn.slot() as usize).filter(|s| {
            conn.shard() == self.shard as usize
                && s.state == SlotState::Open
                && s.generation == conn.generation()
        })
    }

    /// [`Self::live`], and its send queue below `limit` bytes (one lookup
    /// of the slot for both; every send asks).
    #[inline]
    pub fn live_below(&self, conn: ConnId, limit: usize) -> Result<usize, SendError> {
        let s = self.live_slot(conn).ok_or(SendError::Closed)?;
        if s.queue.len() >= limit {
            return Err(SendError::QueueFull);
        }
        Ok(conn.slot() as usize)
    }

    /// The id of the connection in `slot` now.
    pub fn id(&self, slot: usize) -> ConnId {
        ConnId::new(self.shard, slot as u32, self.slots[slot].generation)
    }
}

impl Index<usize> for ConnTable {
    type Output = Slot;

    #[inline]
    fn index(&self, slot: usize) -> &Slot {
        &self.slots[slot]
    }
}

impl IndexMut<usize> for ConnTable {
    #[inline]
    fn index_mut(&mut self, slot: usize) -> &mut Slot {
        &mut self.slots[slot]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    /// Takes and opens `slot`; returns its id.
    fn opened(t: &mut ConnTable, slot: usize) -> ConnId {
        assert!(t.claim(slot));
        t.open(slot, peer(1000 + slot as u16), 5)
    }

    #[test]
    fn a_slot_goes_round_its_life_and_comes_back_with_a_new_generation() {
        let mut t = ConnTable::new(1, 8);
        let first = opened(&mut t, 3);
        assert_eq!((first.shard(), first.slot()), (1, 3));
        assert_eq!((t.in_use(), t.open_count()), (1, 1));
        assert_eq!(t.live(first), Some(3));
        assert_eq!(t[3].peer(), peer(1003));

        t.close(3);
        assert_eq!(t.live(first), None, "a closing connection is not live");
        assert_eq!((t.in_use(), t.open_count()), (1, 0));
        assert!(t.free(3, first.generation()).is_none(), "not releasing yet");
        t[3].state = SlotState::Releasing;
        let freed = t.free(3, first.generation()).expect("freed");
        assert_eq!(freed.generation, first.generation());
        assert!(!freed.unseen);
        assert_eq!(t.in_use(), 0);
        assert!(t.free(3, first.generation()).is_none(), "freed once only");

        let second = opened(&mut t, 3);
        assert_ne!(second.generation(), first.generation());
        assert_eq!(t.live(first), None, "the earlier id is stale");
        assert_eq!(t.live(second), Some(3));
    }

    #[test]
    fn a_slot_in_use_cannot_be_claimed_again() {
        let mut t = ConnTable::new(0, 4);
        opened(&mut t, 2);
        assert!(!t.claim(2));
        assert!(!t.claim(9), "outside the table");
        assert_eq!(t.in_use(), 1);
    }

    #[test]
    fn the_open_list_keeps_every_position_right_as_slots_leave_it() {
        let mut t = ConnTable::new(0, 16);
        let ids: Vec<ConnId> = (0..6).map(|slot| opened(&mut t, slot)).collect();
        for leaving in [0, 4, 2] {
            t.close(leaving);
            for (pos, &slot) in t.open_slots().iter().enumerate() {
                assert_eq!(t[slot as usize].open_pos as usize, pos);
                assert_eq!(t.open_at(pos), slot as usize);
            }
        }
        let mut open: Vec<u32> = t.open_slots().to_vec();
        open.sort();
        assert_eq!(open, vec![1, 3, 5]);
        assert_eq!(t.live(ids[4]), None);
        assert_eq!(t.live(ids[5]), Some(5));
    }

    #[test]
    fn an_id_of_another_shard_is_not_live_here() {
        let mut t = ConnTable::new(0, 4);
        let id = opened(&mut t, 1);
        let elsewhere = ConnId::new(1, 1, id.generation());
        assert_eq!(t.live(elsewhere), None);
        assert_eq!(t.live_below(elsewhere, 10), Err(SendError::Closed));
    }

    #[test]
    fn a_send_is_refused_when_the_queue_is_at_the_limit() {
        let mut t = ConnTable::new(0, 4);
        let id = opened(&mut t, 0);
        assert_eq!(t.live_below(id, 1), Ok(0));
        let mut pool = crate::send_queue::ChunkPool::new(4);
        t[0].queue.push_copy(&mut pool, &[b"abc"]);
        assert_eq!(t.live_below(id, 3), Err(SendError::QueueFull));
        assert_eq!(t.live_below(id, 4), Ok(0));
        t[0].queue.clear(&mut pool);
    }

    #[test]
    fn an_unseen_connection_is_reported_unseen_once_freed() {
        let mut t = ConnTable::new(0, 4);
        let id = opened(&mut t, 0);
        t[0].set_unseen(true);
        t.close(0);
        t[0].state = SlotState::Releasing;
        let freed = t.free(0, id.generation()).expect("freed");
        assert!(freed.unseen);
        assert!(!t[0].unseen(), "the next connection starts seen");
    }
}
