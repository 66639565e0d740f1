//! A frame header that announces more than arrives allocates for what
//! arrives, not for the announcement: measured with a counting global
//! allocator (in a test binary of its own, as the allocator is
//! process-wide), on the thread under test only.
//!
//! Both readers of the client side: `ringport::client::read_frame` over
//! an in-memory stream, and `Client::recv` over a real socket whose peer
//! announces 4 GiB, sends 3 bytes and closes.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Cursor, Write};
use std::net::TcpListener;

use ringport::Client;
use ringport::client::read_frame;

struct Counting;

thread_local! {
    /// Whether this thread's allocations are watched, and the largest one
    /// seen since.
    static WATCH: Cell<bool> = const { Cell::new(false) };
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // `try_with`: a thread being torn down may still allocate.
    if WATCH.try_with(Cell::get).unwrap_or(false) {
        let _ = LARGEST.try_with(|l| l.set(l.get().max(size)));
    }
}

// SAFETY: delegates every call to `System` unchanged; the bookkeeping only
// touches const-initialised thread-local `Cell`s (no allocation, no
// destructor).
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

/// Runs `f` with this thread's allocations watched; returns its result and
/// the largest single allocation it made.
fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
    LARGEST.with(|l| l.set(0));
    WATCH.with(|w| w.set(true));
    let out = f();
    WATCH.with(|w| w.set(false));
    (out, LARGEST.with(Cell::get))
}

/// 4 GiB - 1 announced, 3 bytes of it sent.
const WIRE: [u8; 7] = [0xff, 0xff, 0xff, 0xff, 1, 2, 3];

/// Far below the announcement: the readers' own buffers are at most
/// 64 KiB.
const BOUND: usize = 1 << 20;

#[test]
fn read_frame_allocates_for_what_arrives_not_for_the_announced_length() {
    let mut input = Cursor::new(&WIRE[..]);
    let (result, largest) = largest_allocation(|| read_frame(&mut input, usize::MAX));
    assert_eq!(
        result.unwrap_err().to_string(),
        "connection closed mid-frame"
    );
    assert!(largest > 0, "the allocator saw the read's buffer");
    assert!(largest <= BOUND, "an allocation of {largest} bytes");
}

#[test]
fn client_recv_allocates_for_what_arrives_not_for_the_announced_length() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(&WIRE).unwrap();
        // Closing ends the stream mid-frame.
    });
    let codec = ringport::LengthDelimited::new().max_frame_length(u32::MAX as usize);
    let mut client = Client::connect_with(addr, codec, None).expect("connect");
    client.set_timeout(Some(common::IO_TIMEOUT)).unwrap();
    peer.join().unwrap();
    let (result, largest) = largest_allocation(|| client.recv());
    let e = result.expect_err("the stream ends mid-frame");
    assert_eq!(e.to_string(), "connection closed mid-frame", "{e:?}");
    assert!(largest <= BOUND, "an allocation of {largest} bytes");
}
