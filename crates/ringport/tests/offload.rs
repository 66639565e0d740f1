//! Work offloaded from a handler to the worker pool comes back to the
//! connection's own shard; results for connections that closed meanwhile
//! are refused, never delivered to another connection.

mod common;

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use ringport::pool::{Pool, PoolConfig};
use ringport::{ConnId, Context, Handler, LengthDelimited, SendError, Server};

struct Hasher {
    pool: Pool<u64>,
    outcomes: mpsc::Sender<(usize, Result<(), SendError>)>,
}

impl Handler for Hasher {
    type ConnState = ();

    fn on_connect(&mut self, _: &mut Context<'_>, _: ConnId, _: SocketAddr) {}

    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: &mut (), msg: &[u8]) {
        let job = msg.to_vec();
        let shard = ctx.shard();
        let outcomes = self.outcomes.clone();
        ctx.offload(
            &self.pool,
            move |served| {
                *served += 1;
                // Slow enough for a client to leave before the result.
                std::thread::sleep(Duration::from_millis(30));
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
fn pool_results_return_to_their_connection_and_stale_ones_are_refused() {
    let pool = Pool::start(
        PoolConfig {
            threads: 2,
            ..PoolConfig::default()
        },
        |_| 0u64,
    )
    .unwrap();
    let (tx, rx) = mpsc::channel();
    let handler_pool = pool.clone();
    let mut cfg = config();
    cfg.shards = 2;
    let server = Server::start(cfg, LengthDelimited::new(), move |_| Hasher {
        pool: handler_pool.clone(),
        outcomes: tx.clone(),
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
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap().1, Ok(()));
    }

    let mut gone = connect(server.local_addr());
    write_frame(&mut gone, b"late").unwrap();
    reset(gone);
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5)).unwrap().1,
        Err(SendError::Closed)
    );
    server.stop();
    pool.shutdown(ringport::pool::ShutdownPolicy::Drain);
}
