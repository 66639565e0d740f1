//! Admission: accepts kept posted (the AcceptEx pre-posting), outbound
//! connects, the global connection limit, and what is decided about an
//! accepted client before it is read: the accept filter, the per-source
//! limit (`crate::admission_table`, shared by all shards) and the shard's
//! handshake places (`super::handshake`).
//!
//! In order, for each accepted socket: the filter (refused: closed unread,
//! `refused_by_filter`); the per-source count (at its limit: closed
//! unread, `rejected_per_ip`, so such a client never waits at the global
//! limit nor takes a waiting place); the global limit (wait or refuse);
//! then, for a transport with a handshake, a handshake place (or a wait,
//! unread, for one).

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use super::accepts::AtLimit;
use super::conn::SlotState;
use super::connects::PendingConnect;
use super::screening::Refusal;
use super::{Core, Engine};
use crate::admission_table::Ticket;
use crate::codec::Codec;
use crate::config::LimitPolicy;
use crate::conn_id::ConnId;
use crate::handler::Handler;
use crate::sys::Op;

impl<C: Codec, H: Handler> Engine<C, H> {
    /// Gives the accept filter the listeners' local addresses (by
    /// listener index, as in `Completion::Accepted`).
    pub fn with_listener_addrs(mut self, addrs: Vec<SocketAddr>) -> Self {
        self.core.screening.set_listeners(addrs);
        self
    }

    /// Admits the clients held at the limit, oldest first, while there are
    /// places; then those waiting for a handshake place.
    pub(super) fn admit_waiting(&mut self) {
        while let Some((slot, peer)) = self.core.accepts.first_waiting() {
            if !self.core.try_admit() {
                break;
            }
            self.core.accepts.take_first();
            if let Some((conn, peer)) = self.core.start_accepted(slot as usize, peer) {
                self.opened(conn, peer);
            }
        }
        while let Some((slot, peer)) = self.core.next_for_handshake() {
            let conn = self.core.open_slot(slot, peer);
            self.opened(conn, peer);
        }
    }
}

impl<C: Codec> Core<C> {
    /// Slots in use plus those promised to posted accepts and pending
    /// sockets: never more than the table.
    fn committed(&self) -> usize {
        self.conns.in_use() + self.accepts.posted() + self.connects.pending()
    }

    /// Keeps `accepts_in_flight` accepts posted while below the limit and
    /// the table has room; withdraws them at the limit.
    pub(super) fn post_accepts(&mut self) {
        // Clients held at the limit are first in line: no new ones until
        // they are admitted (this bounds them to `accepts_in_flight`).
        if !self.accepts.may_post(self.stopping) {
            return;
        }
        // At the global limit, accepts are withdrawn: new clients wait in the
        // listen backlog. (Reserving the limit per posted accept cannot
        // work with SO_REUSEPORT: the kernel may queue a client at a shard
        // that holds no reservation while another shard's sit unused.)
        let max = self.shared.config.max_connections;
        if self.shared.admitted.load(Ordering::Acquire) >= max {
            let AtLimit { withdraw, log } = self.accepts.at_limit();
            if withdraw {
                self.ops.push(Op::WithdrawAccepts);
            }
            if log {
                tracing::warn!(
                    shard = self.index,
                    max_connections = max,
                    "connection limit reached; accepting paused until connections close"
                );
            }
            return;
        }
        let room = self.conns.len().saturating_sub(self.committed());
        for _ in 0..self.accepts.post(room) {
            self.ops.push(Op::Accept);
        }
    }

    pub(super) fn on_accept(
        &mut self,
        listener: u8,
        result: Result<(u32, SocketAddr), i32>,
    ) -> Option<(ConnId, SocketAddr)> {
        self.accepts.completed();
        let (slot, peer) = match result {
            Ok(accepted) => accepted,
            Err(libc::ECANCELED | libc::ECONNABORTED | libc::EINTR) => return None,
            Err(errno) => {
                self.stats.accept_errors += 1;
                if self.accepts.failed(self.clock.now()) {
                    tracing::warn!(
                        shard = self.index,
                        error = %io::Error::from_raw_os_error(errno),
                        "accept failed; backing off"
                    );
                }
                return None;
            }
        };
        let slot = slot as usize;
        if !self.claim(slot, "accept") {
            return None;
        }
        if !self.screen(slot, listener, peer) {
            return None;
        }
        self.attach_protocol(slot, listener, peer);
        if !self.try_admit() {
            // Accepted in the moment the limit was reached, before the
            // accepts were withdrawn: held or refused, never seen by the
            // handler meanwhile.
            match self.shared.config.at_limit {
                LimitPolicy::Wait => {
                    self.conns[slot].state = SlotState::Waiting;
                    self.accepts.hold(slot as u32, peer);
                }
                LimitPolicy::Refuse => {
                    self.stats.rejected += 1;
                    self.conns[slot].set_unseen(true);
                    self.release(slot);
                }
            }
            return None;
        }
        self.start_accepted(slot, peer)
    }

    /// An admitted client: its transport, then open, or (a handshake and
    /// no handshake place) held unread until a place frees.
    fn start_accepted(&mut self, slot: usize, peer: SocketAddr) -> Option<(ConnId, SocketAddr)> {
        if !self.attach_server_transport(slot) {
            return None;
        }
        self.stats.accepted += 1;
        // A TLS handshake or a protocol's opening (a WebSocket upgrade)
        // takes a handshake place.
        let opening = self.conns[slot].transport.handshaking() || self.protocols.has(slot);
        if opening && !self.handshake_place_free() {
            self.wait_for_handshake(slot, peer);
            return None;
        }
        Some((self.open_slot(slot, peer), peer))
    }

    /// The accept filter and the per-source limit, before the client is
    /// read or counted anywhere else. False: refused (the socket is
    /// closed unseen).
    fn screen(&mut self, slot: usize, listener: u8, peer: SocketAddr) -> bool {
        self.conns[slot].set_peer(peer);
        self.conns[slot].set_per_source(false);
        if let Some(filter) = &self.shared.config.accept_filter {
            let local = (self.screening.listener(listener)).unwrap_or(self.shared.config.addr);
            if filter.admits(peer, local) {
                return self.count_source(slot, peer);
            }
            self.stats.refused_by_filter += 1;
            self.refuse(slot, peer, Refusal::Filter);
            return false;
        }
        self.count_source(slot, peer)
    }

    /// The per-source count of an accepted client; false: refused.
    fn count_source(&mut self, slot: usize, peer: SocketAddr) -> bool {
        if let Some(table) = &self.shared.sources {
            match table.acquire(peer.ip()) {
                Ticket::Counted => self.conns[slot].set_per_source(true),
                Ticket::Untracked => self.stats.per_ip_untracked += 1,
                Ticket::Refused => {
                    self.stats.rejected_per_ip += 1;
                    self.refuse(slot, peer, Refusal::PerSource);
                    return false;
                }
            }
        }
        true
    }

    /// Closes a refused client unread, and logs refusals at most once per
    /// [`super::screening::REFUSAL_LOG_PERIOD`] with how many there were.
    fn refuse(&mut self, slot: usize, peer: SocketAddr, why: Refusal) {
        self.conns[slot].set_unseen(true);
        self.release(slot);
        let Some((per_source, filter)) = self.screening.refused(why, self.clock.now()) else {
            return;
        };
        let limit = self.shared.sources.as_ref().map(|t| t.limit());
        tracing::warn!(
            shard = self.index,
            %peer,
            rejected_per_ip = per_source,
            refused_by_filter = filter,
            max_connections_per_ip = ?limit,
            "clients refused at accept (per-source limit or accept filter); \
             logged at most once a second"
        );
    }

    /// Everything a slot held beyond the slot itself, given back as it is
    /// freed (any state): its per-source count, its handshake place, its
    /// rate bucket.
    pub(super) fn slot_freed(&mut self, slot: usize) {
        let s = &mut self.conns[slot];
        if s.per_source() {
            s.set_per_source(false);
            if let Some(table) = &self.shared.sources {
                table.release(s.peer().ip());
            }
        }
        if s.in_handshake() {
            s.set_in_handshake(false);
            self.handshakes.leave();
        }
        if self.rate.on() {
            self.rate.forget(slot);
        }
    }

    /// Gives back a place under `max_connections` taken by a client that
    /// is closed unseen after all (it is not counted down at its close).
    pub(super) fn unadmit(&mut self) {
        let max = self.shared.config.max_connections;
        if self.shared.admitted.fetch_sub(1, Ordering::AcqRel) == max {
            self.outbox.wake_all();
        }
    }

    /// Takes a place under `max_connections` if there is one. Reaching the
    /// limit wakes every shard, so they withdraw their accepts now rather
    /// than at their next tick.
    pub(super) fn try_admit(&mut self) -> bool {
        let max = self.shared.config.max_connections;
        let before = self.shared.admitted.fetch_add(1, Ordering::AcqRel);
        if before >= max {
            self.shared.admitted.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        if before + 1 == max {
            self.outbox.wake_all();
        }
        true
    }

    /// Closes the clients held at the limit or waiting for a handshake
    /// place (the server is stopping).
    pub(super) fn drop_waiting(&mut self) {
        while let Some((slot, _)) = self.accepts.take_first() {
            self.conns[slot as usize].set_unseen(true);
            self.release(slot as usize);
        }
        self.drop_handshake_waiting();
    }

    /// Starts an outbound connection with the transport `setup` asks for:
    /// first a socket (its completion continues in `on_socket`). A connect
    /// that cannot start is reported to the handler as failed.
    pub(super) fn start_connect(
        &mut self,
        remote: SocketAddr,
        local: Option<SocketAddr>,
        transport: crate::transport::ClientSetup,
    ) {
        let pending = PendingConnect {
            remote,
            local,
            transport,
        };
        if let Err(e) = self.try_start_connect(pending) {
            self.connects.fail(remote, e);
        }
    }

    fn try_start_connect(&mut self, pending: PendingConnect) -> io::Result<()> {
        if self.stopping {
            return Err(io::Error::other("server is stopping"));
        }
        if self.committed() >= self.conns.len() {
            return Err(io::Error::other(format!(
                "shard {} connection table is full ({} entries)",
                self.index,
                self.conns.len()
            )));
        }
        if !self.try_admit() {
            return Err(io::Error::other(format!(
                "connection limit reached ({} connections)",
                self.shared.config.max_connections
            )));
        }
        let remote = pending.remote;
        let token = self.connects.wait_for_socket(pending);
        self.ops.push(Op::Socket { token, remote });
        Ok(())
    }

    pub(super) fn on_socket(&mut self, token: u32, result: i32) {
        let Some(pending) = self.connects.socket_done(token) else {
            return;
        };
        if result < 0 {
            self.shared.admitted.fetch_sub(1, Ordering::AcqRel);
            self.connects
                .fail(pending.remote, io::Error::from_raw_os_error(-result));
            return;
        }
        let slot = result as usize;
        if !self.claim(slot, "socket") {
            self.shared.admitted.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        if let Err(e) = self.attach_client_transport(slot, &pending.transport) {
            // Closing the socket reports the failure (`on_closed`).
            tracing::warn!(error = %e, "client transport could not be created");
            self.connects
                .connecting(slot as u32, pending.remote, Some(libc::EINVAL));
            self.release(slot);
            return;
        }
        let s = &mut self.conns[slot];
        s.state = SlotState::Connecting;
        let generation = s.generation;
        self.connects.connecting(slot as u32, pending.remote, None);
        self.ops.push(Op::Connect {
            slot: slot as u32,
            generation,
            remote: pending.remote,
            local: pending.local,
        });
    }

    pub(super) fn on_connect(
        &mut self,
        slot: u32,
        generation: u32,
        result: i32,
    ) -> Option<(ConnId, SocketAddr)> {
        let slot = slot as usize;
        self.conns
            .get(slot)
            .filter(|s| s.generation == generation && s.state == SlotState::Connecting)?;
        if result < 0 {
            self.connects.connect_failed(slot as u32, -result);
            // Close the socket; `on_closed` reports the failure.
            self.release(slot);
            return None;
        }
        let remote = self.connects.connected(slot as u32)?;
        self.stats.connected += 1;
        Some((self.open_slot(slot, remote), remote))
    }
}
