//! Time on the shards: idle timeouts, heartbeats, handler timers, and work
//! done elsewhere coming back to the connection's own shard.

mod common;

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use ringport::{
    CloseReason, ConnId, Context, Event, Handler, LengthDelimited, SendError, Server, TimerId,
};

#[test]
fn idle_connections_close_with_their_reason_while_active_ones_stay() {
    let mut cfg = config();
    cfg.tick = Duration::from_millis(20);
    cfg.idle_timeout = Some(Duration::from_millis(400));
    let server = Server::start_events(cfg, LengthDelimited::new()).unwrap();
    assert_backend(&server);
    // The server's clock for a connection starts when it accepts it, which
    // is after the client's connect began: measure from before that, so a
    // loaded machine cannot make the close look early.
    let started = Instant::now();
    let mut idle = connect(server.local_addr());
    let mut active = connect(server.local_addr());
    let mut conns = Vec::new();
    let mut idle_closed = None;
    let mut next_ping = Instant::now();
    while started.elapsed() < Duration::from_millis(1500) {
        if Instant::now() >= next_ping {
            write_frame(&mut active, b"still here").unwrap();
            next_ping += Duration::from_millis(100);
        }
        match server.next_event(Duration::from_millis(10)) {
            Some(Event::Connected { conn, .. }) => conns.push(conn),
            Some(Event::Closed { conn, reason }) => {
                assert_eq!(reason, CloseReason::IdleTimeout);
                assert!(idle_closed.is_none(), "only the idle one closes");
                idle_closed = Some((conn, started.elapsed()));
            }
            _ => {}
        }
    }
    let (_, after) = idle_closed.expect("the idle connection was closed");
    assert!(
        after >= Duration::from_millis(400),
        "not before the timeout: {after:?}"
    );
    assert!(
        after < Duration::from_millis(1400),
        "soon after it: {after:?}"
    );
    expect_eof(&mut idle, Duration::from_secs(5));
    assert_eq!(server.stats().connections, 1);
    assert_eq!(server.stats().idle_timeouts, 1);
    let _ = active.shutdown(std::net::Shutdown::Both);
    server.stop();
}

#[test]
fn heartbeats_reach_a_quiet_client_as_empty_messages() {
    let server = start_echo(|c| {
        c.tick = Duration::from_millis(20);
        c.heartbeat = Some(Duration::from_millis(100));
    });
    let mut quiet = connect(server.local_addr());
    let started = Instant::now();
    for _ in 0..3 {
        assert_eq!(read_frame(&mut quiet, 1024).unwrap(), b"");
    }
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(server.stats().heartbeats >= 3);
    server.stop();
}

/// Replies to "after N" with "timer" after N milliseconds, using a shard
/// timer; "cancel" arms two timers and cancels the first.
struct Delayed {
    pending: Vec<(u64, ConnId)>,
}

impl Handler for Delayed {
    type ConnState = Option<TimerId>;

    fn on_connect(&mut self, _: &mut Context<'_>, _: ConnId, _: SocketAddr) -> Option<TimerId> {
        None
    }

    fn on_message(
        &mut self,
        ctx: &mut Context<'_>,
        conn: ConnId,
        _: &mut Option<TimerId>,
        msg: &[u8],
    ) {
        let text = std::str::from_utf8(msg).unwrap();
        let token = self.pending.len() as u64;
        if let Some(ms) = text.strip_prefix("after ") {
            self.pending.push((token, conn));
            ctx.set_timer(Duration::from_millis(ms.parse().unwrap()), token);
        } else if text == "cancel" {
            self.pending.push((token, conn));
            let first = ctx.set_timer(Duration::from_millis(50), token);
            self.pending.push((token + 1, conn));
            ctx.set_timer(Duration::from_millis(100), token + 1);
            assert!(ctx.cancel_timer(first));
            assert!(!ctx.cancel_timer(first));
        }
    }

    fn on_timer(&mut self, ctx: &mut Context<'_>, token: u64) {
        let (_, conn) = self.pending[token as usize];
        let _ = ctx.send(conn, format!("timer {token}").as_bytes());
    }
}

#[test]
fn handler_timers_fire_after_their_delay_and_cancel_works() {
    let server = Server::start(config(), LengthDelimited::new(), |_| Delayed {
        pending: Vec::new(),
    })
    .unwrap();
    let mut c = connect(server.local_addr());
    let sent = Instant::now();
    write_frame(&mut c, b"after 150").unwrap();
    assert_eq!(read_frame(&mut c, 1024).unwrap(), b"timer 0");
    assert!(
        sent.elapsed() >= Duration::from_millis(150),
        "{:?}",
        sent.elapsed()
    );

    write_frame(&mut c, b"cancel").unwrap();
    // Only the second of the two (token 2) fires; the cancelled token 1
    // would have come first.
    assert_eq!(read_frame(&mut c, 1024).unwrap(), b"timer 2");
    expect_silence(&mut c, Duration::from_millis(200));
    assert!(wait_until(Duration::from_secs(2), || server.stats().timers == 0));
    server.stop();
}

/// Hands every message to another thread, which sends the result (the
/// message reversed) back through the shard's remote handle once the test
/// releases it (a message `late` waits for `release`, any other goes at
/// once). Reports connections and jobs to the test.
struct Offload {
    outcomes: mpsc::Sender<Result<(), SendError>>,
    connected: mpsc::Sender<ConnId>,
    jobs: mpsc::Sender<ConnId>,
    release: crossbeam_channel::Receiver<()>,
}

impl Handler for Offload {
    type ConnState = ();

    fn on_connect(&mut self, _: &mut Context<'_>, conn: ConnId, _: SocketAddr) {
        let _ = self.connected.send(conn);
    }

    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: &mut (), msg: &[u8]) {
        let remote = ctx.remote();
        let job = msg.to_vec();
        let outcomes = self.outcomes.clone();
        let release = self.release.clone();
        let _ = self.jobs.send(conn);
        std::thread::spawn(move || {
            if job == b"late" {
                release
                    .recv_timeout(IO_TIMEOUT)
                    .expect("the test releases the late job");
            }
            let reply: Vec<u8> = job.iter().rev().copied().collect();
            remote
                .run(move |ctx| {
                    let _ = outcomes.send(ctx.send(conn, &reply));
                })
                .unwrap();
        });
    }
}

#[test]
fn offloaded_results_reach_their_connection_and_are_dropped_for_closed_ones() {
    let (tx, rx) = mpsc::channel();
    let (connected_tx, connected) = mpsc::channel();
    let (jobs_tx, jobs) = mpsc::channel();
    let (release_tx, release) = crossbeam_channel::unbounded();
    // One shard of one slot: every connection reuses the slot of the one
    // before (asserted below).
    let mut cfg = config();
    cfg.shards = 1;
    cfg.connections_per_shard = Some(1);
    let server = Server::start(cfg, LengthDelimited::new(), move |_| Offload {
        outcomes: tx.clone(),
        connected: connected_tx.clone(),
        jobs: jobs_tx.clone(),
        release: release.clone(),
    })
    .unwrap();
    assert_backend(&server);
    let mut c = connect(server.local_addr());
    write_frame(&mut c, b"abc").unwrap();
    assert_eq!(read_frame(&mut c, 1024).unwrap(), b"cba");
    assert_eq!(rx.recv_timeout(IO_TIMEOUT).unwrap(), Ok(()));
    let first = connected.recv_timeout(IO_TIMEOUT).unwrap();
    assert_eq!(jobs.recv_timeout(IO_TIMEOUT), Ok(first));
    drop(c);
    assert!(wait_until(IO_TIMEOUT, || server.stats().connections == 0));

    // The client leaves before its result is ready (the handler has its
    // message, reported, and the job waits for the test): the result is
    // refused (stale id), and the next connection, in the same slot, gets
    // nothing.
    let mut gone = connect(server.local_addr());
    write_frame(&mut gone, b"late").unwrap();
    let gone_id = connected.recv_timeout(IO_TIMEOUT).unwrap();
    assert_eq!(jobs.recv_timeout(IO_TIMEOUT), Ok(gone_id));
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
    assert_eq!(rx.recv_timeout(IO_TIMEOUT).unwrap(), Err(SendError::Closed));
    // Had the refused result reached `next`, it would be the first frame
    // there, before the reply to its own message.
    write_frame(&mut next, b"xyz").unwrap();
    assert_eq!(read_frame(&mut next, 1024).unwrap(), b"zyx");
    assert_eq!(rx.recv_timeout(IO_TIMEOUT).unwrap(), Ok(()));
    server.stop();
}
