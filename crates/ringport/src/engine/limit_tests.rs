//! Admission control in the engine, with scripted completions and virtual
//! time: the per-source limit at accept (refused unread, counted, released
//! at close, never waiting at the global limit), the accept filter, and
//! the message rate limit's pause and close policies.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Engine;
use super::sim::{Sim, deref_to_sim, shard_with};
use crate::codec::LengthDelimited;
use crate::config::ServerConfig;
use crate::conn_id::ConnId;
use crate::error::CloseReason;
use crate::handler::{Context, Handler};
use crate::limits::{AcceptFilter, MessageRateLimit, RateLimitPolicy};
use crate::shared::ServerShared;
use crate::sys::Op;

const TABLE: usize = 64;

#[derive(Default)]
struct Log {
    messages: Vec<(ConnId, Vec<u8>)>,
    closes: Vec<(ConnId, CloseReason)>,
    connects: Vec<ConnId>,
}

struct Recorder(Rc<RefCell<Log>>);

impl Handler for Recorder {
    type ConnState = ();

    fn on_connect(&mut self, _: &mut Context<'_>, conn: ConnId, _: SocketAddr) {
        self.0.borrow_mut().connects.push(conn);
    }

    fn on_message(&mut self, _: &mut Context<'_>, conn: ConnId, _: &mut (), message: &[u8]) {
        self.0.borrow_mut().messages.push((conn, message.to_vec()));
    }

    fn on_close(&mut self, _: &mut Context<'_>, conn: ConnId, _: (), reason: CloseReason) {
        self.0.borrow_mut().closes.push((conn, reason));
    }
}

struct Shard {
    sim: Sim<Recorder>,
    log: Rc<RefCell<Log>>,
    shared: Arc<ServerShared>,
}

deref_to_sim!(Shard, Recorder);

impl Shard {
    fn new(tweak: impl FnOnce(&mut ServerConfig)) -> Self {
        let shared = shard_with(TABLE, tweak);
        let log = Rc::new(RefCell::new(Log::default()));
        let t0 = Instant::now();
        let engine = Engine::new(
            0,
            shared.clone(),
            LengthDelimited::new(),
            TABLE,
            Recorder(log.clone()),
            true,
            t0,
        );
        Shard {
            sim: Sim::new(engine, t0),
            log,
            shared,
        }
    }

    /// An accept of `peer` into `slot`: the ops it led to.
    fn accept(&mut self, slot: u32, peer: &str) -> Vec<Op> {
        self.accepted(0, slot, peer.parse().unwrap())
    }

    fn stats(&mut self) -> crate::Stats {
        self.engine.publish_stats();
        self.shared.shards[0].counters.snapshot()
    }

    fn delivered(&self) -> usize {
        self.log.borrow().messages.len()
    }
}

/// The id an accept's first op (its receive) names.
fn opened(ops: &[Op]) -> ConnId {
    match ops.first() {
        Some(&Op::Recv { slot, generation }) => ConnId::new(0, slot, generation),
        other => panic!("expected a receive, got {other:?}"),
    }
}

/// An accept refused unread: its only op is the close of its socket.
fn refused(ops: &[Op]) -> ConnId {
    match ops {
        [Op::Close { slot, generation }] => ConnId::new(0, *slot, *generation),
        other => panic!("expected a close and nothing else, got {other:?}"),
    }
}

fn frames(n: usize) -> Vec<u8> {
    (0..n)
        .flat_map(|i| {
            let mut f = 1u32.to_be_bytes().to_vec();
            f.push(i as u8);
            f
        })
        .collect()
}

#[test]
fn a_source_at_its_limit_is_refused_unread_and_admitted_after_a_close() {
    let mut s = Shard::new(|c| {
        c.max_connections = 3;
        c.max_connections_per_ip = Some(2);
    });
    s.turn(0);
    let a = opened(&s.accept(0, "10.0.0.1:1000"));
    let _b = opened(&s.accept(1, "10.0.0.1:1001"));
    let refused_conn = refused(&s.accept(2, "10.0.0.1:1002"));
    s.closed(refused_conn);
    // The last global place goes to another source, not to the refused
    // one, which never waited for it.
    let _c = opened(&s.accept(3, "10.0.0.2:1000"));
    let stats = s.stats();
    assert_eq!(
        (stats.rejected_per_ip, stats.waiting, stats.accepted),
        (1, 0, 3)
    );
    assert_eq!(s.log.borrow().connects.len(), 3);
    assert!(s.log.borrow().closes.is_empty(), "the handler never saw it");
    // One of the source's connections closes: it may open one again.
    let ops = s.recv_ended(a, 0);
    assert!(ops.contains(&Op::Close {
        slot: a.slot(),
        generation: a.generation()
    }));
    s.closed(a);
    let shared = s.shared.clone();
    let count = || {
        shared
            .sources
            .as_ref()
            .unwrap()
            .count("10.0.0.1".parse().unwrap())
    };
    assert_eq!(count(), 1);
    s.turn(1);
    let _again = opened(&s.accept(0, "10.0.0.1:1003"));
    assert_eq!(count(), 2);
}

#[test]
fn held_at_the_global_limit_a_client_keeps_its_source_count_until_freed() {
    let mut s = Shard::new(|c| {
        c.max_connections = 1;
        c.max_connections_per_ip = Some(2);
    });
    s.turn(0);
    let _a = opened(&s.accept(0, "10.0.0.1:1"));
    // Over the global limit: held unread, and counted for its source.
    assert!(s.accept(1, "10.0.0.1:2").is_empty());
    assert_eq!(s.stats().waiting, 1);
    // The source is now at its limit: a third is refused, not held.
    let refused_conn = refused(&s.accept(2, "10.0.0.1:3"));
    s.closed(refused_conn);
    assert_eq!(s.stats().waiting, 1);
    // Stop: the held client is closed and its count released.
    s.shared
        .stopping
        .store(true, std::sync::atomic::Ordering::Release);
    let ops = s.turn(10);
    let held_close = ops
        .iter()
        .find_map(|op| match op {
            Op::Close {
                slot: 1,
                generation,
            } => Some(*generation),
            _ => None,
        })
        .expect("the held client is closed");
    s.closed(ConnId::new(0, 1, held_close));
    let table = s.shared.sources.as_ref().unwrap();
    assert_eq!(table.count("10.0.0.1".parse().unwrap()), 1);
}

#[test]
fn the_accept_filter_sees_peer_and_local_address_and_refuses() {
    let mut s = Shard::new(|c| {
        c.addr = "127.0.0.1:7777".parse().unwrap();
        c.accept_filter = Some(AcceptFilter::new(|peer, local| {
            local.port() == 7777 && !peer.ip().is_unspecified() && peer.port() != 666
        }));
    });
    s.turn(0);
    refused(&s.accept(0, "10.0.0.1:666"));
    opened(&s.accept(1, "10.0.0.1:667"));
    let stats = s.stats();
    assert_eq!((stats.refused_by_filter, stats.accepted), (1, 1));
}

#[test]
fn over_its_rate_a_connection_pauses_and_resumes_as_tokens_return() {
    let mut s = Shard::new(|c| {
        c.max_message_rate = Some(MessageRateLimit {
            per_second: 10,
            burst: 2,
            policy: RateLimitPolicy::Pause,
        });
    });
    s.turn(0);
    let conn = opened(&s.accept(0, "10.0.0.1:1"));
    // Six messages at once: the burst of two is delivered, then reading
    // stops (the rest waits in the backlog).
    let ops = s.receive(conn, &frames(6));
    assert_eq!(s.delivered(), 2);
    assert!(
        ops.iter()
            .any(|op| matches!(op, Op::CancelRecv { .. } | Op::CancelRecvInto { .. })),
        "{ops:?}"
    );
    // One message per 100 ms from then on.
    s.turn(50);
    assert_eq!(s.delivered(), 2);
    s.turn(100);
    assert_eq!(s.delivered(), 3);
    s.turn(199);
    assert_eq!(s.delivered(), 3);
    s.turn(200);
    s.turn(300);
    s.turn(400);
    assert_eq!(s.delivered(), 6);
    let want: Vec<Vec<u8>> = (0..6u8).map(|i| vec![i]).collect();
    let got: Vec<Vec<u8>> = s
        .log
        .borrow()
        .messages
        .iter()
        .map(|m| m.1.clone())
        .collect();
    assert_eq!(got, want, "in order, none lost");
    // Paused after each message from the second on (the bucket empty).
    assert_eq!(s.stats().rate_limit_pauses, 5);
    // Quiet for a second: a whole burst again.
    s.turn(1500);
    s.receive(conn, &frames(2));
    assert_eq!(s.delivered(), 8);
    assert!(s.log.borrow().closes.is_empty());
}

#[test]
fn the_engine_wakes_for_the_next_token_of_a_paused_connection() {
    let mut s = Shard::new(|c| {
        c.tick = Duration::from_secs(10);
        c.max_message_rate = Some(MessageRateLimit {
            per_second: 4,
            burst: 1,
            policy: RateLimitPolicy::Pause,
        });
    });
    s.turn(0);
    let conn = opened(&s.accept(0, "10.0.0.1:1"));
    s.receive(conn, &frames(2));
    assert_eq!(s.delivered(), 1);
    assert_eq!(s.engine.next_wake(), s.t0 + Duration::from_millis(250));
}

#[test]
fn over_its_rate_a_connection_is_closed_under_the_close_policy() {
    let mut s = Shard::new(|c| {
        c.max_message_rate = Some(MessageRateLimit {
            per_second: 10,
            burst: 3,
            policy: RateLimitPolicy::Close,
        });
    });
    s.turn(0);
    let conn = opened(&s.accept(0, "10.0.0.1:1"));
    // Within the budget over time: never closed.
    for i in 0..5u64 {
        s.turn(i * 100);
        s.receive(conn, &frames(1));
    }
    assert_eq!(s.delivered(), 5);
    // Five at once: the two tokens left, then the close.
    let ops = s.receive(conn, &frames(5));
    assert_eq!(s.delivered(), 7);
    assert!(ops.iter().any(|op| matches!(op, Op::CancelRecv { .. })));
    assert_eq!(s.stats().rate_limit_closes, 1);
    s.recv_ended(conn, -libc::ECANCELED);
    s.closed(conn);
    assert_eq!(
        s.log.borrow().closes.as_slice(),
        &[(conn, CloseReason::RateLimited)]
    );
}

#[test]
fn settings_out_of_range_are_refused_at_start() {
    let bad: [fn(&mut ServerConfig); 5] = [
        |c| c.max_connections_per_ip = Some(0),
        |c| c.ipv6_prefix = 129,
        |c| {
            c.max_message_rate =
                Some(MessageRateLimit::new(10)).map(|r| MessageRateLimit { burst: 0, ..r })
        },
        |c| {
            c.max_message_rate = Some(MessageRateLimit {
                per_second: 0,
                burst: 1,
                policy: RateLimitPolicy::Close,
            })
        },
        |c| c.max_handshakes_per_shard = 0,
    ];
    for tweak in bad {
        let mut config = ServerConfig::default();
        tweak(&mut config);
        let e = config.validate().unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput, "{e}");
    }
    let ok = ServerConfig {
        max_connections_per_ip: Some(1),
        ipv6_prefix: 128,
        max_message_rate: Some(MessageRateLimit::new(1)),
        ..ServerConfig::default()
    };
    ok.validate().unwrap();
}
