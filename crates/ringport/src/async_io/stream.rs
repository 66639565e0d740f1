//! The pull API as a [`Stream`]: [`EventServer::stream`].

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use crossbeam_channel::{Receiver, TryRecvError};
use futures_core::Stream;
use tokio::io::unix::AsyncFd;

use crate::events::{Event, EventServer};
use crate::wake::ConsumerWake;

/// The events of an [`EventServer`] as a [`Stream`]: every event, in the
/// order each shard produced it, ending (`None`) once the server has
/// stopped and every queued event was taken.
///
/// It reads the same bounded queue as [`EventServer::next_event`]: while
/// the consumer is slow, the queue fills and the shards wait for room
/// (their peers are held back by TCP flow control); nothing is dropped and
/// the server's memory stays bounded by `event_queue`. When the queue is
/// empty the task sleeps until a shard signals an eventfd registered with
/// tokio's reactor; a busy consumer takes events without any system call.
///
/// Do not await sends that wait for room ([`crate::Server::send_async`])
/// in the consuming task when the peers may pipeline without bound: a shard
/// waiting for room in the event queue drains no commands, and a consumer
/// waiting for room in the command queue takes no events. Spawn those
/// sends, or use [`crate::Server::send`] there.
pub struct EventStream {
    events: Receiver<Event>,
    wake: Arc<ConsumerWake>,
    fd: AsyncFd<WakeFd>,
}

/// The consumer wake-up's eventfd, as the reactor sees it. The descriptor
/// belongs to the [`ConsumerWake`] (which outlives this); `AsyncFd` only
/// registers it, and deregisters it when dropped.
struct WakeFd(Arc<ConsumerWake>);

impl AsRawFd for WakeFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.raw_fd()
    }
}

impl EventServer {
    /// The events as a [`Stream`] (feature `tokio`). Must be called inside
    /// a tokio runtime with I/O enabled; fails otherwise, or if another
    /// stream of this server is registered with the same runtime (one
    /// stream at a time per runtime). The stream does not borrow the
    /// server: it can move to another task.
    pub fn stream(&self) -> io::Result<EventStream> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(io::Error::other(
                "EventServer::stream must be called inside a tokio runtime",
            ));
        }
        // SAFETY: the eventfd is owned by the `ConsumerWake` that `WakeFd`
        // holds an `Arc` of, so it stays open, and `as_raw_fd` returns the
        // same descriptor, for as long as the `AsyncFd` lives.
        let registered = unsafe {
            AsyncFd::register_with_interest(
                WakeFd(self.wake.clone()),
                tokio::io::Interest::READABLE,
            )
        };
        let fd = registered.map_err(io::Error::from).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("event stream: registering its eventfd: {e} (one stream per runtime)"),
            )
        })?;
        Ok(EventStream {
            events: self.events.clone(),
            wake: self.wake.clone(),
            fd,
        })
    }
}

impl EventStream {
    /// The next event; `None` once the server has stopped. Cancel-safe: an
    /// event is taken only when this returns it.
    ///
    /// Available with the crate feature `tokio`.
    pub async fn next(&mut self) -> Option<Event> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// The next event if one is ready, without waiting.
    pub fn try_next(&self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// Events waiting in the queue.
    /// Events queued now, ready to be taken without waiting.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// True when no event is queued now.
    ///
    /// Available with the crate feature `tokio`.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    fn take(&self) -> Option<Poll<Option<Event>>> {
        match self.events.try_recv() {
            Ok(event) => Some(Poll::Ready(Some(event))),
            Err(TryRecvError::Disconnected) => Some(Poll::Ready(None)),
            // Closed after the last event was queued: look once more.
            Err(TryRecvError::Empty) if self.wake.is_closed() => {
                Some(Poll::Ready(self.events.try_recv().ok()))
            }
            Err(TryRecvError::Empty) => None,
        }
    }
}

impl Stream for EventStream {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        let this = self.get_mut();
        loop {
            if let Some(ready) = this.take() {
                return ready;
            }
            // Say we wait, then look again: an event queued in between is
            // either seen now or signalled on the eventfd.
            this.wake.announce();
            if let Some(ready) = this.take() {
                return ready;
            }
            let mut guard = match ready!(this.fd.poll_read_ready(cx)) {
                Ok(guard) => guard,
                // The reactor is gone (runtime shutting down).
                Err(_) => return Poll::Ready(None),
            };
            this.wake.drain();
            guard.clear_ready();
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.events.len(), None)
    }
}
