//! The input part: each connection's input state (framer, backlog,
//! frame timing, direct receive) while it has one, the pool of states kept
//! for reuse, the shard's pool of large reassembly buffers, and the input
//! bounds (`input_backlog_limit`, `reassembly_limit`).
//!
//! A connection has an [`InputState`] only while it has a partial frame or
//! held-back input. A receive buffer of whole frames is handled with a
//! state taken from the pool ([`Inputs::take`]) and given back right after
//! ([`Inputs::put`]), so an idle connection costs no input memory and the
//! receive path does not allocate. The receive path itself is in
//! `super::input`.

use std::time::Instant;

use super::paged::PagedTable;
use crate::codec::{Codec, FramePool, Framer, Partial};
use crate::config::ServerConfig;
use crate::sys::RecvTarget;

/// Input states kept for reuse by one shard: up to `MAX_KEEP_INPUTS` after
/// a burst of partial frames on many connections, trimmed back towards
/// `KEEP_INPUTS` every tick while they are not used ([`Inputs::trim_pool`]).
const KEEP_INPUTS: usize = 64;
const MAX_KEEP_INPUTS: usize = 1024;

/// Buffer capacity (reassembly buffer, backlog) a pooled input state keeps
/// at most, so the pool holds at most `MAX_KEEP_INPUTS` x 2 x this.
const KEEP_INPUT_CAPACITY: usize = 4 * 1024;

/// Where a connection's input stands with respect to direct receives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) enum Direct {
    /// Receiving through the multishot receive (or not at all).
    #[default]
    Off,
    /// The multishot receive was cancelled to switch; its last completion
    /// is awaited.
    Switching,
    /// A direct receive into this target is posted.
    InFlight(RecvTarget),
    /// Between two direct receives of the same frame.
    Receiving,
    /// A bulk receive (between frames, into a fresh buffer) into this
    /// target is posted.
    Bulk(RecvTarget),
}

/// A connection's input beyond its slot: present while a frame is partial
/// or input is held back.
pub(super) struct InputState<C: Codec> {
    pub framer: Framer<C>,
    /// Input received while the connection was paused, in arrival order.
    pub backlog: Vec<u8>,
    /// A protocol connection's bytes read but not yet a whole step (the
    /// start of a frame header or of a handshake request).
    pub carry: Vec<u8>,
    /// When the frame being received began, and when it must be complete
    /// (`frame_timeout`, `min_receive_rate`).
    pub frame_started: Option<Instant>,
    pub frame_deadline: Option<Instant>,
    /// Direct receive of the frame's rest (`super::direct`).
    pub direct: Direct,
    /// Bulk mode (`super::direct`): bytes each receive between frames
    /// asks for, 0 when off.
    pub bulk: usize,
}

impl<C: Codec> InputState<C> {
    /// Between frames and nothing held back: the state can leave the
    /// connection.
    fn is_idle(&self) -> bool {
        self.framer.buffered() == 0
            && self.backlog.is_empty()
            && self.carry.is_empty()
            && self.frame_started.is_none()
            && self.bulk == 0
            && !matches!(self.direct, Direct::InFlight(_) | Direct::Bulk(_))
    }

    /// Bytes held: the reassembly buffer and the backlog.
    fn held(&self) -> u64 {
        (self.framer.heap_bytes() + self.backlog.capacity() + self.carry.capacity()) as u64
    }
}

/// A shard's input states, their pool and the input bounds.
pub(super) struct Inputs<C: Codec> {
    /// Framer, backlog and frame timing of the connections that have a
    /// partial frame or paused input (none for the others).
    table: PagedTable<Option<Box<InputState<C>>>>,
    /// Input states kept for reuse, so the receive path does not allocate.
    /// Boxed: a state moves between the pool and a slot as one pointer.
    #[allow(clippy::vec_box)]
    pool: Vec<Box<InputState<C>>>,
    /// Fewest states in `pool` since the last trim.
    pool_low: usize,
    /// Large reassembly buffers kept for reuse (`ServerConfig::frame_pool_limit`).
    frame_pool: FramePool,
    /// The codec new framers are made with.
    codec: C,
    /// Bytes of input a paused connection may hold back.
    backlog_limit: usize,
    /// Bytes of partial frames the shard may hold over all connections.
    reassembly_limit: usize,
}

impl<C: Codec> Inputs<C> {
    /// The input part of a shard with `table` slots.
    pub fn new(codec: C, table: usize, config: &ServerConfig) -> Self {
        Self::with_limits(
            codec,
            table,
            FramePool::new(config.frame_pool_limit),
            config.effective_input_backlog_limit(),
            config.reassembly_limit,
        )
    }

    fn with_limits(
        codec: C,
        table: usize,
        frame_pool: FramePool,
        backlog_limit: usize,
        reassembly_limit: usize,
    ) -> Self {
        Inputs {
            table: PagedTable::new(table),
            pool: Vec::new(),
            pool_low: 0,
            frame_pool,
            codec,
            backlog_limit,
            reassembly_limit,
        }
    }

    /// The input state of `slot`, if it has one.
    #[inline]
    pub fn get(&self, slot: usize) -> Option<&InputState<C>> {
        self.table[slot].as_deref()
    }

    /// [`Self::get`], None for a slot past the table too.
    #[inline]
    pub fn get_checked(&self, slot: usize) -> Option<&InputState<C>> {
        self.table.get(slot)?.as_deref()
    }

    /// The input state of `slot` to change, if it has one.
    #[inline]
    pub fn get_mut(&mut self, slot: usize) -> Option<&mut InputState<C>> {
        self.table[slot].as_deref_mut()
    }

    /// Bytes held for a connection's input (its input state's buffers).
    #[inline]
    pub fn held(&self, slot: usize) -> u64 {
        self.get(slot).map_or(0, |i| i.held())
    }

    /// No input of `slot` is held back.
    #[inline]
    pub fn backlog_is_empty(&self, slot: usize) -> bool {
        self.get(slot).is_none_or(|i| i.backlog.is_empty())
    }

    /// Bytes of input `slot` holds back.
    #[inline]
    pub fn backlog_len(&self, slot: usize) -> usize {
        self.get(slot).map_or(0, |i| i.backlog.len())
    }

    /// The frame `slot` is receiving, if one is partial.
    pub fn partial(&self, slot: usize) -> Option<Partial> {
        self.get(slot).and_then(|i| i.framer.partial())
    }

    /// Bytes of input a paused connection may hold back.
    #[inline]
    pub fn backlog_limit(&self) -> usize {
        self.backlog_limit
    }

    /// Bytes of partial frames the shard may hold.
    #[inline]
    pub fn reassembly_limit(&self) -> usize {
        self.reassembly_limit
    }

    /// The shard's pool of large reassembly buffers.
    pub fn frame_pool(&self) -> &FramePool {
        &self.frame_pool
    }

    /// The input state of `slot`: its own, else one from the pool (between
    /// frames, nothing held back). Give it back with [`Self::put`].
    #[inline]
    pub fn take(&mut self, slot: usize) -> Box<InputState<C>> {
        if let Some(input) = self.table.get_mut_if_allocated(slot).and_then(Option::take) {
            return input;
        }
        let pooled = self.pool.pop();
        self.pool_low = self.pool_low.min(self.pool.len());
        pooled.unwrap_or_else(|| {
            Box::new(InputState {
                framer: Framer::with_pool(self.codec.clone(), self.frame_pool.clone()),
                backlog: Vec::new(),
                carry: Vec::new(),
                frame_started: None,
                frame_deadline: None,
                direct: Direct::Off,
                bulk: 0,
            })
        })
    }

    /// Gives the state taken by [`Self::take`] back: to the connection if
    /// it still has a partial frame or backlog, else to the pool. `clean`:
    /// the codec reported no error (after one, the framer's state is
    /// unspecified and is not reused).
    #[inline]
    pub fn put(&mut self, slot: usize, mut input: Box<InputState<C>>, clean: bool) {
        if !input.is_idle() {
            self.table[slot] = Some(input);
            return;
        }
        if clean && self.pool.len() < MAX_KEEP_INPUTS {
            if input.framer.heap_bytes() > KEEP_INPUT_CAPACITY {
                input.framer = Framer::with_pool(self.codec.clone(), self.frame_pool.clone());
            }
            if input.backlog.capacity() > KEEP_INPUT_CAPACITY {
                input.backlog = Vec::new();
            }
            if input.carry.capacity() > KEEP_INPUT_CAPACITY {
                input.carry = Vec::new();
            }
            input.frame_started = None;
            input.frame_deadline = None;
            input.direct = Direct::Off;
            input.bulk = 0;
            self.pool.push(input);
        }
    }

    /// Drops the input state of a closed connection (a partial frame's
    /// state may hold its codec's scan state of that frame: pooled states
    /// are always between frames).
    pub fn forget(&mut self, slot: usize) {
        if let Some(input) = self.table.get_mut_if_allocated(slot) {
            *input = None;
        }
    }

    /// Frees half of the pooled input states beyond `KEEP_INPUTS` that were
    /// not used since the last call (every tick).
    pub fn trim_pool(&mut self) {
        let pool = &mut self.pool;
        let unused = self.pool_low.min(pool.len());
        let excess = unused.min(pool.len().saturating_sub(KEEP_INPUTS));
        pool.truncate(pool.len() - excess.div_ceil(2));
        self.pool_low = pool.len();
    }

    /// Input states in the pool.
    #[cfg(test)]
    pub fn pooled(&self) -> usize {
        self.pool.len()
    }

    /// Pages of the per-slot table in memory.
    #[cfg(test)]
    pub fn allocated_pages(&self) -> usize {
        self.table.allocated_pages()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::LengthDelimited;

    const TABLE: usize = 4096;

    fn inputs() -> Inputs<LengthDelimited> {
        Inputs::with_limits(LengthDelimited::new(), TABLE, FramePool::new(0), 100, 200)
    }

    #[test]
    fn an_idle_state_goes_to_the_pool_and_allocates_no_page() {
        let mut inputs = inputs();
        let input = inputs.take(7);
        assert!(input.is_idle());
        inputs.put(7, input, true);
        assert!(inputs.get(7).is_none());
        assert_eq!(inputs.pooled(), 1);
        assert_eq!(inputs.allocated_pages(), 0);
        // Taken again from the pool, not made anew.
        let input = inputs.take(9);
        assert_eq!(inputs.pooled(), 0);
        inputs.put(9, input, true);
        assert_eq!(inputs.pooled(), 1);
        assert_eq!(inputs.held(9), 0);
        assert!(inputs.backlog_is_empty(9));
        assert!(inputs.partial(9).is_none());
    }

    #[test]
    fn a_state_with_held_input_stays_with_its_connection() {
        let mut inputs = inputs();
        let mut input = inputs.take(3);
        input.backlog.extend_from_slice(b"held back");
        inputs.put(3, input, true);
        assert_eq!(inputs.pooled(), 0);
        assert_eq!(inputs.backlog_len(3), 9);
        assert!(!inputs.backlog_is_empty(3));
        assert!(inputs.held(3) >= 9);
        assert!(inputs.get_checked(3).is_some());
        assert!(inputs.get_checked(TABLE).is_none(), "past the table");
        // Its own state comes back on the next take.
        let mut input = inputs.take(3);
        assert_eq!(input.backlog, b"held back");
        assert!(inputs.get(3).is_none(), "taken out meanwhile");
        input.backlog.clear();
        inputs.put(3, input, true);
        assert!(inputs.get(3).is_none());
        assert_eq!(inputs.pooled(), 1);
    }

    #[test]
    fn a_bulk_or_direct_state_stays_with_its_connection() {
        let mut inputs = inputs();
        let mut input = inputs.take(1);
        input.bulk = 65536;
        inputs.put(1, input, true);
        assert!(inputs.get(1).is_some());
        inputs.get_mut(1).unwrap().bulk = 0;
        inputs.get_mut(1).unwrap().direct = Direct::Receiving;
        let input = inputs.take(1);
        inputs.put(1, input, true);
        assert!(inputs.get(1).is_none(), "between frames: pooled");
        let pooled = inputs.take(2);
        assert_eq!(pooled.direct, Direct::Off, "reset on pooling");
    }

    #[test]
    fn a_state_after_a_codec_error_is_not_reused() {
        let mut inputs = inputs();
        let input = inputs.take(1);
        inputs.put(1, input, false);
        assert_eq!(inputs.pooled(), 0);
        assert!(inputs.get(1).is_none());
    }

    #[test]
    fn large_buffers_are_not_kept_in_the_pool() {
        let mut inputs = inputs();
        let mut input = inputs.take(1);
        input.backlog.reserve(KEEP_INPUT_CAPACITY + 1);
        input.carry.reserve(KEEP_INPUT_CAPACITY + 1);
        inputs.put(1, input, true);
        let input = inputs.take(1);
        assert_eq!(input.backlog.capacity(), 0);
        assert_eq!(input.carry.capacity(), 0);
    }

    #[test]
    fn the_pool_is_bounded() {
        let mut inputs = inputs();
        let states: Vec<_> = (0..MAX_KEEP_INPUTS + 10).map(|s| inputs.take(s)).collect();
        for (slot, input) in states.into_iter().enumerate() {
            inputs.put(slot, input, true);
        }
        assert_eq!(inputs.pooled(), MAX_KEEP_INPUTS);
    }

    #[test]
    fn trimming_frees_half_of_the_unused_excess_per_tick() {
        let mut inputs = inputs();
        let states: Vec<_> = (0..KEEP_INPUTS + 100).map(|s| inputs.take(s)).collect();
        for (slot, input) in states.into_iter().enumerate() {
            inputs.put(slot, input, true);
        }
        // All were taken since the last trim (the pool was empty then).
        inputs.trim_pool();
        assert_eq!(inputs.pooled(), KEEP_INPUTS + 100);
        // Unused for a tick: half of the excess goes, then half again.
        inputs.trim_pool();
        assert_eq!(inputs.pooled(), KEEP_INPUTS + 50);
        inputs.trim_pool();
        assert_eq!(inputs.pooled(), KEEP_INPUTS + 25);
        // States in use since the last trim are kept: 80 of the 89 were
        // taken, so only half of the 9 never used goes.
        let states: Vec<_> = (0..80).map(|s| inputs.take(s)).collect();
        for (slot, input) in states.into_iter().enumerate() {
            inputs.put(slot, input, true);
        }
        inputs.trim_pool();
        assert_eq!(inputs.pooled(), KEEP_INPUTS + 20);
        for _ in 0..20 {
            inputs.trim_pool();
        }
        assert_eq!(inputs.pooled(), KEEP_INPUTS, "never below the floor");
    }

    #[test]
    fn a_closed_connections_state_is_dropped() {
        let mut inputs = inputs();
        let mut input = inputs.take(5);
        input.backlog.push(1);
        inputs.put(5, input, true);
        inputs.forget(5);
        assert!(inputs.get(5).is_none());
        assert_eq!(inputs.pooled(), 0, "not pooled");
        inputs.forget(4000);
    }

    #[test]
    fn limits() {
        let inputs = inputs();
        assert_eq!(inputs.backlog_limit(), 100);
        assert_eq!(inputs.reassembly_limit(), 200);
        assert_eq!(inputs.frame_pool().kept_bytes(), 0);
    }
}
