//! The handler API: callbacks that run on the shard threads, the
//! [`Context`] they act through, and why connections close or sends fail.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::cluster::ClusterConnId;
use crate::conn_id::ConnId;
use crate::engine::topics::TopicError;
use crate::shared::{ServerShared, ShardRemote};
use crate::timer::TimerId;

/// The shard operations handler callbacks reach through [`Context`]
/// (implemented by the engine).
pub(crate) trait Outbound {
    fn send(&mut self, conn: ConnId, payload: &[u8]) -> Result<(), SendError>;
    fn send_bytes(&mut self, conn: ConnId, payload: Bytes) -> Result<(), SendError>;
    fn broadcast(&mut self, payload: &[u8]) -> Result<usize, SendError>;
    fn close(&mut self, conn: ConnId) -> Result<(), SendError>;
    fn shard_index(&self) -> usize;
    fn connection_count(&self) -> usize;
    fn queued_bytes(&self, conn: ConnId) -> usize;
    fn connect(&mut self, remote: SocketAddr, local: Option<SocketAddr>);
    #[cfg(feature = "tls")]
    fn connect_tls(
        &mut self,
        remote: SocketAddr,
        local: Option<SocketAddr>,
        connector: crate::tls::TlsConnector,
    );
    fn set_timer(&mut self, delay: Duration, token: u64) -> TimerId;
    fn cancel_timer(&mut self, id: TimerId) -> bool;
    fn server(&self) -> &Arc<ServerShared>;
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

/// Why a connection was closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer closed its side (after its last frame; our queued replies
    /// were flushed first).
    PeerClosed,
    /// The peer reset the connection, or it broke (errno).
    Reset(i32),
    /// The peer announced a frame over the maximum; nothing was allocated
    /// for it.
    FrameTooLarge { len: u64, max: usize },
    /// The byte stream could not be decoded.
    InvalidFrame(String),
    /// The application closed it.
    Local,
    /// Its send queue hit the bound under [`crate::SlowConsumerPolicy::Disconnect`],
    /// it did not drain its queue within `close_timeout` while closing, or
    /// input it sent while its reading was paused (it did not read its
    /// replies) went past `input_backlog_limit`.
    SlowConsumer,
    /// The server is stopping.
    ServerStopping,
    /// Nothing was received for `idle_timeout`.
    IdleTimeout,
    /// The peer closed its side in the middle of a frame: `have` bytes of
    /// it had arrived, `missing` more were announced (`None`: its header
    /// was not complete, or the codec cannot tell, e.g. a line without its
    /// end). Queued replies were flushed first.
    TruncatedFrame { have: u64, missing: Option<u64> },
    /// A frame did not complete within `frame_timeout` (plus the time
    /// `min_receive_rate` allows for its size) of its first byte: a slow
    /// or stalled sender.
    FrameTimeout { have: u64, missing: Option<u64> },
    /// The shard held more bytes of partial frames (over all its
    /// connections) than `reassembly_limit`, and this connection's input
    /// grew past it: many peers announcing large frames cannot exhaust
    /// memory.
    Overloaded,
    /// TLS failed: the handshake (a certificate not trusted, no common
    /// protocol version, plaintext or garbage sent to a TLS port), a corrupt
    /// record, or a handshake not complete within its timeout.
    Tls(String),
}

/// Why a send, broadcast or close was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The connection is closed (or closing): the id is stale. The message
    /// never reaches another connection that reuses the slot.
    Closed,
    /// The connection's send queue is at its bound.
    QueueFull,
    /// The owning shard's command queue is full; retry later.
    Busy,
    /// The payload is larger than the maximum frame size.
    TooLarge,
    /// The server is stopping or stopped.
    Stopped,
    /// The connection's node cannot be reached: no cluster is configured,
    /// the link to the bus is down, or the node is not (or no longer)
    /// heard from.
    Unreachable,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SendError::Closed => "connection is closed",
            SendError::QueueFull => "connection's send queue is full",
            SendError::Busy => "shard command queue is full",
            SendError::TooLarge => "message is larger than the maximum frame",
            SendError::Stopped => "server is stopped",
            SendError::Unreachable => "the connection's node is unreachable",
        })
    }
}

impl std::error::Error for SendError {}

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
        ShardRemote::new(self.core.server().clone(), self.core.shard_index())
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
        self.core.connect(remote, local);
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
        let Some(link) = self.core.server().cluster.get() else {
            return then(self);
        };
        let home = self.remote();
        link.when_interest_applied(Box::new(move || {
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
            .server()
            .cluster
            .get()
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
        since: Option<crate::cluster::Position>,
        then: impl FnOnce(&mut Context<'_>, Result<crate::cluster::Resumed, TopicError>)
        + Send
        + 'static,
    ) {
        use crate::cluster::{Position, Recovery, Resumed};
        let link = self.core.server().cluster.get();
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
        let link = self.core.server().cluster.get()?;
        Some(ClusterConnId::new(link.node().clone(), conn))
    }

    /// Like [`Context::connect`], over TLS: `on_connect` comes once the
    /// handshake is complete; a failed handshake (untrusted certificate,
    /// timeout...) arrives as `on_connect_failed` with the TLS error.
    #[cfg(feature = "tls")]
    pub fn connect_tls(
        &mut self,
        remote: SocketAddr,
        local: Option<SocketAddr>,
        connector: crate::tls::TlsConnector,
    ) {
        self.core.connect_tls(remote, local, connector);
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

    fn on_connect(
        &mut self,
        ctx: &mut Context<'_>,
        conn: ConnId,
        peer: SocketAddr,
    ) -> Self::ConnState;

    /// A whole message. `message` borrows the receive buffer: copy what
    /// must outlive the call.
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
