//! epoll backend: readiness through mio (edge-triggered epoll), turned into
//! the completions io_uring would have produced (the contract is in
//! [`super`]).
//!
//! Every socket is registered once, for reading and writing, for its whole
//! life (token = slot); the listener and the shard's eventfd have tokens of
//! their own. Readiness is edge-triggered, so the driver remembers it per
//! slot: a flag is set by an event and cleared only when a system call shows
//! the socket drained (a would-block, a short read, a partial write). Hang-up
//! and error events keep a socket readable until a read says would-block, as
//! the bytes before the end of stream and the end itself still need a read.
//!
//! An op is remembered in its slot (a receive armed, a send with its iovecs,
//! a connect in progress). A slot that is ready and has work is put on the
//! ready list (once: the `queued` flag); [`Driver::next_completion`] makes the
//! system calls for the slots on the list and reports their results. Reads
//! are done there, lazily, into the driver's one read buffer, which the
//! engine gives back before it asks for the next completion: at most one
//! read per connection per round, and a connection whose read filled the
//! buffer goes to the next round (it may have more), which makes the next
//! [`Driver::wait`] poll without blocking. Results that need no readiness
//! (a send written at once, a close, a cancel) wait in a FIFO and come
//! first.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};

use self::calls::{
    AcceptError, clamp_iovecs, classify_accept_error, errno, read_eventfd, recv_into, send_iovecs,
};
use super::{BufId, Completion, Driver, Op, RecvBuffers, RecvTarget, SendQueues};
use crate::stats::RECV_BUFFER_BYTES;

mod calls;
mod connect;

const WAKE: Token = Token(usize::MAX - 2);
/// Listener `i` has token `LISTENER_BASE - i` (a few, below the others).
const LISTENER_BASE: usize = usize::MAX - 3;
const MAX_LISTENERS: usize = 16;

fn listener_token(i: usize) -> Token {
    Token(LISTENER_BASE - i)
}
/// Readiness events taken per poll.
const EVENTS: usize = 1024;
/// Segments of the send queue written per send (as the io_uring engine).
const MAX_IOVECS: usize = 64;
/// Accepts per round, so a flood of clients cannot starve open connections.
const ACCEPTS_PER_ROUND: usize = 64;
/// Waits in a row that may skip polling because completions are ready.
const MAX_POLLS_SKIPPED: u32 = 4;
/// The id of the one read buffer.
const READ_BUF: BufId = 0;

/// A slot of the connection table, with what is asked of its socket and
/// what is known of its readiness.
#[derive(Default)]
struct Slot {
    /// `None`: the slot is free.
    stream: Option<TcpStream>,
    /// Registered with the poller (outbound sockets are from their connect
    /// on).
    registered: bool,
    readable: bool,
    /// Hang-up or error seen: readable until a read would block.
    read_closed: bool,
    writable: bool,
    /// On the ready list or the next round's list.
    queued: bool,
    /// Generation of the armed receive.
    recv: Option<u32>,
    /// Generation and target of the armed direct receive (engine memory,
    /// see [`Op::RecvInto`]).
    recv_into: Option<(u32, RecvTarget)>,
    /// Generation of the pending send; its iovecs are in `iov`.
    send: Option<u32>,
    iov: Vec<libc::iovec>,
    /// Generation of the connect in progress.
    connect: Option<u32>,
}

impl Slot {
    fn has_work(&self) -> bool {
        ((self.recv.is_some() || self.recv_into.is_some()) && self.readable)
            || (self.writable && (self.send.is_some() || self.connect.is_some()))
    }

    /// Forgets the socket and its ops; list membership and the iovec
    /// storage stay.
    fn reset(&mut self) {
        let mut iov = std::mem::take(&mut self.iov);
        iov.clear();
        *self = Slot {
            queued: self.queued,
            iov,
            ..Slot::default()
        };
    }
}

/// The epoll backend of one shard.
pub(crate) struct EpollDriver {
    poll: Poll,
    events: Events,
    /// The shard's listeners, each with whether it may have a client
    /// waiting (unknown counts as ready).
    listeners: Vec<(Option<TcpListener>, bool)>,
    /// Where the next accept looks first (so no listener is starved).
    next_listener: usize,
    /// Accepts asked for and not completed yet.
    accept_budget: usize,
    accepted_this_round: usize,
    /// The shard's eventfd (owned by the shard, outlives the driver).
    wake: RawFd,
    slots: Vec<Slot>,
    /// Free slots, the next one to use last.
    free: Vec<u32>,
    /// Slots with work this round, in order.
    ready: VecDeque<u32>,
    /// Slots for the next round (their read filled the buffer).
    again: Vec<u32>,
    /// Results that need no more system call, in order.
    completions: VecDeque<Completion>,
    read_buf: Box<[u8]>,
    /// The read buffer is lent to the engine.
    lent: bool,
    /// Waits in a row that returned without polling.
    polls_skipped: u32,
}

impl EpollDriver {
    /// A driver for a shard with `capacity` slots, accepting from `listener`
    /// if given (made non-blocking here), reporting wake-ups of the
    /// non-blocking eventfd `wake` (which must stay open as long as the
    /// driver), and reading into one buffer of `read_buffer_size` bytes.
    pub(crate) fn new(
        listeners: Vec<std::net::TcpListener>,
        wake: BorrowedFd<'_>,
        capacity: usize,
        read_buffer_size: usize,
    ) -> io::Result<Self> {
        if read_buffer_size == 0 || read_buffer_size > i32::MAX as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "read buffer size must be between 1 byte and 2 GiB",
            ));
        }
        if capacity > i32::MAX as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "too many slots for the epoll backend",
            ));
        }
        let poll = Poll::new()?;
        let wake = wake.as_raw_fd();
        poll.registry()
            .register(&mut SourceFd(&wake), WAKE, Interest::READABLE)?;
        if listeners.len() > MAX_LISTENERS {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "too many listeners for the epoll backend",
            ));
        }
        let mut open = Vec::with_capacity(listeners.len());
        for (i, l) in listeners.into_iter().enumerate() {
            l.set_nonblocking(true)?;
            let mut l = TcpListener::from_std(l);
            poll.registry()
                .register(&mut l, listener_token(i), Interest::READABLE)?;
            open.push((Some(l), true));
        }
        let read_buf = vec![0u8; read_buffer_size].into_boxed_slice();
        RECV_BUFFER_BYTES.fetch_add(read_buf.len(), Ordering::Relaxed);
        Ok(EpollDriver {
            poll,
            events: Events::with_capacity(EVENTS),
            listeners: open,
            next_listener: 0,
            accept_budget: 0,
            accepted_this_round: 0,
            wake,
            slots: (0..capacity).map(|_| Slot::default()).collect(),
            free: (0..capacity as u32).rev().collect(),
            ready: VecDeque::new(),
            again: Vec::new(),
            completions: VecDeque::new(),
            read_buf,
            lent: false,
            polls_skipped: 0,
        })
    }

    fn push(&mut self, completion: Completion) {
        self.completions.push_back(completion);
    }

    /// The slot if it holds a socket.
    fn open(&mut self, slot: u32) -> Option<&mut Slot> {
        self.slots
            .get_mut(slot as usize)
            .filter(|s| s.stream.is_some())
    }

    fn withdraw_accepts(&mut self) {
        for _ in 0..self.accept_budget {
            self.push(Completion::Accepted(0, Err(libc::ECANCELED)));
        }
        self.accept_budget = 0;
    }

    fn arm_recv(&mut self, slot: u32, generation: u32) {
        let Some(s) = self.open(slot).filter(|s| s.registered) else {
            return self.push(Completion::Recv {
                slot,
                generation,
                result: -libc::EBADF,
                buf: None,
                more: false,
            });
        };
        s.recv = Some(generation);
        // The flags follow every edge, armed or not, but a read costs little
        // next to a receive that never starts: try once without an edge.
        s.readable = true;
        schedule(&mut self.slots, &mut self.ready, slot);
    }

    /// Ends the armed receive of `slot` if it is the one of `generation` (a
    /// cancel aimed at an earlier connection in the slot finds nothing, as
    /// io_uring's cancel by tag).
    fn cancel_recv(&mut self, slot: u32, generation: u32) {
        let armed = self.open(slot).filter(|s| s.recv == Some(generation));
        if armed.and_then(|s| s.recv.take()).is_some() {
            self.push(Completion::Recv {
                slot,
                generation,
                result: -libc::ECANCELED,
                buf: None,
                more: false,
            });
        }
    }

    /// Remembers a direct receive; it reads when the socket is readable.
    /// Unlike a multishot receive's arming, the readiness flag is trusted
    /// (edges keep it, armed or not): a direct receive is armed once per
    /// message in bulk mode, and trying a read the last one showed empty
    /// would cost a failing system call each time.
    fn arm_recv_into(&mut self, slot: u32, generation: u32, queues: &dyn SendQueues) {
        let target = queues.recv_target(slot);
        let (Some(s), Some(target)) = (self.open(slot).filter(|s| s.registered), target) else {
            return self.push(Completion::RecvInto {
                slot,
                generation,
                result: -libc::EBADF,
            });
        };
        s.recv_into = Some((generation, target));
        schedule(&mut self.slots, &mut self.ready, slot);
    }

    /// Ends the armed direct receive of `slot` if it is the one of
    /// `generation`.
    fn cancel_recv_into(&mut self, slot: u32, generation: u32) {
        let armed = self
            .open(slot)
            .filter(|s| s.recv_into.is_some_and(|(g, _)| g == generation));
        if armed.and_then(|s| s.recv_into.take()).is_some() {
            self.push(Completion::RecvInto {
                slot,
                generation,
                result: -libc::ECANCELED,
            });
        }
    }

    /// Reads once into the target of the armed direct receive of `slot`;
    /// keeps it armed if the socket would block.
    fn read_into(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        let (Some((generation, target)), Some(stream)) = (s.recv_into, s.stream.as_ref()) else {
            return;
        };
        let result = match recv_into(stream.as_raw_fd(), target) {
            Ok(n) => {
                if n < target.len && !s.read_closed {
                    s.readable = false;
                }
                n as i32
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                s.readable = false;
                s.read_closed = false;
                return;
            }
            Err(e) => -errno(&e),
        };
        s.recv_into = None;
        self.push(Completion::RecvInto {
            slot,
            generation,
            result,
        });
    }

    fn send(&mut self, slot: u32, generation: u32, queues: &dyn SendQueues) {
        let error = match self.open(slot).filter(|s| s.registered) {
            None => -libc::EBADF,
            Some(s) if s.send.is_some() => -libc::EALREADY,
            Some(s) => {
                queues.send_queue(slot).fill_iovecs(&mut s.iov, MAX_IOVECS);
                clamp_iovecs(&mut s.iov, i32::MAX as usize);
                s.send = Some(generation);
                // Not writable: the edge that makes it so schedules the slot.
                if s.writable {
                    self.try_send(slot);
                }
                return;
            }
        };
        self.push(Completion::Sent {
            slot,
            generation,
            result: error,
        });
    }

    /// Writes the pending send of `slot`; keeps it pending if the socket
    /// would block.
    fn try_send(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        let (Some(generation), Some(stream)) = (s.send, s.stream.as_ref()) else {
            return;
        };
        let covered: usize = s.iov.iter().map(|v| v.iov_len).sum();
        let result = match send_iovecs(stream.as_raw_fd(), &s.iov) {
            Ok(n) => {
                if n < covered {
                    s.writable = false;
                }
                n as i32
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                s.writable = false;
                return;
            }
            Err(e) => -errno(&e),
        };
        s.send = None;
        s.iov.clear();
        self.push(Completion::Sent {
            slot,
            generation,
            result,
        });
    }

    /// Drops the pending send of `slot` if it is the one of `generation`.
    fn cancel_send(&mut self, slot: u32, generation: u32) {
        if let Some(s) = self.open(slot).filter(|s| s.send == Some(generation))
            && s.send.take().is_some()
        {
            s.iov.clear();
            self.push(Completion::Sent {
                slot,
                generation,
                result: -libc::ECANCELED,
            });
        }
    }

    fn close(&mut self, slot: u32, generation: u32) {
        let result = match self.slots.get_mut(slot as usize) {
            Some(s) if s.stream.is_some() => {
                if let Some(mut stream) = s.stream.take()
                    && s.registered
                {
                    let _ = self.poll.registry().deregister(&mut stream);
                }
                s.reset();
                self.free.push(slot);
                0
            }
            _ => -libc::EBADF,
        };
        self.push(Completion::Closed {
            slot,
            generation,
            result,
        });
    }

    /// Reads once for the armed receive of `slot`.
    fn read(&mut self, slot: u32) {
        debug_assert!(!self.lent, "the read buffer is still lent");
        let s = &mut self.slots[slot as usize];
        if self.lent {
            s.queued = true;
            self.again.push(slot);
            return;
        }
        let (Some(generation), Some(stream)) = (s.recv, s.stream.as_ref()) else {
            return;
        };
        let mut reader = stream;
        let result = loop {
            match reader.read(&mut self.read_buf) {
                Ok(n) => break Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    s.readable = false;
                    s.read_closed = false;
                    return;
                }
                Err(e) => break Err(e),
            }
        };
        let (result, buf, more) = match result {
            Ok(0) => (0, None, false),
            Ok(n) => {
                self.lent = true;
                if n == self.read_buf.len() || s.read_closed {
                    // May have more: again next round.
                    s.queued = true;
                    self.again.push(slot);
                } else {
                    s.readable = false;
                }
                (n as i32, Some(READ_BUF), true)
            }
            Err(e) => (-errno(&e), None, false),
        };
        if !more {
            s.recv = None;
        }
        self.push(Completion::Recv {
            slot,
            generation,
            result,
            buf,
            more,
        });
    }

    /// Does the work of a slot taken off the ready list.
    fn run_slot(&mut self, slot: u32) {
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return;
        };
        s.queued = false;
        if s.stream.is_none() {
            return;
        }
        if s.connect.is_some() && s.writable {
            self.finish_connect(slot);
        }
        let s = &self.slots[slot as usize];
        if s.send.is_some() && s.writable {
            self.try_send(slot);
        }
        let s = &self.slots[slot as usize];
        if s.recv.is_some() && s.readable {
            self.read(slot);
        } else if s.recv_into.is_some() && s.readable {
            self.read_into(slot);
        }
    }

    /// Accepts one client for the budget, or learns the listener is drained.
    fn accept_one(&mut self) {
        let n = self.listeners.len();
        let Some(i) = (0..n)
            .map(|k| (self.next_listener + k) % n)
            .find(|&i| self.listeners[i].1 && self.listeners[i].0.is_some())
        else {
            return;
        };
        self.next_listener = (i + 1) % n;
        let listener = self.listeners[i].0.as_ref().expect("an open listener");
        let outcome = loop {
            match listener.accept() {
                Ok((stream, peer)) => break self.adopt(stream).map(|slot| (slot, peer)),
                Err(e) => match classify_accept_error(&e) {
                    AcceptError::Retry => {}
                    AcceptError::Drained => {
                        self.listeners[i].1 = false;
                        return;
                    }
                    AcceptError::Fail(errno) => break Err(errno),
                },
            }
        };
        self.accept_budget -= 1;
        self.accepted_this_round += 1;
        self.push(Completion::Accepted(i as u8, outcome));
    }

    /// Some listener may have a client waiting.
    fn listener_ready(&self) -> bool {
        self.listeners.iter().any(|l| l.1 && l.0.is_some())
    }

    /// Puts an accepted socket in a free slot.
    fn adopt(&mut self, mut stream: TcpStream) -> Result<u32, i32> {
        let _ = stream.set_nodelay(true);
        let Some(slot) = self.free.pop() else {
            // Not by contract; the client is closed.
            return Err(libc::ENFILE);
        };
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, Token(slot as usize), interest)
        {
            self.free.push(slot);
            return Err(errno(&e));
        }
        let s = &mut self.slots[slot as usize];
        s.stream = Some(stream);
        s.registered = true;
        s.readable = true;
        s.writable = true;
        Ok(slot)
    }

    /// Records the readiness the last poll reported.
    fn take_events(&mut self) {
        let mut woken = false;
        for event in self.events.iter() {
            match event.token() {
                WAKE => woken = true,
                Token(t) if t <= LISTENER_BASE && LISTENER_BASE - t < self.listeners.len() => {
                    self.listeners[LISTENER_BASE - t].1 = true;
                }
                Token(i) => {
                    let Some(s) = self.slots.get_mut(i).filter(|s| s.registered) else {
                        continue;
                    };
                    let closed = event.is_read_closed() || event.is_error();
                    if event.is_readable() || closed {
                        s.readable = true;
                    }
                    s.read_closed |= closed;
                    if event.is_writable() || event.is_write_closed() || event.is_error() {
                        s.writable = true;
                    }
                    schedule(&mut self.slots, &mut self.ready, i as u32);
                }
            }
        }
        if woken && read_eventfd(self.wake) {
            self.push(Completion::Woken);
        }
    }

    /// Completions are ready without waiting (or may be: a listener or a
    /// socket not known to be drained).
    fn has_work(&self) -> bool {
        !self.completions.is_empty()
            || !self.ready.is_empty()
            || !self.again.is_empty()
            || (self.accept_budget > 0 && self.listener_ready())
    }
}

/// Puts `slot` on the ready list if it has work and is not listed yet.
fn schedule(slots: &mut [Slot], ready: &mut VecDeque<u32>, slot: u32) {
    if let Some(s) = slots.get_mut(slot as usize)
        && !s.queued
        && s.has_work()
    {
        s.queued = true;
        ready.push_back(slot);
    }
}

impl RecvBuffers for EpollDriver {
    fn buffer(&self, _buf: BufId, len: usize) -> &[u8] {
        &self.read_buf[..len.min(self.read_buf.len())]
    }
}

impl Drop for EpollDriver {
    fn drop(&mut self) {
        RECV_BUFFER_BYTES.fetch_sub(self.read_buf.len(), Ordering::Relaxed);
    }
}

impl Driver for EpollDriver {
    fn submit(&mut self, op: Op, queues: &dyn SendQueues) -> io::Result<()> {
        match op {
            Op::Accept => {
                if self.listeners.iter().any(|l| l.0.is_some()) {
                    self.accept_budget += 1;
                } else {
                    self.push(Completion::Accepted(0, Err(libc::EINVAL)));
                }
            }
            Op::WithdrawAccepts => self.withdraw_accepts(),
            Op::StopListening => {
                self.withdraw_accepts();
                for (listener, ready) in &mut self.listeners {
                    if let Some(mut l) = listener.take() {
                        let _ = self.poll.registry().deregister(&mut l);
                    }
                    *ready = false;
                }
            }
            Op::Recv { slot, generation } => self.arm_recv(slot, generation),
            Op::CancelRecv { slot, generation } => self.cancel_recv(slot, generation),
            Op::RecvInto { slot, generation } => self.arm_recv_into(slot, generation, queues),
            Op::CancelRecvInto { slot, generation } => self.cancel_recv_into(slot, generation),
            Op::Send { slot, generation } => self.send(slot, generation, queues),
            Op::CancelSend { slot, generation } => self.cancel_send(slot, generation),
            Op::CancelConnect { slot, generation } => self.cancel_connect(slot, generation),
            Op::Close { slot, generation } => self.close(slot, generation),
            Op::Socket { token, remote } => {
                let result = self.socket(remote).map_or_else(|e| -e, |slot| slot as i32);
                self.push(Completion::SocketCreated { token, result });
            }
            Op::Connect {
                slot,
                generation,
                remote,
                local,
            } => {
                if let Some(result) = self.connect(slot, generation, remote, local) {
                    self.push(Completion::Connected {
                        slot,
                        generation,
                        result,
                    });
                }
            }
        }
        Ok(())
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        self.accepted_this_round = 0;
        // Results that need no readiness (sends written at submit, closes)
        // are ready now: hand them over without a system call (an echo
        // would otherwise cost a second epoll_wait per loop turn). Every few
        // turns it polls anyway, so readiness is never starved.
        if !self.completions.is_empty() && self.polls_skipped < MAX_POLLS_SKIPPED {
            self.polls_skipped += 1;
            return Ok(());
        }
        self.polls_skipped = 0;
        // Readiness without work (a writable edge of an idle connection)
        // is no reason to return: poll again for the rest of the timeout.
        let deadline = Instant::now().checked_add(timeout);
        loop {
            let timeout = match deadline {
                _ if self.has_work() => Duration::ZERO,
                Some(deadline) => deadline.saturating_duration_since(Instant::now()),
                None => timeout,
            };
            match self.poll.poll(&mut self.events, Some(timeout)) {
                Ok(()) => self.take_events(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => break,
                Err(e) => return Err(e),
            }
            if timeout.is_zero() || self.has_work() {
                break;
            }
        }
        // Connections that may have more bytes come after those with new
        // readiness.
        self.ready.extend(self.again.drain(..));
        Ok(())
    }

    fn next_completion(&mut self) -> Option<Completion> {
        loop {
            if let Some(c) = self.completions.pop_front() {
                return Some(c);
            }
            if let Some(slot) = self.ready.pop_front() {
                self.run_slot(slot);
            } else if self.accept_budget > 0
                && self.listener_ready()
                && self.accepted_this_round < ACCEPTS_PER_ROUND
            {
                self.accept_one();
            } else {
                return None;
            }
        }
    }

    fn release(&mut self, buf: BufId) {
        debug_assert!(buf == READ_BUF && self.lent, "release of a buffer not lent");
        self.lent = false;
    }

    fn teardown(&mut self) {
        self.listeners.clear();
        for s in &mut self.slots {
            *s = Slot::default();
        }
        self.free = (0..self.slots.len() as u32).rev().collect();
        self.ready.clear();
        self.again.clear();
        self.completions.clear();
        self.accept_budget = 0;
    }

    /// Every system call is made synchronously, so nothing the kernel
    /// references outlives it: closing the sockets is all there is to do.
    fn abandon(&mut self) {
        self.teardown();
    }

    fn describe(&self) -> &'static str {
        "epoll"
    }
}

#[cfg(test)]
mod tests;
