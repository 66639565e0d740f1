//! `ringport bench --mode pubsub` and `--mode chat-fanout`: fan-out load,
//! over one node or a cluster (`--nodes`).
//!
//! pubsub: `--connections` subscribers, spread over the nodes in turn and
//! over `--topics` topics (`t0`, `t1`, ...), subscribe first; then
//! `--publishers` publishers (on the first node) publish `--rate` messages
//! per second each, to the topics in turn. chat-fanout: `--connections`
//! clients of `serve --mode chat` spread over the nodes; the first
//! `--publishers` of them also talk; every client hears every message.
//!
//! Each message carries its send time, its publisher and a sequence
//! number: every delivery is checked (order per publisher kept, no
//! duplicate), its latency recorded; at the end the deliveries are
//! compared with those expected (published x subscribers of the topic).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use ringport::protocol::websocket::MessageKind;
use ringport::{ConnId, Context, Handler, LengthDelimited, RawBytes, Server, ServerConfig};

use super::ws::{Upgrade, WsLink, WsOpts};
use crate::pubsub::{Frame, decode, encode};

/// What the bench's connections do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Pubsub,
    Chat,
}

/// Settings of one fan-out run.
#[derive(Debug, Clone)]
pub struct FanoutArgs {
    pub kind: Kind,
    pub nodes: Vec<SocketAddr>,
    pub subscribers: usize,
    pub publishers: usize,
    pub topics: usize,
    /// Messages per second per publisher.
    pub rate: f64,
    pub size: usize,
    pub duration: Duration,
    pub threads: usize,
    pub backend: ringport::Backend,
    pub max_frame: usize,
    /// `--ws`: every frame of the pubsub protocol (or every chat message)
    /// is one binary WebSocket message.
    pub ws: Option<WsOpts>,
}

/// Bytes of the stamp at the start of every payload.
const STAMP: usize = 16;

struct Shared {
    kind: Kind,
    topics: usize,
    started: Instant,
    /// Subscribers (or chat clients) connected and subscribed.
    ready: AtomicU64,
    connected: AtomicU64,
    next_sub: AtomicU64,
    next_pub: AtomicU64,
    /// Connections opened from now on are publishers.
    publisher_phase: AtomicBool,
    /// Publishing on.
    sending: AtomicBool,
    rate: f64,
    size: usize,
    /// Messages published per topic.
    published: Vec<AtomicU64>,
    /// Subscribers per topic.
    subscribers: Vec<AtomicU64>,
    delivered: AtomicU64,
    errors: AtomicU64,
    histogram: Mutex<Histogram<u64>>,
    ws: Option<WsOpts>,
    /// `--ws` upgrades refused, or connections closed during one.
    upgrade_failed: AtomicU64,
}

struct Publisher {
    index: u32,
    seq: u32,
    owed: f64,
}

#[derive(Default)]
struct Conn {
    /// Last sequence number heard from each publisher.
    last: HashMap<u32, u32>,
    publisher: Option<Publisher>,
    /// `--ws`: the WebSocket side (ready once upgraded).
    ws: Option<Box<WsLink>>,
}

struct FanoutHandler {
    shared: Arc<Shared>,
    conns: HashMap<ConnId, Conn>,
    histogram: Histogram<u64>,
    delivered: u64,
    last_tick: Instant,
    /// `--ws`: where received bytes are parsed (see `WsLink::receive`).
    ws_work: Vec<u8>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

impl FanoutHandler {
    fn payload(&self, index: u32, seq: u32) -> Vec<u8> {
        let mut p = vec![b'.'; self.shared.size.max(STAMP)];
        let ns = self.shared.started.elapsed().as_nanos() as u64;
        p[..8].copy_from_slice(&ns.to_be_bytes());
        p[8..12].copy_from_slice(&index.to_be_bytes());
        p[12..16].copy_from_slice(&seq.to_be_bytes());
        p
    }

    fn receive(&mut self, conn: ConnId, data: &[u8]) {
        let Some(c) = self.conns.get_mut(&conn) else {
            return;
        };
        if data.len() < STAMP {
            self.shared.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let sent = u64::from_be_bytes(data[..8].try_into().unwrap());
        let publisher = u32::from_be_bytes(data[8..12].try_into().unwrap());
        let seq = u32::from_be_bytes(data[12..16].try_into().unwrap());
        // Order per (publisher, topic): sequence numbers only grow (each
        // subscriber hears one topic, or, in chat, everything).
        if let Some(prev) = c.last.insert(publisher, seq)
            && seq <= prev
        {
            self.shared.errors.fetch_add(1, Ordering::Relaxed);
        }
        let now = self.shared.started.elapsed().as_nanos() as u64;
        let micros = now.saturating_sub(sent) / 1000;
        let _ = self.histogram.record(micros.max(1));
        self.delivered += 1;
    }

    fn publish_due(&mut self, ctx: &mut Context<'_>, elapsed: f64) {
        let rate = self.shared.rate;
        let topics = self.shared.topics;
        let publishers: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.publisher.is_some())
            .map(|(id, _)| *id)
            .collect();
        for conn in publishers {
            let Some(p) = self.conns.get_mut(&conn).and_then(|c| c.publisher.as_mut()) else {
                continue;
            };
            // At most one second's worth owed after a stall.
            p.owed = (p.owed + rate * elapsed).min(rate.max(1.0));
            let due = p.owed.floor() as u32;
            p.owed -= f64::from(due);
            let (index, mut next) = (p.index, p.seq);
            for _ in 0..due {
                let payload = self.payload(index, next);
                let topic = next as usize % topics;
                let frame = match self.shared.kind {
                    Kind::Pubsub => encode(&Frame::Publish {
                        topic: format!("t{topic}").as_bytes(),
                        data: &payload,
                    }),
                    Kind::Chat => payload,
                };
                if send(ctx, conn, self.conns.get_mut(&conn), &frame).is_err() {
                    self.shared.errors.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                self.shared.published[topic].fetch_add(1, Ordering::Relaxed);
                next += 1;
            }
            if let Some(p) = self.conns.get_mut(&conn).and_then(|c| c.publisher.as_mut()) {
                p.seq = next;
            }
        }
    }
    /// A connection is ready (connected; upgraded with --ws): a
    /// subscriber subscribes, a publisher or chat client is counted.
    fn ready(&mut self, ctx: &mut Context<'_>, conn: ConnId) {
        let s = self.shared.clone();
        s.connected.fetch_add(1, Ordering::Relaxed);
        let mut c = self.conns.remove(&conn).unwrap_or_default();
        if s.publisher_phase.load(Ordering::Acquire) {
            c.publisher = Some(Publisher {
                index: s.next_pub.fetch_add(1, Ordering::Relaxed) as u32,
                seq: 0,
                owed: 0.0,
            });
            if s.kind == Kind::Chat {
                // A chat talker hears everything too.
                s.subscribers[0].fetch_add(1, Ordering::Relaxed);
            }
            s.ready.fetch_add(1, Ordering::Release);
        } else {
            let n = s.next_sub.fetch_add(1, Ordering::Relaxed) as usize;
            match s.kind {
                Kind::Pubsub => {
                    let topic = format!("t{}", n % s.topics);
                    let frame = encode(&Frame::Subscribe(topic.as_bytes()));
                    let _ = send(ctx, conn, Some(&mut c), &frame);
                }
                Kind::Chat => {
                    s.subscribers[0].fetch_add(1, Ordering::Relaxed);
                    s.ready.fetch_add(1, Ordering::Release);
                }
            }
        }
        self.conns.insert(conn, c);
    }

    /// One message of the protocol (a frame, or a WebSocket message).
    fn on_frame(&mut self, _: &mut Context<'_>, conn: ConnId, message: &[u8]) {
        match self.shared.kind {
            Kind::Chat => self.receive(conn, message),
            Kind::Pubsub => match decode(message) {
                Some(Frame::Message { data, .. } | Frame::Positioned { data, .. }) => {
                    self.receive(conn, data)
                }
                Some(Frame::Ok { op: b'S', topic }) => {
                    let n: usize = std::str::from_utf8(topic.get(1..).unwrap_or_default())
                        .ok()
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(0);
                    self.shared.subscribers[n % self.shared.topics].fetch_add(1, Ordering::Relaxed);
                    self.shared.ready.fetch_add(1, Ordering::Release);
                }
                _ => {
                    self.shared.errors.fetch_add(1, Ordering::Relaxed);
                }
            },
        }
    }

    /// `--ws`: received bytes of a connection, its link taken out of it.
    fn on_ws_bytes(
        &mut self,
        ctx: &mut Context<'_>,
        conn: ConnId,
        mut link: Box<WsLink>,
        bytes: &[u8],
    ) {
        let mut bytes = bytes;
        if !link.upgraded() {
            match link.handshake(bytes) {
                Upgrade::Pending => {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.ws = Some(link);
                    }
                    return;
                }
                Upgrade::Failed(why) => {
                    self.shared.upgrade_failed.fetch_add(1, Ordering::Relaxed);
                    eprintln!("WebSocket upgrade failed: {why}");
                    self.conns.remove(&conn);
                    let _ = ctx.close(conn);
                    return;
                }
                Upgrade::Done => {
                    if let Some(c) = self.conns.get_mut(&conn) {
                        c.ws = Some(link);
                    }
                    self.ready(ctx, conn);
                    let Some(l) = self.conns.get_mut(&conn).and_then(|c| c.ws.take()) else {
                        return;
                    };
                    link = l;
                    bytes = &[];
                }
            }
        }
        link.out.clear();
        let mut work = std::mem::take(&mut self.ws_work);
        let outcome = link.receive(bytes, &mut work, |kind, message| {
            if kind != MessageKind::Binary {
                self.shared.errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
            self.on_frame(ctx, conn, message);
        });
        self.ws_work = work;
        if !link.out.is_empty() {
            let _ = ctx.send(conn, &link.out);
            link.out.clear();
        }
        if outcome.is_err() {
            self.shared.errors.fetch_add(1, Ordering::Relaxed);
            let _ = ctx.close(conn);
        }
        if let Some(c) = self.conns.get_mut(&conn) {
            c.ws = Some(link);
        }
    }
}

/// Sends one protocol message: a frame of the codec, or with --ws one
/// binary WebSocket message on the connection's link.
fn send(
    ctx: &mut Context<'_>,
    id: ConnId,
    conn: Option<&mut Conn>,
    message: &[u8],
) -> Result<(), String> {
    match conn.and_then(|c| c.ws.as_mut()) {
        Some(link) => {
            link.out.clear();
            link.frame(MessageKind::Binary, message)?;
            ctx.send(id, &link.out).map_err(|e| e.to_string())
        }
        None => ctx.send(id, message).map_err(|e| e.to_string()),
    }
}

impl Handler for FanoutHandler {
    type ConnState = ();

    fn on_connect(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: SocketAddr) {
        if let Some(opts) = &self.shared.ws {
            let link = Box::new(WsLink::start(opts));
            if ctx.send(conn, &link.out).is_err() {
                self.shared.upgrade_failed.fetch_add(1, Ordering::Relaxed);
                let _ = ctx.close(conn);
                return;
            }
            self.conns.insert(
                conn,
                Conn {
                    ws: Some(link),
                    ..Conn::default()
                },
            );
            return;
        }
        self.ready(ctx, conn);
    }

    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: &mut (), message: &[u8]) {
        let link = self.conns.get_mut(&conn).and_then(|c| c.ws.take());
        match link {
            Some(link) => self.on_ws_bytes(ctx, conn, link, message),
            None => self.on_frame(ctx, conn, message),
        }
    }

    fn on_close(&mut self, _: &mut Context<'_>, conn: ConnId, _: (), _: ringport::CloseReason) {
        if let Some(c) = self.conns.remove(&conn)
            && c.ws.is_some_and(|l| !l.upgraded())
        {
            self.shared.upgrade_failed.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn on_tick(&mut self, ctx: &mut Context<'_>) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last_tick).as_secs_f64();
        self.last_tick = now;
        if self.shared.sending.load(Ordering::Acquire) {
            self.publish_due(ctx, elapsed);
        }
        if self.delivered > 0 {
            self.shared
                .delivered
                .fetch_add(self.delivered, Ordering::Relaxed);
            self.delivered = 0;
            let mut all = self.shared.histogram.lock().unwrap();
            let _ = all.add(&self.histogram);
            self.histogram.reset();
        }
    }
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while !done() {
        if Instant::now() >= deadline {
            return Err(format!("timed out waiting for {what}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Runs one fan-out measurement; returns the exit code (0: every expected
/// delivery made, in order, none twice).
pub fn run(args: FanoutArgs) -> Result<i32, String> {
    let topics = if args.kind == Kind::Chat {
        1
    } else {
        args.topics.max(1)
    };
    let shared = Arc::new(Shared {
        kind: args.kind,
        topics,
        started: Instant::now(),
        ready: AtomicU64::new(0),
        connected: AtomicU64::new(0),
        next_sub: AtomicU64::new(0),
        next_pub: AtomicU64::new(0),
        publisher_phase: AtomicBool::new(false),
        sending: AtomicBool::new(false),
        rate: args.rate,
        size: args.size.max(STAMP),
        published: (0..topics).map(|_| AtomicU64::new(0)).collect(),
        subscribers: (0..topics).map(|_| AtomicU64::new(0)).collect(),
        delivered: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        histogram: Mutex::new(histogram()),
        ws: args.ws.clone(),
        upgrade_failed: AtomicU64::new(0),
    });
    let total = args.subscribers + args.publishers;
    let config = {
        let mut config = ServerConfig::default();
        config.backend = args.backend;
        config.listen = false;
        config.shards = args.threads.max(1);
        config.max_connections = total + 16;
        config.tick = Duration::from_millis(1);
        config.stop_timeout = Duration::from_secs(1);
        config
    };
    let factory_shared = shared.clone();
    let factory = move |_| FanoutHandler {
        shared: factory_shared.clone(),
        conns: HashMap::new(),
        histogram: histogram(),
        delivered: 0,
        last_tick: Instant::now(),
        ws_work: Vec::new(),
    };
    let engine = match args.ws {
        // The links parse the WebSocket frames: the engine hands over
        // bytes as they come.
        Some(_) => Server::start(config, RawBytes::new().max_frame_length(256 << 10), factory),
        None => Server::start(
            config,
            LengthDelimited::new().max_frame_length(args.max_frame),
            factory,
        ),
    }
    .map_err(|e| format!("starting the bench engine: {e}"))?;
    let connect = |count: usize, to: &dyn Fn(usize) -> SocketAddr| -> Result<(), String> {
        let base = shared.connected.load(Ordering::Relaxed) as usize;
        for i in 0..count {
            // At most 1,000 connects in flight.
            wait_for("connects", Duration::from_secs(30), || {
                shared.connected.load(Ordering::Relaxed) as usize + 1000 > base + i
            })?;
            while engine.connect(to(i), None).is_err() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
        Ok(())
    };
    let began = Instant::now();
    connect(args.subscribers, &|i| args.nodes[i % args.nodes.len()])?;
    wait_for("subscriptions", Duration::from_secs(60), || {
        shared.ready.load(Ordering::Acquire) as usize >= args.subscribers
    })?;
    shared.publisher_phase.store(true, Ordering::Release);
    connect(args.publishers, &|_| args.nodes[0])?;
    wait_for("publishers", Duration::from_secs(30), || {
        shared.ready.load(Ordering::Acquire) as usize >= total
    })?;
    eprintln!(
        "connected {total} ({} subscribers over {} node(s), {} publishers) in {:.1}s",
        args.subscribers,
        args.nodes.len(),
        args.publishers,
        began.elapsed().as_secs_f64()
    );
    // The server side of the last connections settles.
    std::thread::sleep(Duration::from_millis(300));
    shared.sending.store(true, Ordering::Release);
    let measure = Instant::now();
    std::thread::sleep(args.duration);
    shared.sending.store(false, Ordering::Release);
    let sent_for = measure.elapsed().as_secs_f64();
    let expected = |s: &Shared| -> u64 {
        (0..topics)
            .map(|t| {
                s.published[t].load(Ordering::Relaxed) * s.subscribers[t].load(Ordering::Relaxed)
            })
            .sum()
    };
    // Drain: until everything expected arrived, or 3 s without progress.
    let mut last = (0, Instant::now());
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let d = shared.delivered.load(Ordering::Relaxed);
        if d >= expected(&shared) {
            break;
        }
        if d != last.0 {
            last = (d, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    let took = measure.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(20));
    drop(engine);
    let published: u64 = shared
        .published
        .iter()
        .map(|p| p.load(Ordering::Relaxed))
        .sum();
    let want = expected(&shared);
    let got = shared.delivered.load(Ordering::Relaxed);
    let errors = shared.errors.load(Ordering::Relaxed);
    let upgrade_failed = shared.upgrade_failed.load(Ordering::Relaxed);
    let h = shared.histogram.lock().unwrap();
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "fanout {:?}: {} node(s), {} subscribers, {} publishers x {}/s, {} topic(s), {} B",
        args.kind,
        args.nodes.len(),
        args.subscribers,
        args.publishers,
        args.rate,
        topics,
        shared.size
    );
    println!(
        "published {published} in {sent_for:.1}s; deliveries expected {want}, made {got} \
         ({:.3}%), order/format errors {errors}",
        100.0 * got as f64 / want.max(1) as f64
    );
    println!(
        "delivered {:.0} msgs/s (over {took:.1}s incl. drain); latency ms p50 {:.2} p99 {:.2} \
         p99.9 {:.2} max {:.2}",
        got as f64 / took.max(1e-9),
        ms(0.5),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1000.0
    );
    if args.ws.is_some() {
        println!("WebSocket: every message one binary message; upgrades failed {upgrade_failed}");
    }
    Ok(if got == want && errors == 0 && upgrade_failed == 0 {
        0
    } else {
        1
    })
}
