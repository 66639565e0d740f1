//! An engine-only echo cost measurement (no kernel, no sockets): 1,000
//! connections, 8 pipelined 512-byte frames per receive, replies sent in
//! one send per connection per round. Prints ns per message; ignored by
//! default (it asserts nothing, it measures).

use std::net::SocketAddr;
use std::time::Instant;

use super::Engine;
use crate::codec::LengthDelimited;
use crate::conn_id::ConnId;
use crate::handler::{Context, Handler};
use crate::sys::{BufId, Completion, Op, RecvBuffers};

/// Engine-only echo cost (no kernel): `cargo test --release -p ringport --lib
/// engine_echo_cost -- --ignored --nocapture`.
#[test]
#[ignore]
fn engine_echo_cost() {
    const CONNS: u32 = 1000;
    const DEPTH: usize = 8;
    const ROUNDS: usize = 300;
    let shared = super::memory_tests::one_shard(20_000);
    let codec = LengthDelimited::new().max_frame_length(1 << 20);
    let mut e = Engine::new(0, shared, codec, 20_000, BenchEcho, true, Instant::now());
    let mut burst = Vec::new();
    for _ in 0..DEPTH {
        burst.extend_from_slice(&512u32.to_be_bytes());
        burst.extend_from_slice(&[7u8; 512]);
    }
    let bufs = BenchBufs(burst.clone());
    let peer: SocketAddr = "127.0.0.1:5000".parse().unwrap();
    let mut gens = vec![0u32; CONNS as usize];
    for slot in 0..CONNS {
        e.complete(Completion::Accepted(Ok((slot, peer))), &bufs);
    }
    e.drain_ops::<()>(|op, _| {
        if let Op::Recv { slot, generation } = op {
            gens[slot as usize] = generation;
        }
        Ok(())
    })
    .unwrap();
    let mut sends = Vec::new();
    let start = std::time::Instant::now();
    for _ in 0..ROUNDS {
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
        for &(slot, generation, len) in &sends {
            let sent = Completion::Sent {
                slot,
                generation,
                result: len as i32,
            };
            e.complete(sent, &bufs);
        }
    }
    let msgs = (ROUNDS * CONNS as usize * DEPTH) as f64;
    println!(
        "engine echo: {:.1} ns/msg over {} messages",
        start.elapsed().as_nanos() as f64 / msgs,
        msgs
    );
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
