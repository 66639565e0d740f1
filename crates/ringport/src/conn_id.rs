//! Generational connection ids: the safe form of the classic "unique socket
//! number".
//!
//! A [`ConnId`] names one connection for its whole life: the shard that owns
//! it, the slot it occupies in that shard's table, and the slot's generation
//! at the time. When the connection closes, the slot's generation moves on,
//! so an id kept by the application after the close can never address the
//! next connection that gets the same slot: every operation on it fails with
//! `SendError::Closed` instead.

use std::fmt;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// The identity of one connection. Cheap to copy, hash and send between
/// threads.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId {
    shard: u16,
    slot: u32,
    generation: u32,
}

impl ConnId {
    pub(crate) fn new(shard: u16, slot: u32, generation: u32) -> Self {
        debug_assert!(generation != 0, "generation 0 means 'no live connection'");
        ConnId {
            shard,
            slot,
            generation,
        }
    }

    /// Index of the shard (thread) that owns the connection.
    pub fn shard(&self) -> usize {
        self.shard as usize
    }

    /// Slot in the shard's connection table (reused after close).
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// The slot's generation when this connection was accepted.
    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// A 64-bit form for logs or integer-keyed maps: shard (16 bits), slot
    /// (24 bits, the whole slot range) and the low 24 bits of the
    /// generation. Unique among live connections (a slot has one live
    /// connection at a time); ids of closed connections may repeat after
    /// 2^24 reuses of one slot.
    pub fn as_u64(&self) -> u64 {
        ((self.shard as u64) << 48)
            | ((self.slot as u64 & 0xff_ffff) << 24)
            | (self.generation as u64 & 0xff_ffff)
    }
}

impl fmt::Debug for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn#{}.{}.{}", self.shard, self.slot, self.generation)
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The next generation after `g`, skipping 0 (which marks a free slot).
pub(crate) fn next_generation(g: u32) -> u32 {
    match g.wrapping_add(1) {
        0 => 1,
        n => n,
    }
}

/// Per-slot "which generation is live" table, shared read-only with other
/// threads so that `send` to a closed connection fails at once, without a
/// round trip to the shard. The shard is the only writer. A stale read is
/// harmless: the shard checks the generation again before it acts.
pub(crate) struct LiveTable {
    /// Pages of generations, allocated when a slot of the page first
    /// opens, so a large table costs a pointer per page until it is used.
    pages: Box<[OnceLock<Box<[AtomicU32]>>]>,
    slots: usize,
}

/// Slots per page of a [`LiveTable`] (16 KiB of generations).
const LIVE_PAGE: usize = 4096;

impl LiveTable {
    pub fn new(slots: usize) -> Self {
        LiveTable {
            pages: (0..slots.div_ceil(LIVE_PAGE))
                .map(|_| OnceLock::new())
                .collect(),
            slots,
        }
    }

    fn entry(&self, slot: u32) -> Option<&AtomicU32> {
        let slot = slot as usize;
        self.pages
            .get(slot / LIVE_PAGE)?
            .get()
            .map(|page| &page[slot % LIVE_PAGE])
    }

    pub fn is_live(&self, slot: u32, generation: u32) -> bool {
        self.entry(slot)
            .is_some_and(|g| g.load(Ordering::Acquire) == generation)
    }

    pub fn set_live(&self, slot: u32, generation: u32) {
        let index = slot as usize;
        assert!(index < self.slots, "slot {slot} outside the live table");
        let page = self.pages[index / LIVE_PAGE]
            .get_or_init(|| (0..LIVE_PAGE).map(|_| AtomicU32::new(0)).collect());
        page[index % LIVE_PAGE].store(generation, Ordering::Release);
    }

    pub fn set_dead(&self, slot: u32) {
        if let Some(g) = self.entry(slot) {
            g.store(0, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generation_skips_zero() {
        assert_eq!(next_generation(1), 2);
        assert_eq!(next_generation(u32::MAX), 1);
    }

    #[test]
    fn live_table_rejects_stale_generations() {
        let t = LiveTable::new(4);
        assert!(!t.is_live(1, 1));
        t.set_live(1, 7);
        assert!(t.is_live(1, 7));
        assert!(!t.is_live(1, 6));
        t.set_dead(1);
        assert!(!t.is_live(1, 7));
        t.set_live(1, next_generation(7));
        assert!(
            !t.is_live(1, 7),
            "old id must not reach the slot's next user"
        );
        assert!(!t.is_live(99, 1), "out of range slot is never live");
        let big = LiveTable::new(3 * LIVE_PAGE + 1);
        assert!(
            !big.is_live(2 * LIVE_PAGE as u32, 0),
            "an untouched page holds nothing"
        );
        big.set_live(3 * LIVE_PAGE as u32, 5);
        assert!(big.is_live(3 * LIVE_PAGE as u32, 5));
        assert!(!big.is_live(LIVE_PAGE as u32, 5));
        big.set_dead(LIVE_PAGE as u32);
    }

    #[test]
    fn ids_compare_by_all_parts() {
        let a = ConnId::new(0, 3, 1);
        let b = ConnId::new(0, 3, 2);
        assert_ne!(a, b);
        assert_eq!(format!("{a}"), "conn#0.3.1");
        assert_ne!(a.as_u64(), b.as_u64());
    }
}
