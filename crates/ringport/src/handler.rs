//! The handler API: callbacks that run on the shard threads, the
//! [`Context`] they act through, and why connections close or sends fail.
//!
//! # Send paths and full queues
//!
//! Every send, broadcast, publish, send_to and close goes through one
//! router inside the crate, whoever makes it; the policy at a full queue
//! is:
//!
//! | from | to a connection of this shard | to another shard (its command queue full) | to another node |
//! | --- | --- | --- | --- |
//! | a handler ([`Context`]) | queued; [`SendError::QueueFull`] at the send queue's bound | waits in this shard's bounded outbox (order kept), reading from the connection being handled pauses while it is over half full; [`SendError::Busy`] only when the outbox is full, before anyone got it | after local delivery; a refusal of the link comes back through [`Handler::on_undeliverable`] |
//! | [`crate::Server`], async senders, the cluster link | - | [`SendError::Busy`] at once; a broadcast or publish is **all or nothing** over the shards (room is reserved in every queue first), so a retry never duplicates; the async forms wait for room instead | after local delivery, refusals returned at once |
//!
//! A message arriving at a connection from elsewhere (another shard, a
//! broadcast or publish, another node) whose send queue is at its bound
//! meets the slow-consumer policy ([`crate::SlowConsumerPolicy`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::cluster_types::{ClusterConnId, ClusterStats, Position, Recovery, Resumed};
use crate::conn_id::ConnId;
use crate::error::{CloseReason, SendError, TopicError};
use crate::protocol::{MessageKind, UpgradeDecision, UpgradeInfo};
use crate::timer::TimerId;

/// Code queued to run on a shard with its [`Context`].
pub(crate) type RunFn = Box<dyn FnOnce(&mut Context<'_>) + Send>;

/// What a [`ShardRemote`] needs of the server (implemented by its shared
/// state; a trait so this module does not depend on it).
pub(crate) trait Remote: Send + Sync {
    /// Queues `f` on `shard` (`Busy`: its command queue is full).
    fn run(&self, shard: usize, f: RunFn) -> Result<(), SendError>;
    /// Queues `f` on `shard`, or gives it back with why not.
    fn try_run(&self, shard: usize, f: RunFn) -> Result<(), (RunFn, SendError)>;
    /// Wakes `waker` once `shard` has drained its command queue.
    #[cfg_attr(not(feature = "tokio"), allow(dead_code))]
    fn wait_for_room(&self, shard: usize, waker: &std::task::Waker);
    /// This node's name in a cluster.
    fn node(&self) -> Option<Arc<str>>;
}

/// Runs code on one shard from any thread. Cheap to clone.
#[derive(Clone)]
pub struct ShardRemote {
    remote: Arc<dyn Remote>,
    shard: usize,
}

impl ShardRemote {
    pub(crate) fn new(remote: Arc<dyn Remote>, shard: usize) -> Self {
        ShardRemote { remote, shard }
    }

    /// Queues `f` to run on the shard's thread with a [`Context`] (in
    /// order with other commands to that shard). A connection id captured
    /// by `f` is still checked there: if the connection closed meanwhile,
    /// `ctx.send` to it returns `SendError::Closed`, so a late result never
    /// reaches the slot's next connection.
    pub fn run(&self, f: impl FnOnce(&mut Context<'_>) + Send + 'static) -> Result<(), SendError> {
        self.remote.run(self.shard, Box::new(f))
    }

    /// The shard this handle runs code on.
    pub fn shard(&self) -> usize {
        self.shard
    }

    #[cfg(feature = "tokio")]
    pub(crate) fn remote(&self) -> &Arc<dyn Remote> {
        &self.remote
    }
}

/// The shard operations handler callbacks reach through [`Context`]
/// (implemented by the engine).
pub(crate) trait Outbound {
    fn send(&mut self, conn: ConnId, payload: &[u8]) -> Result<(), SendError>;
    fn send_bytes(&mut self, conn: ConnId, payload: Bytes) -> Result<(), SendError>;
    fn broadcast(&mut self, payload: &[u8]) -> Result<usize, SendError>;
    fn send_as(&mut self, conn: ConnId, kind: MessageKind, payload: &[u8])
    -> Result<(), SendError>;
    fn broadcast_as(&mut self, kind: MessageKind, payload: &[u8]) -> Result<usize, SendError>;
    fn message_kind(&self) -> MessageKind;
    fn close(&mut self, conn: ConnId) -> Result<(), SendError>;
    fn pause_reading(&mut self, conn: ConnId) -> Result<(), SendError>;
    fn resume_reading(&mut self, conn: ConnId) -> Result<(), SendError>;
    fn shard_index(&self) -> usize;
    fn connection_count(&self) -> usize;
    fn queued_bytes(&self, conn: ConnId) -> usize;
    fn connect(
        &mut self,
        remote: SocketAddr,
        local: Option<SocketAddr>,
        transport: crate::transport::ClientSetup,
    );
    fn set_timer(&mut self, delay: Duration, token: u64) -> TimerId;
    fn cancel_timer(&mut self, id: TimerId) -> bool;
    /// The server, for [`ShardRemote`]s.
    fn remote(&self) -> Arc<dyn Remote>;
    /// The cluster link, when the server is part of a cluster.
    fn cluster(&self) -> Option<&dyn ClusterLink>;
    /// Hands `waiter` to the cluster link, in order after the interest this
    /// shard reported (false: no cluster).
    fn after_interest(&mut self, waiter: Box<dyn FnOnce() + Send>) -> bool;
    fn connection_infos(&self, out: &mut Vec<crate::stats::ConnectionInfo>);
    fn subscribe(&mut self, conn: ConnId, topic: &[u8]) -> Result<bool, TopicError>;
    fn unsubscribe(&mut self, conn: ConnId, topic: &[u8]) -> bool;
    fn publish(&mut self, topic: &[u8], payload: &[u8]) -> Result<usize, SendError>;
    fn send_to(
        &mut self,
        from: Option<ConnId>,
        to: &ClusterConnId,
        payload: &[u8],
    ) -> Result<(), SendError>;
}

/// What the engine and the server handle need of the cluster link (kept as
/// a trait so the core builds without the `cluster` feature). It lives
/// here, beside [`Outbound`] which hands it to [`Context`], and not in
/// `cluster`: the link depends on this module, not the reverse.
pub(crate) trait ClusterLink: Send + Sync {
    /// This node's name.
    fn node(&self) -> &Arc<str>;
    /// To every connection of every other node.
    fn broadcast(&self, payload: &Bytes);
    /// To the subscribers of `topic` on every other node.
    fn publish(&self, topic: &Bytes, payload: &Bytes);
    /// To a connection of another node; `from` hears of a stale id.
    fn send(
        &self,
        from: Option<ConnId>,
        to: &ClusterConnId,
        payload: Bytes,
    ) -> Result<(), SendError>;
    /// A shard gained (`on`) its first subscriber for `topic`, or lost its
    /// last one: the node's interest in the topic's publishes from other
    /// nodes.
    fn interest(&self, topic: &Bytes, on: bool);
    /// Runs `waiter` (on the link's thread) once every interest reported so
    /// far is registered with the bus, or at once if the link is down.
    fn when_interest_applied(&self, waiter: Box<dyn FnOnce() + Send>);
    /// Whether publishes to `topic` are kept in the history (they then reach
    /// subscribers, this node's included, through it, with positions).
    fn history_topic(&self, topic: &[u8]) -> bool;
    /// Delivers to `conn` the messages of `topic` after `since`, then
    /// subscribes it (on its shard) and runs `done` there.
    fn recover(&self, conn: ConnId, topic: Bytes, since: Option<Position>, done: ResumeDone);
    /// The link's counters.
    fn stats(&self) -> ClusterStats;
    /// Ends the link (on server stop).
    fn stop(&self);
}

/// Runs on the subscriber's shard once a subscription since a position
/// is live.
pub(crate) type ResumeDone = Box<dyn FnOnce(&mut Context<'_>, Result<Resumed, TopicError>) + Send>;

/// What handler callbacks can do, without leaving the shard thread.
pub struct Context<'a> {
    pub(crate) core: &'a mut dyn Outbound,
}

impl Context<'_> {
    /// Queues `payload` as one message to `conn` (copied; no allocation once
    /// the shard's send pool is warm). Connections on other shards are
    /// reached through their command queue.
    #[inline]
    pub fn send(&mut self, conn: ConnId, payload: &[u8]) -> Result<(), SendError> {
        self.core.send(conn, payload)
    }

    /// Like [`Context::send`], for a payload already in a `Bytes` (large
    /// payloads are queued by reference, not copied).
    pub fn send_bytes(&mut self, conn: ConnId, payload: Bytes) -> Result<(), SendError> {
        self.core.send_bytes(conn, payload)
    }

    /// Sends `payload` to every open connection on every shard (the sender
    /// included). Returns the number of connections on this shard it was
    /// queued to. Slow consumers are handled by the configured policy.
    pub fn broadcast(&mut self, payload: &[u8]) -> Result<usize, SendError> {
        self.core.broadcast(payload)
    }

    /// The kind of the message being handled (in `on_message`): text or
    /// binary for a WebSocket connection, always binary for framed ones.
    pub fn message_kind(&self) -> MessageKind {
        self.core.message_kind()
    }

    /// Like [`Context::send`], as a message of `kind`: WebSocket
    /// connections receive a text or binary message; framed connections
    /// receive the bytes either way.
    pub fn send_as(
        &mut self,
        conn: ConnId,
        kind: MessageKind,
        payload: &[u8],
    ) -> Result<(), SendError> {
        self.core.send_as(conn, kind, payload)
    }

    /// Like [`Context::broadcast`], as a message of `kind` (other cluster
    /// nodes deliver it as binary).
    pub fn broadcast_as(&mut self, kind: MessageKind, payload: &[u8]) -> Result<usize, SendError> {
        self.core.broadcast_as(kind, payload)
    }

    /// Stops reading from `conn` (a connection of this shard) until
    /// [`Context::resume_reading`]: backpressure for a handler whose own
    /// consumer is behind. Bytes already received wait in the connection's
    /// backlog (bounded by `input_backlog_limit`); the rest waits in the
    /// kernel and TCP flow control holds the peer. `Closed` for a stale id
    /// or a connection of another shard.
    pub fn pause_reading(&mut self, conn: ConnId) -> Result<(), SendError> {
        self.core.pause_reading(conn)
    }

    /// Reads from `conn` again after [`Context::pause_reading`] (unless
    /// its own send queue still holds it back).
    pub fn resume_reading(&mut self, conn: ConnId) -> Result<(), SendError> {
        self.core.resume_reading(conn)
    }

    /// Closes `conn` after flushing what is queued to it (within
    /// `close_timeout`).
    pub fn close(&mut self, conn: ConnId) -> Result<(), SendError> {
        self.core.close(conn)
    }

    /// Index of the shard this callback runs on.
    pub fn shard(&self) -> usize {
        self.core.shard_index()
    }

    /// Open connections on this shard.
    pub fn connections(&self) -> usize {
        self.core.connection_count()
    }

    /// What is known of every connection open on this shard (peer, age,
    /// bytes each way, bytes queued), appended to `out`.
    pub fn connection_infos(&self, out: &mut Vec<crate::stats::ConnectionInfo>) {
        self.core.connection_infos(out)
    }

    /// Bytes queued for `conn` (0 if it is not open on this shard).
    pub fn queued_bytes(&self, conn: ConnId) -> usize {
        self.core.queued_bytes(conn)
    }

    /// Arms a one-shot timer on this shard: [`Handler::on_timer`] gets
    /// `token` after `delay` (not before; as soon after as the shard's loop
    /// wakes, which it does for the deadline).
    pub fn set_timer(&mut self, delay: Duration, token: u64) -> TimerId {
        self.core.set_timer(delay, token)
    }

    /// Cancels a timer armed with [`Context::set_timer`]; false if it has
    /// already fired or been cancelled.
    pub fn cancel_timer(&mut self, id: TimerId) -> bool {
        self.core.cancel_timer(id)
    }

    /// A handle to this shard that other threads can use to run code on
    /// it, e.g. to deliver the result of work offloaded to a
    /// [`crate::pool::Pool`] back to the connection that asked for it.
    pub fn remote(&self) -> ShardRemote {
        ShardRemote::new(self.core.remote(), self.core.shard_index())
    }

    /// Runs `work` on a worker of `pool` (with that worker's state), then
    /// `then` back on this shard with its result: the way to do blocking or
    /// heavy work for a connection without stalling the shard. Capture the
    /// connection's id in `then`; if the connection closed meanwhile,
    /// `ctx.send` to it fails with [`SendError::Closed`] and the result goes
    /// nowhere. Fails if the pool's queue is full or the pool is stopped.
    pub fn offload<S: 'static, R: Send + 'static>(
        &mut self,
        pool: &crate::pool::Pool<S>,
        work: impl FnOnce(&mut S) -> R + Send + 'static,
        then: impl FnOnce(&mut Context<'_>, R) + Send + 'static,
    ) -> Result<(), crate::pool::PoolError> {
        let home = self.remote();
        pool.execute(move |state| {
            let result = work(state);
            if home.run(move |ctx| then(ctx, result)).is_err() {
                tracing::debug!(
                    shard = home.shard(),
                    "offloaded result dropped: server stopping"
                );
            }
        })
    }

    /// Opens an outbound connection from this shard to `remote`, optionally
    /// from the source address `local` (port 0 picks a free port). The
    /// outcome arrives as [`Handler::on_connect`] (the connection then
    /// behaves like an accepted one) or [`Handler::on_connect_failed`].
    pub fn connect(&mut self, remote: SocketAddr, local: Option<SocketAddr>) {
        self.core
            .connect(remote, local, crate::transport::ClientSetup::default());
    }

    /// Subscribes `conn` (a connection of this shard, e.g. the one whose
    /// message is being handled) to `topic`. Ok(false): it already was.
    /// Subscriptions end when the connection closes. Bounds:
    /// [`crate::MAX_TOPIC_LEN`], [`crate::MAX_TOPICS_PER_CONN`].
    pub fn subscribe(&mut self, conn: ConnId, topic: &[u8]) -> Result<bool, TopicError> {
        self.core.subscribe(conn, topic)
    }

    /// Ends `conn`'s subscription to `topic`; false if it had none.
    pub fn unsubscribe(&mut self, conn: ConnId, topic: &[u8]) -> bool {
        self.core.unsubscribe(conn, topic)
    }

    /// Sends `payload` to every subscriber of `topic` on every shard (one
    /// command per other shard, one shared copy of the payload) and, in a
    /// cluster, on every node. Returns the number of subscribers on this
    /// shard it was queued to (0 for a topic with a history: see
    /// [`Context::has_history`]; it reaches every subscriber through it).
    pub fn publish(&mut self, topic: &[u8], payload: &[u8]) -> Result<usize, SendError> {
        self.core.publish(topic, payload)
    }

    /// Sends `payload` to a connection of any node of the cluster (this
    /// node's own connections included), on behalf of `from`: if the
    /// connection is found closed on its node, [`Handler::on_undeliverable`]
    /// hears of it for `from`. Fails at once with
    /// [`SendError::Unreachable`] if the node is not heard from.
    pub fn send_to(
        &mut self,
        from: Option<ConnId>,
        to: &ClusterConnId,
        payload: &[u8],
    ) -> Result<(), SendError> {
        self.core.send_to(from, to, payload)
    }

    /// Runs `then` on this shard once the other nodes' publishes to every
    /// topic subscribed on this node so far will reach it: the cluster
    /// link has registered its interest with the bus (one round trip).
    /// Runs at once outside a cluster, and as soon as possible while the
    /// link is down (publishes are then lost anyway: at most once). Use it
    /// to confirm a subscription to a client only when it is in effect
    /// cluster-wide.
    pub fn after_cluster_interest(&mut self, then: impl FnOnce(&mut Context<'_>) + Send + 'static) {
        if self.core.cluster().is_none() {
            return then(self);
        }
        let home = self.remote();
        self.core.after_interest(Box::new(move || {
            if home.run(then).is_err() {
                tracing::debug!("subscription confirmation dropped: shard queue full or stopping");
            }
        }));
    }

    /// Whether publishes to `topic` are kept in the cluster's topic history
    /// (`cluster::HistoryConfig`, feature `cluster`): they then reach
    /// subscribers, on this node too, through the history, each message
    /// framed with its position by `HistoryConfig::encode` (so publish the
    /// bare data, not a client frame).
    pub fn has_history(&self, topic: &[u8]) -> bool {
        self.core
            .cluster()
            .is_some_and(|link| link.history_topic(topic))
    }

    /// Subscribes `conn` to `topic` after delivering what it missed since
    /// `since` (a position a message of the topic came with): the messages
    /// after it still in the history, in order, then live messages with no
    /// gap and no duplicate; `then` runs on this shard once the
    /// subscription is live, with how it began ([`crate::cluster::Recovery`])
    /// and the position it stands at. `since: None` subscribes live and
    /// tells the current position. A topic without a history is subscribed
    /// at once ([`crate::cluster::Recovery::NoHistory`]).
    pub fn subscribe_since(
        &mut self,
        conn: ConnId,
        topic: &[u8],
        since: Option<Position>,
        then: impl FnOnce(&mut Context<'_>, Result<Resumed, TopicError>) + Send + 'static,
    ) {
        let link = self.core.cluster();
        match link {
            Some(link)
                if link.history_topic(topic)
                    && !topic.is_empty()
                    && topic.len() <= crate::MAX_TOPIC_LEN =>
            {
                link.recover(
                    conn,
                    bytes::Bytes::copy_from_slice(topic),
                    since,
                    Box::new(then),
                );
            }
            _ => {
                let subscribed = self.subscribe(conn, topic);
                let resumed = Resumed {
                    recovery: Recovery::NoHistory,
                    position: Position::default(),
                };
                then(self, subscribed.map(|_| resumed));
            }
        }
    }

    /// The cluster-wide id of `conn` (None when the server is not part of
    /// a cluster).
    pub fn cluster_id(&self, conn: ConnId) -> Option<ClusterConnId> {
        Some(ClusterConnId::new(self.core.remote().node()?, conn))
    }

    /// Like [`Context::connect`], over TLS: `on_connect` comes once the
    /// handshake is complete; a failed handshake (untrusted certificate,
    /// timeout...) arrives as `on_connect_failed` with the TLS error.
    ///
    /// Available with the crate feature `tls`.
    #[cfg(feature = "tls")]
    pub fn connect_tls(
        &mut self,
        remote: SocketAddr,
        local: Option<SocketAddr>,
        connector: crate::tls::TlsConnector,
    ) {
        self.core
            .connect(remote, local, crate::transport::ClientSetup::tls(connector));
    }
}

/// Callbacks run on a shard thread: one handler object per shard, built by
/// the factory given to [`crate::Server::start`] on that shard's thread, so it can
/// hold per-shard state with no locking (the explicit form of per-thread
/// state). Callbacks must not block: everything on the shard waits for them.
///
/// A panic in a callback stops that shard (its connections are abandoned,
/// not freed, since the kernel may still write into their buffers) and then
/// the whole server: the other shards flush and close their connections,
/// and [`crate::Server::failure`] says why. A half-alive server, whose dead
/// shard's clients would hang, is never left running.
pub trait Handler: 'static {
    /// State kept with each connection, created by `on_connect`, handed to
    /// every callback for that connection and given back in `on_close`.
    type ConnState: 'static;

    /// A connection opened (accepted, an outbound connect that succeeded,
    /// or a TLS handshake that completed); returns its state. `peer` is the
    /// remote address.
    fn on_connect(
        &mut self,
        ctx: &mut Context<'_>,
        conn: ConnId,
        peer: SocketAddr,
    ) -> Self::ConnState;

    /// A connection of a listener with a protocol that opens with a
    /// request (WebSocket: the HTTP upgrade) asks to open: `request` shows
    /// its method, path, query, headers and offered subprotocols. Accept
    /// (choosing a subprotocol) or refuse with an HTTP status, e.g. for
    /// authentication with a cookie or a query token. `on_connect` follows
    /// an acceptance with the same `conn` (state worth keeping from the
    /// request can be handed over through the handler). The default
    /// accepts, with no subprotocol.
    fn on_upgrade(
        &mut self,
        ctx: &mut Context<'_>,
        conn: ConnId,
        peer: SocketAddr,
        request: &dyn UpgradeInfo,
    ) -> UpgradeDecision {
        let _ = (ctx, conn, peer, request);
        UpgradeDecision::accept()
    }

    /// A whole message. `message` borrows the receive buffer: copy what
    /// must outlive the call. [`Context::message_kind`] tells text from
    /// binary (WebSocket).
    fn on_message(
        &mut self,
        ctx: &mut Context<'_>,
        conn: ConnId,
        state: &mut Self::ConnState,
        message: &[u8],
    );

    /// An outbound connection ([`crate::Server::connect`], [`Context::connect`])
    /// could not be made.
    fn on_connect_failed(
        &mut self,
        ctx: &mut Context<'_>,
        remote: SocketAddr,
        error: std::io::Error,
    ) {
        let _ = ctx;
        tracing::debug!(%remote, %error, "connect failed");
    }

    /// Called every [`crate::ServerConfig::tick`] on each shard.
    fn on_tick(&mut self, ctx: &mut Context<'_>) {
        let _ = ctx;
    }

    /// A timer armed with [`Context::set_timer`] is due.
    fn on_timer(&mut self, ctx: &mut Context<'_>, token: u64) {
        let _ = (ctx, token);
    }

    /// A message `from` sent with [`Context::send_to`] to a connection of
    /// another node was not delivered: `error` is [`SendError::Closed`]
    /// for a stale id. Called only while `from` is still open.
    fn on_undeliverable(
        &mut self,
        ctx: &mut Context<'_>,
        from: ConnId,
        to: ClusterConnId,
        error: SendError,
    ) {
        let _ = (ctx, from, to, error);
    }

    /// The connection is closed; its id is already stale.
    fn on_close(
        &mut self,
        ctx: &mut Context<'_>,
        conn: ConnId,
        state: Self::ConnState,
        reason: CloseReason,
    ) {
        let _ = (ctx, conn, state, reason);
    }
}
