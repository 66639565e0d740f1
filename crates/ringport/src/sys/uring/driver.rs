//! The io_uring driver: the engine's ops as submissions, completion queue
//! entries as the engine's completions.
//!
//! Techniques (kernel versions in the parent module's doc): accepts kept
//! posted straight into a ring's direct-descriptor table, each with room
//! for the peer address (multishot accept cannot return it, and
//! `getpeername` cannot reach a direct descriptor); multishot receive from
//! a provided buffer ring; `SEND` for one segment, `SENDMSG` for several;
//! outbound sockets created into the direct table, then TCP_NODELAY,
//! IP_BIND_ADDRESS_NO_PORT and bind, linked before the connect; a read of
//! the shard's eventfd kept posted for wake-ups.
//!
//! A shard's table may span several rings ([`super::unit`]): slot `s` is
//! entry `s % per_ring` of ring `s / per_ring`. Rings are created as the
//! ones before them fill up, so a shard that holds few connections has one.
//!
//! Memory the kernel reads or writes while an operation is in flight
//! lives here and stays put until that operation's completion: the accept
//! address slots, the iovecs and msghdr of a multi-segment send (boxed,
//! kept by slot while the send is in flight), each pending connect's
//! addresses, the wake-up buffers and the buffer rings.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types};

use self::connect::PendingConnect;
use super::unit::{BUFFER_GROUP, Unit};
use super::{OpKind, UserData};
use crate::config::ServerConfig;
use crate::sys::{BufId, Completion, Driver, Op, RecvBuffers, SendQueues};

mod connect;

/// Iovecs per send: enough to batch many queued frames in one submission.
const MAX_IOVECS: usize = 64;
/// Send memory kept for reuse at most (more is freed as sends complete).
const SPARE_SEND_MEMORY: usize = 1024;
/// Stands in for an address the kernel did not give (never expected).
const UNSPECIFIED: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

struct AcceptSlot {
    addr: socket2::SockAddrStorage,
    len: libc::socklen_t,
    posted: bool,
    /// The ring it is posted on.
    unit: u16,
    /// The listener it is posted on.
    listener: u8,
}

/// What the kernel reads while a multi-segment send is in flight.
struct SendMemory {
    iov: Vec<libc::iovec>,
    msg: libc::msghdr,
}

/// A read kept posted on an eventfd: the shard's wake-up, or the signal of
/// its other rings.
struct EventRead {
    fd: RawFd,
    buf: Box<u64>,
    posted: bool,
}

pub(crate) struct UringDriver {
    /// The shard's rings; the thread waits on the first.
    units: Vec<Unit>,
    /// Slots per ring (the last may have fewer).
    per_ring: u32,
    /// Slots of the shard's table.
    table: u32,
    describe: &'static str,
    config: ServerConfig,
    /// The shard's listeners (closed: `None`), with their accepts posted.
    listeners: Vec<(Option<socket2::Socket>, usize)>,
    /// Where the search for the listener of the next accept starts.
    next_listener: usize,
    accepts: Box<[AcceptSlot]>,
    accepts_posted: usize,
    /// Close the listener once no accept is posted.
    stop_listening: bool,
    wake: EventRead,
    /// Signalled by the rings after the first; `None` with one ring only.
    ring_event: Option<(OwnedFd, EventRead)>,
    /// The rings after the first signal `ring_event` (only while the
    /// thread sleeps: see [`UringDriver::wait`]).
    wakes_armed: bool,
    /// Send memory of the multi-segment sends in flight, by slot, and
    /// spare memory for the next ones.
    sends: HashMap<u32, Box<SendMemory>>,
    // Boxed so the msghdr the kernel reads never moves between the two.
    #[allow(clippy::vec_box)]
    spare_sends: Vec<Box<SendMemory>>,
    connects: HashMap<u32, Box<PendingConnect>>,
    /// The ring each requested outbound socket goes into, by token.
    socket_units: HashMap<u32, u16>,
    /// Completions made up here for ops that could not be posted (no ring
    /// could be created): reported like the kernel's.
    made_up: Vec<Completion>,
    /// The completions of the last wait (ring, user_data, result, flags),
    /// and how many were handed out.
    completions: Vec<(u16, u64, i32, u32)>,
    next: usize,
}

impl UringDriver {
    /// A driver for a table of `table` slots spread over rings of at most
    /// `per_ring` direct descriptors each, with the configured buffer
    /// rings. `wake_fd` (the shard's eventfd) must outlive the driver. Must
    /// be called on the thread that will use it (single issuer).
    pub fn new(
        config: &ServerConfig,
        table: usize,
        per_ring: usize,
        listeners: Vec<socket2::Socket>,
        wake_fd: RawFd,
    ) -> io::Result<Self> {
        let table = u32::try_from(table.max(1)).unwrap_or(u32::MAX);
        let per_ring = u32::try_from(per_ring.max(1))
            .unwrap_or(u32::MAX)
            .min(table);
        let ring_event = if table > per_ring {
            let fd = crate::sys::eventfd::eventfd()?;
            let raw = fd.as_raw_fd();
            Some((
                fd,
                EventRead {
                    fd: raw,
                    buf: Box::new(0),
                    posted: false,
                },
            ))
        } else {
            None
        };
        let first = Unit::new(config, per_ring, true, None)?;
        let describe = match first.mode {
            "single_issuer+defer_taskrun" => "io_uring (single_issuer+defer_taskrun)",
            "coop_taskrun" => "io_uring (coop_taskrun)",
            _ => "io_uring (plain)",
        };
        let mut driver = UringDriver {
            units: vec![first],
            per_ring,
            table,
            describe,
            config: config.clone(),
            listeners: listeners.into_iter().map(|l| (Some(l), 0)).collect(),
            next_listener: 0,
            accepts: (0..config.accepts_in_flight)
                .map(|_| AcceptSlot {
                    addr: socket2::SockAddrStorage::zeroed(),
                    len: 0,
                    posted: false,
                    unit: 0,
                    listener: 0,
                })
                .collect(),
            accepts_posted: 0,
            stop_listening: false,
            wake: EventRead {
                fd: wake_fd,
                buf: Box::new(0),
                posted: false,
            },
            ring_event,
            wakes_armed: false,
            sends: HashMap::new(),
            spare_sends: Vec::new(),
            connects: HashMap::new(),
            socket_units: HashMap::new(),
            made_up: Vec::new(),
            completions: Vec::with_capacity(4096),
            next: 0,
        };
        driver.post_event_read(OpKind::Wake)?;
        if driver.ring_event.is_some() {
            driver.post_event_read(OpKind::RingEvent)?;
        }
        Ok(driver)
    }

    fn unit_of(&self, slot: u32) -> usize {
        (slot / self.per_ring) as usize
    }

    fn fixed(&self, slot: u32) -> types::Fixed {
        types::Fixed(slot % self.per_ring)
    }

    /// Queues a submission on ring `unit`.
    fn push(&mut self, unit: usize, entry: squeue::Entry) -> io::Result<()> {
        // SAFETY: every entry built in this module points only at memory
        // that stays put until its completion is reaped: send iovecs and
        // msghdr (boxed, held in `sends` until the send's completion) and
        // the queued bytes they cover (the engine keeps them until then),
        // the target of a direct receive (engine memory, left alone until
        // its completion: the contract in `sys`),
        // accept address slots (boxed slice, not touched while `posted`),
        // connect addresses (boxed until the connect completes), the
        // eventfd read buffers (boxed, freed only after teardown reaped
        // their completions) and a `static` socket-option value. Entries
        // held back in a ring's overflow point at the same memory.
        unsafe { self.units[unit].push(entry) }
    }

    /// A ring with a free table entry, created if every existing one is
    /// full. `None` (logged) when no ring can be created; the engine never
    /// asks for more entries than the shard's table, so full rings alone
    /// never cause it.
    fn unit_with_room(&mut self) -> Option<usize> {
        if let Some(u) = self.units.iter().position(Unit::has_room) {
            return Some(u);
        }
        let index = self.units.len() as u32;
        let start = index.checked_mul(self.per_ring)?;
        if start >= self.table {
            tracing::error!("every ring of the shard is full; the engine asked for too much");
            return None;
        }
        let size = (self.table - start).min(self.per_ring);
        let event = self.ring_event.as_ref().map(|(fd, _)| fd.as_raw_fd());
        match Unit::new(&self.config, size, false, event) {
            Ok(unit) => {
                tracing::debug!(ring = index, table = size, "shard ring added");
                self.units.push(unit);
                Some(index as usize)
            }
            Err(e) => {
                tracing::error!(error = %e, ring = index, "adding a ring to the shard failed");
                None
            }
        }
    }

    /// Posts the read of the wake-up eventfd (`Wake`) or of the rings'
    /// eventfd (`RingEvent`) on the first ring, unless it is posted.
    fn post_event_read(&mut self, kind: OpKind) -> io::Result<()> {
        let read = match kind {
            OpKind::Wake => &mut self.wake,
            _ => match self.ring_event.as_mut() {
                Some((_, read)) => read,
                None => return Ok(()),
            },
        };
        if read.posted {
            return Ok(());
        }
        read.posted = true;
        let entry = opcode::Read::new(types::Fd(read.fd), (&mut *read.buf as *mut u64).cast(), 8)
            .build()
            .user_data(UserData::new(kind, 0, 0).encode());
        self.push(0, entry)
    }

    /// Cancels the op `target` on ring `unit`.
    fn cancel(&mut self, unit: usize, target: UserData) -> io::Result<()> {
        let entry = opcode::AsyncCancel::new(target.encode())
            .build()
            .user_data(UserData::new(OpKind::Cancel, target.slot, 0).encode());
        self.push(unit, entry)
    }

    /// The open listener with the fewest accepts posted (ties: the next
    /// one after the last chosen), so that every listener keeps accepts
    /// posted and none is starved at the connection limit.
    fn pick_listener(&mut self) -> Option<(usize, RawFd)> {
        let n = self.listeners.len();
        let best = (0..n)
            .map(|i| (self.next_listener + i) % n)
            .filter_map(|i| self.listeners[i].0.as_ref().map(|l| (i, l.as_raw_fd())))
            .min_by_key(|&(i, _)| self.listeners[i].1)?;
        self.next_listener = (best.0 + 1) % n;
        Some(best)
    }

    /// Closes the listeners (stopping) once no accept is posted.
    fn close_listeners_if_idle(&mut self) {
        if self.stop_listening && self.accepts_posted == 0 {
            for l in &mut self.listeners {
                l.0 = None;
            }
        }
    }

    fn post_accept(&mut self) -> io::Result<()> {
        let Some((li, listener)) = self.pick_listener() else {
            return Ok(());
        };
        let Some(k) = self.accepts.iter().position(|a| !a.posted) else {
            return Err(io::Error::other(
                "more accepts asked for than accepts_in_flight",
            ));
        };
        self.accepts_posted += 1;
        let Some(unit) = self.unit_with_room() else {
            self.accepts_posted -= 1;
            self.made_up
                .push(Completion::Accepted(li as u8, Err(libc::ENFILE)));
            return Ok(());
        };
        self.units[unit].reserved += 1;
        self.units[unit].accepts_posted += 1;
        self.listeners[li].1 += 1;
        let a = &mut self.accepts[k];
        a.posted = true;
        a.unit = unit as u16;
        a.listener = li as u8;
        a.len = a.addr.size_of();
        let entry = opcode::Accept::new(
            types::Fd(listener),
            (&mut a.addr as *mut socket2::SockAddrStorage).cast(),
            &mut a.len,
        )
        .file_index(Some(types::DestinationSlot::auto_target()))
        .build()
        .user_data(UserData::new(OpKind::Accept, k as u32, 0).encode());
        self.push(unit, entry)
    }

    fn send(&mut self, slot: u32, generation: u32, queues: &dyn SendQueues) -> io::Result<()> {
        let mut mem = self.spare_sends.pop().unwrap_or_else(|| {
            Box::new(SendMemory {
                iov: Vec::new(),
                // SAFETY: msghdr is a plain C struct for which all-zero is
                // valid.
                msg: unsafe { std::mem::zeroed() },
            })
        });
        queues
            .send_queue(slot)
            .fill_iovecs(&mut mem.iov, MAX_IOVECS);
        let fd = self.fixed(slot);
        let user_data = UserData::new(OpKind::Send, slot, generation).encode();
        // One segment (the common case for small messages): a plain send,
        // which spares the kernel importing a msghdr, and the memory goes
        // back to the spares at once (the kernel reads the queue's bytes,
        // not the iovec).
        let entry = if let [one] = mem.iov[..] {
            self.spare_sends.push(mem);
            opcode::Send::new(fd, one.iov_base as *const u8, one.iov_len as u32)
                .flags(libc::MSG_NOSIGNAL)
                .build()
        } else {
            mem.msg.msg_iov = mem.iov.as_mut_ptr();
            mem.msg.msg_iovlen = mem.iov.len();
            let entry = opcode::SendMsg::new(fd, &mem.msg)
                .flags(libc::MSG_NOSIGNAL as u32)
                .build();
            // The box keeps the msghdr and iovecs in place until the send
            // completes (one send per slot is in flight at a time).
            if let Some(old) = self.sends.insert(slot, mem) {
                tracing::error!(slot, "a second send in flight on one slot");
                self.sends.insert(slot, old);
                return Err(io::Error::other("a second send in flight on one slot"));
            }
            entry
        };
        self.push(self.unit_of(slot), entry.user_data(user_data))
    }

    /// A plain receive (no buffer select) into the engine's target for
    /// `slot` (`IORING_OP_RECV`, Linux 5.6+).
    fn recv_into(&mut self, slot: u32, generation: u32, queues: &dyn SendQueues) -> io::Result<()> {
        let Some(target) = queues.recv_target(slot) else {
            self.made_up.push(Completion::RecvInto {
                slot,
                generation,
                result: -libc::EINVAL,
            });
            return Ok(());
        };
        let len = target.len.min(i32::MAX as usize) as u32;
        let entry = opcode::Recv::new(self.fixed(slot), target.ptr, len)
            .build()
            .user_data(UserData::new(OpKind::RecvInto, slot, generation).encode());
        self.push(self.unit_of(slot), entry)
    }

    /// A multi-segment send of `slot` completed: its memory is free.
    fn send_done(&mut self, slot: u32) {
        // Most sends are single-segment and never enter the map: skip the
        // hash then.
        if self.sends.is_empty() {
            return;
        }
        if let Some(mut mem) = self.sends.remove(&slot)
            && self.spare_sends.len() < SPARE_SEND_MEMORY
        {
            if mem.iov.capacity() > MAX_IOVECS {
                mem.iov = Vec::new();
            }
            self.spare_sends.push(mem);
        }
    }

    /// Turns one completion queue entry of ring `unit` into the engine's
    /// completion, or `None` for entries the engine does not see (cancels,
    /// connect steps, the rings' event).
    fn translate(
        &mut self,
        unit: usize,
        user_data: u64,
        result: i32,
        flags: u32,
    ) -> Option<Completion> {
        let Some(ud) = UserData::decode(user_data) else {
            tracing::warn!(user_data, "completion with an unknown tag");
            return None;
        };
        let (slot, generation) = (ud.slot, ud.generation);
        match ud.kind {
            OpKind::Accept => {
                let (listener, result) = self.on_accept(slot as usize, result);
                Some(Completion::Accepted(listener, result))
            }
            OpKind::Recv => {
                let bufs = &mut self.units[unit].bufs;
                let buf = cqueue::buffer_select(flags).map(|bid| {
                    bufs.taken(bid);
                    (unit as BufId) << 16 | BufId::from(bid)
                });
                if result == -libc::ENOBUFS {
                    bufs.ran_dry();
                }
                Some(Completion::Recv {
                    slot,
                    generation,
                    result,
                    buf,
                    more: cqueue::more(flags),
                })
            }
            OpKind::RecvInto => Some(Completion::RecvInto {
                slot,
                generation,
                result,
            }),
            OpKind::Send => {
                self.send_done(slot);
                Some(Completion::Sent {
                    slot,
                    generation,
                    result,
                })
            }
            OpKind::Close => {
                let unit = self.unit_of(slot);
                let u = &mut self.units[unit];
                u.reserved = u.reserved.saturating_sub(1);
                Some(Completion::Closed {
                    slot,
                    generation,
                    result,
                })
            }
            OpKind::Cancel => None,
            OpKind::Wake | OpKind::RingEvent => {
                match ud.kind {
                    OpKind::Wake => self.wake.posted = false,
                    _ => {
                        if let Some((_, read)) = self.ring_event.as_mut() {
                            read.posted = false;
                        }
                    }
                }
                if let Err(e) = self.post_event_read(ud.kind) {
                    tracing::error!(error = %e, "re-posting an eventfd read failed");
                }
                (ud.kind == OpKind::Wake).then_some(Completion::Woken)
            }
            OpKind::Socket => {
                let base = unit as u32 * self.per_ring;
                self.socket_units.remove(&slot);
                let result = if result >= 0 {
                    (base + result as u32) as i32
                } else {
                    let u = &mut self.units[unit];
                    u.reserved = u.reserved.saturating_sub(1);
                    result
                };
                Some(Completion::SocketCreated {
                    token: slot,
                    result,
                })
            }
            OpKind::ConnectStep => {
                if let Some(p) = self.connects.get_mut(&slot)
                    && p.generation == generation
                    && result < 0
                    && p.step_error.is_none()
                    // Errors of the unlinked TCP_NODELAY step are not fatal.
                    && !matches!(-result, libc::ECANCELED | libc::EOPNOTSUPP | libc::EINVAL)
                {
                    p.step_error = Some(-result);
                }
                None
            }
            OpKind::Connect => {
                let pending = self.connects.remove(&slot);
                let step_error = pending
                    .filter(|p| p.generation == generation)
                    .and_then(|p| p.step_error);
                let result = match step_error {
                    Some(errno) => -errno,
                    None => result,
                };
                Some(Completion::Connected {
                    slot,
                    generation,
                    result,
                })
            }
        }
    }

    fn on_accept(&mut self, k: usize, result: i32) -> (u8, Result<(u32, SocketAddr), i32>) {
        let a = &mut self.accepts[k];
        a.posted = false;
        let unit = a.unit as usize;
        let li = a.listener;
        if let Some(l) = self.listeners.get_mut(li as usize) {
            l.1 = l.1.saturating_sub(1);
        }
        self.accepts_posted -= 1;
        let u = &mut self.units[unit];
        u.accepts_posted = u.accepts_posted.saturating_sub(1);
        if result < 0 {
            u.reserved = u.reserved.saturating_sub(1);
        }
        if result < 0 {
            self.close_listeners_if_idle();
            return (li, Err(-result));
        }
        let a = &mut self.accepts[k];
        let storage = std::mem::replace(&mut a.addr, socket2::SockAddrStorage::zeroed());
        // SAFETY: the accept completed, so the kernel is done with the
        // storage and filled `a.len` bytes of it (at most its size).
        let peer = unsafe { socket2::SockAddr::new(storage, a.len) }
            .as_socket()
            .unwrap_or(UNSPECIFIED);
        self.close_listeners_if_idle();
        (li, Ok((unit as u32 * self.per_ring + result as u32, peer)))
    }

    /// Enters each ring after the first that has submissions queued or
    /// deferred completions flagged (without waiting), and collects the
    /// ready completions of all of them.
    fn enter_other_rings(&mut self) -> io::Result<()> {
        for unit in 1..self.units.len() {
            if self.units[unit].needs_enter() {
                self.units[unit].submit_now()?;
            }
            self.reap(unit);
        }
        Ok(())
    }

    /// Collects the ready completions of ring `unit`.
    fn reap(&mut self, unit: usize) {
        let index = unit as u16;
        self.completions.extend(
            self.units[unit]
                .ring
                .completion()
                .map(|c| (index, c.user_data(), c.result(), c.flags())),
        );
    }
}

impl RecvBuffers for UringDriver {
    fn buffer(&self, buf: BufId, len: usize) -> &[u8] {
        self.units[(buf >> 16) as usize].bufs.get(buf as u16, len)
    }
}

impl Driver for UringDriver {
    fn submit(&mut self, op: Op, queues: &dyn SendQueues) -> io::Result<()> {
        match op {
            Op::Accept => self.post_accept(),
            Op::WithdrawAccepts => {
                let fds: Vec<RawFd> = self
                    .listeners
                    .iter()
                    .filter(|l| l.1 > 0)
                    .filter_map(|l| l.0.as_ref().map(|l| l.as_raw_fd()))
                    .collect();
                for fd in fds {
                    for unit in 0..self.units.len() {
                        if self.units[unit].accepts_posted > 0 {
                            let entry = opcode::AsyncCancel2::new(
                                types::CancelBuilder::fd(types::Fd(fd)).all(),
                            )
                            .build()
                            .user_data(UserData::new(OpKind::Cancel, 0, 0).encode());
                            self.push(unit, entry)?;
                        }
                    }
                }
                Ok(())
            }
            Op::StopListening => {
                self.stop_listening = true;
                self.close_listeners_if_idle();
                Ok(())
            }
            Op::Recv { slot, generation } => {
                let entry = opcode::RecvMulti::new(self.fixed(slot), BUFFER_GROUP)
                    .build()
                    .user_data(UserData::new(OpKind::Recv, slot, generation).encode());
                self.push(self.unit_of(slot), entry)
            }
            Op::CancelRecv { slot, generation } => self.cancel(
                self.unit_of(slot),
                UserData::new(OpKind::Recv, slot, generation),
            ),
            Op::RecvInto { slot, generation } => self.recv_into(slot, generation, queues),
            Op::CancelRecvInto { slot, generation } => self.cancel(
                self.unit_of(slot),
                UserData::new(OpKind::RecvInto, slot, generation),
            ),
            Op::Send { slot, generation } => self.send(slot, generation, queues),
            Op::CancelSend { slot, generation } => self.cancel(
                self.unit_of(slot),
                UserData::new(OpKind::Send, slot, generation),
            ),
            Op::CancelConnect { slot, generation } => self.cancel(
                self.unit_of(slot),
                UserData::new(OpKind::Connect, slot, generation),
            ),
            Op::Close { slot, generation } => {
                let entry = opcode::Close::new(self.fixed(slot))
                    .build()
                    .user_data(UserData::new(OpKind::Close, slot, generation).encode());
                self.push(self.unit_of(slot), entry)
            }
            Op::Socket { token, remote } => {
                let Some(unit) = self.unit_with_room() else {
                    self.made_up.push(Completion::SocketCreated {
                        token,
                        result: -libc::ENFILE,
                    });
                    return Ok(());
                };
                self.units[unit].reserved += 1;
                self.socket_units.insert(token, unit as u16);
                let domain = if remote.is_ipv4() {
                    libc::AF_INET
                } else {
                    libc::AF_INET6
                };
                // No SOCK_CLOEXEC: a direct descriptor has no fd to
                // inherit, and the kernel rejects the flag for it.
                let entry = opcode::Socket::new(domain, libc::SOCK_STREAM, 0)
                    .file_index(Some(types::DestinationSlot::auto_target()))
                    .build()
                    .user_data(UserData::new(OpKind::Socket, token, 0).encode());
                self.push(unit, entry)
            }
            Op::Connect {
                slot,
                generation,
                remote,
                local,
            } => self.connect(slot, generation, remote, local),
        }
    }

    /// The rings after the first are entered only when they have work: the
    /// kernel flags deferred completions (`IORING_SQ_TASKRUN`) in a flag
    /// the thread reads without a system call, and queued submissions are
    /// known here. Their eventfd, which wakes the thread through the read
    /// posted on the first ring, is armed only while the thread sleeps:
    /// awake, it reads the flags every turn anyway, and an armed eventfd
    /// would be signalled by every completion the thread itself makes the
    /// kernel post, each signal an extra completion and loop turn.
    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        self.completions.clear();
        self.next = 0;
        let mut overflow = false;
        for unit in &mut self.units {
            unit.flush_overflow()?;
            overflow |= unit.has_overflow();
        }
        self.enter_other_rings()?;
        let mut busy = !self.completions.is_empty()
            || !self.made_up.is_empty()
            || !self.units[0].ring.completion().is_empty()
            || overflow;
        if !busy && !timeout.is_zero() && self.units.len() > 1 {
            for unit in &mut self.units[1..] {
                unit.signal_work(true);
            }
            self.wakes_armed = true;
            // Work that came before the eventfd was armed signalled
            // nothing: look once more. (The kernel sets the flag before it
            // reads whether to signal; this fence orders the arming before
            // the look, so one side sees the other.)
            std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
            busy = self.units[1..].iter_mut().any(Unit::has_work);
        }
        let first = &mut self.units[0];
        let outcome = if busy || timeout.is_zero() {
            // Not waiting: a system call only if this ring has something
            // to hand over or run (an enter with neither returns at once).
            if first.needs_enter() {
                first.ring.submit()
            } else {
                Ok(0)
            }
        } else {
            let ts = types::Timespec::from(timeout);
            let args = types::SubmitArgs::new().timespec(&ts);
            first.ring.submitter().submit_with_args(1, &args)
        };
        match outcome {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EINTR | libc::EBUSY | libc::EAGAIN | libc::ETIME)
                ) => {}
            Err(e) => return Err(e),
        }
        if std::mem::take(&mut self.wakes_armed) {
            for unit in &mut self.units[1..] {
                unit.signal_work(false);
            }
            // What woke the thread, if another ring: handled in this turn.
            self.enter_other_rings()?;
        }
        self.reap(0);
        Ok(())
    }

    fn next_completion(&mut self) -> Option<Completion> {
        if let Some(c) = self.made_up.pop() {
            return Some(c);
        }
        while let Some(&(unit, user_data, result, flags)) = self.completions.get(self.next) {
            self.next += 1;
            if let Some(c) = self.translate(unit as usize, user_data, result, flags) {
                return Some(c);
            }
        }
        None
    }

    fn release(&mut self, buf: BufId) {
        self.units[(buf >> 16) as usize].bufs.recycle(buf as u16);
    }

    fn end_batch(&mut self) {
        for unit in &mut self.units {
            unit.bufs.publish();
        }
    }

    fn trim(&mut self) {
        let released: usize = self
            .units
            .iter_mut()
            .map(|u| {
                // Completions not reaped yet (a full completion queue keeps
                // the rest in the kernel's overflow list) mean buffers the
                // kernel filled that the buffer ring does not know are
                // taken: its in-ring part must wait for the next trim.
                let settled = u.ring.completion().is_empty() && !u.ring.submission().cq_overflow();
                u.bufs.trim(settled)
            })
            .sum();
        if released > 0 {
            tracing::debug!(
                buffers = released,
                bytes = released * self.config.recv_buffer_size,
                "idle receive buffers given back"
            );
        }
        if self.spare_sends.len() > MAX_IOVECS {
            self.spare_sends.truncate(self.spare_sends.len() / 2);
        }
    }

    /// The eventfd reads are cancelled and reaped, then the buffer rings
    /// are unregistered, so no memory the kernel references is freed.
    fn teardown(&mut self) {
        let _ = self.cancel(0, UserData::new(OpKind::Wake, 0, 0));
        let _ = self.cancel(0, UserData::new(OpKind::RingEvent, 0, 0));
        let deadline = Instant::now() + Duration::from_secs(2);
        let event_posted = |d: &Self| d.ring_event.as_ref().is_some_and(|(_, r)| r.posted);
        while (self.wake.posted || event_posted(self)) && Instant::now() < deadline {
            if self.units[0].ring.submit_and_wait(1).is_err() {
                break;
            }
            for cqe in self.units[0].ring.completion() {
                match UserData::decode(cqe.user_data()).map(|u| u.kind) {
                    Some(OpKind::Wake) => self.wake.posted = false,
                    Some(OpKind::RingEvent) => {
                        if let Some((_, read)) = self.ring_event.as_mut() {
                            read.posted = false;
                        }
                    }
                    _ => {}
                }
            }
        }
        for unit in &mut self.units {
            let _ = unit.ring.submitter().unregister_buf_ring(unit.bufs.group());
        }
        self.listeners.clear();
    }

    /// Every operation in flight is cancelled (and its completion reaped,
    /// which also runs the kernel's deferred work), then the direct
    /// descriptors are unregistered: the kernel closes each socket as its
    /// last reference goes. The memory the cancelled operations pointed at
    /// stays valid: the caller leaks the driver and the engine afterwards.
    /// Bounded: at most about a second per ring.
    fn abandon(&mut self) {
        /// The user_data of the cancel (no op uses it).
        const CANCEL_ALL: u64 = u64::MAX;
        for unit in &mut self.units {
            let deadline = Instant::now() + Duration::from_secs(1);
            // Room for the cancelled ops' completions.
            unit.ring.completion().for_each(drop);
            let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::any().all())
                .build()
                .user_data(CANCEL_ALL);
            // SAFETY: a cancel points at no memory.
            if unsafe { super::push(&mut unit.ring, &cancel) }.is_err() {
                tracing::error!("abandoning a failed shard: the cancel could not be queued");
            }
            let ts = types::Timespec::new().nsec(20_000_000);
            let args = types::SubmitArgs::new().timespec(&ts);
            let mut cancelled = false;
            while Instant::now() < deadline {
                match unit.ring.submitter().submit_with_args(1, &args) {
                    // Nothing more came within the wait: all reaped.
                    Err(e) if e.raw_os_error() == Some(libc::ETIME) && cancelled => break,
                    Ok(_) | Err(_) => {}
                }
                for cqe in unit.ring.completion() {
                    cancelled |= cqe.user_data() == CANCEL_ALL;
                }
            }
            if let Err(e) = unit.ring.submitter().unregister_files() {
                tracing::error!(error = %e, "abandoning a failed shard: unregistering its sockets failed");
            }
        }
        self.listeners.clear();
    }

    fn describe(&self) -> &'static str {
        self.describe
    }
}
