//! ringport from async Rust (feature `tokio`): the pull API as a
//! [`futures_core::Stream`], sends that wait for room instead of failing,
//! async work from handlers, an async client and tokio-util codec adapters.
//!
//! The shards stay plain threads; these pieces only meet them at their
//! queues:
//! - [`EventStream`] ([`crate::EventServer::stream`]): the event queue,
//!   its consumer woken through an eventfd registered with tokio's
//!   `AsyncFd` (no polling thread). Same bounded queue and no-loss
//!   backpressure as [`crate::EventServer::next_event`].
//! - [`AsyncSender`] ([`crate::Server::send_async`],
//!   [`crate::Server::broadcast_async`]): a send waits for room in the
//!   shard's command queue and then in the connection's send queue; a
//!   dropped future sends the whole message or nothing.
//! - [`crate::Context::spawn`]: a future on a tokio runtime, its output
//!   handed back to the connection's shard (like [`crate::Context::offload`]).
//! - [`AsyncClient`] and [`FrameCodec`]: ringport's codecs over tokio
//!   sockets; with the feature `websocket`, `ws://` and `wss://`
//!   connections too ([`AsyncClient::ws`]).

mod client;
#[cfg(feature = "websocket")]
mod client_ws;
mod codec;
mod send;
mod spawn;
mod stream;

pub use client::AsyncClient;
pub use codec::FrameCodec;
pub use send::{AsyncSender, BroadcastFuture, SendFuture};
pub use stream::EventStream;

use crate::error::SendError;
use crate::router;
use crate::shared::{Command, ServerShared};

/// Queues `cmd` on `shard`, waiting for room in its command queue: the
/// state of a future that must not lose its command while it waits.
pub(crate) struct CommandSlot {
    cmd: Option<Command>,
    registered: bool,
}

impl CommandSlot {
    pub fn new(cmd: Command) -> Self {
        CommandSlot {
            cmd: Some(cmd),
            registered: false,
        }
    }

    /// `Ready(Ok)` once queued; `Pending` while the queue is full (woken
    /// when the shard has drained it); `Ready(Err)` if the server stopped.
    /// Once queued, polling again returns `Ready(Ok)`.
    pub fn poll(
        &mut self,
        cx: &mut std::task::Context<'_>,
        shared: &ServerShared,
        index: usize,
    ) -> std::task::Poll<Result<(), SendError>> {
        let shard = &shared.shards[index];
        use std::task::Poll;
        loop {
            let Some(cmd) = self.cmd.take() else {
                return Poll::Ready(Ok(()));
            };
            match router::thread::try_command(shared, index, cmd) {
                Ok(()) => {
                    self.registered = false;
                    return Poll::Ready(Ok(()));
                }
                Err((cmd, SendError::Busy)) => {
                    self.cmd = Some(cmd);
                    if self.registered {
                        // Registered, then found the queue still full.
                        self.registered = false;
                        return Poll::Pending;
                    }
                    // Announce, then look once more: room made between
                    // the first try and the registration is not missed.
                    shard.space.register(cx.waker());
                    self.registered = true;
                }
                Err((_, e)) => return Poll::Ready(Err(e)),
            }
        }
    }
}
