//! The scripted peers of `framed_seam_tests`: one engine on the built-in
//! framed path or through the seam, a recording handler, and a small
//! scripted kernel over the `Sim` harness (see the parent module's docs).

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use crate::codec::{Codec, MAX_HEADER_LEN};
use crate::config::ServerConfig;
use crate::conn_id::ConnId;
use crate::engine::Engine;
use crate::engine::sim::{Sim, shard_with};
use crate::error::CloseReason;
use crate::handler::{Context, Handler};
use crate::protocol::framed::FramedListener;
use crate::protocol::{ListenerProtocol, MessageKind};
use crate::sys::{Completion, Op};

const TABLE: usize = 64;

/// What the handler saw, by slot.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Seen {
    Connect(u32),
    Message(u32, Vec<u8>),
    Close(u32, CloseReason),
}

/// Records everything; `all:x` broadcasts `x`, `text:x` answers `x` as a
/// text message, anything else is echoed.
pub(super) struct Recorder(pub(super) Rc<RefCell<Vec<Seen>>>);

impl Handler for Recorder {
    type ConnState = ();

    fn on_connect(&mut self, _: &mut Context<'_>, conn: ConnId, _: SocketAddr) {
        self.0.borrow_mut().push(Seen::Connect(conn.slot()));
    }

    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: &mut (), m: &[u8]) {
        self.0
            .borrow_mut()
            .push(Seen::Message(conn.slot(), m.to_vec()));
        assert_eq!(ctx.message_kind(), MessageKind::Binary);
        if let Some(all) = m.strip_prefix(b"all:") {
            ctx.broadcast(all).unwrap();
        } else if let Some(text) = m.strip_prefix(b"text:") {
            ctx.send_as(conn, MessageKind::Text, text).unwrap();
        } else {
            ctx.send(conn, m).unwrap();
        }
    }

    fn on_close(&mut self, _: &mut Context<'_>, conn: ConnId, _: (), reason: CloseReason) {
        self.0.borrow_mut().push(Seen::Close(conn.slot(), reason));
    }
}

/// Which receive path a run takes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Path {
    BuiltIn,
    Seam,
}

/// What a run produced: compared between the paths.
#[derive(Debug, PartialEq)]
pub(super) struct Transcript {
    pub(super) seen: Vec<Seen>,
    /// The bytes each connection's peer received, by slot.
    pub(super) wire: BTreeMap<u32, Vec<u8>>,
}

/// How a run went (differs between the paths by design: not compared).
#[derive(Debug, Default)]
pub(super) struct Counts {
    pub(super) direct_receives: usize,
    pub(super) recv_cancels: usize,
}

/// Something a peer sent, not yet received: bytes, or its end.
pub(super) enum Sent {
    Bytes(Vec<u8>),
    End,
}

/// One engine and its peers (see the module docs).
pub(super) struct Peers<C: Codec> {
    pub(super) sim: Sim<Recorder, C>,
    pub(super) seen: Rc<RefCell<Vec<Seen>>>,
    pub(super) wire: BTreeMap<u32, Vec<u8>>,
    pub(super) generations: BTreeMap<u32, u32>,
    /// Slots with a multishot receive armed.
    pub(super) armed: BTreeSet<u32>,
    /// The slot with a direct receive posted (its target is `sim.target`).
    pub(super) direct: Option<u32>,
    /// What each peer sent that was not received yet.
    pub(super) pending: BTreeMap<u32, VecDeque<Sent>>,
    /// Peers not reading: their sends stay in flight.
    pub(super) stalled: BTreeSet<u32>,
    /// Sends in flight to a stalled peer: slot and length.
    pub(super) held: Vec<(u32, usize)>,
    pub(super) counts: Counts,
    pub(super) now_ms: u64,
}

impl<C: Codec + Sync> Peers<C> {
    pub(super) fn new(codec: C, path: Path, tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let t0 = crate::engine::tests::virtual_t0();
        let engine = Engine::new(
            0,
            shard_with(TABLE, tweak),
            codec.clone(),
            TABLE,
            Recorder(seen.clone()),
            true,
            t0,
        );
        let engine = match path {
            Path::BuiltIn => engine,
            Path::Seam => {
                let framed: Arc<dyn ListenerProtocol> = Arc::new(FramedListener::new(codec));
                engine.with_protocols(vec![Some(framed)])
            }
        };
        let mut sim = Sim::new(engine, t0);
        sim.record_sends();
        Peers {
            sim,
            seen,
            wire: BTreeMap::new(),
            generations: BTreeMap::new(),
            armed: BTreeSet::new(),
            direct: None,
            pending: BTreeMap::new(),
            stalled: BTreeSet::new(),
            held: Vec::new(),
            counts: Counts::default(),
            now_ms: 0,
        }
    }

    pub(super) fn conn(&self, slot: u32) -> ConnId {
        ConnId::new(0, slot, self.generations[&slot])
    }

    /// A client connects (listener 0) into `slot`.
    pub(super) fn accept(&mut self, slot: u32) {
        let ops = self
            .sim
            .accepted(0, slot, "127.0.0.9:4000".parse().unwrap());
        let generation = ops
            .iter()
            .find_map(|op| match op {
                Op::Recv { generation, .. } => Some(*generation),
                _ => None,
            })
            .expect("an accepted connection starts receiving");
        self.generations.insert(slot, generation);
        self.settle(ops);
    }

    /// The peer of `slot` sends `bytes` (one receive's worth).
    pub(super) fn peer_sends(&mut self, slot: u32, bytes: &[u8]) {
        self.pending
            .entry(slot)
            .or_default()
            .push_back(Sent::Bytes(bytes.to_vec()));
        self.settle(Vec::new());
    }

    /// The peer of `slot` sends `pieces`, one write each.
    pub(super) fn peer_sends_each(&mut self, slot: u32, pieces: &[Vec<u8>]) {
        for piece in pieces {
            self.peer_sends(slot, piece);
        }
    }

    /// The peer of `slot` closes its side.
    pub(super) fn peer_closes(&mut self, slot: u32) {
        self.pending.entry(slot).or_default().push_back(Sent::End);
        self.settle(Vec::new());
    }

    /// The peer of `slot` stops reading: sends to it stay in flight.
    pub(super) fn stall(&mut self, slot: u32) {
        self.stalled.insert(slot);
    }

    /// The peer of `slot` reads again: its sends in flight complete.
    pub(super) fn unstall(&mut self, slot: u32) {
        self.stalled.remove(&slot);
        let mut ops = Vec::new();
        for (s, len) in std::mem::take(&mut self.held) {
            if s == slot {
                ops.extend(self.sim.sent(self.conn(s), len as i32));
            } else {
                self.held.push((s, len));
            }
        }
        self.settle(ops);
    }

    /// Virtual time moves to `ms`: a loop turn then.
    pub(super) fn turn(&mut self, ms: u64) {
        self.now_ms = ms;
        self.settle(Vec::new());
    }

    /// Carries out `ops` and everything they lead to, delivers what the
    /// peers sent while the engine can receive it, and turns the loop (at
    /// the current virtual time), until nothing moves.
    pub(super) fn settle(&mut self, ops: Vec<Op>) {
        let mut queue = VecDeque::from(ops);
        for _ in 0..100_000 {
            self.complete_sends(&mut queue);
            if let Some(op) = queue.pop_front() {
                self.carry_out(op, &mut queue);
            } else if !self.deliver_one(&mut queue) {
                // The shard loop's turn after the completions: queued
                // replies are sent, receives re-armed.
                queue.extend(self.sim.turn(self.now_ms));
                if queue.is_empty() && self.sim.sends.as_ref().is_some_and(Vec::is_empty) {
                    return;
                }
            }
        }
        panic!("the scripted kernel did not settle");
    }

    /// Sends the engine asked for reach their peers; they complete unless
    /// the peer is stalled.
    pub(super) fn complete_sends(&mut self, queue: &mut VecDeque<Op>) {
        loop {
            let sends = std::mem::take(self.sim.sends.as_mut().expect("recording"));
            if sends.is_empty() {
                return;
            }
            for (slot, bytes) in sends {
                let len = bytes.len();
                self.wire.entry(slot).or_default().extend(bytes);
                if self.stalled.contains(&slot) {
                    self.held.push((slot, len));
                } else {
                    queue.extend(self.sim.sent(self.conn(slot), len as i32));
                }
            }
        }
    }

    pub(super) fn carry_out(&mut self, op: Op, queue: &mut VecDeque<Op>) {
        match op {
            Op::Recv { slot, .. } => {
                self.armed.insert(slot);
            }
            Op::CancelRecv { slot, generation } => {
                self.counts.recv_cancels += 1;
                self.armed.remove(&slot);
                queue.extend(self.sim.complete(Completion::Recv {
                    slot,
                    generation,
                    result: -libc::ECANCELED,
                    buf: None,
                    more: false,
                }));
            }
            Op::RecvInto { slot, .. } => {
                self.counts.direct_receives += 1;
                self.direct = Some(slot);
            }
            Op::CancelRecvInto { slot, generation } => {
                self.direct = None;
                self.sim.target = None;
                queue.extend(self.sim.complete(Completion::RecvInto {
                    slot,
                    generation,
                    result: -libc::ECANCELED,
                }));
            }
            Op::CancelSend { slot, generation } => {
                self.held.retain(|&(s, _)| s != slot);
                queue.extend(self.sim.complete(Completion::Sent {
                    slot,
                    generation,
                    result: -libc::ECANCELED,
                }));
            }
            Op::Close { slot, .. } => {
                self.armed.remove(&slot);
                queue.extend(self.sim.closed(self.conn(slot)));
            }
            // Sends were carried out as they were drained; accepts stay
            // posted.
            _ => {}
        }
    }

    /// One receive of what a peer sent, if the engine can take it now.
    pub(super) fn deliver_one(&mut self, queue: &mut VecDeque<Op>) -> bool {
        let ready = self.pending.iter().find_map(|(&slot, sent)| {
            let receiving = self.direct == Some(slot) || self.armed.contains(&slot);
            (receiving && !sent.is_empty()).then_some(slot)
        });
        let Some(slot) = ready else {
            return false;
        };
        let conn = self.conn(slot);
        let sent = self.pending.get_mut(&slot).unwrap().pop_front().unwrap();
        let ops = match sent {
            Sent::End if self.direct == Some(slot) => {
                self.direct = None;
                self.sim.target = None;
                self.sim.complete(Completion::RecvInto {
                    slot,
                    generation: conn.generation(),
                    result: 0,
                })
            }
            Sent::End => {
                self.armed.remove(&slot);
                self.sim.recv_ended(conn, 0)
            }
            Sent::Bytes(bytes) if self.direct == Some(slot) => {
                let target = self.sim.target.take().expect("a direct receive's target");
                let n = bytes.len().min(target.len);
                // SAFETY: the target is the spare capacity of the
                // connection's reassembly buffer, `target.len` bytes, left
                // alone by the engine until this completion (the contract a
                // driver keeps).
                unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), target.ptr, n) };
                if n < bytes.len() {
                    let rest = Sent::Bytes(bytes[n..].to_vec());
                    self.pending.get_mut(&slot).unwrap().push_front(rest);
                }
                self.direct = None;
                self.sim.complete(Completion::RecvInto {
                    slot,
                    generation: conn.generation(),
                    result: n as i32,
                })
            }
            Sent::Bytes(bytes) => self.sim.receive(conn, &bytes),
        };
        queue.extend(ops);
        true
    }

    pub(super) fn finish(self) -> (Transcript, Counts) {
        let seen = self.seen.borrow().clone();
        let transcript = Transcript {
            seen,
            wire: self.wire,
        };
        (transcript, self.counts)
    }
}

/// Runs `script` on the built-in path and through the seam; the two
/// transcripts must be equal. Returns it, and how each run went.
pub(super) fn both<C: Codec + Sync>(
    codec: C,
    tweak: impl Fn(&mut ServerConfig),
    script: impl Fn(&mut Peers<C>),
) -> (Transcript, Counts, Counts) {
    let mut built_in = Peers::new(codec.clone(), Path::BuiltIn, &tweak);
    script(&mut built_in);
    let (expected, built_in_counts) = built_in.finish();
    let mut seam = Peers::new(codec, Path::Seam, &tweak);
    script(&mut seam);
    let (got, seam_counts) = seam.finish();
    assert_eq!(got, expected, "through the seam vs. the built-in path");
    // The seam never receives directly: the runs did take different paths.
    assert_eq!(seam_counts.direct_receives, 0);
    (expected, built_in_counts, seam_counts)
}

/// `payload` framed by `codec` (header, payload, trailer).
pub(super) fn encode(codec: &impl Codec, payload: &[u8]) -> Vec<u8> {
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = codec.encode_header(payload.len(), &mut head).unwrap();
    let mut wire = head[..n].to_vec();
    wire.extend_from_slice(payload);
    wire.extend_from_slice(codec.trailer());
    wire
}

pub(super) fn payload(len: usize, seed: u8) -> Vec<u8> {
    // No line ends: a payload is one line for `Lines`.
    (0..len)
        .map(|i| b'a' + ((i * 7 + seed as usize) % 26) as u8)
        .collect()
}

/// `stream` cut at `cuts` (offsets, ascending), then the rest.
pub(super) fn cut(stream: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut pieces = Vec::new();
    let mut from = 0;
    for &to in cuts.iter().chain([&stream.len()]) {
        let to = to.min(stream.len());
        if to > from {
            pieces.push(stream[from..to].to_vec());
            from = to;
        }
    }
    pieces
}
