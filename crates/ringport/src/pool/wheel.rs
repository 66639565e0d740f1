//! A hierarchical timing wheel with 1 ms ticks (the layout tokio uses):
//! 6 levels of 64 slots; a slot of level `l` spans `64^l` ticks, so the
//! wheel reaches 2^36 ms (about 2.2 years) ahead; farther deadlines wait in
//! the top level and are re-filed when their slot comes round.
//!
//! Timers live in a slab (`Vec<Entry>` plus a free list); each slot is an
//! intrusive doubly linked list threaded through the slab by index, and each
//! level keeps a 64-bit occupancy mask, so:
//!
//! - arming is O(1): pick the level from the highest bit where the deadline
//!   differs from the wheel's time, append to that slot's list;
//! - cancelling is O(1): unlink by index, push the slot on the free list;
//! - finding the next expiry is O(levels): one rotate + trailing-zeros per
//!   level;
//! - a timer is touched at most once per level on its way down (cascading).
//!
//! An entry is 64 bytes (asserted in the tests), plus whatever its callback
//! captures (nothing for a capture-less closure: a `Box` of a zero-sized
//! closure does not allocate). When the last timer goes, a slab larger than
//! [`SHRINK_ABOVE`] entries is freed, so a burst of a million timers does not
//! pin its memory.
//!
//! Ids are unique for the wheel's lifetime (a 64-bit counter), so a stale
//! `(index, id)` pair never matches a later timer that reuses the slot.

use std::mem;

/// Nanoseconds per tick.
pub(super) const TICK_NS: u64 = 1_000_000;
const LEVELS: usize = 6;
const SLOT_BITS: u32 = 6;
const SLOTS: usize = 1 << SLOT_BITS;
/// Ticks the wheel spans (2^36 ms).
const MAX_TICKS: u64 = 1 << (SLOT_BITS as u64 * LEVELS as u64);
/// The "no entry" index.
pub(super) const NIL: u32 = u32::MAX;
/// A slab with more entries than this is freed when it becomes empty.
pub(super) const SHRINK_ABOVE: usize = 1024;

/// The tick at or after `ns` (deadlines round up, so nothing fires early).
pub(super) fn tick_at_or_after(ns: u64) -> u64 {
    ns.div_ceil(TICK_NS)
}

/// The tick that contains `ns` (the wheel's notion of "now").
pub(super) fn tick_containing(ns: u64) -> u64 {
    ns / TICK_NS
}

/// Where a timer is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TimerState {
    /// Free slab slot.
    Vacant,
    /// Linked into the wheel, waiting for its deadline.
    Armed,
    /// Fired: its callback is in the work queue (the payload is out).
    Queued,
    /// A periodic timer whose callback is running (the payload is out).
    Running,
}

/// One slab slot.
pub(super) struct Entry<T> {
    /// Unique id (0 when vacant).
    pub id: u64,
    /// Deadline, nanoseconds since the pool's origin.
    pub deadline: u64,
    /// Period in nanoseconds; 0 for a one-shot timer.
    pub period: u64,
    /// The callback, while armed.
    pub payload: Option<T>,
    prev: u32,
    /// Next in the slot list, or in the free list when vacant.
    next: u32,
    pub state: TimerState,
    level: u8,
    slot: u8,
    /// Cancelled while queued or running: do not run / re-arm.
    pub cancelled: bool,
}

/// One level: a list head and tail per slot, and which slots are occupied.
struct Level {
    occupied: u64,
    head: [u32; SLOTS],
    tail: [u32; SLOTS],
}

impl Level {
    fn new() -> Self {
        Level {
            occupied: 0,
            head: [NIL; SLOTS],
            tail: [NIL; SLOTS],
        }
    }

    /// The first occupied slot at or after `now` on this level and the tick
    /// at which that slot starts.
    fn next_expiration(&self, level: usize, now: u64) -> Option<(usize, u64)> {
        if self.occupied == 0 {
            return None;
        }
        let slot_range = 1u64 << (SLOT_BITS as usize * level);
        let level_range = slot_range << SLOT_BITS;
        let now_slot = now / slot_range;
        let rotated = self.occupied.rotate_right((now_slot % SLOTS as u64) as u32);
        let slot = (rotated.trailing_zeros() as u64 + now_slot) as usize % SLOTS;
        let level_start = now & !(level_range - 1);
        let mut deadline = level_start + slot as u64 * slot_range;
        if deadline <= now {
            // Only on the top level, for timers beyond the wheel's span: the
            // slot is in the next turn of that level.
            deadline += level_range;
        }
        Some((slot, deadline))
    }
}

/// The level for a timer due at tick `when` while the wheel is at `elapsed`:
/// the highest 6-bit group in which the two differ.
fn level_for(elapsed: u64, when: u64) -> usize {
    let mut masked = (elapsed ^ when) | (SLOTS as u64 - 1);
    if masked >= MAX_TICKS {
        masked = MAX_TICKS - 1;
    }
    let significant = 63 - masked.leading_zeros();
    (significant / SLOT_BITS) as usize
}

/// A fired timer handed out by [`Wheel::advance`].
pub(super) struct Fired<T> {
    pub index: u32,
    pub id: u64,
    pub payload: T,
}

/// The wheel and its slab.
pub(super) struct Wheel<T> {
    entries: Vec<Entry<T>>,
    free: u32,
    live: usize,
    next_id: u64,
    /// Every tick before and at this one has been processed.
    elapsed: u64,
    levels: Box<[Level]>,
}

impl<T> Wheel<T> {
    pub fn new() -> Self {
        Wheel {
            entries: Vec::new(),
            free: NIL,
            live: 0,
            next_id: 1,
            elapsed: 0,
            levels: (0..LEVELS).map(|_| Level::new()).collect(),
        }
    }

    /// Timers alive: armed, queued or running.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Bytes held by the slab (the levels are a fixed 3 KiB on top).
    pub fn memory_bytes(&self) -> usize {
        self.entries.capacity() * mem::size_of::<Entry<T>>()
    }

    /// Adds a timer due at `deadline` ns (period 0: one-shot) and links it.
    /// Returns its index, id and the tick it is filed under.
    pub fn insert(&mut self, deadline: u64, period: u64, payload: T) -> (u32, u64, u64) {
        let id = self.next_id;
        self.next_id += 1;
        let entry = Entry {
            id,
            deadline,
            period,
            payload: Some(payload),
            prev: NIL,
            next: NIL,
            state: TimerState::Armed,
            level: 0,
            slot: 0,
            cancelled: false,
        };
        let index = if self.free != NIL {
            let index = self.free;
            self.free = self.entries[index as usize].next;
            self.entries[index as usize] = entry;
            index
        } else {
            assert!(self.entries.len() < NIL as usize, "too many timers");
            self.entries.push(entry);
            (self.entries.len() - 1) as u32
        };
        self.live += 1;
        let tick = self.link(index);
        (index, id, tick)
    }

    /// The entry at `index` if it still holds timer `id`.
    pub fn get_mut(&mut self, index: u32, id: u64) -> Option<&mut Entry<T>> {
        self.entries
            .get_mut(index as usize)
            .filter(|e| e.id == id && e.state != TimerState::Vacant)
    }

    /// Re-arms a queued or running entry (a periodic timer's next beat) with
    /// a new deadline and its payload. Returns the tick it is filed under.
    pub fn rearm(&mut self, index: u32, deadline: u64, payload: T) -> u64 {
        let e = &mut self.entries[index as usize];
        debug_assert!(matches!(e.state, TimerState::Queued | TimerState::Running));
        e.deadline = deadline;
        e.payload = Some(payload);
        e.state = TimerState::Armed;
        self.link(index)
    }

    /// Frees an entry that is not linked (queued or running), returning its
    /// payload if it still had one.
    pub fn free(&mut self, index: u32) -> Option<T> {
        let e = &mut self.entries[index as usize];
        debug_assert!(e.state != TimerState::Armed && e.state != TimerState::Vacant);
        let payload = e.payload.take();
        e.state = TimerState::Vacant;
        e.id = 0;
        e.cancelled = false;
        e.next = self.free;
        self.free = index;
        self.live -= 1;
        if self.live == 0 && self.entries.len() > SHRINK_ABOVE {
            // Everything is vacant: release the memory of a past burst.
            self.entries = Vec::new();
            self.free = NIL;
        }
        payload
    }

    /// Unlinks and frees an armed entry, returning its payload.
    pub fn remove_armed(&mut self, index: u32) -> Option<T> {
        self.unlink(index);
        self.entries[index as usize].state = TimerState::Queued;
        self.free(index)
    }

    /// Removes every armed timer (queued and running ones stay), pushing
    /// their payloads to `out`.
    pub fn drain_armed(&mut self, out: &mut Vec<T>) {
        for index in 0..self.entries.len() as u32 {
            if self.entries.get(index as usize).map(|e| e.state) == Some(TimerState::Armed)
                && let Some(p) = self.remove_armed(index)
            {
                out.push(p);
            }
        }
    }

    /// The next tick at which [`advance`](Self::advance) has work (a timer
    /// due, or a higher-level slot to cascade), if any timer is armed.
    pub fn next_tick(&self) -> Option<u64> {
        self.next_expiration().map(|(_, _, tick)| tick)
    }

    fn next_expiration(&self) -> Option<(usize, usize, u64)> {
        // A lower level's slots all come before any higher level's.
        self.levels.iter().enumerate().find_map(|(l, level)| {
            level
                .next_expiration(l, self.elapsed)
                .map(|(slot, tick)| (l, slot, tick))
        })
    }

    /// Processes every tick up to and including `now_tick`: timers due by
    /// then move to `Queued` and are pushed to `out` with their payloads;
    /// timers in passed higher-level slots are re-filed lower.
    pub fn advance(&mut self, now_tick: u64, out: &mut Vec<Fired<T>>) {
        while let Some((level, slot, tick)) = self.next_expiration() {
            if tick > now_tick {
                break;
            }
            self.elapsed = self.elapsed.max(tick);
            let lvl = &mut self.levels[level];
            let mut index = mem::replace(&mut lvl.head[slot], NIL);
            lvl.tail[slot] = NIL;
            lvl.occupied &= !(1u64 << slot);
            while index != NIL {
                let e = &mut self.entries[index as usize];
                let next = e.next;
                e.prev = NIL;
                e.next = NIL;
                if tick_at_or_after(e.deadline) <= now_tick {
                    e.state = TimerState::Queued;
                    if let Some(payload) = e.payload.take() {
                        out.push(Fired {
                            index,
                            id: e.id,
                            payload,
                        });
                    }
                } else {
                    self.link(index);
                }
                index = next;
            }
        }
        self.elapsed = self.elapsed.max(now_tick);
    }

    /// Files an entry under its deadline's tick (at least the next tick).
    fn link(&mut self, index: u32) -> u64 {
        let when = tick_at_or_after(self.entries[index as usize].deadline).max(self.elapsed + 1);
        let level = level_for(self.elapsed, when);
        let slot = ((when >> (SLOT_BITS as usize * level)) % SLOTS as u64) as usize;
        let lvl = &mut self.levels[level];
        let tail = lvl.tail[slot];
        {
            let e = &mut self.entries[index as usize];
            e.level = level as u8;
            e.slot = slot as u8;
            e.prev = tail;
            e.next = NIL;
        }
        if tail == NIL {
            lvl.head[slot] = index;
            lvl.occupied |= 1u64 << slot;
        } else {
            self.entries[tail as usize].next = index;
        }
        lvl.tail[slot] = index;
        when
    }

    fn unlink(&mut self, index: u32) {
        let (prev, next, level, slot) = {
            let e = &self.entries[index as usize];
            (e.prev, e.next, e.level as usize, e.slot as usize)
        };
        if prev == NIL {
            self.levels[level].head[slot] = next;
        } else {
            self.entries[prev as usize].next = next;
        }
        if next == NIL {
            self.levels[level].tail[slot] = prev;
        } else {
            self.entries[next as usize].prev = prev;
        }
        if self.levels[level].head[slot] == NIL {
            self.levels[level].occupied &= !(1u64 << slot);
        }
        let e = &mut self.entries[index as usize];
        e.prev = NIL;
        e.next = NIL;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fire_all(w: &mut Wheel<u64>, until_tick: u64) -> Vec<(u64, u64)> {
        // Step tick by tick, recording (tick fired at, payload).
        let mut fired = Vec::new();
        let mut out = Vec::new();
        let mut t = w.elapsed;
        while t <= until_tick {
            w.advance(t, &mut out);
            for f in out.drain(..) {
                fired.push((t, f.payload));
                w.free(f.index);
            }
            t += 1;
        }
        fired
    }

    #[test]
    fn entry_is_64_bytes() {
        type Cb = super::super::TimerCallback<()>;
        assert_eq!(mem::size_of::<Entry<Cb>>(), 64);
    }

    #[test]
    fn fires_at_deadline_tick_across_levels() {
        let mut w = Wheel::new();
        let ticks = [1u64, 2, 63, 64, 65, 127, 128, 4095, 4096, 4097, 300_000];
        for &t in &ticks {
            w.insert(t * TICK_NS, 0, t);
        }
        let fired = fire_all(&mut w, 300_001);
        assert_eq!(fired.len(), ticks.len());
        for (at, payload) in fired {
            assert_eq!(at, payload, "timer for tick {payload} fired at {at}");
        }
        assert_eq!(w.len(), 0);
    }

    #[test]
    fn jumping_time_fires_everything_due_and_nothing_early() {
        let mut w = Wheel::new();
        for t in (1..5000u64).step_by(7) {
            w.insert(t * TICK_NS - 1, 0, t); // rounds up to tick t
        }
        let mut out = Vec::new();
        w.advance(2500, &mut out);
        assert!(out.iter().all(|f| f.payload <= 2500));
        assert_eq!(out.len(), (1..=2500u64).step_by(7).count());
        for f in out.drain(..) {
            w.free(f.index);
        }
        assert_eq!(w.next_tick().map(|t| t > 2500), Some(true));
        w.advance(10_000, &mut out);
        assert_eq!(
            out.len(),
            (2501..5000u64).filter(|t| (t - 1) % 7 == 0).count()
        );
    }

    #[test]
    fn cancel_unlinks_and_releases_memory() {
        let mut w = Wheel::new();
        let ids: Vec<_> = (0..10_000u64)
            .map(|i| w.insert((1 + i % 3000) * TICK_NS, 0, i))
            .collect();
        assert!(w.memory_bytes() > 0);
        for (index, id, _) in ids {
            assert!(w.get_mut(index, id).is_some());
            assert!(w.remove_armed(index).is_some());
        }
        assert_eq!(w.len(), 0);
        assert_eq!(w.memory_bytes(), 0);
        assert_eq!(w.next_tick(), None);
        let mut out = Vec::new();
        w.advance(1_000_000, &mut out);
        assert!(out.is_empty());
    }

    /// Random arms, cancels and time jumps against a plain map: every
    /// `advance(now)` fires exactly the live timers due by `now`.
    #[test]
    fn matches_a_reference_model_under_random_operations() {
        use std::collections::HashMap;
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rand = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut w: Wheel<u64> = Wheel::new();
        let mut model: HashMap<u64, (u32, u64)> = HashMap::new(); // id -> (index, tick)
        let mut now = 0u64;
        let mut out = Vec::new();
        for _ in 0..200_000 {
            match rand() % 10 {
                0..=5 => {
                    let scale = [10u64, 100, 5_000, 300_000, 20_000_000][(rand() % 5) as usize];
                    let deadline = now * TICK_NS + rand() % (scale * TICK_NS);
                    let (index, id, _) = w.insert(deadline, 0, 0);
                    w.get_mut(index, id).unwrap().payload = Some(id);
                    let tick = tick_at_or_after(deadline).max(w.elapsed + 1);
                    model.insert(id, (index, tick));
                }
                6 | 7 if !model.is_empty() => {
                    let id = *model
                        .keys()
                        .nth((rand() % model.len() as u64) as usize)
                        .unwrap();
                    let (index, _) = model.remove(&id).unwrap();
                    assert_eq!(w.remove_armed(index), Some(id));
                }
                _ => {
                    now += [1u64, 3, 64, 1000, 70_000][(rand() % 5) as usize];
                    w.advance(now, &mut out);
                    let mut fired: Vec<u64> = out
                        .drain(..)
                        .map(|f| {
                            w.free(f.index);
                            f.payload
                        })
                        .collect();
                    fired.sort_unstable();
                    let mut due: Vec<u64> = model
                        .iter()
                        .filter(|(_, (_, t))| *t <= now)
                        .map(|(id, _)| *id)
                        .collect();
                    due.sort_unstable();
                    assert_eq!(fired, due, "at tick {now}");
                    model.retain(|_, (_, t)| *t > now);
                }
            }
            assert_eq!(w.len(), model.len());
        }
    }

    #[test]
    fn far_deadlines_beyond_the_span_still_fire_on_time() {
        let mut w = Wheel::new();
        let far = MAX_TICKS + 12_345;
        w.insert(far * TICK_NS, 0, far);
        let mut out = Vec::new();
        let mut steps = 0;
        while let Some(t) = w.next_tick() {
            steps += 1;
            assert!(steps < 1000);
            w.advance(t, &mut out);
            if let Some(f) = out.pop() {
                assert_eq!(t, far);
                assert_eq!(f.payload, far);
                return;
            }
        }
        panic!("never fired");
    }
}
