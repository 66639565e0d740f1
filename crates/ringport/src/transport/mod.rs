//! The transport seam: what carries a connection's bytes between the
//! socket and its protocol. Bytes in ([`Transport::read`]), bytes out
//! ([`Transport::write`], [`Transport::take_output`]), and the close
//! ([`Transport::close_notify`]).
//!
//! Two transports: **plain** (the socket's bytes are the protocol's bytes;
//! every method is a no-op the compiler removes, so the zero-copy paths
//! stay) and **TLS** (feature `tls`: a rustls session driven without I/O,
//! `tls.rs`). This module is the only place that knows which one a build
//! has: the engine calls the same methods either way, and a build without
//! the feature has only the plain one.
//!
//! A transport may need a handshake before the protocol sees anything
//! ([`Transport::handshaking`], with a deadline), may produce bytes of its
//! own (handshake flights, alerts), and may fail ([`Read::Failed`]).

#[cfg(feature = "tls")]
mod tls;

use std::time::Instant;

use crate::config::ServerConfig;
use crate::send_queue::{ChunkPool, SendQueue};

/// One connection's transport. Plaintext costs nothing (a null pointer
/// with the `tls` feature, nothing without it).
#[derive(Default)]
pub(crate) struct Transport {
    #[cfg(feature = "tls")]
    tls: Option<Box<tls::TlsSession>>,
}

/// What received bytes became.
pub(crate) enum Read {
    /// Plaintext for the protocol is in the scratch buffer (possibly none).
    Data {
        /// The handshake completed with these bytes: the connection can be
        /// shown to the handler now.
        established: bool,
        /// The peer ended its side (TLS `close_notify`).
        peer_closed: bool,
    },
    /// The transport failed (bad record, handshake refused): close with
    /// this reason after sending what [`Transport::take_output`] has.
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    Failed(String),
}

/// How an outbound connection's transport is made (plain unless the
/// caller asked for TLS).
#[derive(Default)]
pub(crate) struct ClientSetup {
    #[cfg(feature = "tls")]
    tls: Option<crate::tls::TlsConnector>,
}

impl ClientSetup {
    /// TLS with `connector`.
    #[cfg(feature = "tls")]
    pub fn tls(connector: crate::tls::TlsConnector) -> Self {
        ClientSetup {
            tls: Some(connector),
        }
    }

    /// The transport of a connection set up like this, its handshake due
    /// by a deadline counted from `now`.
    pub fn transport(&self, now: Instant) -> std::io::Result<Transport> {
        let _ = now;
        #[cfg(feature = "tls")]
        if let Some(connector) = &self.tls {
            let deadline = now + connector.handshake_timeout;
            return Ok(Transport {
                tls: Some(Box::new(tls::TlsSession::client(connector, deadline)?)),
            });
        }
        Ok(Transport::default())
    }
}

/// The transport of a connection accepted by a server with `config`: TLS
/// if the server speaks it.
pub(crate) fn accepted(config: &ServerConfig, now: Instant) -> std::io::Result<Transport> {
    let _ = (config, now);
    #[cfg(feature = "tls")]
    if let Some(acceptor) = &config.tls {
        let deadline = now + acceptor.handshake_timeout();
        return Ok(Transport {
            tls: Some(Box::new(tls::TlsSession::server(
                acceptor.current(),
                deadline,
            )?)),
        });
    }
    Ok(Transport::default())
}

impl Transport {
    /// The socket's bytes are the protocol's bytes: no handshake, no
    /// records (the engine's zero-copy receive and send paths apply).
    #[inline]
    pub fn is_plain(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.is_none();
        #[cfg(not(feature = "tls"))]
        true
    }

    /// In its handshake: not yet shown to the handler.
    #[inline]
    pub fn handshaking(&self) -> bool {
        #[cfg(feature = "tls")]
        return self.tls.as_ref().is_some_and(|t| !t.established);
        #[cfg(not(feature = "tls"))]
        false
    }

    /// When the handshake must be complete, while it is not.
    pub fn handshake_deadline(&self) -> Option<Instant> {
        #[cfg(feature = "tls")]
        return self
            .tls
            .as_ref()
            .filter(|t| !t.established)
            .map(|t| t.deadline);
        #[cfg(not(feature = "tls"))]
        None
    }

    /// An outbound connection whose handshake has not completed (a failure
    /// is then a failed connect).
    pub fn is_client_in_handshake(&self) -> bool {
        #[cfg(feature = "tls")]
        return self
            .tls
            .as_ref()
            .is_some_and(|t| t.is_client() && !t.established);
        #[cfg(not(feature = "tls"))]
        false
    }

    /// Feeds received bytes of a non-plain transport; the plaintext is
    /// appended to `plain`.
    pub fn read(&mut self, data: &[u8], plain: &mut Vec<u8>) -> Read {
        #[cfg(feature = "tls")]
        if let Some(t) = self.tls.as_mut() {
            return match t.decrypt(data, plain) {
                Err(why) => Read::Failed(why),
                Ok(decrypted) => {
                    let established = !t.established && !t.is_handshaking();
                    if established {
                        t.established = true;
                    }
                    Read::Data {
                        established,
                        peer_closed: decrypted.peer_closed,
                    }
                }
            };
        }
        plain.extend_from_slice(data);
        Read::Data {
            established: false,
            peer_closed: false,
        }
    }

    /// Writes one frame (its parts: header, payload, trailer) to `queue`:
    /// copied as is, or encrypted into records.
    #[inline]
    pub fn write(&mut self, parts: &[&[u8]], queue: &mut SendQueue, pool: &mut ChunkPool) {
        #[cfg(feature = "tls")]
        if let Some(t) = self.tls.as_mut() {
            return t.encrypt(parts, queue, pool);
        }
        queue.push_copy(pool, parts);
    }

    /// Moves the transport's own output (handshake flights, alerts) to the
    /// end of `queue`; returns the bytes moved.
    pub fn take_output(&mut self, queue: &mut SendQueue, pool: &mut ChunkPool) -> usize {
        let _ = (&queue, &pool);
        #[cfg(feature = "tls")]
        if let Some(t) = self.tls.as_mut() {
            return t.drain_into(queue, pool);
        }
        0
    }

    /// Queues the transport's end of stream after what is queued (TLS
    /// `close_notify`, once established); returns the bytes queued.
    pub fn close_notify(&mut self, queue: &mut SendQueue, pool: &mut ChunkPool) -> usize {
        let _ = (&queue, &pool);
        #[cfg(feature = "tls")]
        if let Some(t) = self.tls.as_mut().filter(|t| t.established) {
            let before = queue.len();
            t.close_notify(queue, pool);
            return queue.len() - before;
        }
        0
    }
}
