//! The portable engine: one shard's connections as a state machine that
//! makes no system call and takes the time as an argument.
//!
//! The engine asks for kernel work by pushing [`Op`]s and is told the
//! outcome through [`Engine::complete`]; a driver of either backend
//! (`crate::sys`) carries the ops out, and the shard thread
//! (`crate::shard`) moves ops and completions between the two. Because
//! nothing here touches the kernel or the clock, the engine is tested with
//! scripted completions and virtual time (`tests.rs`).
//!
//! - [`conn`]: the slot life cycle (open, the close protocol, release) and
//!   generations;
//! - [`input`]: receiving, framing, the backlog of a paused connection;
//! - [`direct`]: the rest of a large frame received straight into its
//!   reassembly buffer;
//! - [`output`]: send queues, flushes, slow consumers, broadcast, and the
//!   operations a handler's [`Context`] offers;
//! - [`admission`]: accepts, outbound connects, the connection limit;
//! - [`timers`]: handler timers, idle timeouts, heartbeats, flush deadlines,
//!   stop;
//! - [`outbox`]: what leaves the engine besides kernel work: commands for
//!   other shards, wake-ups, cluster traffic (the shard loop hands them on).
//!
//! Core owns parts that keep their own fields and bookkeeping, with unit
//! tests beside them, and applies what they decide: [`clock`] (explicit
//! time, the tick), [`sweeps`] (pacing and verdicts of the
//! idle/heartbeat/frame-timeout sweep), [`accepts`] (accepts kept posted,
//! the wait queue at the limit), [`connects`] (outbound connects until
//! open), [`inputs`] (input states, their pool, the input bounds),
//! [`closes`] (reason and flush deadline of closing connections),
//! [`topics`], [`rate`], [`protocols`], [`handshake`] and [`outbox`].
//!
//! The engine is sans-I/O: commands from other threads enter through
//! [`Engine::handle_commands`] from an [`Inbox`] the shard loop provides;
//! nothing here writes an eventfd, takes a lock, receives from a channel or
//! reads the clock.

mod accepts;
mod admission;
#[cfg(test)]
mod bench_echo;
mod clock;
mod closes;
mod conn;
mod connects;
mod direct;
#[cfg(test)]
mod direct_tests;
#[cfg(test)]
mod framed_seam_tests;
mod handshake;
mod handshakes;
mod input;
mod inputs;
#[cfg(test)]
mod limit_tests;
#[cfg(test)]
mod memory_tests;
#[cfg(test)]
mod multi_tests;
pub(crate) mod outbox;
mod output;
mod paged;
mod protocol_states;
#[cfg(test)]
mod protocol_tests;
mod protocols;
mod rate;
mod receives;
mod scratch;
mod screening;
mod sends;
#[cfg(test)]
mod sim;
mod sweeps;
mod table;
#[cfg(test)]
mod tests;
mod timers;
pub mod topics;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::codec::Codec;
use crate::conn_id::ConnId;
use crate::error::CloseReason;
use crate::handler::{Context, Handler};
use crate::send_queue::SendQueue;
use crate::shared::{Command, ServerShared, ShardShared};
use crate::stats::Stats;
use crate::sys::{Completion, Op, RecvBuffers, RecvTarget, SendQueues};
use crate::timer::Timers;

use clock::Clock;
use outbox::Outbox;
use paged::PagedTable;

/// Where the engine takes commands from other threads: the shard's
/// command queue in the shard loop, a list in tests.
pub(crate) trait Inbox {
    /// The next command, if any.
    fn next_command(&mut self) -> Option<Command>;
}

impl Inbox for std::collections::VecDeque<Command> {
    fn next_command(&mut self) -> Option<Command> {
        self.pop_front()
    }
}

/// Commands handled per loop turn, so a flood of commands cannot starve
/// completions.
const COMMANDS_PER_TURN: usize = 4096;

/// Everything of a shard's engine except the handler and its
/// per-connection states (kept apart so that the handler and its
/// `Context`, borrowing the core, can coexist).
///
/// The per-slot tables are [`PagedTable`]s: memory for a slot is taken
/// when the slot is first used, so an idle shard with a large table costs
/// next to nothing.
pub(crate) struct Core<C: Codec> {
    index: usize,
    shared: Arc<ServerShared>,
    codec: C,
    max_frame: usize,
    /// The connection slots, the open ones and how many are taken.
    conns: table::ConnTable,
    /// Input states (framer, backlog, frame timing) of the connections
    /// that have a partial frame or paused input, their pool, the frame
    /// buffer pool and the input bounds.
    inputs: inputs::Inputs<C>,
    /// Receives to post again, connections to resume or held by the
    /// outbox, bulk receives posted, the message being handled.
    receives: receives::Receives,
    /// Send queues' pool, connections to send for, queue bounds, slow
    /// consumers to close.
    sends: sends::Sends,
    /// Close reason and flush deadline of every closing slot, from
    /// `begin_close` until the slot is free.
    closes: closes::Closes,
    stats: Stats,
    /// Accepts kept posted, their back-off, and the clients held at the
    /// global limit.
    accepts: accepts::Accepts,
    stopping: bool,
    /// The explicit time of the current step and the tick's pacing.
    clock: Clock,
    timers: Timers,
    /// The idle/heartbeat/frame-timeout sweep's settings and pacing.
    sweeps: sweeps::Sweeps,
    /// Outbound connects until they are open, and those that failed, to
    /// report to the handler.
    connects: connects::Connects,
    /// Kernel work asked for and not yet handed to the driver.
    ops: Vec<Op>,
    /// Topic -> this shard's subscribers.
    topics: topics::TopicIndex,
    /// Commands for other shards, wake-ups and cluster traffic, for the
    /// shard loop to hand on.
    outbox: Outbox,
    /// Connections in their transport's handshake.
    handshakes: handshakes::Handshakes,
    /// Listener addresses for the accept filter, refusals to log.
    screening: screening::Screening,
    /// The message rate limit's buckets (`rate`).
    rate: rate::Rates,
    /// Connections with a protocol of their own (not the framed codec).
    protocols: protocol_states::Protocols,
}

/// A shard's engine: the core plus the handler and per-connection input
/// state.
pub(crate) struct Engine<C: Codec, H: Handler> {
    core: Core<C>,
    states: PagedTable<Option<H::ConnState>>,
    handler: H,
}

impl<C: Codec, H: Handler> Engine<C, H> {
    /// An engine for shard `index` with `table` slots. `listening`: the
    /// driver has a listener to accept from.
    pub fn new(
        index: usize,
        shared: Arc<ServerShared>,
        codec: C,
        table: usize,
        handler: H,
        listening: bool,
        now: Instant,
    ) -> Self {
        let config = &shared.config;
        let max_frame = codec.max_frame();
        let core = Core {
            index,
            codec: codec.clone(),
            max_frame,
            conns: table::ConnTable::new(index, table),
            inputs: inputs::Inputs::new(codec.clone(), table, config),
            receives: receives::Receives::default(),
            sends: sends::Sends::new(config, max_frame),
            closes: closes::Closes::default(),
            stats: Stats::default(),
            accepts: accepts::Accepts::new(listening, config.accepts_in_flight),
            stopping: false,
            clock: Clock::new(now, config.tick),
            timers: Timers::default(),
            sweeps: sweeps::Sweeps::new(config),
            connects: connects::Connects::default(),
            ops: Vec::with_capacity(1024),
            topics: topics::TopicIndex::default(),
            outbox: Outbox::new(index, shared.shards.len(), config.command_queue),
            handshakes: handshakes::Handshakes::new(config.max_handshakes_per_shard),
            screening: screening::Screening::default(),
            rate: rate::Rates::new(config.max_message_rate, table),
            protocols: protocol_states::Protocols::new(Vec::new(), 0),
            shared,
        };
        Engine {
            core,
            states: PagedTable::new(table),
            handler,
        }
    }

    /// Gives the listeners their protocols (by listener index; `None`:
    /// the framed codec).
    pub fn with_protocols(
        mut self,
        listeners: Vec<Option<Arc<dyn crate::protocol::ListenerProtocol>>>,
    ) -> Self {
        let table = self.core.conns.len();
        self.core.protocols = protocol_states::Protocols::new(listeners, table);
        self
    }

    /// Sets the engine's clock (the shard reads the real one; tests pass
    /// virtual time).
    pub fn set_now(&mut self, now: Instant) {
        self.core.clock.set_now(now);
    }

    /// [`Self::turn_with`] with the commands waiting in the shard's queue
    /// (tests: the shard loop does this with its own inbox).
    #[cfg(test)]
    pub fn turn(&mut self, now: Instant) {
        let shared = self.core.shared.clone();
        let mut inbox = tests::QueueInbox(&shared.shards[self.core.index]);
        self.turn_with(now, &mut inbox);
    }

    /// The work of one loop turn before waiting: the tick and due timers,
    /// a stop request, commands from other threads (from `inbox`), then
    /// sends, receives and accepts to (re)start.
    pub fn turn_with(&mut self, now: Instant, inbox: &mut impl Inbox) {
        self.core.clock.set_now(now);
        if self.core.clock.tick_due() {
            self.core.on_tick();
            self.close_stalled_frames();
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
        self.core.observe_stop();
        self.handle_commands(inbox);
        self.resume_after_outbox();
        self.core.resume_rate_held();
        self.admit_waiting();
        self.replay_resumed();
        self.core.flush_dirty();
        self.core.rearm_recvs();
        self.core.post_accepts();
        self.core.publish_stats();
    }

    /// When the engine next needs a turn without any completion: the next
    /// tick or handler timer.
    pub fn next_wake(&mut self) -> Instant {
        let next_tick = self.core.clock.next_tick();
        let next = match self.core.timers.next_deadline() {
            Some(t) => t.min(next_tick),
            None => next_tick,
        };
        match self.core.rate.next_deadline(self.core.clock.epoch()) {
            Some(t) => t.min(next),
            None => next,
        }
    }

    /// Stopping, and nothing left open, posted or pending.
    pub fn finished(&self) -> bool {
        self.core.finished()
    }

    /// Hands the ops asked for since the last call to `submit`, in order.
    /// `submit` sees the send queues, which [`Op::Send`] writes from.
    pub fn drain_ops<E>(
        &mut self,
        mut submit: impl FnMut(Op, &dyn SendQueues) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut ops = std::mem::take(&mut self.core.ops);
        let mut result = Ok(());
        for op in ops.drain(..) {
            if result.is_ok() {
                result = submit(op, &self.core);
            }
        }
        self.core.ops = ops;
        result
    }

    /// What the engine has for other shards, other nodes and wake-ups: the
    /// shard loop hands it on after each step.
    pub fn outbox_mut(&mut self) -> &mut Outbox {
        &mut self.core.outbox
    }

    /// The shard has stopped: commands still waiting in the outbox for a
    /// full queue of another shard are dropped and counted
    /// (`commands_dropped`).
    pub fn discard_outbox(&mut self) {
        let n = self.core.outbox.discard();
        self.core.stats.commands_dropped += n as u64;
    }

    /// Frees memory that recent traffic did not need (spare send chunks,
    /// kept frame buffers); the shard calls it every few seconds.
    pub fn trim(&mut self) {
        self.core.sends.pool().trim_chunks();
        self.core.inputs.frame_pool().trim();
    }

    /// Publishes the counters now (also done every turn).
    pub fn publish_stats(&mut self) {
        self.core.publish_stats();
    }

    /// Handles one completion. Received bytes are read from `bufs`; the
    /// caller gives the buffer back to its driver afterwards.
    pub fn complete(&mut self, completion: Completion, bufs: &(impl RecvBuffers + ?Sized)) {
        match completion {
            Completion::Accepted(listener, result) => {
                if let Some((conn, peer)) = self.core.on_accept(listener, result) {
                    self.opened(conn, peer);
                }
            }
            Completion::Recv {
                slot,
                generation,
                result,
                buf,
                more,
            } => self.on_recv(slot, generation, result, buf, more, bufs),
            Completion::RecvInto {
                slot,
                generation,
                result,
            } => self.on_recv_into(slot, generation, result),
            Completion::Sent {
                slot,
                generation,
                result,
            } => {
                self.core.on_send(slot, generation, result);
                self.replay_resumed();
            }
            Completion::Closed {
                slot,
                generation,
                result,
            } => self.on_closed(slot, generation, result),
            Completion::SocketCreated { token, result } => self.core.on_socket(token, result),
            Completion::Connected {
                slot,
                generation,
                result,
            } => {
                if let Some((conn, peer)) = self.core.on_connect(slot, generation, result) {
                    self.opened(conn, peer);
                }
            }
            // The shard loop takes the commands of a wake-up itself
            // (`handle_commands`) before the rest of the wait's completions.
            Completion::Woken => {}
        }
        self.report_failed_connects();
    }

    /// Handles up to a turn's worth of commands from `inbox`; returns how
    /// many.
    pub fn handle_commands(&mut self, inbox: &mut impl Inbox) -> usize {
        let mut handled = 0;
        while handled < COMMANDS_PER_TURN {
            let Some(cmd) = inbox.next_command() else {
                break;
            };
            handled += 1;
            self.handle_command(cmd);
        }
        self.report_failed_connects();
        handled
    }

    /// Handles one command from another thread or shard.
    pub fn handle_command(&mut self, cmd: Command) {
        {
            match cmd {
                Command::Send {
                    conn,
                    kind,
                    payload,
                } => self.core.send_from_elsewhere(conn, kind, payload),
                Command::Broadcast { kind, payload } => self.core.broadcast_local(kind, &payload),
                Command::Publish { topic, payload } => {
                    self.core.publish_local(&topic, &payload);
                }
                Command::Undeliverable { from, to, error } => {
                    if self.core.live_slot(from).is_some() {
                        let mut ctx = Context {
                            core: &mut self.core,
                        };
                        self.handler.on_undeliverable(&mut ctx, from, to, error);
                    }
                }
                Command::Close { conn } => {
                    if let Some(slot) = self.core.live_slot(conn) {
                        self.core.begin_close(slot, CloseReason::Local, true);
                    }
                }
                Command::Connect { remote, local } => {
                    self.core
                        .start_connect(remote, local, crate::transport::ClientSetup::default())
                }
                Command::Run(f) => {
                    let mut ctx = Context {
                        core: &mut self.core,
                    };
                    f(&mut ctx);
                }
            }
        }
    }

    /// Resumes reading from the connections paused for a full outbox once
    /// it has drained below a quarter of its bound.
    fn resume_after_outbox(&mut self) {
        let core = &mut self.core;
        if !core.receives.any_held_by_outbox() || core.outbox.held() > core.outbox.limit() / 4 {
            return;
        }
        for slot in core.receives.release_outbox_held() {
            let slot = slot as usize;
            core.conns[slot].set_held_by_outbox(false);
            core.resume_reading_if_free(slot);
        }
    }

    fn report_failed_connects(&mut self) {
        while let Some((remote, error)) = self.core.connects.next_failed() {
            let mut ctx = Context {
                core: &mut self.core,
            };
            self.handler.on_connect_failed(&mut ctx, remote, error);
        }
    }

    /// A connection (accepted or outbound) is open: let the handler create
    /// its state.
    pub(super) fn opened(&mut self, conn: ConnId, peer: SocketAddr) {
        tracing::debug!(%conn, %peer, "connection open");
        // A connection whose transport has a handshake is shown to the
        // handler after it.
        if self.start_handshake(conn.slot() as usize) {
            return;
        }
        self.connected(conn, peer);
    }

    /// The handler hears of a connection and creates its state.
    fn connected(&mut self, conn: ConnId, peer: SocketAddr) {
        // A protocol with an opening handshake shows the connection after
        // it (`protocols::read_protocol`).
        if self.core.upgrading(conn.slot() as usize) {
            // Its opening takes a handshake place until it is decided.
            self.core.enter_handshake(conn.slot() as usize);
            return;
        }
        let mut ctx = Context {
            core: &mut self.core,
        };
        let state = self.handler.on_connect(&mut ctx, conn, peer);
        self.states[conn.slot() as usize] = Some(state);
    }

    /// The close of a slot completed: free its input state and tell the
    /// handler.
    fn on_closed(&mut self, slot: u32, generation: u32, result: i32) {
        let slot = slot as usize;
        if result < 0 {
            tracing::warn!(slot, errno = -result, "closing a socket failed");
        }
        let Some((conn, reason)) = self.core.on_closed(slot, generation) else {
            return;
        };
        log_close(conn, &reason);
        let held = self.core.held(slot);
        self.core.stats.reassembly_bytes = self.core.stats.reassembly_bytes.saturating_sub(held);
        // A partial frame's state is dropped (its codec may hold scan
        // state of that frame): pooled states are always between frames.
        self.core.inputs.forget(slot);
        if let Some(state) = self
            .states
            .get_mut_if_allocated(slot)
            .and_then(Option::take)
        {
            let mut ctx = Context {
                core: &mut self.core,
            };
            self.handler.on_close(&mut ctx, conn, state, reason);
        }
    }
}

/// Connection closes in the log: debug for the ordinary ones, info for
/// those that say something about the peer or the server's limits.
fn log_close(conn: ConnId, reason: &CloseReason) {
    match reason {
        CloseReason::PeerClosed | CloseReason::Local | CloseReason::ServerStopping => {
            tracing::debug!(%conn, ?reason, "connection closed")
        }
        CloseReason::Reset(errno) => {
            tracing::debug!(%conn, error = %std::io::Error::from_raw_os_error(*errno), "connection reset")
        }
        _ => tracing::info!(%conn, ?reason, "connection closed"),
    }
}

impl<C: Codec> Core<C> {
    fn me(&self) -> &ShardShared {
        &self.shared.shards[self.index]
    }

    fn publish_stats(&mut self) {
        self.stats.connections = self.conns.open_count() as u64;
        self.stats.timers = self.timers.len() as u64;
        self.stats.waiting = self.accepts.waiting() as u64;
        self.stats.frame_pool_bytes = self.inputs.frame_pool().kept_bytes() as u64;
        let me = &self.shared.shards[self.index];
        me.counters.publish(&self.stats);
    }

    fn finished(&self) -> bool {
        self.stopping
            && self.conns.in_use() == 0
            && self.accepts.posted() == 0
            && self.connects.pending() == 0
    }
}

impl<C: Codec> SendQueues for Core<C> {
    fn send_queue(&self, slot: u32) -> &SendQueue {
        &self.conns[slot as usize].queue
    }

    fn recv_target(&self, slot: u32) -> Option<RecvTarget> {
        self.direct_target(slot as usize)
    }
}
