//! Direct receive (`super::direct`) with a scripted backend: ops are
//! drained and checked, completions fed by hand, and the bytes of a direct
//! receive written into the target the engine gives for it, as the kernel
//! would.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use super::Engine;
use super::direct::{BULK_MAX, DIRECT_MIN};
use super::sim::{Sim, deref_to_sim};
use crate::codec::{LengthDelimited, MAX_HEADER_LEN};
use crate::config::ServerConfig;
use crate::conn_id::ConnId;
use crate::error::CloseReason;
use crate::handler::{Context, Handler};
use crate::sys::{Completion, Op};

const TABLE: usize = 128;
const MAX_FRAME: usize = 1 << 24;

/// Echoes every message; records messages and closes.
#[derive(Default)]
struct Echo {
    messages: Rc<RefCell<Vec<Vec<u8>>>>,
    closes: Rc<RefCell<Vec<CloseReason>>>,
}

impl Handler for Echo {
    type ConnState = ();

    fn on_connect(&mut self, _: &mut Context<'_>, _: ConnId, _: SocketAddr) {}

    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: &mut (), message: &[u8]) {
        self.messages.borrow_mut().push(message.to_vec());
        ctx.send(conn, message).unwrap();
    }

    fn on_close(&mut self, _: &mut Context<'_>, _: ConnId, _: (), reason: CloseReason) {
        self.closes.borrow_mut().push(reason);
    }
}

struct Harness {
    sim: Sim<Echo>,
    messages: Rc<RefCell<Vec<Vec<u8>>>>,
    closes: Rc<RefCell<Vec<CloseReason>>>,
}

deref_to_sim!(Harness, Echo);

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(payload);
    v
}

fn payload(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
}

impl Harness {
    fn new(tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let mut config = ServerConfig {
            tick: Duration::from_millis(100),
            ..ServerConfig::default()
        };
        tweak(&mut config);
        let shared = super::memory_tests::one_shard_with(TABLE, MAX_FRAME, config);
        let handler = Echo::default();
        let (messages, closes) = (handler.messages.clone(), handler.closes.clone());
        let t0 = Instant::now();
        let codec = LengthDelimited::new().max_frame_length(MAX_FRAME);
        let engine = Engine::new(0, shared, codec, TABLE, handler, true, t0);
        Harness {
            sim: Sim::new(engine, t0),
            messages,
            closes,
        }
    }

    fn accept(&mut self, slot: u32) -> ConnId {
        let ops = self.accepted(0, slot, "127.0.0.9:4000".parse().unwrap());
        let Some(&Op::Recv { generation, .. }) = ops.first() else {
            panic!("an accepted connection starts receiving: {ops:?}");
        };
        ConnId::new(0, slot, generation)
    }

    /// `bytes` arrive through the multishot receive.
    fn receive(&mut self, conn: ConnId, bytes: &[u8], more: bool) -> Vec<Op> {
        self.receive_more(conn, bytes, more)
    }

    /// Room of the posted direct receive.
    fn room(&self) -> usize {
        self.target.expect("a direct receive posted").len
    }

    /// The direct receive completes with (up to its room of) `bytes`,
    /// written into its target as the kernel does. Returns the bytes taken.
    fn receive_into(&mut self, conn: ConnId, bytes: &[u8]) -> (usize, Vec<Op>) {
        let target = self.target.take().expect("a direct receive posted");
        let n = bytes.len().min(target.len);
        // SAFETY: the target is the spare capacity of the connection's
        // reassembly buffer, `target.len` bytes, left alone by the engine
        // until this completion (the contract the fake kernel keeps too).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), target.ptr, n) };
        let ops = self.complete(Completion::RecvInto {
            slot: conn.slot(),
            generation: conn.generation(),
            result: n as i32,
        });
        (n, ops)
    }

    fn recv_into_ended(&mut self, conn: ConnId, result: i32) -> Vec<Op> {
        self.target = None;
        self.complete(Completion::RecvInto {
            slot: conn.slot(),
            generation: conn.generation(),
            result,
        })
    }

    /// Feeds `rest` through direct receives, `piece` bytes at most each;
    /// every completion but the last must post the next one.
    fn receive_rest_directly(&mut self, conn: ConnId, mut rest: &[u8], piece: usize) -> Vec<Op> {
        loop {
            let want = rest.len().min(piece);
            let (n, ops) = self.receive_into(conn, &rest[..want]);
            rest = &rest[n..];
            if rest.is_empty() {
                return ops;
            }
            assert!(
                ops.iter().any(|op| matches!(op, Op::RecvInto { .. })),
                "the next direct receive: {ops:?}"
            );
        }
    }

    fn stats(&self) -> &crate::stats::Stats {
        &self.engine.core.stats
    }
}

fn has(ops: &[Op], pred: impl Fn(&Op) -> bool) -> bool {
    ops.iter().any(pred)
}

/// The common start: `wire`'s first `first` bytes arrive through the
/// multishot receive, which the engine cancels to switch; its last
/// completion brings `also` more, then the direct receive is posted.
fn switch_to_direct(h: &mut Harness, conn: ConnId, wire: &[u8], first: usize, also: usize) {
    let ops = h.receive(conn, &wire[..first], true);
    assert!(
        has(&ops, |op| matches!(op, Op::CancelRecv { .. })),
        "a large located frame ends the multishot receive: {ops:?}"
    );
    let ops = if also > 0 {
        h.receive(conn, &wire[first..first + also], false)
    } else {
        h.recv_ended(conn, -libc::ECANCELED)
    };
    assert!(
        has(&ops, |op| matches!(op, Op::RecvInto { .. })),
        "a direct receive follows the multishot's end: {ops:?}"
    );
}

#[test]
fn large_frame_is_received_directly_in_pieces_and_echoed() {
    let mut h = Harness::new(|c| c.send_high_water = 4 << 20);
    let conn = h.accept(1);
    let body = payload(1 << 20);
    let wire = frame(&body);
    switch_to_direct(&mut h, conn, &wire, 65536, 3000);
    // Odd pieces; the room never passes the frame's end.
    let ops = h.receive_rest_directly(conn, &wire[68536..], 100_003);
    assert_eq!(*h.messages.borrow(), vec![body.clone()]);
    let ops = [ops, h.turn(1)].concat();
    assert!(has(&ops, |op| matches!(op, Op::Send { .. })), "{ops:?}");
    assert!(h.stats().direct_recvs >= 2);
    assert_eq!(h.stats().bytes_in, wire.len() as u64);
    assert_eq!(h.stats().messages_in, 1);
    // Bulk mode once the frame is complete (for a message above BULK_MAX
    // too): the next frame's start is received into a buffer of BULK_MAX
    // bytes and headers, not through the multishot receive.
    assert!(has(&ops, |op| matches!(op, Op::RecvInto { .. })), "{ops:?}");
    assert!(!has(&ops, |op| matches!(op, Op::Recv { .. })), "{ops:?}");
    assert_eq!(h.room(), BULK_MAX + 2 * MAX_HEADER_LEN);
    assert_eq!(h.stats().reassembly_bytes, h.room() as u64);
    // A small message ends it: the multishot receive again, and the input
    // state (and its buffer) is gone.
    let (_, ops) = h.receive_into(conn, &frame(b"small"));
    let ops = [ops, h.turn(1)].concat();
    assert!(has(&ops, |op| matches!(op, Op::Recv { .. })), "{ops:?}");
    assert_eq!(h.stats().messages_in, 2);
    assert_eq!(h.stats().reassembly_bytes, 0);
    assert!(h.engine.core.inputs.get(1).is_none());
}

#[test]
fn the_next_large_frame_continues_in_the_buffer_the_last_one_came_back_in() {
    let mut h = Harness::new(|c| c.send_high_water = 4 << 20);
    let conn = h.accept(1);
    let body = payload(1 << 20);
    let wire = frame(&body);
    switch_to_direct(&mut h, conn, &wire, 65536, 0);
    let ops = [
        h.receive_rest_directly(conn, &wire[65536..], usize::MAX),
        h.turn(1),
    ]
    .concat();
    assert!(has(&ops, |op| matches!(op, Op::Send { .. })), "{ops:?}");
    // The echo holds the frame's buffer until its send completes.
    let pool = h.engine.core.inputs.frame_pool().clone();
    assert_eq!(pool.kept_bytes(), 0);
    let _ = h.sent(conn, wire.len() as i32);
    assert_eq!(pool.kept_bytes(), wire.len(), "the buffer came back");
    // The next frame: its start arrives in the bulk buffer, and the rest
    // continues in the kept buffer (lent, not grown step by step).
    let start = h.room();
    let (_, ops) = h.receive_into(conn, &wire[..start]);
    assert!(has(&ops, |op| matches!(op, Op::RecvInto { .. })), "{ops:?}");
    assert_eq!(
        pool.kept_bytes(),
        start,
        "the kept buffer lent to the frame, the bulk buffer kept in its place"
    );
    assert_eq!(
        h.room(),
        wire.len() - start,
        "room for all the rest at once"
    );
    let _ = h.receive_rest_directly(conn, &wire[start..], usize::MAX);
    assert_eq!(*h.messages.borrow(), vec![body.clone(), body]);
    assert_eq!(h.stats().messages_in, 2);
}

#[test]
fn room_stops_at_the_frame_end_then_bulk_mode_until_a_small_message() {
    let mut h = Harness::new(|_| {});
    let conn = h.accept(1);
    let body = payload(40_000);
    let mut wire = frame(&body);
    wire.extend(frame(b"after"));
    switch_to_direct(&mut h, conn, &wire, 100, 0);
    let missing = 4 + 40_000 - 100;
    assert!(h.room() <= missing);
    let ops = h.receive_rest_directly(conn, &wire[100..4 + 40_000], usize::MAX);
    // A 40 KB message: bulk mode, the next frame is received into a fresh
    // buffer of about that size.
    assert!(has(&ops, |op| matches!(op, Op::RecvInto { .. })), "{ops:?}");
    assert!(
        h.room() >= 40_004 && h.room() <= 40_004 + 64,
        "{}",
        h.room()
    );
    let (_, ops) = h.receive_into(conn, &wire[4 + 40_000..]);
    assert_eq!(*h.messages.borrow(), vec![body, b"after".to_vec()]);
    // A small message ends bulk mode: the multishot receive again, and
    // the input state (and its buffer) is gone.
    let ops = [ops, h.turn(1)].concat();
    assert!(has(&ops, |op| matches!(op, Op::Recv { .. })), "{ops:?}");
    assert!(
        !has(&ops, |op| matches!(op, Op::RecvInto { .. })),
        "{ops:?}"
    );
    assert!(h.engine.core.inputs.get(1).is_none());
    assert_eq!(h.stats().reassembly_bytes, 0);
}

#[test]
fn a_frame_missing_little_stays_on_the_multishot_receive() {
    let mut h = Harness::new(|_| {});
    let conn = h.accept(1);
    let wire = frame(&payload(DIRECT_MIN + 100));
    // Fewer than DIRECT_MIN bytes missing after the first receive.
    let ops = h.receive(conn, &wire[..200], true);
    assert!(
        !has(&ops, |op| matches!(op, Op::CancelRecv { .. })),
        "{ops:?}"
    );
    h.receive(conn, &wire[200..], true);
    assert_eq!(h.messages.borrow().len(), 1);
    assert_eq!(h.stats().direct_recvs, 0);
}

#[test]
fn end_of_stream_inside_a_direct_receive_is_a_truncated_frame() {
    let mut h = Harness::new(|_| {});
    let conn = h.accept(1);
    let wire = frame(&payload(200_000));
    switch_to_direct(&mut h, conn, &wire, 1000, 0);
    let (n, ops) = h.receive_into(conn, &wire[1000..5000]);
    assert!(has(&ops, |op| matches!(op, Op::RecvInto { .. })));
    let have = 1000 + n as u64;
    let ops = h.recv_into_ended(conn, 0);
    assert!(has(&ops, |op| matches!(op, Op::Close { .. })), "{ops:?}");
    h.complete(Completion::Closed {
        slot: 1,
        generation: conn.generation(),
        result: 0,
    });
    assert_eq!(
        *h.closes.borrow(),
        vec![CloseReason::TruncatedFrame {
            have,
            missing: Some(200_004 - have)
        }]
    );
    assert_eq!(h.stats().reassembly_bytes, 0);
}

#[test]
fn an_error_of_a_direct_receive_closes() {
    let mut h = Harness::new(|_| {});
    let conn = h.accept(1);
    let wire = frame(&payload(200_000));
    switch_to_direct(&mut h, conn, &wire, 1000, 0);
    let ops = h.recv_into_ended(conn, -libc::ECONNRESET);
    assert!(has(&ops, |op| matches!(op, Op::Close { .. })), "{ops:?}");
    h.complete(Completion::Closed {
        slot: 1,
        generation: conn.generation(),
        result: 0,
    });
    assert_eq!(
        *h.closes.borrow(),
        vec![CloseReason::Reset(libc::ECONNRESET)]
    );
}

#[test]
fn frame_timeout_cancels_the_direct_receive_and_close_waits_for_it() {
    let mut h = Harness::new(|c| c.frame_timeout = Some(Duration::from_secs(1)));
    let conn = h.accept(1);
    let wire = frame(&payload(300_000));
    switch_to_direct(&mut h, conn, &wire, 1000, 0);
    let mut ops = Vec::new();
    for ms in (100..3000).step_by(100) {
        ops.extend(h.turn(ms));
    }
    assert!(
        has(&ops, |op| matches!(op, Op::CancelRecvInto { .. })),
        "{ops:?}"
    );
    // No close while the receive into the engine's memory is in flight.
    assert!(!has(&ops, |op| matches!(op, Op::Close { .. })), "{ops:?}");
    let ops = h.recv_into_ended(conn, -libc::ECANCELED);
    assert!(has(&ops, |op| matches!(op, Op::Close { .. })), "{ops:?}");
    h.complete(Completion::Closed {
        slot: 1,
        generation: conn.generation(),
        result: 0,
    });
    assert!(matches!(
        h.closes.borrow()[..],
        [CloseReason::FrameTimeout { have: 1000, .. }]
    ));
}

#[test]
fn pause_during_a_direct_receive_holds_the_frame_until_resumed() {
    let mut h = Harness::new(|c| c.send_high_water = 150_000);
    let conn = h.accept(1);
    let body = payload(100_000);
    let wire = frame(&body);
    switch_to_direct(&mut h, conn, &wire, 1000, 0);
    // Output for the connection from elsewhere fills its queue: paused.
    h.engine.core.send_from_elsewhere(
        conn,
        crate::protocol::MessageKind::Binary,
        bytes::Bytes::from(vec![0u8; 160_000]),
    );
    let ops = h.ops();
    assert!(
        has(&ops, |op| matches!(op, Op::CancelRecvInto { .. })),
        "{ops:?}"
    );
    // The cancel came too late: the receive brought the frame's rest.
    let target = h.target.unwrap();
    let rest = &wire[1000..];
    assert!(target.len >= 1000.min(rest.len()));
    let mut received = 1000;
    let (n, ops) = h.receive_into(conn, &rest[..rest.len().min(target.len)]);
    received += n;
    assert!(!has(&ops, |op| matches!(
        op,
        Op::RecvInto { .. } | Op::Recv { .. }
    )));
    assert!(h.messages.borrow().is_empty(), "no message while paused");
    assert_eq!(h.stats().bytes_in, received as u64);
    // The queue drains: resumed; the rest comes directly again.
    let ops = h.turn(1);
    let sent = ops.iter().find(|op| matches!(op, Op::Send { .. }));
    assert!(sent.is_some(), "{ops:?}");
    let ops = h.complete(Completion::Sent {
        slot: 1,
        generation: conn.generation(),
        result: 160_004,
    });
    let mut ops = [ops, h.turn(2)].concat();
    if received < wire.len() {
        assert!(has(&ops, |op| matches!(op, Op::RecvInto { .. })), "{ops:?}");
        ops = h.receive_rest_directly(conn, &wire[received..], usize::MAX);
        ops.extend(h.turn(3));
    }
    assert_eq!(*h.messages.borrow(), vec![body]);
    // Receiving again (a 100 KB message: in bulk mode).
    assert!(
        has(&ops, |op| matches!(
            op,
            Op::Recv { .. } | Op::RecvInto { .. }
        )),
        "{ops:?}"
    );
}

#[test]
fn a_huge_announced_frame_with_few_bytes_costs_little() {
    let mut h = Harness::new(|_| {});
    let conn = h.accept(1);
    let mut wire = ((MAX_FRAME - 10) as u32).to_be_bytes().to_vec();
    wire.extend(payload(20_000));
    switch_to_direct(&mut h, conn, &wire, 20_004, 0);
    // The direct receive's room follows what arrived, not the header.
    assert!(h.room() <= 64 * 1024, "room {}", h.room());
    let held = h.stats().reassembly_bytes;
    assert!(held <= 128 * 1024, "held {held}");
    let (_, ops) = h.receive_into(conn, &payload(100));
    assert!(has(&ops, |op| matches!(op, Op::RecvInto { .. })));
    assert!(h.stats().reassembly_bytes <= 128 * 1024);
}

#[test]
fn the_shard_reassembly_bound_holds_for_direct_receives() {
    let mut h = Harness::new(|c| c.reassembly_limit = 100_000);
    let conn = h.accept(1);
    let wire = frame(&payload(1 << 20));
    switch_to_direct(&mut h, conn, &wire, 30_000, 0);
    let mut rest = &wire[30_000..];
    let mut closed = false;
    while !rest.is_empty() && !closed {
        let (n, ops) = h.receive_into(conn, rest);
        rest = &rest[n..];
        closed = has(&ops, |op| matches!(op, Op::Close { .. }));
    }
    assert!(closed, "the connection that grew past the bound is closed");
    assert!(h.stats().input_limit_closes >= 1);
}

#[test]
fn a_stale_direct_completion_is_ignored() {
    let mut h = Harness::new(|_| {});
    let conn = h.accept(1);
    let ops = h.complete(Completion::RecvInto {
        slot: 1,
        generation: conn.generation(),
        result: 10,
    });
    assert!(ops.is_empty(), "{ops:?}");
    assert_eq!(h.stats().bytes_in, 0);
}

/// A 64 KiB ping-pong: the frame straddles two multishot buffers (copied);
/// after it, the connection is in bulk mode: the multishot receive is
/// cancelled and the next frames land in a fresh buffer of their size.
fn into_bulk_mode(h: &mut Harness, conn: ConnId, body: &[u8]) {
    let wire = frame(body);
    // As loopback cuts it: the last 57 bytes in a second segment.
    let cut = wire.len() - 57;
    h.receive(conn, &wire[..cut], true);
    let ops = h.receive(conn, &wire[cut..], true);
    assert!(
        has(&ops, |op| matches!(op, Op::CancelRecv { .. })),
        "a large message ends the multishot receive: {ops:?}"
    );
    let ops = h.recv_ended(conn, -libc::ECANCELED);
    assert!(has(&ops, |op| matches!(op, Op::RecvInto { .. })), "{ops:?}");
}

#[test]
fn bulk_mode_receives_whole_frames_in_place_and_bytes_after_them() {
    let mut h = Harness::new(|c| c.send_high_water = 8 << 20);
    let conn = h.accept(1);
    let body = payload(65_536);
    into_bulk_mode(&mut h, conn, &body);
    let room = h.room();
    assert!((65_540..65_540 + 64).contains(&room), "{room}");
    // One frame in one receive, handed over without a copy.
    let (n, ops) = h.receive_into(conn, &frame(&body));
    assert_eq!(n, 65_540);
    assert!(has(&ops, |op| matches!(op, Op::RecvInto { .. })), "{ops:?}");
    // A frame in two receives: its rest is received directly.
    let wire = frame(&body);
    h.receive_into(conn, &wire[..65_000]);
    assert!(h.room() <= 540);
    let (_, ops) = h.receive_into(conn, &wire[65_000..]);
    assert!(has(&ops, |op| matches!(op, Op::RecvInto { .. })), "{ops:?}");
    // Two frames arriving together (pipelined): the end of one and the
    // start of the next share a receive; nothing is lost.
    let mut two = frame(&payload(40_000));
    two.extend(frame(&body));
    let mut pos = 0;
    while pos < two.len() {
        let (n, _) = h.receive_into(conn, &two[pos..]);
        pos += n;
    }
    let messages = h.messages.borrow();
    assert_eq!(messages.len(), 5);
    assert_eq!(messages[3], payload(40_000));
    assert!(
        messages
            .iter()
            .enumerate()
            .all(|(i, m)| i == 3 || *m == body)
    );
    drop(messages);
    assert_eq!(h.stats().bytes_in, 3 * 65_540 + 40_004 + 65_540);
}

#[test]
fn bulk_receives_are_bounded_per_shard() {
    let mut h = Harness::new(|c| c.send_high_water = 8 << 20);
    let body = payload(100_000);
    let wire = frame(&body);
    let cut = wire.len() - 57;
    let mut bulk = 0;
    for slot in 0..TABLE as u32 {
        let conn = h.accept(slot);
        h.receive(conn, &wire[..cut], true);
        let ops = h.receive(conn, &wire[cut..], true);
        if has(&ops, |op| matches!(op, Op::CancelRecv { .. })) {
            let ops = h.recv_ended(conn, -libc::ECANCELED);
            if has(&ops, |op| matches!(op, Op::RecvInto { .. })) {
                bulk += 1;
            }
        }
    }
    const { assert!(TABLE > super::direct::BULK_CONNECTIONS) };
    assert_eq!(bulk, super::direct::BULK_CONNECTIONS);
    assert_eq!(h.engine.core.receives.bulk_posted(), bulk);
}

#[test]
fn close_during_a_bulk_receive_waits_for_it() {
    let mut h = Harness::new(|c| c.send_high_water = 8 << 20);
    let conn = h.accept(1);
    into_bulk_mode(&mut h, conn, &payload(50_000));
    assert_eq!(h.engine.core.receives.bulk_posted(), 1);
    // The peer goes quiet with the buffer posted; the server stops.
    h.engine.core.begin_close(1, CloseReason::Local, true);
    let ops = h.ops();
    assert!(
        has(&ops, |op| matches!(op, Op::CancelRecvInto { .. })),
        "{ops:?}"
    );
    assert!(!has(&ops, |op| matches!(op, Op::Close { .. })), "{ops:?}");
    let ops = h.turn(1);
    assert!(!has(&ops, |op| matches!(op, Op::Close { .. })), "{ops:?}");
    // The echo's send completes, then the cancelled receive: closed.
    h.complete(Completion::Sent {
        slot: 1,
        generation: conn.generation(),
        result: 50_004,
    });
    let ops = h.recv_into_ended(conn, -libc::ECANCELED);
    assert!(has(&ops, |op| matches!(op, Op::Close { .. })), "{ops:?}");
    assert_eq!(h.engine.core.receives.bulk_posted(), 0);
    h.complete(Completion::Closed {
        slot: 1,
        generation: conn.generation(),
        result: 0,
    });
    assert_eq!(*h.closes.borrow(), vec![CloseReason::Local]);
    assert_eq!(h.stats().reassembly_bytes, 0);
}

#[test]
fn end_of_stream_in_bulk_mode_is_a_plain_close() {
    let mut h = Harness::new(|c| c.send_high_water = 8 << 20);
    let conn = h.accept(1);
    into_bulk_mode(&mut h, conn, &payload(70_000));
    let mut ops = h.recv_into_ended(conn, 0);
    // The echo is flushed before the close.
    ops.extend(h.turn(1));
    assert!(has(&ops, |op| matches!(op, Op::Send { .. })), "{ops:?}");
    ops.extend(h.complete(Completion::Sent {
        slot: 1,
        generation: conn.generation(),
        result: 70_004,
    }));
    assert!(has(&ops, |op| matches!(op, Op::Close { .. })), "{ops:?}");
    h.complete(Completion::Closed {
        slot: 1,
        generation: conn.generation(),
        result: 0,
    });
    assert_eq!(*h.closes.borrow(), vec![CloseReason::PeerClosed]);
    assert_eq!(h.engine.core.receives.bulk_posted(), 0);
    assert_eq!(h.stats().reassembly_bytes, 0);
}
