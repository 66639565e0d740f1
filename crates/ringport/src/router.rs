//! One router for every send, send_to, broadcast, publish and close,
//! whoever calls it: a handler on a shard ([`crate::Context`]), the
//! [`crate::Server`] handle, the async API or the cluster link.
//!
//! The decisions are made here once; only the way commands leave differs,
//! behind [`Dispatch`]:
//! - [`FromThread`] (the server handle, async senders, the cluster link):
//!   straight into the target shards' command queues, **all or nothing**:
//!   room is reserved in every target queue first, so a fan-out that meets
//!   a full queue fails with [`SendError::Busy`] having reached no shard
//!   (a retry never duplicates), and an async sender waits for room in
//!   the shard that was full.
//! - the engine's outbox (a handler on a shard): commands wait in the
//!   sending shard's bounded outbox until the target queue has room, so a
//!   busy shard delays a broadcast or publish but does not lose it; the
//!   sender is not blocked (a shard never waits on another shard) but its
//!   reading pauses while the outbox is over half full. Only a full outbox
//!   refuses, with `Busy`, before anything was delivered.
//!
//! The policy at a connection's own send queue is the engine's: a send
//! from that connection's shard fails with [`SendError::QueueFull`] at the
//! bound; a message arriving from elsewhere (another shard, another node,
//! a broadcast or publish) meets the slow-consumer policy
//! ([`crate::SlowConsumerPolicy`]).
//!
//! Traffic for other nodes (broadcast, publish, send_to) follows the
//! local delivery: after it, and only if it was accepted. A send_to from a
//! handler reports a refusal of the link (unreachable node, full link
//! queue) through [`crate::Handler::on_undeliverable`], as it reports a
//! stale id on the other node; from a thread it is returned at once.

use bytes::Bytes;

use crate::cluster::ClusterConnId;
use crate::conn_id::ConnId;
use crate::error::SendError;
use crate::protocol::MessageKind;
use crate::shared::{Command, ServerShared};

/// Traffic for the other nodes of a cluster.
pub(crate) enum ClusterOut {
    Broadcast(Bytes),
    Publish {
        topic: Bytes,
        payload: Bytes,
    },
    Send {
        from: Option<ConnId>,
        to: ClusterConnId,
        payload: Bytes,
    },
    /// A shard gained (`on`) its first subscriber of `topic`, or lost its
    /// last one.
    Interest {
        topic: Bytes,
        on: bool,
    },
    /// Runs once the interest reported before it is registered with the
    /// bus (in order with `Interest`).
    InterestApplied(Box<dyn FnOnce() + Send>),
}

/// Which shards a command goes to.
#[derive(Clone, Copy)]
pub(crate) enum Targets {
    /// One shard.
    One(usize),
    /// Every shard but the caller's own ([`Dispatch::here`]).
    Others,
}

/// How commands leave the caller: into the shards' queues from a thread,
/// or into a shard's outbox from its engine.
pub(crate) trait Dispatch {
    /// The caller's shard, whose own part the caller delivers itself.
    fn here(&self) -> Option<usize>;
    /// Room for one command on each target, all or none.
    fn reserve(&mut self, shared: &ServerShared, targets: Targets) -> Result<(), SendError>;
    /// Queues `cmd` for `shard`, in a place [`Self::reserve`] made.
    fn push(&mut self, shared: &ServerShared, shard: usize, cmd: Command);
    /// Hands traffic to the cluster link (`Unreachable` without one).
    fn cluster(&mut self, shared: &ServerShared, out: ClusterOut) -> Result<(), SendError>;
}

/// Dispatch from a thread that is not a shard.
#[derive(Default)]
pub(crate) struct FromThread {
    /// The shard whose full queue made the last reservation fail.
    pub full: Option<usize>,
    reserved: Vec<usize>,
}

impl Dispatch for FromThread {
    fn here(&self) -> Option<usize> {
        None
    }

    fn reserve(&mut self, shared: &ServerShared, targets: Targets) -> Result<(), SendError> {
        if shared.is_stopping() {
            return Err(SendError::Stopped);
        }
        self.full = None;
        let range = match targets {
            Targets::One(i) => i..i + 1,
            Targets::Others => 0..shared.shards.len(),
        };
        for i in range {
            if shared.shards[i].commands.reserve() {
                self.reserved.push(i);
            } else {
                for j in self.reserved.drain(..) {
                    shared.shards[j].commands.unreserve();
                }
                self.full = Some(i);
                return Err(SendError::Busy);
            }
        }
        Ok(())
    }

    fn push(&mut self, shared: &ServerShared, shard: usize, cmd: Command) {
        let pos = self
            .reserved
            .iter()
            .position(|&i| i == shard)
            .expect("a place was reserved for this shard");
        self.reserved.swap_remove(pos);
        let target = &shared.shards[shard];
        target.commands.push_reserved(cmd);
        target.wake();
    }

    fn cluster(&mut self, shared: &ServerShared, out: ClusterOut) -> Result<(), SendError> {
        to_link(shared, out)
    }
}

impl Drop for FromThread {
    fn drop(&mut self) {
        debug_assert!(self.reserved.is_empty(), "reserved places not used");
    }
}

/// Hands `out` to the cluster link: what the shard loop does with a
/// shard's cluster traffic, and what a thread does at once.
pub(crate) fn to_link(shared: &ServerShared, out: ClusterOut) -> Result<(), SendError> {
    let Some(link) = shared.cluster.get() else {
        return Err(SendError::Unreachable);
    };
    match out {
        ClusterOut::Broadcast(payload) => link.broadcast(&payload),
        ClusterOut::Publish { topic, payload } => link.publish(&topic, &payload),
        ClusterOut::Send { from, to, payload } => return link.send(from, &to, payload),
        ClusterOut::Interest { topic, on } => link.interest(&topic, on),
        ClusterOut::InterestApplied(waiter) => link.when_interest_applied(waiter),
    }
    Ok(())
}

/// A payload over the maximum frame cannot be sent anywhere.
pub(crate) fn check_size(shared: &ServerShared, len: usize) -> Result<(), SendError> {
    if len > shared.max_frame {
        Err(SendError::TooLarge)
    } else {
        Ok(())
    }
}

/// One message to `conn`, a connection of another shard than the caller's
/// (`Closed` at once if its id is stale).
pub(crate) fn send(
    shared: &ServerShared,
    d: &mut impl Dispatch,
    conn: ConnId,
    payload: Bytes,
) -> Result<(), SendError> {
    send_as(shared, d, conn, MessageKind::Binary, payload)
}

/// [`send`] of a message of `kind` (text or binary: kept by protocol
/// connections such as WebSocket; framed ones carry the bytes).
pub(crate) fn send_as(
    shared: &ServerShared,
    d: &mut impl Dispatch,
    conn: ConnId,
    kind: MessageKind,
    payload: Bytes,
) -> Result<(), SendError> {
    check_size(shared, payload.len())?;
    shared.check_live(conn)?;
    let shard = conn.shard();
    d.reserve(shared, Targets::One(shard))?;
    d.push(
        shared,
        shard,
        Command::Send {
            conn,
            kind,
            payload,
        },
    );
    Ok(())
}

/// Closes `conn`, a connection of another shard than the caller's.
pub(crate) fn close(
    shared: &ServerShared,
    d: &mut impl Dispatch,
    conn: ConnId,
) -> Result<(), SendError> {
    shared.check_live(conn)?;
    let shard = conn.shard();
    d.reserve(shared, Targets::One(shard))?;
    d.push(shared, shard, Command::Close { conn });
    Ok(())
}

/// One message to every connection of every shard but the caller's (the
/// caller delivers its own part), then to every other node.
pub(crate) fn broadcast(
    shared: &ServerShared,
    d: &mut impl Dispatch,
    payload: &Bytes,
) -> Result<(), SendError> {
    broadcast_as(shared, d, MessageKind::Binary, payload)
}

/// [`broadcast`] of a message of `kind` (other nodes receive it as binary:
/// the cluster carries bytes).
pub(crate) fn broadcast_as(
    shared: &ServerShared,
    d: &mut impl Dispatch,
    kind: MessageKind,
    payload: &Bytes,
) -> Result<(), SendError> {
    check_size(shared, payload.len())?;
    fan_out(shared, d, || Command::Broadcast {
        kind,
        payload: payload.clone(),
    })?;
    if shared.cluster.get().is_some() {
        // At most once across nodes: a refusal of the link is counted there.
        let _ = d.cluster(shared, ClusterOut::Broadcast(payload.clone()));
    }
    Ok(())
}

/// `payload` to the subscribers of `topic` on every shard but the
/// caller's, then on every other node. Returns whether the caller delivers
/// its own part: not for a topic with a history, which reaches every
/// subscriber, here too, through the cluster link (with positions, in the
/// history's order).
pub(crate) fn publish(
    shared: &ServerShared,
    d: &mut impl Dispatch,
    topic: &Bytes,
    payload: &Bytes,
) -> Result<bool, SendError> {
    check_size(shared, payload.len())?;
    if let Some(link) = shared.cluster.get()
        && link.history_topic(topic)
    {
        let out = ClusterOut::Publish {
            topic: topic.clone(),
            payload: payload.clone(),
        };
        d.cluster(shared, out)?;
        return Ok(false);
    }
    fan_out(shared, d, || Command::Publish {
        topic: topic.clone(),
        payload: payload.clone(),
    })?;
    if shared.cluster.get().is_some() {
        let out = ClusterOut::Publish {
            topic: topic.clone(),
            payload: payload.clone(),
        };
        let _ = d.cluster(shared, out);
    }
    Ok(true)
}

fn fan_out(
    shared: &ServerShared,
    d: &mut impl Dispatch,
    make: impl Fn() -> Command,
) -> Result<(), SendError> {
    let here = d.here();
    if shared.shards.len() == 1 && here.is_some() {
        return Ok(());
    }
    d.reserve(shared, Targets::Others)?;
    for i in 0..shared.shards.len() {
        if Some(i) != here {
            d.push(shared, i, make());
        }
    }
    Ok(())
}

/// Where a send_to goes.
pub(crate) enum SendTo {
    /// A connection of this node: send it as to any local connection.
    Local(ConnId),
    /// Handed to the cluster link.
    Sent,
}

/// One message to a connection of any node.
pub(crate) fn send_to(
    shared: &ServerShared,
    d: &mut impl Dispatch,
    from: Option<ConnId>,
    to: &ClusterConnId,
    payload: &[u8],
) -> Result<SendTo, SendError> {
    let Some(link) = shared.cluster.get() else {
        return Err(SendError::Unreachable);
    };
    if **link.node() == *to.node() {
        return Ok(SendTo::Local(to.conn()));
    }
    check_size(shared, payload.len())?;
    let out = ClusterOut::Send {
        from,
        to: to.clone(),
        payload: Bytes::copy_from_slice(payload),
    };
    d.cluster(shared, out).map(|()| SendTo::Sent)
}

/// What the cluster link does to reach this node's shards (the link
/// delivers what other nodes sent, and the results of recoveries).
impl ServerShared {
    /// Queues `cmd` on `shard` and wakes it (`Busy`: its queue is full).
    #[cfg_attr(not(feature = "cluster"), allow(dead_code))]
    pub(crate) fn command(
        &self,
        shard: &crate::shared::ShardShared,
        cmd: Command,
    ) -> Result<(), SendError> {
        let index = self
            .shards
            .iter()
            .position(|s| std::ptr::eq(s, shard))
            .expect("a shard of this server");
        thread::command(self, index, cmd)
    }
}

/// The thread-side entry points, for the server handle and async senders.
pub(crate) mod thread {
    use super::*;

    pub fn send(shared: &ServerShared, conn: ConnId, payload: Bytes) -> Result<(), SendError> {
        super::send(shared, &mut FromThread::default(), conn, payload)
    }

    pub fn broadcast(shared: &ServerShared, payload: &Bytes) -> Result<(), SendError> {
        super::broadcast(shared, &mut FromThread::default(), payload)
    }

    pub fn publish(shared: &ServerShared, topic: &Bytes, payload: &Bytes) -> Result<(), SendError> {
        super::publish(shared, &mut FromThread::default(), topic, payload).map(|_| ())
    }

    pub fn close(shared: &ServerShared, conn: ConnId) -> Result<(), SendError> {
        super::close(shared, &mut FromThread::default(), conn)
    }

    pub fn send_to(
        shared: &ServerShared,
        to: &ClusterConnId,
        payload: Bytes,
    ) -> Result<(), SendError> {
        let mut d = FromThread::default();
        match super::send_to(shared, &mut d, None, to, &payload)? {
            SendTo::Local(conn) => super::send(shared, &mut d, conn, payload),
            SendTo::Sent => Ok(()),
        }
    }

    /// Any command to `shard`, or the command back with why not (`Busy`:
    /// its queue is full; retry once room is made).
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    pub fn try_command(
        shared: &ServerShared,
        shard: usize,
        cmd: Command,
    ) -> Result<(), (Command, SendError)> {
        let mut d = FromThread::default();
        match d.reserve(shared, Targets::One(shard)) {
            Ok(()) => {
                d.push(shared, shard, cmd);
                Ok(())
            }
            Err(e) => Err((cmd, e)),
        }
    }

    /// Any command to `shard` (`Busy` if its queue is full).
    pub fn command(shared: &ServerShared, shard: usize, cmd: Command) -> Result<(), SendError> {
        if shard >= shared.shards.len() {
            return Err(SendError::Closed);
        }
        let mut d = FromThread::default();
        d.reserve(shared, Targets::One(shard))?;
        d.push(shared, shard, cmd);
        Ok(())
    }
}
