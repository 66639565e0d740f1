//! Admission: accepts kept posted (the AcceptEx pre-posting), outbound
//! connects, and the global connection limit.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::conn::Connecting;
use super::conn::SlotState;
use super::{Core, Engine, PendingConnect};
use crate::codec::Codec;
use crate::config::LimitPolicy;
use crate::conn_id::ConnId;
use crate::handler::Handler;
use crate::sys::Op;

/// How long accepting pauses after an accept error (EMFILE, ENFILE,
/// ENOMEM...), so a full descriptor table does not make the shard spin.
pub(super) const ACCEPT_BACKOFF: Duration = Duration::from_millis(200);

impl<C: Codec, H: Handler> Engine<C, H> {
    /// Admits the clients held at the limit, oldest first, while there are
    /// places.
    pub(super) fn admit_waiting(&mut self) {
        while let Some(&(slot, peer)) = self.core.waiting.front() {
            if !self.core.try_admit() {
                return;
            }
            self.core.waiting.pop_front();
            if !self.core.attach_server_transport(slot as usize) {
                continue;
            }
            self.core.stats.accepted += 1;
            let conn = self.core.open_slot(slot as usize, peer);
            self.opened(conn, peer);
        }
    }
}

impl<C: Codec> Core<C> {
    /// Slots in use plus those promised to posted accepts and pending
    /// sockets: never more than the table.
    fn committed(&self) -> usize {
        self.in_use + self.accepts_posted + self.pending_count
    }

    /// Keeps `accepts_in_flight` accepts posted while below the limit and
    /// the table has room; withdraws them at the limit.
    pub(super) fn post_accepts(&mut self) {
        // Clients held at the limit are first in line: no new ones until
        // they are admitted (this bounds them to `accepts_in_flight`).
        if !self.listening
            || self.stopping
            || self.accept_backoff_until.is_some()
            || !self.waiting.is_empty()
        {
            return;
        }
        // At the global limit, accepts are withdrawn: new clients wait in the
        // listen backlog. (Reserving the limit per posted accept cannot
        // work with SO_REUSEPORT: the kernel may queue a client at a shard
        // that holds no reservation while another shard's sit unused.)
        let max = self.shared.config.max_connections;
        if self.shared.admitted.load(Ordering::Acquire) >= max {
            if self.accepts_posted > 0 && !self.accepts_withdrawn {
                self.accepts_withdrawn = true;
                self.ops.push(Op::WithdrawAccepts);
            }
            if !self.at_limit_logged {
                tracing::warn!(
                    shard = self.index,
                    max_connections = max,
                    "connection limit reached; accepting paused until connections close"
                );
                self.at_limit_logged = true;
            }
            return;
        }
        self.at_limit_logged = false;
        self.accepts_withdrawn = false;
        while self.accepts_posted < self.accepts_in_flight && self.committed() < self.slots.len() {
            self.accepts_posted += 1;
            self.ops.push(Op::Accept);
        }
    }

    pub(super) fn on_accept(
        &mut self,
        listener: u8,
        result: Result<(u32, SocketAddr), i32>,
    ) -> Option<(ConnId, SocketAddr)> {
        self.accepts_posted = self.accepts_posted.saturating_sub(1);
        let (slot, peer) = match result {
            Ok(accepted) => accepted,
            Err(libc::ECANCELED | libc::ECONNABORTED | libc::EINTR) => return None,
            Err(errno) => {
                self.stats.accept_errors += 1;
                if self.accept_backoff_until.is_none() {
                    tracing::warn!(
                        shard = self.index,
                        error = %io::Error::from_raw_os_error(errno),
                        "accept failed; backing off"
                    );
                }
                self.accept_backoff_until = Some(self.now + ACCEPT_BACKOFF);
                return None;
            }
        };
        let slot = slot as usize;
        if !self.claim(slot, "accept") {
            return None;
        }
        self.attach_protocol(slot, listener, peer);
        if !self.try_admit() {
            // Accepted in the moment the limit was reached, before the
            // accepts were withdrawn: held or refused, never seen by the
            // handler meanwhile.
            match self.shared.config.at_limit {
                LimitPolicy::Wait => {
                    self.slots[slot].state = SlotState::Waiting;
                    self.waiting.push_back((slot as u32, peer));
                }
                LimitPolicy::Refuse => {
                    self.stats.rejected += 1;
                    self.slots[slot].set_unseen(true);
                    self.release(slot);
                }
            }
            return None;
        }
        if !self.attach_server_transport(slot) {
            return None;
        }
        self.stats.accepted += 1;
        Some((self.open_slot(slot, peer), peer))
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

    /// Closes the clients held at the limit (the server is stopping).
    pub(super) fn drop_waiting(&mut self) {
        while let Some((slot, _)) = self.waiting.pop_front() {
            self.slots[slot as usize].set_unseen(true);
            self.release(slot as usize);
        }
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
            self.failed_connects.push((remote, e));
        }
    }

    fn try_start_connect(&mut self, pending: PendingConnect) -> io::Result<()> {
        if self.stopping {
            return Err(io::Error::other("server is stopping"));
        }
        if self.committed() >= self.slots.len() {
            return Err(io::Error::other(format!(
                "shard {} connection table is full ({} entries)",
                self.index,
                self.slots.len()
            )));
        }
        if !self.try_admit() {
            return Err(io::Error::other(format!(
                "connection limit reached ({} connections)",
                self.shared.config.max_connections
            )));
        }
        let remote = pending.remote;
        let token = match self.pending_free.pop() {
            Some(t) => {
                self.pending[t as usize] = Some(pending);
                t
            }
            None => {
                self.pending.push(Some(pending));
                (self.pending.len() - 1) as u32
            }
        };
        self.pending_count += 1;
        self.ops.push(Op::Socket { token, remote });
        Ok(())
    }

    pub(super) fn on_socket(&mut self, token: u32, result: i32) {
        let Some(pending) = self.pending.get_mut(token as usize).and_then(Option::take) else {
            return;
        };
        self.pending_free.push(token);
        self.pending_count -= 1;
        if result < 0 {
            self.shared.admitted.fetch_sub(1, Ordering::AcqRel);
            self.failed_connects
                .push((pending.remote, io::Error::from_raw_os_error(-result)));
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
            self.connecting.insert(
                slot as u32,
                Connecting {
                    remote: pending.remote,
                    error: Some(libc::EINVAL),
                },
            );
            self.release(slot);
            return;
        }
        let s = &mut self.slots[slot];
        s.state = SlotState::Connecting;
        let generation = s.generation;
        let connecting = Connecting {
            remote: pending.remote,
            error: None,
        };
        self.connecting.insert(slot as u32, connecting);
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
        self.slots
            .get(slot)
            .filter(|s| s.generation == generation && s.state == SlotState::Connecting)?;
        if result < 0 {
            if let Some(c) = self.connecting.get_mut(&(slot as u32)) {
                c.error = Some(-result);
            }
            // Close the socket; `on_closed` reports the failure.
            self.release(slot);
            return None;
        }
        let remote = self.connecting.remove(&(slot as u32))?.remote;
        self.stats.connected += 1;
        Some((self.open_slot(slot, remote), remote))
    }
}
