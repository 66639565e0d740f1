//! Protocols above the transport: sans-I/O state machines the engine drives.
#[cfg(feature = "websocket")]
pub mod websocket;
