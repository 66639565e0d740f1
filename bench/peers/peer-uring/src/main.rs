//! peer-uring: a minimal hand-written raw io_uring echo server — the "least
//! work any server can do per message" line of the comparison.
//!
//! It does not parse frames: it echoes the byte stream, which is a valid echo
//! of ringport's framing because the reply stream equals the request stream
//! byte for byte. Per thread (`--threads N`, each with its own ring,
//! SO_REUSEPORT listener and descriptor table):
//!
//! * a multishot accept that installs each connection as a *direct
//!   descriptor* (IORING_FILE_INDEX_ALLOC into a sparse fixed-file table, so
//!   connections do not count against RLIMIT_NOFILE; a table may hold at most
//!   RLIMIT_NOFILE entries, ~20,000 here, hence several rings for 65,000).
//!   Near a full table it switches to one single-shot accept at a time, and
//!   stops accepting when full (clients wait in the backlog): a connection
//!   accepted into a full table would be dropped by the kernel,
//! * a provided buffer ring (default 512 × 64 KiB) and one multishot recv per
//!   connection,
//! * a send straight from the received provided buffer; the buffer stays out
//!   of the ring until its send completes. One send in flight per connection
//!   (a FIFO of received buffers behind it) keeps the byte order; a partial
//!   send resubmits the rest.
//! * ENOBUFS (ring empty) ends the multishot recv: the connection is parked
//!   and its recv re-armed once buffers come back.
//! * With `--send-zc-min BYTES`, sends of at least that many bytes go out as
//!   IORING_OP_SEND_ZC (6.0+): the kernel pins the buffer's pages instead of
//!   copying them, and posts a notification (IORING_CQE_F_NOTIF) once it no
//!   longer needs them; the buffer goes back to the ring only then. Off by
//!   default. On loopback the kernel copies zero-copy data anyway when it
//!   reaches the local receiver (Documentation/networking/msg_zerocopy.rst,
//!   "Loopback"), so this measures what the notifications and page pinning
//!   cost there, not what a NIC would save.

use std::collections::VecDeque;
use std::io;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::ptr;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;

use io_uring::types::{BufRingEntry, DestinationSlot, Fd, Fixed};
use io_uring::{IoUring, cqueue, opcode, squeue};
use peer_common::Args;

const BGID: u16 = 0;
/// Use the multishot accept only while the table has room for more than
/// this many connections (the listen backlog, 4096, plus some).
const ACCEPT_MULTI_MARGIN: usize = peer_common::BACKLOG as usize + 64;

// Rare-event counters, printed to stderr at shutdown (not touched per message).
static ACCEPTED: AtomicU64 = AtomicU64::new(0);
static CLOSED: AtomicU64 = AtomicU64::new(0);
static ENOBUFS: AtomicU64 = AtomicU64::new(0);
static PARTIAL_SENDS: AtomicU64 = AtomicU64::new(0);
static TABLE_FULL: AtomicU64 = AtomicU64::new(0);
static ZC_SENDS: AtomicU64 = AtomicU64::new(0);
static ZC_COPIED: AtomicU64 = AtomicU64::new(0);

// user_data layout: op (8 bits) | generation (24 bits) | slot (32 bits).
const OP_ACCEPT: u64 = 1;
const OP_RECV: u64 = 2;
const OP_SEND: u64 = 3;
const OP_CLOSE: u64 = 4;
const OP_CANCEL: u64 = 5;
/// A SEND_ZC: op (8 bits) | buffer id (16) | generation's low 8 bits (8) |
/// slot (32), so that its notification names the buffer to give back.
const OP_SEND_ZC: u64 = 6;

fn ud_zc(bid: u16, generation: u32, slot: u32) -> u64 {
    (OP_SEND_ZC << 56)
        | (u64::from(bid) << 40)
        | ((u64::from(generation) & 0xff) << 32)
        | u64::from(slot)
}
fn ud_zc_bid(u: u64) -> u16 {
    (u >> 40) as u16
}

fn ud(op: u64, generation: u32, slot: u32) -> u64 {
    (op << 56) | ((u64::from(generation) & 0xff_ffff) << 32) | u64::from(slot)
}
fn ud_op(u: u64) -> u64 {
    u >> 56
}
fn ud_gen(u: u64) -> u32 {
    ((u >> 32) & 0xff_ffff) as u32
}
fn ud_slot(u: u64) -> u32 {
    u as u32
}

struct Config {
    entries: u32,
    bufs: u16,
    buf_size: u32,
    table: u32,
    /// Sends of at least this many bytes use SEND_ZC; 0: none.
    zc_min: u32,
}

fn main() {
    let args = Args::parse(
        "peer-uring",
        "raw io_uring byte-stream echo (multishot accept into direct descriptors, \
         provided buffer ring, multishot recv, send from the received buffer)",
        &[
            (
                "bufs",
                "provided buffers per thread, power of two (default 512)",
            ),
            ("buf-size", "bytes per provided buffer (default 65536)"),
            (
                "table",
                "direct descriptor table per thread (default min(RLIMIT_NOFILE, 20000))",
            ),
            ("entries", "SQ entries per ring (default 4096; CQ is 4x)"),
            (
                "send-zc-min",
                "send with IORING_OP_SEND_ZC when at least this many bytes (default 0: never)",
            ),
        ],
    );
    let nofile = peer_common::raise_nofile_limit();
    let default_table = nofile.clamp(64, 20_000) as usize;
    let cfg = Config {
        entries: args.get_usize("entries", 4096) as u32,
        bufs: {
            let b = args.get_usize("bufs", 512);
            if !b.is_power_of_two() || b > 32_768 {
                eprintln!("peer-uring: --bufs must be a power of two <= 32768");
                std::process::exit(2);
            }
            b as u16
        },
        buf_size: args.get_usize("buf-size", 64 * 1024) as u32,
        table: args.get_usize("table", default_table) as u32,
        zc_min: args.get_usize("send-zc-min", 0) as u32,
    };
    peer_common::block_term_signals();
    let listeners = match peer_common::reuseport_listeners(args.addr, args.threads) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("peer-uring: bind {}: {e}", args.addr);
            std::process::exit(1);
        }
    };
    let bound = listeners[0].local_addr().unwrap_or(args.addr);
    let cfg = std::sync::Arc::new(cfg);
    let (ready_tx, ready_rx) = mpsc::channel::<io::Result<()>>();
    for (i, l) in listeners.into_iter().enumerate() {
        let ready = ready_tx.clone();
        let cfg = cfg.clone();
        thread::Builder::new()
            .name(format!("peer-uring-{i}"))
            .spawn(move || {
                let mut w = match Worker::new(l, &cfg) {
                    Ok(w) => w,
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                let _ = ready.send(Ok(()));
                if let Err(e) = w.run() {
                    eprintln!("peer-uring: worker {i}: {e}");
                    std::process::exit(1);
                }
            })
            .expect("spawn worker");
    }
    drop(ready_tx);
    for r in ready_rx.iter().take(args.threads) {
        if let Err(e) = r {
            eprintln!("peer-uring: worker start: {e}");
            std::process::exit(1);
        }
    }
    peer_common::announce(bound);
    let sig = peer_common::wait_for_term_signal();
    eprintln!(
        "peer-uring: {}, shutting down (accepted {}, closed {}, ENOBUFS {}, partial sends {}, accept paused on full table {}, zero-copy sends {}, of which the kernel copied {})",
        peer_common::signal_name(sig),
        ACCEPTED.load(Ordering::Relaxed),
        CLOSED.load(Ordering::Relaxed),
        ENOBUFS.load(Ordering::Relaxed),
        PARTIAL_SENDS.load(Ordering::Relaxed),
        TABLE_FULL.load(Ordering::Relaxed),
        ZC_SENDS.load(Ordering::Relaxed),
        ZC_COPIED.load(Ordering::Relaxed),
    );
    // Rings, tables and sockets are reclaimed by the kernel at exit.
    std::process::exit(0);
}

/// A provided buffer ring plus the memory of its buffers.
struct BufRing {
    ring: *mut BufRingEntry,
    ring_bytes: usize,
    base: *mut u8,
    base_bytes: usize,
    buf_size: u32,
    mask: u16,
    /// Local tail, published to the kernel by [`BufRing::publish`].
    tail: u16,
    dirty: bool,
    /// Buffers currently held by the application (received, not yet sent).
    held: usize,
    count: usize,
    /// Per buffer: zero-copy sends whose notification has not come yet.
    zc_pending: Vec<u16>,
    /// Per buffer: the application is done with it, but it waits for its
    /// zero-copy notifications before going back to the ring.
    zc_done: Vec<bool>,
}

fn mmap_anon(len: usize) -> io::Result<*mut u8> {
    // SAFETY: anonymous private mapping, no file, no fixed address.
    let p = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        Err(io::Error::last_os_error())
    } else {
        Ok(p.cast())
    }
}

impl BufRing {
    fn new(ring: &IoUring, count: u16, buf_size: u32) -> io::Result<BufRing> {
        let ring_bytes = usize::from(count) * std::mem::size_of::<BufRingEntry>();
        let base_bytes = usize::from(count) * buf_size as usize;
        // mmap gives page-aligned, zeroed memory: the kernel requires the ring
        // to be page aligned, and a zero tail means "no buffers yet".
        let entries = mmap_anon(ring_bytes)?.cast::<BufRingEntry>();
        let base = mmap_anon(base_bytes)?;
        // SAFETY: `entries` points to `count` zeroed BufRingEntry slots that
        // stay mapped for the life of the ring (BufRing is never dropped
        // before the IoUring: both live in Worker until process exit).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries as u64, count, BGID, 0)?;
        }
        let mut br = BufRing {
            ring: entries,
            ring_bytes,
            base,
            base_bytes,
            buf_size,
            mask: count - 1,
            tail: 0,
            dirty: false,
            held: usize::from(count),
            count: usize::from(count),
            zc_pending: vec![0; usize::from(count)],
            zc_done: vec![false; usize::from(count)],
        };
        for bid in 0..count {
            br.recycle(bid);
        }
        br.publish();
        Ok(br)
    }

    fn buf(&self, bid: u16) -> *mut u8 {
        // SAFETY: bid < count, so the offset is inside the `base` mapping.
        unsafe { self.base.add(usize::from(bid) * self.buf_size as usize) }
    }

    /// Hands buffer `bid` back to the kernel (visible after `publish`).
    fn recycle(&mut self, bid: u16) {
        let idx = usize::from(self.tail & self.mask);
        let addr = self.buf(bid) as u64;
        // SAFETY: idx <= mask < count, inside the ring mapping. The kernel
        // only reads entries between its head and our published tail, and
        // this slot is past the published tail, so nobody reads it now. We
        // write the addr/len/bid fields only, not `resv` (which for entry 0
        // is the shared tail).
        unsafe {
            let e = self.ring.add(idx);
            (*e).set_addr(addr);
            (*e).set_len(self.buf_size);
            (*e).set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
        self.held -= 1;
        self.dirty = true;
    }

    /// The application is done with buffer `bid`: back to the ring now, or
    /// once the kernel has sent the notifications of its zero-copy sends.
    fn release(&mut self, bid: u16) {
        if self.zc_pending[usize::from(bid)] > 0 {
            self.zc_done[usize::from(bid)] = true;
        } else {
            self.recycle(bid);
        }
    }

    /// A zero-copy send's notification for buffer `bid`.
    fn zc_notified(&mut self, bid: u16) {
        let i = usize::from(bid);
        self.zc_pending[i] -= 1;
        if self.zc_pending[i] == 0 && self.zc_done[i] {
            self.zc_done[i] = false;
            self.recycle(bid);
        }
    }

    fn publish(&mut self) {
        if !self.dirty {
            return;
        }
        // SAFETY: the tail is the u16 `resv` field of entry 0, 2-byte aligned,
        // shared with the kernel; the release store orders the entry writes
        // above before the kernel can observe the new tail.
        unsafe {
            let tail = BufRingEntry::tail(self.ring).cast::<AtomicU16>();
            (*tail).store(self.tail, Ordering::Release);
        }
        self.dirty = false;
    }

    fn free(&self) -> usize {
        self.count - self.held
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        // SAFETY: both mappings were created by mmap_anon with these lengths.
        // Only reached when the worker (and its IoUring, declared first and
        // so dropped first) goes away.
        unsafe {
            libc::munmap(self.ring.cast(), self.ring_bytes);
            libc::munmap(self.base.cast(), self.base_bytes);
        }
    }
}

#[derive(Clone, Copy)]
struct Pending {
    bid: u16,
    off: u32,
    len: u32,
}

#[derive(Default)]
struct Conn {
    active: bool,
    generation: u32,
    recv_armed: bool,
    /// The front of `queue` is being sent.
    sending: bool,
    /// Peer sent FIN: close once everything received was echoed.
    eof: bool,
    /// Error: drop the queue, close once no op is in flight.
    failed: bool,
    cancel_sent: bool,
    /// Parked on ENOBUFS, waiting for buffers.
    starved: bool,
    queue: VecDeque<Pending>,
}

struct Worker {
    // Field order matters for Drop: the ring goes before the buffer memory.
    ring: IoUring,
    bufs: BufRing,
    listener: TcpListener,
    conns: Vec<Conn>,
    starved: VecDeque<u32>,
    /// An accept is in the kernel (multishot if `accept_multi`).
    accept_armed: bool,
    accept_multi: bool,
    accept_cancel_sent: bool,
    /// The kernel reported the table full: wait for a close.
    table_full: bool,
    /// Open connections and the table size.
    active: usize,
    table: usize,
    cqes: Vec<(u64, i32, u32)>,
    zc_min: u32,
}

impl Worker {
    fn new(listener: TcpListener, cfg: &Config) -> io::Result<Worker> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_defer_taskrun()
            .setup_coop_taskrun()
            .setup_submit_all()
            .setup_cqsize(cfg.entries * 4)
            .build(cfg.entries)?;
        ring.submitter().register_files_sparse(cfg.table)?;
        let bufs = BufRing::new(&ring, cfg.bufs, cfg.buf_size)?;
        let mut conns = Vec::with_capacity(cfg.table as usize);
        conns.resize_with(cfg.table as usize, Conn::default);
        let mut w = Worker {
            ring,
            bufs,
            listener,
            conns,
            starved: VecDeque::new(),
            accept_armed: false,
            accept_multi: false,
            accept_cancel_sent: false,
            table_full: false,
            active: 0,
            table: cfg.table as usize,
            cqes: Vec::with_capacity(4096),
            zc_min: cfg.zc_min,
        };
        w.want_accept();
        Ok(w)
    }

    fn push(&mut self, e: squeue::Entry) {
        loop {
            // SAFETY: every SQE we build points either at nothing or at a
            // provided buffer that stays out of the buffer ring (and mapped)
            // until this SQE's completion has been processed.
            if unsafe { self.ring.submission().push(&e) }.is_ok() {
                return;
            }
            // SQ full: hand what we have to the kernel and retry.
            self.bufs.publish();
            if let Err(err) = self.ring.submit()
                && err.raw_os_error() != Some(libc::EBUSY)
            {
                panic!("io_uring submit: {err}");
            }
        }
    }

    /// Keeps the right kind of accept armed for the room left in the table.
    ///
    /// A connection accepted into a full direct-descriptor table is dropped
    /// by the kernel, and a multishot accept takes every connection waiting
    /// in the backlog in one go. So the multishot accept runs only while the
    /// table has room for a whole backlog; closer to the limit, one
    /// single-shot accept at a time; with the table full, none (new clients
    /// wait in the listen backlog until a connection closes).
    fn want_accept(&mut self) {
        let room = self.table.saturating_sub(self.active);
        let multi_ok = room > ACCEPT_MULTI_MARGIN;
        if self.accept_armed {
            if self.accept_multi && !multi_ok && !self.accept_cancel_sent {
                self.accept_cancel_sent = true;
                let e = opcode::AsyncCancel::new(ud(OP_ACCEPT, 0, 0))
                    .build()
                    .user_data(ud(OP_CANCEL, 0, 0));
                self.push(e);
            }
            return;
        }
        if room == 0 || self.table_full {
            TABLE_FULL.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let fd = Fd(self.listener.as_raw_fd());
        let e = if multi_ok {
            opcode::AcceptMulti::new(fd)
                .allocate_file_index(true)
                .build()
        } else {
            opcode::Accept::new(fd, ptr::null_mut(), ptr::null_mut())
                .file_index(Some(DestinationSlot::auto_target()))
                .build()
        };
        self.accept_armed = true;
        self.accept_multi = multi_ok;
        self.accept_cancel_sent = false;
        self.push(e.user_data(ud(OP_ACCEPT, 0, 0)));
    }

    fn arm_recv(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        c.recv_armed = true;
        let e = opcode::RecvMulti::new(Fixed(slot), BGID)
            .build()
            .user_data(ud(OP_RECV, c.generation, slot));
        self.push(e);
    }

    /// Sends the rest of the front buffer of `slot`'s queue.
    fn send_front(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        let Some(p) = c.queue.front().copied() else {
            return;
        };
        c.sending = true;
        let generation = c.generation;
        // SAFETY: off < buf_size, so the pointer stays inside buffer `bid`.
        let ptr = unsafe { self.bufs.buf(p.bid).add(p.off as usize) };
        let e = if self.zc_min > 0 && p.len >= self.zc_min {
            ZC_SENDS.fetch_add(1, Ordering::Relaxed);
            opcode::SendZc::new(Fixed(slot), ptr, p.len)
                .flags(libc::MSG_NOSIGNAL)
                // IORING_SEND_ZC_REPORT_USAGE (6.2+): the notification says
                // whether the kernel copied after all.
                .zc_flags(1 << 3)
                .build()
                .user_data(ud_zc(p.bid, generation, slot))
        } else {
            opcode::Send::new(Fixed(slot), ptr, p.len)
                .flags(libc::MSG_NOSIGNAL)
                .build()
                .user_data(ud(OP_SEND, generation, slot))
        };
        self.push(e);
    }

    /// Closes `slot` if it is finished and nothing is in flight.
    fn maybe_close(&mut self, slot: u32) {
        let c = &mut self.conns[slot as usize];
        if !c.active {
            return;
        }
        if c.failed {
            // Return every queued buffer that is not being sent.
            let keep = usize::from(c.sending);
            while c.queue.len() > keep {
                let p = c.queue.pop_back().expect("queue non-empty");
                self.bufs.release(p.bid);
            }
            if c.recv_armed && !c.cancel_sent {
                c.cancel_sent = true;
                let target = ud(OP_RECV, c.generation, slot);
                let e = opcode::AsyncCancel::new(target).build().user_data(ud(
                    OP_CANCEL,
                    c.generation,
                    slot,
                ));
                self.push(e);
                return;
            }
        }
        let c = &mut self.conns[slot as usize];
        let done = c.failed || (c.eof && c.queue.is_empty());
        if done && !c.sending && !c.recv_armed {
            let generation = c.generation;
            // No op of this connection is in flight any more: forget it now
            // (the kernel may hand the slot to a new connection right after
            // the close), keeping the generation counter.
            *c = Conn {
                // user_data carries 24 bits of it.
                generation: generation.wrapping_add(1) & 0xff_ffff,
                ..Conn::default()
            };
            CLOSED.fetch_add(1, Ordering::Relaxed);
            self.active -= 1;
            let e = opcode::Close::new(Fixed(slot))
                .build()
                .user_data(ud(OP_CLOSE, generation, slot));
            self.push(e);
        }
    }

    fn run(&mut self) -> io::Result<()> {
        loop {
            self.bufs.publish();
            match self.ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => return Err(e),
            }
            let mut cqes = std::mem::take(&mut self.cqes);
            cqes.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            for &(u, res, flags) in &cqes {
                self.complete(u, res, flags);
            }
            cqes.clear();
            self.cqes = cqes;
            self.unpark_starved();
        }
    }

    /// Re-arms recvs parked on ENOBUFS, as many as there are free buffers.
    fn unpark_starved(&mut self) {
        let mut budget = self.bufs.free();
        while budget > 0 {
            let Some(slot) = self.starved.pop_front() else {
                break;
            };
            let c = &mut self.conns[slot as usize];
            if !(c.active && c.starved) {
                continue; // closed (and maybe reused) since it was parked
            }
            c.starved = false;
            budget -= 1;
            self.arm_recv(slot);
        }
    }

    fn complete(&mut self, u: u64, res: i32, flags: u32) {
        let slot = ud_slot(u);
        match ud_op(u) {
            OP_ACCEPT => self.on_accept(res, flags),
            OP_CLOSE => {
                self.table_full = false;
                self.want_accept();
            }
            OP_CANCEL => {}
            OP_RECV => {
                let c = &self.conns[slot as usize];
                if !c.active || c.generation != ud_gen(u) {
                    if let Some(bid) = cqueue::buffer_select(flags) {
                        self.bufs.held += 1;
                        self.bufs.recycle(bid);
                    }
                    return;
                }
                self.on_recv(slot, res, flags);
            }
            OP_SEND => {
                let c = &self.conns[slot as usize];
                if !c.active || c.generation != ud_gen(u) {
                    return;
                }
                self.on_send(slot, res);
            }
            OP_SEND_ZC => {
                let bid = ud_zc_bid(u);
                if cqueue::notif(flags) {
                    // IORING_NOTIF_USAGE_ZC_COPIED: the kernel fell back
                    // to copying (reported with IORING_SEND_ZC_REPORT_USAGE).
                    if res as u32 & 0x8000_0000 != 0 {
                        ZC_COPIED.fetch_add(1, Ordering::Relaxed);
                    }
                    self.bufs.zc_notified(bid);
                    return;
                }
                if cqueue::more(flags) {
                    self.bufs.zc_pending[usize::from(bid)] += 1;
                }
                let c = &self.conns[slot as usize];
                if !c.active || (c.generation & 0xff) != ((u >> 32) & 0xff) as u32 {
                    return;
                }
                self.on_send(slot, res);
            }
            _ => {}
        }
    }

    fn on_accept(&mut self, res: i32, flags: u32) {
        if !cqueue::more(flags) {
            self.accept_armed = false;
        }
        if res >= 0 {
            let slot = res as u32;
            if (slot as usize) < self.conns.len() {
                ACCEPTED.fetch_add(1, Ordering::Relaxed);
                self.active += 1;
                let c = &mut self.conns[slot as usize];
                let generation = c.generation;
                *c = Conn {
                    active: true,
                    generation,
                    ..Conn::default()
                };
                self.arm_recv(slot);
            } else {
                // Cannot happen (the table is exactly conns.len()), but never
                // leak a slot.
                let e = opcode::Close::new(Fixed(slot))
                    .build()
                    .user_data(ud(OP_CLOSE, 0, slot));
                self.push(e);
            }
        } else if res == -libc::ENFILE || res == -libc::EMFILE {
            // Table full after all (that connection was dropped by the
            // kernel): wait for a close.
            self.table_full = true;
        }
        self.want_accept();
    }

    fn on_recv(&mut self, slot: u32, res: i32, flags: u32) {
        let more = cqueue::more(flags);
        let bid = cqueue::buffer_select(flags);
        if bid.is_some() {
            self.bufs.held += 1;
        }
        let c = &mut self.conns[slot as usize];
        if !more {
            c.recv_armed = false;
        }
        if res > 0 {
            let bid = bid.expect("recv with data but no buffer");
            if c.failed {
                self.bufs.recycle(bid);
            } else {
                c.queue.push_back(Pending {
                    bid,
                    off: 0,
                    len: res as u32,
                });
                let start_send = !c.sending;
                if start_send {
                    self.send_front(slot);
                }
                if !more {
                    self.arm_recv(slot);
                }
            }
        } else {
            if res == -libc::ENOBUFS {
                ENOBUFS.fetch_add(1, Ordering::Relaxed);
                if !c.failed && !c.eof {
                    c.starved = true;
                    self.starved.push_back(slot);
                }
            } else if res == 0 {
                c.eof = true;
            } else {
                c.failed = true;
            }
            if let Some(bid) = bid {
                self.bufs.recycle(bid);
            }
        }
        self.maybe_close(slot);
    }

    fn on_send(&mut self, slot: u32, res: i32) {
        let c = &mut self.conns[slot as usize];
        c.sending = false;
        let Some(front) = c.queue.front_mut() else {
            return;
        };
        if res > 0 && !c.failed {
            let sent = res as u32;
            if sent < front.len {
                // Partial send: resubmit the rest of this buffer.
                PARTIAL_SENDS.fetch_add(1, Ordering::Relaxed);
                front.off += sent;
                front.len -= sent;
                self.send_front(slot);
                return;
            }
        } else {
            c.failed = true;
        }
        let p = c.queue.pop_front().expect("front exists");
        self.bufs.release(p.bid);
        let c = &self.conns[slot as usize];
        if !c.failed && !c.queue.is_empty() {
            self.send_front(slot);
        }
        self.maybe_close(slot);
    }
}
