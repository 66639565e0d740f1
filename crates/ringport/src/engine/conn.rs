//! The slot life cycle and generations.
//!
//! `Free` --accept/socket--> `Connecting` (outbound only) --connect-->
//! `Open` --close/EOF/error--> `Closing` (receive cancelled, queue flushed
//! or discarded) --no op in flight--> `Releasing` (close of the socket
//! asked) --close completion--> `Free`. The generation moves on when a
//! slot is taken, so an id or a completion of an earlier connection in the
//! same slot is recognised as stale.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering;

use super::Core;
use crate::codec::Codec;
use crate::conn_id::ConnId;
use crate::error::{CloseReason, SendError};
use crate::send_queue::SendQueue;
use crate::stats::ConnectionInfo;
use crate::sys::Op;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub(super) enum SlotState {
    #[default]
    Free,
    /// Accepted over the connection limit, held unread until a place frees.
    Waiting,
    /// An outbound socket whose connect is in flight.
    Connecting,
    Open,
    Closing,
    Releasing,
}

/// One connection slot: what every connection needs, kept small because a
/// shard has one per table entry (pages of them, allocated as used). What
/// only some connections need lives elsewhere: the close reason and flush
/// deadline of a closing one in `Core::closes`, the addresses of a
/// connecting one in `Core::connects`, the framer and backlog of one with
/// a partial frame or paused input in `Core::inputs`, the queue's segments
/// only while it holds data.
#[derive(Default)]
pub(super) struct Slot {
    pub generation: u32,
    /// Position in the table's open list while open (`table.rs`).
    pub open_pos: u32,
    /// Times of the last input and the last queued output, for idle
    /// timeouts and heartbeats: milliseconds since the engine's epoch,
    /// wrapping (see [`super::clock::Clock::elapsed_ms`]).
    pub last_input: u32,
    pub last_output: u32,
    /// For `Server::connections`: the peer's address and port (the
    /// `PEER_V6` flag says which family), when the connection opened
    /// (milliseconds since the epoch) and its bytes each way.
    peer_ip: [u8; 16],
    peer_port: u16,
    pub state: SlotState,
    flags: u16,
    pub queue: SendQueue,
    pub opened_at: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The connection's transport (a null pointer's worth for plaintext
    /// ones; nothing without the `tls` feature).
    pub transport: crate::transport::Transport,
}

/// Defines a getter and a setter per flag bit of [`Slot`].
macro_rules! slot_flags {
    ($($(#[$doc:meta])* $bit:ident = $value:expr, $get:ident, $set:ident;)*) => {
        $($(#[$doc])* const $bit: u16 = $value;)*
        impl Slot {
            $(
                $(#[$doc])*
                #[inline]
                pub fn $get(&self) -> bool {
                    self.flags & $bit != 0
                }
                #[inline]
                pub fn $set(&mut self, on: bool) {
                    if on {
                        self.flags |= $bit;
                    } else {
                        self.flags &= !$bit;
                    }
                }
            )*
        }
    };
}

slot_flags! {
    /// A receive is posted.
    RECV_ARMED = 1, recv_armed, set_recv_armed;
    /// Reading stopped because the send queue reached the high-water mark.
    RECV_PAUSED = 2, recv_paused, set_recv_paused;
    READ_CLOSED = 4, read_closed, set_read_closed;
    SEND_IN_FLIGHT = 8, send_in_flight, set_send_in_flight;
    /// Closing without flushing: queued data is dropped.
    DISCARD = 16, discard, set_discard;
    IN_DIRTY = 32, in_dirty, set_in_dirty;
    /// Never seen by the handler (refused or held at the limit): closed
    /// without a handler call.
    UNSEEN = 64, unseen, set_unseen;
    /// The peer address is IPv6 (else IPv4 in the first 4 bytes).
    PEER_V6 = 128, peer_v6, set_peer_v6;
    /// Reading paused because the shard's outbox was over half full: only
    /// its draining resumes it (`Engine::resume_after_outbox`).
    HELD_BY_OUTBOX = 256, held_by_outbox, set_held_by_outbox;
    /// Reading paused by the application (`Context::pause_reading`): only
    /// `Context::resume_reading` resumes it.
    HELD_BY_APP = 512, held_by_app, set_held_by_app;
    /// The connection has a protocol of its own (`Core::protocols`), not
    /// the framed codec.
    HAS_PROTOCOL = 2048, has_protocol, set_has_protocol;
    /// Counted in the per-source table (`max_connections_per_ip`): released
    /// when the slot is freed. Kept from accept through `open_slot`.
    PER_SOURCE = 1024, per_source, set_per_source;
    /// Reading paused by the message rate limit (`engine::rate`).
    HELD_BY_RATE = 4096, held_by_rate, set_held_by_rate;
    /// Holds one of the shard's handshake places (`engine::handshake`).
    IN_HANDSHAKE = 8192, in_handshake, set_in_handshake;
}

impl Slot {
    /// Clears every flag but the per-source count taken at accept (a slot
    /// that opens starts afresh).
    pub fn clear_flags_but_per_source(&mut self) {
        self.flags &= PER_SOURCE;
    }

    /// The connection's peer address (the IPv6 flow label and scope id
    /// are not kept).
    pub fn peer(&self) -> SocketAddr {
        if self.peer_v6() {
            SocketAddr::from((Ipv6Addr::from(self.peer_ip), self.peer_port))
        } else {
            let [a, b, c, d, ..] = self.peer_ip;
            SocketAddr::from((Ipv4Addr::new(a, b, c, d), self.peer_port))
        }
    }

    pub fn set_peer(&mut self, peer: SocketAddr) {
        self.peer_port = peer.port();
        match peer.ip() {
            IpAddr::V4(ip) => {
                self.peer_ip = [0; 16];
                self.peer_ip[..4].copy_from_slice(&ip.octets());
                self.set_peer_v6(false);
            }
            IpAddr::V6(ip) => {
                self.peer_ip = ip.octets();
                self.set_peer_v6(true);
            }
        }
    }
}

impl<C: Codec> Core<C> {
    /// Takes a slot the driver just filled (accept or socket) for a new
    /// connection. Drivers only fill free slots and the engine never asks
    /// for more than the table holds, so anything else is a bug worth
    /// shouting about.
    pub(super) fn claim(&mut self, slot: usize, by: &str) -> bool {
        let claimed = self.conns.claim(slot);
        if !claimed {
            tracing::error!(slot, by, "the driver returned a slot that is in use");
        }
        claimed
    }

    /// Makes a slot that holds a connected socket `Open` and starts reading.
    pub(super) fn open_slot(&mut self, slot: usize, peer: SocketAddr) -> ConnId {
        let conn = self.conns.open(slot, peer, self.clock.now_ms());
        let has_protocol = self.protocols.has(slot);
        self.conns[slot].set_has_protocol(has_protocol);
        self.me().live.set_live(slot as u32, conn.generation());
        self.arm_recv(slot);
        if self.stopping {
            self.begin_close(slot, CloseReason::ServerStopping, false);
        }
        conn
    }

    pub(super) fn arm_recv(&mut self, slot: usize) {
        let s = &mut self.conns[slot];
        s.set_recv_armed(true);
        let generation = s.generation;
        self.ops.push(Op::Recv {
            slot: slot as u32,
            generation,
        });
    }

    /// Ends the receive in flight on `slot` (multishot or direct).
    pub(super) fn cancel_recv(&mut self, slot: usize) {
        let generation = self.conns[slot].generation;
        let slot = slot as u32;
        self.ops.push(if self.direct_in_flight(slot as usize) {
            Op::CancelRecvInto { slot, generation }
        } else {
            Op::CancelRecv { slot, generation }
        });
    }

    /// Starts closing `slot`: from now on its id is stale. With `flush`,
    /// queued data is still sent (within `close_timeout`); without, it is
    /// dropped.
    pub(super) fn begin_close(&mut self, slot: usize, reason: CloseReason, flush: bool) {
        let deadline = self.clock.now() + self.shared.config.close_timeout;
        if self.conns[slot].state != SlotState::Open {
            return;
        }
        if flush {
            if self.conns[slot].has_protocol() {
                self.protocol_goodbye(slot, &reason);
            }
            self.transport_close_notify(slot);
        }
        self.conns.close(slot);
        let s = &mut self.conns[slot];
        s.set_discard(!flush);
        let (recv_armed, send_in_flight, generation) =
            (s.recv_armed(), s.send_in_flight(), s.generation);
        self.closes.begin(slot as u32, reason, deadline);
        self.me().live.set_dead(slot as u32);
        self.topics.remove_slot(slot as u32);
        self.report_interest();
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
        let s = &mut self.conns[slot];
        if s.state != SlotState::Closing
            || s.recv_armed()
            || s.send_in_flight()
            || !(s.queue.is_empty() || s.discard())
        {
            return;
        }
        self.sends.drop_queue(s, &mut self.stats);
        self.release(slot);
    }

    /// Asks the driver to close the socket in `slot` (nothing in flight).
    pub(super) fn release(&mut self, slot: usize) {
        let s = &mut self.conns[slot];
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
        let freed = self.conns.free(slot, generation)?;
        self.slot_freed(slot);
        let reason = self.closes.finish(slot as u32);
        let failed_connect = self.connects.slot_freed(slot as u32);
        self.detach_protocol(slot);
        if freed.unseen {
            return None;
        }
        let max = self.shared.config.max_connections;
        if self.shared.admitted.fetch_sub(1, Ordering::AcqRel) == max {
            // Below the limit again: every shard may accept (the waiting
            // client can be in any shard's backlog).
            self.outbox.wake_all();
        }
        if let Some((remote, error)) = failed_connect {
            // A connect that failed: the socket is closed, the handler is
            // told with the error, no connection ever existed.
            self.connects.fail(remote, error);
            return None;
        }
        let reason = reason.unwrap_or(CloseReason::Local);
        let conn = ConnId::new(self.index as u16, slot as u32, freed.generation);
        self.stats.closed += 1;
        Some((conn, reason))
    }

    /// What `Server::connections` shows of this shard's open connections.
    pub(super) fn connection_infos(&self, out: &mut Vec<ConnectionInfo>) {
        for &slot in self.conns.open_slots() {
            let s = &self.conns[slot as usize];
            out.push(ConnectionInfo {
                conn: self.conns.id(slot as usize),
                peer: s.peer(),
                age: self.clock.since_ms(s.opened_at),
                bytes_in: s.bytes_in,
                bytes_out: s.bytes_out,
                queued: s.queue.len(),
            });
        }
    }

    /// The slot of `conn` if it is open on this shard now.
    pub(super) fn live_slot(&self, conn: ConnId) -> Option<usize> {
        self.conns.live(conn)
    }

    /// [`Self::live_slot`], and its send queue below the queue limit (one
    /// lookup of the slot for both; every send asks).
    pub(super) fn live_slot_below_limit(&self, conn: ConnId) -> Result<usize, SendError> {
        self.conns.live_below(conn, self.sends.queue_limit())
    }
}
