#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]
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
//! # Cargo features
//!
//! None is on by default; the core depends on no async runtime.
//!
//! | feature | adds |
//! | --- | --- |
//! | `tokio` | `async_io`: the event `Stream`, `send_async`, `ctx.spawn`, `AsyncClient`, `FrameCodec` |
//! | `tls` | `tls`: rustls per connection on both backends (`ServerConfig::tls`, `connect_tls`) |
//! | `cluster` | `ClusterConfig`: broadcast, topics and addressed sends across nodes over NATS |
//!
//! Items that need a feature say so in their documentation ("Available with
//! the crate feature ..."); on docs.rs they also carry the feature's badge.
//!
//! The crate root re-exports the types most programs need (the server,
//! handler, config, codecs, errors, events); each is documented in its own
//! module, which is its home.
//!
//! Inside, in layers: the `server` handle starts one `shard` thread per
//! shard; a shard runs the portable `engine` (connection state machine,
//! framing, send queues, limits, timers; sans-I/O: no system calls, no
//! clock, no lock, commands in through a method and cross-shard traffic out
//! through an outbox) over a driver of the chosen backend in `sys`
//! (`sys::uring` or `sys::epoll`), which turns the engine's operations
//! into kernel work and hands back completions. Each connection's bytes go
//! through its `transport` (plain or TLS) before the codec; every send,
//! broadcast and publish, whoever makes it, goes through the `router`.

mod admission_table;
pub mod client;
pub mod cluster;
#[cfg(feature = "cluster")]
mod cluster_config;
mod cluster_types;
pub mod codec;
pub mod config;
pub mod conn_id;
mod engine;
pub mod error;
pub mod events;
pub mod handler;
pub mod handlers;
pub mod limits;
pub mod pool;
pub mod protocol;
mod router;
mod send_queue;
pub mod server;
mod shard;
mod shared;
pub mod stats;
mod sys;
mod timer;
mod transport;
mod wake;

#[cfg(feature = "tokio")]
pub mod async_io;
#[cfg(feature = "tokio")]
pub use async_io::{AsyncClient, AsyncSender, EventStream, FrameCodec};
#[cfg(feature = "tls")]
pub mod tls;

/// Checks that io_uring can be used here with the features ringport needs,
/// and says why not otherwise (disabled by sysctl, blocked by seccomp, a
/// kernel too old): what [`Backend::Auto`] decides by.
///
/// The probe ring lives on a short-lived thread of its own, so the
/// caller's next blocking call cannot see a spurious `EINTR`.
pub fn probe_io_uring() -> std::io::Result<()> {
    sys::uring::probe()
}

pub use bytes::Bytes;
pub use client::Client;
#[cfg(feature = "cluster")]
pub use cluster::ClusterConfig;
pub use cluster::{ClusterConnId, ClusterStats};
pub use codec::{Codec, LengthDelimited, Lines, RawBytes};
pub use config::{Backend, LimitPolicy, ServerConfig, SlowConsumerPolicy};
pub use conn_id::ConnId;
pub use error::{CloseReason, MAX_TOPIC_LEN, MAX_TOPICS_PER_CONN, SendError, TopicError};
pub use events::{Event, EventServer};
pub use handler::{Context, Handler, ShardRemote};
pub use limits::{AcceptFilter, MessageRateLimit, RateLimitPolicy};
pub use server::{ConnectionsSnapshot, Server};
pub use stats::{ConnectionInfo, Stats, TurnDurations};
pub use timer::TimerId;

// The README's and the library guide's Rust code blocks, compiled (and run,
// unless marked `no_run` or `ignore`) by `cargo test --doc`, so that an API
// change that breaks them fails the tests. Only under `cfg(doctest)`: the
// published crate does not contain these files.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;

#[cfg(doctest)]
#[doc = include_str!("../../../docs/guide.md")]
struct GuideDoctests;
