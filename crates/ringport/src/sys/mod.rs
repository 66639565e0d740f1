//! The operating-system boundary: the contract every backend fulfils.
//!
//! The engine (`crate::engine`) makes no system call. It asks for kernel
//! work with [`Op`]s and learns the outcome from [`Completion`]s; a backend
//! turns the one into the other. Two backends exist, one file tree each:
//!
//! - [`uring`]: io_uring (Linux 6.0+). Operations are submissions, their
//!   completions come from the completion queue: pre-posted accepts into
//!   direct descriptors, multishot receive from a provided buffer ring,
//!   vectored sends, asynchronous cancel and close.
//! - [`epoll`]: readiness (mio, edge-triggered epoll), for kernels and
//!   sandboxes where io_uring is missing or blocked. An operation is
//!   remembered; when its socket is ready the backend makes the system call
//!   (accept4, read, sendmsg, connect) and reports its result as the same
//!   completion io_uring would have produced.
//!
//! The contract, which the engine relies on and both backends keep:
//!
//! - **Slots.** A connection lives in a slot `0..capacity` of the shard's
//!   table. The backend picks the slot of a new connection (the kernel does
//!   for io_uring's direct descriptors) and reports it in
//!   [`Completion::Accepted`] or [`Completion::SocketCreated`]; a slot is
//!   free again after its [`Completion::Closed`]. The engine never has more
//!   slots in use plus accepts posted plus sockets requested than the
//!   capacity, so a backend never runs out of slots for what it was asked.
//! - **Tags.** Every per-connection op carries the slot's generation, and
//!   its completion carries it back, so a completion that outlives its
//!   connection is recognised.
//! - **One completion per op** (a direct receive, [`Op::RecvInto`], too),
//!   except: a receive is multishot (completions
//!   until one without `more`), a cancel or [`Op::WithdrawAccepts`] has no
//!   completion of its own (the cancelled op completes, with `ECANCELED` if
//!   it had not finished), and a cancel of an op that already completed does
//!   nothing.
//! - **Receive buffers** are lent by the backend: the bytes of a
//!   [`Completion::Recv`] stay readable through [`RecvBuffers::buffer`] until the
//!   engine hands the buffer back with [`Driver::release`], which it does
//!   before it asks for the next completion. Running out of buffers ends a
//!   receive with `-ENOBUFS` (not an end of stream); the engine re-arms it.
//! - **Send memory** belongs to the engine's send queue for the slot
//!   ([`SendQueues`]). From [`Op::Send`] until its [`Completion::Sent`], the
//!   engine neither frees nor rewrites the queued bytes the backend saw (it
//!   may append); a send may write fewer bytes than queued, and the result
//!   says how many.
//! - **Direct receive memory** belongs to the engine too: for
//!   [`Op::RecvInto`] the backend asks [`SendQueues::recv_target`] at submit
//!   time for the pointer and length the engine derived from a `&mut` (the
//!   spare capacity of the connection's reassembly buffer) and recorded when
//!   it asked for the op. From the op until its [`Completion::RecvInto`],
//!   the engine neither moves, frees, reads nor writes those bytes; the
//!   backend writes at most `len` bytes there and the result says how many.
//!   At most one receive (multishot or direct) is in flight per slot.
//! - **Close** is asked only when no op of the slot is in flight; the slot's
//!   socket is closed and the slot freed by the time [`Completion::Closed`]
//!   arrives.
//! - **Wake-up.** The backend watches the shard's eventfd and reports each
//!   wake-up as [`Completion::Woken`].
//! - **Order.** Ops are carried out in the order submitted.
//!
//! Results follow the kernel's convention: a non-negative value, or a
//! negated errno.

#[cfg(test)]
mod contract_tests;
pub(crate) mod epoll;
pub(crate) mod eventfd;
pub mod uring;

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use crate::send_queue::SendQueue;

/// Identifies a receive buffer lent by the backend.
pub(crate) type BufId = u32;

/// Kernel work the engine asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Op {
    /// Keep one more accept posted on the listener. Completes as
    /// [`Completion::Accepted`].
    Accept,
    /// Cancel every posted accept (each completes with `-ECANCELED`).
    WithdrawAccepts,
    /// The shard stops for good: close the listener once no accept is
    /// posted, so new clients are refused by the kernel instead of waiting.
    StopListening,
    /// Start receiving on a connection, until a completion without `more`.
    Recv { slot: u32, generation: u32 },
    /// End a receive early (its last completion then has no `more`).
    CancelRecv { slot: u32, generation: u32 },
    /// Receive once (at least one byte, or end of stream, or an error)
    /// straight into the engine's memory for `slot`, which the backend
    /// learns from [`SendQueues::recv_target`] when the op is submitted (no
    /// buffer of the backend, no copy). Completes as
    /// [`Completion::RecvInto`]. Used for the rest of a large frame.
    RecvInto { slot: u32, generation: u32 },
    /// Abandon a direct receive in flight (it completes with `-ECANCELED`
    /// or with what it received).
    CancelRecvInto { slot: u32, generation: u32 },
    /// Write from the connection's send queue (as much as the socket takes,
    /// at least one byte unless an error comes first).
    Send { slot: u32, generation: u32 },
    /// Abandon a send in flight (it completes with `-ECANCELED` or with
    /// what it wrote).
    CancelSend { slot: u32, generation: u32 },
    /// Abandon a connect in flight (it completes with `-ECANCELED` or its
    /// result).
    CancelConnect { slot: u32, generation: u32 },
    /// Close the socket in `slot` and free the slot.
    Close { slot: u32, generation: u32 },
    /// Create an outbound socket for pending connect `token`; completes as
    /// [`Completion::SocketCreated`] with the slot it was put in.
    Socket { token: u32, remote: SocketAddr },
    /// Connect the socket in `slot` (TCP_NODELAY best effort; bound to
    /// `local` first if given). Any failing step completes the connect
    /// with that step's error.
    Connect {
        slot: u32,
        generation: u32,
        remote: SocketAddr,
        local: Option<SocketAddr>,
    },
}

/// The outcome of an [`Op`], or an event of the backend itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Completion {
    /// An accept finished on listener `.0` (its index in the list the
    /// driver was given): the new connection's slot and peer, or an errno
    /// (the listener of a failed or withdrawn accept is not meaningful).
    Accepted(u8, Result<(u32, SocketAddr), i32>),
    /// Bytes received (`result > 0`, in `buf`), end of stream (`0`) or an
    /// error (`< 0`; `-ENOBUFS`: out of buffers, re-arm; `-ECANCELED`).
    /// Without `more`, the receive has ended and must be re-armed to go on.
    Recv {
        slot: u32,
        generation: u32,
        result: i32,
        buf: Option<BufId>,
        more: bool,
    },
    /// A direct receive ([`Op::RecvInto`]) ended: bytes written into the
    /// engine's target (`> 0`), end of stream (`0`) or an error (`< 0`,
    /// `-ECANCELED` if cancelled before any byte came).
    RecvInto {
        slot: u32,
        generation: u32,
        result: i32,
    },
    /// Bytes written from the front of the send queue, or an error.
    Sent {
        slot: u32,
        generation: u32,
        result: i32,
    },
    /// The slot's socket is closed and the slot free.
    Closed {
        slot: u32,
        generation: u32,
        result: i32,
    },
    /// The socket of pending connect `token` is in `slot` (`result >= 0`),
    /// or could not be created (`-errno`).
    SocketCreated { token: u32, result: i32 },
    /// The connect of `slot` finished: `0`, or the errno of the step that
    /// failed.
    Connected {
        slot: u32,
        generation: u32,
        result: i32,
    },
    /// The shard's eventfd was signalled.
    Woken,
}

/// Memory of the engine's that ops read from or write into: the send
/// queues, which [`Op::Send`] writes from, and the targets of direct
/// receives ([`Op::RecvInto`]).
pub(crate) trait SendQueues {
    fn send_queue(&self, slot: u32) -> &SendQueue;
    /// Where the direct receive the engine asked for on `slot` writes: the
    /// target it recorded with the op (`None` if it asked for none, a bug).
    fn recv_target(&self, slot: u32) -> Option<RecvTarget> {
        let _ = slot;
        None
    }
}

/// Engine memory a direct receive writes into: `len` bytes at `ptr`,
/// derived by the engine from a `&mut` when it asked for the op and left
/// alone (not moved, freed, read or written) until the op's completion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecvTarget {
    pub ptr: *mut u8,
    pub len: usize,
}

/// Received bytes lent by a backend (see the module doc).
pub(crate) trait RecvBuffers {
    /// The first `len` bytes of buffer `buf`.
    fn buffer(&self, buf: BufId, len: usize) -> &[u8];
}

/// A backend's per-shard instance (a driver): the shard's kernel interface,
/// used by that shard's thread only.
pub(crate) trait Driver: RecvBuffers {
    /// Carries out `op` (or queues it for the next [`Driver::wait`]).
    fn submit(&mut self, op: Op, queues: &dyn SendQueues) -> io::Result<()>;
    /// Makes submitted work visible to the kernel and waits until at least
    /// one completion is ready or `timeout` passes (zero: do not wait).
    /// Interruptions return `Ok`.
    fn wait(&mut self, timeout: Duration) -> io::Result<()>;
    /// The next ready completion, or `None` when this batch is done.
    fn next_completion(&mut self) -> Option<Completion>;
    /// Gives a receive buffer back.
    fn release(&mut self, buf: BufId);
    /// Called after a batch of completions (io_uring publishes released
    /// buffers to the kernel here, once).
    fn end_batch(&mut self) {}
    /// Called every few seconds: gives memory that recent traffic did not
    /// need back to the system (io_uring: the pages of receive buffers that
    /// stayed unused), so a shard returns to a small footprint after a
    /// burst.
    fn trim(&mut self) {}
    /// Releases what the kernel still references, before memory is freed.
    /// Called once, after the engine has finished (no connection open).
    fn teardown(&mut self);
    /// The shard failed (a handler panic, a driver error) with connections
    /// open: close the listener and every socket, so that peers see the
    /// end of the stream instead of hanging, without freeing memory that
    /// operations in flight may still use (the caller leaks the driver and
    /// the engine afterwards). Called at most once, instead of `teardown`.
    fn abandon(&mut self);
    /// What runs: `"io_uring (single_issuer+defer_taskrun)"`, `"epoll"`, ...
    fn describe(&self) -> &'static str;
}
