//! The slot life cycle and generations.
//!
//! `Free` --accept/socket--> `Connecting` (outbound only) --connect-->
//! `Open` --close/EOF/error--> `Closing` (receive cancelled, queue flushed
//! or discarded) --no op in flight--> `Releasing` (close of the socket
//! asked) --close completion--> `Free`. The generation moves on when a
//! slot is taken, so an id or a completion of an earlier connection in the
//! same slot is recognised as stale.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::Core;
use crate::codec::Codec;
use crate::conn_id::{ConnId, next_generation};
use crate::handler::CloseReason;
use crate::send_queue::SendQueue;
use crate::stats::ConnectionInfo;
use crate::sys::Op;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SlotState {
    Free,
    /// Accepted over the connection limit, held unread until a place frees.
    Waiting,
    /// An outbound socket whose connect is in flight.
    Connecting,
    Open,
    Closing,
    Releasing,
}

pub(super) struct Slot {
    pub generation: u32,
    pub state: SlotState,
    pub recv_armed: bool,
    /// Reading stopped because the send queue reached the high-water mark.
    pub recv_paused: bool,
    pub read_closed: bool,
    pub send_in_flight: bool,
    /// Closing without flushing: queued data is dropped.
    pub discard: bool,
    pub in_dirty: bool,
    /// Position in `Core::open` while open.
    pub open_pos: usize,
    pub reason: Option<CloseReason>,
    /// While closing: when queued data stops being waited for.
    pub deadline: Option<Instant>,
    pub queue: SendQueue,
    /// Addresses of an outbound connection until it is open.
    pub connect: Option<(SocketAddr, Option<SocketAddr>)>,
    pub connect_error: Option<i32>,
    /// Never seen by the handler (refused or held at the limit): closed
    /// without a handler call.
    pub unseen: bool,
    /// Times of the last input and the last queued output, for idle
    /// timeouts and heartbeats.
    pub last_input: Instant,
    pub last_output: Instant,
    /// For `Server::connections`: the peer, when the connection opened,
    /// and its bytes each way.
    pub peer: SocketAddr,
    pub opened_at: Instant,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// When the frame being received began, and when it must be complete
    /// (`frame_timeout`, `min_receive_rate`).
    pub frame_started: Option<Instant>,
    pub frame_deadline: Option<Instant>,
    /// The TLS session of a TLS connection (a pointer's worth for
    /// plaintext ones).
    #[cfg(feature = "tls")]
    pub tls: Option<Box<crate::tls::session::TlsSession>>,
}

impl Slot {
    pub fn new(now: Instant) -> Self {
        Slot {
            generation: 0,
            state: SlotState::Free,
            recv_armed: false,
            recv_paused: false,
            read_closed: false,
            send_in_flight: false,
            discard: false,
            in_dirty: false,
            open_pos: 0,
            reason: None,
            deadline: None,
            queue: SendQueue::default(),
            connect: None,
            connect_error: None,
            unseen: false,
            last_input: now,
            last_output: now,
            frame_started: None,
            frame_deadline: None,
            peer: SocketAddr::from(([0, 0, 0, 0], 0)),
            opened_at: now,
            bytes_in: 0,
            bytes_out: 0,
            #[cfg(feature = "tls")]
            tls: None,
        }
    }
}

impl<C: Codec> Core<C> {
    /// Takes a slot the driver just filled (accept or socket) for a new
    /// connection: moves its generation on. Drivers only fill free slots
    /// and the engine never asks for more than the table holds, so anything
    /// else is a bug worth shouting about.
    pub(super) fn claim(&mut self, slot: usize, by: &str) -> bool {
        let Some(s) = self
            .slots
            .get_mut(slot)
            .filter(|s| s.state == SlotState::Free)
        else {
            tracing::error!(slot, by, "the driver returned a slot that is in use");
            return false;
        };
        s.generation = next_generation(s.generation);
        self.in_use += 1;
        true
    }

    /// Makes a slot that holds a connected socket `Open` and starts reading.
    pub(super) fn open_slot(&mut self, slot: usize) -> ConnId {
        let now = self.now;
        let s = &mut self.slots[slot];
        s.state = SlotState::Open;
        s.recv_armed = false;
        s.recv_paused = false;
        s.read_closed = false;
        s.send_in_flight = false;
        s.discard = false;
        s.in_dirty = false;
        s.reason = None;
        s.deadline = None;
        s.last_input = now;
        s.last_output = now;
        s.frame_started = None;
        s.frame_deadline = None;
        s.opened_at = now;
        s.bytes_in = 0;
        s.bytes_out = 0;
        s.open_pos = self.open.len();
        let generation = s.generation;
        self.open.push(slot as u32);
        self.me().live.set_live(slot as u32, generation);
        self.arm_recv(slot);
        if self.stopping {
            self.begin_close(slot, CloseReason::ServerStopping, false);
        }
        ConnId::new(self.index as u16, slot as u32, generation)
    }

    pub(super) fn arm_recv(&mut self, slot: usize) {
        let s = &mut self.slots[slot];
        s.recv_armed = true;
        let generation = s.generation;
        self.ops.push(Op::Recv {
            slot: slot as u32,
            generation,
        });
    }

    pub(super) fn cancel_recv(&mut self, slot: usize) {
        let generation = self.slots[slot].generation;
        self.ops.push(Op::CancelRecv {
            slot: slot as u32,
            generation,
        });
    }

    /// Starts closing `slot`: from now on its id is stale. With `flush`,
    /// queued data is still sent (within `close_timeout`); without, it is
    /// dropped.
    pub(super) fn begin_close(&mut self, slot: usize, reason: CloseReason, flush: bool) {
        let deadline = self.now + self.shared.config.close_timeout;
        let s = &mut self.slots[slot];
        if s.state != SlotState::Open {
            return;
        }
        #[cfg(feature = "tls")]
        if flush {
            self.tls_close_notify(slot);
        }
        let s = &mut self.slots[slot];
        s.state = SlotState::Closing;
        s.reason = Some(reason);
        s.discard = !flush;
        s.deadline = Some(deadline);
        let (recv_armed, send_in_flight, generation) =
            (s.recv_armed, s.send_in_flight, s.generation);
        let pos = s.open_pos;
        self.me().live.set_dead(slot as u32);
        self.open.swap_remove(pos);
        if let Some(&moved) = self.open.get(pos) {
            self.slots[moved as usize].open_pos = pos;
        }
        self.closing.push(slot as u32);
        if recv_armed {
            self.cancel_recv(slot);
        }
        if !flush && send_in_flight {
            self.ops.push(Op::CancelSend {
                slot: slot as u32,
                generation,
            });
        }
        self.try_release(slot);
    }

    /// Asks for the close of the socket once nothing is in flight on it and
    /// nothing (or nothing to keep) is queued.
    pub(super) fn try_release(&mut self, slot: usize) {
        let s = &mut self.slots[slot];
        if s.state != SlotState::Closing
            || s.recv_armed
            || s.send_in_flight
            || !(s.queue.is_empty() || s.discard)
        {
            return;
        }
        let dropped = s.queue.len() as u64;
        s.queue.clear(&mut self.pool);
        self.stats.send_queue_bytes = self.stats.send_queue_bytes.saturating_sub(dropped);
        self.release(slot);
    }

    /// Asks the driver to close the socket in `slot` (nothing in flight).
    pub(super) fn release(&mut self, slot: usize) {
        let s = &mut self.slots[slot];
        s.state = SlotState::Releasing;
        let generation = s.generation;
        self.ops.push(Op::Close {
            slot: slot as u32,
            generation,
        });
    }

    /// The socket of `slot` is closed: the slot is free. Returns the id and
    /// reason to report to the handler, if the slot held a connection it
    /// knows about.
    pub(super) fn on_closed(
        &mut self,
        slot: usize,
        generation: u32,
    ) -> Option<(ConnId, CloseReason)> {
        let s = self.slots.get_mut(slot)?;
        if s.state != SlotState::Releasing || s.generation != generation {
            return None;
        }
        s.state = SlotState::Free;
        self.in_use -= 1;
        #[cfg(feature = "tls")]
        {
            s.tls = None;
        }
        if std::mem::take(&mut s.unseen) {
            return None;
        }
        let max = self.shared.config.max_connections;
        if self.shared.admitted.fetch_sub(1, Ordering::AcqRel) == max {
            // Below the limit again: every shard may accept (the waiting
            // client can be in any shard's backlog).
            for shard in self.shared.shards.iter() {
                shard.wake();
            }
        }
        if let Some((remote, _)) = s.connect.take() {
            // A connect that failed: the socket is closed, the handler is
            // told with the error, no connection ever existed.
            let errno = s.connect_error.take().unwrap_or(libc::ECONNREFUSED);
            self.failed_connects
                .push((remote, std::io::Error::from_raw_os_error(errno)));
            return None;
        }
        let reason = s.reason.take().unwrap_or(CloseReason::Local);
        let conn = ConnId::new(self.index as u16, slot as u32, s.generation);
        self.stats.closed += 1;
        Some((conn, reason))
    }

    /// What `Server::connections` shows of this shard's open connections.
    pub(super) fn connection_infos(&self, out: &mut Vec<ConnectionInfo>) {
        for &slot in &self.open {
            let s = &self.slots[slot as usize];
            out.push(ConnectionInfo {
                conn: ConnId::new(self.index as u16, slot, s.generation),
                peer: s.peer,
                age: self.now.saturating_duration_since(s.opened_at),
                bytes_in: s.bytes_in,
                bytes_out: s.bytes_out,
                queued: s.queue.len(),
            });
        }
    }

    /// The slot of `conn` if it is open on this shard now.
    pub(super) fn live_slot(&self, conn: ConnId) -> Option<usize> {
        if conn.shard() != self.index {
            return None;
        }
        let slot = conn.slot() as usize;
        self.slots
            .get(slot)
            .filter(|s| s.state == SlotState::Open && s.generation == conn.generation())
            .map(|_| slot)
    }
}
