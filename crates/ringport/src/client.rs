//! A blocking client for ringport servers, and the framing functions behind
//! it: the counterpart of the classic `TCPWrite`/`TCPRead` helpers.
//!
//! [`Client`] speaks any [`Codec`] and uses the same [`Framer`] as the
//! server, so both ends agree on framing by construction. [`write_frame`] and
//! [`read_frame`] do the default wire format (`[u32 BE length][payload]`) on
//! any `Write`/`Read`, for tests and tools that bring their own stream.
//!
//! Errors are `io::Error`s with kinds a caller can branch on:
//! - the peer closed the connection: `UnexpectedEof` ("connection closed by
//!   peer" between frames, "connection closed mid-frame" inside one);
//! - a read or write timeout expired: `TimedOut` (never `WouldBlock`);
//! - the peer sent bytes the codec rejects: `InvalidData`, carrying the
//!   [`CodecError`];
//! - a payload the codec cannot send (too large): `InvalidInput`.
//!
//! ```no_run
//! use std::time::Duration;
//! use ringport::client::Client;
//!
//! let mut client = Client::connect("127.0.0.1:7000")?;
//! client.set_timeout(Some(Duration::from_secs(5)))?;
//! client.send(b"ping")?;
//! let reply = client.recv()?;
//! # let _ = reply;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::io::{self, IoSlice, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::codec::{Codec, CodecError, Framer, LengthDelimited, MAX_HEADER_LEN};

#[cfg(feature = "websocket")]
pub mod ws;
#[cfg(feature = "websocket")]
pub use ws::WsBuilder;

/// Size of the client's receive buffer. Frames larger than this are
/// reassembled by the framer.
const READ_BUF: usize = 64 * 1024;

/// A blocking connection to a framed-message server.
///
/// Not thread-safe by design: one request/response conversation per client.
/// For concurrent senders, open several clients.
pub struct Client<C: Codec = LengthDelimited> {
    stream: TcpStream,
    framer: Framer<C>,
    /// Receive buffer; `rbuf[start..end]` holds received bytes not yet fed
    /// to the framer (the frames after the one `recv` returned).
    rbuf: Box<[u8]>,
    start: usize,
    end: usize,
    /// Set once the peer sent undecodable bytes: the stream is out of sync
    /// for good, so every later `recv` fails the same way.
    broken: Option<CodecError>,
    /// The TLS session of a client made by `connect_tls` (feature `tls`).
    #[cfg(feature = "tls")]
    tls: Option<Box<rustls::ClientConnection>>,
    /// The WebSocket session of a client made by `Client::ws` (feature
    /// `websocket`): `send`/`recv` go through it instead of the framer.
    #[cfg(feature = "websocket")]
    ws: Option<Box<ws::WsState>>,
}

impl<C: Codec> std::fmt::Debug for Client<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("stream", &self.stream)
            .field("received_unparsed", &(self.end - self.start))
            .field("partial_frame", &self.framer.buffered())
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl Client<LengthDelimited> {
    /// Connect with the default wire format ([`LengthDelimited::new`]) and
    /// no connect timeout.
    pub fn connect(addr: impl ToSocketAddrs) -> io::Result<Self> {
        Self::connect_with(addr, LengthDelimited::new(), None)
    }

    /// [`Client::connect`] over TLS (see [`Client::connect_tls_with`]).
    ///
    /// Available with the crate feature `tls`.
    #[cfg(feature = "tls")]
    pub fn connect_tls(
        addr: impl ToSocketAddrs,
        connector: &crate::tls::TlsConnector,
    ) -> io::Result<Self> {
        Self::connect_tls_with(addr, LengthDelimited::new(), None, connector)
    }
}

impl<C: Codec> Client<C> {
    /// Connect with the given codec. Every address `addr` resolves to is
    /// tried in turn (each for at most `connect_timeout`, if given); the last
    /// error is returned if none accepts. `TCP_NODELAY` is set: messages are
    /// written whole, so Nagle's algorithm would only add latency.
    pub fn connect_with(
        addr: impl ToSocketAddrs,
        codec: C,
        connect_timeout: Option<Duration>,
    ) -> io::Result<Self> {
        let mut last_err = None;
        let mut stream = None;
        for a in addr.to_socket_addrs()? {
            let attempt = match connect_timeout {
                Some(t) => TcpStream::connect_timeout(&a, t),
                None => TcpStream::connect(a),
            };
            match attempt {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last_err = Some(e),
            }
        }
        let stream = match (stream, last_err) {
            (Some(s), _) => s,
            (None, Some(e)) => return Err(timeout_kind(e)),
            (None, None) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "address resolved to no socket address",
                ));
            }
        };
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            framer: Framer::new(codec),
            rbuf: vec![0; READ_BUF].into_boxed_slice(),
            start: 0,
            end: 0,
            broken: None,
            #[cfg(feature = "tls")]
            tls: None,
            #[cfg(feature = "websocket")]
            ws: None,
        })
    }

    /// Connect with the given codec over TLS (feature `tls`): the handshake
    /// is done here, so an untrusted or mismatched certificate fails the
    /// connect (`InvalidData`, with rustls's reason). A server that wants a
    /// client certificate this client lacks can only say so after the
    /// handshake (TLS 1.3): the first `recv` then fails with its alert.
    #[cfg(feature = "tls")]
    pub fn connect_tls_with(
        addr: impl ToSocketAddrs,
        codec: C,
        connect_timeout: Option<Duration>,
        connector: &crate::tls::TlsConnector,
    ) -> io::Result<Self> {
        let mut client = Self::connect_with(addr, codec, connect_timeout)?;
        let mut conn =
            rustls::ClientConnection::new(connector.config.clone(), connector.server_name.clone())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        client
            .stream
            .set_read_timeout(Some(connector.handshake_timeout))?;
        client
            .stream
            .set_write_timeout(Some(connector.handshake_timeout))?;
        while conn.is_handshaking() {
            conn.complete_io(&mut client.stream).map_err(timeout_kind)?;
        }
        client.set_timeout(None)?;
        client.tls = Some(Box::new(conn));
        Ok(client)
    }

    /// Set the read and write timeouts (`None`: block forever). A `recv`
    /// that times out keeps what it had received, so it can be retried; a
    /// `send` that times out may have written part of a frame, after which
    /// the connection should be dropped.
    pub fn set_timeout(&mut self, t: Option<Duration>) -> io::Result<()> {
        self.stream.set_read_timeout(t)?;
        self.stream.set_write_timeout(t)
    }

    /// Send one message: header, payload and trailer go out in a single
    /// vectored write (repeated only if the kernel takes less).
    ///
    /// On a WebSocket connection: one binary message.
    pub fn send(&mut self, payload: &[u8]) -> io::Result<()> {
        #[cfg(feature = "websocket")]
        if self.ws.is_some() {
            return self.ws_send(crate::protocol::websocket::MessageKind::Binary, payload);
        }
        let codec = self.framer.codec();
        let mut header = [0u8; MAX_HEADER_LEN];
        let n = codec
            .encode_header(payload.len(), &mut header)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let header = header.get(..n).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "codec wrote a header longer than MAX_HEADER_LEN",
            )
        })?;
        let parts = [header, payload, codec.trailer()];
        self.write_parts(parts).map_err(timeout_kind)
    }

    /// Writes `parts` whole (through TLS if any).
    fn write_parts(&mut self, parts: [&[u8]; 3]) -> io::Result<()> {
        #[cfg(feature = "tls")]
        if let Some(conn) = self.tls.as_deref_mut() {
            let mut stream = rustls::Stream::new(conn, &mut self.stream);
            return write_all_vectored(&mut stream, parts).and_then(|()| stream.flush());
        }
        write_all_vectored(&mut self.stream, parts)
    }

    /// Writes `bytes` whole (through TLS if any).
    #[cfg(feature = "websocket")]
    fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.write_parts([bytes, &[], &[]])
    }

    /// Reads into `rbuf[at..]` (through TLS if any), retrying on EINTR;
    /// 0 at end of stream.
    fn read_raw(&mut self, at: usize) -> io::Result<usize> {
        loop {
            #[cfg(feature = "tls")]
            let read = match self.tls.as_deref_mut() {
                Some(conn) => {
                    rustls::Stream::new(conn, &mut self.stream).read(&mut self.rbuf[at..])
                }
                None => self.stream.read(&mut self.rbuf[at..]),
            };
            #[cfg(not(feature = "tls"))]
            let read = self.stream.read(&mut self.rbuf[at..]);
            match read {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(timeout_kind(e)),
            }
        }
    }

    /// Receive the next whole message. Frames that arrived together with it
    /// are kept for the following calls.
    ///
    /// On a WebSocket connection: the next text or binary message
    /// (`recv_into` says which).
    pub fn recv(&mut self) -> io::Result<Vec<u8>> {
        let mut message = Vec::new();
        #[cfg(feature = "websocket")]
        if self.ws.is_some() {
            self.recv_into(&mut message)?;
            return Ok(message);
        }
        self.recv_frame_into(&mut message)?;
        Ok(message)
    }

    /// The next frame of the codec, into `dst`.
    fn recv_frame_into(&mut self, dst: &mut Vec<u8>) -> io::Result<()> {
        if let Some(e) = &self.broken {
            return Err(io::Error::new(io::ErrorKind::InvalidData, e.clone()));
        }
        loop {
            if self.start < self.end {
                let mut got = false;
                let fed = self
                    .framer
                    .feed_until(&self.rbuf[self.start..self.end], |p| {
                        dst.clear();
                        dst.extend_from_slice(p);
                        got = true;
                        false
                    });
                match fed {
                    Ok(n) => self.start += n,
                    Err(e) => {
                        self.start = self.end;
                        self.broken = Some(e.clone());
                        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                    }
                }
                if got {
                    return Ok(());
                }
            }
            self.start = 0;
            self.end = 0;
            let n = self.read_raw(0)?;
            if n == 0 {
                return Err(if self.framer.buffered() == 0 {
                    closed_by_peer()
                } else {
                    closed_mid_frame()
                });
            }
            self.end = n;
        }
    }

    /// Close the sending direction (the peer reads end-of-stream) while
    /// still receiving its remaining replies.
    pub fn shutdown_write(&mut self) -> io::Result<()> {
        #[cfg(feature = "tls")]
        if let Some(conn) = self.tls.as_deref_mut() {
            // TLS: close_notify first (the server's end of stream).
            conn.send_close_notify();
            while conn.wants_write() {
                conn.write_tls(&mut self.stream)?;
            }
        }
        self.stream.shutdown(Shutdown::Write)
    }

    /// The underlying socket, e.g. to set options.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }

    /// The local address of the connection.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }
}

/// Write one frame in the default wire format (`[u32 BE length][payload]`)
/// with a single vectored write where the writer supports it.
///
/// Any payload whose length fits the 4-byte field is written; the reader
/// enforces its own maximum (see [`read_frame`]).
pub fn write_frame(w: &mut impl Write, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            CodecError::FrameTooLarge {
                len: payload.len() as u64,
                max: u32::MAX as usize,
            },
        )
    })?;
    write_all_vectored(w, [&len.to_be_bytes(), payload, &[]]).map_err(timeout_kind)
}

/// Read one frame in the default wire format, refusing (with
/// `InvalidData`) a length over `max_frame` before reading its payload.
///
/// Memory grows with the bytes actually received, not with the announced
/// length. Unlike [`Client::recv`] this keeps no state between calls: after
/// a timeout mid-frame the stream is out of sync and should be dropped.
pub fn read_frame(r: &mut impl Read, max_frame: usize) -> io::Result<Vec<u8>> {
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < header.len() {
        match r.read(&mut header[got..]) {
            Ok(0) if got == 0 => return Err(closed_by_peer()),
            Ok(0) => return Err(closed_mid_frame()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(timeout_kind(e)),
        }
    }
    let len = u32::from_be_bytes(header);
    if u64::from(len) > max_frame as u64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            CodecError::FrameTooLarge {
                len: u64::from(len),
                max: max_frame,
            },
        ));
    }
    let len = len as usize;
    let mut payload = Vec::with_capacity(len.min(READ_BUF));
    Read::take(&mut *r, len as u64)
        .read_to_end(&mut payload)
        .map_err(timeout_kind)?;
    if payload.len() < len {
        return Err(closed_mid_frame());
    }
    Ok(payload)
}

/// `write_all` over several slices (std's `write_all_vectored` is not
/// stable): one `writev` in the common case, more only for short writes.
fn write_all_vectored(w: &mut impl Write, parts: [&[u8]; 3]) -> io::Result<()> {
    let mut slices = parts.map(IoSlice::new);
    let mut bufs: &mut [IoSlice<'_>] = &mut slices;
    // Drop leading empty slices so that `Ok(0)` below really means "stuck".
    IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        match w.write_vectored(bufs) {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "failed to write the whole frame",
                ));
            }
            Ok(n) => IoSlice::advance_slices(&mut bufs, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// A socket timeout surfaces as `WouldBlock` on Unix and `TimedOut`
/// elsewhere; callers get `TimedOut` either way.
fn timeout_kind(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::WouldBlock {
        io::Error::new(io::ErrorKind::TimedOut, "operation timed out")
    } else {
        e
    }
}

fn closed_by_peer() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed by peer")
}

fn closed_mid_frame() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "connection closed mid-frame")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Lines, RawBytes};
    use std::io::Cursor;
    use std::net::TcpListener;
    use std::thread;

    /// A one-connection server on loopback running `serve` on the accepted
    /// stream; returns its address and join handle.
    fn server(
        serve: impl FnOnce(TcpStream) + Send + 'static,
    ) -> (SocketAddr, thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            serve(stream);
        });
        (addr, handle)
    }

    /// Echo every default-format frame back until EOF.
    fn echo(mut s: TcpStream) {
        loop {
            match read_frame(&mut s, 1 << 24) {
                Ok(p) => write_frame(&mut s, &p).unwrap(),
                Err(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
                    return;
                }
            }
        }
    }

    #[test]
    fn send_recv_round_trip_with_echo() {
        let (addr, h) = server(echo);
        let mut c = Client::connect(addr).unwrap();
        assert!(c.stream().nodelay().unwrap());
        assert!(c.local_addr().unwrap().ip().is_loopback());
        for payload in [&b"hello"[..], b"", &[7u8; 200_000][..]] {
            c.send(payload).unwrap();
            assert_eq!(c.recv().unwrap(), payload);
        }
        c.shutdown_write().unwrap();
        let e = c.recv().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(e.to_string(), "connection closed by peer");
        h.join().unwrap();
    }

    #[test]
    fn frames_arriving_together_are_all_returned() {
        let (addr, h) = server(|mut s| {
            let mut all = Vec::new();
            for i in 0..50u32 {
                write_frame(&mut all, &i.to_be_bytes()).unwrap();
            }
            s.write_all(&all).unwrap();
        });
        let mut c = Client::connect(addr).unwrap();
        for i in 0..50u32 {
            assert_eq!(c.recv().unwrap(), i.to_be_bytes());
        }
        assert_eq!(c.recv().unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        h.join().unwrap();
    }

    #[test]
    fn frames_trickling_byte_by_byte() {
        let (addr, h) = server(|mut s| {
            let mut all = Vec::new();
            write_frame(&mut all, b"slow").unwrap();
            write_frame(&mut all, b"and steady").unwrap();
            for b in all {
                s.write_all(&[b]).unwrap();
                s.flush().unwrap();
            }
        });
        let mut c = Client::connect(addr).unwrap();
        assert_eq!(c.recv().unwrap(), b"slow");
        assert_eq!(c.recv().unwrap(), b"and steady");
        h.join().unwrap();
    }

    #[test]
    fn closed_mid_frame_is_reported() {
        let (addr, h) = server(|mut s| {
            s.write_all(&[0, 0, 0, 10, b'a', b'b']).unwrap();
        });
        let mut c = Client::connect(addr).unwrap();
        let e = c.recv().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(e.to_string(), "connection closed mid-frame");
        h.join().unwrap();
    }

    #[test]
    fn timeout_is_timed_out_and_recv_can_resume() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let (addr, h) = server(move |mut s| {
            s.write_all(&[0, 0, 0, 3, b'x']).unwrap();
            rx.recv().unwrap();
            s.write_all(b"yz").unwrap();
        });
        let mut c = Client::connect(addr).unwrap();
        c.set_timeout(Some(Duration::from_millis(50))).unwrap();
        assert_eq!(c.recv().unwrap_err().kind(), io::ErrorKind::TimedOut);
        tx.send(()).unwrap();
        c.set_timeout(None).unwrap();
        assert_eq!(c.recv().unwrap(), b"xyz");
        h.join().unwrap();
    }

    #[test]
    fn codec_error_is_invalid_data_and_sticks() {
        let (addr, h) = server(|mut s| {
            let mut all = Vec::new();
            write_frame(&mut all, b"fine").unwrap();
            all.extend_from_slice(&[0xff, 0, 0, 0]);
            s.write_all(&all).unwrap();
        });
        let mut c = Client::connect(addr).unwrap();
        assert_eq!(c.recv().unwrap(), b"fine");
        let e = c.recv().unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("exceeds the maximum"), "{e}");
        assert_eq!(c.recv().unwrap_err().kind(), io::ErrorKind::InvalidData);
        h.join().unwrap();
    }

    #[test]
    fn lines_client() {
        let (addr, h) = server(|mut s| {
            let mut buf = [0u8; 64];
            let mut got = Vec::new();
            while !got.ends_with(b"two\n") {
                let n = s.read(&mut buf).unwrap();
                assert!(n > 0);
                got.extend_from_slice(&buf[..n]);
            }
            assert_eq!(got, b"one\ntwo\n");
            s.write_all(b"ONE\r\nTWO\n").unwrap();
        });
        let mut c = Client::connect_with(addr, Lines::new(), Some(Duration::from_secs(5))).unwrap();
        c.send(b"one").unwrap();
        c.send(b"two").unwrap();
        assert_eq!(c.recv().unwrap(), b"ONE");
        assert_eq!(c.recv().unwrap(), b"TWO");
        h.join().unwrap();
    }

    #[test]
    fn oversize_send_is_invalid_input() {
        let (addr, h) = server(|_| {});
        let mut c = Client::connect_with(addr, RawBytes::new().max_frame_length(4), None).unwrap();
        assert_eq!(
            c.send(b"12345").unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        c.send(b"1234").unwrap();
        h.join().unwrap();
    }

    #[test]
    fn connect_errors() {
        // A port nobody listens on (bound then released).
        let addr = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let e = Client::connect(addr).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        let e = Client::connect_with(addr, LengthDelimited::new(), Some(Duration::from_secs(1)))
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        let none: &[SocketAddr] = &[];
        assert_eq!(
            Client::connect(none).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
    }

    #[test]
    fn write_and_read_frame_over_memory() {
        let mut wire = Vec::new();
        write_frame(&mut wire, b"hello world").unwrap();
        write_frame(&mut wire, b"").unwrap();
        assert_eq!(&wire[..4], &[0, 0, 0, 11]);
        let mut r = Cursor::new(&wire);
        assert_eq!(read_frame(&mut r, 100).unwrap(), b"hello world");
        assert_eq!(read_frame(&mut r, 100).unwrap(), b"");
        let e = read_frame(&mut r, 100).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(e.to_string(), "connection closed by peer");

        // Over the reader's maximum: refused before the payload.
        let e = read_frame(&mut Cursor::new(&wire), 10).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);

        // Truncated header and truncated payload.
        for cut in [2, 7] {
            let e = read_frame(&mut Cursor::new(&wire[..cut]), 100).unwrap_err();
            assert_eq!(e.to_string(), "connection closed mid-frame", "cut {cut}");
        }
    }

    #[test]
    fn an_announced_length_beyond_the_stream_ends_mid_frame() {
        // 4 GiB announced, 3 bytes sent. (That nothing near 4 GiB is
        // allocated is measured in tests/client_alloc.rs, with a counting
        // allocator.)
        let wire = [0xff, 0xff, 0xff, 0xff, 1, 2, 3];
        let e = read_frame(&mut Cursor::new(&wire[..]), usize::MAX).unwrap_err();
        assert_eq!(e.to_string(), "connection closed mid-frame");
    }

    /// A writer that takes at most 3 bytes per call and no vectored I/O.
    struct Dribble(Vec<u8>);
    impl Write for Dribble {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(3);
            self.0.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn short_writes_are_completed() {
        let mut w = Dribble(Vec::new());
        write_frame(&mut w, b"abcdefgh").unwrap();
        assert_eq!(w.0, b"\x00\x00\x00\x08abcdefgh");
    }

    /// A writer that refuses everything.
    struct Stuck;
    impl Write for Stuck {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Ok(0)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn write_zero_is_an_error() {
        assert_eq!(
            write_frame(&mut Stuck, b"x").unwrap_err().kind(),
            io::ErrorKind::WriteZero
        );
    }
}
