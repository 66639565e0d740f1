//! [`AsyncClient`]: the async counterpart of the blocking
//! [`crate::Client`], over a tokio `TcpStream`.

use std::io;
use std::net::SocketAddr;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};
use tokio_util::codec::{Decoder, Encoder, Framed};

use super::FrameCodec;
use crate::codec::{Codec, LengthDelimited};

/// Bytes read from the socket per read call (frames of any size are
/// reassembled).
const READ_CHUNK: usize = 64 * 1024;

/// An async connection to a framed-message server (feature `tokio`), with
/// the same codecs and errors as the blocking [`crate::Client`]: the peer
/// closed: `UnexpectedEof` ("connection closed by peer" between frames,
/// "connection closed mid-frame" inside one); undecodable input:
/// `InvalidData`; a payload the codec cannot send: `InvalidInput`.
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// let mut client = ringport::AsyncClient::connect("127.0.0.1:7000").await?;
/// client.send(b"ping").await?;
/// let reply = client.recv().await?;
/// # let _ = reply; Ok(()) }
/// ```
pub struct AsyncClient<C: Codec = LengthDelimited> {
    pub(super) stream: TcpStream,
    codec: FrameCodec<C>,
    pub(super) rbuf: BytesMut,
    wbuf: BytesMut,
    /// The WebSocket session of a client made by `AsyncClient::ws`.
    #[cfg(feature = "websocket")]
    pub(super) ws: Option<Box<crate::client::ws::WsState>>,
    /// TLS of a `wss://` client.
    #[cfg(all(feature = "websocket", feature = "tls"))]
    pub(super) tls: Option<Box<super::client_ws::AsyncTls>>,
}

impl AsyncClient<LengthDelimited> {
    /// Connects with the default wire format ([`LengthDelimited::new`]).
    pub async fn connect(addr: impl ToSocketAddrs) -> io::Result<Self> {
        Self::connect_with(addr, LengthDelimited::new()).await
    }
}

impl<C: Codec> AsyncClient<C> {
    /// Connects with the given codec; `TCP_NODELAY` is set (messages are
    /// written whole). Wrap in `tokio::time::timeout` to bound the wait.
    pub async fn connect_with(addr: impl ToSocketAddrs, codec: C) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        Self::from_stream(stream, codec)
    }

    /// Speaks `codec` over an already connected socket.
    pub fn from_stream(stream: TcpStream, codec: C) -> io::Result<Self> {
        stream.set_nodelay(true)?;
        Ok(AsyncClient {
            stream,
            codec: FrameCodec::new(codec),
            rbuf: BytesMut::with_capacity(READ_CHUNK),
            wbuf: BytesMut::new(),
            #[cfg(feature = "websocket")]
            ws: None,
            #[cfg(all(feature = "websocket", feature = "tls"))]
            tls: None,
        })
    }

    /// Sends one message (header, payload and trailer in one write where
    /// the kernel takes it). Not cancel-safe, like tokio's `write_all`: a
    /// send dropped part-way may have written part of a frame, after which
    /// the connection should be dropped.
    ///
    /// On a WebSocket connection: one binary message.
    pub async fn send(&mut self, payload: &[u8]) -> io::Result<()> {
        #[cfg(feature = "websocket")]
        if self.ws.is_some() {
            return self
                .ws_send(crate::protocol::websocket::MessageKind::Binary, payload)
                .await;
        }
        self.wbuf.clear();
        self.codec.encode(payload, &mut self.wbuf)?;
        self.stream.write_all(&self.wbuf).await
    }

    /// Receives the next whole message. Cancel-safe: bytes read before a
    /// cancelled `recv` are kept for the next one.
    ///
    /// On a WebSocket connection: the next text or binary message
    /// (`recv_into` says which). It answers pings as it reads; cancelled
    /// while writing a pong it may leave a partial frame, after which the
    /// connection should be dropped.
    pub async fn recv(&mut self) -> io::Result<BytesMut> {
        #[cfg(feature = "websocket")]
        if self.ws.is_some() {
            let mut message = Vec::new();
            self.recv_into(&mut message).await?;
            return Ok(BytesMut::from(&message[..]));
        }
        self.recv_frame().await
    }

    /// The next frame of the codec.
    pub(super) async fn recv_frame(&mut self) -> io::Result<BytesMut> {
        loop {
            if let Some(frame) = self.codec.decode(&mut self.rbuf)? {
                return Ok(frame);
            }
            if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK / 4 {
                self.rbuf.reserve(READ_CHUNK);
            }
            if self.stream.read_buf(&mut self.rbuf).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    if self.rbuf.is_empty() {
                        "connection closed by peer"
                    } else {
                        "connection closed mid-frame"
                    },
                ));
            }
        }
    }

    /// Closes the sending direction (the peer reads end-of-stream) while
    /// still receiving its remaining replies.
    pub async fn shutdown_write(&mut self) -> io::Result<()> {
        self.stream.shutdown().await
    }

    /// The local address of the connection.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.stream.local_addr()
    }

    /// The server's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.stream.peer_addr()
    }

    /// The connection as a tokio-util `Framed` (for `Stream`/`Sink` use),
    /// with any bytes already received.
    ///
    /// # Panics
    ///
    /// On a WebSocket connection ([`AsyncClient::ws`]), whose frames the
    /// codec does not speak.
    pub fn into_framed(self) -> Framed<TcpStream, FrameCodec<C>> {
        #[cfg(feature = "websocket")]
        assert!(
            self.ws.is_none(),
            "AsyncClient::into_framed on a WebSocket connection"
        );
        let mut parts =
            tokio_util::codec::FramedParts::new::<bytes::Bytes>(self.stream, self.codec);
        parts.read_buf = self.rbuf;
        Framed::from_parts(parts)
    }
}

impl<C: Codec> std::fmt::Debug for AsyncClient<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncClient")
            .field("stream", &self.stream)
            .field("received_unparsed", &self.rbuf.len())
            .finish_non_exhaustive()
    }
}
