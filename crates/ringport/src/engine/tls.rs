//! TLS between the socket and the framer (feature `tls`; the state machine
//! is `crate::tls::session`). The hooks elsewhere in the engine are small:
//! a new TLS connection starts here instead of at the handler
//! (`Engine::opened`), received bytes of a TLS connection are decrypted
//! here before the framer (`Engine::deliver`), frames are encrypted into
//! the send queue (`Core::enqueue_*`), a flushing close ends with
//! `close_notify` (`Core::begin_close`), and the tick closes handshakes
//! past their deadline.

use std::collections::VecDeque;

use super::conn::SlotState;
use super::{Core, Engine};
use crate::codec::Codec;
use crate::conn_id::ConnId;
use crate::error::CloseReason;
use crate::handler::Handler;
use crate::tls::TlsConnector;
use crate::tls::session::TlsSession;

/// A plaintext scratch buffer keeps at most this much capacity between
/// receives.
const RETAIN_SCRATCH: usize = 256 * 1024;

/// A shard's TLS bookkeeping.
#[derive(Default)]
pub(crate) struct ShardTls {
    /// Plaintext of the receive being handled.
    scratch: Vec<u8>,
    /// Connections in their handshake: (slot, generation), checked at the
    /// tick against their session's deadline.
    handshakes: VecDeque<(u32, u32)>,
}

impl<C: Codec> Core<C> {
    /// Gives an accepted connection its server session, if the server
    /// speaks TLS. False: the session could not be made (the slot is
    /// released unseen).
    pub(super) fn attach_server_tls(&mut self, slot: usize) -> bool {
        let Some(acceptor) = &self.shared.config.tls else {
            return true;
        };
        let deadline = self.now + acceptor.handshake_timeout();
        match TlsSession::server(acceptor.current(), deadline) {
            Ok(session) => {
                self.slots[slot].tls = Some(Box::new(session));
                true
            }
            Err(e) => {
                tracing::warn!(slot, error = %e, "TLS session could not be created; closing");
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

    /// Gives an outbound socket its client session before it connects.
    pub(super) fn attach_client_tls(
        &mut self,
        slot: usize,
        connector: &TlsConnector,
    ) -> std::io::Result<()> {
        let deadline = self.now + connector.handshake_timeout;
        self.slots[slot].tls = Some(Box::new(TlsSession::client(connector, deadline)?));
        Ok(())
    }

    /// Moves what the session of `slot` has to send into its queue.
    pub(super) fn tls_flush(&mut self, slot: usize) {
        let s = &mut self.slots[slot];
        let Some(session) = s.tls.as_mut() else {
            return;
        };
        let n = session.drain_into(&mut s.queue, &mut self.pool);
        if n > 0 {
            self.stats.send_queue_bytes += n as u64;
            self.mark_dirty(slot);
        }
    }

    /// Encrypts one frame into the queue of `slot` (which has a session).
    pub(super) fn enqueue_tls(&mut self, slot: usize, header: &[u8], payload: &[u8]) {
        let trailer = self.codec.trailer();
        let s = &mut self.slots[slot];
        let before = s.queue.len();
        if let Some(session) = s.tls.as_mut() {
            session.encrypt(&[header, payload, trailer], &mut s.queue, &mut self.pool);
        }
        self.queued(slot, before);
    }

    /// A flushing close of a TLS connection: `close_notify` after what is
    /// queued.
    pub(super) fn tls_close_notify(&mut self, slot: usize) {
        let s = &mut self.slots[slot];
        let Some(session) = s.tls.as_mut().filter(|t| t.established) else {
            return;
        };
        let before = s.queue.len();
        session.close_notify(&mut s.queue, &mut self.pool);
        self.stats.send_queue_bytes += (s.queue.len() - before) as u64;
        self.mark_dirty(slot);
    }

    /// Whether `slot` is in its TLS handshake (not yet shown to the
    /// handler): broadcasts skip it.
    pub(super) fn tls_handshaking(&self, slot: usize) -> bool {
        self.slots[slot]
            .tls
            .as_ref()
            .is_some_and(|t| !t.established)
    }

    /// Closes the connections whose handshake is past its deadline.
    pub(super) fn expire_handshakes(&mut self) {
        let now = self.now;
        let mut i = 0;
        while i < self.tls.handshakes.len() {
            let (slot, generation) = self.tls.handshakes[i];
            let s = &self.slots[slot as usize];
            let session = s
                .tls
                .as_ref()
                .filter(|_| s.generation == generation && s.state == SlotState::Open);
            match session {
                Some(t) if t.established => {}
                Some(t) if t.deadline <= now => {
                    self.stats.tls_handshake_timeouts += 1;
                    self.tls_failed(slot as usize, "handshake not complete in time".into());
                }
                Some(_) => {
                    i += 1;
                    continue;
                }
                None => {}
            }
            self.tls.handshakes.swap_remove_back(i);
        }
    }

    /// Closes `slot` for a TLS failure (the alert rustls queued is sent
    /// first); an outbound connection that never completed its handshake
    /// is reported as a failed connect.
    fn tls_failed(&mut self, slot: usize, why: String) {
        self.stats.tls_failures += 1;
        let s = &self.slots[slot];
        if let Some(t) = s.tls.as_ref().filter(|t| t.is_client() && !t.established) {
            let _ = t;
            self.failed_connects.push((
                s.peer(),
                std::io::Error::new(std::io::ErrorKind::ConnectionAborted, format!("TLS: {why}")),
            ));
        }
        tracing::debug!(slot, peer = %s.peer(), error = %why, "TLS failure; closing");
        self.tls_flush(slot);
        self.begin_close(slot, CloseReason::Tls(why), true);
    }
}

impl<C: Codec, H: Handler> Engine<C, H> {
    /// A connection with a session opened: its handshake starts (a client
    /// sends its hello) and the handler waits for it. False: plaintext.
    pub(super) fn start_tls(&mut self, slot: usize) -> bool {
        let s = &self.core.slots[slot];
        if s.tls.is_none() {
            return false;
        }
        let generation = s.generation;
        self.core
            .tls
            .handshakes
            .push_back((slot as u32, generation));
        self.core.tls_flush(slot);
        true
    }

    /// Received bytes of a TLS connection: decrypted, answered (handshake,
    /// alerts), and the plaintext handed to the framer. The handler is told
    /// of the connection when its handshake completes.
    pub(super) fn deliver_tls(&mut self, slot: usize, generation: u32, data: &[u8]) {
        let mut plain = std::mem::take(&mut self.core.tls.scratch);
        plain.clear();
        self.core.slots[slot].last_input = self.core.now_ms as u32;
        let Some(session) = self.core.slots[slot].tls.as_mut() else {
            return;
        };
        let result = session.decrypt(data, &mut plain);
        let now_established = !session.established && !session.is_handshaking();
        match result {
            Err(why) => self.core.tls_failed(slot, why),
            Ok(decrypted) => {
                self.core.tls_flush(slot);
                if now_established {
                    if let Some(t) = self.core.slots[slot].tls.as_mut() {
                        t.established = true;
                    }
                    self.core.stats.tls_handshakes += 1;
                    let conn = ConnId::new(self.core.index as u16, slot as u32, generation);
                    let peer = self.core.slots[slot].peer();
                    self.connected(conn, peer);
                }
                if !plain.is_empty() && self.core.slots[slot].state == SlotState::Open {
                    self.deliver_plain(slot, generation, &plain);
                }
                if decrypted.peer_closed && self.core.slots[slot].state == SlotState::Open {
                    // The peer's close_notify is its end of stream.
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
        self.core.tls.scratch = plain;
    }
}
