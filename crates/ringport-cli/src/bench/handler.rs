//! The load generator's connection handler: runs on ringport's own shards
//! (outbound connections on io_uring direct descriptors), keeps `depth`
//! messages in flight per connection (or a fixed rate), verifies every
//! reply and records round-trip latency.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hdrhistogram::Histogram;
use ringport::{Bytes, CloseReason, ConnId, Context, Handler};

use super::payload::{self, Corrupt, Stamp};
use super::rotation::Rotation;
use super::ws::{Upgrade, WsLink, WsOpts};

/// What every shard is doing now; set by the bench's main thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Phase {
    Connecting = 0,
    Warmup = 1,
    Measure = 2,
    /// No new sends; waiting for the replies still in flight.
    Drain = 3,
}

impl Phase {
    fn from_u8(v: u8) -> Phase {
        match v {
            0 => Phase::Connecting,
            1 => Phase::Warmup,
            2 => Phase::Measure,
            _ => Phase::Drain,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Echo,
    Chat,
}

#[derive(Debug, Clone)]
pub struct Params {
    pub size: usize,
    pub depth: u32,
    /// Messages per second per connection; 0 = closed loop.
    pub rate: f64,
    pub mode: Mode,
    /// Payloads must be printable without newlines (lines codec).
    pub text: bool,
    /// The bench binds explicit source ports: EADDRINUSE means "that port
    /// is taken, try the next", not a failure.
    pub explicit_ports: bool,
    /// Check every payload byte (else only the length and the stamp, and
    /// a reused buffer gets only a new stamp: `--verify header`).
    pub verify_body: bool,
    pub started: Instant,
    /// `--ws`: speak WebSocket over the raw-bytes codec.
    pub ws: Option<WsOpts>,
}

/// Shared between the shards and the bench's main thread.
pub struct Shared {
    pub params: Params,
    phase: AtomicU8,
    pub established: AtomicU64,
    pub connect_failed: AtomicU64,
    /// Connects whose explicit source port was taken (EADDRINUSE): the
    /// main thread issues another connect from the next port.
    pub port_taken: AtomicU64,
    /// `--ws`: connections that negotiated permessage-deflate.
    pub ws_deflate: AtomicU64,
    pub next_index: AtomicU32,
    /// Published by each shard on every tick, for progress display.
    pub progress_received: Vec<AtomicU64>,
    pub progress_in_flight: Vec<AtomicU64>,
    pub progress_errors: Vec<AtomicU64>,
    /// The slowest round trip each shard saw (any phase) since the main
    /// thread last took it, in µs: shows a stall second by second.
    pub progress_slowest_us: Vec<AtomicU64>,
    pub connect_errors: Mutex<BTreeMap<String, u64>>,
    pub results: Mutex<Vec<ShardResult>>,
}

impl Shared {
    pub fn new(params: Params, shards: usize) -> Self {
        let counters = || (0..shards).map(|_| AtomicU64::new(0)).collect();
        Shared {
            params,
            phase: AtomicU8::new(Phase::Connecting as u8),
            established: AtomicU64::new(0),
            connect_failed: AtomicU64::new(0),
            port_taken: AtomicU64::new(0),
            ws_deflate: AtomicU64::new(0),
            next_index: AtomicU32::new(0),
            progress_received: counters(),
            progress_in_flight: counters(),
            progress_errors: counters(),
            progress_slowest_us: counters(),
            connect_errors: Mutex::new(BTreeMap::new()),
            results: Mutex::new(Vec::new()),
        }
    }

    pub fn set_phase(&self, phase: Phase) {
        self.phase.store(phase as u8, Ordering::Release);
    }

    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.phase.load(Ordering::Acquire))
    }

    pub fn sum(counters: &[AtomicU64]) -> u64 {
        counters.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// The slowest round trip published since the last call (µs, 0 if
    /// none), resetting it.
    pub fn take_slowest_us(&self) -> u64 {
        self.progress_slowest_us
            .iter()
            .map(|c| c.swap(0, Ordering::Relaxed))
            .max()
            .unwrap_or(0)
    }
}

/// One shard's outcome, handed over when the shard drops its handler.
#[derive(Debug)]
pub struct ShardResult {
    pub latency_us: Histogram<u64>,
    /// Replies (echo) or deliveries (chat) received during the measure
    /// phase, and their payload bytes.
    pub measured_messages: u64,
    pub measured_bytes: u64,
    /// Replies to this bench's own sends received during the measure
    /// phase (in echo mode every reply; in chat mode a sender's own
    /// broadcast coming back): "delivered" for the fixed-rate check.
    pub measured_own: u64,
    /// Sends the fixed rate asked for during the measure phase, and how
    /// many of them found `depth` in flight (late, not sent).
    pub measured_wanted: u64,
    pub measured_late: u64,
    pub sent: u64,
    pub received: u64,
    /// Sends that a fixed rate asked for while `depth` were in flight.
    pub late_sends: u64,
    pub errors: BTreeMap<&'static str, u64>,
    pub first_errors: Vec<String>,
    /// Messages sent and never answered (loss), counted at the end.
    pub unanswered: u64,
}

impl ShardResult {
    fn new() -> Self {
        ShardResult {
            latency_us: latency_histogram(),
            measured_messages: 0,
            measured_bytes: 0,
            measured_own: 0,
            measured_wanted: 0,
            measured_late: 0,
            sent: 0,
            received: 0,
            late_sends: 0,
            errors: BTreeMap::new(),
            first_errors: Vec::new(),
            unanswered: 0,
        }
    }
}

/// Round-trip times in microseconds, 1 µs to 2 minutes, 3 significant
/// digits.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

struct Conn {
    id: ConnId,
    index: u32,
    next_seq: u64,
    expect_seq: u64,
    in_flight: u32,
    /// `--ws`: the connection's WebSocket side (established once upgraded).
    ws: Option<Box<WsLink>>,
}

pub struct BenchHandler {
    shard: usize,
    shared: Arc<Shared>,
    conns: Vec<Option<Conn>>,
    /// Open slots, for the fixed-rate round robin.
    rotation: Rotation,
    /// Fractional sends owed by the fixed rate.
    owed: f64,
    last_tick: Instant,
    started_traffic: bool,
    /// Messages sent and not yet answered, over this shard's connections.
    in_flight: u64,
    /// Slowest round trip since the last tick, µs (published then reset).
    slowest_us: u64,
    scratch: Vec<u8>,
    /// `--ws`: where received bytes are parsed (see `WsLink::receive`).
    ws_work: Vec<u8>,
    /// `--ws`: where messages are framed before they are queued.
    ws_out: Vec<u8>,
    /// Large payloads handed to the engine, oldest first: reused (written
    /// over in place) once the engine has let go of them, so a bulk run
    /// neither allocates nor copies a payload per message.
    sent_buffers: std::collections::VecDeque<Bytes>,
    result: ShardResult,
}

const MAX_FIRST_ERRORS: usize = 5;
/// Payloads at least this large are handed to the engine as `Bytes`
/// (queued by reference) instead of copied.
const SHARED_PAYLOAD: usize = 64 * 1024;
/// `--ws` messages at least this large are framed into buffers queued by
/// reference (`send_bytes`) instead of copied into the send queue.
const SHARED_WS_FRAME: usize = 8 * 1024;
/// Most large payload buffers a shard keeps for reuse.
const MAX_SPARE_BUFFERS: usize = 1024;

impl BenchHandler {
    pub fn new(shard: usize, shared: Arc<Shared>) -> Self {
        BenchHandler {
            shard,
            shared,
            conns: Vec::new(),
            rotation: Rotation::new(0x9e37_79b9_7f4a_7c15 ^ shard as u64),
            owed: 0.0,
            last_tick: Instant::now(),
            started_traffic: false,
            in_flight: 0,
            slowest_us: 0,
            scratch: Vec::new(),
            ws_work: Vec::new(),
            ws_out: Vec::new(),
            sent_buffers: std::collections::VecDeque::new(),
            result: ShardResult::new(),
        }
    }

    /// A large payload for `stamp`, written into a buffer the engine no
    /// longer holds when there is one (else a new one).
    fn large_payload(&mut self, stamp: Stamp) -> Bytes {
        let (size, text) = (self.shared.params.size, self.shared.params.text);
        let body = self.shared.params.verify_body;
        // Only the oldest is tried: buffers are sent, and so released, in
        // about the order they were handed over.
        if let Some(oldest) = self.sent_buffers.pop_front() {
            match oldest.try_into_mut() {
                Ok(mut reuse) => {
                    if body {
                        payload::encode_into(&mut reuse, stamp, text);
                    } else {
                        payload::write_stamp(&mut reuse, stamp, text);
                    }
                    let bytes = reuse.freeze();
                    self.sent_buffers.push_back(bytes.clone());
                    return bytes;
                }
                Err(held) => self.sent_buffers.push_front(held),
            }
        }
        let mut fresh = vec![0; size];
        payload::encode_into(&mut fresh, stamp, text);
        let bytes = Bytes::from(fresh);
        // Bounded: at most the payloads in flight, plus a few.
        if self.sent_buffers.len() < MAX_SPARE_BUFFERS {
            self.sent_buffers.push_back(bytes.clone());
        }
        bytes
    }

    fn error(&mut self, kind: &'static str, detail: impl FnOnce() -> String) {
        *self.result.errors.entry(kind).or_default() += 1;
        if self.result.first_errors.len() < MAX_FIRST_ERRORS {
            self.result
                .first_errors
                .push(format!("{kind}: {}", detail()));
        }
    }

    fn now_ns(&self) -> u64 {
        self.shared.params.started.elapsed().as_nanos() as u64
    }

    fn send_next(&mut self, ctx: &mut Context<'_>, slot: usize) {
        let now = self.now_ns();
        let (size, text) = (self.shared.params.size, self.shared.params.text);
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        let stamp = Stamp {
            conn: conn.index,
            seq: conn.next_seq,
            sent_ns: now,
        };
        let id = conn.id;
        let outcome = if conn.ws.is_some() {
            self.send_ws(ctx, slot, stamp)
        } else if size >= SHARED_PAYLOAD {
            let bytes = self.large_payload(stamp);
            ctx.send_bytes(id, bytes).map_err(|e| e.to_string())
        } else {
            if !self.shared.params.verify_body && self.scratch.len() == size {
                payload::write_stamp(&mut self.scratch, stamp, text);
            } else {
                payload::encode(&mut self.scratch, size, stamp, text);
            }
            ctx.send(id, &self.scratch).map_err(|e| e.to_string())
        };
        let Some(conn) = self.conns[slot].as_mut() else {
            return;
        };
        match outcome {
            Ok(()) => {
                conn.next_seq += 1;
                conn.in_flight += 1;
                self.in_flight += 1;
                self.result.sent += 1;
            }
            Err(e) => {
                let id = conn.id;
                self.error("send refused", || format!("{id}: {e}"));
            }
        }
    }

    /// `--ws`: the payload for `stamp`, one masked message on the link.
    fn send_ws(&mut self, ctx: &mut Context<'_>, slot: usize, stamp: Stamp) -> Result<(), String> {
        let params = &self.shared.params;
        let (size, text) = (params.size, params.text);
        if !params.verify_body && self.scratch.len() == size {
            payload::write_stamp(&mut self.scratch, stamp, text);
        } else {
            payload::encode(&mut self.scratch, size, stamp, text);
        }
        let kind = params.ws.as_ref().map(WsOpts::kind);
        let Some((conn, kind)) = self.conns[slot].as_mut().zip(kind) else {
            return Err("no connection".into());
        };
        let Some(link) = conn.ws.as_mut() else {
            return Err("not a WebSocket connection".into());
        };
        if size < SHARED_WS_FRAME {
            // Framed in the thread's buffer (copied into the send queue):
            // no connection keeps a frame-sized buffer.
            self.ws_out.clear();
            link.frame_into(kind, &self.scratch, &mut self.ws_out)?;
            return ctx.send(conn.id, &self.ws_out).map_err(|e| e.to_string());
        }
        // Large: framed into a buffer the engine queues by reference (no
        // copy into its send queue), reused once the engine lets go of it.
        let mut buf = std::mem::take(&mut link.out);
        if let Some(oldest) = self.sent_buffers.pop_front() {
            match oldest.try_into_mut() {
                Ok(reuse) => buf = Vec::from(reuse),
                Err(held) => self.sent_buffers.push_front(held),
            }
        }
        buf.clear();
        let framed = link.frame_into(kind, &self.scratch, &mut buf);
        let id = conn.id;
        framed?;
        let bytes = Bytes::from(buf);
        if self.sent_buffers.len() < MAX_SPARE_BUFFERS {
            self.sent_buffers.push_back(bytes.clone());
        }
        ctx.send_bytes(id, bytes).map_err(|e| e.to_string())
    }

    fn sending(&self) -> bool {
        matches!(self.shared.phase(), Phase::Warmup | Phase::Measure)
    }

    /// Closed loop: fill every connection up to `depth` in flight.
    fn fill(&mut self, ctx: &mut Context<'_>, slot: usize) {
        let depth = self.shared.params.depth;
        while self.conns[slot]
            .as_ref()
            .is_some_and(|c| c.in_flight < depth)
        {
            let before = self.result.sent;
            self.send_next(ctx, slot);
            if self.result.sent == before {
                break;
            }
        }
    }

    fn start_traffic(&mut self, ctx: &mut Context<'_>) {
        self.started_traffic = true;
        if self.shared.params.rate > 0.0 {
            return;
        }
        for slot in 0..self.conns.len() {
            self.fill(ctx, slot);
        }
    }

    /// Fixed rate: `rate × connections × elapsed` sends, spread over the
    /// connections in turn.
    fn paced_sends(&mut self, ctx: &mut Context<'_>, elapsed: f64) {
        if self.rotation.is_empty() {
            return;
        }
        self.owed += self.shared.params.rate * self.rotation.len() as f64 * elapsed;
        let depth = self.shared.params.depth;
        let mut budget = self.owed.floor() as u64;
        self.owed -= budget as f64;
        let measuring = self.shared.phase() == Phase::Measure;
        if measuring {
            self.result.measured_wanted += budget;
        }
        while budget > 0 {
            budget -= 1;
            let Some(slot) = self.rotation.next_slot() else {
                break;
            };
            let slot = slot as usize;
            let Some(conn) = self.conns[slot].as_ref() else {
                continue;
            };
            if conn.in_flight >= depth {
                self.result.late_sends += 1;
                self.result.measured_late += u64::from(measuring);
            } else {
                self.send_next(ctx, slot);
            }
        }
    }

    fn record(&mut self, stamp: Stamp, len: usize, own: bool) {
        let rtt_us = (self.now_ns().saturating_sub(stamp.sent_ns) / 1000).max(1);
        self.slowest_us = self.slowest_us.max(rtt_us);
        if self.shared.phase() == Phase::Measure {
            self.result.measured_own += u64::from(own);
            self.result.latency_us.saturating_record(rtt_us);
            self.result.measured_messages += 1;
            self.result.measured_bytes += len as u64;
        }
    }
    /// Checks one reply (or delivery); `true` if it answered one of this
    /// connection's own messages (then another may be sent).
    fn on_reply(&mut self, id: ConnId, slot: usize, message: &[u8]) -> bool {
        let params = &self.shared.params;
        let (size, text, mode) = (params.size, params.text, params.mode);
        self.result.received += 1;
        let checked = if params.verify_body {
            payload::verify(message, size, text)
        } else {
            payload::verify_stamp(message, size, text)
        };
        let stamp = match checked {
            Ok(stamp) => stamp,
            Err(Corrupt::Length { got, want }) => {
                self.error("wrong length", || format!("{id}: {got} bytes, sent {want}"));
                return false;
            }
            Err(Corrupt::Filler { at }) => {
                self.error("corrupt payload", || {
                    format!("{id}: first bad byte at {at}")
                });
                return false;
            }
        };
        let Some(conn) = self.conns[slot].as_mut() else {
            return false;
        };
        if stamp.conn != conn.index {
            if mode == Mode::Chat {
                // Someone else's broadcast: intact, counts as a delivery.
                self.record(stamp, message.len(), false);
                return false;
            }
            let index = conn.index;
            self.error("misrouted reply", || {
                format!("{id} (index {index}) got a reply for index {}", stamp.conn)
            });
            return false;
        }
        if stamp.seq != conn.expect_seq {
            let expect = conn.expect_seq;
            conn.expect_seq = stamp.seq + 1;
            if conn.in_flight > 0 {
                conn.in_flight -= 1;
                self.in_flight -= 1;
            }
            self.error("lost or reordered", || {
                format!("{id}: expected seq {expect}, got {}", stamp.seq)
            });
            return false;
        }
        conn.expect_seq += 1;
        conn.in_flight -= 1;
        self.in_flight -= 1;
        self.record(stamp, message.len(), true);
        true
    }

    /// A connection is ready for traffic (connected; upgraded with --ws).
    fn established(&mut self, ctx: &mut Context<'_>, slot: usize) {
        self.shared.established.fetch_add(1, Ordering::Relaxed);
        self.rotation.insert(slot as u32);
        if self.started_traffic && self.shared.params.rate == 0.0 && self.sending() {
            self.fill(ctx, slot);
        }
    }

    fn connect_failed(&mut self, why: String) {
        self.shared.connect_failed.fetch_add(1, Ordering::Relaxed);
        let mut errors = self.shared.connect_errors.lock().unwrap();
        *errors.entry(why).or_default() += 1;
    }

    /// `--ws`: received bytes of a connection, its link taken out of it.
    fn on_ws_bytes(
        &mut self,
        ctx: &mut Context<'_>,
        id: ConnId,
        slot: usize,
        mut link: Box<WsLink>,
        bytes: &[u8],
    ) {
        let mut bytes = bytes;
        let mut upgraded_now = false;
        if !link.upgraded() {
            match link.handshake(bytes) {
                Upgrade::Pending => {}
                Upgrade::Failed(why) => {
                    self.conns[slot] = None;
                    self.connect_failed(format!("WebSocket upgrade failed: {why}"));
                    let _ = ctx.close(id);
                    return;
                }
                Upgrade::Done => {
                    upgraded_now = true;
                    if link.deflate() {
                        self.shared.ws_deflate.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            if !upgraded_now {
                self.put_back(slot, link);
                return;
            }
            // What came with the 101 was kept by the link.
            bytes = &[];
        }
        let want = self.shared.params.ws.as_ref().map(WsOpts::kind);
        let mut refill = false;
        link.out.clear();
        let mut work = std::mem::take(&mut self.ws_work);
        let outcome = link.receive(bytes, &mut work, |kind, message| {
            if Some(kind) != want {
                self.result.received += 1;
                self.error("wrong message kind", || format!("{id}: {kind:?}"));
                return;
            }
            refill |= self.on_reply(id, slot, message);
        });
        self.ws_work = work;
        if !link.out.is_empty() {
            // Pongs, or the reply to a close.
            let _ = ctx.send(id, &link.out);
            link.out.clear();
        }
        if let Err(why) = outcome {
            self.error("WebSocket ended", || format!("{id}: {why}"));
            let _ = ctx.close(id);
        }
        self.put_back(slot, link);
        if upgraded_now {
            self.established(ctx, slot);
        } else if refill && self.shared.params.rate == 0.0 && self.sending() {
            self.fill(ctx, slot);
        }
    }

    fn put_back(&mut self, slot: usize, link: Box<WsLink>) {
        if let Some(conn) = self.conns.get_mut(slot).and_then(Option::as_mut) {
            conn.ws = Some(link);
        }
    }
}

impl Handler for BenchHandler {
    type ConnState = ();

    fn on_connect(&mut self, ctx: &mut Context<'_>, id: ConnId, _peer: SocketAddr) {
        let slot = id.slot() as usize;
        if self.conns.len() <= slot {
            self.conns.resize_with(slot + 1, || None);
        }
        let index = self.shared.next_index.fetch_add(1, Ordering::Relaxed);
        let ws = self
            .shared
            .params
            .ws
            .as_ref()
            .map(|o| Box::new(WsLink::start(o)));
        if let Some(link) = &ws
            && let Err(e) = ctx.send(id, &link.out)
        {
            self.connect_failed(format!("sending the WebSocket upgrade: {e}"));
            let _ = ctx.close(id);
            return;
        }
        let upgrading = ws.is_some();
        self.conns[slot] = Some(Conn {
            id,
            index,
            next_seq: 0,
            expect_seq: 0,
            in_flight: 0,
            ws,
        });
        if !upgrading {
            self.established(ctx, slot);
        }
    }

    fn on_connect_failed(
        &mut self,
        _: &mut Context<'_>,
        _remote: SocketAddr,
        error: std::io::Error,
    ) {
        if self.shared.params.explicit_ports && error.raw_os_error() == Some(libc::EADDRINUSE) {
            self.shared.port_taken.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.connect_failed(error.to_string());
    }

    fn on_message(&mut self, ctx: &mut Context<'_>, id: ConnId, _: &mut (), message: &[u8]) {
        let slot = id.slot() as usize;
        let link = self
            .conns
            .get_mut(slot)
            .and_then(Option::as_mut)
            .and_then(|c| c.ws.take());
        if let Some(link) = link {
            return self.on_ws_bytes(ctx, id, slot, link, message);
        }
        if self.on_reply(id, slot, message) && self.shared.params.rate == 0.0 && self.sending() {
            self.fill(ctx, slot);
        }
    }

    fn on_tick(&mut self, ctx: &mut Context<'_>) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last_tick).as_secs_f64();
        self.last_tick = now;
        if self.sending() {
            if !self.started_traffic {
                self.start_traffic(ctx);
            }
            if self.shared.params.rate > 0.0 {
                self.paced_sends(ctx, elapsed);
            }
        }
        let in_flight = self.in_flight;
        let errors: u64 = self.result.errors.values().sum();
        self.shared.progress_received[self.shard].store(self.result.received, Ordering::Relaxed);
        self.shared.progress_in_flight[self.shard].store(in_flight, Ordering::Relaxed);
        self.shared.progress_errors[self.shard].store(errors, Ordering::Relaxed);
        self.shared.progress_slowest_us[self.shard]
            .fetch_max(std::mem::take(&mut self.slowest_us), Ordering::Relaxed);
    }

    fn on_close(&mut self, _: &mut Context<'_>, id: ConnId, _: (), reason: CloseReason) {
        let slot = id.slot() as usize;
        if let Some(conn) = self.conns.get_mut(slot).and_then(Option::take) {
            if conn.ws.as_ref().is_some_and(|l| !l.upgraded()) {
                // Never established: a failed connect, not a lost one.
                self.connect_failed(format!("closed during the WebSocket upgrade ({reason:?})"));
                return;
            }
            self.result.unanswered += conn.in_flight as u64;
            self.in_flight -= conn.in_flight as u64;
            self.rotation.remove(slot as u32);
            if reason != CloseReason::ServerStopping {
                self.error("closed by peer", || format!("{id}: {reason:?}"));
            }
        }
    }
}

impl Drop for BenchHandler {
    fn drop(&mut self) {
        for conn in self.conns.iter().flatten() {
            self.result.unanswered += conn.in_flight as u64;
        }
        let result = std::mem::replace(&mut self.result, ShardResult::new());
        if let Ok(mut results) = self.shared.results.lock() {
            results.push(result);
        }
    }
}
