//! ringport: a TCP message server for many long-lived connections, on
//! io_uring where it can and epoll where it must.
//!
//! - [`server`]: start a [`Server`] with a [`Handler`] (callbacks on the
//!   shard threads) or with the pull-style event API ([`EventServer`]).
//! - [`config`]: [`ServerConfig`] and the [`Backend`] choice.
//! - [`handler`]: the [`Handler`] trait, its [`Context`], [`CloseReason`],
//!   [`SendError`].
//! - [`codec`]: framing (length-delimited, lines, raw), sans-I/O.
//! - [`conn_id`]: generational connection ids.
//! - [`client`]: a blocking client speaking the same codecs.
//! - [`pool`]: the worker pool (work items, timers, waits).
//! - [`stats`]: counters readable while running.
//! - `async_io` (feature `tokio`): the events as a `Stream`, sends that
//!   wait for room (`send_async`), `ctx.spawn`, `AsyncClient`, and
//!   `FrameCodec` (ringport's codecs as tokio-util codecs).
//! - `tls` (feature `tls`): rustls on the same engine, server and client
//!   side.
//!
//! Inside, in layers: the `server` handle starts one `shard` thread per
//! shard; a shard runs the portable `engine` (connection state machine,
//! framing, send queues, limits, timers; no system calls, time passed in)
//! over a driver of the chosen backend in `sys` (`sys::uring` or
//! `sys::epoll`), which turns the engine's operations into kernel work and
//! hands back completions.

pub mod client;
pub mod cluster;
pub mod codec;
pub mod config;
pub mod conn_id;
mod engine;
pub mod events;
pub mod handler;
pub mod handlers;
pub mod pool;
pub mod protocol;
mod send_queue;
pub mod server;
mod shard;
mod shared;
pub mod stats;
mod sys;
mod timer;
mod wake;

#[cfg(feature = "tokio")]
pub mod async_io;
#[cfg(feature = "tokio")]
pub use async_io::{AsyncClient, AsyncSender, EventStream, FrameCodec};
#[cfg(feature = "tls")]
pub mod tls;

pub use bytes::Bytes;
pub use client::Client;
#[cfg(feature = "cluster")]
pub use cluster::ClusterConfig;
pub use cluster::{ClusterConnId, ClusterStats};
pub use codec::{Codec, LengthDelimited, Lines, RawBytes};
pub use config::{Backend, LimitPolicy, ServerConfig, SlowConsumerPolicy};
pub use conn_id::ConnId;
pub use engine::topics::{MAX_TOPIC_LEN, MAX_TOPICS_PER_CONN, TopicError};
pub use events::{Event, EventServer};
pub use handler::{CloseReason, Context, Handler, SendError};
pub use server::{ConnectionsSnapshot, Server};
pub use shared::ShardRemote;
pub use stats::{ConnectionInfo, Stats, TurnDurations};
pub use sys::uring::probe as probe_io_uring;
pub use timer::TimerId;
