//! Connections whose protocol is not the framed codec (`crate::protocol`):
//! the engine side of the protocol seam.
//!
//! A listener may carry a [`crate::protocol::ListenerProtocol`]; each
//! connection it accepts gets a [`crate::protocol::ConnProtocol`] (kept in
//! the [`super::protocol_states::Protocols`] part, by slot; framed
//! connections have none and pay nothing). Received plaintext goes
//! through it instead of the framer: it answers the opening handshake after asking the handler
//! (`Handler::on_upgrade`), hands whole messages to `on_message`, answers
//! control traffic itself and ends the connection with a reason. Messages
//! sent to such a connection are framed by it (a header before the payload,
//! which is still queued by reference when shared), and a close says
//! goodbye through it (a close frame) before the transport's end.

use std::net::SocketAddr;

use bytes::Bytes;

use super::conn::SlotState;
use super::{Core, Engine};
use crate::codec::Codec;
use crate::conn_id::ConnId;
use crate::error::{CloseReason, SendError};
use crate::handler::{Context, Handler};
use crate::protocol::{
    Framed, FramedShared, MAX_PROTOCOL_HEADER, MessageKind, Payload, Step, UpgradeDecision,
};

impl<C: Codec> Core<C> {
    /// An accepted connection from listener `listener`: its protocol state,
    /// if the listener has one.
    pub(super) fn attach_protocol(&mut self, slot: usize, listener: u8, peer: SocketAddr) {
        let Some(make) = self.protocols.listener(listener) else {
            return;
        };
        let conn = make.open(peer, self.clock.now());
        let deadline = self.clock.now() + make.handshake_timeout();
        let generation = self.conns[slot].generation;
        self.protocols.insert(slot, conn);
        self.protocols.expect_upgrade(slot, generation, deadline);
    }

    /// The slot is free again: its protocol state goes (and the memory it
    /// held leaves the shard's input account).
    pub(super) fn detach_protocol(&mut self, slot: usize) {
        if self.protocols.any() {
            let held = self.protocols.heap_bytes(slot);
            self.stats.reassembly_bytes = self.stats.reassembly_bytes.saturating_sub(held);
            self.protocols.take(slot);
        }
    }

    /// Whether `slot` has a protocol and is still in its opening handshake
    /// (not yet shown to the handler).
    #[inline]
    pub(super) fn upgrading(&self, slot: usize) -> bool {
        self.conns[slot].has_protocol() && self.protocols.upgrading(slot)
    }

    /// Queues protocol output (handshake response, pong, close frame) of
    /// `slot` as it is, through its transport.
    pub(super) fn queue_raw(&mut self, slot: usize, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let s = &mut self.conns[slot];
        let before = s.queue.len();
        if s.transport.is_plain() {
            s.queue.push_copy(self.sends.pool(), &[bytes]);
        } else {
            s.transport.write(&[bytes], &mut s.queue, self.sends.pool());
        }
        let added = self.conns[slot].queue.len() - before;
        self.stats.send_queue_bytes += added as u64;
        self.mark_dirty(slot);
    }

    /// Queues one message of `kind` to a protocol connection: framed by its
    /// protocol; `shared` (the same bytes as `payload`) is queued by
    /// reference after the header.
    pub(super) fn enqueue_protocol(
        &mut self,
        slot: usize,
        kind: MessageKind,
        payload: &[u8],
        shared: Option<Bytes>,
    ) -> Result<(), SendError> {
        let mut out = self.protocols.take_out();
        let mut header = [0u8; MAX_PROTOCOL_HEADER];
        let framed = match self.protocols.get_mut(slot) {
            Some(p) => p.frame(kind, payload, &mut header, &mut out),
            None => Err(SendError::Closed),
        };
        let result = framed.map(|framed| {
            let s = &mut self.conns[slot];
            let before = s.queue.len();
            match (framed, shared) {
                (Framed::Written, _) => {
                    if s.transport.is_plain() {
                        s.queue.push_copy(self.sends.pool(), &[&out]);
                    } else {
                        s.transport.write(&[&out], &mut s.queue, self.sends.pool());
                    }
                }
                (Framed::Header(n), Some(bytes)) if s.transport.is_plain() => {
                    s.queue
                        .push_shared(self.sends.pool(), &header[..n], bytes, &[]);
                }
                (Framed::Header(n), _) => {
                    if s.transport.is_plain() {
                        s.queue
                            .push_copy(self.sends.pool(), &[&header[..n], payload]);
                    } else {
                        s.transport.write(
                            &[&header[..n], payload],
                            &mut s.queue,
                            self.sends.pool(),
                        );
                    }
                }
            }
            self.queued(slot, before);
        });
        self.protocols.put_out(out);
        result
    }

    /// A new message to fan out (a broadcast or a publish): what the
    /// protocols kept of the previous one goes.
    pub(super) fn begin_fanout(&mut self) {
        self.protocols.begin_fanout();
    }

    /// Queues a message being fanned out (see [`Self::begin_fanout`]) to
    /// `slot`: framed by its protocol if it has one (work shared between
    /// the connections done once), else by the codec.
    pub(super) fn enqueue_fanout(
        &mut self,
        slot: usize,
        kind: MessageKind,
        payload: &Bytes,
    ) -> Result<(), SendError> {
        if !self.conns[slot].has_protocol() {
            return self.enqueue_shared(slot, payload.clone());
        }
        let mut out = self.protocols.take_out();
        let mut header = [0u8; MAX_PROTOCOL_HEADER];
        let mut cache = self.protocols.fanout_cache().take();
        let framed = match self.protocols.get_mut(slot) {
            Some(p) => p.frame_shared(kind, payload, &mut cache, &mut header, &mut out),
            None => Err(SendError::Closed),
        };
        *self.protocols.fanout_cache() = cache;
        let result = framed.map(|framed| {
            let s = &mut self.conns[slot];
            let before = s.queue.len();
            let plain = s.transport.is_plain();
            match framed {
                FramedShared::Header(n) if plain => {
                    s.queue
                        .push_shared(self.sends.pool(), &header[..n], payload.clone(), &[]);
                }
                FramedShared::Header(n) => {
                    s.transport
                        .write(&[&header[..n], payload], &mut s.queue, self.sends.pool());
                }
                FramedShared::Frame(frame) if plain => {
                    s.queue.push_shared(self.sends.pool(), &[], frame, &[]);
                }
                FramedShared::Frame(frame) => {
                    s.transport
                        .write(&[&frame], &mut s.queue, self.sends.pool());
                }
                FramedShared::Written if plain => s.queue.push_copy(self.sends.pool(), &[&out]),
                FramedShared::Written => {
                    s.transport.write(&[&out], &mut s.queue, self.sends.pool());
                }
            }
            self.queued(slot, before);
        });
        self.protocols.put_out(out);
        result
    }

    /// A flushing close of a protocol connection: its goodbye (a close
    /// frame) before the transport's end.
    pub(super) fn protocol_goodbye(&mut self, slot: usize, reason: &CloseReason) {
        let mut out = self.protocols.take_out();
        let Some(p) = self.protocols.get_mut(slot) else {
            self.protocols.put_out(out);
            return;
        };
        p.close(reason, self.clock.now(), &mut out);
        self.queue_raw(slot, &out);
        self.protocols.put_out(out);
    }

    /// A heartbeat of a protocol connection (a ping); false if its
    /// protocol has none.
    pub(super) fn protocol_heartbeat(&mut self, slot: usize) -> bool {
        let mut out = self.protocols.take_out();
        let Some(p) = self.protocols.get_mut(slot) else {
            self.protocols.put_out(out);
            return false;
        };
        let sent = p.heartbeat(&mut out);
        self.queue_raw(slot, &out);
        self.protocols.put_out(out);
        sent
    }

    /// Closes the connections whose opening handshake is past its
    /// deadline (every tick).
    pub(super) fn expire_upgrades(&mut self) {
        while let Some((slot, generation)) = self.protocols.next_overdue_upgrade(self.clock.now()) {
            let s = &self.conns[slot];
            if s.generation == generation && s.state == SlotState::Open && self.upgrading(slot) {
                self.stats.upgrade_timeouts += 1;
                tracing::debug!(slot, "opening handshake not complete in time; closing");
                self.begin_close(
                    slot,
                    CloseReason::InvalidFrame("opening handshake not complete in time".into()),
                    false,
                );
            }
        }
    }
}

impl<C: Codec, H: Handler> Engine<C, H> {
    /// Received plaintext of a protocol connection: what was left from
    /// before, then `data`, read step by step (or kept, while reading is
    /// paused).
    pub(super) fn deliver_protocol(&mut self, slot: usize, generation: u32, data: &[u8]) {
        let before = self.core.held(slot);
        let messages_before = self.core.stats.messages_in;
        let mut input = self.core.inputs.take(slot);
        let paused = self.core.conns[slot].recv_paused();
        if paused {
            input.backlog.extend_from_slice(data);
        } else {
            let mut buf = self.core.protocols.take_input();
            buf.extend_from_slice(&input.carry);
            buf.extend_from_slice(&input.backlog);
            buf.extend_from_slice(data);
            input.carry.clear();
            input.backlog.clear();
            let (used, need_more) = self.read_protocol(slot, generation, &mut buf);
            if used < buf.len() && self.core.conns[slot].state == SlotState::Open {
                // Waiting for more bytes: the start of the next step;
                // stopped (paused): input to replay.
                let rest = &buf[used..];
                if need_more {
                    input.carry.extend_from_slice(rest);
                } else {
                    input.backlog.extend_from_slice(rest);
                }
            }
            self.core.protocols.put_input(buf);
        }
        // Frame timing (`frame_timeout`) of the message in progress; the
        // protocol is asked only when the timeout is on.
        if self.core.sweeps.frame_timeout_on() && self.core.conns[slot].state == SlotState::Open {
            let absorbed = self.core.protocols.partial(slot);
            let partial = super::input::protocol_partial(absorbed, input.carry.len() as u64);
            let delivered = self.core.stats.messages_in != messages_before;
            self.track_message_start(&mut input, partial, delivered);
        }
        self.core.inputs.put(slot, input, true);
        self.account_held(slot, before);
        self.after_feed(slot, Ok(()));
    }

    /// Reads `buf` step by step while the connection is open and not
    /// paused; returns the bytes used and whether the protocol waits for
    /// more (else reading stopped before the end).
    fn read_protocol(&mut self, slot: usize, generation: u32, buf: &mut [u8]) -> (usize, bool) {
        let conn = ConnId::new(self.core.index as u16, slot as u32, generation);
        let mut pos = 0;
        let mut out = self.core.protocols.take_out();
        let mut need_more = false;
        loop {
            let s = &self.core.conns[slot];
            if s.state != SlotState::Open
                || s.recv_paused()
                || self.core.sends.over_high_water(s.queue.len())
            {
                break;
            }
            let Some(p) = self.core.protocols.get_mut(slot) else {
                break;
            };
            out.clear();
            let start = pos;
            let (used, step) = p.receive(&mut buf[start..], self.core.clock.now(), &mut out);
            pos += used;
            self.core.queue_raw(slot, &out);
            match step {
                Step::NeedMore => {
                    need_more = true;
                    break;
                }
                Step::Control => {}
                Step::Close(reason) => {
                    if matches!(reason, CloseReason::FrameTooLarge { .. }) {
                        self.core.stats.frames_too_large += 1;
                    }
                    if self.core.upgrading(slot) {
                        // Refused by the protocol (a malformed or oversized
                        // request): the handler never hears of it.
                        self.core.stats.upgrades_refused += 1;
                        self.core.leave_handshake(slot);
                    }
                    self.core.begin_close(slot, reason, true);
                    break;
                }
                Step::Upgrade => {
                    let mut p = self.core.protocols.take(slot).expect("present");
                    let peer = self.core.conns[slot].peer();
                    let decision = match p.upgrade_info() {
                        Some(info) => {
                            let mut ctx = Context {
                                core: &mut self.core,
                            };
                            self.handler.on_upgrade(&mut ctx, conn, peer, info)
                        }
                        None => UpgradeDecision::Refuse { status: 400 },
                    };
                    out.clear();
                    let opened = p.decide(decision, &mut out);
                    self.core.protocols.insert(slot, p);
                    self.core.leave_handshake(slot);
                    self.core.queue_raw(slot, &out);
                    match opened {
                        Ok(true) => {
                            self.core.stats.upgrades += 1;
                            self.connected(conn, peer);
                        }
                        Ok(false) | Err(_) => {
                            // Never shown to the handler: no state, so no
                            // `on_close` either.
                            self.core.stats.upgrades_refused += 1;
                            self.core.begin_close(
                                slot,
                                CloseReason::InvalidFrame("opening handshake refused".into()),
                                true,
                            );
                            break;
                        }
                    }
                }
                Step::Message(kind, payload) => {
                    let Some(state) = self
                        .states
                        .get_mut_if_allocated(slot)
                        .and_then(Option::as_mut)
                    else {
                        continue;
                    };
                    let core = &mut self.core;
                    // The message rate limit, as for framed messages: over
                    // it, the close policy drops this message and closes.
                    if core.rate.on()
                        && matches!(core.rate_charge(slot), super::rate::Verdict::Closed)
                    {
                        break;
                    }
                    core.stats.messages_in += 1;
                    core.protocols.set_current_kind(kind);
                    let owned;
                    let (message, shared): (&[u8], _) = match payload {
                        Payload::Input(a, b) => (&buf[start + a..start + b], None),
                        Payload::Owned(bytes) => {
                            owned = bytes;
                            (&owned, Some(owned.clone()))
                        }
                    };
                    core.receives.handling(message.len(), shared);
                    let mut ctx = Context { core: &mut *core };
                    self.handler.on_message(&mut ctx, conn, state, message);
                    core.receives.handled();
                    core.protocols.set_current_kind(MessageKind::Binary);
                    if core.outbox.over_soft_limit() {
                        core.pause_for_outbox(slot);
                    }
                }
            }
        }
        self.core.protocols.put_out(out);
        (pos, need_more)
    }

    /// A resumed protocol connection: its kept input is read now.
    pub(super) fn replay_protocol(&mut self, slot: usize) {
        let generation = self.core.conns[slot].generation;
        self.deliver_protocol(slot, generation, &[]);
    }
}
