//! WebSocket connections of [`AsyncClient`] (features `tokio` and
//! `websocket`): the same [`WsBuilder`] options, session and errors as the
//! blocking client ([`crate::client::ws`]), over a tokio socket; `wss://`
//! drives a rustls client connection over it (feature `tls`).

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::AsyncClient;
use crate::client::ws::{Step, WsBuilder, WsState, WsUrl, check_headers, upgrade_failed};
use crate::codec::{Codec, LengthDelimited};
use crate::protocol::websocket::{CloseCode, DeflateParams, MessageKind, ResponseStatus};

/// Bytes read from the socket per read.
const CHUNK: usize = 64 * 1024;

/// A rustls client connection driven over the tokio socket by hand
/// (rustls is sans-I/O: ciphertext in, plaintext out and back).
#[cfg(feature = "tls")]
pub(crate) struct AsyncTls {
    conn: rustls::ClientConnection,
    /// Ciphertext read from the socket; `inbuf[in_start..in_end]` not
    /// yet given to rustls (it takes no more while its plaintext buffer
    /// is full).
    inbuf: Vec<u8>,
    in_start: usize,
    in_end: usize,
    /// Ciphertext to write.
    outbuf: Vec<u8>,
}

#[cfg(feature = "tls")]
impl AsyncTls {
    /// Writes whatever TLS records are pending.
    async fn flush(&mut self, stream: &mut TcpStream) -> io::Result<()> {
        while self.conn.wants_write() {
            self.outbuf.clear();
            self.conn.write_tls(&mut self.outbuf)?;
            stream.write_all(&self.outbuf).await?;
        }
        Ok(())
    }

    /// Gives rustls more ciphertext (read from the socket when none is
    /// left over) and processes it; `false` at the end of the stream. Call
    /// only when rustls has no plaintext waiting to be read.
    async fn pull(&mut self, stream: &mut TcpStream) -> io::Result<bool> {
        if self.in_start == self.in_end {
            let n = stream.read(&mut self.inbuf).await?;
            if n == 0 {
                return Ok(false);
            }
            (self.in_start, self.in_end) = (0, n);
        }
        loop {
            let mut slice = &self.inbuf[self.in_start..self.in_end];
            self.in_start += self.conn.read_tls(&mut slice)?;
            if let Err(e) = self.conn.process_new_packets() {
                // Send the alert, then fail.
                let _ = self.flush(stream).await;
                return Err(io::Error::new(io::ErrorKind::InvalidData, e));
            }
            if self.in_start == self.in_end || !self.conn.wants_read() {
                break;
            }
        }
        self.flush(stream).await?;
        Ok(true)
    }

    async fn handshake(&mut self, stream: &mut TcpStream) -> io::Result<()> {
        while self.conn.is_handshaking() {
            self.flush(stream).await?;
            if self.conn.is_handshaking() && !self.pull(stream).await? {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "connection closed during the TLS handshake",
                ));
            }
        }
        self.flush(stream).await
    }
}

#[cfg(feature = "tls")]
impl std::fmt::Debug for AsyncTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncTls").finish_non_exhaustive()
    }
}

impl WsBuilder {
    /// Connects as an [`AsyncClient`] (feature `tokio`): TCP, TLS for
    /// `wss://`, then the upgrade, each bounded by the
    /// [`timeout`](WsBuilder::timeout).
    pub async fn connect_async(&self) -> io::Result<AsyncClient> {
        let url = WsUrl::parse(&self.url)?;
        check_headers(&self.headers)?;
        let t = self.timeout;
        let timed_out =
            |what: &str| io::Error::new(io::ErrorKind::TimedOut, format!("{what} timed out"));
        let stream = tokio::time::timeout(t, TcpStream::connect((url.host.as_str(), url.port)))
            .await
            .map_err(|_| timed_out("connect"))??;
        let mut client = AsyncClient::from_stream(stream, LengthDelimited::new())?;
        if url.tls {
            #[cfg(feature = "tls")]
            {
                let connector = self.connector(&url)?.expect("a wss:// URL has a connector");
                let conn = rustls::ClientConnection::new(
                    connector.config.clone(),
                    connector.server_name.clone(),
                )
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                let mut tls = Box::new(AsyncTls {
                    conn,
                    inbuf: vec![0; CHUNK],
                    in_start: 0,
                    in_end: 0,
                    outbuf: Vec::new(),
                });
                tokio::time::timeout(t, tls.handshake(&mut client.stream))
                    .await
                    .map_err(|_| timed_out("TLS handshake"))??;
                client.tls = Some(tls);
            }
            #[cfg(not(feature = "tls"))]
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "wss:// needs ringport's feature `tls`",
            ));
        }
        let mut req = Vec::new();
        let hs = self.request(&url, &mut req);
        let upgrade = async {
            client.write_raw(&req).await?;
            loop {
                match hs.parse_response(&client.rbuf) {
                    ResponseStatus::Partial => {}
                    ResponseStatus::Complete { accepted, consumed } => {
                        let _ = client.rbuf.split_to(consumed);
                        return Ok(accepted);
                    }
                    ResponseStatus::Failed(m) => return Err(upgrade_failed(&m)),
                }
                if client.read_more().await? == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "connection closed by peer during the WebSocket upgrade",
                    ));
                }
            }
        };
        let accepted = tokio::time::timeout(t, upgrade)
            .await
            .map_err(|_| timed_out("WebSocket upgrade"))??;
        client.ws = Some(Box::new(WsState::new(
            &self.session,
            accepted.protocol,
            accepted.deflate,
        )));
        Ok(client)
    }
}

fn not_ws() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "not a WebSocket connection (made by AsyncClient::ws / connect_ws)",
    )
}

impl AsyncClient<LengthDelimited> {
    /// Options for a WebSocket connection to `url` (feature `websocket`),
    /// finished by [`WsBuilder::connect_async`].
    pub fn ws(url: impl Into<String>) -> WsBuilder {
        WsBuilder::new(url)
    }

    /// Connects to a `ws://` or `wss://` URL with the default options.
    pub async fn connect_ws(url: &str) -> io::Result<AsyncClient> {
        WsBuilder::new(url).connect_async().await
    }
}

impl<C: Codec> AsyncClient<C> {
    /// Writes `bytes` whole (through TLS if any).
    async fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_deref_mut() {
            // rustls buffers a bounded amount of plaintext: encrypt and
            // write out as it goes.
            let mut rest = bytes;
            while !rest.is_empty() {
                let n = io::Write::write(&mut tls.conn.writer(), rest)?;
                rest = &rest[n..];
                tls.flush(&mut self.stream).await?;
                if n == 0 && !tls.conn.wants_write() {
                    return Err(io::ErrorKind::WriteZero.into());
                }
            }
            return Ok(());
        }
        self.stream.write_all(bytes).await
    }

    /// Reads more into `rbuf` (through TLS if any); 0 at the end of the
    /// stream.
    async fn read_more(&mut self) -> io::Result<usize> {
        if self.rbuf.capacity() - self.rbuf.len() < CHUNK / 4 {
            self.rbuf.reserve(CHUNK);
        }
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_deref_mut() {
            loop {
                let len = self.rbuf.len();
                self.rbuf.resize(len + CHUNK / 4, 0);
                let got = io::Read::read(&mut tls.conn.reader(), &mut self.rbuf[len..]);
                self.rbuf.truncate(len + *got.as_ref().unwrap_or(&0));
                match got {
                    Ok(n) => return Ok(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // No close_notify before the end of the stream.
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                    Err(e) => return Err(e),
                }
                if !tls.pull(&mut self.stream).await? {
                    return Ok(0);
                }
            }
        }
        self.stream.read_buf(&mut self.rbuf).await
    }

    async fn flush_ws(&mut self) -> io::Result<()> {
        let Some(ws) = self.ws.as_deref_mut() else {
            return Ok(());
        };
        if ws.out.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut ws.out);
        let r = self.write_raw(&out).await;
        if let Some(ws) = self.ws.as_deref_mut() {
            ws.out = out;
            ws.out.clear();
        }
        r
    }

    pub(super) async fn ws_send(&mut self, kind: MessageKind, payload: &[u8]) -> io::Result<()> {
        self.ws
            .as_deref_mut()
            .ok_or_else(not_ws)?
            .frame(kind, payload)?;
        self.flush_ws().await
    }

    /// Whether this is a WebSocket connection.
    pub fn is_websocket(&self) -> bool {
        self.ws.is_some()
    }

    /// The subprotocol the server chose (WebSocket connections).
    pub fn ws_protocol(&self) -> Option<&str> {
        self.ws.as_ref().and_then(|w| w.protocol.as_deref())
    }

    /// The permessage-deflate parameters negotiated, if any.
    pub fn ws_deflate(&self) -> Option<DeflateParams> {
        self.ws
            .as_ref()
            .and_then(|w| w.session.deflate_params().copied())
    }

    /// Pongs received so far.
    pub fn pongs(&self) -> u64 {
        self.ws.as_ref().map_or(0, |w| w.pongs())
    }

    /// Sends one text message (on a framed connection: one frame).
    pub async fn send_text(&mut self, text: &str) -> io::Result<()> {
        match self.ws.is_some() {
            true => self.ws_send(MessageKind::Text, text.as_bytes()).await,
            false => self.send(text.as_bytes()).await,
        }
    }

    /// Sends a ping (at most 125 bytes; WebSocket connections).
    pub async fn ping(&mut self, payload: &[u8]) -> io::Result<()> {
        self.ws
            .as_deref_mut()
            .ok_or_else(not_ws)?
            .frame_ping(payload)?;
        self.flush_ws().await
    }

    /// Receives the next whole message into `dst` (replacing its
    /// contents) and says whether it is text or binary (a framed
    /// connection's messages are binary).
    pub async fn recv_into(&mut self, dst: &mut Vec<u8>) -> io::Result<MessageKind> {
        if self.ws.is_none() {
            let frame = self.recv_frame().await?;
            dst.clear();
            dst.extend_from_slice(&frame);
            return Ok(MessageKind::Binary);
        }
        loop {
            let ws = self.ws.as_deref_mut().ok_or_else(not_ws)?;
            let (used, step) = ws.step(&mut self.rbuf[..], dst);
            let _ = self.rbuf.split_to(used);
            let flushed = self.flush_ws().await;
            match step {
                Step::Message(kind) => return flushed.map(|()| kind),
                Step::Ended(e) => return Err(e),
                Step::NeedMore => flushed?,
            }
            if self.read_more().await? == 0 {
                let mid = !self.rbuf.is_empty();
                let ws = self.ws.as_deref_mut().ok_or_else(not_ws)?;
                return Err(ws.eof(mid));
            }
        }
    }

    /// Receives the next whole message and its kind.
    pub async fn recv_with_kind(&mut self) -> io::Result<(MessageKind, Vec<u8>)> {
        let mut v = Vec::new();
        let kind = self.recv_into(&mut v).await?;
        Ok((kind, v))
    }

    /// Closes a WebSocket connection: our close frame, then the peer's
    /// awaited (messages meanwhile dropped) for at most the session's close
    /// timeout (`SessionConfig::close_timeout`, 5 s by default); then the
    /// sending side is shut down. `Ok` once the peer answered.
    pub async fn close_ws(&mut self, code: CloseCode, reason: &str) -> io::Result<()> {
        let ws = self.ws.as_deref_mut().ok_or_else(not_ws)?;
        if let Some(e) = ws.ended() {
            return Err(e);
        }
        let limit = ws.close_timeout;
        if ws.frame_close(code, reason) {
            self.flush_ws().await?;
        }
        let mut scratch = Vec::new();
        let wait = async {
            loop {
                if let Err(e) = self.recv_into(&mut scratch).await {
                    return e;
                }
            }
        };
        let outcome = tokio::time::timeout(limit, wait).await.unwrap_or_else(|_| {
            io::Error::new(io::ErrorKind::TimedOut, "no WebSocket close from the peer")
        });
        #[cfg(feature = "tls")]
        if let Some(tls) = self.tls.as_deref_mut() {
            tls.conn.send_close_notify();
            let _ = tls.flush(&mut self.stream).await;
        }
        let _ = self.stream.shutdown().await;
        match self.ws.as_ref().is_some_and(|w| w.clean_close) {
            true => Ok(()),
            false => Err(outcome),
        }
    }
}
