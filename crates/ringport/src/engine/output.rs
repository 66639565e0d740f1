//! Sending: per-connection queues, one send in flight per connection,
//! slow consumers, broadcast, and the operations a handler's `Context`
//! offers (the [`Outbound`] implementation).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::Core;
use super::conn::SlotState;
use crate::cluster::ClusterConnId;
use crate::codec::{Codec, MAX_HEADER_LEN};
use crate::conn_id::ConnId;
use crate::error::{CloseReason, SendError, TopicError};
use crate::handler::{Outbound, Remote};
use crate::protocol::{MessageKind, framed};
use crate::router::{self, ClusterOut, Dispatch, SendTo};
use crate::timer::TimerId;

impl<C: Codec> Core<C> {
    /// The framed protocol's header for a message of `len` bytes (the same
    /// function frames it through the seam, `protocol::framed`).
    #[inline]
    fn header(&self, len: usize) -> Result<([u8; MAX_HEADER_LEN], usize), SendError> {
        framed::header(&self.codec, self.max_frame, len)
    }

    pub(super) fn enqueue_copy(&mut self, slot: usize, payload: &[u8]) -> Result<(), SendError> {
        if self.conns[slot].has_protocol() {
            return self.enqueue_protocol(slot, MessageKind::Binary, payload, None);
        }
        let (header, n) = self.header(payload.len())?;
        let trailer = self.codec.trailer();
        // One lookup of the slot for the whole enqueue: this runs once per
        // message sent.
        let s = &mut self.conns[slot];
        if !s.transport.is_plain() {
            self.enqueue_through_transport(slot, &header[..n], payload);
            return Ok(());
        }
        let before = s.queue.len();
        s.queue
            .push_copy(self.sends.pool(), &[&header[..n], payload, trailer]);
        self.sends
            .queued(s, slot, before, &mut self.stats, self.clock.now_ms());
        Ok(())
    }

    pub(super) fn enqueue_shared(&mut self, slot: usize, payload: Bytes) -> Result<(), SendError> {
        self.enqueue_shared_as(slot, MessageKind::Binary, payload)
    }

    /// [`Self::enqueue_shared`] of a message of `kind` (which only
    /// protocol connections keep; framed ones carry bytes).
    pub(super) fn enqueue_shared_as(
        &mut self,
        slot: usize,
        kind: MessageKind,
        payload: Bytes,
    ) -> Result<(), SendError> {
        if self.conns[slot].has_protocol() {
            let bytes = payload.clone();
            return self.enqueue_protocol(slot, kind, &payload, Some(bytes));
        }
        let (header, n) = self.header(payload.len())?;
        if !self.conns[slot].transport.is_plain() {
            self.enqueue_through_transport(slot, &header[..n], &payload);
            return Ok(());
        }
        let trailer = self.codec.trailer();
        let s = &mut self.conns[slot];
        let before = s.queue.len();
        s.queue
            .push_shared(self.sends.pool(), &header[..n], payload, trailer);
        self.queued(slot, before);
        Ok(())
    }

    /// Writes one frame through the transport of `slot` (which is not
    /// plain: e.g. encrypted into records).
    fn enqueue_through_transport(&mut self, slot: usize, header: &[u8], payload: &[u8]) {
        let trailer = self.codec.trailer();
        let s = &mut self.conns[slot];
        let before = s.queue.len();
        s.transport
            .write(&[header, payload, trailer], &mut s.queue, self.sends.pool());
        self.queued(slot, before);
    }

    /// Accounts for one message queued to `slot` (whose queue held
    /// `before` bytes) and makes sure it gets sent.
    pub(super) fn queued(&mut self, slot: usize, before: usize) {
        let s = &mut self.conns[slot];
        self.sends
            .queued(s, slot, before, &mut self.stats, self.clock.now_ms());
    }

    pub(super) fn mark_dirty(&mut self, slot: usize) {
        self.sends.mark(&mut self.conns[slot], slot);
    }

    /// Starts a send for every connection with queued data and none in
    /// flight.
    pub(super) fn flush_dirty(&mut self) {
        self.sends.start_sends(&mut self.conns, &mut self.ops);
    }

    pub(super) fn on_send(&mut self, slot: u32, generation: u32, result: i32) {
        let slot = slot as usize;
        let Some(s) = self
            .conns
            .get_mut_if_allocated(slot)
            .filter(|s| s.generation == generation && s.send_in_flight())
        else {
            return;
        };
        s.set_send_in_flight(false);
        if result >= 0 {
            self.sends.sent(s, result as usize, &mut self.stats);
        } else if -result != libc::ECANCELED {
            let errno = -result;
            if s.state == SlotState::Open {
                self.begin_close(slot, CloseReason::Reset(errno), false);
            } else {
                s.set_discard(true);
            }
        }
        // Async senders waiting for room in a send queue are told at the
        // next turn (`drain_commands` notifies once per turn, not once per
        // completed send: the notification costs a full fence).
        let s = &mut self.conns[slot];
        match s.state {
            SlotState::Open => {
                if !s.queue.is_empty() {
                    self.mark_dirty(slot);
                }
                let s = &mut self.conns[slot];
                if self.sends.may_resume(s) {
                    s.set_recv_paused(false);
                    self.receives.resume_later(slot);
                }
            }
            SlotState::Closing => {
                if !s.queue.is_empty() && !s.discard() {
                    self.mark_dirty(slot);
                }
                self.try_release(slot);
            }
            _ => {}
        }
    }

    /// Applies the slow-consumer policy to a send that did not come from
    /// the connection's own handler call. Returns whether to queue it.
    pub(super) fn admit_remote(&mut self, slot: usize) -> bool {
        self.sends
            .admit_remote(&self.conns[slot], slot, &mut self.stats)
    }

    pub(super) fn close_victims(&mut self) {
        while let Some(slot) = self.sends.next_victim() {
            self.begin_close(slot, CloseReason::SlowConsumer, false);
        }
    }

    pub(super) fn send_from_elsewhere(&mut self, conn: ConnId, kind: MessageKind, payload: Bytes) {
        let Some(slot) = self.live_slot(conn) else {
            return;
        };
        if self.admit_remote(slot) {
            let _ = self.enqueue_shared_as(slot, kind, payload);
            self.check_pause(slot);
        }
        self.close_victims();
    }

    pub(super) fn broadcast_local(&mut self, kind: MessageKind, payload: &Bytes) {
        self.begin_fanout();
        for i in 0..self.conns.open_count() {
            let slot = self.conns.open_at(i);
            // Not yet shown to the handler: not part of "everyone".
            if self.handshaking(slot) {
                continue;
            }
            if self.admit_remote(slot) {
                let _ = self.enqueue_fanout(slot, kind, payload);
            }
        }
        self.close_victims();
    }

    /// Queues `payload` as one message of `kind` to a connection of this
    /// shard (by reference when it is the message being handled).
    fn send_local_as(
        &mut self,
        conn: ConnId,
        kind: MessageKind,
        payload: &[u8],
    ) -> Result<(), SendError> {
        let slot = self.live_slot_below_limit(conn)?;
        // Sending (part of) the large message being handled, e.g. an echo:
        // queue the reassembly buffer by reference, no copy.
        if let Some(shared) = self.receives.quote(payload) {
            return self.enqueue_shared_as(slot, kind, shared);
        }
        if self.conns[slot].has_protocol() {
            return self.enqueue_protocol(slot, kind, payload, None);
        }
        self.enqueue_copy(slot, payload)
    }
}

impl<C: Codec> Core<C> {
    // Topics: the index is the `TopicIndex` part; subscribing tells the
    // cluster link, publishing fans out like a broadcast.
    pub(super) fn subscribe(&mut self, conn: ConnId, topic: &[u8]) -> Result<bool, TopicError> {
        let slot = self.live_slot(conn).ok_or(TopicError::Closed)?;
        let done = self.topics.subscribe(slot as u32, topic);
        self.report_interest();
        done
    }

    pub(super) fn unsubscribe(&mut self, conn: ConnId, topic: &[u8]) -> bool {
        let done = self
            .live_slot(conn)
            .is_some_and(|slot| self.topics.unsubscribe(slot as u32, topic));
        self.report_interest();
        done
    }

    /// Tells the cluster link (through the outbox) which topics this shard
    /// gained or lost.
    pub(super) fn report_interest(&mut self) {
        for (topic, on) in self.topics.drain_changes() {
            // Without a cluster the outbox refuses it: nothing to tell.
            let out = ClusterOut::Interest { topic, on };
            let _ = self.outbox.cluster(&self.shared, out);
        }
    }

    /// Queues `payload` to this shard's subscribers of `topic`; returns how
    /// many it was queued to (slow consumers at their bound are not
    /// counted, and handled by the policy).
    pub(super) fn publish_local(&mut self, topic: &[u8], payload: &Bytes) -> usize {
        // Taken out while sends are queued (which need `self`), put back
        // before any close can edit the index.
        let Some(list) = self.topics.take_subscribers(topic) else {
            return 0;
        };
        self.begin_fanout();
        let mut queued = 0;
        for &slot in &list {
            if self.admit_remote(slot as usize)
                && self
                    .enqueue_fanout(slot as usize, MessageKind::Binary, payload)
                    .is_ok()
            {
                queued += 1;
            }
        }
        self.topics.restore_subscribers(topic, list);
        self.close_victims();
        queued
    }
}

impl<C: Codec> Outbound for Core<C> {
    fn send(&mut self, conn: ConnId, payload: &[u8]) -> Result<(), SendError> {
        if conn.shard() != self.index {
            router::check_size(&self.shared, payload.len())?;
            return self.send_bytes(conn, Bytes::copy_from_slice(payload));
        }
        self.send_local_as(conn, MessageKind::Binary, payload)
    }

    fn send_as(
        &mut self,
        conn: ConnId,
        kind: MessageKind,
        payload: &[u8],
    ) -> Result<(), SendError> {
        if conn.shard() != self.index {
            router::check_size(&self.shared, payload.len())?;
            let payload = Bytes::copy_from_slice(payload);
            return router::send_as(&self.shared, &mut self.outbox, conn, kind, payload);
        }
        self.send_local_as(conn, kind, payload)
    }

    fn message_kind(&self) -> MessageKind {
        self.protocols.current_kind()
    }

    fn send_bytes(&mut self, conn: ConnId, payload: Bytes) -> Result<(), SendError> {
        if conn.shard() != self.index {
            return router::send(&self.shared, &mut self.outbox, conn, payload);
        }
        let slot = self.live_slot_below_limit(conn)?;
        self.enqueue_shared(slot, payload)
    }

    fn broadcast(&mut self, payload: &[u8]) -> Result<usize, SendError> {
        self.broadcast_as(MessageKind::Binary, payload)
    }

    fn broadcast_as(&mut self, kind: MessageKind, payload: &[u8]) -> Result<usize, SendError> {
        router::check_size(&self.shared, payload.len())?;
        let bytes = Bytes::copy_from_slice(payload);
        // Other shards (and nodes) first: a full outbox refuses before
        // anyone got the message.
        router::broadcast_as(&self.shared, &mut self.outbox, kind, &bytes)?;
        let here = self.conns.open_count();
        self.broadcast_local(kind, &bytes);
        Ok(here)
    }

    fn subscribe(&mut self, conn: ConnId, topic: &[u8]) -> Result<bool, TopicError> {
        Core::subscribe(self, conn, topic)
    }

    fn unsubscribe(&mut self, conn: ConnId, topic: &[u8]) -> bool {
        Core::unsubscribe(self, conn, topic)
    }

    fn publish(&mut self, topic: &[u8], payload: &[u8]) -> Result<usize, SendError> {
        router::check_size(&self.shared, payload.len())?;
        let topic = Bytes::copy_from_slice(topic);
        let payload = Bytes::copy_from_slice(payload);
        if !router::publish(&self.shared, &mut self.outbox, &topic, &payload)? {
            // A topic with a history reaches every subscriber, here too,
            // through it (with positions, in the history's order).
            return Ok(0);
        }
        Ok(self.publish_local(&topic, &payload))
    }

    fn send_to(
        &mut self,
        from: Option<ConnId>,
        to: &ClusterConnId,
        payload: &[u8],
    ) -> Result<(), SendError> {
        match router::send_to(&self.shared, &mut self.outbox, from, to, payload)? {
            SendTo::Local(conn) => self.send(conn, payload),
            SendTo::Sent => Ok(()),
        }
    }

    fn close(&mut self, conn: ConnId) -> Result<(), SendError> {
        if conn.shard() != self.index {
            return router::close(&self.shared, &mut self.outbox, conn);
        }
        let slot = self.live_slot(conn).ok_or(SendError::Closed)?;
        self.begin_close(slot, CloseReason::Local, true);
        Ok(())
    }

    fn pause_reading(&mut self, conn: ConnId) -> Result<(), SendError> {
        let slot = self.live_slot(conn).ok_or(SendError::Closed)?;
        self.conns[slot].set_held_by_app(true);
        self.pause_reading(slot);
        Ok(())
    }

    fn resume_reading(&mut self, conn: ConnId) -> Result<(), SendError> {
        let slot = self.live_slot(conn).ok_or(SendError::Closed)?;
        self.conns[slot].set_held_by_app(false);
        self.resume_reading_if_free(slot);
        Ok(())
    }

    fn shard_index(&self) -> usize {
        self.index
    }

    fn connection_count(&self) -> usize {
        self.conns.open_count()
    }

    fn queued_bytes(&self, conn: ConnId) -> usize {
        self.live_slot(conn)
            .map_or(0, |slot| self.conns[slot].queue.len())
    }

    fn connect(
        &mut self,
        remote: SocketAddr,
        local: Option<SocketAddr>,
        transport: crate::transport::ClientSetup,
    ) {
        self.start_connect(remote, local, transport);
    }

    fn connection_infos(&self, out: &mut Vec<crate::stats::ConnectionInfo>) {
        Core::connection_infos(self, out);
    }

    fn set_timer(&mut self, delay: Duration, token: u64) -> TimerId {
        self.timers.insert(self.clock.now() + delay, token)
    }

    fn cancel_timer(&mut self, id: TimerId) -> bool {
        self.timers.cancel(id)
    }

    fn remote(&self) -> Arc<dyn Remote> {
        self.shared.clone()
    }

    fn cluster(&self) -> Option<&dyn crate::handler::ClusterLink> {
        self.shared.cluster.get().map(|link| &**link)
    }

    fn after_interest(&mut self, waiter: Box<dyn FnOnce() + Send>) -> bool {
        use crate::router::{ClusterOut, Dispatch};
        self.outbox
            .cluster(&self.shared, ClusterOut::InterestApplied(waiter))
            .is_ok()
    }
}
