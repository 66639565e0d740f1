//! The engine's memory per slot and per idle shard: sizes of the per-slot
//! parts (printed, and bounded), and tables touched only as they are used.
//! Run with `--nocapture` to see the figures.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::time::Instant;

use super::Engine;
use super::conn::Slot;
use super::inputs::InputState;
use super::sim::Buffers;
use crate::codec::{Framer, LengthDelimited};
use crate::config::ServerConfig;
use crate::conn_id::ConnId;
use crate::handler::{Context, Handler};
use crate::send_queue::SendQueue;
use crate::shared::{ServerShared, ShardShared};
use crate::sys::{BufId, Completion, Op};

struct Echo;

impl Handler for Echo {
    type ConnState = ();

    fn on_connect(&mut self, _: &mut Context<'_>, _: ConnId, _: SocketAddr) {}

    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: &mut (), message: &[u8]) {
        ctx.send(conn, message).unwrap();
    }
}

/// One shard's shared state with a `table`-slot live table and default
/// settings, for engines driven by hand (also used by `bench_echo`).
pub(super) fn one_shard(table: usize) -> Arc<ServerShared> {
    one_shard_with(table, 1 << 20, ServerConfig::default())
}

/// [`one_shard`] with a frame maximum and settings of the test's own (the
/// engine tests' harnesses).
pub(super) fn one_shard_with(
    table: usize,
    max_frame: usize,
    config: ServerConfig,
) -> Arc<ServerShared> {
    Arc::new(ServerShared {
        shards: vec![ShardShared::new(table, 16).unwrap()].into_boxed_slice(),
        stopping: AtomicBool::new(false),
        admitted: AtomicUsize::new(0),
        sources: crate::admission_table::SourceTable::for_config(&config),
        max_frame,
        next_shard: AtomicUsize::new(0),
        failure: std::sync::Mutex::new(None),
        config,
        cluster: std::sync::OnceLock::new(),
    })
}

fn engine(table: usize) -> Engine<LengthDelimited, Echo> {
    let codec = LengthDelimited::new().max_frame_length(1 << 20);
    Engine::new(
        0,
        one_shard(table),
        codec,
        table,
        Echo,
        true,
        Instant::now(),
    )
}

/// Per-slot bytes of the engine for the default codec and a handler
/// without per-connection state: the slot, the input-state pointer and the
/// handler-state entry.
fn per_slot_bytes() -> usize {
    size_of::<Slot>()
        + size_of::<Option<Box<InputState<LengthDelimited>>>>()
        + size_of::<Option<()>>()
}

#[test]
fn per_slot_memory_is_small() {
    println!("engine Slot: {} B", size_of::<Slot>());
    println!("SendQueue (inside Slot): {} B", size_of::<SendQueue>());
    println!(
        "input-state pointer per slot: {} B (state itself {} B, only while a frame is partial)",
        size_of::<Option<Box<InputState<LengthDelimited>>>>(),
        size_of::<InputState<LengthDelimited>>()
    );
    println!(
        "Framer<LengthDelimited>: {} B (inside the input state)",
        size_of::<Framer<LengthDelimited>>()
    );
    println!("handler state Option<()>: {} B", size_of::<Option<()>>());
    println!("engine per slot in all: {} B", per_slot_bytes());
    assert_eq!(size_of::<SendQueue>(), 8);
    // With the `tls` feature a slot also holds the session pointer.
    let tls_pointer = if cfg!(feature = "tls") { 8 } else { 0 };
    assert!(
        size_of::<Slot>() <= 72 + tls_pointer,
        "{}",
        size_of::<Slot>()
    );
    assert!(per_slot_bytes() <= 96, "{}", per_slot_bytes());
}

#[test]
fn an_idle_engine_allocates_no_slot_pages_and_echo_needs_no_input_state() {
    let mut e = engine(500_000);
    e.turn(Instant::now());
    assert_eq!(e.core.conns.allocated_pages(), 0);
    assert_eq!(e.core.inputs.allocated_pages(), 0);
    assert_eq!(e.states.allocated_pages(), 0);

    let mut bufs = Buffers::default();
    let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
    e.complete(Completion::Accepted(0, Ok((3, peer))), &bufs);
    let generation = e.core.conns[3].generation;
    // Whole frames: delivered with a pooled input state, none kept.
    for i in 0..100u8 {
        let mut frame = 3u32.to_be_bytes().to_vec();
        frame.extend_from_slice(&[i; 3]);
        bufs.0.push(frame);
        let recv = Completion::Recv {
            slot: 3,
            generation,
            result: 7,
            buf: Some(bufs.0.len() as BufId - 1),
            more: true,
        };
        e.complete(recv, &bufs);
    }
    assert_eq!(e.core.stats.messages_in, 100);
    assert_eq!(e.core.conns.allocated_pages(), 1);
    assert_eq!(e.states.allocated_pages(), 1);
    assert_eq!(e.core.inputs.allocated_pages(), 0);
    assert!(e.core.inputs.get(3).is_none());
    assert_eq!(e.core.inputs.pooled(), 1);

    // Half a frame: the connection keeps an input state until it
    // completes.
    bufs.0.push(vec![0, 0, 0, 4, b'a']);
    let recv = |buf: usize, len: i32| Completion::Recv {
        slot: 3,
        generation,
        result: len,
        buf: Some(buf as BufId),
        more: true,
    };
    e.complete(recv(bufs.0.len() - 1, 5), &bufs);
    assert!(e.core.inputs.get(3).is_some());
    assert!(e.core.held(3) > 0);
    bufs.0.push(b"bcd".to_vec());
    e.complete(recv(bufs.0.len() - 1, 3), &bufs);
    assert!(e.core.inputs.get(3).is_none());
    assert_eq!(e.core.stats.messages_in, 101);
    assert_eq!(e.core.stats.reassembly_bytes, 0);

    // Sending drained every queue: no queue body kept by the slot.
    let mut sends = Vec::new();
    e.turn(Instant::now());
    e.drain_ops::<()>(|op, queues| {
        if let Op::Send { slot, .. } = op {
            sends.push((slot, queues.send_queue(slot).len()));
        }
        Ok(())
    })
    .unwrap();
    assert_eq!(sends, vec![(3, 100 * 7 + 8)]);
    let sent = Completion::Sent {
        slot: 3,
        generation,
        result: 100 * 7 + 8,
    };
    e.complete(sent, &bufs);
    assert!(e.core.conns[3].queue.is_empty());
}

#[test]
fn an_input_state_that_saw_a_codec_error_is_not_reused() {
    let mut e = engine(64);
    e.turn(Instant::now());
    let mut bufs = Buffers::default();
    let peer: SocketAddr = "[::1]:5000".parse().unwrap();
    e.complete(Completion::Accepted(0, Ok((1, peer))), &bufs);
    let generation = e.core.conns[1].generation;
    let mut infos = Vec::new();
    e.core.connection_infos(&mut infos);
    assert_eq!(infos[0].peer, peer, "the compact peer address reads back");
    // A header announcing more than the codec's maximum.
    bufs.0.push(u32::MAX.to_be_bytes().to_vec());
    let recv = Completion::Recv {
        slot: 1,
        generation,
        result: 4,
        buf: Some(0),
        more: true,
    };
    e.complete(recv, &bufs);
    assert_eq!(e.core.stats.frames_too_large, 1);
    assert!((e.core.inputs.pooled() == 0));
    assert!(e.core.live_slot(ConnId::new(0, 1, generation)).is_none());
}
