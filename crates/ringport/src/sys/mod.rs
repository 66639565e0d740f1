//! The operating-system boundary.
//!
//! Everything that talks to the kernel lives below this module; the shard
//! logic above it sees operations, completions and buffers, not syscalls.
//!
//! A backend must provide, per shard (one thread, one instance):
//! - **accept** with the peer address, into connection slots the backend
//!   numbers densely (`0..capacity`), so that a slot index names a
//!   connection in the shard's table;
//! - **receive** into buffers the backend lends to the shard and gets back
//!   once the shard has copied or consumed them (`return_buffer`), with a
//!   distinct "ran out of buffers, re-arm later" outcome that is not an
//!   end of stream;
//! - **vectored send** from memory the shard keeps alive until the
//!   completion for that send has been seen;
//! - **cancel** of a connection's receive, and **close** that frees the
//!   slot only once every operation on it has completed;
//! - **wake-up** from other threads (an eventfd the backend waits on) and a
//!   **tick** timer;
//! - completions tagged with a [`UserData`](uring::UserData) that carries
//!   the operation kind, the slot and the slot's generation.
//!
//! Backends: [`uring`] (io_uring, Linux 6.0+, with optional features probed
//! at start). `eventfd` holds the wake-up counter shared by the shards and
//! the worker pool. An epoll backend (mio) that provides the same operations by
//! readiness is planned; until it exists, [`uring::probe`] tells the caller
//! clearly why io_uring cannot be used.

pub(crate) mod eventfd;
pub mod uring;
