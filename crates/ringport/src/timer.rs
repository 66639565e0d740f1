//! A shard's handler timers, sans-I/O: deadlines in, due tokens out, with an
//! explicit `now`. The shard's loop waits until the earliest deadline (an
//! io_uring wait timeout), so timers are exact to the loop's wake-up, not to
//! a tick.
//!
//! A binary heap with lazy cancellation: arming is O(log n), cancelling is
//! O(1) (the heap entry is skipped when it surfaces), and the heap is
//! rebuilt when cancelled entries outnumber live ones, so memory stays
//! proportional to the timers actually armed (about 24 bytes of heap entry
//! plus 16 of slot per timer).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// Names an armed handler timer, for [`crate::Context::cancel_timer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId {
    index: u32,
    generation: u32,
}

struct Slot {
    generation: u32,
    /// The token while armed.
    token: Option<u64>,
}

#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u32, u32)>>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    live: usize,
}

impl Timers {
    pub fn insert(&mut self, deadline: Instant, token: u64) -> TimerId {
        let index = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    token: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.generation = slot.generation.wrapping_add(1);
        slot.token = Some(token);
        self.live += 1;
        self.heap.push(Reverse((deadline, index, slot.generation)));
        TimerId {
            index,
            generation: slot.generation,
        }
    }

    /// Cancels an armed timer; false if it already fired or was cancelled.
    pub fn cancel(&mut self, id: TimerId) -> bool {
        let Some(slot) = self.slots.get_mut(id.index as usize) else {
            return false;
        };
        if slot.generation != id.generation || slot.token.is_none() {
            return false;
        }
        slot.token = None;
        self.free.push(id.index);
        self.live -= 1;
        if self.heap.len() > 2 * self.live + 1024 {
            let slots = &self.slots;
            self.heap.retain(|Reverse((_, i, g))| {
                slots[*i as usize].generation == *g && slots[*i as usize].token.is_some()
            });
        }
        true
    }

    fn is_live(&self, index: u32, generation: u32) -> bool {
        let slot = &self.slots[index as usize];
        slot.generation == generation && slot.token.is_some()
    }

    /// The earliest armed deadline.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(&Reverse((deadline, index, generation))) = self.heap.peek() {
            if self.is_live(index, generation) {
                return Some(deadline);
            }
            self.heap.pop();
        }
        None
    }

    /// Takes the next timer due at `now`, if any.
    pub fn pop_due(&mut self, now: Instant) -> Option<u64> {
        let deadline = self.next_deadline()?;
        if deadline > now {
            return None;
        }
        let Reverse((_, index, _)) = self.heap.pop()?;
        let token = self.slots[index as usize].token.take();
        self.free.push(index);
        self.live -= 1;
        token
    }

    pub fn len(&self) -> usize {
        self.live
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn fires_in_deadline_order_and_not_early() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        t.insert(t0 + Duration::from_millis(30), 3);
        t.insert(t0 + Duration::from_millis(10), 1);
        t.insert(t0 + Duration::from_millis(20), 2);
        assert_eq!(t.pop_due(t0), None);
        assert_eq!(t.next_deadline(), Some(t0 + Duration::from_millis(10)));
        let later = t0 + Duration::from_millis(25);
        assert_eq!(t.pop_due(later), Some(1));
        assert_eq!(t.pop_due(later), Some(2));
        assert_eq!(t.pop_due(later), None);
        assert_eq!(t.len(), 1);
    }

    #[test]
    fn cancelled_timers_never_fire_and_ids_do_not_alias() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        let a = t.insert(t0, 1);
        assert!(t.cancel(a));
        assert!(!t.cancel(a), "second cancel is a no-op");
        let b = t.insert(t0, 2); // reuses a's slot
        assert!(
            !t.cancel(a),
            "a stale id cannot cancel the slot's next timer"
        );
        assert_eq!(t.pop_due(t0), Some(2));
        assert!(!t.cancel(b), "fired timers cannot be cancelled");
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn mass_cancel_keeps_memory_bounded() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        let ids: Vec<_> = (0..100_000)
            .map(|i| t.insert(t0 + Duration::from_secs(60), i))
            .collect();
        for id in ids {
            assert!(t.cancel(id));
        }
        assert_eq!(t.len(), 0);
        assert!(
            t.heap.len() <= 1024 + 1,
            "heap compacted, holds {}",
            t.heap.len()
        );
        assert_eq!(t.pop_due(t0 + Duration::from_secs(120)), None);
    }
}
