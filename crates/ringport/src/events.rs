//! The pull-style event API, as an adapter over [`Handler`]: a handler on
//! every shard forwards events into one bounded queue that the application
//! reads with [`EventServer::next_event`].

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender, TrySendError};

use crate::codec::Codec;
use crate::config::ServerConfig;
use crate::conn_id::ConnId;
use crate::error::CloseReason;
use crate::handler::{Context, Handler};
use crate::server::Server;
use crate::stats::Stats;
use crate::wake::ConsumerWake;

/// An event of the pull API.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A connection opened (accepted, or an outbound connect that
    /// succeeded; with TLS, once its handshake completed).
    Connected {
        /// Its id.
        conn: ConnId,
        /// The peer's address.
        peer: SocketAddr,
    },
    /// A whole message arrived.
    Message {
        /// The connection it came on.
        conn: ConnId,
        /// The message (owned; no longer tied to a receive buffer).
        bytes: Bytes,
    },
    /// A connection closed; its id is stale from now on.
    Closed {
        /// The connection that closed.
        conn: ConnId,
        /// Why it closed.
        reason: CloseReason,
    },
}

impl Server {
    /// Starts a server with the pull-style event API.
    pub fn start_events<C: Codec + Sync>(
        config: ServerConfig,
        codec: C,
    ) -> std::io::Result<EventServer> {
        let (tx, rx) = crossbeam_channel::bounded(config.event_queue);
        let stop_flag = Arc::new(AtomicBool::new(false));
        let flag = stop_flag.clone();
        let wake = Arc::new(ConsumerWake::new()?);
        let consumer = wake.clone();
        let server = Server::start(config, codec, move |_| {
            EventForwarder::new(tx.clone(), flag.clone(), consumer.clone())
        })?;
        Ok(EventServer {
            server: Some(server),
            events: rx,
            stop_flag,
            wake,
        })
    }
}

/// A server with the pull-style API: events are read with
/// [`EventServer::next_event`]; sends, broadcasts and closes go through the
/// [`Server`] it dereferences to.
///
/// Message events own a copy of the message. If the application stops
/// pulling, the event queue fills: the shards never wait for it (their
/// other connections and timers go on), but stop reading from the
/// connections whose events are waiting, so their peers are held back by
/// TCP flow control; nothing is dropped.
pub struct EventServer {
    /// Always `Some` until `stop` takes it.
    server: Option<Server>,
    pub(crate) events: Receiver<Event>,
    stop_flag: Arc<AtomicBool>,
    /// Wakes an async consumer (`EventServer::stream`, feature `tokio`).
    pub(crate) wake: Arc<ConsumerWake>,
}

impl EventServer {
    /// The next event, or `None` if none arrived within `timeout` or the
    /// server has stopped.
    pub fn next_event(&self, timeout: Duration) -> Option<Event> {
        self.events.recv_timeout(timeout).ok()
    }

    /// The next event if one is ready.
    pub fn try_next_event(&self) -> Option<Event> {
        self.events.try_recv().ok()
    }

    /// The underlying [`Server`] (send, broadcast, close, stats).
    pub fn server(&self) -> &Server {
        self.server.as_ref().expect("server present until stop")
    }

    /// How many events wait in the queue, not yet pulled (at most
    /// [`ServerConfig::event_queue`]; at that bound the shards wait).
    pub fn pending_events(&self) -> usize {
        self.events.len()
    }

    /// Stops the server (see [`Server::stop`]) and returns its final
    /// counters. Events not yet pulled are dropped.
    pub fn stop(mut self) -> Stats {
        self.stop_flag.store(true, Ordering::Release);
        let server = self.server.take().expect("server present until stop");
        let stats = server.stop();
        self.wake.close();
        stats
    }
}

impl Drop for EventServer {
    fn drop(&mut self) {
        // Shards waiting for room in a full event queue give up once this
        // is set, so the server's own drop (which joins them) cannot hang.
        self.stop_flag.store(true, Ordering::Release);
        // Stop first, then tell an async consumer that no event will come.
        drop(self.server.take());
        self.wake.close();
    }
}

impl std::ops::Deref for EventServer {
    type Target = Server;
    fn deref(&self) -> &Server {
        self.server()
    }
}

/// How often a forwarder whose events found the queue full tries again.
const RETRY: Duration = Duration::from_millis(1);

/// The handler behind [`EventServer`]: forwards each callback as an event.
/// It never blocks its shard: an event that finds the queue full waits in
/// this shard's overflow (in order: later events queue behind it), the
/// connection it came from stops being read, and a 1 ms timer tries again
/// until the overflow has drained, then reading resumes. The overflow holds
/// at most about one event per connection of the shard beyond what was
/// already received (reading of a paused connection stops after the
/// message being handled).
struct EventForwarder {
    events: Sender<Event>,
    stopping: Arc<AtomicBool>,
    wake: Arc<ConsumerWake>,
    overflow: VecDeque<Event>,
    /// Connections whose reading this forwarder paused.
    paused: Vec<ConnId>,
    retry_armed: bool,
}

impl EventForwarder {
    fn new(events: Sender<Event>, stopping: Arc<AtomicBool>, wake: Arc<ConsumerWake>) -> Self {
        EventForwarder {
            events,
            stopping,
            wake,
            overflow: VecDeque::new(),
            paused: Vec::new(),
            retry_armed: false,
        }
    }

    /// Forwards `event`, or keeps it (and pauses `from`) while the queue is
    /// full. Events are dropped once the server is stopping.
    fn push(&mut self, ctx: &mut Context<'_>, event: Event, from: Option<ConnId>) {
        if self.stopping.load(Ordering::Acquire) {
            return;
        }
        let event = if self.overflow.is_empty() {
            match self.events.try_send(event) {
                Ok(()) => {
                    self.wake.notify();
                    return;
                }
                Err(TrySendError::Full(event)) => event,
                Err(TrySendError::Disconnected(_)) => return,
            }
        } else {
            event
        };
        self.overflow.push_back(event);
        if let Some(conn) = from
            && ctx.pause_reading(conn).is_ok()
        {
            self.paused.push(conn);
        }
        if !self.retry_armed {
            ctx.set_timer(RETRY, 0);
            self.retry_armed = true;
        }
    }

    /// Moves the overflow into the queue while it has room; once all of it
    /// went, the paused connections are read again.
    fn drain(&mut self, ctx: &mut Context<'_>) {
        self.retry_armed = false;
        if self.stopping.load(Ordering::Acquire) {
            self.overflow.clear();
        }
        let mut sent = false;
        while let Some(event) = self.overflow.pop_front() {
            match self.events.try_send(event) {
                Ok(()) => sent = true,
                Err(TrySendError::Full(event)) => {
                    self.overflow.push_front(event);
                    break;
                }
                Err(TrySendError::Disconnected(_)) => self.overflow.clear(),
            }
        }
        if sent {
            self.wake.notify();
        }
        if self.overflow.is_empty() {
            for conn in self.paused.drain(..) {
                // A connection closed meanwhile is simply gone.
                let _ = ctx.resume_reading(conn);
            }
        } else {
            ctx.set_timer(RETRY, 0);
            self.retry_armed = true;
        }
    }
}

impl Handler for EventForwarder {
    type ConnState = ();

    fn on_connect(&mut self, ctx: &mut Context<'_>, conn: ConnId, peer: SocketAddr) {
        self.push(ctx, Event::Connected { conn, peer }, Some(conn));
    }

    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: &mut (), message: &[u8]) {
        let event = Event::Message {
            conn,
            bytes: Bytes::copy_from_slice(message),
        };
        self.push(ctx, event, Some(conn));
    }

    fn on_timer(&mut self, ctx: &mut Context<'_>, _: u64) {
        self.drain(ctx);
    }

    fn on_close(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: (), reason: CloseReason) {
        self.push(ctx, Event::Closed { conn, reason }, None);
    }
}
