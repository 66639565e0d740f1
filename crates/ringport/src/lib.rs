//! ringport: an io_uring TCP message server.
//!
//! See the README for the architecture; each module's doc says what it owns.

pub mod client;
pub mod codec;
