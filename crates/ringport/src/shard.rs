//! A shard thread: sets up the listener and a driver of the chosen
//! backend, then runs the engine over it until stopped.
//!
//! One loop turn: the engine's housekeeping and commands
//! ([`Engine::turn`]), its ops handed to the driver, one wait (bounded by
//! the next tick or handler timer), then every ready completion handled in
//! arrival order, the ops each one produced handed on at once.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};

use crate::codec::Codec;
use crate::config::{Backend, ServerConfig};
use crate::engine::{Engine, Inbox};
use crate::handler::Handler;
use crate::protocol::ListenerProtocol;
use crate::router::{self, ClusterOut};
use crate::shared::{Command, ServerShared, ShardShared};
use crate::stats::TurnHistogram;
use crate::sys::epoll::EpollDriver;
use crate::sys::uring::driver::UringDriver;
use crate::sys::{Completion, Driver};

/// What a shard thread is started with.
pub(crate) struct Setup {
    pub index: usize,
    pub shared: Arc<ServerShared>,
    /// Slots in this shard's connection table.
    pub table: usize,
    /// io_uring: direct descriptors per ring.
    pub per_ring: usize,
    /// The resolved backend (not `Auto`).
    pub backend: Backend,
}

/// Shard thread body: sets up, reports readiness (the driver's
/// description, or why it failed), runs until stopped.
pub(crate) fn run<C, H, F>(
    setup: Setup,
    codec: C,
    factory: &F,
    ready: Sender<io::Result<&'static str>>,
) where
    C: Codec,
    H: Handler,
    F: Fn(usize) -> H,
{
    let index = setup.index;
    let listeners = match open_listeners(&setup) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let Some(eventfd) = &setup.shared.shards[index].eventfd else {
        let _ = ready.send(Err(io::Error::other("shard has no eventfd")));
        return;
    };
    let wake_fd = eventfd.as_raw_fd();
    let config = &setup.shared.config;
    match setup.backend {
        Backend::Epoll => {
            let wake = eventfd.as_fd();
            let driver = EpollDriver::new(
                listeners.into_iter().map(Into::into).collect(),
                wake,
                setup.table,
                config.recv_buffer_size,
            );
            run_on(setup, codec, factory, ready, driver)
        }
        _ => {
            let driver = UringDriver::new(config, setup.table, setup.per_ring, listeners, wake_fd);
            run_on(setup, codec, factory, ready, driver)
        }
    }
}

fn setup_error(index: usize, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("shard {index} setup failed: {e}"))
}

/// The shard's listeners, in the order of `protocol::listeners` (the
/// framed address first, then the protocol listeners).
fn open_listeners(setup: &Setup) -> io::Result<Vec<socket2::Socket>> {
    let config = &setup.shared.config;
    listeners(config)
        .into_iter()
        .map(|(addr, _)| {
            listener(addr, config.listen_backlog).map_err(|e| {
                setup_error(
                    setup.index,
                    io::Error::new(e.kind(), format!("listening on {addr}: {e}")),
                )
            })
        })
        .collect()
}

fn listener(addr: SocketAddr, backlog: i32) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    // Accepted sockets inherit TCP_NODELAY (a direct descriptor cannot be
    // reached by setsockopt afterwards).
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket)
}

fn run_on<C, H, F, D>(
    setup: Setup,
    codec: C,
    factory: &F,
    ready: Sender<io::Result<&'static str>>,
    driver: io::Result<D>,
) where
    C: Codec,
    H: Handler,
    F: Fn(usize) -> H,
    D: Driver,
{
    let index = setup.index;
    let mut driver = match driver {
        Ok(d) => d,
        Err(e) => {
            let _ = ready.send(Err(setup_error(index, e)));
            return;
        }
    };
    let listening = setup.shared.config.listen;
    let shared = setup.shared.clone();
    let handler = factory(index);
    let mut engine = Engine::new(
        index,
        setup.shared,
        codec,
        setup.table,
        handler,
        listening,
        Instant::now(),
    )
    .with_protocols(
        listeners(&shared.config)
            .into_iter()
            .map(|(_, protocol)| protocol)
            .collect(),
    );
    tracing::debug!(
        shard = index,
        backend = driver.describe(),
        table = setup.table,
        "shard ready"
    );
    let _ = ready.send(Ok(driver.describe()));
    drop(ready);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_loop(&mut engine, &mut driver, &shared, index)
    }));
    match outcome {
        Ok(Ok(())) => {
            driver.teardown();
            engine.discard_outbox();
            engine.publish_stats();
        }
        failure => {
            shared.fail(match failure {
                Ok(Err(e)) => format!("shard {index} stopped on a driver error: {e}"),
                _ => format!("shard {index} stopped: a handler panicked"),
            });
            // Operations may still be in flight on buffers the shard owns:
            // leak the driver and the engine (buffers, queues) rather than
            // free memory the kernel could still read or write. The
            // sockets are closed first, so no peer is left hanging.
            driver.abandon();
            std::mem::forget(driver);
            std::mem::forget(engine);
        }
    }
}

/// How often memory that recent traffic did not need is given back
/// ([`Driver::trim`]).
const TRIM_EVERY: Duration = Duration::from_secs(2);

fn run_loop<C: Codec, H: Handler, D: Driver>(
    engine: &mut Engine<C, H>,
    driver: &mut D,
    shared: &ServerShared,
    shard: usize,
) -> io::Result<()> {
    let me = &shared.shards[shard];
    let turns: &TurnHistogram = &me.turns;
    let mut busy_since = Instant::now();
    let mut next_trim = busy_since + TRIM_EVERY;
    let mut slow = SlowTurns::new(busy_since);
    let mut handled = 0u64;
    loop {
        let now = Instant::now();
        // The completions of the last wait were handled since `busy_since`.
        let completions_took = now.saturating_duration_since(busy_since);
        let trimming = now >= next_trim;
        if trimming {
            next_trim = now + TRIM_EVERY;
            driver.trim();
            engine.trim();
        }
        engine.turn_with(now, &mut Commands(me));
        // Room was made: async senders waiting for it try again.
        me.space.notify();
        engine.drain_ops(|op, queues| driver.submit(op, queues))?;
        deliver_outbox(shared, engine);
        if engine.finished() {
            return Ok(());
        }
        let busy = busy_since.elapsed();
        turns.record(busy);
        if busy >= SLOW_TURN {
            slow.note(shard, busy, completions_took, handled, trimming);
        }
        handled = 0;
        driver.wait(engine.next_wake().saturating_duration_since(now))?;
        busy_since = Instant::now();
        engine.set_now(busy_since);
        while let Some(completion) = driver.next_completion() {
            handled += 1;
            if let Completion::Woken = completion {
                // Commands first, then what the same wait brought (a new
                // connection must not get a broadcast sent before it
                // connected).
                me.notified
                    .store(false, std::sync::atomic::Ordering::SeqCst);
                engine.handle_commands(&mut Commands(me));
                me.space.notify();
            }
            engine.complete(completion, &*driver);
            if let Completion::Recv { buf: Some(buf), .. } = completion {
                driver.release(buf);
            }
            engine.drain_ops(|op, queues| driver.submit(op, queues))?;
            deliver_outbox(shared, engine);
        }
        driver.end_batch();
    }
}

/// A shard's command queue as its engine's inbox.
struct Commands<'a>(&'a ShardShared);

impl Inbox for Commands<'_> {
    fn next_command(&mut self) -> Option<Command> {
        self.0.commands.try_recv().ok()
    }
}

/// Hands on what the engine's outbox holds: commands into the other
/// shards' queues (in order; what does not fit stays for the next step),
/// wake-ups, and cluster traffic to the link. A send to another node that
/// the link refuses comes back to the engine as undeliverable.
pub(crate) fn deliver_outbox<C: Codec, H: Handler>(
    shared: &ServerShared,
    engine: &mut Engine<C, H>,
) {
    let outbox = engine.outbox_mut();
    if outbox.is_empty() {
        return;
    }
    for target in 0..shared.shards.len() {
        let queue = outbox.queue_mut(target);
        if queue.is_empty() {
            continue;
        }
        let into = &shared.shards[target];
        let mut moved = 0;
        while let Some(cmd) = queue.pop_front() {
            match into.commands.try_send(cmd) {
                Ok(()) => moved += 1,
                Err(TrySendError::Full(cmd) | TrySendError::Disconnected(cmd)) => {
                    queue.push_front(cmd);
                    break;
                }
            }
        }
        outbox.delivered(moved);
        if moved > 0 {
            into.wake();
        }
    }
    if outbox.take_wake_all() {
        for shard in shared.shards.iter() {
            shard.wake();
        }
    }
    let mut refused = Vec::new();
    for out in outbox.take_cluster() {
        match out {
            ClusterOut::Send { from, to, payload } => {
                let Some(link) = shared.cluster.get() else {
                    continue;
                };
                if let Err(error) = link.send(from, &to, payload)
                    && let Some(from) = from
                {
                    refused.push(Command::Undeliverable { from, to, error });
                }
            }
            other => {
                // Counted by the link when it cannot take it.
                let _ = router::to_link(shared, other);
            }
        }
    }
    for cmd in refused {
        engine.handle_command(cmd);
    }
}

/// A loop turn at least this long is logged: every connection of the
/// shard waited that long for it (also counted in the turn histogram,
/// `ringport_loop_turn_seconds`).
const SLOW_TURN: Duration = Duration::from_millis(100);

/// At most one slow-turn warning per shard this often; the turns in
/// between are summed into the next one.
const SLOW_TURN_LOG_EVERY: Duration = Duration::from_secs(1);

/// Decides which slow loop turns are logged: at most one per
/// [`SLOW_TURN_LOG_EVERY`], the ones in between counted into it.
struct SlowTurns {
    next_log: Instant,
    unlogged: u64,
    unlogged_worst: Duration,
}

/// What a logged slow turn reports about the unlogged ones before it.
#[derive(Debug, PartialEq, Eq)]
struct Unlogged {
    count: u64,
    worst: Duration,
}

impl SlowTurns {
    fn new(now: Instant) -> Self {
        SlowTurns {
            next_log: now,
            unlogged: 0,
            unlogged_worst: Duration::ZERO,
        }
    }

    /// A turn that took `busy` ended at `now`: `Some` (the slow turns
    /// since the last log) if this one is to be logged.
    fn should_log(&mut self, now: Instant, busy: Duration) -> Option<Unlogged> {
        if now < self.next_log {
            self.unlogged += 1;
            self.unlogged_worst = self.unlogged_worst.max(busy);
            return None;
        }
        self.next_log = now + SLOW_TURN_LOG_EVERY;
        Some(Unlogged {
            count: std::mem::take(&mut self.unlogged),
            worst: std::mem::take(&mut self.unlogged_worst),
        })
    }

    /// A turn took `busy`, of which `completions_took` handling the
    /// `handled` completions of one wait; `trimming`: it also gave back
    /// idle memory.
    #[cold]
    fn note(
        &mut self,
        shard: usize,
        busy: Duration,
        completions_took: Duration,
        handled: u64,
        trimming: bool,
    ) {
        let Some(before) = self.should_log(Instant::now(), busy) else {
            return;
        };
        tracing::warn!(
            shard,
            took_ms = busy.as_millis() as u64,
            completions = handled,
            completions_ms = completions_took.as_millis() as u64,
            trimming,
            unlogged_slow_turns = before.count,
            unlogged_worst_ms = before.worst.as_millis() as u64,
            "a loop turn took {busy:.1?}: this shard's connections waited that long"
        );
    }
}

/// The listeners of a server, in the order the drivers get them (the
/// index is the listener of `Completion::Accepted`): the framed listener
/// at `config.addr`, then each protocol listener with its protocol.
fn listeners(config: &ServerConfig) -> Vec<(SocketAddr, Option<Arc<dyn ListenerProtocol>>)> {
    let mut out: Vec<(SocketAddr, Option<Arc<dyn ListenerProtocol>>)> = Vec::new();
    if !config.listen {
        return out;
    }
    out.push((config.addr, None));
    #[cfg(feature = "websocket")]
    if let Some(ws) = &config.websocket {
        let factory = crate::protocol::ws_conn::WsFactory::new(ws.clone(), config.close_timeout);
        out.push((ws.addr, Some(Arc::new(factory))));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_turns_are_logged_once_per_interval_with_the_rest_counted() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let mut slow = SlowTurns::new(start);
        let none = Unlogged {
            count: 0,
            worst: Duration::ZERO,
        };
        assert_eq!(slow.should_log(start, ms(150)), Some(none));
        assert_eq!(slow.should_log(start + ms(300), ms(400)), None);
        assert_eq!(slow.should_log(start + ms(900), ms(120)), None);
        // The next interval: logged, with the two held back.
        assert_eq!(
            slow.should_log(start + SLOW_TURN_LOG_EVERY, ms(110)),
            Some(Unlogged {
                count: 2,
                worst: ms(400)
            })
        );
        assert_eq!(
            slow.should_log(start + 3 * SLOW_TURN_LOG_EVERY, ms(200)),
            Some(Unlogged {
                count: 0,
                worst: Duration::ZERO
            })
        );
    }
}
