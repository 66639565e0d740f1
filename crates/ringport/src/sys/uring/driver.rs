//! The io_uring driver: the engine's ops as submissions, completion queue
//! entries as the engine's completions.
//!
//! Techniques (kernel versions in the parent module's doc): accepts kept
//! posted straight into the ring's direct-descriptor table, each with room
//! for the peer address (multishot accept cannot return it, and
//! `getpeername` cannot reach a direct descriptor); multishot receive from
//! a provided buffer ring; `SEND` for one segment, `SENDMSG` for several;
//! outbound sockets created into the direct table, then TCP_NODELAY,
//! IP_BIND_ADDRESS_NO_PORT and bind, linked before the connect; a read of
//! the shard's eventfd kept posted for wake-ups.
//!
//! Memory the kernel reads or writes while an operation is in flight
//! lives here and stays put until that operation's completion: the accept
//! address slots, each slot's iovecs and msghdr, each pending connect's
//! addresses, the wake-up buffer and the buffer ring.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use io_uring::{IoUring, cqueue, opcode, squeue, types};

use super::bufring::BufRing;
use super::{OpKind, UserData};
use crate::config::ServerConfig;
use crate::sys::{BufId, Completion, Driver, Op, RecvBuffers, SendQueues};

/// Iovecs per send: enough to batch many queued frames in one submission.
const MAX_IOVECS: usize = 64;
const BUFFER_GROUP: u16 = 0;
/// Stands in for an address the kernel did not give (never expected).
const UNSPECIFIED: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

struct AcceptSlot {
    addr: socket2::SockAddrStorage,
    len: libc::socklen_t,
    posted: bool,
}

/// What the kernel reads while a slot's send is in flight.
struct SendMemory {
    iov: Vec<libc::iovec>,
    msg: libc::msghdr,
}

/// A connect in flight: the addresses the kernel reads, and the first error
/// of the steps before it.
struct PendingConnect {
    generation: u32,
    remote: socket2::SockAddr,
    local: Option<socket2::SockAddr>,
    step_error: Option<i32>,
}

pub(crate) struct UringDriver {
    ring: IoUring,
    describe: &'static str,
    bufs: BufRing,
    listener: Option<socket2::Socket>,
    accepts: Box<[AcceptSlot]>,
    accepts_posted: usize,
    /// Close the listener once no accept is posted.
    stop_listening: bool,
    wake_fd: RawFd,
    wake_buf: Box<u64>,
    wake_posted: bool,
    sends: Box<[SendMemory]>,
    connects: Box<[Option<Box<PendingConnect>>]>,
    /// Submissions the kernel refused with EBUSY, in order (see `push`).
    overflow: VecDeque<squeue::Entry>,
    /// The completions of the last wait, and how many were handed out.
    completions: Vec<(u64, i32, u32)>,
    next: usize,
}

impl UringDriver {
    /// A ring with a direct table of `table` entries and the configured
    /// buffer ring. `wake_fd` (the shard's eventfd) must outlive the driver.
    /// Must be called on the thread that will use it (single issuer).
    pub fn new(
        config: &ServerConfig,
        table: usize,
        listener: Option<socket2::Socket>,
        wake_fd: RawFd,
    ) -> io::Result<Self> {
        let (ring, mode) = super::new_ring(config.ring_entries)?;
        ring.submitter()
            .register_files_sparse(table as u32)
            .map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("registering a direct file table of {table} entries: {e}"),
                )
            })?;
        let bufs = BufRing::new(
            &ring,
            BUFFER_GROUP,
            config.recv_buffers,
            config.recv_buffer_size,
        )?;
        let describe = match mode {
            "single_issuer+defer_taskrun" => "io_uring (single_issuer+defer_taskrun)",
            "coop_taskrun" => "io_uring (coop_taskrun)",
            _ => "io_uring (plain)",
        };
        let mut driver = UringDriver {
            ring,
            describe,
            bufs,
            listener,
            accepts: (0..config.accepts_in_flight)
                .map(|_| AcceptSlot {
                    addr: socket2::SockAddrStorage::zeroed(),
                    len: 0,
                    posted: false,
                })
                .collect(),
            accepts_posted: 0,
            stop_listening: false,
            wake_fd,
            wake_buf: Box::new(0),
            wake_posted: false,
            sends: (0..table)
                .map(|_| SendMemory {
                    iov: Vec::new(),
                    // SAFETY: msghdr is a plain C struct for which all-zero
                    // is valid.
                    msg: unsafe { std::mem::zeroed() },
                })
                .collect(),
            connects: (0..table).map(|_| None).collect(),
            overflow: VecDeque::new(),
            completions: Vec::with_capacity(4096),
            next: 0,
        };
        driver.post_wake()?;
        Ok(driver)
    }

    /// Queues a submission. While the kernel refuses submissions
    /// (`EBUSY`: its completion queue overflowed, until this thread reaps),
    /// entries wait in `overflow`, in order, and go in at the next
    /// [`Driver::wait`]: the shard never fails or spins on a full ring.
    fn push(&mut self, entry: squeue::Entry) -> io::Result<()> {
        if !self.overflow.is_empty() {
            self.overflow.push_back(entry);
            return Ok(());
        }
        // SAFETY: every entry built in this module points only at memory
        // that stays put until the completion is reaped: `sends` iovecs and
        // msghdr and the queued bytes they cover (boxed slices allocated
        // once; the engine keeps the bytes until the send's completion),
        // accept address slots (boxed slice, not touched while `posted`),
        // connect addresses (boxed until the connect completes), the
        // wake-up buffer (boxed, freed only after teardown reaped its
        // completion) and a `static` socket-option value. Entries waiting
        // in `overflow` point at the same memory, which stays put just the
        // same until their completions.
        match unsafe { super::push(&mut self.ring, &entry) } {
            Ok(()) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                tracing::debug!("io_uring completion queue full; submissions wait for reaping");
                self.overflow.push_back(entry);
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Moves entries held back by `EBUSY` into the ring, as far as the
    /// kernel takes them.
    fn flush_overflow(&mut self) -> io::Result<()> {
        while let Some(entry) = self.overflow.pop_front() {
            // SAFETY: as in `push`: the memory these entries point at stays
            // put until their completions.
            match unsafe { super::push(&mut self.ring, &entry) } {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    self.overflow.push_front(entry);
                    return Ok(());
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn post_wake(&mut self) -> io::Result<()> {
        if self.wake_posted {
            return Ok(());
        }
        let entry = opcode::Read::new(
            types::Fd(self.wake_fd),
            (&mut *self.wake_buf as *mut u64).cast(),
            8,
        )
        .build()
        .user_data(UserData::new(OpKind::Wake, 0, 0).encode());
        self.push(entry)?;
        self.wake_posted = true;
        Ok(())
    }

    fn cancel(&mut self, target: UserData) -> io::Result<()> {
        let entry = opcode::AsyncCancel::new(target.encode())
            .build()
            .user_data(UserData::new(OpKind::Cancel, target.slot, 0).encode());
        self.push(entry)
    }

    fn post_accept(&mut self) -> io::Result<()> {
        let Some(listener) = self.listener.as_ref().map(|l| l.as_raw_fd()) else {
            return Ok(());
        };
        let Some(k) = self.accepts.iter().position(|a| !a.posted) else {
            return Err(io::Error::other(
                "more accepts asked for than accepts_in_flight",
            ));
        };
        let a = &mut self.accepts[k];
        a.posted = true;
        a.len = a.addr.size_of();
        let entry = opcode::Accept::new(
            types::Fd(listener),
            (&mut a.addr as *mut socket2::SockAddrStorage).cast(),
            &mut a.len,
        )
        .file_index(Some(types::DestinationSlot::auto_target()))
        .build()
        .user_data(UserData::new(OpKind::Accept, k as u32, 0).encode());
        self.accepts_posted += 1;
        self.push(entry)
    }

    fn send(&mut self, slot: u32, generation: u32, queues: &dyn SendQueues) -> io::Result<()> {
        let mem = &mut self.sends[slot as usize];
        queues
            .send_queue(slot)
            .fill_iovecs(&mut mem.iov, MAX_IOVECS);
        let fd = types::Fixed(slot);
        let user_data = UserData::new(OpKind::Send, slot, generation).encode();
        // One segment (the common case for small messages): a plain send,
        // which spares the kernel importing a msghdr.
        let entry = if let [one] = mem.iov[..] {
            opcode::Send::new(fd, one.iov_base as *const u8, one.iov_len as u32)
                .flags(libc::MSG_NOSIGNAL)
                .build()
        } else {
            mem.msg.msg_iov = mem.iov.as_mut_ptr();
            mem.msg.msg_iovlen = mem.iov.len();
            opcode::SendMsg::new(fd, &mem.msg)
                .flags(libc::MSG_NOSIGNAL as u32)
                .build()
        };
        self.push(entry.user_data(user_data))
    }

    fn connect(
        &mut self,
        slot: u32,
        generation: u32,
        remote: SocketAddr,
        local: Option<SocketAddr>,
    ) -> io::Result<()> {
        let pending = self.connects[slot as usize].insert(Box::new(PendingConnect {
            generation,
            remote: remote.into(),
            local: local.map(Into::into),
            step_error: None,
        }));
        let fixed = types::Fixed(slot);
        let step = UserData::new(OpKind::ConnectStep, slot, generation).encode();
        let nodelay = int_option(fixed, libc::IPPROTO_TCP, libc::TCP_NODELAY)
            .flags(squeue::Flags::SKIP_SUCCESS)
            .user_data(step);
        // With a source address: IP_BIND_ADDRESS_NO_PORT lets connect pick
        // the port per destination (and reuse loopback TIME_WAIT ports), so
        // one source is not limited to one set of ports for all
        // destinations; hard-linked so that bind runs after it even if the
        // option is refused.
        let no_port = int_option(fixed, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT)
            .flags(squeue::Flags::IO_HARDLINK | squeue::Flags::SKIP_SUCCESS)
            .user_data(step);
        // No SKIP_SUCCESS on the bind: when a request that carries it
        // fails, the kernel skips the -ECANCELED completions of the rest of
        // its link too, so the connect would never complete (measured on
        // 6.18: a bind to a foreign source address posted its error and
        // nothing more). A successful bind posts one completion, ignored.
        let bind = pending.local.as_ref().map(|local| {
            opcode::Bind::new(fixed, local.as_ptr().cast(), local.len())
                .build()
                .flags(squeue::Flags::IO_LINK)
                .user_data(step)
        });
        let connect =
            opcode::Connect::new(fixed, pending.remote.as_ptr().cast(), pending.remote.len())
                .build()
                .user_data(UserData::new(OpKind::Connect, slot, generation).encode());
        // TCP_NODELAY is best effort (URING_CMD sockets need 6.7+) and not
        // linked: its failure must not cancel the connect.
        self.push(nodelay)?;
        if let Some(bind) = bind {
            self.push(no_port)?;
            self.push(bind)?;
        }
        self.push(connect)
    }

    /// Turns one completion queue entry into the engine's completion, or
    /// `None` for entries the engine does not see (cancels, connect steps).
    fn translate(&mut self, user_data: u64, result: i32, flags: u32) -> Option<Completion> {
        let Some(ud) = UserData::decode(user_data) else {
            tracing::warn!(user_data, "completion with an unknown tag");
            return None;
        };
        let (slot, generation) = (ud.slot, ud.generation);
        match ud.kind {
            OpKind::Accept => Some(Completion::Accepted(self.on_accept(slot as usize, result))),
            OpKind::Recv => Some(Completion::Recv {
                slot,
                generation,
                result,
                buf: cqueue::buffer_select(flags),
                more: cqueue::more(flags),
            }),
            OpKind::Send => Some(Completion::Sent {
                slot,
                generation,
                result,
            }),
            OpKind::Close => Some(Completion::Closed {
                slot,
                generation,
                result,
            }),
            OpKind::Cancel => None,
            OpKind::Wake => {
                self.wake_posted = false;
                if let Err(e) = self.post_wake() {
                    tracing::error!(error = %e, "re-posting the wake-up read failed");
                }
                Some(Completion::Woken)
            }
            OpKind::Socket => Some(Completion::SocketCreated {
                token: slot,
                result,
            }),
            OpKind::ConnectStep => {
                if let Some(p) = self.connects.get_mut(slot as usize).and_then(Option::as_mut)
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
                let pending = self.connects.get_mut(slot as usize).and_then(Option::take);
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

    fn on_accept(&mut self, k: usize, result: i32) -> Result<(u32, SocketAddr), i32> {
        let a = &mut self.accepts[k];
        a.posted = false;
        self.accepts_posted -= 1;
        if self.stop_listening && self.accepts_posted == 0 {
            self.listener = None;
        }
        if result < 0 {
            return Err(-result);
        }
        let storage = std::mem::replace(&mut a.addr, socket2::SockAddrStorage::zeroed());
        // SAFETY: the accept completed, so the kernel is done with the
        // storage and filled `a.len` bytes of it (at most its size).
        let peer = unsafe { socket2::SockAddr::new(storage, a.len) }
            .as_socket()
            .unwrap_or(UNSPECIFIED);
        Ok((result as u32, peer))
    }
}

impl RecvBuffers for UringDriver {
    fn buffer(&self, buf: BufId, len: usize) -> &[u8] {
        self.bufs.get(buf, len)
    }
}

impl Driver for UringDriver {
    fn submit(&mut self, op: Op, queues: &dyn SendQueues) -> io::Result<()> {
        match op {
            Op::Accept => self.post_accept(),
            Op::WithdrawAccepts => match self.listener.as_ref().map(|l| l.as_raw_fd()) {
                Some(fd) if self.accepts_posted > 0 => {
                    let entry =
                        opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(fd)).all())
                            .build()
                            .user_data(UserData::new(OpKind::Cancel, 0, 0).encode());
                    self.push(entry)
                }
                _ => Ok(()),
            },
            Op::StopListening => {
                self.stop_listening = true;
                if self.accepts_posted == 0 {
                    self.listener = None;
                }
                Ok(())
            }
            Op::Recv { slot, generation } => {
                let entry = opcode::RecvMulti::new(types::Fixed(slot), BUFFER_GROUP)
                    .build()
                    .user_data(UserData::new(OpKind::Recv, slot, generation).encode());
                self.push(entry)
            }
            Op::CancelRecv { slot, generation } => {
                self.cancel(UserData::new(OpKind::Recv, slot, generation))
            }
            Op::Send { slot, generation } => self.send(slot, generation, queues),
            Op::CancelSend { slot, generation } => {
                self.cancel(UserData::new(OpKind::Send, slot, generation))
            }
            Op::CancelConnect { slot, generation } => {
                self.cancel(UserData::new(OpKind::Connect, slot, generation))
            }
            Op::Close { slot, generation } => {
                let entry = opcode::Close::new(types::Fixed(slot))
                    .build()
                    .user_data(UserData::new(OpKind::Close, slot, generation).encode());
                self.push(entry)
            }
            Op::Socket { token, remote } => {
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
                self.push(entry)
            }
            Op::Connect {
                slot,
                generation,
                remote,
                local,
            } => self.connect(slot, generation, remote, local),
        }
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        self.flush_overflow()?;
        let busy = !self.ring.completion().is_empty() || !self.overflow.is_empty();
        let outcome = if busy || timeout.is_zero() {
            self.ring.submit()
        } else {
            let ts = types::Timespec::from(timeout);
            let args = types::SubmitArgs::new().timespec(&ts);
            self.ring.submitter().submit_with_args(1, &args)
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
        self.completions.clear();
        self.next = 0;
        self.completions.extend(
            self.ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags())),
        );
        Ok(())
    }

    fn next_completion(&mut self) -> Option<Completion> {
        while let Some(&(user_data, result, flags)) = self.completions.get(self.next) {
            self.next += 1;
            if let Some(c) = self.translate(user_data, result, flags) {
                return Some(c);
            }
        }
        None
    }

    fn release(&mut self, buf: BufId) {
        self.bufs.recycle(buf);
    }

    fn end_batch(&mut self) {
        self.bufs.publish();
    }

    /// The wake-up read is cancelled and reaped, then the buffer ring is
    /// unregistered, so no memory the kernel references is freed.
    fn teardown(&mut self) {
        let _ = self.cancel(UserData::new(OpKind::Wake, 0, 0));
        let deadline = Instant::now() + Duration::from_secs(2);
        while self.wake_posted && Instant::now() < deadline {
            if self.ring.submit_and_wait(1).is_err() {
                break;
            }
            for cqe in self.ring.completion() {
                if UserData::decode(cqe.user_data()).map(|u| u.kind) == Some(OpKind::Wake) {
                    self.wake_posted = false;
                }
            }
        }
        let _ = self.ring.submitter().unregister_buf_ring(self.bufs.group());
        self.listener = None;
    }

    fn describe(&self) -> &'static str {
        self.describe
    }
}

/// Sets a boolean socket option to 1 on a direct descriptor (a setsockopt
/// cannot reach it; IORING_OP_URING_CMD can, Linux 6.7+).
fn int_option(fd: types::Fixed, level: libc::c_int, name: libc::c_int) -> squeue::Entry {
    static ONE: libc::c_int = 1;
    opcode::SetSockOpt::new(
        fd,
        level as u32,
        name as u32,
        (&ONE as *const libc::c_int).cast(),
        std::mem::size_of::<libc::c_int>() as u32,
    )
    .build()
}
