//! Connections whose transport is not plain (`crate::transport`): a
//! handshake before the handler sees them, their own output (handshake
//! flights, alerts), decryption before the framer, a close that ends with
//! the transport's end of stream, and a deadline for the handshake. The
//! engine calls the transport the same way whatever it is; for a plain
//! connection every call here returns at once.

use std::collections::VecDeque;

use super::conn::SlotState;
use super::{Core, Engine};
use crate::codec::Codec;
use crate::conn_id::ConnId;
use crate::error::CloseReason;
use crate::handler::Handler;
use crate::transport::{self, ClientSetup, Read};

/// A plaintext scratch buffer keeps at most this much capacity between
/// receives.
const RETAIN_SCRATCH: usize = 256 * 1024;

/// A shard's bookkeeping of transports in their handshake.
#[derive(Default)]
pub(crate) struct Handshakes {
    /// Plaintext of the receive being handled.
    scratch: Vec<u8>,
    /// Connections in their handshake: (slot, generation), checked at the
    /// tick against their transport's deadline.
    pending: VecDeque<(u32, u32)>,
}

impl<C: Codec> Core<C> {
    /// Gives an accepted connection its transport. False: it could not be
    /// made (the slot is released unseen).
    pub(super) fn attach_server_transport(&mut self, slot: usize) -> bool {
        match transport::accepted(&self.shared.config, self.now) {
            Ok(t) => {
                self.slots[slot].transport = t;
                true
            }
            Err(e) => {
                tracing::warn!(slot, error = %e, "transport could not be created; closing");
                self.stats.tls_failures += 1;
                self.shared
                    .admitted
                    .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
                self.slots[slot].set_unseen(true);
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
        self.slots[slot].transport = setup.transport(self.now)?;
        Ok(())
    }

    /// Moves what the transport of `slot` has to send into its queue.
    pub(super) fn transport_flush(&mut self, slot: usize) {
        let s = &mut self.slots[slot];
        let n = s.transport.take_output(&mut s.queue, &mut self.pool);
        if n > 0 {
            self.stats.send_queue_bytes += n as u64;
            self.mark_dirty(slot);
        }
    }

    /// A flushing close: the transport's end of stream after what is
    /// queued.
    pub(super) fn transport_close_notify(&mut self, slot: usize) {
        let s = &mut self.slots[slot];
        let n = s.transport.close_notify(&mut s.queue, &mut self.pool);
        if n > 0 {
            self.stats.send_queue_bytes += n as u64;
            self.mark_dirty(slot);
        }
    }

    /// Whether `slot` is in its handshake (not yet shown to the handler):
    /// broadcasts skip it.
    #[inline]
    pub(super) fn handshaking(&self, slot: usize) -> bool {
        self.slots[slot].transport.handshaking() || self.upgrading(slot)
    }

    /// Closes the connections whose handshake is past its deadline.
    pub(super) fn expire_handshakes(&mut self) {
        let now = self.now;
        let mut i = 0;
        while i < self.handshakes.pending.len() {
            let (slot, generation) = self.handshakes.pending[i];
            let s = &self.slots[slot as usize];
            let deadline = Some(s)
                .filter(|s| s.generation == generation && s.state == SlotState::Open)
                .and_then(|s| s.transport.handshake_deadline());
            match deadline {
                Some(d) if d <= now => {
                    self.stats.tls_handshake_timeouts += 1;
                    self.transport_failed(slot as usize, "handshake not complete in time".into());
                }
                Some(_) => {
                    i += 1;
                    continue;
                }
                None => {}
            }
            self.handshakes.pending.swap_remove_back(i);
        }
    }

    /// Closes `slot` for a transport failure (the alert it queued is sent
    /// first); an outbound connection that never completed its handshake
    /// is reported as a failed connect.
    fn transport_failed(&mut self, slot: usize, why: String) {
        self.stats.tls_failures += 1;
        let s = &self.slots[slot];
        if s.transport.is_client_in_handshake() {
            self.failed_connects.push((
                s.peer(),
                std::io::Error::new(std::io::ErrorKind::ConnectionAborted, format!("TLS: {why}")),
            ));
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
        let s = &self.core.slots[slot];
        if !s.transport.handshaking() {
            return false;
        }
        let generation = s.generation;
        self.core
            .handshakes
            .pending
            .push_back((slot as u32, generation));
        self.core.transport_flush(slot);
        true
    }

    /// Received bytes of a connection whose transport is not plain:
    /// decrypted, answered (handshake, alerts), and the plaintext handed to
    /// the framer. The handler is told of the connection when its
    /// handshake completes.
    pub(super) fn deliver_through_transport(&mut self, slot: usize, generation: u32, data: &[u8]) {
        let mut plain = std::mem::take(&mut self.core.handshakes.scratch);
        plain.clear();
        self.core.slots[slot].last_input = self.core.now_ms as u32;
        let read = self.core.slots[slot].transport.read(data, &mut plain);
        match read {
            Read::Failed(why) => self.core.transport_failed(slot, why),
            Read::Data {
                established,
                peer_closed,
            } => {
                self.core.transport_flush(slot);
                if established {
                    self.core.stats.tls_handshakes += 1;
                    let conn = ConnId::new(self.core.index as u16, slot as u32, generation);
                    let peer = self.core.slots[slot].peer();
                    self.connected(conn, peer);
                }
                if !plain.is_empty() && self.core.slots[slot].state == SlotState::Open {
                    self.deliver_plain(slot, generation, &plain);
                }
                if peer_closed && self.core.slots[slot].state == SlotState::Open {
                    // The peer's end of stream.
                    let s = &mut self.core.slots[slot];
                    s.set_read_closed(true);
                    if s.recv_armed() {
                        self.core.cancel_recv(slot);
                    }
                    if self.core.backlog_is_empty(slot) {
                        self.close_at_eof(slot);
                    }
                }
            }
        }
        if plain.capacity() > RETAIN_SCRATCH {
            plain = Vec::new();
        }
        self.core.handshakes.scratch = plain;
    }
}
