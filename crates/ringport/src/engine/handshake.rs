//! Connections whose transport is not plain (`crate::transport`): a
//! handshake before the handler sees them, their own output (handshake
//! flights, alerts), decryption before the framer, a close that ends with
//! the transport's end of stream, and a deadline for the handshake. The
//! engine calls the transport the same way whatever it is; for a plain
//! connection every call here returns at once.
//!
//! Handshake places: a shard lets at most `max_handshakes_per_shard`
//! connections be in a handshake at once. The places are not TLS's: a slot
//! takes one with [`Core::enter_handshake`] and gives it back with
//! [`Core::leave_handshake`] (or when it is freed), so a protocol with a
//! handshake of its own (a WebSocket upgrade) takes a place the same way.
//! An accepted client whose transport has a handshake and finds no place
//! free waits, unread and unseen, in arrival order, holding its slot but
//! no transport state (`Stats::handshakes_waiting`); its handshake timeout
//! runs from accept,
//! so a flood of clients that never speak is closed at the timeout whether
//! it got a place or not. Established connections are not affected: the
//! bound only spaces out new handshakes.

use std::net::SocketAddr;
use std::time::Instant;

use super::conn::SlotState;
use super::handshakes::Waiting;
use super::{Core, Engine};
use crate::codec::Codec;
use crate::conn_id::ConnId;
use crate::error::CloseReason;
use crate::handler::Handler;
use crate::transport::{self, ClientSetup, Read};

impl<C: Codec> Core<C> {
    /// Whether a handshake place is free.
    pub(super) fn handshake_place_free(&self) -> bool {
        self.handshakes.place_free()
    }

    /// `slot` starts a handshake (transport or protocol): it takes a place,
    /// given back by [`Self::leave_handshake`] or when the slot is freed.
    /// Outbound connections take one too (they count, but never wait).
    pub(super) fn enter_handshake(&mut self, slot: usize) {
        let s = &mut self.conns[slot];
        if !s.in_handshake() {
            s.set_in_handshake(true);
            self.handshakes.enter();
        }
    }

    /// `slot`'s handshake is over: its place is free for a waiting client.
    pub(super) fn leave_handshake(&mut self, slot: usize) {
        let s = &mut self.conns[slot];
        if s.in_handshake() {
            s.set_in_handshake(false);
            self.handshakes.leave();
        }
    }

    /// Holds an admitted client, unread, until a handshake place frees.
    /// Its transport state is dropped meanwhile (a flood of waiting clients
    /// holds slots, not TLS sessions); only its deadline is kept.
    pub(super) fn wait_for_handshake(&mut self, slot: usize, peer: SocketAddr) {
        let s = &mut self.conns[slot];
        s.state = SlotState::Waiting;
        let deadline = s.transport.handshake_deadline();
        s.transport = crate::transport::Transport::default();
        let waiting = self.handshakes.wait(Waiting {
            slot: slot as u32,
            peer,
            accepted: self.clock.now(),
            deadline,
        });
        self.stats.handshakes_waiting = waiting as u64;
    }

    /// The next waiting client to open, its transport made, if a handshake
    /// place is free; the ones whose handshake deadline passed while they
    /// waited are closed.
    pub(super) fn next_for_handshake(&mut self) -> Option<(usize, SocketAddr)> {
        while self.handshake_place_free() {
            let w = self.handshakes.next_waiting()?;
            self.stats.handshakes_waiting = self.handshakes.waiting() as u64;
            let slot = w.slot as usize;
            if self.waited_too_long(slot, w.deadline) {
                continue;
            }
            if !self.attach_server_transport_at(slot, w.accepted) {
                continue;
            }
            return Some((slot, w.peer));
        }
        None
    }

    /// Closes a client that waited for a handshake place past its
    /// handshake deadline (unseen; it never counts as open).
    fn waited_too_long(&mut self, slot: usize, deadline: Option<Instant>) -> bool {
        let expired = deadline.is_some_and(|d| d <= self.clock.now());
        if expired {
            self.stats.tls_handshake_timeouts += 1;
            self.stats.tls_failures += 1;
            self.conns[slot].set_unseen(true);
            self.unadmit();
            self.release(slot);
        }
        expired
    }

    /// Closes the clients waiting for a handshake place (stop).
    pub(super) fn drop_handshake_waiting(&mut self) {
        while let Some(w) = self.handshakes.next_waiting() {
            self.conns[w.slot as usize].set_unseen(true);
            self.unadmit();
            self.release(w.slot as usize);
        }
        self.stats.handshakes_waiting = 0;
    }

    /// Gives an accepted connection its transport. False: it could not be
    /// made (the slot is released unseen).
    pub(super) fn attach_server_transport(&mut self, slot: usize) -> bool {
        self.attach_server_transport_at(slot, self.clock.now())
    }

    /// [`Self::attach_server_transport`] for a client accepted at
    /// `accepted` (its handshake deadline runs from then).
    fn attach_server_transport_at(&mut self, slot: usize, accepted: Instant) -> bool {
        match transport::accepted(&self.shared.config, accepted) {
            Ok(t) => {
                self.conns[slot].transport = t;
                true
            }
            Err(e) => {
                tracing::warn!(slot, error = %e, "transport could not be created; closing");
                self.stats.tls_failures += 1;
                self.unadmit();
                self.conns[slot].set_unseen(true);
                self.release(slot);
                false
            }
        }
    }

    /// Gives an outbound socket its transport before it connects.
    pub(super) fn attach_client_transport(
        &mut self,
        slot: usize,
        setup: &ClientSetup,
    ) -> std::io::Result<()> {
        self.conns[slot].transport = setup.transport(self.clock.now())?;
        Ok(())
    }

    /// Moves what the transport of `slot` has to send into its queue.
    pub(super) fn transport_flush(&mut self, slot: usize) {
        let s = &mut self.conns[slot];
        let n = s.transport.take_output(&mut s.queue, self.sends.pool());
        if n > 0 {
            self.stats.send_queue_bytes += n as u64;
            self.mark_dirty(slot);
        }
    }

    /// A flushing close: the transport's end of stream after what is
    /// queued.
    pub(super) fn transport_close_notify(&mut self, slot: usize) {
        let s = &mut self.conns[slot];
        let n = s.transport.close_notify(&mut s.queue, self.sends.pool());
        if n > 0 {
            self.stats.send_queue_bytes += n as u64;
            self.mark_dirty(slot);
        }
    }

    /// Whether `slot` is in its handshake (not yet shown to the handler):
    /// broadcasts skip it.
    #[inline]
    pub(super) fn handshaking(&self, slot: usize) -> bool {
        self.conns[slot].transport.handshaking() || self.upgrading(slot)
    }

    /// Closes the connections whose handshake is past its deadline, those
    /// waiting for a place included (oldest first: the deadlines of the
    /// waiting ones are in arrival order).
    pub(super) fn expire_handshakes(&mut self) {
        while let Some(&Waiting { slot, deadline, .. }) = self.handshakes.first_waiting() {
            if !self.waited_too_long(slot as usize, deadline) {
                break;
            }
            self.handshakes.next_waiting();
        }
        self.stats.handshakes_waiting = self.handshakes.waiting() as u64;
        let now = self.clock.now();
        let mut tracked = self.handshakes.take_tracked();
        tracked.retain(|&(slot, generation)| {
            let s = &self.conns[slot as usize];
            let deadline = Some(s)
                .filter(|s| s.generation == generation && s.state == SlotState::Open)
                .and_then(|s| s.transport.handshake_deadline());
            match deadline {
                Some(d) if d <= now => {
                    self.stats.tls_handshake_timeouts += 1;
                    self.transport_failed(slot as usize, "handshake not complete in time".into());
                    false
                }
                // Still in its handshake, in time.
                Some(_) => true,
                // Done, or the connection is gone.
                None => false,
            }
        });
        self.handshakes.keep_tracking(tracked);
    }

    /// Closes `slot` for a transport failure (the alert it queued is sent
    /// first); an outbound connection that never completed its handshake
    /// is reported as a failed connect.
    fn transport_failed(&mut self, slot: usize, why: String) {
        self.stats.tls_failures += 1;
        let s = &self.conns[slot];
        if s.transport.is_client_in_handshake() {
            self.connects.fail(
                s.peer(),
                std::io::Error::new(std::io::ErrorKind::ConnectionAborted, format!("TLS: {why}")),
            );
        }
        tracing::debug!(slot, peer = %s.peer(), error = %why, "TLS failure; closing");
        self.transport_flush(slot);
        self.begin_close(slot, CloseReason::Tls(why), true);
    }
}

impl<C: Codec, H: Handler> Engine<C, H> {
    /// A connection opened: a transport with a handshake starts it (a
    /// client sends its hello) and the handler waits for it. False: plain.
    pub(super) fn start_handshake(&mut self, slot: usize) -> bool {
        let s = &self.core.conns[slot];
        if !s.transport.handshaking() {
            return false;
        }
        let generation = s.generation;
        self.core.handshakes.track(slot, generation);
        self.core.enter_handshake(slot);
        self.core.transport_flush(slot);
        true
    }

    /// Received bytes of a connection whose transport is not plain:
    /// decrypted, answered (handshake, alerts), and the plaintext handed to
    /// the framer. The handler is told of the connection when its
    /// handshake completes.
    pub(super) fn deliver_through_transport(&mut self, slot: usize, generation: u32, data: &[u8]) {
        let mut plain = self.core.handshakes.take_scratch();
        self.core.conns[slot].last_input = self.core.clock.stamp();
        let read = self.core.conns[slot].transport.read(data, &mut plain);
        match read {
            Read::Failed(why) => self.core.transport_failed(slot, why),
            Read::Data {
                established,
                peer_closed,
            } => {
                self.core.transport_flush(slot);
                if established {
                    self.core.stats.tls_handshakes += 1;
                    self.core.leave_handshake(slot);
                    let conn = ConnId::new(self.core.index as u16, slot as u32, generation);
                    let peer = self.core.conns[slot].peer();
                    self.connected(conn, peer);
                }
                if !plain.is_empty() && self.core.conns[slot].state == SlotState::Open {
                    self.deliver_plain(slot, generation, &plain);
                }
                if peer_closed && self.core.conns[slot].state == SlotState::Open {
                    // The peer's end of stream.
                    let s = &mut self.core.conns[slot];
                    s.set_read_closed(true);
                    if s.recv_armed() {
                        self.core.cancel_recv(slot);
                    }
                    if self.core.inputs.backlog_is_empty(slot) {
                        self.close_at_eof(slot);
                    }
                }
            }
        }
        self.core.handshakes.put_scratch(plain);
    }
}
