//! peer-mio: framed echo server on mio (epoll, edge-triggered) — what a
//! plain, careful hand-written readiness-based server does; the reference
//! point for ringport's epoll backend.
//!
//! `--threads N` threads, each with its own `mio::Poll`, its own SO_REUSEPORT
//! listener and its own connections (nothing is shared between threads).
//! Connections are non-blocking sockets with TCP_NODELAY, registered once for
//! READABLE | WRITABLE (edge-triggered: no re-registration per message).
//!
//! Per readable event, a connection is read into the thread's read buffer
//! (`--buf-size`, default 64 KiB), the buffer is parsed into frames (4-byte
//! big-endian length, then the payload; at most 16 MiB, a larger header
//! closes the connection after the frames before it are echoed) and all the
//! complete frames of that read are echoed with one `write` (an echoed frame
//! is byte for byte the received frame, so that is the parsed prefix of the
//! read buffer). A frame that straddles reads is kept in a per-connection
//! frame buffer; once it is complete it goes out together with the complete
//! frames after it in one `writev`. When the rest of a straddling frame is
//! large (>= 16 KiB) it is read straight into the frame buffer, so big frames
//! are not copied through the read buffer.
//!
//! Writes are attempted immediately. Only when the socket does not take
//! everything is the rest copied to a per-connection outbound buffer, flushed
//! on the next writable event (while it is non-empty later echoes are
//! appended to it, keeping the byte order). While more than 1 MiB waits
//! there, the connection is not read (backpressure on a client that does not
//! read); reading resumes once it has drained.
//!
//! No allocation per message: the read buffer is per thread, and a
//! connection's frame and outbound buffers are only allocated when a frame
//! straddles reads or a write is partial, then reused (they keep their
//! capacity, so a connection that once carried a 16 MiB frame keeps up to
//! 2 × 16 MiB).
//!
//! A read that returns less than was asked for means the socket's receive
//! queue is empty, so the connection is not read again until the next event
//! (tokio does the same); the EAGAIN read that would confirm it is skipped,
//! unless the event also reported the peer's FIN (then we read to EOF).

use std::io::{self, IoSlice, Read, Write};
use std::net::TcpListener as StdTcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use peer_common::{Args, HEADER_LEN, MAX_FRAME};

const LISTENER: Token = Token(usize::MAX);
/// Rest of a straddling frame from which it is read straight into the frame
/// buffer instead of the read buffer.
const DIRECT_READ: usize = 16 * 1024;
/// Stop reading a connection while this many echo bytes wait for its socket.
const OUT_HIGH: usize = 1024 * 1024;
/// Retry interval for accept after EMFILE and the like.
const ACCEPT_RETRY: Duration = Duration::from_millis(5);

// Rare-event counters, printed to stderr at shutdown (not touched per message).
static ACCEPTED: AtomicU64 = AtomicU64::new(0);
static CLOSED: AtomicU64 = AtomicU64::new(0);
static PARTIAL_WRITES: AtomicU64 = AtomicU64::new(0);
static READ_PAUSES: AtomicU64 = AtomicU64::new(0);
static ACCEPT_BACKOFFS: AtomicU64 = AtomicU64::new(0);

fn main() {
    let args = Args::parse(
        "peer-mio",
        "framed echo server (mio, edge-triggered epoll, thread per core with SO_REUSEPORT)",
        &[
            ("buf-size", "read buffer bytes per thread (default 65536)"),
            ("events", "epoll events per wait (default 1024)"),
        ],
    );
    let buf_size = args.get_usize("buf-size", 64 * 1024);
    let events = args.get_usize("events", 1024);
    if buf_size < HEADER_LEN || events == 0 {
        eprintln!("peer-mio: --buf-size must be >= 4 and --events >= 1");
        std::process::exit(2);
    }
    peer_common::raise_nofile_limit();
    peer_common::block_term_signals();
    let listeners = match peer_common::reuseport_listeners(args.addr, args.threads) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("peer-mio: bind {}: {e}", args.addr);
            std::process::exit(1);
        }
    };
    let bound = listeners[0].local_addr().unwrap_or(args.addr);
    let (ready_tx, ready_rx) = mpsc::channel::<io::Result<()>>();
    for (i, l) in listeners.into_iter().enumerate() {
        let ready = ready_tx.clone();
        thread::Builder::new()
            .name(format!("peer-mio-{i}"))
            .spawn(move || {
                let mut w = match Worker::new(l, buf_size) {
                    Ok(w) => w,
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                let _ = ready.send(Ok(()));
                if let Err(e) = w.run(events) {
                    eprintln!("peer-mio: worker {i}: {e}");
                    std::process::exit(1);
                }
            })
            .expect("spawn worker");
    }
    drop(ready_tx);
    for r in ready_rx.iter().take(args.threads) {
        if let Err(e) = r {
            eprintln!("peer-mio: worker start: {e}");
            std::process::exit(1);
        }
    }
    peer_common::announce(bound);
    let sig = peer_common::wait_for_term_signal();
    eprintln!(
        "peer-mio: {}, shutting down (accepted {}, closed {}, partial writes {}, read pauses {}, accept backoffs {})",
        peer_common::signal_name(sig),
        ACCEPTED.load(Ordering::Relaxed),
        CLOSED.load(Ordering::Relaxed),
        PARTIAL_WRITES.load(Ordering::Relaxed),
        READ_PAUSES.load(Ordering::Relaxed),
        ACCEPT_BACKOFFS.load(Ordering::Relaxed),
    );
    // Sockets and epoll instances are reclaimed by the kernel at exit.
    std::process::exit(0);
}

/// Result of scanning a buffer for frames.
struct Parsed {
    /// Bytes at the front that form complete frames.
    complete: usize,
    /// A header announced more than MAX_FRAME bytes (right after `complete`).
    bad: bool,
}

fn parse(buf: &[u8]) -> Parsed {
    let mut pos = 0;
    while let Some(h) = buf.get(pos..pos + HEADER_LEN) {
        let n = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as usize;
        if n > MAX_FRAME {
            return Parsed {
                complete: pos,
                bad: true,
            };
        }
        if buf.len() - pos < HEADER_LEN + n {
            break;
        }
        pos += HEADER_LEN + n;
    }
    Parsed {
        complete: pos,
        bad: false,
    }
}

fn frame_len(header: &[u8]) -> usize {
    u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize
}

/// Echo bytes the socket has not taken yet: `buf[pos..end]`. `buf.len()` may
/// be larger than `end` (initialised memory kept for reuse, see
/// [`Conn::echo_frame_buf`]).
#[derive(Default)]
struct Outbox {
    buf: Vec<u8>,
    pos: usize,
    end: usize,
}

impl Outbox {
    fn pending(&self) -> usize {
        self.end - self.pos
    }

    fn push(&mut self, bufs: &[&[u8]]) {
        if self.pos == self.end {
            self.pos = 0;
            self.end = 0;
        }
        self.buf.truncate(self.end);
        for b in bufs {
            self.buf.extend_from_slice(b);
        }
        self.end = self.buf.len();
    }
}

struct Conn {
    stream: TcpStream,
    /// The frame that straddles reads: `frame[..filled]` received so far,
    /// header first. `frame.len()` is the initialised size (only grows), at
    /// least the whole frame once its header is in.
    frame: Vec<u8>,
    filled: usize,
    out: Outbox,
    /// No more reading (EOF, or an oversized header): close once `out` drains.
    done_reading: bool,
    /// Not reading because `out` holds more than OUT_HIGH bytes.
    paused: bool,
}

/// Writes as much of `bufs` as the socket takes now (one write or writev);
/// returns the byte count (0 on EAGAIN).
fn write_some(stream: &mut TcpStream, bufs: &[&[u8]]) -> io::Result<usize> {
    loop {
        let r = match bufs {
            [one] => stream.write(one),
            [a, b] => stream.write_vectored(&[IoSlice::new(a), IoSlice::new(b)]),
            _ => unreachable!("at most two pieces"),
        };
        match r {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

impl Conn {
    fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            frame: Vec::new(),
            filled: 0,
            out: Outbox::default(),
            done_reading: false,
            paused: false,
        }
    }

    /// Total size (header + payload) of the straddling frame, once its header is in.
    fn need(&self) -> Option<usize> {
        (self.filled >= HEADER_LEN).then(|| HEADER_LEN + frame_len(&self.frame))
    }

    fn finished(&self) -> bool {
        self.done_reading && self.out.pending() == 0
    }

    /// Echoes `bufs` (one or two pieces, in order): straight to the socket,
    /// the rest (if any) into the outbound buffer.
    fn send(stream: &mut TcpStream, out: &mut Outbox, bufs: &[&[u8]]) -> io::Result<()> {
        let bufs: &[&[u8]] = match bufs {
            [[], _] => &bufs[1..],
            [_, []] => &bufs[..1],
            _ => bufs,
        };
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        if total == 0 {
            return Ok(());
        }
        if out.pending() > 0 {
            // Earlier echoes are still waiting: queue behind them.
            out.push(bufs);
            return Ok(());
        }
        let n = write_some(stream, bufs)?;
        if n < total {
            PARTIAL_WRITES.fetch_add(1, Ordering::Relaxed);
            match bufs {
                [a] => out.push(&[&a[n..]]),
                [a, b] if n < a.len() => out.push(&[&a[n..], b]),
                [a, b] => out.push(&[&b[n - a.len()..]]),
                _ => unreachable!(),
            }
        }
        Ok(())
    }

    /// Echoes the completed frame `frame[..need]` on its own (after a direct
    /// read). If the socket takes only part of it, the frame buffer becomes
    /// the outbound buffer instead of being copied (the empty outbound buffer
    /// becomes the next frame buffer).
    fn echo_frame_buf(&mut self, need: usize) -> io::Result<()> {
        self.filled = 0;
        if self.out.pending() > 0 {
            self.out.push(&[&self.frame[..need]]);
            return Ok(());
        }
        let n = write_some(&mut self.stream, &[&self.frame[..need]])?;
        if n < need {
            PARTIAL_WRITES.fetch_add(1, Ordering::Relaxed);
            std::mem::swap(&mut self.frame, &mut self.out.buf);
            self.out.pos = n;
            self.out.end = need;
        }
        Ok(())
    }

    /// Handles `data` just read into the thread's buffer: completes the
    /// straddling frame, echoes every complete frame, keeps the tail.
    fn consume(&mut self, data: &[u8]) -> io::Result<()> {
        let mut data = data;
        let mut done = 0; // size of a straddling frame completed by `data`
        if self.filled > 0 {
            if self.filled < HEADER_LEN {
                let k = (HEADER_LEN - self.filled).min(data.len());
                if self.frame.len() < HEADER_LEN {
                    self.frame.resize(HEADER_LEN, 0);
                }
                self.frame[self.filled..self.filled + k].copy_from_slice(&data[..k]);
                self.filled += k;
                data = &data[k..];
                if self.filled < HEADER_LEN {
                    return Ok(());
                }
                if frame_len(&self.frame) > MAX_FRAME {
                    self.filled = 0;
                    self.done_reading = true;
                    return Ok(());
                }
            }
            let need = HEADER_LEN + frame_len(&self.frame);
            if self.frame.len() < need {
                self.frame.resize(need, 0);
            }
            let k = (need - self.filled).min(data.len());
            self.frame[self.filled..self.filled + k].copy_from_slice(&data[..k]);
            self.filled += k;
            data = &data[k..];
            if self.filled < need {
                return Ok(());
            }
            done = need;
            self.filled = 0;
        }
        let p = parse(data);
        let (whole, tail) = data.split_at(p.complete);
        Self::send(
            &mut self.stream,
            &mut self.out,
            &[&self.frame[..done], whole],
        )?;
        if p.bad {
            self.done_reading = true;
            return Ok(());
        }
        if !tail.is_empty() {
            let want = if tail.len() >= HEADER_LEN {
                HEADER_LEN + frame_len(tail)
            } else {
                tail.len()
            };
            if self.frame.len() < want {
                self.frame.resize(want, 0);
            }
            self.frame[..tail.len()].copy_from_slice(tail);
            self.filled = tail.len();
        }
        Ok(())
    }

    /// Reads until the socket is drained (or reading stops), echoing as it
    /// goes. `peer_closed`: the event reported the peer's FIN or an error,
    /// so read on until EOF/EAGAIN even after a short read.
    fn on_readable(&mut self, rbuf: &mut [u8], peer_closed: bool) -> io::Result<()> {
        loop {
            if self.done_reading || self.paused {
                return Ok(());
            }
            let direct = self
                .need()
                .filter(|&need| need - self.filled >= DIRECT_READ);
            let r = match direct {
                Some(need) => self.stream.read(&mut self.frame[self.filled..need]),
                None => self.stream.read(rbuf),
            };
            let n = match r {
                Ok(0) => {
                    self.done_reading = true;
                    return Ok(());
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            let asked = match direct {
                Some(need) => {
                    let asked = need - self.filled;
                    self.filled += n;
                    if self.filled == need {
                        self.echo_frame_buf(need)?;
                    }
                    asked
                }
                None => {
                    self.consume(&rbuf[..n])?;
                    rbuf.len()
                }
            };
            if self.out.pending() > OUT_HIGH {
                self.paused = true;
                READ_PAUSES.fetch_add(1, Ordering::Relaxed);
            }
            if n < asked && !peer_closed {
                // Short read: the receive queue is empty; the next data
                // brings a new edge.
                return Ok(());
            }
        }
    }

    /// Writes what waits in the outbound buffer; resumes reading once it has
    /// drained if reading was paused.
    fn on_writable(&mut self, rbuf: &mut [u8]) -> io::Result<()> {
        while self.out.pending() > 0 {
            let n = write_some(
                &mut self.stream,
                &[&self.out.buf[self.out.pos..self.out.end]],
            )?;
            if n == 0 {
                return Ok(());
            }
            self.out.pos += n;
        }
        if self.paused {
            self.paused = false;
            // Data may have queued up meanwhile without a new edge: read to EAGAIN.
            return self.on_readable(rbuf, true);
        }
        Ok(())
    }
}

struct Worker {
    poll: Poll,
    listener: TcpListener,
    /// Indexed by token; `free` lists the empty slots.
    conns: Vec<Option<Conn>>,
    free: Vec<usize>,
    rbuf: Box<[u8]>,
    /// accept failed with EMFILE or the like: retry every ACCEPT_RETRY.
    accept_paused: bool,
    accept_error_reported: bool,
}

impl Worker {
    fn new(l: StdTcpListener, buf_size: usize) -> io::Result<Worker> {
        l.set_nonblocking(true)?;
        let mut listener = TcpListener::from_std(l);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)?;
        Ok(Worker {
            poll,
            listener,
            conns: Vec::new(),
            free: Vec::new(),
            rbuf: vec![0u8; buf_size].into_boxed_slice(),
            accept_paused: false,
            accept_error_reported: false,
        })
    }

    fn run(&mut self, capacity: usize) -> io::Result<()> {
        let mut events = Events::with_capacity(capacity);
        loop {
            let timeout = self.accept_paused.then_some(ACCEPT_RETRY);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if self.accept_paused {
                self.accept_all();
            }
            for ev in events.iter() {
                match ev.token() {
                    LISTENER => self.accept_all(),
                    Token(i) => self.on_event(i, ev),
                }
            }
        }
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    // Inherited from the listener on Linux; set anyway.
                    let _ = stream.set_nodelay(true);
                    let i = self.free.pop().unwrap_or_else(|| {
                        self.conns.push(None);
                        self.conns.len() - 1
                    });
                    if self
                        .poll
                        .registry()
                        .register(
                            &mut stream,
                            Token(i),
                            Interest::READABLE | Interest::WRITABLE,
                        )
                        .is_err()
                    {
                        self.free.push(i);
                        continue;
                    }
                    self.conns[i] = Some(Conn::new(stream));
                    ACCEPTED.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.accept_paused = false;
                    return;
                }
                Err(e)
                    if e.kind() == io::ErrorKind::Interrupted
                        || e.raw_os_error() == Some(libc::ECONNABORTED) =>
                {
                    continue;
                }
                Err(e) => {
                    // EMFILE (fd limit) and the like: stay up, let pending
                    // connections wait in the backlog, retry a bit later (no
                    // new edge would come for them).
                    if !self.accept_error_reported {
                        eprintln!("peer-mio: accept: {e} (backing off)");
                        self.accept_error_reported = true;
                    }
                    if !self.accept_paused {
                        ACCEPT_BACKOFFS.fetch_add(1, Ordering::Relaxed);
                    }
                    self.accept_paused = true;
                    return;
                }
            }
        }
    }

    fn on_event(&mut self, i: usize, ev: &Event) {
        let Some(conn) = self.conns.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        let mut r = Ok(());
        if ev.is_writable() && conn.out.pending() > 0 {
            r = conn.on_writable(&mut self.rbuf);
        }
        if r.is_ok() && (ev.is_readable() || ev.is_read_closed() || ev.is_error()) {
            r = conn.on_readable(&mut self.rbuf, ev.is_read_closed() || ev.is_error());
        }
        if r.is_err() || conn.finished() {
            // Dropping the stream closes it, which also removes it from epoll.
            self.conns[i] = None;
            self.free.push(i);
            CLOSED.fetch_add(1, Ordering::Relaxed);
        }
    }
}
