//! The order in which a fixed-rate bench (`--rate`) takes its connections.
//!
//! Every connection sends `rate` messages per second; a shard's sends go
//! through its connections in turn. The turn order is random (each new
//! connection is put at a uniformly random place, an inside-out
//! Fisher–Yates shuffle), not the order of slots: slots follow connect
//! order, and both ends keep a connection's socket in the io_uring ring
//! (of ~20,000 descriptors) its slot falls in, so taking slots in order
//! would send a ring's worth of connections' messages together and leave
//! the other rings idle. Independent clients do not line up like that.

/// No position: the slot is not in the rotation.
const NONE: u32 = u32::MAX;

pub struct Rotation {
    /// Slots in turn order.
    order: Vec<u32>,
    /// Index into `order`, by slot (`NONE` if absent).
    position: Vec<u32>,
    cursor: usize,
    rng: fastrand::Rng,
}

impl Rotation {
    pub fn new(seed: u64) -> Self {
        Rotation {
            order: Vec::new(),
            position: Vec::new(),
            cursor: 0,
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Adds `slot` at a uniformly random place (no-op if present).
    pub fn insert(&mut self, slot: u32) {
        let s = slot as usize;
        if self.position.len() <= s {
            self.position.resize(s + 1, NONE);
        }
        if self.position[s] != NONE {
            return;
        }
        self.order.push(slot);
        let last = self.order.len() - 1;
        let j = self.rng.usize(..=last);
        self.order.swap(last, j);
        self.position[self.order[last] as usize] = last as u32;
        self.position[self.order[j] as usize] = j as u32;
    }

    /// Takes `slot` out (in constant time); `false` if it was not in.
    pub fn remove(&mut self, slot: u32) -> bool {
        let Some(&pos) = self.position.get(slot as usize) else {
            return false;
        };
        if pos == NONE {
            return false;
        }
        self.position[slot as usize] = NONE;
        self.order.swap_remove(pos as usize);
        if let Some(&moved) = self.order.get(pos as usize) {
            self.position[moved as usize] = pos;
        }
        true
    }

    /// The next slot in turn, or `None` when empty.
    pub fn next_slot(&mut self) -> Option<u32> {
        if self.order.is_empty() {
            return None;
        }
        self.cursor = (self.cursor + 1) % self.order.len();
        Some(self.order[self.cursor])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_gets_one_turn_per_round() {
        let mut r = Rotation::new(7);
        for slot in 0..1000 {
            r.insert(slot);
        }
        r.insert(5); // already in: no second turn
        assert_eq!(r.len(), 1000);
        for _ in 0..3 {
            let mut seen = vec![0u32; 1000];
            for _ in 0..1000 {
                seen[r.next_slot().unwrap() as usize] += 1;
            }
            assert!(seen.iter().all(|&n| n == 1), "one turn each per round");
        }
    }

    #[test]
    fn the_order_is_not_the_slot_order() {
        let mut r = Rotation::new(1);
        for slot in 0..20_000 {
            r.insert(slot);
        }
        // The first 1,000 turns would be one "ring" of 1,000 consecutive
        // slots if taken in order; shuffled they fall all over the range.
        let first: Vec<u32> = (0..1000).map(|_| r.next_slot().unwrap()).collect();
        let buckets = first
            .iter()
            .map(|s| s / 1000)
            .collect::<std::collections::HashSet<_>>();
        assert!(
            buckets.len() >= 15,
            "turns hit {} of 20 blocks",
            buckets.len()
        );
    }

    #[test]
    fn removed_slots_get_no_turn_and_the_rest_keep_theirs() {
        let mut r = Rotation::new(3);
        for slot in 0..100 {
            r.insert(slot);
        }
        for slot in (0..100).step_by(3) {
            assert!(r.remove(slot));
        }
        assert!(!r.remove(0), "already out");
        assert!(!r.remove(5000), "never in");
        assert_eq!(r.len(), 66);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..66 {
            seen.insert(r.next_slot().unwrap());
        }
        let want: std::collections::HashSet<u32> = (0..100).filter(|s| s % 3 != 0).collect();
        assert_eq!(seen, want);
        for slot in 0..100 {
            r.remove(slot);
        }
        assert!(r.is_empty());
        assert_eq!(r.next_slot(), None);
        r.insert(42);
        assert_eq!(r.next_slot(), Some(42));
    }
}
