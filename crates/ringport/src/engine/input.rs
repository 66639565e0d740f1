//! Receiving: framing, the handler's `on_message`, and the backlog that
//! holds input while a connection is paused (its send queue at the
//! high-water mark), so nothing is lost and the handler never has to refuse
//! a reply. The message rate limit is charged here too (its buckets are
//! the [`super::rate::Rates`] part).
//!
//! A connection has an input state (framer, backlog, frame timing) only
//! while it has a partial frame or held-back input; the states, their pool
//! and the input bounds are the [`super::inputs::Inputs`] part.

use super::conn::SlotState;
use super::inputs::InputState;
use super::rate::{Charge, Verdict};
use super::{Core, Engine};
use crate::codec::{Codec, CodecError, Framer, Partial};
use crate::conn_id::ConnId;
use crate::error::CloseReason;
use crate::handler::{Context, Handler};
use crate::protocol::framed;
use crate::sys::{BufId, RecvBuffers};

/// A drained backlog keeps at most this much capacity.
const RETAIN_BACKLOG: usize = 64 * 1024;

impl<C: Codec> Core<C> {
    /// Bytes held for a connection's input (its input state's buffers and
    /// its protocol's).
    pub(super) fn held(&self, slot: usize) -> u64 {
        self.inputs.held(slot) + self.protocols.heap_bytes(slot)
    }

    /// The message `slot` is receiving, if some of its bytes arrived: its
    /// framer's frame, or for a protocol connection the message its
    /// protocol absorbed part of plus the bytes kept for its next step.
    pub(super) fn partial(&self, slot: usize) -> Option<Partial> {
        if !self.conns[slot].has_protocol() {
            return self.inputs.partial(slot);
        }
        let carried = self.inputs.get(slot).map_or(0, |i| i.carry.len() as u64);
        protocol_partial(self.protocols.partial(slot), carried)
    }
}

/// A protocol connection's message in progress: what its protocol absorbed
/// (`absorbed`) and `carried` bytes the engine keeps for its next step (the
/// start of a header: how long the message is, is then unknown).
pub(super) fn protocol_partial(absorbed: Option<Partial>, carried: u64) -> Option<Partial> {
    match (absorbed, carried) {
        (None, 0) => None,
        (None, have) => Some(Partial {
            have,
            missing: None,
        }),
        (Some(p), 0) => Some(p),
        (Some(p), more) => Some(Partial {
            have: p.have + more,
            missing: None,
        }),
    }
}

impl<C: Codec, H: Handler> Engine<C, H> {
    pub(super) fn on_recv(
        &mut self,
        slot: u32,
        generation: u32,
        result: i32,
        buf: Option<BufId>,
        more: bool,
        bufs: &(impl RecvBuffers + ?Sized),
    ) {
        let slot = slot as usize;
        let current = self
            .core
            .conns
            .get(slot)
            .is_some_and(|s| s.generation == generation && s.state != SlotState::Free);
        if !current {
            return;
        }
        if !more {
            self.core.conns[slot].set_recv_armed(false);
        }
        let backlog_empty = self.core.inputs.backlog_is_empty(slot);
        if result > 0 {
            if let Some(buf) = buf
                && self.core.conns[slot].state == SlotState::Open
            {
                self.deliver(slot, generation, bufs.buffer(buf, result as usize));
                if more {
                    self.core.consider_direct(slot);
                }
            }
        } else if result == 0 {
            self.core.conns[slot].set_read_closed(true);
            // Input held back by a pause is answered before the close.
            if backlog_empty {
                self.close_at_eof(slot);
            }
        } else {
            match -result {
                libc::ENOBUFS => self.core.stats.recv_no_buffers += 1,
                libc::ECANCELED => {}
                errno => self
                    .core
                    .begin_close(slot, CloseReason::Reset(errno), false),
            }
        }
        self.core.after_recv_ended(slot);
    }

    pub(super) fn account_held(&mut self, slot: usize, before: u64) {
        let after = self.core.held(slot);
        let stats = &mut self.core.stats;
        stats.reassembly_bytes = (stats.reassembly_bytes + after).saturating_sub(before);
    }

    /// Hands received bytes to the framer and the handler. While the
    /// connection is paused, or has older input waiting, the bytes go to
    /// its backlog instead: they are replayed when the queue drains.
    fn deliver(&mut self, slot: usize, generation: u32, data: &[u8]) {
        if !self.core.conns[slot].transport.is_plain() {
            return self.deliver_through_transport(slot, generation, data);
        }
        self.deliver_plain(slot, generation, data);
    }

    /// [`Self::deliver`] of plaintext.
    pub(super) fn deliver_plain(&mut self, slot: usize, generation: u32, data: &[u8]) {
        if self.core.conns[slot].has_protocol() {
            let s = &mut self.core.conns[slot];
            s.bytes_in += data.len() as u64;
            s.last_input = self.core.clock.stamp();
            self.core.stats.bytes_in += data.len() as u64;
            return self.deliver_protocol(slot, generation, data);
        }
        let before = self.core.held(slot);
        let messages_before = self.core.stats.messages_in;
        self.core.receives.feed_starts();
        self.core.stats.bytes_in += data.len() as u64;
        let now_ms = self.core.clock.now_ms();
        let s = &mut self.core.conns[slot];
        s.bytes_in += data.len() as u64;
        s.last_input = now_ms as u32;
        let paused = s.recv_paused();
        let mut input = self.core.inputs.take(slot);
        let result = if paused || !input.backlog.is_empty() {
            input.backlog.extend_from_slice(data);
            Ok(())
        } else {
            let conn = ConnId::new(self.core.index as u16, slot as u32, generation);
            let state = self
                .states
                .get_mut_if_allocated(slot)
                .and_then(Option::as_mut);
            feed_frames(
                &mut self.core,
                &mut self.handler,
                &mut input.framer,
                state,
                conn,
                data,
            )
            .map(|consumed| {
                if consumed < data.len() && self.core.conns[slot].state == SlotState::Open {
                    input.backlog.extend_from_slice(&data[consumed..]);
                }
            })
        };
        let delivered = self.core.stats.messages_in != messages_before;
        if delivered {
            self.core.note_bulk(slot, &mut input);
        }
        self.track_frame_start(&mut input, delivered);
        self.core.inputs.put(slot, input, result.is_ok());
        self.account_held(slot, before);
        self.after_feed(slot, result);
    }

    /// Replays the backlog of every connection whose queue drained.
    pub(super) fn replay_resumed(&mut self) {
        while let Some(slot) = self.core.receives.next_resumed() {
            self.replay(slot);
        }
    }

    /// Feeds a resumed connection's backlog; once it is empty (and the
    /// connection not paused again), reading resumes, or the close that a
    /// FIN behind the backlog asked for happens.
    fn replay(&mut self, slot: usize) {
        let s = &self.core.conns[slot];
        if s.state != SlotState::Open || s.recv_paused() {
            return;
        }
        if s.has_protocol() {
            self.replay_protocol(slot);
            return self.after_replay(slot);
        }
        let generation = s.generation;
        let before = self.core.held(slot);
        let messages_before = self.core.stats.messages_in;
        let mut input = self.core.inputs.take(slot);
        let mut backlog = std::mem::take(&mut input.backlog);
        let mut result = Ok(());
        // A frame a direct receive completed while paused is delivered now.
        let complete = input.framer.missing() == Some(0);
        if !backlog.is_empty() || complete {
            let conn = ConnId::new(self.core.index as u16, slot as u32, generation);
            let state = self
                .states
                .get_mut_if_allocated(slot)
                .and_then(Option::as_mut);
            result = feed_frames(
                &mut self.core,
                &mut self.handler,
                &mut input.framer,
                state,
                conn,
                &backlog,
            )
            .map(|consumed| {
                backlog.drain(..consumed);
            });
            if backlog.is_empty() && backlog.capacity() > RETAIN_BACKLOG {
                backlog = Vec::new();
            }
        }
        input.backlog = backlog;
        let delivered = self.core.stats.messages_in != messages_before;
        self.track_frame_start(&mut input, delivered);
        self.core.inputs.put(slot, input, result.is_ok());
        self.account_held(slot, before);
        self.after_feed(slot, result);
        self.after_replay(slot);
    }

    /// After a replay: once the backlog is empty (and the connection not
    /// paused again), reading resumes, or the close a FIN asked for happens.
    fn after_replay(&mut self, slot: usize) {
        let backlog_empty = self.core.inputs.backlog_is_empty(slot);
        let s = &self.core.conns[slot];
        if s.state == SlotState::Open && !s.recv_paused() && backlog_empty {
            if s.read_closed() {
                self.close_at_eof(slot);
            } else if !s.recv_armed() {
                self.core.receives.rearm_later(slot);
            }
        }
    }

    /// The peer closed its side and all its input has been handled: a
    /// frame cut short is reported as such.
    pub(super) fn close_at_eof(&mut self, slot: usize) {
        let reason = match self.core.partial(slot) {
            Some(Partial { have, missing }) => {
                self.core.stats.truncated_frames += 1;
                tracing::debug!(slot, have, ?missing, "peer closed inside a frame");
                CloseReason::TruncatedFrame { have, missing }
            }
            None => CloseReason::PeerClosed,
        };
        self.core.begin_close(slot, reason, true);
    }

    /// Notes when the frame being received began: a frame still partial
    /// after a feed that delivered messages is a new one.
    fn track_frame_start(&mut self, s: &mut InputState<C>, delivered: bool) {
        if self.core.sweeps.frame_timeout_on() {
            let partial = s.framer.partial();
            self.track_message_start(s, partial, delivered);
        }
    }

    /// [`Self::track_frame_start`] for the message in progress `partial`
    /// (the framer's, or a protocol connection's); only with
    /// `frame_timeout` on.
    pub(super) fn track_message_start(
        &mut self,
        s: &mut InputState<C>,
        partial: Option<Partial>,
        delivered: bool,
    ) {
        let now = self.core.clock.now();
        s.frame_started = match (&partial, delivered, s.frame_started) {
            (None, _, _) => None,
            (Some(_), false, Some(t)) => Some(t),
            (Some(_), _, _) => Some(now),
        };
        let sweeps = &self.core.sweeps;
        s.frame_deadline = s.frame_started.zip(partial).and_then(|(started, p)| {
            sweeps.frame_deadline(started, p.have + p.missing.unwrap_or(0))
        });
    }

    /// Closes the connections whose frame did not complete in time (found
    /// by the sweep).
    pub(super) fn close_stalled_frames(&mut self) {
        while let Some(slot) = self.core.sweeps.pop_stalled() {
            let slot = slot as usize;
            let (have, missing) = self
                .core
                .partial(slot)
                .map_or((0, None), |p| (p.have, p.missing));
            self.core.stats.frame_timeouts += 1;
            tracing::debug!(slot, have, ?missing, "frame not complete in time; closing");
            self.core
                .begin_close(slot, CloseReason::FrameTimeout { have, missing }, true);
        }
    }

    pub(super) fn after_feed(&mut self, slot: usize, result: Result<(), CodecError>) {
        let backlog = self.core.inputs.backlog_len(slot);
        let core = &mut self.core;
        match result {
            // Input that keeps arriving while the peer does not read its
            // replies (the receive was cancelled at the pause; only what
            // was in flight lands here): past the bound it is a slow
            // consumer.
            Ok(()) if backlog > core.inputs.backlog_limit() => {
                core.stats.slow_consumers += 1;
                tracing::debug!(slot, backlog, "input backlog over its bound; closing");
                core.begin_close(slot, CloseReason::SlowConsumer, false)
            }
            // Partial frames over all of this shard's connections: the one
            // that grew past the bound is closed.
            Ok(()) if core.stats.reassembly_bytes > core.inputs.reassembly_limit() as u64 => {
                core.stats.input_limit_closes += 1;
                tracing::info!(
                    slot,
                    held = core.stats.reassembly_bytes,
                    limit = core.inputs.reassembly_limit(),
                    "shard's partial-frame memory over its bound; closing the connection that grew it"
                );
                core.begin_close(slot, CloseReason::Overloaded, false)
            }
            Ok(()) => core.check_pause(slot),
            // The framed protocol's reason for the error, as through the
            // seam (`protocol::framed`).
            Err(e) => {
                let reason = framed::close_reason(e);
                if let CloseReason::FrameTooLarge { len, max } = reason {
                    core.stats.frames_too_large += 1;
                    tracing::debug!(slot, len, max, "frame too large; closing");
                }
                core.begin_close(slot, reason, true)
            }
        }
    }
}

impl<C: Codec> Core<C> {
    /// Stops reading a connection whose queue reached the high-water mark.
    pub(super) fn check_pause(&mut self, slot: usize) {
        let s = &mut self.conns[slot];
        if s.state == SlotState::Open
            && !s.recv_paused()
            && self.sends.over_high_water(s.queue.len())
        {
            s.set_recv_paused(true);
            self.stats.read_pauses += 1;
            if s.recv_armed() {
                self.cancel_recv(slot);
            }
        }
    }

    /// Stops reading a connection whose message left the outbox over half
    /// full (other shards' queues are full): its further messages would
    /// add to it. Resumed once the outbox drains (`resume_after_outbox`).
    pub(super) fn pause_for_outbox(&mut self, slot: usize) {
        let s = &mut self.conns[slot];
        if s.state == SlotState::Open && !s.held_by_outbox() {
            s.set_held_by_outbox(true);
            self.receives.hold_for_outbox(slot);
            self.pause_reading(slot);
        }
    }

    /// Stops reading `slot` (if it is reading): what arrives meanwhile waits
    /// in the kernel, or in its backlog.
    pub(super) fn pause_reading(&mut self, slot: usize) {
        let s = &mut self.conns[slot];
        if s.state == SlotState::Open && !s.recv_paused() {
            s.set_recv_paused(true);
            self.stats.read_pauses += 1;
            if s.recv_armed() {
                self.cancel_recv(slot);
            }
        }
    }

    /// Resumes reading `slot` unless something still holds it (its queue
    /// over half the high-water mark, the outbox, the application).
    pub(super) fn resume_reading_if_free(&mut self, slot: usize) {
        let s = &mut self.conns[slot];
        if s.state == SlotState::Open && self.sends.may_resume(s) {
            s.set_recv_paused(false);
            self.receives.resume_later(slot);
        }
    }

    /// Charges one message of `slot` to its rate bucket (call only when
    /// `self.rate.on()`) and applies the verdict: a pause stops reading
    /// after this message, a close under the close policy drops it.
    pub(super) fn rate_charge(&mut self, slot: usize) -> Verdict {
        match self.rate.charge(slot, self.clock.now_ns()) {
            Charge::Deliver => Verdict::Deliver,
            Charge::Close => {
                self.stats.rate_limit_closes += 1;
                tracing::debug!(slot, "message rate over its limit; closing");
                self.begin_close(slot, CloseReason::RateLimited, true);
                Verdict::Closed
            }
            Charge::DeliverThenPause { resume_at } => {
                let s = &mut self.conns[slot];
                if s.state == SlotState::Open && !s.held_by_rate() {
                    s.set_held_by_rate(true);
                    self.rate.hold(slot, s.generation, resume_at);
                    self.stats.rate_limit_pauses += 1;
                    self.pause_reading(slot);
                }
                Verdict::DeliverThenPause
            }
        }
    }

    /// Resumes the connections whose rate bucket has a token again.
    pub(super) fn resume_rate_held(&mut self) {
        let now = self.clock.now_ns();
        while let Some((slot, generation)) = self.rate.next_due(now) {
            let s = &mut self.conns[slot];
            if s.generation != generation || !s.held_by_rate() {
                continue;
            }
            s.set_held_by_rate(false);
            self.resume_reading_if_free(slot);
        }
    }

    /// Re-arms the receives that ended and may go on.
    pub(super) fn rearm_recvs(&mut self) {
        while let Some(slot) = self.receives.next_rearm() {
            let s = &self.conns[slot];
            if s.state == SlotState::Open
                && !s.recv_armed()
                && !s.recv_paused()
                && !s.read_closed()
                && !self.start_direct(slot)
                && !self.start_bulk(slot)
            {
                self.arm_recv(slot);
            }
        }
    }
}

/// Runs the framer over `data`, calling the handler for every whole message
/// while the connection is open and its send queue below the high-water
/// mark. Returns how many bytes were consumed; the rest waits in the
/// backlog.
fn feed_frames<C: Codec, H: Handler>(
    core: &mut Core<C>,
    handler: &mut H,
    framer: &mut Framer<C>,
    state: Option<&mut H::ConnState>,
    conn: ConnId,
    data: &[u8],
) -> Result<usize, CodecError> {
    let Some(state) = state else {
        return Ok(data.len());
    };
    let slot = conn.slot() as usize;
    framer.feed_shared(data, |message, shared| {
        if core.rate.on() && matches!(core.rate_charge(slot), Verdict::Closed) {
            return false;
        }
        core.stats.messages_in += 1;
        // A reassembled large message is owned `Bytes`: a send of (part
        // of) it queues it by reference instead of copying (see `send`).
        core.receives.handling(message.len(), shared.cloned());
        let mut ctx = Context { core: &mut *core };
        handler.on_message(&mut ctx, conn, state, message);
        core.receives.handled();
        if core.outbox.over_soft_limit() {
            core.pause_for_outbox(slot);
        }
        let s = &core.conns[slot];
        s.state == SlotState::Open && !s.recv_paused() && !core.sends.over_high_water(s.queue.len())
    })
}
