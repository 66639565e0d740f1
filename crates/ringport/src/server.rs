//! The public server API: configuration, the handler API that runs on the
//! shard threads, the pull-style event API, and the handle used to send,
//! broadcast, close and stop from any thread.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::codec::{Codec, LengthDelimited};
use crate::conn_id::ConnId;
use crate::shard::{self, Command, ShardShared};
use crate::stats::Stats;
use crate::timer::TimerId;

/// What happens when a message is sent, from another thread or by
/// broadcast, to a connection whose send queue is at `send_queue_limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowConsumerPolicy {
    /// Close the connection with [`CloseReason::SlowConsumer`] (default):
    /// the other connections keep being served and memory stays bounded.
    Disconnect,
    /// Drop the message for that connection and count it in
    /// [`Stats::slow_consumers`]; the connection stays open.
    DropMessage,
}

/// Server settings. Every resource has a bound here.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address to listen on (each shard binds it with SO_REUSEPORT).
    pub addr: SocketAddr,
    /// Whether to listen at all. A server that does not listen is a client
    /// engine: it only makes outbound connections ([`Server::connect`]).
    pub listen: bool,
    /// Number of shard threads. Default: available cores.
    pub shards: usize,
    /// Connections open at once, over all shards. At the limit, accepting
    /// pauses (clients wait in the listen backlog) until one closes; a
    /// client accepted in the instant the limit is reached, before the
    /// shards withdraw their accepts, is closed at once (`Stats::rejected`).
    pub max_connections: usize,
    /// Size of each shard's connection table (its registered file table).
    /// Default: the process's open-files limit, which is the kernel's cap for
    /// one ring; direct descriptors do not use the process fd table, so N
    /// shards hold up to N times this many connections.
    pub connections_per_shard: Option<usize>,
    /// Receive buffers per shard (power of two) and their size in bytes.
    pub recv_buffers: u16,
    pub recv_buffer_size: usize,
    /// A connection whose queued outbound bytes reach this stops being read
    /// until the queue drains below half of it (its peer is then held back
    /// by TCP flow control).
    pub send_high_water: usize,
    /// Hard bound on a connection's queued outbound bytes. A send from a
    /// handler that finds the queue at the bound fails with
    /// [`SendError::QueueFull`]; other sends follow `slow_consumer`.
    /// Default: `send_high_water` plus the codec's maximum frame, so that
    /// echoing one whole message is never refused.
    pub send_queue_limit: Option<usize>,
    pub slow_consumer: SlowConsumerPolicy,
    /// Accepts kept posted per shard (the AcceptEx pre-posting depth).
    pub accepts_in_flight: usize,
    pub listen_backlog: i32,
    /// Commands (send/broadcast/close from other threads) queued per shard.
    pub command_queue: usize,
    /// Events buffered for the pull API before shards wait for the consumer.
    pub event_queue: usize,
    /// Time a closing connection gets to flush its queue before it is cut.
    pub close_timeout: Duration,
    /// Time `stop` gives connections to flush before cutting them.
    pub stop_timeout: Duration,
    /// Submission queue entries per ring.
    pub ring_entries: u32,
    /// Period of [`Handler::on_tick`] and of the shard's own housekeeping
    /// (flush deadlines, accept back-off, idle checks).
    pub tick: Duration,
    /// Close a connection that has sent nothing for this long, with
    /// [`CloseReason::IdleTimeout`]. Checked in steps of `tick`, so it fires
    /// between the timeout and the timeout plus about half of it.
    pub idle_timeout: Option<Duration>,
    /// Send an empty message (a zero-length frame; an empty line with the
    /// lines codec) to a connection that has been sent nothing for this
    /// long: it keeps NATs open and lets an idle timeout on the peer's side
    /// tell a quiet peer from a dead one.
    pub heartbeat: Option<Duration>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            addr: SocketAddr::from(([127, 0, 0, 1], 7000)),
            listen: true,
            shards: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_connections: 1_000_000,
            connections_per_shard: None,
            recv_buffers: 256,
            recv_buffer_size: 64 * 1024,
            send_high_water: 1024 * 1024,
            send_queue_limit: None,
            slow_consumer: SlowConsumerPolicy::Disconnect,
            accepts_in_flight: 64,
            listen_backlog: 4096,
            command_queue: 65_536,
            event_queue: 65_536,
            close_timeout: Duration::from_secs(5),
            stop_timeout: Duration::from_secs(5),
            ring_entries: 4096,
            tick: Duration::from_millis(100),
            idle_timeout: None,
            heartbeat: None,
        }
    }
}

impl ServerConfig {
    pub fn new(addr: SocketAddr) -> Self {
        ServerConfig {
            addr,
            ..Default::default()
        }
    }

    pub(crate) fn effective_send_queue_limit(&self, max_frame: usize) -> usize {
        self.send_queue_limit
            .unwrap_or(self.send_high_water.saturating_add(max_frame))
    }

    fn validate(&self) -> std::io::Result<()> {
        let bad = |why: &str| {
            Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                why.to_string(),
            ))
        };
        if self.shards == 0 || self.shards > u16::MAX as usize {
            return bad("shards must be between 1 and 65535");
        }
        if self.max_connections == 0 {
            return bad("max_connections must be at least 1");
        }
        if self.accepts_in_flight == 0 {
            return bad("accepts_in_flight must be at least 1");
        }
        if self.command_queue == 0 || self.event_queue == 0 {
            return bad("command_queue and event_queue must be at least 1");
        }
        if self.send_high_water == 0 {
            return bad("send_high_water must be at least 1");
        }
        if self.tick.is_zero() {
            return bad("tick must be longer than zero");
        }
        if self.idle_timeout.is_some_and(|t| t.is_zero())
            || self.heartbeat.is_some_and(|t| t.is_zero())
        {
            return bad("idle_timeout and heartbeat must be longer than zero");
        }
        Ok(())
    }
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
    /// Its send queue hit the bound under [`SlowConsumerPolicy::Disconnect`],
    /// or it did not drain its queue within `close_timeout` while closing.
    SlowConsumer,
    /// The server is stopping.
    ServerStopping,
    /// Nothing was received for `idle_timeout`.
    IdleTimeout,
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
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SendError::Closed => "connection is closed",
            SendError::QueueFull => "connection's send queue is full",
            SendError::Busy => "shard command queue is full",
            SendError::TooLarge => "message is larger than the maximum frame",
            SendError::Stopped => "server is stopped",
        })
    }
}

impl std::error::Error for SendError {}

/// What handler callbacks can do, without leaving the shard thread.
pub struct Context<'a> {
    pub(crate) core: &'a mut dyn shard::Outbound,
}

impl Context<'_> {
    /// Queues `payload` as one message to `conn` (copied; no allocation once
    /// the shard's send pool is warm). Connections on other shards are
    /// reached through their command queue.
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
        ShardRemote {
            shared: self.core.server().clone(),
            shard: self.core.shard_index(),
        }
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
        let _ = self.core.connect(remote, local);
    }
}

/// Callbacks run on a shard thread: one handler object per shard, built by
/// the factory given to [`Server::start`] on that shard's thread, so it can
/// hold per-shard state with no locking (the explicit form of per-thread
/// state). Callbacks must not block: everything on the shard waits for them.
///
/// A panic in a callback stops that shard: its connections are abandoned
/// (not freed, since the kernel may still write into their buffers) and the
/// other shards go on.
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

    /// An outbound connection ([`Server::connect`], [`Context::connect`])
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

    /// Called every [`ServerConfig::tick`] on each shard.
    fn on_tick(&mut self, ctx: &mut Context<'_>) {
        let _ = ctx;
    }

    /// A timer armed with [`Context::set_timer`] is due.
    fn on_timer(&mut self, ctx: &mut Context<'_>, token: u64) {
        let _ = (ctx, token);
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

/// Runs code on one shard from any thread. Cheap to clone.
#[derive(Clone)]
pub struct ShardRemote {
    shared: Arc<ServerShared>,
    shard: usize,
}

impl ShardRemote {
    /// Queues `f` to run on the shard's thread with a [`Context`] (in
    /// order with other commands to that shard). A connection id captured
    /// by `f` is still checked there: if the connection closed meanwhile,
    /// `ctx.send` to it returns `SendError::Closed`, so a late result never
    /// reaches the slot's next connection.
    pub fn run(&self, f: impl FnOnce(&mut Context<'_>) + Send + 'static) -> Result<(), SendError> {
        self.shared
            .command(&self.shared.shards[self.shard], Command::Run(Box::new(f)))
    }

    /// The shard this handle runs code on.
    pub fn shard(&self) -> usize {
        self.shard
    }
}

/// An event of the pull API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Connected { conn: ConnId, peer: SocketAddr },
    Message { conn: ConnId, bytes: Bytes },
    Closed { conn: ConnId, reason: CloseReason },
}

/// State shared by the server handle and all shards.
pub(crate) struct ServerShared {
    pub shards: Box<[ShardShared]>,
    pub stopping: AtomicBool,
    /// Connections open (or connecting) over all shards, checked against
    /// `max_connections`.
    pub admitted: AtomicUsize,
    pub config: ServerConfig,
    /// The codec's maximum frame: the bound for received and sent messages.
    pub max_frame: usize,
    /// Round-robin cursor for outbound connects.
    pub next_shard: AtomicUsize,
}

impl ServerShared {
    pub fn shard_of(&self, conn: ConnId) -> Result<&ShardShared, SendError> {
        self.shards.get(conn.shard()).ok_or(SendError::Closed)
    }

    /// Sends a command to a shard and wakes it.
    pub fn command(&self, shard: &ShardShared, cmd: Command) -> Result<(), SendError> {
        if self.stopping.load(Ordering::Acquire) {
            return Err(SendError::Stopped);
        }
        match shard.commands_tx.try_send(cmd) {
            Ok(()) => {
                shard.wake();
                Ok(())
            }
            Err(TrySendError::Full(_)) => Err(SendError::Busy),
            Err(TrySendError::Disconnected(_)) => Err(SendError::Stopped),
        }
    }

    pub fn check_live(&self, conn: ConnId) -> Result<&ShardShared, SendError> {
        let shard = self.shard_of(conn)?;
        if shard.live.is_live(conn.slot(), conn.generation()) {
            Ok(shard)
        } else {
            Err(SendError::Closed)
        }
    }
}

/// A running server. Methods may be called from any thread. Dropping it
/// stops it gracefully (as [`Server::stop`]).
pub struct Server {
    shared: Arc<ServerShared>,
    threads: Vec<JoinHandle<()>>,
    local_addr: SocketAddr,
    io_uring_mode: &'static str,
}

impl Server {
    /// Starts a server whose shards run `factory(shard_index)`'s handler.
    /// Fails (without leaving threads behind) if a shard cannot set up its
    /// ring, buffers or listener: the error says why.
    pub fn start<C, H, F>(config: ServerConfig, codec: C, factory: F) -> std::io::Result<Server>
    where
        C: Codec + Sync,
        H: Handler,
        F: Fn(usize) -> H + Send + Sync + 'static,
    {
        config.validate()?;
        crate::sys::uring::probe()?;
        let table = shard::table_size(&config)?;
        let addr = if config.listen {
            resolve_addr(config.addr)?
        } else {
            config.addr
        };
        let shards: Box<[ShardShared]> = (0..config.shards)
            .map(|_| ShardShared::new(table, config.command_queue))
            .collect::<std::io::Result<_>>()?;
        let shared = Arc::new(ServerShared {
            shards,
            stopping: AtomicBool::new(false),
            admitted: AtomicUsize::new(0),
            config: ServerConfig { addr, ..config },
            max_frame: codec.max_frame(),
            next_shard: AtomicUsize::new(0),
        });
        let factory = Arc::new(factory);
        let mut threads = Vec::new();
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(shared.config.shards);
        for index in 0..shared.config.shards {
            let for_shard = shared.clone();
            let factory = factory.clone();
            let codec = codec.clone();
            let ready_tx: Sender<std::io::Result<&'static str>> = ready_tx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("ringport-shard-{index}"))
                .spawn(move || shard::run(index, for_shard, codec, table, &*factory, ready_tx));
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    stop_threads(&shared, &mut threads);
                    return Err(e);
                }
            }
        }
        drop(ready_tx);
        let mut failure = None;
        let mut mode = "";
        for _ in 0..threads.len() {
            match ready_rx.recv() {
                Ok(Ok(m)) => mode = m,
                Ok(Err(e)) => failure = failure.or(Some(e)),
                Err(_) => failure = failure.or(Some(std::io::Error::other("a shard thread died"))),
            }
        }
        if let Some(e) = failure {
            stop_threads(&shared, &mut threads);
            return Err(e);
        }
        if shared.config.listen {
            tracing::info!(
                addr = %addr,
                shards = shared.config.shards,
                connections_per_shard = table,
                io_uring = mode,
                "ringport listening"
            );
        } else {
            tracing::debug!(
                shards = shared.config.shards,
                connections_per_shard = table,
                io_uring = mode,
                "ringport client engine started"
            );
        }
        Ok(Server {
            io_uring_mode: mode,
            local_addr: addr,
            shared,
            threads,
        })
    }

    /// Starts a server with the pull-style event API.
    pub fn start_events<C: Codec + Sync>(
        config: ServerConfig,
        codec: C,
    ) -> std::io::Result<EventServer> {
        let (tx, rx) = crossbeam_channel::bounded(config.event_queue);
        let stop_flag = Arc::new(AtomicBool::new(false));
        let flag = stop_flag.clone();
        let server = Server::start(config, codec, move |_| EventForwarder {
            events: tx.clone(),
            stopping: flag.clone(),
        })?;
        Ok(EventServer {
            server: Some(server),
            events: rx,
            stop_flag,
        })
    }

    /// The address the server listens on (with the port chosen by the
    /// kernel when the configured port was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn config(&self) -> &ServerConfig {
        &self.shared.config
    }

    /// The io_uring setup the kernel accepted for the shards' rings:
    /// `"single_issuer+defer_taskrun"` (6.1+), `"coop_taskrun"` or `"plain"`.
    pub fn io_uring_mode(&self) -> &'static str {
        self.io_uring_mode
    }

    /// Queues one message to `conn`. Fails at once with `Closed` if the id
    /// is stale; a connection that closes before the shard runs the command
    /// simply does not get it.
    pub fn send(&self, conn: ConnId, payload: impl Into<Bytes>) -> Result<(), SendError> {
        let payload = payload.into();
        if payload.len() > self.shared.max_frame {
            return Err(SendError::TooLarge);
        }
        let shard = self.shared.check_live(conn)?;
        self.shared.command(shard, Command::Send { conn, payload })
    }

    /// Queues one message to every open connection. Fails with `Busy` if a
    /// shard's command queue is full (the other shards still get it).
    pub fn broadcast(&self, payload: impl Into<Bytes>) -> Result<(), SendError> {
        let payload = payload.into();
        if payload.len() > self.shared.max_frame {
            return Err(SendError::TooLarge);
        }
        let mut result = Ok(());
        for shard in self.shared.shards.iter() {
            let cmd = Command::Broadcast {
                payload: payload.clone(),
            };
            if let Err(e) = self.shared.command(shard, cmd) {
                result = Err(e);
            }
        }
        result
    }

    /// Opens an outbound connection to `remote` (from `local` if given) on
    /// the next shard in turn. The outcome reaches that shard's handler as
    /// `on_connect` or `on_connect_failed` (with the event API: a
    /// `Connected` event, or nothing but a debug log on failure).
    pub fn connect(&self, remote: SocketAddr, local: Option<SocketAddr>) -> Result<(), SendError> {
        let n = self.shared.next_shard.fetch_add(1, Ordering::Relaxed) % self.shared.shards.len();
        self.shared
            .command(&self.shared.shards[n], Command::Connect { remote, local })
    }

    /// A handle to run code on shard `index` (see [`ShardRemote::run`]).
    pub fn remote(&self, index: usize) -> Option<ShardRemote> {
        (index < self.shared.shards.len()).then(|| ShardRemote {
            shared: self.shared.clone(),
            shard: index,
        })
    }

    /// Closes `conn` after flushing its queue (within `close_timeout`).
    pub fn close(&self, conn: ConnId) -> Result<(), SendError> {
        let shard = self.shared.check_live(conn)?;
        self.shared.command(shard, Command::Close { conn })
    }

    /// Counters summed over all shards.
    pub fn stats(&self) -> Stats {
        let mut total = Stats::default();
        for shard in self.shared.shards.iter() {
            total += shard.counters.snapshot();
        }
        total
    }

    /// Per-shard counters.
    pub fn shard_stats(&self) -> Vec<Stats> {
        self.shared
            .shards
            .iter()
            .map(|s| s.counters.snapshot())
            .collect()
    }

    /// Stops accepting, flushes queued messages (within `stop_timeout`),
    /// closes every connection, joins the shard threads and releases every
    /// buffer and descriptor. Returns the final counters.
    pub fn stop(mut self) -> Stats {
        stop_threads(&self.shared, &mut self.threads);
        self.stats()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        stop_threads(&self.shared, &mut self.threads);
    }
}

fn stop_threads(shared: &ServerShared, threads: &mut Vec<JoinHandle<()>>) {
    shared.stopping.store(true, Ordering::Release);
    for shard in shared.shards.iter() {
        shard.wake();
    }
    for t in threads.drain(..) {
        if t.join().is_err() {
            tracing::error!("a shard thread panicked");
        }
    }
}

/// The most connections one shard can hold here: the open-files limit
/// (soft), which the kernel applies to one ring's registered file table.
/// Direct descriptors do not use the process fd table, so `n` shards hold up
/// to `n` times this.
pub fn max_connections_per_shard() -> std::io::Result<usize> {
    shard::table_size(&ServerConfig::default())
}

/// Checks that the address is free and resolves port 0 to a concrete port
/// that every shard's SO_REUSEPORT listener then binds. The probe binds
/// without SO_REUSEPORT, so a port already served by another process (with
/// or without SO_REUSEPORT) is reported instead of silently shared.
fn resolve_addr(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let probe = TcpListener::bind(addr)
        .map_err(|e| std::io::Error::new(e.kind(), format!("listening on {addr}: {e}")))?;
    probe.local_addr()
}

/// A server with the pull-style API: events are read with
/// [`EventServer::next_event`]; sends, broadcasts and closes go through the
/// [`Server`] it dereferences to.
///
/// Message events own a copy of the message. If the application stops
/// pulling, the event queue fills and the shards wait for it (their peers
/// are then held back by TCP flow control); nothing is dropped.
pub struct EventServer {
    /// Always `Some` until `stop` takes it.
    server: Option<Server>,
    events: Receiver<Event>,
    stop_flag: Arc<AtomicBool>,
}

impl EventServer {
    /// The next event, or `None` if none arrived within `timeout` or the
    /// server has stopped.
    pub fn next_event(&self, timeout: Duration) -> Option<Event> {
        self.events.recv_timeout(timeout).ok()
    }

    /// The next event if one is ready.
    pub fn try_next_event(&self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("server present until stop")
    }

    /// Stops the server (see [`Server::stop`]) and returns its final
    /// counters. Events not yet pulled are dropped.
    pub fn stop(mut self) -> Stats {
        self.stop_flag.store(true, Ordering::Release);
        let server = self.server.take().expect("server present until stop");
        server.stop()
    }
}

impl Drop for EventServer {
    fn drop(&mut self) {
        // Shards waiting for room in a full event queue give up once this
        // is set, so the server's own drop (which joins them) cannot hang.
        self.stop_flag.store(true, Ordering::Release);
    }
}

impl std::ops::Deref for EventServer {
    type Target = Server;
    fn deref(&self) -> &Server {
        self.server()
    }
}

struct EventForwarder {
    events: Sender<Event>,
    stopping: Arc<AtomicBool>,
}

impl EventForwarder {
    /// Waits for room in the event queue (backpressure to this shard's
    /// peers) unless the server is stopping.
    fn push(&self, mut event: Event) {
        loop {
            match self.events.send_timeout(event, Duration::from_millis(20)) {
                Ok(()) => return,
                Err(crossbeam_channel::SendTimeoutError::Timeout(e)) => {
                    if self.stopping.load(Ordering::Acquire) {
                        return;
                    }
                    event = e;
                }
                Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => return,
            }
        }
    }
}

impl Handler for EventForwarder {
    type ConnState = ();

    fn on_connect(&mut self, _: &mut Context<'_>, conn: ConnId, peer: SocketAddr) {
        self.push(Event::Connected { conn, peer });
    }

    fn on_message(&mut self, _: &mut Context<'_>, conn: ConnId, _: &mut (), message: &[u8]) {
        self.push(Event::Message {
            conn,
            bytes: Bytes::copy_from_slice(message),
        });
    }

    fn on_close(&mut self, _: &mut Context<'_>, conn: ConnId, _: (), reason: CloseReason) {
        self.push(Event::Closed { conn, reason });
    }
}

/// The default codec for servers and clients: ringport's wire format.
pub fn default_codec(max_frame: usize) -> LengthDelimited {
    LengthDelimited::new().max_frame_length(max_frame)
}
