//! Sends that wait for room instead of failing with `Busy` or
//! `QueueFull`: [`Server::send_async`], [`Server::broadcast_async`] and the
//! cloneable [`AsyncSender`] behind them.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll, Waker};

use bytes::Bytes;

use super::CommandSlot;
use crate::conn_id::ConnId;
use crate::error::SendError;
use crate::handler::Context;
use crate::router::{self, FromThread};
use crate::server::Server;
use crate::shared::{Command, ServerShared};

impl Server {
    /// Queues one message to `conn`, waiting while the shard's command
    /// queue or the connection's send queue is full (feature `tokio`; works
    /// on any executor). Resolves once the whole message is queued on the
    /// connection, or with `Closed` (the connection closed first),
    /// `TooLarge` or `Stopped`; never with `Busy` or `QueueFull`.
    ///
    /// Cancel-safe: a future dropped before it resolved sends nothing or
    /// the whole message, never part of it. Messages awaited one after the
    /// other reach the connection in that order.
    pub fn send_async(&self, conn: ConnId, payload: impl Into<Bytes>) -> SendFuture {
        SendFuture::new(self.shared().clone(), conn, payload.into())
    }

    /// Queues one message to every open connection of every shard and, in
    /// a cluster, of every other node, as [`Server::broadcast`] does, but
    /// waits while a shard's command queue is full instead of failing with
    /// `Busy`. Connections whose send queue is full are handled by the
    /// slow-consumer policy. All or nothing: a future dropped before it
    /// resolved reached no shard.
    ///
    /// Available with the crate feature `tokio`.
    pub fn broadcast_async(&self, payload: impl Into<Bytes>) -> BroadcastFuture {
        BroadcastFuture::new(self.shared().clone(), payload.into())
    }

    /// A cloneable, `'static` handle for [`AsyncSender::send`] and
    /// [`AsyncSender::broadcast`] from other tasks.
    pub fn async_sender(&self) -> AsyncSender {
        AsyncSender {
            shared: self.shared().clone(),
        }
    }
}

/// Sends to a server's connections from any task; see
/// [`Server::send_async`]. Cheap to clone; keeps no thread alive (sends
/// after the server stopped fail with `Stopped`).
#[derive(Clone)]
pub struct AsyncSender {
    shared: Arc<ServerShared>,
}

impl AsyncSender {
    /// As [`Server::send_async`].
    ///
    /// Available with the crate feature `tokio`.
    pub fn send(&self, conn: ConnId, payload: impl Into<Bytes>) -> SendFuture {
        SendFuture::new(self.shared.clone(), conn, payload.into())
    }

    /// As [`Server::broadcast_async`].
    pub fn broadcast(&self, payload: impl Into<Bytes>) -> BroadcastFuture {
        BroadcastFuture::new(self.shared.clone(), payload.into())
    }
}

/// A message between the future and the shard. Whoever changes it holds
/// the lock, so the shard's "queue it" and the future's "drop it" cannot
/// both happen: that is the cancel safety.
struct Handoff {
    payload: Option<Bytes>,
    outcome: Option<Outcome>,
    waker: Option<Waker>,
    cancelled: bool,
}

enum Outcome {
    /// Queued (`Ok`) or refused for good.
    Done(Result<(), SendError>),
    /// The send queue was full; the shard woke us once a send completed.
    Full,
}

type Shared = Arc<Mutex<Handoff>>;

fn lock(h: &Shared) -> MutexGuard<'_, Handoff> {
    h.lock().unwrap_or_else(|e| e.into_inner())
}

/// The future of [`Server::send_async`].
#[must_use = "futures do nothing unless awaited"]
pub struct SendFuture {
    shared: Arc<ServerShared>,
    conn: ConnId,
    handoff: Shared,
    /// The shard's command in flight, or `None` before the first poll and
    /// after the shard answered.
    slot: Option<CommandSlot>,
    /// Submitted and not yet answered.
    submitted: bool,
    done: bool,
}

impl SendFuture {
    fn new(shared: Arc<ServerShared>, conn: ConnId, payload: Bytes) -> Self {
        let early = if payload.len() > shared.max_frame {
            Some(SendError::TooLarge)
        } else {
            shared.check_live(conn).err()
        };
        SendFuture {
            shared,
            conn,
            handoff: Arc::new(Mutex::new(Handoff {
                payload: Some(payload),
                outcome: early.map(|e| Outcome::Done(Err(e))),
                waker: None,
                cancelled: false,
            })),
            slot: None,
            submitted: false,
            done: false,
        }
    }

    /// The command that runs on the connection's shard: queue the message
    /// there (as a handler's `send_bytes`: `QueueFull` at the bound, not the
    /// slow-consumer policy), or say the queue is full and wait for a send
    /// to complete.
    fn command(&self) -> Command {
        let handoff = Arc::clone(&self.handoff);
        let server = Arc::clone(&self.shared);
        let conn = self.conn;
        let guard = Unanswered(Some(handoff));
        Command::Run(Box::new(move |ctx: &mut Context<'_>| {
            let mut guard = guard;
            let handoff = guard.0.take().expect("answered once");
            let mut h = lock(&handoff);
            if h.cancelled {
                return;
            }
            let Some(payload) = h.payload.clone() else {
                return;
            };
            match ctx.send_bytes(conn, payload) {
                Err(SendError::QueueFull) => {
                    h.outcome = Some(Outcome::Full);
                    if let Some(waker) = &h.waker {
                        server.shards[ctx.shard()].space.register(waker);
                    }
                }
                result => {
                    h.payload = None;
                    h.outcome = Some(Outcome::Done(result));
                    let waker = h.waker.take();
                    // Woken after the lock is released: the task may run
                    // at once on another thread and take it.
                    drop(h);
                    if let Some(waker) = waker {
                        waker.wake();
                    }
                }
            }
        }))
    }
}

/// Answers `Stopped` if the shard drops the command without running it
/// (the server stopped), so the future does not wait for ever.
struct Unanswered(Option<Shared>);

impl Drop for Unanswered {
    fn drop(&mut self) {
        if let Some(handoff) = self.0.take() {
            let mut h = lock(&handoff);
            if h.outcome.is_none() {
                h.outcome = Some(Outcome::Done(Err(SendError::Stopped)));
            }
            if let Some(waker) = h.waker.take() {
                waker.wake();
            }
        }
    }
}

impl Future for SendFuture {
    type Output = Result<(), SendError>;

    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(Err(SendError::Stopped));
        }
        {
            let mut h = lock(&this.handoff);
            match h.outcome.take() {
                Some(Outcome::Done(result)) => {
                    this.done = true;
                    return Poll::Ready(result);
                }
                // Woken after a send completed: try again.
                Some(Outcome::Full) => this.submitted = false,
                None => {}
            }
            match &h.waker {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => h.waker = Some(cx.waker().clone()),
            }
        }
        if this.submitted {
            return Poll::Pending;
        }
        if let Err(e) = this.shared.shard_of(this.conn) {
            this.done = true;
            return Poll::Ready(Err(e));
        }
        let shard = this.conn.shard();
        if this.slot.is_none() {
            this.slot = Some(CommandSlot::new(this.command()));
        }
        let slot = this.slot.as_mut().expect("just set");
        match slot.poll(cx, &this.shared, shard) {
            Poll::Ready(Ok(())) => {
                this.slot = None;
                this.submitted = true;
                Poll::Pending
            }
            Poll::Ready(Err(e)) => {
                this.done = true;
                Poll::Ready(Err(e))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for SendFuture {
    fn drop(&mut self) {
        // Under the lock: either the shard already queued the whole
        // message, or it will find `cancelled` and queue nothing.
        let mut h = lock(&self.handoff);
        h.cancelled = true;
        h.payload = None;
        h.waker = None;
    }
}

/// The future of [`Server::broadcast_async`].
#[must_use = "futures do nothing unless awaited"]
pub struct BroadcastFuture {
    shared: Arc<ServerShared>,
    payload: Bytes,
    /// Registered for room in the shard that was full, then found it still
    /// full: wait for the wake-up.
    registered: bool,
    result: Option<Result<(), SendError>>,
}

impl BroadcastFuture {
    fn new(shared: Arc<ServerShared>, payload: Bytes) -> Self {
        let result = (payload.len() > shared.max_frame).then_some(Err(SendError::TooLarge));
        BroadcastFuture {
            shared,
            payload,
            registered: false,
            result,
        }
    }
}

impl Future for BroadcastFuture {
    type Output = Result<(), SendError>;

    /// The broadcast goes through the router from this thread: all shards
    /// or none, then the other nodes. While a shard's queue is full it
    /// waits for that shard to make room, and tries again; so a dropped
    /// future has sent the whole broadcast or nothing.
    fn poll(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if let Some(result) = this.result {
            return Poll::Ready(result);
        }
        loop {
            let mut d = FromThread::default();
            match router::broadcast(&this.shared, &mut d, &this.payload) {
                Err(SendError::Busy) => {
                    let full = d.full.expect("a full shard made it busy");
                    if this.registered {
                        this.registered = false;
                        return Poll::Pending;
                    }
                    // Announce, then try once more: room made between the
                    // try and the registration is not missed.
                    this.shared.shards[full].space.register(cx.waker());
                    this.registered = true;
                }
                result => {
                    this.result = Some(result);
                    return Poll::Ready(result);
                }
            }
        }
    }
}
