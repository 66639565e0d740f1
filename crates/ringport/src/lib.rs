//! ringport: an io_uring TCP message server.
//!
//! - [`server`]: start a server with a [`Handler`] (callbacks on the shard
//!   threads) or with the pull-style event API ([`EventServer`]).
//! - [`codec`]: framing (length-delimited, lines, raw), sans-I/O.
//! - [`conn_id`]: generational connection ids.
//! - [`client`]: a blocking client speaking the same codecs.
//! - [`stats`]: counters readable while running.
//!
//! Inside: each shard (`shard`) is a thread with its own io_uring ring that
//! owns its connections; the kernel interface lives in `sys`.

pub mod client;
pub mod codec;
pub mod conn_id;
pub mod handlers;
pub mod pool;
mod send_queue;
pub mod server;
mod shard;
pub mod stats;
mod sys;
mod timer;

pub use bytes::Bytes;
pub use client::Client;
pub use codec::{Codec, LengthDelimited, Lines, RawBytes};
pub use conn_id::ConnId;
pub use server::{
    CloseReason, Context, Event, EventServer, Handler, SendError, Server, ServerConfig,
    ShardRemote, SlowConsumerPolicy,
};
pub use stats::Stats;
pub use sys::uring::probe as probe_io_uring;
pub use timer::TimerId;
