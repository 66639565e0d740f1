//! One connection's TLS state: a rustls connection driven without I/O.
//! Received ciphertext goes in through [`TlsSession::decrypt`]; frames to
//! send are encrypted by [`TlsSession::encrypt`] straight into the
//! connection's send queue.

use std::io::{self, IoSlice, Read, Write};
use std::time::Instant;

use crate::send_queue::{ChunkPool, SendQueue};

/// Plaintext handed to rustls per call when encrypting a large frame, so
/// its own buffer of ciphertext stays this small (the rest is in the send
/// queue).
const ENCRYPT_STEP: usize = 64 * 1024;

pub(crate) struct TlsSession {
    conn: rustls::Connection,
    /// The handshake completed and the handler was told.
    pub established: bool,
    /// rustls reported an error: nothing more is sent but its alert.
    pub failed: bool,
    /// When the handshake must be complete.
    pub deadline: Instant,
}

/// What a call of [`TlsSession::decrypt`] brought.
pub(crate) struct Decrypted {
    /// The peer sent `close_notify`: its end of stream.
    pub peer_closed: bool,
}

impl TlsSession {
    pub fn server(
        config: std::sync::Arc<rustls::ServerConfig>,
        deadline: Instant,
    ) -> io::Result<Self> {
        let conn = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
        Ok(Self::wrap(conn.into(), deadline))
    }

    pub fn client(connector: &crate::tls::TlsConnector, deadline: Instant) -> io::Result<Self> {
        let conn =
            rustls::ClientConnection::new(connector.config.clone(), connector.server_name.clone())
                .map_err(io::Error::other)?;
        Ok(Self::wrap(conn.into(), deadline))
    }

    fn wrap(mut conn: rustls::Connection, deadline: Instant) -> Self {
        // The send queue is the bound on outbound data (its limit and the
        // slow-consumer policy); rustls only holds what one call produced.
        conn.set_buffer_limit(None);
        TlsSession {
            conn,
            established: false,
            failed: false,
            deadline,
        }
    }

    pub fn is_client(&self) -> bool {
        matches!(self.conn, rustls::Connection::Client(_))
    }

    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Feeds received ciphertext; appends the plaintext it held to `out`.
    /// Handshake messages and alerts to answer with are left for
    /// [`TlsSession::drain_into`].
    pub fn decrypt(&mut self, mut data: &[u8], out: &mut Vec<u8>) -> Result<Decrypted, String> {
        let mut peer_closed = false;
        while !data.is_empty() {
            // rustls takes at most one record's worth per call.
            match self.conn.read_tls(&mut data) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) => {
                    self.failed = true;
                    return Err(e.to_string());
                }
            }
            let state = match self.conn.process_new_packets() {
                Ok(state) => state,
                Err(e) => {
                    self.failed = true;
                    return Err(e.to_string());
                }
            };
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                let start = out.len();
                out.resize(start + n, 0);
                // rustls said it holds `n` bytes: reading them cannot fail.
                if let Err(e) = self.conn.reader().read_exact(&mut out[start..]) {
                    self.failed = true;
                    return Err(e.to_string());
                }
            }
            if state.peer_has_closed() {
                peer_closed = true;
                break;
            }
        }
        Ok(Decrypted { peer_closed })
    }

    /// Encrypts `parts` (one frame: header, payload, trailer) into records
    /// appended to `queue`.
    pub fn encrypt(&mut self, parts: &[&[u8]], queue: &mut SendQueue, pool: &mut ChunkPool) {
        let mut slices: [IoSlice<'_>; 4] = [IoSlice::new(&[]); 4];
        let (mut part, mut offset) = (0, 0);
        while part < parts.len() {
            // Gather up to ENCRYPT_STEP bytes over the parts: one write is
            // one run of records, so a small frame's header and payload
            // share a record.
            let (mut n, mut budget) = (0, ENCRYPT_STEP);
            while part < parts.len() && budget > 0 && n < slices.len() {
                let rest = &parts[part][offset..];
                let take = rest.len().min(budget);
                if take > 0 {
                    slices[n] = IoSlice::new(&rest[..take]);
                    n += 1;
                    budget -= take;
                }
                if take == rest.len() {
                    part += 1;
                    offset = 0;
                } else {
                    offset += take;
                }
            }
            if n > 0 {
                // With no buffer limit rustls takes everything offered.
                let _ = self.conn.writer().write_vectored(&slices[..n]);
            }
            self.drain_into(queue, pool);
        }
    }

    /// Queues a `close_notify` alert (once the handshake is complete and
    /// nothing failed).
    pub fn close_notify(&mut self, queue: &mut SendQueue, pool: &mut ChunkPool) {
        if !self.failed {
            self.conn.send_close_notify();
            self.drain_into(queue, pool);
        }
    }

    /// Moves whatever rustls has to send (handshake flights, records,
    /// alerts) to the end of `queue`. Returns the bytes moved.
    pub fn drain_into(&mut self, queue: &mut SendQueue, pool: &mut ChunkPool) -> usize {
        let mut sink = QueueSink { queue, pool, n: 0 };
        while self.conn.wants_write() {
            // Writing into memory cannot fail.
            if self.conn.write_tls(&mut sink).is_err() {
                break;
            }
        }
        sink.n
    }
}

/// `write_tls`'s destination: the connection's send queue.
struct QueueSink<'a> {
    queue: &'a mut SendQueue,
    pool: &'a mut ChunkPool,
    n: usize,
}

impl Write for QueueSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.queue.push_copy(self.pool, &[buf]);
        self.n += buf.len();
        Ok(buf.len())
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let mut total = 0;
        for b in bufs {
            total += self.write(b)?;
        }
        Ok(total)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
