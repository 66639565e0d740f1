//! The framed codec through the protocol seam against the engine's built-in
//! framed path, deterministic (scripted completions, virtual time): every
//! scenario runs twice, once on a listener without protocol (the built-in
//! path, with its direct receives) and once on a listener whose protocol is
//! `protocol::framed::FramedListener` (`Engine::with_protocols`), and the
//! two runs must give the handler the same calls and the peers the same
//! bytes. Each scenario also checks what that transcript must be.
//!
//! The peers are a small scripted kernel over the [`Sim`] harness: what a
//! peer sends is received through the multishot receive when one is armed,
//! written into the target of a direct receive when the engine posted one,
//! and held while neither is (a paused connection); sends complete at once
//! unless the peer is not reading; cancels and closes complete as the
//! kernel completes them.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Engine;
use super::sim::{Sim, shard_with};
use crate::codec::{Codec, LengthDelimited, Lines, MAX_HEADER_LEN, RawBytes};
use crate::config::ServerConfig;
use crate::conn_id::ConnId;
use crate::error::CloseReason;
use crate::handler::{Context, Handler};
use crate::protocol::framed::FramedListener;
use crate::protocol::{ListenerProtocol, MessageKind};
use crate::sys::{Completion, Op};

const TABLE: usize = 64;

/// What the handler saw, by slot.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Connect(u32),
    Message(u32, Vec<u8>),
    Close(u32, CloseReason),
}

/// Records everything; `all:x` broadcasts `x`, `text:x` answers `x` as a
/// text message, anything else is echoed.
struct Recorder(Rc<RefCell<Vec<Seen>>>);

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
enum Path {
    BuiltIn,
    Seam,
}

/// What a run produced: compared between the paths.
#[derive(Debug, PartialEq)]
struct Transcript {
    seen: Vec<Seen>,
    /// The bytes each connection's peer received, by slot.
    wire: BTreeMap<u32, Vec<u8>>,
}

/// How a run went (differs between the paths by design: not compared).
#[derive(Debug, Default)]
struct Counts {
    direct_receives: usize,
    recv_cancels: usize,
}

/// Something a peer sent, not yet received: bytes, or its end.
enum Sent {
    Bytes(Vec<u8>),
    End,
}

/// One engine and its peers (see the module docs).
struct Peers<C: Codec> {
    sim: Sim<Recorder, C>,
    seen: Rc<RefCell<Vec<Seen>>>,
    wire: BTreeMap<u32, Vec<u8>>,
    generations: BTreeMap<u32, u32>,
    /// Slots with a multishot receive armed.
    armed: BTreeSet<u32>,
    /// The slot with a direct receive posted (its target is `sim.target`).
    direct: Option<u32>,
    /// What each peer sent that was not received yet.
    pending: BTreeMap<u32, VecDeque<Sent>>,
    /// Peers not reading: their sends stay in flight.
    stalled: BTreeSet<u32>,
    /// Sends in flight to a stalled peer: slot and length.
    held: Vec<(u32, usize)>,
    counts: Counts,
    now_ms: u64,
}

impl<C: Codec + Sync> Peers<C> {
    fn new(codec: C, path: Path, tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let seen = Rc::new(RefCell::new(Vec::new()));
        let t0 = Instant::now();
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

    fn conn(&self, slot: u32) -> ConnId {
        ConnId::new(0, slot, self.generations[&slot])
    }

    /// A client connects (listener 0) into `slot`.
    fn accept(&mut self, slot: u32) {
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
    fn peer_sends(&mut self, slot: u32, bytes: &[u8]) {
        self.pending
            .entry(slot)
            .or_default()
            .push_back(Sent::Bytes(bytes.to_vec()));
        self.settle(Vec::new());
    }

    /// The peer of `slot` closes its side.
    fn peer_closes(&mut self, slot: u32) {
        self.pending.entry(slot).or_default().push_back(Sent::End);
        self.settle(Vec::new());
    }

    /// The peer of `slot` stops reading: sends to it stay in flight.
    fn stall(&mut self, slot: u32) {
        self.stalled.insert(slot);
    }

    /// The peer of `slot` reads again: its sends in flight complete.
    fn unstall(&mut self, slot: u32) {
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
    fn turn(&mut self, ms: u64) {
        self.now_ms = ms;
        self.settle(Vec::new());
    }

    /// Carries out `ops` and everything they lead to, delivers what the
    /// peers sent while the engine can receive it, and turns the loop (at
    /// the current virtual time), until nothing moves.
    fn settle(&mut self, ops: Vec<Op>) {
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
    fn complete_sends(&mut self, queue: &mut VecDeque<Op>) {
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

    fn carry_out(&mut self, op: Op, queue: &mut VecDeque<Op>) {
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
    fn deliver_one(&mut self, queue: &mut VecDeque<Op>) -> bool {
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

    fn finish(self) -> (Transcript, Counts) {
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
fn both<C: Codec + Sync>(
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
fn encode(codec: &impl Codec, payload: &[u8]) -> Vec<u8> {
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = codec.encode_header(payload.len(), &mut head).unwrap();
    let mut wire = head[..n].to_vec();
    wire.extend_from_slice(payload);
    wire.extend_from_slice(codec.trailer());
    wire
}

fn payload(len: usize, seed: u8) -> Vec<u8> {
    // No line ends: a payload is one line for `Lines`.
    (0..len)
        .map(|i| b'a' + ((i * 7 + seed as usize) % 26) as u8)
        .collect()
}

/// `stream` cut at `cuts` (offsets, ascending), then the rest.
fn cut(stream: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
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

/// Echo of messages cut across receives and several per receive, a text
/// reply among them, for a codec with a header and one with a trailer.
fn echo_in_pieces<C: Codec + Sync>(codec: C) {
    let messages = [
        payload(5, 1),
        b"text:a text reply".to_vec(),
        payload(300, 2),
        payload(1, 3),
        payload(2000, 4),
        payload(17, 5),
        payload(40, 6),
    ];
    let stream: Vec<u8> = messages.iter().flat_map(|m| encode(&codec, m)).collect();
    // A byte at a time, then headers and payloads cut, then three messages
    // and a half in one receive, then the rest.
    let pieces = cut(&stream, &[1, 2, 3, 4, 9, 30, 100, 320, 2330, 2340]);
    let (t, _, _) = both(
        codec.clone(),
        |_| {},
        |p| {
            p.accept(4);
            for piece in &pieces {
                p.peer_sends(4, piece);
            }
        },
    );
    let mut expected = vec![Seen::Connect(4)];
    expected.extend(messages.iter().map(|m| Seen::Message(4, m.clone())));
    assert_eq!(t.seen, expected);
    let replies: Vec<u8> = messages
        .iter()
        .flat_map(|m| encode(&codec, m.strip_prefix(b"text:").unwrap_or(m)))
        .collect();
    assert_eq!(t.wire[&4], replies);
}

#[test]
fn echo_of_length_delimited_frames_cut_anywhere() {
    echo_in_pieces(LengthDelimited::new().max_frame_length(1 << 20));
    // Netty's rules: a 4-byte header, the length field in its last two.
    echo_in_pieces(LengthDelimited::netty(1 << 20, 2, 2, 0, 4, true));
}

#[test]
fn echo_of_lines_cut_anywhere() {
    echo_in_pieces(Lines::new().max_line_length(4096));
}

#[test]
fn echo_of_raw_bytes_keeps_the_receives_as_messages() {
    let pieces = cut(&payload(5000, 9), &[1, 10, 1000, 1001, 3000]);
    let (t, _, _) = both(
        RawBytes::new().max_frame_length(2048),
        |_| {},
        |p| {
            p.accept(2);
            for piece in &pieces {
                p.peer_sends(2, piece);
            }
        },
    );
    let mut expected = vec![Seen::Connect(2)];
    for piece in &pieces {
        // Longer receives are cut at the maximum.
        for m in piece.chunks(2048) {
            expected.push(Seen::Message(2, m.to_vec()));
        }
    }
    assert_eq!(t.seen, expected);
    assert_eq!(t.wire[&2], pieces.concat());
}

#[test]
fn a_large_frame_and_the_one_after_it() {
    let codec = LengthDelimited::new().max_frame_length(1 << 20);
    let big = payload(200_000, 7);
    let mut stream = encode(&codec, &big);
    stream.extend(encode(&codec, b"after"));
    let pieces: Vec<Vec<u8>> = stream.chunks(16 * 1024).map(<[u8]>::to_vec).collect();
    let (t, built_in, _) = both(
        codec.clone(),
        |_| {},
        |p| {
            p.accept(9);
            for piece in &pieces {
                p.peer_sends(9, piece);
            }
        },
    );
    assert_eq!(
        t.seen,
        vec![
            Seen::Connect(9),
            Seen::Message(9, big.clone()),
            Seen::Message(9, b"after".to_vec())
        ]
    );
    assert_eq!(t.wire[&9], stream);
    assert!(
        built_in.direct_receives > 0,
        "the built-in path took its zero-copy receive"
    );
}

fn broadcast_to_everyone<C: Codec + Sync>(codec: C) {
    let announce = encode(&codec, b"all:news for everyone");
    let (t, _, _) = both(
        codec.clone(),
        |_| {},
        |p| {
            for slot in [1, 2, 3] {
                p.accept(slot);
            }
            p.peer_sends(2, &announce[..3]);
            p.peer_sends(2, &announce[3..]);
        },
    );
    assert_eq!(
        t.seen,
        vec![
            Seen::Connect(1),
            Seen::Connect(2),
            Seen::Connect(3),
            Seen::Message(2, b"all:news for everyone".to_vec()),
        ]
    );
    let news = encode(&codec, b"news for everyone");
    for slot in [1, 2, 3] {
        assert_eq!(t.wire[&slot], news, "slot {slot}");
    }
}

#[test]
fn a_broadcast_reaches_every_connection_framed_alike() {
    broadcast_to_everyone(LengthDelimited::new());
    broadcast_to_everyone(Lines::new());
}

#[test]
fn an_over_long_frame_closes_with_the_same_reason_after_the_frames_before_it() {
    // A header announcing too much.
    let codec = LengthDelimited::new().max_frame_length(1000);
    let mut stream = encode(&codec, b"ok");
    stream.extend_from_slice(&5000u32.to_be_bytes());
    stream.extend_from_slice(&[1; 64]);
    let (t, _, _) = both(
        codec.clone(),
        |_| {},
        |p| {
            p.accept(6);
            p.peer_sends(6, &stream[..3]);
            p.peer_sends(6, &stream[3..]);
        },
    );
    assert_eq!(
        t.seen,
        vec![
            Seen::Connect(6),
            Seen::Message(6, b"ok".to_vec()),
            Seen::Close(
                6,
                CloseReason::FrameTooLarge {
                    len: 5000,
                    max: 1000
                }
            ),
        ]
    );
    assert_eq!(t.wire[&6], encode(&codec, b"ok"), "the reply flushed first");

    // A line that does not end in time.
    let codec = Lines::new().max_line_length(16);
    let (t, _, _) = both(
        codec,
        |_| {},
        |p| {
            p.accept(6);
            p.peer_sends(6, b"fine\nthis line goes on ");
            p.peer_sends(6, b"and on and on and on\nnever seen\n");
        },
    );
    assert!(
        matches!(
            t.seen.as_slice(),
            [
                Seen::Connect(6),
                Seen::Message(6, fine),
                Seen::Close(6, CloseReason::FrameTooLarge { max: 16, .. })
            ] if fine == b"fine"
        ),
        "{:?}",
        t.seen
    );
    assert_eq!(t.wire[&6], b"fine\n");
}

#[test]
fn a_paused_connection_resumes_without_loss() {
    let codec = LengthDelimited::new().max_frame_length(1 << 20);
    let messages: Vec<Vec<u8>> = (0..24).map(|i| payload(1000, i)).collect();
    let stream: Vec<u8> = messages.iter().flat_map(|m| encode(&codec, m)).collect();
    let pieces: Vec<Vec<u8>> = stream.chunks(3000).map(<[u8]>::to_vec).collect();
    let (t, built_in, seam) = both(
        codec.clone(),
        |c| c.send_high_water = 4096,
        |p| {
            p.accept(5);
            // The peer writes everything without reading its replies.
            p.stall(5);
            for piece in &pieces {
                p.peer_sends(5, piece);
            }
            let during = p.seen.borrow().len();
            assert!(
                during < 1 + messages.len(),
                "reading paused before the end ({during} calls)"
            );
            assert!(
                !p.pending[&5].is_empty(),
                "input waits for the pause to end"
            );
            p.unstall(5);
        },
    );
    assert!(built_in.recv_cancels > 0 && seam.recv_cancels > 0, "paused");
    let mut expected = vec![Seen::Connect(5)];
    expected.extend(messages.iter().map(|m| Seen::Message(5, m.clone())));
    assert_eq!(t.seen, expected);
    assert_eq!(t.wire[&5], stream);
}

#[test]
fn an_idle_connection_is_closed_on_time() {
    let codec = LengthDelimited::new();
    let (t, _, _) = both(
        codec.clone(),
        |c| c.idle_timeout = Some(Duration::from_millis(300)),
        |p| {
            p.turn(0);
            p.accept(8);
            p.accept(9);
            for ms in (100..=1200).step_by(100) {
                p.turn(ms);
                // Slot 9 keeps talking until 700 ms.
                if ms <= 700 {
                    p.peer_sends(9, &encode(&LengthDelimited::new(), b"here"));
                }
                let closed = p
                    .seen
                    .borrow()
                    .iter()
                    .filter(|s| matches!(s, Seen::Close(..)))
                    .count();
                match ms {
                    ..=200 => assert_eq!(closed, 0, "at {ms} ms"),
                    1200 => assert_eq!(closed, 2, "at {ms} ms"),
                    _ => {}
                }
            }
        },
    );
    let closes: Vec<&Seen> = t
        .seen
        .iter()
        .filter(|s| matches!(s, Seen::Close(..)))
        .collect();
    assert_eq!(
        closes,
        [
            &Seen::Close(8, CloseReason::IdleTimeout),
            &Seen::Close(9, CloseReason::IdleTimeout)
        ]
    );
    assert_eq!(t.wire[&9], encode(&codec, b"here").repeat(7));
}

#[test]
fn a_peer_closing_after_its_last_frame_gets_its_replies_first() {
    let codec = LengthDelimited::new();
    let stream: Vec<u8> = [b"one".as_slice(), b"two", b"three"]
        .iter()
        .flat_map(|m| encode(&codec, m))
        .collect();
    let (t, _, _) = both(
        codec.clone(),
        |_| {},
        |p| {
            p.accept(3);
            p.peer_sends(3, &stream[..9]);
            p.peer_sends(3, &stream[9..]);
            p.peer_closes(3);
        },
    );
    assert_eq!(
        t.seen,
        vec![
            Seen::Connect(3),
            Seen::Message(3, b"one".to_vec()),
            Seen::Message(3, b"two".to_vec()),
            Seen::Message(3, b"three".to_vec()),
            Seen::Close(3, CloseReason::PeerClosed),
        ]
    );
    assert_eq!(t.wire[&3], stream);
}

#[test]
fn a_peer_closing_inside_a_frame_is_a_truncated_frame_alike() {
    let codec = LengthDelimited::new();
    let whole = encode(&codec, &payload(100, 1));
    // A header cut short, and a frame cut in its payload.
    for (cut_at, expected) in [
        (
            2,
            CloseReason::TruncatedFrame {
                have: 2,
                missing: None,
            },
        ),
        (
            40,
            CloseReason::TruncatedFrame {
                have: 40,
                missing: Some(64),
            },
        ),
    ] {
        let mut stream = encode(&codec, b"one");
        stream.extend_from_slice(&whole[..cut_at]);
        let (t, _, _) = both(
            codec.clone(),
            |_| {},
            |p| {
                p.accept(3);
                p.peer_sends(3, &stream);
                p.peer_closes(3);
            },
        );
        assert_eq!(
            t.seen,
            vec![
                Seen::Connect(3),
                Seen::Message(3, b"one".to_vec()),
                Seen::Close(3, expected),
            ]
        );
    }
}

#[test]
fn a_frame_not_complete_in_time_closes_alike() {
    let codec = LengthDelimited::new();
    let frame = encode(&codec, &payload(1000, 2));
    let (t, _, _) = both(
        codec.clone(),
        |c| c.frame_timeout = Some(Duration::from_millis(500)),
        |p| {
            p.turn(0);
            p.accept(2);
            p.accept(3);
            p.peer_sends(2, &frame[..100]);
            // Slot 3's frame completes in time, in pieces.
            p.peer_sends(3, &frame[..300]);
            p.turn(200);
            p.peer_sends(3, &frame[300..]);
            for ms in (300..=2000).step_by(100) {
                p.turn(ms);
                // Another byte every 100 ms does not save a frame.
                if ms <= 1000 {
                    p.peer_sends(2, &frame[100 + ms as usize / 100..101 + ms as usize / 100]);
                }
            }
        },
    );
    let closes: Vec<&Seen> = t
        .seen
        .iter()
        .filter(|s| matches!(s, Seen::Close(..)))
        .collect();
    assert!(
        matches!(
            closes.as_slice(),
            [Seen::Close(2, CloseReason::FrameTimeout { have, missing: Some(missing) })]
                if have + missing == frame.len() as u64 && *have > 100
        ),
        "{closes:?}"
    );
    assert_eq!(t.wire[&3], frame, "the frame completed in time is echoed");
}

#[test]
fn an_over_long_frame_is_counted_alike() {
    let codec = LengthDelimited::new().max_frame_length(1000);
    let mut counted = Vec::new();
    let counted_ref = RefCell::new(&mut counted);
    both(
        codec,
        |_| {},
        |p| {
            p.accept(6);
            p.peer_sends(6, &5000u32.to_be_bytes());
            counted_ref
                .borrow_mut()
                .push(p.sim.engine.core.stats.frames_too_large);
        },
    );
    assert_eq!(counted, vec![1, 1], "built-in, then through the seam");
}
