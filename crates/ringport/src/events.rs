//! The pull-style event API, as an adapter over [`Handler`]: a handler on
//! every shard forwards events into one bounded queue that the application
//! reads with [`EventServer::next_event`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};

use crate::codec::Codec;
use crate::config::ServerConfig;
use crate::conn_id::ConnId;
use crate::handler::{CloseReason, Context, Handler};
use crate::server::Server;
use crate::stats::Stats;
use crate::wake::ConsumerWake;

/// An event of the pull API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Connected { conn: ConnId, peer: SocketAddr },
    Message { conn: ConnId, bytes: Bytes },
    Closed { conn: ConnId, reason: CloseReason },
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
        let server = Server::start(config, codec, move |_| EventForwarder {
            events: tx.clone(),
            stopping: flag.clone(),
            wake: consumer.clone(),
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
/// pulling, the event queue fills and the shards wait for it (their peers
/// are then held back by TCP flow control); nothing is dropped.
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

struct EventForwarder {
    events: Sender<Event>,
    stopping: Arc<AtomicBool>,
    wake: Arc<ConsumerWake>,
}

impl EventForwarder {
    /// Waits for room in the event queue (backpressure to this shard's
    /// peers) unless the server is stopping.
    fn push(&self, mut event: Event) {
        loop {
            match self.events.send_timeout(event, Duration::from_millis(20)) {
                Ok(()) => {
                    self.wake.notify();
                    return;
                }
                Err(crossbeam_channel::SendTimeoutError::Timeout(e)) => {
                    if self.stopping.load(Ordering::Acquire) {
                        return;
                    }
                    event = e;
                }
                Err(crossbeam_channel::SendTimeoutError::Disconnected(_)) => return,
            }
        }
    }
}

impl Handler for EventForwarder {
    type ConnState = ();

    fn on_connect(&mut self, _: &mut Context<'_>, conn: ConnId, peer: SocketAddr) {
        self.push(Event::Connected { conn, peer });
    }

    fn on_message(&mut self, _: &mut Context<'_>, conn: ConnId, _: &mut (), message: &[u8]) {
        self.push(Event::Message {
            conn,
            bytes: Bytes::copy_from_slice(message),
        });
    }

    fn on_close(&mut self, _: &mut Context<'_>, conn: ConnId, _: (), reason: CloseReason) {
        self.push(Event::Closed { conn, reason });
    }
}
