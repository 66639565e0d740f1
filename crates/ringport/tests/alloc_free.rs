//! The handler-API echo path allocates nothing per message once warm.
//!
//! A counting global allocator counts the allocations made on threads that
//! opted in. The handler factory runs on each shard thread, so it opts the
//! shard threads in; the clients' allocations (test threads) are not
//! counted. This file holds a single test: the counter is process-wide.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use common::*;
use ringport::handlers::Echo;
use ringport::{CloseReason, ConnId, Context, Handler, LengthDelimited, Server};

struct Counting;

static ALLOCS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static COUNT_ME: Cell<bool> = const { Cell::new(false) };
}

fn note(size: usize) {
    // `try_with`: a thread being torn down may still allocate.
    if COUNT_ME.try_with(Cell::get).unwrap_or(false) {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
        BYTES.fetch_add(size as u64, Ordering::Relaxed);
    }
}

// SAFETY: delegates every call to `System` unchanged; the bookkeeping only
// touches atomics and a const-initialised thread-local `Cell` (no
// allocation, no destructor).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Echo, built on the shard thread, which it opts in to counting.
struct Counted(Echo);

impl Counted {
    fn new() -> Self {
        COUNT_ME.with(|c| c.set(true));
        Counted(Echo)
    }
}

impl Handler for Counted {
    type ConnState = ();

    fn on_connect(&mut self, ctx: &mut Context<'_>, conn: ConnId, peer: SocketAddr) {
        self.0.on_connect(ctx, conn, peer)
    }

    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, state: &mut (), msg: &[u8]) {
        self.0.on_message(ctx, conn, state, msg)
    }

    fn on_close(&mut self, ctx: &mut Context<'_>, conn: ConnId, state: (), reason: CloseReason) {
        self.0.on_close(ctx, conn, state, reason)
    }
}

/// `rounds` round trips of 100-byte messages on each of `conns`, one thread
/// per connection.
fn traffic(conns: &mut Vec<std::net::TcpStream>, rounds: usize) {
    let taken = std::mem::take(conns);
    let workers: Vec<_> = taken
        .into_iter()
        .enumerate()
        .map(|(k, mut s)| {
            thread::spawn(move || {
                let msg = pattern(k as u64, 100);
                for _ in 0..rounds {
                    let echo = round_trip(&mut s, &msg);
                    assert_eq!(echo, msg);
                }
                s
            })
        })
        .collect();
    *conns = workers.into_iter().map(|w| w.join().unwrap()).collect();
}

#[test]
fn echo_path_does_not_allocate_per_message() {
    const CONNS: usize = 4;
    const WARM: usize = 250; // per connection: 1,000 in all
    const MEASURED: usize = 5_000; // per connection: 20,000 in all

    let mut cfg = config();
    cfg.shards = 2;
    let server =
        Server::start(cfg, LengthDelimited::new(), |_| Counted::new()).expect("start server");
    assert_backend(&server);
    let addr = server.local_addr();
    let mut conns: Vec<_> = (0..CONNS).map(|_| connect(addr)).collect();
    assert!(wait_until(Duration::from_secs(10), || server
        .stats()
        .connections
        == CONNS as u64));

    traffic(&mut conns, WARM);
    let before = server.stats();
    let (allocs0, bytes0) = (ALLOCS.load(Ordering::SeqCst), BYTES.load(Ordering::SeqCst));
    traffic(&mut conns, MEASURED);
    let (allocs1, bytes1) = (ALLOCS.load(Ordering::SeqCst), BYTES.load(Ordering::SeqCst));
    let after = server.stats();

    let messages = after.messages_in - before.messages_in;
    assert_eq!(messages, (CONNS * MEASURED) as u64);
    assert_eq!(after.messages_out - before.messages_out, messages);
    let allocs = allocs1 - allocs0;
    eprintln!(
        "{messages} echoes: {allocs} allocations ({} bytes) on the shard threads; {} before",
        bytes1 - bytes0,
        allocs0
    );
    assert!(allocs0 > 0, "the counter counts shard-thread allocations");
    assert!(
        allocs * 100 < messages,
        "{allocs} allocations for {messages} messages"
    );
    drop(conns);
    server.stop();
}
