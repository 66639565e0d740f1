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

use crossbeam_channel::Sender;

use crate::codec::Codec;
use crate::config::Backend;
use crate::engine::Engine;
use crate::handler::Handler;
use crate::shared::ServerShared;
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
    let listener = match open_listener(&setup) {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let wake_fd = setup.shared.shards[index].eventfd.as_raw_fd();
    let config = &setup.shared.config;
    match setup.backend {
        Backend::Epoll => {
            let wake = setup.shared.shards[index].eventfd.as_fd();
            let driver = EpollDriver::new(
                listener.map(Into::into),
                wake,
                setup.table,
                config.recv_buffer_size,
            );
            run_on(setup, codec, factory, ready, driver)
        }
        _ => {
            let driver = UringDriver::new(config, setup.table, setup.per_ring, listener, wake_fd);
            run_on(setup, codec, factory, ready, driver)
        }
    }
}

fn setup_error(index: usize, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("shard {index} setup failed: {e}"))
}

fn open_listener(setup: &Setup) -> io::Result<Option<socket2::Socket>> {
    let config = &setup.shared.config;
    if !config.listen {
        return Ok(None);
    }
    listener(config.addr, config.listen_backlog)
        .map(Some)
        .map_err(|e| {
            setup_error(
                setup.index,
                io::Error::new(e.kind(), format!("listening on {}: {e}", config.addr)),
            )
        })
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
    );
    tracing::debug!(
        shard = index,
        backend = driver.describe(),
        table = setup.table,
        "shard ready"
    );
    let _ = ready.send(Ok(driver.describe()));
    drop(ready);
    let turns = &shared.shards[index].turns;
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        run_loop(&mut engine, &mut driver, turns)
    }));
    match outcome {
        Ok(Ok(())) => {
            driver.teardown();
            engine.publish_stats();
        }
        failure => {
            shared.fail(match failure {
                Ok(Err(e)) => format!("shard {index} stopped on a driver error: {e}"),
                _ => format!("shard {index} stopped: a handler panicked"),
            });
            // Operations may still be in flight on buffers the shard owns:
            // leak the driver and the engine (buffers, queues) rather than
            // free memory the kernel could still read or write.
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
    turns: &TurnHistogram,
) -> io::Result<()> {
    let mut busy_since = Instant::now();
    let mut next_trim = busy_since + TRIM_EVERY;
    loop {
        let now = Instant::now();
        if now >= next_trim {
            next_trim = now + TRIM_EVERY;
            driver.trim();
            engine.trim();
        }
        engine.turn(now);
        engine.drain_ops(|op, queues| driver.submit(op, queues))?;
        if engine.finished() {
            return Ok(());
        }
        turns.record(busy_since.elapsed());
        driver.wait(engine.next_wake().saturating_duration_since(now))?;
        busy_since = Instant::now();
        engine.set_now(busy_since);
        while let Some(completion) = driver.next_completion() {
            engine.complete(completion, &*driver);
            if let Completion::Recv { buf: Some(buf), .. } = completion {
                driver.release(buf);
            }
            engine.drain_ops(|op, queues| driver.submit(op, queues))?;
        }
        driver.end_batch();
    }
}
