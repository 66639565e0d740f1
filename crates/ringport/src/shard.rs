//! A shard: one thread, one io_uring, and the connections it owns.
//!
//! The shard is the only thread that touches its ring, its connection table,
//! its receive buffers and its send pool; other threads reach it through a
//! bounded command queue plus an eventfd wake-up. Each loop turn it drains
//! commands, queues sends for every connection that has data (one vectored
//! send in flight per connection), re-arms receives and accepts, then makes
//! one `io_uring_enter` that both submits everything and waits for
//! completions, which it then handles in arrival order.
//!
//! Connection life cycle (slot = direct descriptor index):
//! `Free` --accept--> `Open` --close/EOF/error--> `Closing` (recv cancelled,
//! queue flushed or discarded) --no op in flight--> `Releasing` (close of
//! the direct descriptor submitted) --close completion--> `Free` (the
//! kernel may now hand the slot to a new connection; its generation moves
//! on so stale ids are rejected).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use io_uring::{IoUring, cqueue, opcode, types};

use crate::codec::{Codec, CodecError, Framer, MAX_HEADER_LEN};
use crate::conn_id::{ConnId, LiveTable, next_generation};
use crate::send_queue::{ChunkPool, SendQueue};
use crate::server::{
    CloseReason, Context, Handler, SendError, ServerConfig, ServerShared, SlowConsumerPolicy,
};
use crate::stats::{ShardCounters, Stats};
use crate::sys::eventfd;
use crate::sys::uring::{self, BufRing, MAX_SLOTS, OpKind, UserData};
use crate::timer::{TimerId, Timers};

/// Iovecs per send: enough to batch many queued frames in one submission.
const MAX_IOVECS: usize = 64;
/// Commands handled per loop turn, so a flood of commands cannot starve
/// completions.
const COMMANDS_PER_TURN: usize = 4096;
const ACCEPT_BACKOFF: Duration = Duration::from_millis(200);
const BUFFER_GROUP: u16 = 0;
/// Stands in for an address the kernel did not give (never expected).
const UNSPECIFIED: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);
/// A drained backlog keeps at most this much capacity.
const RETAIN_BACKLOG: usize = 64 * 1024;

/// A request from another thread.
pub(crate) enum Command {
    Send {
        conn: ConnId,
        payload: Bytes,
    },
    Broadcast {
        payload: Bytes,
    },
    Close {
        conn: ConnId,
    },
    Connect {
        remote: SocketAddr,
        local: Option<SocketAddr>,
    },
    /// Code to run on the shard (e.g. the result of work done elsewhere).
    Run(Box<dyn FnOnce(&mut Context<'_>) + Send>),
}

/// The part of a shard that other threads see.
pub(crate) struct ShardShared {
    pub commands_tx: Sender<Command>,
    commands_rx: Receiver<Command>,
    eventfd: OwnedFd,
    /// Set by the first waker, cleared by the shard before it drains the
    /// queue: one eventfd write per wake-up, not one per command.
    notified: AtomicBool,
    pub live: LiveTable,
    pub counters: ShardCounters,
}

impl ShardShared {
    pub fn new(table: usize, commands: usize) -> io::Result<Self> {
        let (commands_tx, commands_rx) = crossbeam_channel::bounded(commands);
        Ok(ShardShared {
            commands_tx,
            commands_rx,
            eventfd: eventfd::eventfd()?,
            notified: AtomicBool::new(false),
            live: LiveTable::new(table),
            counters: ShardCounters::default(),
        })
    }

    pub fn wake(&self) {
        if !self.notified.swap(true, Ordering::AcqRel) {
            // A failure (counter overflow) still leaves the eventfd readable.
            let _ = eventfd::eventfd_add(self.eventfd.as_fd(), 1);
        }
    }
}

/// The shard operations handler callbacks reach through [`Context`].
pub(crate) trait Outbound {
    fn send(&mut self, conn: ConnId, payload: &[u8]) -> Result<(), SendError>;
    fn send_bytes(&mut self, conn: ConnId, payload: Bytes) -> Result<(), SendError>;
    fn broadcast(&mut self, payload: &[u8]) -> Result<usize, SendError>;
    fn close(&mut self, conn: ConnId) -> Result<(), SendError>;
    fn shard_index(&self) -> usize;
    fn connection_count(&self) -> usize;
    fn queued_bytes(&self, conn: ConnId) -> usize;
    fn connect(&mut self, remote: SocketAddr, local: Option<SocketAddr>) -> Result<(), SendError>;
    fn set_timer(&mut self, delay: Duration, token: u64) -> TimerId;
    fn cancel_timer(&mut self, id: TimerId) -> bool;
    fn server(&self) -> &Arc<ServerShared>;
}

/// The connection table size for each shard's ring.
pub(crate) fn table_size(config: &ServerConfig) -> io::Result<usize> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let cap = (lim.rlim_cur as usize).min(MAX_SLOTS as usize);
    match config.connections_per_shard {
        Some(0) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "connections_per_shard must be at least 1",
        )),
        Some(n) if n > cap => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "connections_per_shard {n} exceeds the open-files limit {cap}, which caps one \
                 ring's registered file table; use more shards instead"
            ),
        )),
        Some(n) => Ok(n),
        None => Ok(cap),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Free,
    /// An outbound socket whose connect is in flight.
    Connecting,
    Open,
    Closing,
    Releasing,
}

struct Slot {
    generation: u32,
    state: SlotState,
    recv_armed: bool,
    /// Reading stopped because the send queue reached the high-water mark.
    recv_paused: bool,
    read_closed: bool,
    send_in_flight: bool,
    /// Closing without flushing: queued data is dropped.
    discard: bool,
    in_dirty: bool,
    /// Position in `Core::open` while open.
    open_pos: usize,
    reason: Option<CloseReason>,
    deadline: Option<Instant>,
    queue: SendQueue,
    /// The iovecs and header of the send in flight: the kernel reads them
    /// until the send completes, so they live in the slot, which never
    /// moves (the table is allocated once).
    iov: Vec<libc::iovec>,
    msg: libc::msghdr,
    /// Addresses of an outbound connection, read by the kernel until its
    /// connect completes; and the first error of its set-up steps.
    connect: Option<Box<ConnectAddrs>>,
    connect_error: Option<i32>,
    /// Accepted over the connection limit; closed without a handler call.
    rejected: bool,
    /// Loop-turn times of the last input and the last queued output, for
    /// idle timeouts and heartbeats.
    last_input: Instant,
    last_output: Instant,
}

struct ConnectAddrs {
    remote: socket2::SockAddr,
    local: Option<socket2::SockAddr>,
}

impl Slot {
    fn new() -> Self {
        Slot {
            generation: 0,
            state: SlotState::Free,
            recv_armed: false,
            recv_paused: false,
            read_closed: false,
            send_in_flight: false,
            discard: false,
            in_dirty: false,
            open_pos: 0,
            reason: None,
            deadline: None,
            queue: SendQueue::default(),
            iov: Vec::new(),
            // SAFETY: msghdr is a plain C struct for which all-zero is valid.
            msg: unsafe { std::mem::zeroed() },
            connect: None,
            connect_error: None,
            rejected: false,
            last_input: Instant::now(),
            last_output: Instant::now(),
        }
    }
}

struct AcceptSlot {
    addr: socket2::SockAddrStorage,
    len: libc::socklen_t,
    posted: bool,
}

/// Everything of a shard except the handler, its per-connection states, the
/// framers and the receive buffers, which are kept apart so a message slice
/// (borrowing a receive buffer) and the handler's `Context` (borrowing the
/// core) can coexist.
struct Core<C: Codec> {
    index: usize,
    ring: IoUring,
    shared: Arc<ServerShared>,
    codec: C,
    max_frame: usize,
    high_water: usize,
    queue_limit: usize,
    slots: Box<[Slot]>,
    /// Slots not Free (open, closing or releasing).
    in_use: usize,
    open: Vec<u32>,
    dirty: Vec<u32>,
    rearm: Vec<u32>,
    closing: Vec<u32>,
    victims: Vec<u32>,
    /// Paused connections whose queue drained: their backlog is replayed.
    resumed: Vec<u32>,
    pool: ChunkPool,
    stats: Stats,
    listener: Option<socket2::Socket>,
    accepts: Box<[AcceptSlot]>,
    accepts_posted: usize,
    accept_backoff_until: Option<Instant>,
    at_limit_logged: bool,
    /// A cancel of all posted accepts was sent because of the limit.
    accepts_withdrawn: bool,
    stopping: bool,
    wake_buf: Box<u64>,
    wake_posted: bool,
    /// Time of this loop turn (one clock read per turn).
    now: Instant,
    tick: Duration,
    next_tick: Instant,
    timers: Timers,
    idle_timeout: Option<Duration>,
    heartbeat: Option<Duration>,
    /// Where the idle/heartbeat sweep goes on in `open`.
    sweep_cursor: usize,
    /// Outbound connects waiting for their socket, by token.
    pending_sockets: Vec<Option<Box<ConnectAddrs>>>,
    pending_free: Vec<u32>,
    pending_count: usize,
    /// Connects that failed this turn, reported to the handler by the shard.
    failed_connects: Vec<(SocketAddr, io::Error)>,
    /// The message being handled, when the framer handed it over as owned
    /// `Bytes` (a large reassembled frame).
    current_message: Option<Bytes>,
}

/// A shard's whole state, on its own thread.
struct Shard<C: Codec, H: Handler> {
    core: Core<C>,
    bufs: BufRing,
    framers: Box<[Framer<C>]>,
    /// Input received while a connection was paused, in arrival order.
    backlogs: Box<[Vec<u8>]>,
    states: Box<[Option<H::ConnState>]>,
    handler: H,
    completions: Vec<(u64, i32, u32)>,
    /// Which io_uring setup flags the kernel accepted.
    mode: &'static str,
}

/// Shard thread body: sets up, reports readiness, runs until stopped.
pub(crate) fn run<C, H, F>(
    index: usize,
    shared: Arc<ServerShared>,
    codec: C,
    table: usize,
    factory: &F,
    ready: Sender<io::Result<&'static str>>,
) where
    C: Codec,
    H: Handler,
    F: Fn(usize) -> H,
{
    let mut shard = match Shard::new(index, shared, codec, table, factory) {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.send(Err(io::Error::new(
                e.kind(),
                format!("shard {index} setup failed: {e}"),
            )));
            return;
        }
    };
    let _ = ready.send(Ok(shard.mode));
    drop(ready);
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| shard.run()));
    match outcome {
        Ok(Ok(())) => shard.teardown(),
        failure => {
            match failure {
                Ok(Err(e)) => {
                    tracing::error!(shard = index, error = %e, "shard stopped on a ring error")
                }
                _ => tracing::error!(shard = index, "a handler panicked; shard stopped"),
            }
            // Operations may still be in flight on buffers the shard owns:
            // leak the shard (ring, buffers, connections) rather than free
            // memory the kernel could still write to.
            std::mem::forget(shard);
        }
    }
}

fn listener(addr: SocketAddr, backlog: i32) -> io::Result<socket2::Socket> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.cloexec(), None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    // Accepted sockets inherit TCP_NODELAY: a direct descriptor cannot be
    // reached by setsockopt afterwards.
    socket.set_tcp_nodelay(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog)?;
    Ok(socket)
}

impl<C: Codec, H: Handler> Shard<C, H> {
    fn new<F: Fn(usize) -> H>(
        index: usize,
        shared: Arc<ServerShared>,
        codec: C,
        table: usize,
        factory: &F,
    ) -> io::Result<Self> {
        let config = &shared.config;
        let (ring, mode) = uring::new_ring(config.ring_entries)?;
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
        let listener = if config.listen {
            Some(listener(config.addr, config.listen_backlog).map_err(|e| {
                io::Error::new(e.kind(), format!("listening on {}: {e}", config.addr))
            })?)
        } else {
            None
        };
        tracing::debug!(shard = index, mode, table, "shard ring ready");
        let max_frame = codec.max_frame();
        let core = Core {
            index,
            ring,
            codec: codec.clone(),
            max_frame,
            high_water: config.send_high_water,
            queue_limit: config.effective_send_queue_limit(max_frame),
            slots: (0..table).map(|_| Slot::new()).collect(),
            in_use: 0,
            open: Vec::with_capacity(table.min(65_536)),
            dirty: Vec::new(),
            rearm: Vec::new(),
            closing: Vec::new(),
            victims: Vec::new(),
            resumed: Vec::new(),
            pool: ChunkPool::new(1024),
            stats: Stats::default(),
            listener,
            accepts: (0..config.accepts_in_flight)
                .map(|_| AcceptSlot {
                    addr: socket2::SockAddrStorage::zeroed(),
                    len: 0,
                    posted: false,
                })
                .collect(),
            accepts_posted: 0,
            accept_backoff_until: None,
            at_limit_logged: false,
            accepts_withdrawn: false,
            stopping: false,
            wake_buf: Box::new(0),
            wake_posted: false,
            now: Instant::now(),
            tick: config.tick,
            next_tick: Instant::now() + config.tick,
            timers: Timers::default(),
            idle_timeout: config.idle_timeout,
            heartbeat: config.heartbeat,
            sweep_cursor: 0,
            pending_sockets: Vec::new(),
            pending_free: Vec::new(),
            pending_count: 0,
            failed_connects: Vec::new(),
            current_message: None,
            shared,
        };
        let handler = factory(index);
        Ok(Shard {
            core,
            bufs,
            framers: (0..table).map(|_| Framer::new(codec.clone())).collect(),
            backlogs: (0..table).map(|_| Vec::new()).collect(),
            states: (0..table).map(|_| None).collect(),
            handler,
            completions: Vec::with_capacity(4096),
            mode,
        })
    }

    fn run(&mut self) -> io::Result<()> {
        self.core.post_wake()?;
        loop {
            let now = Instant::now();
            self.core.now = now;
            if now >= self.core.next_tick {
                self.core.next_tick = now + self.core.tick;
                self.core.on_tick()?;
                let mut ctx = Context {
                    core: &mut self.core,
                };
                self.handler.on_tick(&mut ctx);
            }
            while let Some(token) = self.core.timers.pop_due(now) {
                let mut ctx = Context {
                    core: &mut self.core,
                };
                self.handler.on_timer(&mut ctx, token);
            }
            self.core.observe_stop()?;
            self.drain_commands()?;
            self.core.flush_dirty()?;
            self.core.rearm_recvs()?;
            self.core.post_accepts()?;
            self.core.publish_stats();
            if self.core.finished() {
                return Ok(());
            }
            // One enter: submit everything, and wait for a completion, but
            // not past the next tick or handler timer.
            let wake_at = match self.core.timers.next_deadline() {
                Some(t) => t.min(self.core.next_tick),
                None => self.core.next_tick,
            };
            let outcome = if self.core.ring.completion().is_empty() {
                let timeout = types::Timespec::from(wake_at.saturating_duration_since(now));
                let args = types::SubmitArgs::new().timespec(&timeout);
                self.core.ring.submitter().submit_with_args(1, &args)
            } else {
                self.core.ring.submit()
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
            self.completions.extend(
                self.core
                    .ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            for i in 0..self.completions.len() {
                let (user_data, result, flags) = self.completions[i];
                self.complete(user_data, result, flags)?;
            }
            self.bufs.publish();
        }
    }

    fn drain_commands(&mut self) -> io::Result<()> {
        let shared = self.core.shared.clone();
        let me = &shared.shards[self.core.index];
        for _ in 0..COMMANDS_PER_TURN {
            let Ok(cmd) = me.commands_rx.try_recv() else {
                break;
            };
            match cmd {
                Command::Send { conn, payload } => self.core.send_from_elsewhere(conn, payload),
                Command::Broadcast { payload } => self.core.broadcast_local(&payload),
                Command::Close { conn } => {
                    if let Some(slot) = self.core.live_slot(conn) {
                        self.core.begin_close(slot, CloseReason::Local, true)?;
                    }
                }
                Command::Connect { remote, local } => {
                    if let Err(e) = self.core.start_connect(remote, local) {
                        self.core.failed_connects.push((remote, e));
                    }
                }
                Command::Run(f) => {
                    let mut ctx = Context {
                        core: &mut self.core,
                    };
                    f(&mut ctx);
                }
            }
        }
        self.report_failed_connects();
        Ok(())
    }

    fn report_failed_connects(&mut self) {
        while let Some((remote, error)) = self.core.failed_connects.pop() {
            let mut ctx = Context {
                core: &mut self.core,
            };
            self.handler.on_connect_failed(&mut ctx, remote, error);
        }
    }

    fn complete(&mut self, user_data: u64, result: i32, flags: u32) -> io::Result<()> {
        let Some(ud) = UserData::decode(user_data) else {
            tracing::warn!(user_data, "completion with an unknown tag");
            return Ok(());
        };
        match ud.kind {
            OpKind::Accept => self.on_accept(ud, result),
            OpKind::Recv => self.on_recv(ud, result, flags),
            OpKind::Send => {
                self.core.on_send(ud, result)?;
                while let Some(slot) = self.core.resumed.pop() {
                    self.replay(slot as usize)?;
                }
                Ok(())
            }
            OpKind::Close => {
                self.on_closed(ud, result);
                Ok(())
            }
            OpKind::Cancel => Ok(()),
            OpKind::Wake => {
                self.core.wake_posted = false;
                self.core.shared.shards[self.core.index]
                    .notified
                    .store(false, Ordering::SeqCst);
                self.core.post_wake()
            }
            OpKind::Socket => {
                self.core.on_socket(ud, result)?;
                self.report_failed_connects();
                Ok(())
            }
            OpKind::ConnectStep => {
                self.core.on_connect_step(ud, result);
                Ok(())
            }
            OpKind::Connect => {
                if let Some((conn, peer)) = self.core.on_connect(ud, result)? {
                    self.opened(conn, peer);
                }
                Ok(())
            }
        }
    }

    fn on_accept(&mut self, ud: UserData, result: i32) -> io::Result<()> {
        if let Some((conn, peer)) = self.core.on_accept(ud, result)? {
            self.opened(conn, peer);
        }
        Ok(())
    }

    /// A connection (accepted or outbound) is open: give it a framer and
    /// let the handler create its state.
    fn opened(&mut self, conn: ConnId, peer: SocketAddr) {
        let slot = conn.slot() as usize;
        self.framers[slot] = Framer::new(self.core.codec.clone());
        let mut ctx = Context {
            core: &mut self.core,
        };
        let state = self.handler.on_connect(&mut ctx, conn, peer);
        self.states[slot] = Some(state);
    }

    fn on_recv(&mut self, ud: UserData, result: i32, flags: u32) -> io::Result<()> {
        let slot = ud.slot as usize;
        let more = cqueue::more(flags);
        let buffer = cqueue::buffer_select(flags);
        let core = &mut self.core;
        let current = core
            .slots
            .get(slot)
            .is_some_and(|s| s.generation == ud.generation && s.state != SlotState::Free);
        if !current {
            if let Some(bid) = buffer {
                self.bufs.recycle(bid);
            }
            return Ok(());
        }
        if !more {
            core.slots[slot].recv_armed = false;
        }
        if result > 0 {
            if let Some(bid) = buffer {
                let len = result as usize;
                if core.slots[slot].state == SlotState::Open {
                    self.deliver(slot, ud.generation, bid, len)?;
                }
                self.bufs.recycle(bid);
            }
        } else if result == 0 {
            self.core.slots[slot].read_closed = true;
            // Input held back by a pause is answered before the close.
            if self.backlogs[slot].is_empty() {
                self.core.begin_close(slot, CloseReason::PeerClosed, true)?;
            }
        } else {
            match -result {
                libc::ENOBUFS => self.core.stats.recv_no_buffers += 1,
                libc::ECANCELED => {}
                errno => self
                    .core
                    .begin_close(slot, CloseReason::Reset(errno), false)?,
            }
        }
        let core = &mut self.core;
        let s = &mut core.slots[slot];
        if !s.recv_armed {
            match s.state {
                SlotState::Open
                    if !s.recv_paused && !s.read_closed && self.backlogs[slot].is_empty() =>
                {
                    core.rearm.push(slot as u32)
                }
                SlotState::Closing => core.try_release(slot)?,
                _ => {}
            }
        }
        Ok(())
    }

    /// Bytes held for a connection's input: its framer's reassembly buffer
    /// and its backlog.
    fn held(&self, slot: usize) -> u64 {
        (self.framers[slot].heap_bytes() + self.backlogs[slot].capacity()) as u64
    }

    fn account_held(&mut self, slot: usize, before: u64) {
        let after = self.held(slot);
        let stats = &mut self.core.stats;
        stats.reassembly_bytes = (stats.reassembly_bytes + after).saturating_sub(before);
    }

    /// Hands received bytes to the framer and the handler. While the
    /// connection is paused (its send queue at the high-water mark), or has
    /// older input waiting, the bytes go to its backlog instead: they are
    /// replayed when the queue drains, so nothing is lost and the handler
    /// never has to refuse a reply.
    fn deliver(&mut self, slot: usize, generation: u32, bid: u16, len: usize) -> io::Result<()> {
        let before = self.held(slot);
        self.core.stats.bytes_in += len as u64;
        self.core.slots[slot].last_input = self.core.now;
        let data = self.bufs.get(bid, len);
        let backlog = &mut self.backlogs[slot];
        let result = if self.core.slots[slot].recv_paused || !backlog.is_empty() {
            backlog.extend_from_slice(data);
            Ok(())
        } else {
            let conn = ConnId::new(self.core.index as u16, slot as u32, generation);
            feed_frames(
                &mut self.core,
                &mut self.handler,
                &mut self.framers[slot],
                &mut self.states[slot],
                conn,
                data,
            )
            .map(|consumed| {
                if consumed < data.len() && self.core.slots[slot].state == SlotState::Open {
                    backlog.extend_from_slice(&data[consumed..]);
                }
            })
        };
        self.account_held(slot, before);
        self.after_feed(slot, result)
    }

    /// Feeds a resumed connection's backlog; once it is empty (and the
    /// connection not paused again), reading resumes, or the close that a
    /// FIN behind the backlog asked for happens.
    fn replay(&mut self, slot: usize) -> io::Result<()> {
        let s = &self.core.slots[slot];
        if s.state != SlotState::Open || s.recv_paused {
            return Ok(());
        }
        let before = self.held(slot);
        let mut backlog = std::mem::take(&mut self.backlogs[slot]);
        let mut result = Ok(());
        if !backlog.is_empty() {
            let conn = ConnId::new(self.core.index as u16, slot as u32, s.generation);
            result = feed_frames(
                &mut self.core,
                &mut self.handler,
                &mut self.framers[slot],
                &mut self.states[slot],
                conn,
                &backlog,
            )
            .map(|consumed| {
                backlog.drain(..consumed);
            });
            if backlog.is_empty() && backlog.capacity() > RETAIN_BACKLOG {
                backlog = Vec::new();
            }
        }
        self.backlogs[slot] = backlog;
        self.account_held(slot, before);
        self.after_feed(slot, result)?;
        let s = &self.core.slots[slot];
        if s.state == SlotState::Open && !s.recv_paused && self.backlogs[slot].is_empty() {
            if s.read_closed {
                self.core.begin_close(slot, CloseReason::PeerClosed, true)?;
            } else if !s.recv_armed {
                self.core.rearm.push(slot as u32);
            }
        }
        Ok(())
    }

    fn after_feed(&mut self, slot: usize, result: Result<(), CodecError>) -> io::Result<()> {
        let core = &mut self.core;
        match result {
            Ok(()) => core.check_pause(slot),
            Err(CodecError::FrameTooLarge { len, max }) => {
                core.stats.frames_too_large += 1;
                tracing::debug!(slot, len, max, "frame too large; closing");
                core.begin_close(slot, CloseReason::FrameTooLarge { len, max }, true)
            }
            Err(e) => core.begin_close(slot, CloseReason::InvalidFrame(e.to_string()), true),
        }
    }

    fn on_closed(&mut self, ud: UserData, result: i32) {
        let slot = ud.slot as usize;
        if result < 0 {
            tracing::warn!(slot, errno = -result, "closing a direct descriptor failed");
        }
        let Some((conn, reason)) = self.core.on_closed(slot) else {
            self.report_failed_connects();
            return;
        };
        let held = self.held(slot);
        self.core.stats.reassembly_bytes = self.core.stats.reassembly_bytes.saturating_sub(held);
        self.framers[slot] = Framer::new(self.core.codec.clone());
        self.backlogs[slot] = Vec::new();
        if let Some(state) = self.states[slot].take() {
            let mut ctx = Context {
                core: &mut self.core,
            };
            self.handler.on_close(&mut ctx, conn, state, reason);
        }
    }

    /// Releases what the kernel still references before memory is freed:
    /// the wake-up read is cancelled and reaped, then the buffer ring is
    /// unregistered.
    fn teardown(&mut self) {
        let core = &mut self.core;
        let target = UserData::new(OpKind::Wake, 0, 0).encode();
        let cancel = opcode::AsyncCancel::new(target)
            .build()
            .user_data(UserData::new(OpKind::Cancel, 0, 0).encode());
        // SAFETY: a cancel references no memory of ours.
        let _ = unsafe { uring::push(&mut core.ring, &cancel) };
        let deadline = Instant::now() + Duration::from_secs(2);
        while core.wake_posted && Instant::now() < deadline {
            if core.ring.submit_and_wait(1).is_err() {
                break;
            }
            for cqe in core.ring.completion() {
                if UserData::decode(cqe.user_data()).map(|u| u.kind) == Some(OpKind::Wake) {
                    core.wake_posted = false;
                }
            }
        }
        let _ = core.ring.submitter().unregister_buf_ring(self.bufs.group());
        self.core.publish_stats();
    }
}

impl<C: Codec> Core<C> {
    fn push(&mut self, entry: io_uring::squeue::Entry) -> io::Result<()> {
        // SAFETY: every entry built in this module points only at memory
        // that stays put until the completion is reaped: slot iovecs/msghdr
        // and the queued bytes they cover (table allocated once, not touched
        // while `send_in_flight`), accept address slots (boxed slice, not
        // touched while `posted`), outbound connect addresses (boxed in the
        // slot until the connect completes), the wake-up buffer (boxed,
        // freed only after teardown reaped its completion) and a `static`
        // socket-option value.
        let mut busy = 0;
        loop {
            match unsafe { uring::push(&mut self.ring, &entry) } {
                Ok(()) => return Ok(()),
                // The kernel refuses submissions while completions overflow;
                // they are reaped only by the loop, so give up after a while
                // rather than spin forever.
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && busy < 10_000 => {
                    busy += 1;
                    std::thread::yield_now();
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn me(&self) -> &ShardShared {
        &self.shared.shards[self.index]
    }

    fn publish_stats(&mut self) {
        self.stats.connections = self.open.len() as u64;
        self.stats.timers = self.timers.len() as u64;
        let me = &self.shared.shards[self.index];
        me.counters.publish(&self.stats);
    }

    fn post_wake(&mut self) -> io::Result<()> {
        if self.wake_posted || self.finished() {
            return Ok(());
        }
        let fd = self.me().eventfd.as_raw_fd();
        let entry = opcode::Read::new(types::Fd(fd), (&mut *self.wake_buf as *mut u64).cast(), 8)
            .build()
            .user_data(UserData::new(OpKind::Wake, 0, 0).encode());
        self.push(entry)?;
        self.wake_posted = true;
        Ok(())
    }

    fn finished(&self) -> bool {
        self.stopping && self.in_use == 0 && self.accepts_posted == 0 && self.pending_count == 0
    }

    fn observe_stop(&mut self) -> io::Result<()> {
        if self.stopping || !self.shared.stopping.load(Ordering::Acquire) {
            return Ok(());
        }
        self.stopping = true;
        let stop_deadline = Instant::now() + self.shared.config.stop_timeout;
        if let Some(listener) = &self.listener {
            let cancel = opcode::AsyncCancel2::new(
                types::CancelBuilder::fd(types::Fd(listener.as_raw_fd())).all(),
            )
            .build()
            .user_data(UserData::new(OpKind::Cancel, 0, 0).encode());
            self.push(cancel)?;
        }
        let open: Vec<u32> = self.open.clone();
        for slot in open {
            self.begin_close(slot as usize, CloseReason::ServerStopping, true)?;
            let s = &mut self.slots[slot as usize];
            s.deadline = s.deadline.map(|d| d.min(stop_deadline));
        }
        Ok(())
    }

    fn on_tick(&mut self) -> io::Result<()> {
        let now = self.now;
        self.sweep_idle()?;
        if self.accept_backoff_until.is_some_and(|t| t <= now) {
            self.accept_backoff_until = None;
        }
        let mut i = 0;
        while i < self.closing.len() {
            let slot = self.closing[i] as usize;
            let s = &mut self.slots[slot];
            if s.state != SlotState::Closing {
                self.closing.swap_remove(i);
                continue;
            }
            if s.deadline.is_some_and(|d| d <= now) && !s.discard {
                // The peer did not take its queued data in time.
                s.discard = true;
                self.stats.slow_consumers += 1;
                if s.send_in_flight {
                    let target = UserData::new(OpKind::Send, slot as u32, s.generation).encode();
                    let cancel = opcode::AsyncCancel::new(target)
                        .build()
                        .user_data(UserData::new(OpKind::Cancel, slot as u32, 0).encode());
                    self.push(cancel)?;
                }
                self.try_release(slot)?;
            }
            i += 1;
        }
        Ok(())
    }

    fn post_accepts(&mut self) -> io::Result<()> {
        if self.stopping || self.accept_backoff_until.is_some() {
            return Ok(());
        }
        let Some(listener) = self.listener.as_ref().map(|l| l.as_raw_fd()) else {
            return Ok(());
        };
        // At the global limit, accepts are withdrawn: new clients wait in the
        // listen backlog. (Reserving the limit per posted accept cannot
        // work with SO_REUSEPORT: the kernel may queue a client at a shard
        // that holds no reservation while another shard's sit unused.)
        let max = self.shared.config.max_connections;
        if self.shared.admitted.load(Ordering::Acquire) >= max {
            if self.accepts_posted > 0 && !self.accepts_withdrawn {
                self.accepts_withdrawn = true;
                let cancel =
                    opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(listener)).all())
                        .build()
                        .user_data(UserData::new(OpKind::Cancel, 0, 0).encode());
                self.push(cancel)?;
            }
            if !self.at_limit_logged {
                tracing::warn!(
                    shard = self.index,
                    max_connections = max,
                    "connection limit reached; accepting paused until connections close"
                );
                self.at_limit_logged = true;
            }
            return Ok(());
        }
        self.at_limit_logged = false;
        self.accepts_withdrawn = false;
        while self.accepts_posted < self.accepts.len()
            && self.in_use + self.accepts_posted + self.pending_count < self.slots.len()
        {
            let k = self
                .accepts
                .iter()
                .position(|a| !a.posted)
                .expect("fewer posted accepts than slots");
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
            self.push(entry)?;
        }
        Ok(())
    }

    fn on_accept(&mut self, ud: UserData, result: i32) -> io::Result<Option<(ConnId, SocketAddr)>> {
        let k = ud.slot as usize;
        self.accepts[k].posted = false;
        self.accepts_posted -= 1;
        if result < 0 {
            match -result {
                libc::ECANCELED | libc::ECONNABORTED | libc::EINTR => {}
                errno => {
                    self.stats.accept_errors += 1;
                    if self.accept_backoff_until.is_none() {
                        tracing::warn!(
                            shard = self.index,
                            error = %io::Error::from_raw_os_error(errno),
                            "accept failed; backing off"
                        );
                    }
                    self.accept_backoff_until = Some(Instant::now() + ACCEPT_BACKOFF);
                }
            }
            if self.stopping && self.accepts_posted == 0 {
                self.listener = None;
            }
            return Ok(None);
        }
        let slot = result as usize;
        let a = &mut self.accepts[k];
        let storage = std::mem::replace(&mut a.addr, socket2::SockAddrStorage::zeroed());
        // SAFETY: the accept completed, so the kernel is done with the
        // storage and filled `a.len` bytes of it (at most its size).
        let peer = unsafe { socket2::SockAddr::new(storage, a.len) }
            .as_socket()
            .unwrap_or(UNSPECIFIED);
        if !self.claim(slot, "accept") {
            return Ok(None);
        }
        let s = &mut self.slots[slot];
        let max = self.shared.config.max_connections;
        let before = self.shared.admitted.fetch_add(1, Ordering::AcqRel);
        if before + 1 == max {
            // The limit is reached: every shard withdraws its accepts now,
            // not at its next tick.
            for shard in self.shared.shards.iter() {
                shard.wake();
            }
        }
        if before >= max {
            // Accepted in the moment the limit was reached, before the
            // accepts were withdrawn: closed at once, never seen by the
            // handler.
            self.shared.admitted.fetch_sub(1, Ordering::AcqRel);
            s.rejected = true;
            s.state = SlotState::Releasing;
            let entry = opcode::Close::new(types::Fixed(slot as u32))
                .build()
                .user_data(UserData::new(OpKind::Close, slot as u32, s.generation).encode());
            self.push(entry)?;
            return Ok(None);
        }
        self.stats.accepted += 1;
        let conn = self.open_slot(slot)?;
        Ok(Some((conn, peer)))
    }

    /// Takes a table entry the kernel just filled (accept or socket) for a
    /// new connection: moves its generation on. The kernel only fills free
    /// entries and our table has exactly its size, so anything else is a bug
    /// worth shouting about.
    fn claim(&mut self, slot: usize, by: &str) -> bool {
        let Some(s) = self
            .slots
            .get_mut(slot)
            .filter(|s| s.state == SlotState::Free)
        else {
            tracing::error!(slot, by, "the kernel returned a table entry that is in use");
            return false;
        };
        s.generation = next_generation(s.generation);
        self.in_use += 1;
        true
    }

    /// Makes a slot that holds a connected socket `Open` and starts reading.
    fn open_slot(&mut self, slot: usize) -> io::Result<ConnId> {
        let s = &mut self.slots[slot];
        s.state = SlotState::Open;
        s.recv_armed = false;
        s.recv_paused = false;
        s.read_closed = false;
        s.send_in_flight = false;
        s.discard = false;
        s.in_dirty = false;
        s.reason = None;
        s.deadline = None;
        s.last_input = self.now;
        s.last_output = self.now;
        s.open_pos = self.open.len();
        let generation = s.generation;
        self.open.push(slot as u32);
        self.shared.shards[self.index]
            .live
            .set_live(slot as u32, generation);
        self.arm_recv(slot)?;
        if self.stopping {
            self.begin_close(slot, CloseReason::ServerStopping, false)?;
        }
        Ok(ConnId::new(self.index as u16, slot as u32, generation))
    }

    /// Starts an outbound connection: a socket is created straight into the
    /// direct table; its completion continues in `on_socket`.
    fn start_connect(&mut self, remote: SocketAddr, local: Option<SocketAddr>) -> io::Result<()> {
        if self.stopping {
            return Err(io::Error::other("server is stopping"));
        }
        if self.in_use + self.accepts_posted + self.pending_count >= self.slots.len() {
            return Err(io::Error::other(format!(
                "shard {} connection table is full ({} entries)",
                self.index,
                self.slots.len()
            )));
        }
        let max = self.shared.config.max_connections;
        if self.shared.admitted.fetch_add(1, Ordering::AcqRel) >= max {
            self.shared.admitted.fetch_sub(1, Ordering::AcqRel);
            return Err(io::Error::other(format!(
                "connection limit reached ({max} connections)"
            )));
        }
        let addrs = Box::new(ConnectAddrs {
            remote: remote.into(),
            local: local.map(Into::into),
        });
        let token = match self.pending_free.pop() {
            Some(t) => {
                self.pending_sockets[t as usize] = Some(addrs);
                t
            }
            None => {
                self.pending_sockets.push(Some(addrs));
                (self.pending_sockets.len() - 1) as u32
            }
        };
        self.pending_count += 1;
        let domain = if remote.is_ipv4() {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        // No SOCK_CLOEXEC: a direct descriptor has no fd to inherit, and the
        // kernel rejects the flag for it.
        let entry = opcode::Socket::new(domain, libc::SOCK_STREAM, 0)
            .file_index(Some(types::DestinationSlot::auto_target()))
            .build()
            .user_data(UserData::new(OpKind::Socket, token, 0).encode());
        self.push(entry)
    }

    fn on_socket(&mut self, ud: UserData, result: i32) -> io::Result<()> {
        let token = ud.slot as usize;
        let Some(addrs) = self.pending_sockets.get_mut(token).and_then(Option::take) else {
            return Ok(());
        };
        self.pending_free.push(token as u32);
        self.pending_count -= 1;
        let remote = addrs.remote.as_socket().unwrap_or(UNSPECIFIED);
        if result < 0 {
            self.shared.admitted.fetch_sub(1, Ordering::AcqRel);
            self.failed_connects
                .push((remote, io::Error::from_raw_os_error(-result)));
            return Ok(());
        }
        let slot = result as usize;
        if !self.claim(slot, "socket") {
            self.shared.admitted.fetch_sub(1, Ordering::AcqRel);
            return Ok(());
        }
        let s = &mut self.slots[slot];
        s.state = SlotState::Connecting;
        s.connect_error = None;
        let generation = s.generation;
        let addrs = s.connect.insert(addrs);
        let fixed = types::Fixed(slot as u32);
        let step = UserData::new(OpKind::ConnectStep, slot as u32, generation).encode();
        let nodelay = int_option(fixed, libc::IPPROTO_TCP, libc::TCP_NODELAY)
            .flags(io_uring::squeue::Flags::SKIP_SUCCESS)
            .user_data(step);
        // With a source address: IP_BIND_ADDRESS_NO_PORT lets connect pick
        // the port per destination (and reuse loopback TIME_WAIT ports), so
        // one source is not limited to one set of ports for all
        // destinations; hard-linked so that bind runs after it even if the
        // option is refused.
        let no_port = int_option(fixed, libc::IPPROTO_IP, libc::IP_BIND_ADDRESS_NO_PORT)
            .flags(io_uring::squeue::Flags::IO_HARDLINK | io_uring::squeue::Flags::SKIP_SUCCESS)
            .user_data(step);
        let bind = addrs.local.as_ref().map(|local| {
            opcode::Bind::new(fixed, local.as_ptr().cast(), local.len())
                .build()
                .flags(io_uring::squeue::Flags::IO_LINK | io_uring::squeue::Flags::SKIP_SUCCESS)
                .user_data(step)
        });
        let connect = opcode::Connect::new(fixed, addrs.remote.as_ptr().cast(), addrs.remote.len())
            .build()
            .user_data(UserData::new(OpKind::Connect, slot as u32, generation).encode());
        // TCP_NODELAY is best effort (URING_CMD sockets need 6.7+) and not
        // linked: its failure must not cancel the connect.
        self.push(nodelay)?;
        if let Some(bind) = bind {
            self.push(no_port)?;
            self.push(bind)?;
        }
        self.push(connect)
    }

    fn on_connect_step(&mut self, ud: UserData, result: i32) {
        let Some(s) = self.slots.get_mut(ud.slot as usize) else {
            return;
        };
        if s.generation == ud.generation
            && s.state == SlotState::Connecting
            && result < 0
            && result != -libc::ECANCELED
            && s.connect_error.is_none()
        {
            // Errors of the unlinked TCP_NODELAY step are not fatal.
            if result != -libc::EOPNOTSUPP && result != -libc::EINVAL {
                s.connect_error = Some(-result);
            }
        }
    }

    fn on_connect(
        &mut self,
        ud: UserData,
        result: i32,
    ) -> io::Result<Option<(ConnId, SocketAddr)>> {
        let slot = ud.slot as usize;
        let Some(s) = self
            .slots
            .get_mut(slot)
            .filter(|s| s.generation == ud.generation && s.state == SlotState::Connecting)
        else {
            return Ok(None);
        };
        if result < 0 || s.connect_error.is_some() {
            if s.connect_error.is_none() {
                s.connect_error = Some(-result);
            }
            // Close the socket; `on_closed` reports the failure.
            s.state = SlotState::Releasing;
            let entry = opcode::Close::new(types::Fixed(slot as u32))
                .build()
                .user_data(UserData::new(OpKind::Close, slot as u32, s.generation).encode());
            self.push(entry)?;
            return Ok(None);
        }
        let remote = s
            .connect
            .take()
            .and_then(|a| a.remote.as_socket())
            .unwrap_or(UNSPECIFIED);
        self.stats.connected += 1;
        let conn = self.open_slot(slot)?;
        Ok(Some((conn, remote)))
    }

    fn arm_recv(&mut self, slot: usize) -> io::Result<()> {
        let s = &mut self.slots[slot];
        s.recv_armed = true;
        let entry = opcode::RecvMulti::new(types::Fixed(slot as u32), BUFFER_GROUP)
            .build()
            .user_data(UserData::new(OpKind::Recv, slot as u32, s.generation).encode());
        self.push(entry)
    }

    fn cancel_recv(&mut self, slot: usize) -> io::Result<()> {
        let s = &self.slots[slot];
        let target = UserData::new(OpKind::Recv, slot as u32, s.generation).encode();
        let entry = opcode::AsyncCancel::new(target)
            .build()
            .user_data(UserData::new(OpKind::Cancel, slot as u32, s.generation).encode());
        self.push(entry)
    }

    fn rearm_recvs(&mut self) -> io::Result<()> {
        while let Some(slot) = self.rearm.pop() {
            let slot = slot as usize;
            let s = &self.slots[slot];
            if s.state == SlotState::Open && !s.recv_armed && !s.recv_paused && !s.read_closed {
                self.arm_recv(slot)?;
            }
        }
        Ok(())
    }

    /// Closes connections idle past `idle_timeout` and sends heartbeats
    /// (an empty message) to those with no output for `heartbeat`. Each tick
    /// looks at a share of the open connections so that every one is seen
    /// at least twice per period, without a full scan per tick.
    fn sweep_idle(&mut self) -> io::Result<()> {
        let period = match (self.idle_timeout, self.heartbeat) {
            (None, None) => return Ok(()),
            (Some(a), Some(b)) => a.min(b),
            (Some(a), None) | (None, Some(a)) => a,
        };
        let n = self.open.len();
        if n == 0 {
            return Ok(());
        }
        let per_tick = (n as f64 * 2.0 * self.tick.as_secs_f64() / period.as_secs_f64().max(1e-3))
            .ceil()
            .clamp(1.0, n as f64) as usize;
        let now = self.now;
        for _ in 0..per_tick {
            if self.open.is_empty() {
                break;
            }
            self.sweep_cursor %= self.open.len();
            let slot = self.open[self.sweep_cursor] as usize;
            self.sweep_cursor += 1;
            let s = &self.slots[slot];
            if self
                .idle_timeout
                .is_some_and(|t| now.duration_since(s.last_input) >= t)
            {
                self.stats.idle_timeouts += 1;
                self.begin_close(slot, CloseReason::IdleTimeout, true)?;
                continue;
            }
            if self
                .heartbeat
                .is_some_and(|t| now.duration_since(s.last_output) >= t)
                && s.queue.is_empty()
            {
                let _ = self.enqueue_copy(slot, &[]);
                self.stats.heartbeats += 1;
            }
        }
        Ok(())
    }

    /// Stops reading a connection whose queue reached the high-water mark.
    fn check_pause(&mut self, slot: usize) -> io::Result<()> {
        let s = &mut self.slots[slot];
        if s.state == SlotState::Open && !s.recv_paused && s.queue.len() >= self.high_water {
            s.recv_paused = true;
            self.stats.read_pauses += 1;
            if s.recv_armed {
                self.cancel_recv(slot)?;
            }
        }
        Ok(())
    }

    fn mark_dirty(&mut self, slot: usize) {
        let s = &mut self.slots[slot];
        if !s.in_dirty && !s.send_in_flight {
            s.in_dirty = true;
            self.dirty.push(slot as u32);
        }
    }

    fn flush_dirty(&mut self) -> io::Result<()> {
        while let Some(slot) = self.dirty.pop() {
            let slot = slot as usize;
            let s = &mut self.slots[slot];
            s.in_dirty = false;
            if matches!(s.state, SlotState::Open | SlotState::Closing)
                && !s.discard
                && !s.send_in_flight
                && !s.queue.is_empty()
            {
                s.queue.fill_iovecs(&mut s.iov, MAX_IOVECS);
                s.send_in_flight = true;
                let fd = types::Fixed(slot as u32);
                let user_data = UserData::new(OpKind::Send, slot as u32, s.generation).encode();
                // One segment (the common case for small messages): a plain
                // send, which spares the kernel importing a msghdr.
                let entry = if let [one] = s.iov[..] {
                    opcode::Send::new(fd, one.iov_base as *const u8, one.iov_len as u32)
                        .flags(libc::MSG_NOSIGNAL)
                        .build()
                } else {
                    s.msg.msg_iov = s.iov.as_mut_ptr();
                    s.msg.msg_iovlen = s.iov.len();
                    opcode::SendMsg::new(fd, &s.msg)
                        .flags(libc::MSG_NOSIGNAL as u32)
                        .build()
                };
                self.push(entry.user_data(user_data))?;
            }
        }
        Ok(())
    }

    fn on_send(&mut self, ud: UserData, result: i32) -> io::Result<()> {
        let slot = ud.slot as usize;
        let Some(s) = self
            .slots
            .get_mut(slot)
            .filter(|s| s.generation == ud.generation && s.send_in_flight)
        else {
            return Ok(());
        };
        s.send_in_flight = false;
        if result >= 0 {
            let n = (result as usize).min(s.queue.len());
            s.queue.consume(&mut self.pool, n);
            self.stats.bytes_out += n as u64;
            self.stats.send_queue_bytes = self.stats.send_queue_bytes.saturating_sub(n as u64);
        } else if -result != libc::ECANCELED {
            let errno = -result;
            if s.state == SlotState::Open {
                self.begin_close(slot, CloseReason::Reset(errno), false)?;
            } else {
                self.slots[slot].discard = true;
            }
        }
        let s = &mut self.slots[slot];
        match s.state {
            SlotState::Open => {
                if !s.queue.is_empty() {
                    self.mark_dirty(slot);
                }
                let s = &mut self.slots[slot];
                if s.recv_paused && s.queue.len() <= self.high_water / 2 {
                    s.recv_paused = false;
                    self.resumed.push(slot as u32);
                }
            }
            SlotState::Closing => {
                if !s.queue.is_empty() && !s.discard {
                    self.mark_dirty(slot);
                }
                self.try_release(slot)?;
            }
            _ => {}
        }
        Ok(())
    }

    /// Starts closing `slot`: from now on its id is stale. With `flush`,
    /// queued data is still sent (within `close_timeout`); without, it is
    /// dropped.
    fn begin_close(&mut self, slot: usize, reason: CloseReason, flush: bool) -> io::Result<()> {
        let close_timeout = self.shared.config.close_timeout;
        let s = &mut self.slots[slot];
        if s.state != SlotState::Open {
            return Ok(());
        }
        s.state = SlotState::Closing;
        s.reason = Some(reason);
        s.discard = !flush;
        s.deadline = Some(Instant::now() + close_timeout);
        let (recv_armed, send_in_flight, generation) =
            (s.recv_armed, s.send_in_flight, s.generation);
        let pos = s.open_pos;
        self.shared.shards[self.index].live.set_dead(slot as u32);
        self.open.swap_remove(pos);
        if let Some(&moved) = self.open.get(pos) {
            self.slots[moved as usize].open_pos = pos;
        }
        self.closing.push(slot as u32);
        if recv_armed {
            self.cancel_recv(slot)?;
        }
        if !flush && send_in_flight {
            let target = UserData::new(OpKind::Send, slot as u32, generation).encode();
            let cancel = opcode::AsyncCancel::new(target)
                .build()
                .user_data(UserData::new(OpKind::Cancel, slot as u32, generation).encode());
            self.push(cancel)?;
        }
        self.try_release(slot)
    }

    /// Submits the close of the direct descriptor once nothing is in flight
    /// on it and nothing (or nothing to keep) is queued.
    fn try_release(&mut self, slot: usize) -> io::Result<()> {
        let s = &mut self.slots[slot];
        if s.state != SlotState::Closing
            || s.recv_armed
            || s.send_in_flight
            || !(s.queue.is_empty() || s.discard)
        {
            return Ok(());
        }
        let dropped = s.queue.len() as u64;
        s.queue.clear(&mut self.pool);
        self.stats.send_queue_bytes = self.stats.send_queue_bytes.saturating_sub(dropped);
        s.state = SlotState::Releasing;
        let entry = opcode::Close::new(types::Fixed(slot as u32))
            .build()
            .user_data(UserData::new(OpKind::Close, slot as u32, s.generation).encode());
        self.push(entry)
    }

    fn on_closed(&mut self, slot: usize) -> Option<(ConnId, CloseReason)> {
        let s = self.slots.get_mut(slot)?;
        if s.state != SlotState::Releasing {
            return None;
        }
        s.state = SlotState::Free;
        self.in_use -= 1;
        if std::mem::take(&mut s.rejected) {
            self.stats.rejected += 1;
            return None;
        }
        let max = self.shared.config.max_connections;
        if self.shared.admitted.fetch_sub(1, Ordering::AcqRel) == max {
            // Below the limit again: every shard may accept (the waiting
            // client can be in any shard's backlog).
            for shard in self.shared.shards.iter() {
                shard.wake();
            }
        }
        if let Some(addrs) = s.connect.take() {
            // A connect that failed: the socket is closed, the handler is
            // told with the error, no connection ever existed.
            let errno = s.connect_error.take().unwrap_or(libc::ECONNREFUSED);
            let remote = addrs.remote.as_socket().unwrap_or(UNSPECIFIED);
            self.failed_connects
                .push((remote, io::Error::from_raw_os_error(errno)));
            return None;
        }
        let reason = s.reason.take().unwrap_or(CloseReason::Local);
        let conn = ConnId::new(self.index as u16, slot as u32, s.generation);
        self.stats.closed += 1;
        Some((conn, reason))
    }

    /// The slot of `conn` if it is open on this shard now.
    fn live_slot(&self, conn: ConnId) -> Option<usize> {
        if conn.shard() != self.index {
            return None;
        }
        let slot = conn.slot() as usize;
        self.slots
            .get(slot)
            .filter(|s| s.state == SlotState::Open && s.generation == conn.generation())
            .map(|_| slot)
    }

    fn header(&self, len: usize) -> Result<([u8; MAX_HEADER_LEN], usize), SendError> {
        if len > self.max_frame {
            return Err(SendError::TooLarge);
        }
        let mut header = [0u8; MAX_HEADER_LEN];
        let n = self
            .codec
            .encode_header(len, &mut header)
            .map_err(|_| SendError::TooLarge)?;
        Ok((header, n))
    }

    fn enqueue_copy(&mut self, slot: usize, payload: &[u8]) -> Result<(), SendError> {
        let (header, n) = self.header(payload.len())?;
        let trailer = self.codec.trailer();
        let s = &mut self.slots[slot];
        let before = s.queue.len();
        s.queue
            .push_copy(&mut self.pool, &[&header[..n], payload, trailer]);
        self.stats.send_queue_bytes += (s.queue.len() - before) as u64;
        self.stats.messages_out += 1;
        self.slots[slot].last_output = self.now;
        self.mark_dirty(slot);
        Ok(())
    }

    fn enqueue_shared(&mut self, slot: usize, payload: Bytes) -> Result<(), SendError> {
        let (header, n) = self.header(payload.len())?;
        let trailer = self.codec.trailer();
        let s = &mut self.slots[slot];
        let before = s.queue.len();
        s.queue
            .push_shared(&mut self.pool, &header[..n], payload, trailer);
        self.stats.send_queue_bytes += (s.queue.len() - before) as u64;
        self.stats.messages_out += 1;
        self.slots[slot].last_output = self.now;
        self.mark_dirty(slot);
        Ok(())
    }

    /// Applies the slow-consumer policy to a send that did not come from
    /// the connection's own handler call. Returns whether to queue it.
    fn admit_remote(&mut self, slot: usize) -> bool {
        if self.slots[slot].queue.len() < self.queue_limit {
            return true;
        }
        self.stats.slow_consumers += 1;
        if self.shared.config.slow_consumer == SlowConsumerPolicy::Disconnect {
            self.victims.push(slot as u32);
        }
        false
    }

    fn close_victims(&mut self) {
        while let Some(slot) = self.victims.pop() {
            if let Err(e) = self.begin_close(slot as usize, CloseReason::SlowConsumer, false) {
                tracing::error!(error = %e, "closing a slow consumer failed");
            }
        }
    }

    fn send_from_elsewhere(&mut self, conn: ConnId, payload: Bytes) {
        let Some(slot) = self.live_slot(conn) else {
            return;
        };
        if self.admit_remote(slot) {
            let _ = self.enqueue_shared(slot, payload);
            let _ = self.check_pause(slot);
        }
        self.close_victims();
    }

    fn broadcast_local(&mut self, payload: &Bytes) {
        for i in 0..self.open.len() {
            let slot = self.open[i] as usize;
            if self.admit_remote(slot) {
                let _ = self.enqueue_shared(slot, payload.clone());
            }
        }
        self.close_victims();
    }
}

impl<C: Codec> Outbound for Core<C> {
    fn send(&mut self, conn: ConnId, payload: &[u8]) -> Result<(), SendError> {
        if conn.shard() != self.index {
            if payload.len() > self.max_frame {
                return Err(SendError::TooLarge);
            }
            return self.send_bytes(conn, Bytes::copy_from_slice(payload));
        }
        let slot = self.live_slot(conn).ok_or(SendError::Closed)?;
        if self.slots[slot].queue.len() >= self.queue_limit {
            return Err(SendError::QueueFull);
        }
        // Sending (part of) the large message being handled, e.g. an echo:
        // queue the reassembly buffer by reference, no copy.
        if let Some(current) = &self.current_message {
            let within = current.as_ptr_range();
            let wanted = payload.as_ptr_range();
            if !payload.is_empty() && within.start <= wanted.start && wanted.end <= within.end {
                let shared = current.slice_ref(payload);
                return self.enqueue_shared(slot, shared);
            }
        }
        self.enqueue_copy(slot, payload)
    }

    fn send_bytes(&mut self, conn: ConnId, payload: Bytes) -> Result<(), SendError> {
        if conn.shard() != self.index {
            let shared = self.shared.clone();
            let shard = shared.check_live(conn)?;
            if payload.len() > self.max_frame {
                return Err(SendError::TooLarge);
            }
            return shared.command(shard, Command::Send { conn, payload });
        }
        let slot = self.live_slot(conn).ok_or(SendError::Closed)?;
        if self.slots[slot].queue.len() >= self.queue_limit {
            return Err(SendError::QueueFull);
        }
        self.enqueue_shared(slot, payload)
    }

    fn broadcast(&mut self, payload: &[u8]) -> Result<usize, SendError> {
        if payload.len() > self.max_frame {
            return Err(SendError::TooLarge);
        }
        let bytes = Bytes::copy_from_slice(payload);
        let here = self.open.len();
        self.broadcast_local(&bytes);
        let shared = self.shared.clone();
        for (i, shard) in shared.shards.iter().enumerate() {
            if i == self.index {
                continue;
            }
            let cmd = Command::Broadcast {
                payload: bytes.clone(),
            };
            if shared.command(shard, cmd).is_err() {
                self.stats.commands_dropped += 1;
            }
        }
        Ok(here)
    }

    fn close(&mut self, conn: ConnId) -> Result<(), SendError> {
        if conn.shard() != self.index {
            let shared = self.shared.clone();
            let shard = shared.check_live(conn)?;
            return shared.command(shard, Command::Close { conn });
        }
        let slot = self.live_slot(conn).ok_or(SendError::Closed)?;
        self.begin_close(slot, CloseReason::Local, true)
            .map_err(|_| SendError::Stopped)
    }

    fn shard_index(&self) -> usize {
        self.index
    }

    fn connection_count(&self) -> usize {
        self.open.len()
    }

    fn queued_bytes(&self, conn: ConnId) -> usize {
        self.live_slot(conn)
            .map_or(0, |slot| self.slots[slot].queue.len())
    }

    fn connect(&mut self, remote: SocketAddr, local: Option<SocketAddr>) -> Result<(), SendError> {
        if let Err(e) = self.start_connect(remote, local) {
            self.failed_connects.push((remote, e));
        }
        Ok(())
    }

    fn set_timer(&mut self, delay: Duration, token: u64) -> TimerId {
        self.timers.insert(Instant::now() + delay, token)
    }

    fn cancel_timer(&mut self, id: TimerId) -> bool {
        self.timers.cancel(id)
    }

    fn server(&self) -> &Arc<ServerShared> {
        &self.shared
    }
}

/// Runs the framer over `data`, calling the handler for every whole message
/// while the connection is open and its send queue below the high-water
/// mark. Returns how many bytes were consumed; the rest waits in the
/// backlog.
fn feed_frames<C: Codec, H: Handler>(
    core: &mut Core<C>,
    handler: &mut H,
    framer: &mut Framer<C>,
    state: &mut Option<H::ConnState>,
    conn: ConnId,
    data: &[u8],
) -> Result<usize, CodecError> {
    let Some(state) = state.as_mut() else {
        return Ok(data.len());
    };
    let slot = conn.slot() as usize;
    let high_water = core.high_water;
    framer.feed_shared(data, |message, shared| {
        core.stats.messages_in += 1;
        // A reassembled large message is owned `Bytes`: a send of (part
        // of) it queues it by reference instead of copying (see `send`).
        core.current_message = shared.cloned();
        let mut ctx = Context { core: &mut *core };
        handler.on_message(&mut ctx, conn, state, message);
        core.current_message = None;
        let s = &core.slots[slot];
        s.state == SlotState::Open && s.queue.len() < high_water
    })
}

/// Sets a boolean socket option to 1 on a direct descriptor (a setsockopt
/// cannot reach it; IORING_OP_URING_CMD can, Linux 6.7+).
fn int_option(fd: types::Fixed, level: libc::c_int, name: libc::c_int) -> io_uring::squeue::Entry {
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
