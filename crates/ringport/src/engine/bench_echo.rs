//! Engine-only echo cost measurements (no kernel, no sockets): 1,000
//! connections, 1 or 8 pipelined 512-byte frames per receive, replies sent
//! in one send per connection per round. Prints CPU ns per message; ignored
//! by default (they measure; they check only that every message is echoed).
//!
//! - `engine_echo_cost`: the engine's built-in framed path;
//! - `framed_seam_cost`: what that built-in path is worth, against a
//!   listener whose protocol is `FramedListener` (the same codec through
//!   the protocol seam).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::Engine;
use crate::codec::LengthDelimited;
use crate::conn_id::ConnId;
use crate::handler::{Context, Handler};
use crate::protocol::ListenerProtocol;
use crate::protocol::framed::FramedListener;
use crate::sys::{BufId, Completion, Op, RecvBuffers};

const CONNS: u32 = 1000;
const SIZE: usize = 512;

/// Engine-only echo cost (no kernel): `cargo test --release -p ringport --lib
/// engine_echo_cost -- --ignored --nocapture`. Prints the shard thread's CPU
/// time per message (not wall time, so other load on the machine matters
/// less) at depth 1 and 8.
#[test]
#[ignore]
fn engine_echo_cost() {
    for depth in [1, 8] {
        let ns = echo_rounds(false, depth, 2400 / depth);
        println!("engine echo, depth {depth}: {ns:.1} ns/msg (thread CPU time)");
    }
}

/// `cargo test --release -p ringport --lib framed_seam_cost -- --ignored
/// --nocapture` (pin it, e.g. `taskset -c 1`). Prints the shard thread's
/// CPU time per message for each path at depth 1 and 8, best of three
/// runs each (runs interleaved, so drift of the machine hits both paths
/// alike), and the seam's cost relative to the built-in path.
#[test]
#[ignore]
fn framed_seam_cost() {
    for depth in [1, 8] {
        let rounds = 2400 / depth;
        let (mut built_in, mut seam) = (f64::MAX, f64::MAX);
        for _ in 0..3 {
            built_in = built_in.min(echo_rounds(false, depth, rounds));
            seam = seam.min(echo_rounds(true, depth, rounds));
        }
        println!(
            "framed echo, depth {depth}, {SIZE} B: built-in {built_in:.1} ns/msg, \
             through the seam {seam:.1} ns/msg ({:+.1} %)",
            (seam / built_in - 1.0) * 100.0
        );
    }
}

/// Runs `rounds` rounds of `depth` pipelined frames on each of 1,000
/// connections, through the seam or not; returns CPU ns per message.
fn echo_rounds(through_seam: bool, depth: usize, rounds: usize) -> f64 {
    let shared = super::memory_tests::one_shard(20_000);
    let codec = LengthDelimited::new().max_frame_length(1 << 20);
    let mut e = Engine::new(
        0,
        shared,
        codec.clone(),
        20_000,
        BenchEcho,
        true,
        Instant::now(),
    );
    if through_seam {
        let framed: Arc<dyn ListenerProtocol> = Arc::new(FramedListener::new(codec));
        e = e.with_protocols(vec![Some(framed)]);
    }
    let mut burst = Vec::new();
    for i in 0..depth {
        burst.extend_from_slice(&(SIZE as u32).to_be_bytes());
        burst.extend_from_slice(&[i as u8; SIZE]);
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
    let mut checked = false;
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
                let queue = q.send_queue(slot);
                // The echo is the burst itself (checked once: copying
                // every reply would be measured too).
                if !checked {
                    let mut out = Vec::new();
                    queue.copy_to(&mut out);
                    assert_eq!(out, burst, "the echo of the burst");
                    checked = true;
                }
                sends.push((slot, generation, queue.len()));
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
fn thread_cpu_ns() -> u64 {
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
