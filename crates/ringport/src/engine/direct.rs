//! Direct receive: the rest of a large frame is received straight into the
//! connection's reassembly buffer ([`Op::RecvInto`]) instead of into the
//! backend's receive buffers and copied from there.
//!
//! A frame that straddles receive buffers is otherwise copied into the
//! framer's buffer, byte for byte (about a tenth of the server's CPU at
//! 64 KiB messages, more for larger ones). Once the framer has located a
//! frame that still misses at least [`DIRECT_MIN`] bytes on a plaintext
//! connection that is open, not paused and has no backlog:
//!
//! 1. the multishot receive is cancelled ([`Direct::Switching`]); what its
//!    last completions still carry is delivered as usual;
//! 2. when it has ended, a direct receive is posted into the spare capacity
//!    of the framer's buffer ([`Framer::recv_target`]: at most the bytes
//!    the frame misses, and the buffer grows with the bytes that arrived
//!    only, as for copied bytes), again and again until the frame is
//!    complete ([`Direct::InFlight`] while one is posted);
//! 3. the frame is delivered as a copied one would be (a large one handed
//!    over as `Bytes`), and the multishot receive is re-armed.
//!
//! Bulk mode, for messages of 32 KiB and more: a frame of 32–256 KiB always
//! straddles the 64 KiB buffers of the multishot receive (a 64 KiB payload
//! plus its header), so it was copied whole; and for a larger one, what the
//! multishot receive brings before the switch above takes effect is copied
//! (measured: ~5 % of the server's CPU at 16 MiB messages), besides the
//! cancel and re-arm per frame. After a feed whose longest message was
//! 32 KiB or more the connection stays off the multishot receive: between
//! frames it posts a receive into a buffer of that size, at most
//! [`BULK_MAX`] ([`Framer::recv_target_between`], header and body, the
//! bytes of a next frame too, which the framer decodes after the frame),
//! finishes a frame it did not get whole with direct receives as above,
//! and goes back to the multishot receive once a feed delivers a smaller
//! message.
//! Such a buffer is posted before its bytes arrive (and stays while the
//! peer is quiet), so at most [`super::receives::BULK_CONNECTIONS`]
//! connections per shard have one (16 MiB in all); the others use the
//! multishot receive.
//!
//! Everything else stays as it is: a direct receive counts as the slot's
//! receive in flight (`recv_armed`), so a pause, a close or a frame
//! timeout cancels it ([`Op::CancelRecvInto`]) and the close waits for its
//! completion; bytes it brought while the connection paused complete the
//! frame, which is delivered when the connection resumes (`replay`); end
//! of stream inside the frame is a truncated frame; the reassembly memory
//! is accounted and bounded per shard as before.
//!
//! [`Framer::recv_target`]: crate::codec::Framer::recv_target
//! [`Framer::recv_target_between`]: crate::codec::Framer::recv_target_between

use super::conn::SlotState;
use super::inputs::{Direct, InputState};
use super::{Core, Engine};
use crate::codec::{Codec, MAX_HEADER_LEN};
use crate::error::CloseReason;
use crate::handler::Handler;
use crate::sys::{Op, RecvTarget};

/// A located frame that misses fewer bytes than this is finished through
/// the multishot receive: switching costs a cancel and a receive more.
pub(super) const DIRECT_MIN: usize = 16 * 1024;

/// Bulk mode: a connection whose last message was at least `BULK_MIN`
/// bytes receives the next frame (header and body) straight into a buffer
/// of that size, at most `BULK_MAX`, instead of through the multishot
/// receive, whose buffers a frame of 64 KiB always straddles (so it was
/// copied). It goes back to the multishot receive when a smaller message
/// comes.
pub(super) const BULK_MIN: usize = 32 * 1024;
pub(super) const BULK_MAX: usize = 256 * 1024;

#[cfg(test)]
pub(super) use super::receives::BULK_CONNECTIONS;

impl<C: Codec> Core<C> {
    /// The connection may receive the rest of its frame directly: plaintext,
    /// open, not paused, not at its end, no backlog, and a located frame
    /// missing at least `min` bytes.
    fn direct_worth(&self, slot: usize, min: usize) -> bool {
        self.may_receive_directly(slot)
            && self.inputs.get(slot).is_some_and(|i| {
                i.backlog.is_empty() && i.framer.missing().is_some_and(|m| m >= min.max(1))
            })
    }

    /// Plaintext, open, not paused, not at its end.
    fn may_receive_directly(&self, slot: usize) -> bool {
        let s = &self.conns[slot];
        if !s.transport.is_plain() {
            return false;
        }
        s.state == SlotState::Open && !s.recv_paused() && !s.read_closed()
    }

    /// The connection is in bulk mode, between frames, with no backlog,
    /// and the shard has room for one more bulk receive.
    fn bulk_worth(&self, slot: usize) -> bool {
        self.receives.bulk_room()
            && self.may_receive_directly(slot)
            && self
                .inputs
                .get(slot)
                .is_some_and(|i| i.bulk > 0 && i.framer.buffered() == 0 && i.backlog.is_empty())
    }

    /// After a feed that delivered messages: bulk mode on if the longest
    /// was at least [`BULK_MIN`] bytes (receiving up to [`BULK_MAX`]
    /// between frames), else off.
    pub(super) fn note_bulk(&mut self, slot: usize, input: &mut InputState<C>) {
        let largest = self.receives.take_largest();
        input.bulk = if largest >= BULK_MIN {
            largest.min(BULK_MAX) + 2 * MAX_HEADER_LEN
        } else {
            0
        };
        if !self.conns[slot].transport.is_plain() {
            input.bulk = 0;
        }
    }

    /// Posts a bulk receive (between frames, into a fresh buffer of the
    /// last large frame's size) if the connection is in bulk mode; returns
    /// whether it did (or closed the connection for the shard's bound).
    pub(super) fn start_bulk(&mut self, slot: usize) -> bool {
        if self.conns[slot].recv_armed() || !self.bulk_worth(slot) {
            return false;
        }
        let before = self.held(slot);
        let Some(input) = self.inputs.get_mut(slot) else {
            return false;
        };
        let size = input.bulk;
        let Some(target) = input.framer.recv_target_between(size) else {
            return false;
        };
        let target = RecvTarget {
            ptr: target.as_mut_ptr().cast(),
            len: target.len().min(i32::MAX as usize),
        };
        input.direct = Direct::Bulk(target);
        self.receives.bulk_started();
        self.post_recv_into(slot, before)
    }

    /// The direct receive posted on `slot`, if any.
    pub(super) fn direct_target(&self, slot: usize) -> Option<RecvTarget> {
        match self.inputs.get_checked(slot)?.direct {
            Direct::InFlight(target) | Direct::Bulk(target) => Some(target),
            _ => None,
        }
    }

    /// After a receive's bytes were fed, with the multishot receive still
    /// armed: cancels it if the frame in progress is worth receiving
    /// directly (the switch completes in [`Self::start_direct`]).
    pub(super) fn consider_direct(&mut self, slot: usize) {
        // The receive of nearly every small message leaves neither a frame
        // in progress missing `DIRECT_MIN` nor bulk mode: answered from the
        // input state alone, before the checks that look the slot up.
        let unlikely = self
            .inputs
            .get(slot)
            .is_none_or(|i| i.bulk == 0 && i.framer.missing().is_none_or(|m| m < DIRECT_MIN));
        if unlikely {
            return;
        }
        if !self.conns[slot].recv_armed()
            || !(self.direct_worth(slot, DIRECT_MIN) || self.bulk_worth(slot))
        {
            return;
        }
        if let Some(input) = self.inputs.get_mut(slot)
            && input.direct == Direct::Off
        {
            input.direct = Direct::Switching;
            self.cancel_recv(slot);
        }
    }

    /// Posts a direct receive for the rest of the frame in progress if it
    /// is worth it (no receive in flight); returns whether it did (or
    /// closed the connection for the shard's reassembly bound). A frame
    /// being received directly is finished so, whatever it still misses.
    pub(super) fn start_direct(&mut self, slot: usize) -> bool {
        let min = match self.inputs.get_checked(slot) {
            Some(i) if i.direct == Direct::Receiving => 1,
            _ => DIRECT_MIN,
        };
        if self.conns[slot].recv_armed() || !self.direct_worth(slot, min) {
            if let Some(input) = self.inputs.get_mut(slot) {
                input.direct = Direct::Off;
            }
            return false;
        }
        let before = self.held(slot);
        let Some(input) = self.inputs.get_mut(slot) else {
            return false;
        };
        let Some(target) = input.framer.recv_target() else {
            input.direct = Direct::Off;
            return false;
        };
        // Recorded from the `&mut` now; the framer is not touched again
        // until the receive's completion (the contract in `sys`).
        let target = RecvTarget {
            ptr: target.as_mut_ptr().cast(),
            len: target.len().min(i32::MAX as usize),
        };
        input.direct = Direct::InFlight(target);
        self.post_recv_into(slot, before)
    }

    /// Posts the direct receive just recorded in the slot's input state,
    /// after accounting the memory it grew by (past the shard's bound the
    /// connection is closed instead).
    fn post_recv_into(&mut self, slot: usize, before: u64) -> bool {
        let after = self.held(slot);
        let stats = &mut self.stats;
        stats.reassembly_bytes = (stats.reassembly_bytes + after).saturating_sub(before);
        if stats.reassembly_bytes > self.inputs.reassembly_limit() as u64 {
            stats.input_limit_closes += 1;
            tracing::info!(
                slot,
                held = stats.reassembly_bytes,
                limit = self.inputs.reassembly_limit(),
                "shard's partial-frame memory over its bound; closing the connection that grew it"
            );
            if let Some(input) = self.inputs.get_mut(slot) {
                if matches!(input.direct, Direct::Bulk(_)) {
                    self.receives.bulk_ended();
                }
                input.direct = Direct::Off;
            }
            self.begin_close(slot, CloseReason::Overloaded, false);
            return true;
        }
        self.stats.direct_recvs += 1;
        let s = &mut self.conns[slot];
        s.set_recv_armed(true);
        let generation = s.generation;
        self.ops.push(Op::RecvInto {
            slot: slot as u32,
            generation,
        });
        true
    }

    /// Once no receive is in flight on `slot`: the next one (a direct one
    /// at once for the rest of a large frame, else the multishot receive at
    /// the next turn), or the close that waited for it.
    pub(super) fn after_recv_ended(&mut self, slot: usize) {
        let s = &self.conns[slot];
        if s.recv_armed() {
            return;
        }
        match s.state {
            SlotState::Open => {
                let go_on =
                    !s.recv_paused() && !s.read_closed() && self.inputs.backlog_is_empty(slot);
                if go_on && !self.start_direct(slot) && !self.start_bulk(slot) {
                    self.receives.rearm_later(slot);
                }
            }
            SlotState::Closing => self.try_release(slot),
            _ => {}
        }
    }

    /// The receive in flight on `slot` is a direct one.
    pub(super) fn direct_in_flight(&self, slot: usize) -> bool {
        self.direct_target(slot).is_some()
    }
}

impl<C: Codec, H: Handler> Engine<C, H> {
    /// A direct receive completed: its bytes are in the framer's buffer.
    pub(super) fn on_recv_into(&mut self, slot: u32, generation: u32, result: i32) {
        let slot = slot as usize;
        let core = &mut self.core;
        let current = core.conns.get(slot).is_some_and(|s| {
            s.generation == generation && s.state != SlotState::Free && s.recv_armed()
        });
        let Some(target) = core.direct_target(slot).filter(|_| current) else {
            return;
        };
        core.conns[slot].set_recv_armed(false);
        if let Some(input) = core.inputs.get_mut(slot) {
            if matches!(input.direct, Direct::Bulk(_)) {
                core.receives.bulk_ended();
            }
            input.direct = Direct::Receiving;
            if result > 0 {
                let n = (result as usize).min(target.len);
                // SAFETY: the kernel (or the epoll backend's read) wrote
                // `n` bytes at the start of the target this framer gave
                // for this receive, and the framer was left alone since
                // (the contract in `sys`).
                unsafe { input.framer.commit_received(n) };
            }
        }
        if result > 0 {
            let n = (result as usize).min(target.len) as u64;
            let now_ms = self.core.clock.now_ms();
            self.core.stats.bytes_in += n;
            let s = &mut self.core.conns[slot];
            s.bytes_in += n;
            s.last_input = now_ms as u32;
            if s.state == SlotState::Open {
                // Delivers the frame if complete (not while paused: then
                // `replay` does), tracks its timing, checks the bounds.
                self.deliver_plain(slot, generation, &[]);
            }
        } else if result == 0 {
            self.core.conns[slot].set_read_closed(true);
            if self.core.conns[slot].state == SlotState::Open {
                self.close_at_eof(slot);
            }
        } else if -result != libc::ECANCELED {
            self.core
                .begin_close(slot, CloseReason::Reset(-result), false);
        }
        self.core.after_recv_ended(slot);
    }
}
