//! An engine-only echo cost measurement (no kernel, no sockets): 1,000
//! connections, 1 or 8 pipelined 512-byte frames per receive, replies sent
//! in one send per connection per round. Prints CPU ns per message; ignored
//! by default (it measures; it checks only that every message is echoed).

use std::net::SocketAddr;
use std::time::Instant;

use super::Engine;
use crate::codec::LengthDelimited;
use crate::conn_id::ConnId;
use crate::handler::{Context, Handler};
use crate::sys::{BufId, Completion, Op, RecvBuffers};

/// Engine-only echo cost (no kernel): `cargo test --release -p ringport --lib
/// engine_echo_cost -- --ignored --nocapture`. Prints the shard thread's CPU
/// time per message (not wall time, so other load on the machine matters
/// less) at depth 1 and 8.
#[test]
#[ignore]
fn engine_echo_cost() {
    for depth in [1, 8] {
        let ns = echo_rounds(depth, 2400 / depth);
        println!("engine echo, depth {depth}: {ns:.1} ns/msg (thread CPU time)");
    }
}

/// Runs `rounds` rounds of `depth` pipelined 512-byte frames on each of
/// 1,000 connections; returns CPU ns per message.
fn echo_rounds(depth: usize, rounds: usize) -> f64 {
    const CONNS: u32 = 1000;
    let shared = super::memory_tests::one_shard(20_000);
    let codec = LengthDelimited::new().max_frame_length(1 << 20);
    let mut e = Engine::new(0, shared, codec, 20_000, BenchEcho, true, Instant::now());
    let mut burst = Vec::new();
    for _ in 0..depth {
        burst.extend_from_slice(&512u32.to_be_bytes());
        burst.extend_from_slice(&[7u8; 512]);
    }
    let bufs = BenchBufs(burst.clone());
    let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
    let mut gens = vec![0u32; CONNS as usize];
    for slot in 0..CONNS {
        e.complete(Completion::Accepted(0, Ok((slot, peer))), &bufs);
    }
    e.drain_ops::<()>(|op, _| {
        if let Op::Recv { slot, generation } = op {
            gens[slot as usize] = generation;
        }
        Ok(())
    })
    .unwrap();
    let mut sends = Vec::new();
    let start = thread_cpu_ns();
    for _ in 0..rounds {
        for slot in 0..CONNS {
            let recv = Completion::Recv {
                slot,
                generation: gens[slot as usize],
                result: burst.len() as i32,
                buf: Some(0),
                more: true,
            };
            e.complete(recv, &bufs);
        }
        e.turn(Instant::now());
        sends.clear();
        e.drain_ops::<()>(|op, q| {
            if let Op::Send { slot, generation } = op {
                sends.push((slot, generation, q.send_queue(slot).len()));
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(
            sends.len(),
            CONNS as usize,
            "one send per connection per round"
        );
        for &(slot, generation, len) in &sends {
            assert_eq!(len, burst.len(), "every message echoed");
            let sent = Completion::Sent {
                slot,
                generation,
                result: len as i32,
            };
            e.complete(sent, &bufs);
        }
    }
    let msgs = (rounds * CONNS as usize * depth) as f64;
    (thread_cpu_ns() - start) as f64 / msgs
}

/// This thread's CPU time in nanoseconds.
pub(super) fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to write.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

struct BenchEcho;

impl Handler for BenchEcho {
    type ConnState = ();
    fn on_connect(&mut self, _: &mut Context<'_>, _: ConnId, _: SocketAddr) {}
    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: &mut (), m: &[u8]) {
        ctx.send(conn, m).unwrap();
    }
}

struct BenchBufs(Vec<u8>);

impl RecvBuffers for BenchBufs {
    fn buffer(&self, _: BufId, len: usize) -> &[u8] {
        &self.0[..len]
    }
}
