//! The engine driven by hand in its unit tests, as quinn-proto's tests
//! drive its endpoints: virtual time counted from `t0`, completions in,
//! the kernel work they lead to out. Each test file's harness wraps a
//! [`Sim`] (through `Deref`) with its handler's bookkeeping.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Engine;
use crate::codec::{Codec, LengthDelimited};
use crate::config::ServerConfig;
use crate::conn_id::ConnId;
use crate::handler::Handler;
use crate::shared::ServerShared;
use crate::sys::{BufId, Completion, Op, RecvBuffers, RecvTarget};

/// One shard's shared state for a `table`-slot engine and frames up to 1
/// MiB, with the settings the harnesses start from (2 accepts kept posted,
/// a 100 ms tick) changed by `tweak`.
pub(super) fn shard_with(table: usize, tweak: impl FnOnce(&mut ServerConfig)) -> Arc<ServerShared> {
    let mut config = ServerConfig {
        accepts_in_flight: 2,
        tick: Duration::from_millis(100),
        ..ServerConfig::default()
    };
    tweak(&mut config);
    super::memory_tests::one_shard_with(table, 1 << 20, config)
}

/// `Deref` and `DerefMut` from a harness to its `sim` field, so that a
/// test calls the [`Sim`]'s methods on the harness.
macro_rules! deref_to_sim {
    ($harness:ty, $handler:ty) => {
        impl std::ops::Deref for $harness {
            type Target = $crate::engine::sim::Sim<$handler>;
            fn deref(&self) -> &Self::Target {
                &self.sim
            }
        }

        impl std::ops::DerefMut for $harness {
            fn deref_mut(&mut self) -> &mut Self::Target {
                &mut self.sim
            }
        }
    };
}
pub(super) use deref_to_sim;

/// Received bytes, one buffer per scripted receive.
#[derive(Default)]
pub(super) struct Buffers(pub(super) Vec<Vec<u8>>);

impl RecvBuffers for Buffers {
    fn buffer(&self, buf: BufId, len: usize) -> &[u8] {
        &self.0[buf as usize][..len]
    }
}

/// One shard's engine (of the default codec unless `C` says otherwise),
/// its scripted receive buffers and its time origin.
pub(super) struct Sim<H: Handler, C: Codec = LengthDelimited> {
    pub(super) engine: Engine<C, H>,
    pub(super) bufs: Buffers,
    pub(super) t0: Instant,
    /// The target of the direct receive last drained (`Op::RecvInto`).
    pub(super) target: Option<RecvTarget>,
    /// When recording ([`Self::record_sends`]): for every `Op::Send`
    /// drained, its slot and the bytes its send queue held then (what a
    /// driver writes for it).
    pub(super) sends: Option<Vec<(u32, Vec<u8>)>>,
}

impl<H: Handler, C: Codec> Sim<H, C> {
    pub(super) fn new(engine: Engine<C, H>, t0: Instant) -> Self {
        Sim {
            engine,
            bufs: Buffers::default(),
            t0,
            target: None,
            sends: None,
        }
    }

    /// From now on, the bytes of every `Op::Send` drained are kept in
    /// [`Self::sends`] (off by default: it copies every send).
    pub(super) fn record_sends(&mut self) {
        self.sends.get_or_insert_with(Vec::new);
    }

    /// Virtual time `ms` milliseconds after `t0`.
    pub(super) fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    /// A loop turn at virtual time `ms`; returns the ops it asked for.
    pub(super) fn turn(&mut self, ms: u64) -> Vec<Op> {
        self.engine.turn(self.at(ms));
        self.ops()
    }

    /// The ops the engine asked for since the last call (the target of a
    /// direct receive among them is kept in `target`).
    pub(super) fn ops(&mut self) -> Vec<Op> {
        let mut ops = Vec::new();
        let mut target = None;
        let sends = &mut self.sends;
        self.engine
            .drain_ops::<()>(|op, queues| {
                if let Op::RecvInto { slot, .. } = op {
                    target = Some(queues.recv_target(slot).expect("a recorded target"));
                }
                if let (&Op::Send { slot, .. }, Some(sends)) = (&op, sends.as_mut()) {
                    let mut bytes = Vec::new();
                    queues.send_queue(slot).copy_to(&mut bytes);
                    sends.push((slot, bytes));
                }
                ops.push(op);
                Ok(())
            })
            .unwrap();
        if target.is_some() {
            self.target = target;
        }
        ops
    }

    /// The engine handles `c`; returns the ops it led to.
    pub(super) fn complete(&mut self, c: Completion) -> Vec<Op> {
        self.engine.complete(c, &self.bufs);
        self.ops()
    }

    /// `peer` was accepted into `slot` from listener `listener`.
    pub(super) fn accepted(&mut self, listener: u8, slot: u32, peer: SocketAddr) -> Vec<Op> {
        self.complete(Completion::Accepted(listener, Ok((slot, peer))))
    }

    /// `bytes` arrive on `conn` (multishot goes on).
    pub(super) fn receive(&mut self, conn: ConnId, bytes: &[u8]) -> Vec<Op> {
        self.receive_more(conn, bytes, true)
    }

    /// `bytes` arrive on `conn`; `more`: the multishot receive goes on.
    pub(super) fn receive_more(&mut self, conn: ConnId, bytes: &[u8], more: bool) -> Vec<Op> {
        self.bufs.0.push(bytes.to_vec());
        let buf = (self.bufs.0.len() - 1) as BufId;
        self.complete(Completion::Recv {
            slot: conn.slot(),
            generation: conn.generation(),
            result: bytes.len() as i32,
            buf: Some(buf),
            more,
        })
    }

    /// The receive on `conn` ended with `result` (0: EOF, or an error).
    pub(super) fn recv_ended(&mut self, conn: ConnId, result: i32) -> Vec<Op> {
        self.complete(Completion::Recv {
            slot: conn.slot(),
            generation: conn.generation(),
            result,
            buf: None,
            more: false,
        })
    }

    /// A send on `conn` completed with `result`.
    pub(super) fn sent(&mut self, conn: ConnId, result: i32) -> Vec<Op> {
        self.complete(Completion::Sent {
            slot: conn.slot(),
            generation: conn.generation(),
            result,
        })
    }

    /// `conn`'s socket is closed.
    pub(super) fn closed(&mut self, conn: ConnId) -> Vec<Op> {
        self.complete(Completion::Closed {
            slot: conn.slot(),
            generation: conn.generation(),
            result: 0,
        })
    }
}
