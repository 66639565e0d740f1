//! The [`Server`] handle: start (choosing the backend), send, broadcast,
//! close and stop from any thread, and read the counters.

use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::Sender;

use crate::codec::{Codec, LengthDelimited};
use crate::config::{Backend, ServerConfig, table_size};
use crate::conn_id::ConnId;
use crate::error::SendError;
use crate::handler::Handler;
use crate::handler::ShardRemote;
use crate::router;
use crate::shard;
use crate::shared::{Command, ServerShared, ShardShared};
use crate::stats::Stats;

/// What [`Server::connections`] returns.
#[derive(Debug, Clone)]
pub struct ConnectionsSnapshot {
    /// Every shard answered.
    pub complete: bool,
    /// Most queued bytes first.
    pub connections: Vec<crate::stats::ConnectionInfo>,
}

/// A running server. Methods may be called from any thread. Dropping it
/// stops it gracefully (as [`Server::stop`]).
pub struct Server {
    shared: Arc<ServerShared>,
    threads: Vec<JoinHandle<()>>,
    local_addr: SocketAddr,
    backend: Backend,
    driver: &'static str,
    capacity: usize,
}

impl Server {
    /// Starts a server whose shards run `factory(shard_index)`'s handler.
    /// Fails (without leaving threads behind) if a shard cannot set up its
    /// ring, buffers or listener: the error says why.
    pub fn start<C, H, F>(config: ServerConfig, codec: C, factory: F) -> io::Result<Server>
    where
        C: Codec + Sync,
        H: Handler,
        F: Fn(usize) -> H + Send + Sync + 'static,
    {
        config.validate()?;
        let backend = choose_backend(config.backend)?;
        let tables = table_size(&config, backend)?;
        let (table, per_ring) = (tables.per_shard, tables.per_ring);
        let bound = tables.bound;
        let addr = if config.listen {
            resolve_addr(config.addr, config.bind_retry)?
        } else {
            config.addr
        };
        #[cfg(feature = "websocket")]
        let mut config = config;
        #[cfg(feature = "websocket")]
        if let Some(ws) = &mut config.websocket {
            ws.addr = resolve_addr(ws.addr, config.bind_retry)?;
        }
        let shards: Box<[ShardShared]> = (0..config.shards)
            .map(|_| ShardShared::new(table, config.command_queue))
            .collect::<io::Result<_>>()?;
        let shared = Arc::new(ServerShared {
            shards,
            stopping: AtomicBool::new(false),
            admitted: AtomicUsize::new(0),
            config: ServerConfig { addr, ..config },
            max_frame: codec.max_frame(),
            next_shard: AtomicUsize::new(0),
            failure: std::sync::Mutex::new(None),
            cluster: std::sync::OnceLock::new(),
        });
        #[cfg(feature = "cluster")]
        if let Some(cluster) = &shared.config.cluster {
            let link = crate::cluster::start(cluster.clone(), Arc::downgrade(&shared))?;
            let _ = shared.cluster.set(Box::new(link));
        }
        let factory = Arc::new(factory);
        let mut threads = Vec::new();
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(shared.config.shards);
        for index in 0..shared.config.shards {
            let for_shard = shared.clone();
            let factory = factory.clone();
            let codec = codec.clone();
            let ready_tx: Sender<io::Result<&'static str>> = ready_tx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("ringport-shard-{index}"))
                .spawn(move || {
                    let setup = shard::Setup {
                        index,
                        shared: for_shard,
                        table,
                        per_ring,
                        backend,
                    };
                    shard::run(setup, codec, &*factory, ready_tx)
                });
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
        let mut driver = "";
        for _ in 0..threads.len() {
            match ready_rx.recv() {
                Ok(Ok(d)) => driver = d,
                Ok(Err(e)) => failure = failure.or(Some(e)),
                Err(_) => failure = failure.or(Some(io::Error::other("a shard thread died"))),
            }
        }
        if let Some(e) = failure {
            stop_threads(&shared, &mut threads);
            return Err(e);
        }
        let capacity = table.saturating_mul(shared.config.shards);
        if shared.config.listen {
            tracing::info!(
                addr = %addr,
                backend = driver,
                shards = shared.config.shards,
                connections_per_shard = table,
                capacity = capacity.min(shared.config.max_connections),
                "ringport listening ({bound})"
            );
        } else {
            tracing::debug!(
                backend = driver,
                shards = shared.config.shards,
                connections_per_shard = table,
                "ringport client engine started ({bound})"
            );
        }
        Ok(Server {
            backend,
            driver,
            capacity,
            local_addr: addr,
            shared,
            threads,
        })
    }

    #[cfg(feature = "tokio")]
    pub(crate) fn shared(&self) -> &Arc<ServerShared> {
        &self.shared
    }

    /// The address the server listens on (with the port chosen by the
    /// kernel when the configured port was 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address of the WebSocket listener, if there is one (with the
    /// port chosen by the kernel when the configured port was 0).
    #[cfg(feature = "websocket")]
    pub fn websocket_addr(&self) -> Option<SocketAddr> {
        self.shared.config.websocket.as_ref().map(|ws| ws.addr)
    }

    /// The configuration the server was started with (after defaults were
    /// filled in).
    pub fn config(&self) -> &ServerConfig {
        &self.shared.config
    }

    /// The backend the shards run on (never [`Backend::Auto`]).
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The backend with its mode, as logged at start: e.g.
    /// `"io_uring (single_issuer+defer_taskrun)"` or `"epoll"`.
    pub fn driver(&self) -> &'static str {
        self.driver
    }

    /// The io_uring setup the kernel accepted for the shards' rings:
    /// `"single_issuer+defer_taskrun"` (6.1+), `"coop_taskrun"` or
    /// `"plain"`; `""` on the epoll backend.
    pub fn io_uring_mode(&self) -> &'static str {
        self.driver
            .strip_prefix("io_uring (")
            .and_then(|m| m.strip_suffix(')'))
            .unwrap_or("")
    }

    /// Why the server stopped by itself, if it did: a shard failed (a
    /// handler panicked, or the kernel refused the shard's work), and then
    /// every shard stops, flushing what it can. The application should
    /// check this (or [`Server::is_running`]) and exit with an error.
    pub fn failure(&self) -> Option<String> {
        self.shared
            .failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// False once the server is stopping, by [`Server::stop`] or because
    /// a shard failed.
    pub fn is_running(&self) -> bool {
        !self.shared.stopping.load(Ordering::Acquire)
    }

    /// Connections the shards' tables can hold together (before
    /// `max_connections` applies).
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Queues one message to `conn`. Fails at once with `Closed` if the id
    /// is stale, with `Busy` if its shard's command queue is full; a
    /// connection that closes before the shard runs the command simply does
    /// not get it. (Every send path and its policy at a full queue:
    /// [`crate::handler`], "Send paths and full queues".)
    pub fn send(&self, conn: ConnId, payload: impl Into<Bytes>) -> Result<(), SendError> {
        router::thread::send(&self.shared, conn, payload.into())
    }

    /// Queues one message to every open connection of every shard and, in
    /// a cluster, of every other node. All or nothing on this node: fails
    /// with `Busy`, having reached no shard, if a shard's command queue is
    /// full (a retry cannot duplicate it).
    pub fn broadcast(&self, payload: impl Into<Bytes>) -> Result<(), SendError> {
        router::thread::broadcast(&self.shared, &payload.into())
    }

    /// Queues `payload` to every subscriber of `topic` on every shard (one
    /// command per shard; the payload is shared, not copied per
    /// subscriber) and, in a cluster, on every node. All or nothing on this
    /// node, as [`Server::broadcast`].
    pub fn publish(
        &self,
        topic: impl Into<Bytes>,
        payload: impl Into<Bytes>,
    ) -> Result<(), SendError> {
        router::thread::publish(&self.shared, &topic.into(), &payload.into())
    }

    /// Queues one message to a connection of any node of the cluster
    /// (see [`crate::Context::send_to`]; no sender is told of a stale id).
    pub fn send_to(
        &self,
        to: &crate::ClusterConnId,
        payload: impl Into<Bytes>,
    ) -> Result<(), SendError> {
        router::thread::send_to(&self.shared, to, payload.into())
    }

    /// The cluster link's counters (None when not part of a cluster).
    pub fn cluster_stats(&self) -> Option<crate::ClusterStats> {
        self.shared.cluster.get().map(|l| l.stats())
    }

    /// This node's name, when the server is part of a cluster.
    pub fn node(&self) -> Option<&str> {
        self.shared.cluster.get().map(|l| &**l.node())
    }

    /// Opens an outbound connection to `remote` (from `local` if given) on
    /// the next shard in turn. The outcome reaches that shard's handler as
    /// `on_connect` or `on_connect_failed` (with the event API: a
    /// `Connected` event, or nothing but a debug log on failure).
    pub fn connect(&self, remote: SocketAddr, local: Option<SocketAddr>) -> Result<(), SendError> {
        let n = self.shared.next_shard.fetch_add(1, Ordering::Relaxed) % self.shared.shards.len();
        router::thread::command(&self.shared, n, Command::Connect { remote, local })
    }

    /// Opens an outbound TLS connection (see [`Server::connect`] and
    /// [`Context::connect_tls`](crate::Context::connect_tls)).
    ///
    /// Available with the crate feature `tls`.
    #[cfg(feature = "tls")]
    pub fn connect_tls(
        &self,
        remote: SocketAddr,
        local: Option<SocketAddr>,
        connector: crate::tls::TlsConnector,
    ) -> Result<(), SendError> {
        let n = self.shared.next_shard.fetch_add(1, Ordering::Relaxed) % self.shared.shards.len();
        let run = move |ctx: &mut crate::Context<'_>| ctx.connect_tls(remote, local, connector);
        router::thread::command(&self.shared, n, Command::Run(Box::new(run)))
    }

    /// A handle to run code on shard `index` (see [`ShardRemote::run`]).
    pub fn remote(&self, index: usize) -> Option<ShardRemote> {
        (index < self.shared.shards.len()).then(|| ShardRemote::new(self.shared.clone(), index))
    }

    /// Closes `conn` after flushing its queue (within `close_timeout`).
    pub fn close(&self, conn: ConnId) -> Result<(), SendError> {
        router::thread::close(&self.shared, conn)
    }

    /// A snapshot of every open connection (peer, shard, age, bytes each
    /// way, bytes queued), most queued first. Each shard answers between
    /// two loop turns; a shard that does not answer within `timeout` (busy,
    /// or its command queue full) is left out, and `complete` is false.
    pub fn connections(&self, timeout: Duration) -> ConnectionsSnapshot {
        let (tx, rx) = crossbeam_channel::bounded(self.shared.shards.len());
        let mut asked = 0;
        for index in 0..self.shared.shards.len() {
            let tx = tx.clone();
            let run = Command::Run(Box::new(move |ctx| {
                let mut infos = Vec::with_capacity(ctx.connections());
                ctx.connection_infos(&mut infos);
                let _ = tx.send(infos);
            }));
            if router::thread::command(&self.shared, index, run).is_ok() {
                asked += 1;
            }
        }
        drop(tx);
        let deadline = Instant::now() + timeout;
        let mut connections = Vec::new();
        let mut answered = 0;
        while answered < asked {
            match rx.recv_deadline(deadline) {
                Ok(infos) => {
                    connections.extend(infos);
                    answered += 1;
                }
                Err(_) => break,
            }
        }
        connections.sort_by(|a, b| b.queued.cmp(&a.queued).then(a.conn.cmp(&b.conn)));
        ConnectionsSnapshot {
            complete: answered == self.shared.shards.len(),
            connections,
        }
    }

    /// Counters summed over all shards.
    pub fn stats(&self) -> Stats {
        let mut total = Stats::default();
        for shard in self.shared.shards.iter() {
            total += shard.counters.snapshot();
        }
        total
    }

    /// How long the shards' loop turns took, over all shards since start.
    pub fn turn_durations(&self) -> crate::stats::TurnDurations {
        let mut total = crate::stats::TurnDurations::default();
        for shard in self.shared.shards.iter() {
            total += shard.turns.snapshot();
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
    if let Some(link) = shared.cluster.get() {
        link.stop();
    }
    for shard in shared.shards.iter() {
        shard.wake();
    }
    for t in threads.drain(..) {
        if t.join().is_err() {
            tracing::error!("a shard thread panicked");
        }
    }
    // Commands no shard will run are dropped now (an async sender whose
    // command it was learns the server stopped), and async senders still
    // waiting for room find the server stopped.
    for shard in shared.shards.iter() {
        while shard.commands.try_recv().is_ok() {}
        shard.space.wake_all();
    }
}

/// The most connections one io_uring ring can hold here: the open-files
/// limit (soft), which the kernel applies to one ring's registered file
/// table. Direct descriptors do not use the process fd table, so a shard
/// holds many times this on several rings (see
/// [`ServerConfig::connections_per_ring`]).
pub fn max_connections_per_ring() -> io::Result<usize> {
    table_size(&ServerConfig::default(), Backend::IoUring).map(|t| t.per_ring)
}

/// Resolves the configured backend: an explicit choice is checked (io_uring
/// must pass its probe), `Auto` takes `RINGPORT_BACKEND` if set, else
/// io_uring if the probe passes, else epoll with a log line saying why.
fn choose_backend(choice: Backend) -> io::Result<Backend> {
    let choice = match choice {
        Backend::Auto => match std::env::var("RINGPORT_BACKEND") {
            Ok(v) if !v.trim().is_empty() => v.parse::<Backend>().map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("RINGPORT_BACKEND: {e}"),
                )
            })?,
            _ => Backend::Auto,
        },
        explicit => explicit,
    };
    match choice {
        Backend::Epoll => Ok(Backend::Epoll),
        Backend::IoUring => {
            crate::sys::uring::probe().map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("the io_uring backend cannot be used here: {e}"),
                )
            })?;
            Ok(Backend::IoUring)
        }
        Backend::Auto => match crate::sys::uring::probe() {
            Ok(()) => Ok(Backend::IoUring),
            Err(e) => {
                tracing::info!(reason = %e, "io_uring unavailable; using the epoll backend");
                Ok(Backend::Epoll)
            }
        },
    }
}

/// Checks that the address is free and resolves port 0 to a concrete port
/// that every shard's SO_REUSEPORT listener then binds. The probe binds
/// without SO_REUSEPORT, so a port already served by another process (with
/// or without SO_REUSEPORT) is reported instead of silently shared.
///
/// "Address in use" is retried for up to `retry`: a server killed a moment
/// ago (SIGKILL) still holds its port while the kernel tears its rings
/// down, for a few milliseconds; a restart must not fail on that.
fn resolve_addr(addr: SocketAddr, retry: Duration) -> io::Result<SocketAddr> {
    let deadline = Instant::now() + retry;
    let mut logged = false;
    loop {
        match TcpListener::bind(addr) {
            Ok(probe) => return probe.local_addr(),
            Err(e) if e.kind() == io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                if !logged {
                    tracing::warn!(%addr, "address in use; retrying for up to {retry:?}");
                    logged = true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("listening on {addr}: {e}"),
                ));
            }
        }
    }
}

/// The default codec for servers and clients: ringport's wire format.
pub fn default_codec(max_frame: usize) -> LengthDelimited {
    LengthDelimited::new().max_frame_length(max_frame)
}
