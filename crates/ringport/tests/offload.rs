//! Work offloaded from a handler to the worker pool comes back to the
//! connection's own shard; results for connections that closed meanwhile
//! are refused, never delivered to another connection.

mod common;

use std::net::SocketAddr;
use std::sync::mpsc;

use common::*;
use ringport::pool::{Pool, PoolConfig};
use ringport::{ConnId, Context, Handler, LengthDelimited, SendError, Server};

/// Sums each message's bytes on the pool and replies with the sum. A
/// message `late` waits on the pool until the test releases it. Reports
/// connections and outcomes to the test.
struct Hasher {
    pool: Pool<u64>,
    outcomes: mpsc::Sender<(usize, Result<(), SendError>)>,
    connected: mpsc::Sender<ConnId>,
    release: crossbeam_channel::Receiver<()>,
    /// Told when the `late` job runs on the pool.
    waiting: crossbeam_channel::Sender<()>,
}

impl Handler for Hasher {
    type ConnState = ();

    fn on_connect(&mut self, _: &mut Context<'_>, conn: ConnId, _: SocketAddr) {
        let _ = self.connected.send(conn);
    }

    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: &mut (), msg: &[u8]) {
        let job = msg.to_vec();
        let shard = ctx.shard();
        let outcomes = self.outcomes.clone();
        let (release, waiting) = (self.release.clone(), self.waiting.clone());
        ctx.offload(
            &self.pool,
            move |served| {
                *served += 1;
                if job == b"late" {
                    waiting.send(()).unwrap();
                    release
                        .recv_timeout(IO_TIMEOUT)
                        .expect("the test releases the late job");
                }
                job.iter().map(|&b| b as u64).sum::<u64>().to_string()
            },
            move |ctx, sum| {
                assert_eq!(ctx.shard(), shard, "results come back to the same shard");
                let _ = outcomes.send((shard, ctx.send(conn, sum.as_bytes())));
            },
        )
        .unwrap();
    }
}

#[test]
fn pool_results_return_to_their_connection_on_its_shard() {
    let pool = Pool::start(
        PoolConfig {
            threads: 2,
            ..PoolConfig::default()
        },
        |_| 0u64,
    )
    .unwrap();
    let (tx, rx) = mpsc::channel();
    let (connected_tx, _connected) = mpsc::channel();
    let (_release_tx, release) = crossbeam_channel::unbounded();
    let (waiting, _waiting_rx) = crossbeam_channel::unbounded();
    let handler_pool = pool.clone();
    let server = Server::start(config(), LengthDelimited::new(), move |_| Hasher {
        pool: handler_pool.clone(),
        outcomes: tx.clone(),
        connected: connected_tx.clone(),
        release: release.clone(),
        waiting: waiting.clone(),
    })
    .unwrap();
    assert_backend(&server);

    let mut clients: Vec<_> = (0..8).map(|_| connect(server.local_addr())).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        write_frame(c, &[i as u8; 10]).unwrap();
    }
    for (i, c) in clients.iter_mut().enumerate() {
        assert_eq!(read_frame(c, 64).unwrap(), (i * 10).to_string().as_bytes());
    }
    for _ in 0..8 {
        assert_eq!(rx.recv_timeout(IO_TIMEOUT).unwrap().1, Ok(()));
    }
    server.stop();
    pool.shutdown(ringport::pool::ShutdownPolicy::Drain);
}

#[test]
fn a_stale_pool_result_is_refused_and_never_reaches_the_slots_next_connection() {
    let pool = Pool::start(PoolConfig::default(), |_| 0u64).unwrap();
    let (tx, rx) = mpsc::channel();
    let (connected_tx, connected) = mpsc::channel();
    let (release_tx, release) = crossbeam_channel::unbounded();
    let (waiting, waiting_rx) = crossbeam_channel::unbounded();
    let handler_pool = pool.clone();
    // One shard of one slot: the next connection reuses the slot (asserted
    // below).
    let mut cfg = config();
    cfg.shards = 1;
    cfg.connections_per_shard = Some(1);
    let server = Server::start(cfg, LengthDelimited::new(), move |_| Hasher {
        pool: handler_pool.clone(),
        outcomes: tx.clone(),
        connected: connected_tx.clone(),
        release: release.clone(),
        waiting: waiting.clone(),
    })
    .unwrap();
    assert_backend(&server);

    // The client leaves while its job waits on the pool.
    let mut gone = connect(server.local_addr());
    let gone_id = connected.recv_timeout(IO_TIMEOUT).unwrap();
    write_frame(&mut gone, b"late").unwrap();
    waiting_rx
        .recv_timeout(IO_TIMEOUT)
        .expect("the late job runs");
    reset(gone);
    assert!(wait_until(IO_TIMEOUT, || server.stats().connections == 0));
    let mut next = connect(server.local_addr());
    let next_id = connected.recv_timeout(IO_TIMEOUT).unwrap();
    assert_eq!(
        (next_id.shard(), next_id.slot()),
        (gone_id.shard(), gone_id.slot()),
        "the one-slot table reuses the slot"
    );
    assert_ne!(next_id.generation(), gone_id.generation());
    release_tx.send(()).unwrap();
    assert_eq!(
        rx.recv_timeout(IO_TIMEOUT).unwrap().1,
        Err(SendError::Closed)
    );
    // Had the refused result reached `next`, it would be the first frame
    // there, before the reply to its own message.
    write_frame(&mut next, &[1, 2, 3]).unwrap();
    assert_eq!(read_frame(&mut next, 64).unwrap(), b"6");
    assert_eq!(rx.recv_timeout(IO_TIMEOUT).unwrap().1, Ok(()));
    server.stop();
    pool.shutdown(ringport::pool::ShutdownPolicy::Drain);
}
