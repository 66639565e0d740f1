//! The cluster link over NATS: a thread of its own runs the NATS client
//! (async-nats) on a private current-thread tokio runtime, so shards never
//! wait on the network; they hand it messages through a bounded queue.
//!
//! Subjects, under [`ClusterConfig::subject_prefix`] (`P`):
//! - `P.bcast`: a broadcast; the body is the payload.
//! - `P.pub`: a topic publish; body: topic length (u16, big-endian), topic,
//!   payload. Every node receives every publish and fans it out to its own
//!   subscribers (no per-topic NATS interest is kept).
//! - `P.node.NAME`: addressed to node NAME: a send to one of its
//!   connections, or the answer that such a send found a stale id.
//! - `P.hello`: every node's heartbeat (its name), for liveness.
//!
//! The client connects with `no_echo`: a node never gets its own
//! broadcasts and publishes back (it has delivered them locally already).

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_nats::{ConnectOptions, Event};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::sync::{Notify, mpsc};

use super::Inbound;
use super::{ClusterConnId, ClusterLink, ClusterStats, valid_node_name};
use crate::conn_id::ConnId;
use crate::error::SendError;

/// How a node joins a cluster.
///
/// Available with the crate feature `cluster`.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The NATS server, e.g. `nats://127.0.0.1:4222`.
    pub url: String,
    /// This node's name, unique in the cluster: 1 to 64 of
    /// `A-Z a-z 0-9 _ -`.
    pub node: String,
    /// First token of every subject (clusters sharing one NATS server use
    /// different prefixes). Default `ringport`.
    pub subject_prefix: String,
    /// Messages for other nodes queued at most; past it (or while the link
    /// is down) they are dropped and counted. Default 65,536.
    pub buffer: usize,
    /// How often this node announces itself. Default 500 ms.
    pub heartbeat: Duration,
    /// A node not heard from for this long is down. Default 3 s.
    pub node_timeout: Duration,
    /// How long `Server::start` waits for the first connection to NATS
    /// (it then goes on, reconnecting in the background). Default 2 s.
    pub connect_wait: Duration,
}

impl ClusterConfig {
    /// Node `node` on the NATS server at `url`, with default settings.
    pub fn new(url: impl Into<String>, node: impl Into<String>) -> Self {
        ClusterConfig {
            url: url.into(),
            node: node.into(),
            subject_prefix: "ringport".into(),
            buffer: 65_536,
            heartbeat: Duration::from_millis(500),
            node_timeout: Duration::from_secs(3),
            connect_wait: Duration::from_secs(2),
        }
    }
}

/// A message for the other nodes, on its way to the NATS thread.
enum Out {
    Broadcast(Bytes),
    Publish(Bytes, Bytes),
    Send {
        from: Option<ConnId>,
        to: ClusterConnId,
        payload: Bytes,
    },
}

#[derive(Default)]
struct Counters {
    connected: AtomicBool,
    sent: AtomicU64,
    received: AtomicU64,
    dropped_out: AtomicU64,
    dropped_in: AtomicU64,
    undeliverable: AtomicU64,
    unreachable: AtomicU64,
}

fn add(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Other nodes and when each was last heard from.
type Peers = RwLock<HashMap<Arc<str>, Instant>>;

pub(crate) struct Link {
    node: Arc<str>,
    tx: mpsc::Sender<Out>,
    counters: Arc<Counters>,
    peers: Arc<Peers>,
    node_timeout: Duration,
    stop: Arc<Notify>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Link {
    fn enqueue(&self, out: Out) {
        if !self.counters.connected.load(Ordering::Acquire) || self.tx.try_send(out).is_err() {
            add(&self.counters.dropped_out);
        }
    }
}

impl ClusterLink for Link {
    fn node(&self) -> &Arc<str> {
        &self.node
    }

    fn broadcast(&self, payload: &Bytes) {
        self.enqueue(Out::Broadcast(payload.clone()));
    }

    fn publish(&self, topic: &Bytes, payload: &Bytes) {
        self.enqueue(Out::Publish(topic.clone(), payload.clone()));
    }

    fn send(
        &self,
        from: Option<ConnId>,
        to: &ClusterConnId,
        payload: Bytes,
    ) -> Result<(), SendError> {
        let alive = self
            .peers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(to.node())
            .is_some_and(|heard| heard.elapsed() < self.node_timeout);
        if !alive || !self.counters.connected.load(Ordering::Acquire) {
            add(&self.counters.unreachable);
            return Err(SendError::Unreachable);
        }
        let out = Out::Send {
            from,
            to: to.clone(),
            payload,
        };
        self.tx.try_send(out).map_err(|_| {
            add(&self.counters.dropped_out);
            SendError::Busy
        })
    }

    fn stats(&self) -> ClusterStats {
        let c = &self.counters;
        let now = Instant::now();
        let peers = self.peers.read().unwrap_or_else(|e| e.into_inner());
        ClusterStats {
            connected: c.connected.load(Ordering::Acquire),
            nodes_up: peers
                .values()
                .filter(|t| now.duration_since(**t) < self.node_timeout)
                .count(),
            sent: c.sent.load(Ordering::Relaxed),
            received: c.received.load(Ordering::Relaxed),
            dropped_out: c.dropped_out.load(Ordering::Relaxed),
            dropped_in: c.dropped_in.load(Ordering::Relaxed),
            undeliverable: c.undeliverable.load(Ordering::Relaxed),
            unreachable: c.unreachable.load(Ordering::Relaxed),
        }
    }

    fn stop(&self) {
        self.stop.notify_one();
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = thread
            && t.join().is_err()
        {
            tracing::error!("the cluster thread panicked");
        }
    }
}

/// Starts the link's thread; waits up to `connect_wait` for NATS.
pub(crate) fn start(config: ClusterConfig, shared: Weak<dyn Inbound>) -> io::Result<Link> {
    if !valid_node_name(&config.node) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "cluster node name '{}' must be 1 to 64 of A-Z a-z 0-9 _ -",
                config.node
            ),
        ));
    }
    if config.buffer == 0 || config.heartbeat.is_zero() || config.node_timeout <= config.heartbeat {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "cluster: buffer must be > 0 and node_timeout longer than heartbeat",
        ));
    }
    let (tx, rx) = mpsc::channel(config.buffer);
    let counters = Arc::new(Counters::default());
    let peers = Arc::new(Peers::default());
    let stop = Arc::new(Notify::new());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let node: Arc<str> = config.node.as_str().into();
    let wait = config.connect_wait;
    let node_timeout = config.node_timeout;
    let url = config.url.clone();
    let runner = Runner {
        config,
        shared,
        counters: counters.clone(),
        peers: peers.clone(),
        node: node.clone(),
    };
    let stop_rx = stop.clone();
    let thread = std::thread::Builder::new()
        .name("ringport-cluster".into())
        .spawn(move || runner.run(rx, stop_rx, ready_tx))?;
    match ready_rx.recv_timeout(wait) {
        Ok(Ok(())) => tracing::info!(%node, %url, "cluster: joined over NATS"),
        Ok(Err(e)) => {
            let _ = thread.join();
            return Err(io::Error::other(format!("cluster: {e}")));
        }
        Err(_) => tracing::warn!(
            %node, %url,
            "cluster: NATS not reachable yet; serving locally, cross-node messages are dropped \
             (counted) until it is"
        ),
    }
    Ok(Link {
        node,
        tx,
        counters,
        peers,
        node_timeout,
        stop,
        thread: Mutex::new(Some(thread)),
    })
}

/// The NATS thread's state.
struct Runner {
    config: ClusterConfig,
    shared: Weak<dyn Inbound>,
    counters: Arc<Counters>,
    peers: Arc<Peers>,
    node: Arc<str>,
}

/// Most messages taken from the queue per wake-up (published back to back;
/// the client writes them in one go).
const BATCH: usize = 512;

const SEND: u8 = 1;
const STALE: u8 = 2;

impl Runner {
    fn run(
        self,
        rx: mpsc::Receiver<Out>,
        stop: Arc<Notify>,
        ready: std::sync::mpsc::Sender<Result<(), String>>,
    ) {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(r) => r,
            Err(e) => {
                let _ = ready.send(Err(format!("tokio runtime: {e}")));
                return;
            }
        };
        runtime.block_on(self.main(rx, stop, ready));
    }

    fn subject(&self, rest: &str) -> String {
        format!("{}.{rest}", self.config.subject_prefix)
    }

    async fn main(
        self,
        mut rx: mpsc::Receiver<Out>,
        stop: Arc<Notify>,
        ready: std::sync::mpsc::Sender<Result<(), String>>,
    ) {
        let events = self.counters.clone();
        let node = self.node.clone();
        let options = ConnectOptions::new()
            .no_echo()
            .name(format!("ringport-{}", self.node))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .connection_timeout(Duration::from_secs(2))
            .reconnect_delay_callback(|attempt| {
                Duration::from_millis((100u64 << attempt.min(5)).min(2000))
            })
            .event_callback(move |event| {
                let counters = events.clone();
                let node = node.clone();
                async move { on_event(&counters, &node, event) }
            });
        let client = match options.connect(self.config.url.as_str()).await {
            Ok(c) => c,
            Err(e) => {
                let _ = ready.send(Err(format!("connecting to {}: {e}", self.config.url)));
                return;
            }
        };
        let subscribed = async {
            let bcast = client.subscribe(self.subject("bcast")).await?;
            let publishes = client.subscribe(self.subject("pub")).await?;
            let direct = client
                .subscribe(self.subject(&format!("node.{}", self.node)))
                .await?;
            let hello = client.subscribe(self.subject("hello")).await?;
            Ok::<_, async_nats::SubscribeError>((bcast, publishes, direct, hello))
        };
        let (mut bcast, mut publishes, mut direct, mut hello) = match subscribed.await {
            Ok(s) => s,
            Err(e) => {
                let _ = ready.send(Err(format!("subscribing: {e}")));
                return;
            }
        };
        // The subscriptions are registered once the server answers a
        // flush; only then is this node ready (a test or a peer may send
        // at once).
        let hello_subject = self.subject("hello");
        let _ = client
            .publish(hello_subject.clone(), Bytes::from(self.node.to_string()))
            .await;
        if client.flush().await.is_ok() {
            self.counters.connected.store(true, Ordering::Release);
            let _ = ready.send(Ok(()));
        }
        let mut batch = Vec::with_capacity(BATCH);
        let mut tick = tokio::time::interval(self.config.heartbeat);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut down: HashMap<Arc<str>, ()> = HashMap::new();
        let mut dropped_logged = 0;
        loop {
            tokio::select! {
                _ = stop.notified() => break,
                n = rx.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        break;
                    }
                    for out in batch.drain(..) {
                        self.publish_out(&client, out).await;
                    }
                }
                Some(m) = bcast.next() => self.inbound_broadcast(m.payload),
                Some(m) = publishes.next() => self.inbound_publish(m.payload),
                Some(m) = direct.next() => self.inbound_direct(&client, m.payload).await,
                Some(m) = hello.next() => self.heard(m.payload, &mut down),
                _ = tick.tick() => {
                    if self.counters.connected.load(Ordering::Acquire) {
                        let _ = client
                            .publish(hello_subject.clone(), Bytes::from(self.node.to_string()))
                            .await;
                    }
                    self.sweep_peers(&mut down);
                    let dropped = self.counters.dropped_out.load(Ordering::Relaxed);
                    if dropped > dropped_logged {
                        tracing::warn!(
                            node = %self.node,
                            lost = dropped - dropped_logged,
                            total = dropped,
                            "cluster: cross-node messages dropped (NATS link down or queue full)"
                        );
                        dropped_logged = dropped;
                    }
                }
            }
        }
        // Hand over what was queued before the stop, within a bound.
        let _ = tokio::time::timeout(Duration::from_secs(1), client.flush()).await;
    }

    async fn publish_out(&self, client: &async_nats::Client, out: Out) {
        if !self.counters.connected.load(Ordering::Acquire) {
            add(&self.counters.dropped_out);
            return;
        }
        let (subject, body) = match out {
            Out::Broadcast(payload) => (self.subject("bcast"), payload),
            Out::Publish(topic, payload) => {
                let mut body = BytesMut::with_capacity(2 + topic.len() + payload.len());
                body.put_u16(topic.len() as u16);
                body.put_slice(&topic);
                body.put_slice(&payload);
                (self.subject("pub"), body.freeze())
            }
            Out::Send { from, to, payload } => {
                let mut body = BytesMut::with_capacity(32 + self.node.len() + payload.len());
                body.put_u8(SEND);
                put_node(&mut body, &self.node);
                put_opt_conn(&mut body, from);
                put_conn(&mut body, to.conn());
                body.put_slice(&payload);
                (self.subject(&format!("node.{}", to.node())), body.freeze())
            }
        };
        match client.publish(subject, body).await {
            Ok(()) => add(&self.counters.sent),
            Err(e) => {
                add(&self.counters.dropped_out);
                tracing::debug!(error = %e, "cluster: publish failed");
            }
        }
    }

    /// Hands a broadcast or publish to every shard of this node (all or
    /// none: a full command queue drops it, counted once).
    fn to_every_shard(&self, deliver: impl FnOnce(&dyn Inbound) -> Result<(), SendError>) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        add(&self.counters.received);
        if deliver(&*shared).is_err() {
            add(&self.counters.dropped_in);
        }
    }

    fn inbound_broadcast(&self, payload: Bytes) {
        self.to_every_shard(|shards| shards.broadcast(payload));
    }

    fn inbound_publish(&self, body: Bytes) {
        if body.len() < 2 {
            return;
        }
        let len = u16::from_be_bytes([body[0], body[1]]) as usize;
        if body.len() < 2 + len {
            return;
        }
        let topic = body.slice(2..2 + len);
        let payload = body.slice(2 + len..);
        self.to_every_shard(|shards| shards.publish(topic, payload));
    }

    async fn inbound_direct(&self, client: &async_nats::Client, body: Bytes) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        add(&self.counters.received);
        let mut r = Reader(body);
        match r.u8() {
            Some(SEND) => {
                let (Some(from_node), Some(from), Some(to)) = (r.node(), r.opt_conn(), r.conn())
                else {
                    return;
                };
                let payload = r.0;
                let Err(error) = shared.send(to, payload) else {
                    return;
                };
                add(&self.counters.dropped_in);
                let Some(from) = from else {
                    return;
                };
                // Tell the sender's node, which tells the sender.
                let mut answer = BytesMut::with_capacity(40 + self.node.len());
                answer.put_u8(STALE);
                answer.put_u8(error_code(error));
                put_conn(&mut answer, from);
                put_node(&mut answer, &self.node);
                put_conn(&mut answer, to);
                let subject = self.subject(&format!("node.{from_node}"));
                let _ = client.publish(subject, answer.freeze()).await;
            }
            Some(STALE) => {
                let (Some(code), Some(from), Some(to_node), Some(to)) =
                    (r.u8(), r.conn(), r.node(), r.conn())
                else {
                    return;
                };
                add(&self.counters.undeliverable);
                let to = ClusterConnId::new(to_node, to);
                if shared
                    .undeliverable(from, to, error_from_code(code))
                    .is_err()
                {
                    add(&self.counters.dropped_in);
                }
            }
            _ => {}
        }
    }

    fn heard(&self, body: Bytes, down: &mut HashMap<Arc<str>, ()>) {
        let Ok(name) = std::str::from_utf8(&body) else {
            return;
        };
        if !valid_node_name(name) || name == &*self.node {
            return;
        }
        let mut peers = self.peers.write().unwrap_or_else(|e| e.into_inner());
        let name: Arc<str> = name.into();
        let known = peers.insert(name.clone(), Instant::now()).is_some();
        if !known || down.remove(&name).is_some() {
            tracing::info!(node = %self.node, peer = %name, "cluster: node is up");
        }
    }

    fn sweep_peers(&self, down: &mut HashMap<Arc<str>, ()>) {
        let peers = self.peers.read().unwrap_or_else(|e| e.into_inner());
        for (name, heard) in peers.iter() {
            if heard.elapsed() >= self.config.node_timeout && !down.contains_key(name) {
                tracing::warn!(
                    node = %self.node, peer = %name,
                    "cluster: node is down (not heard for {:?}); sends to its connections fail",
                    self.config.node_timeout
                );
                down.insert(name.clone(), ());
            }
        }
    }
}

fn on_event(counters: &Counters, node: &str, event: Event) {
    match event {
        Event::Connected => {
            let was = counters.connected.swap(true, Ordering::AcqRel);
            if !was {
                tracing::info!(
                    node,
                    dropped_total = counters.dropped_out.load(Ordering::Relaxed),
                    "cluster: NATS link is up; cross-node delivery resumes"
                );
            }
        }
        Event::Disconnected => {
            counters.connected.store(false, Ordering::Release);
            tracing::warn!(
                node,
                "cluster: NATS link lost; delivering locally only, cross-node messages are \
                 dropped (counted) until it is back; reconnecting"
            );
        }
        other => tracing::debug!(node, event = %other, "cluster: NATS event"),
    }
}

fn error_code(e: SendError) -> u8 {
    match e {
        SendError::Closed => 1,
        SendError::QueueFull => 2,
        SendError::Busy => 3,
        SendError::TooLarge => 4,
        SendError::Stopped => 5,
        SendError::Unreachable => 6,
    }
}

fn error_from_code(code: u8) -> SendError {
    match code {
        2 => SendError::QueueFull,
        3 => SendError::Busy,
        4 => SendError::TooLarge,
        5 => SendError::Stopped,
        6 => SendError::Unreachable,
        _ => SendError::Closed,
    }
}

fn put_node(b: &mut BytesMut, node: &str) {
    b.put_u8(node.len() as u8);
    b.put_slice(node.as_bytes());
}

fn put_conn(b: &mut BytesMut, c: ConnId) {
    b.put_u16(c.shard() as u16);
    b.put_u32(c.slot());
    b.put_u32(c.generation());
}

/// A missing connection is written with generation 0 (never a live one).
fn put_opt_conn(b: &mut BytesMut, c: Option<ConnId>) {
    match c {
        Some(c) => put_conn(b, c),
        None => b.put_slice(&[0; 10]),
    }
}

/// Reads the fields of a node-addressed message; None on a short or bad
/// body (which is then ignored: at most once).
struct Reader(Bytes);

impl Reader {
    fn take(&mut self, n: usize) -> Option<Bytes> {
        (self.0.len() >= n).then(|| self.0.split_to(n))
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn node(&mut self) -> Option<String> {
        let n = self.u8()? as usize;
        let name = String::from_utf8(self.take(n)?.to_vec()).ok()?;
        valid_node_name(&name).then_some(name)
    }

    fn opt_conn(&mut self) -> Option<Option<ConnId>> {
        let b = self.take(10)?;
        let shard = u16::from_be_bytes([b[0], b[1]]);
        let slot = u32::from_be_bytes([b[2], b[3], b[4], b[5]]);
        let generation = u32::from_be_bytes([b[6], b[7], b[8], b[9]]);
        Some((generation != 0).then(|| ConnId::new(shard, slot, generation)))
    }

    fn conn(&mut self) -> Option<ConnId> {
        self.opt_conn()?
    }
}
