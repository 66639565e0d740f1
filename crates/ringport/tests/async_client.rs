//! The async client and the tokio-util codec adapters against a ringport
//! server and a plain tokio-util `LengthDelimitedCodec` peer, and async
//! work from handlers (`ctx.spawn`), all with feature `tokio`.

#![cfg(feature = "tokio")]

mod common;

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Duration;

use bytes::BytesMut;
use common::*;
use ringport::codec::Lines;
use ringport::{
    AsyncClient, CloseReason, ConnId, Context, FrameCodec, Handler, LengthDelimited, SendError,
    Server,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(IO_TIMEOUT, f)
        .await
        .expect("within the timeout")
}

#[test]
fn async_client_round_trips_with_a_ringport_server() {
    let server = start_echo(|_| {});
    let addr = server.local_addr();
    runtime().block_on(async {
        let mut c = within(AsyncClient::connect(addr)).await.expect("connect");
        for len in [0, 1, 1000, 200_000, 3 * 1024 * 1024] {
            let payload = pattern(len as u64, len);
            within(c.send(&payload)).await.expect("send");
            let reply = within(c.recv()).await.expect("recv");
            assert_bytes_eq(&reply, &payload, "echo");
        }
        // Pipelined: several frames in flight, replies in order.
        for i in 0..50u8 {
            c.send(&[i; 10]).await.unwrap();
        }
        for i in 0..50u8 {
            assert_eq!(&within(c.recv()).await.unwrap()[..], &[i; 10]);
        }
        c.shutdown_write().await.unwrap();
        let end = within(c.recv()).await.expect_err("server closes");
        assert_eq!(end.kind(), std::io::ErrorKind::UnexpectedEof);
    });
    server.stop();
}

#[test]
fn async_client_speaks_other_codecs() {
    let server = Server::start(config(), Lines::new(), |_| ringport::handlers::Echo)
        .expect("start lines echo");
    assert_backend(&server);
    let addr = server.local_addr();
    runtime().block_on(async {
        let mut c = within(AsyncClient::connect_with(addr, Lines::new()))
            .await
            .unwrap();
        c.send(b"hello").await.unwrap();
        assert_eq!(&within(c.recv()).await.unwrap()[..], b"hello");
        // Over the default 64 KiB line: refused before anything is written.
        let long = vec![b'x'; 64 * 1024 + 1];
        let e = c.send(&long).await.expect_err("over the maximum");
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
        c.send(b"still in sync").await.unwrap();
        assert_eq!(&within(c.recv()).await.unwrap()[..], b"still in sync");
    });
    server.stop();
}

/// A plain tokio + tokio-util echo server: `LengthDelimitedCodec` with its
/// defaults (4-byte big-endian length), no ringport code.
async fn tokio_util_echo(listener: tokio::net::TcpListener) {
    let (mut socket, _) = listener.accept().await.expect("accept");
    let mut codec = LengthDelimitedCodec::new();
    let mut input = BytesMut::new();
    let mut output = BytesMut::new();
    loop {
        while let Some(frame) = codec.decode(&mut input).expect("valid frame") {
            codec.encode(frame.freeze(), &mut output).unwrap();
        }
        if !output.is_empty() {
            socket.write_all(&output).await.unwrap();
            output.clear();
        }
        if socket.read_buf(&mut input).await.unwrap() == 0 {
            return;
        }
    }
}

#[test]
fn async_client_interoperates_with_a_tokio_util_length_delimited_peer() {
    runtime().block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let peer = tokio::spawn(tokio_util_echo(listener));
        let mut c = within(AsyncClient::connect(addr)).await.unwrap();
        for len in [0, 5, 70_000, 2 * 1024 * 1024] {
            let payload = pattern(len as u64 + 7, len);
            c.send(&payload).await.unwrap();
            assert_bytes_eq(&within(c.recv()).await.unwrap(), &payload, "echo");
        }
        drop(c);
        within(peer).await.unwrap();
    });
}

#[test]
fn frame_codec_lets_a_plain_tokio_socket_talk_to_a_ringport_server() {
    let server = start_echo(|_| {});
    let addr = server.local_addr();
    runtime().block_on(async {
        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut codec = FrameCodec::new(LengthDelimited::new());
        let mut out = BytesMut::new();
        for i in 0..10u32 {
            codec.encode(&i.to_be_bytes()[..], &mut out).unwrap();
        }
        // Bytes as written by tokio-util's codec decode with ours too.
        LengthDelimitedCodec::new()
            .encode(bytes::Bytes::from_static(b"from tokio-util"), &mut out)
            .unwrap();
        socket.write_all(&out).await.unwrap();
        let mut input = BytesMut::new();
        let mut got = Vec::new();
        while got.len() < 11 {
            match codec.decode(&mut input).unwrap() {
                Some(frame) => got.push(frame),
                None => {
                    let n = within(socket.read_buf(&mut input)).await.unwrap();
                    assert!(n > 0, "server closed early");
                }
            }
        }
        for (i, frame) in got[..10].iter().enumerate() {
            assert_eq!(&frame[..], &(i as u32).to_be_bytes());
        }
        assert_eq!(&got[10][..], b"from tokio-util");
    });
    server.stop();
}

#[test]
fn frame_codec_refuses_oversized_headers_without_allocating() {
    let mut codec = FrameCodec::new(LengthDelimited::new().max_frame_length(1000));
    let mut input = BytesMut::from(&header(1001)[..]);
    let e = codec.decode(&mut input).expect_err("over the maximum");
    assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
    assert!(input.capacity() < 1001, "allocated for the announced size");
}

/// Each message starts an async "lookup" on a tokio runtime; the result
/// goes back to the connection. A message `hold` waits for the test's
/// signal, so its result can be made to arrive after the connection
/// closed; what `ctx.send` answered then is reported to the test.
struct Lookup {
    rt: tokio::runtime::Handle,
    release: tokio::sync::watch::Receiver<bool>,
    late: mpsc::Sender<(ConnId, Result<(), SendError>)>,
    closed: mpsc::Sender<ConnId>,
    connected: mpsc::Sender<ConnId>,
    /// Told when a `hold` arrived.
    holding: mpsc::Sender<ConnId>,
}

impl Handler for Lookup {
    type ConnState = ();

    fn on_connect(&mut self, _: &mut Context<'_>, conn: ConnId, _: SocketAddr) {
        let _ = self.connected.send(conn);
    }

    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: &mut (), message: &[u8]) {
        if message == b"hold" {
            let _ = self.holding.send(conn);
            let mut release = self.release.clone();
            let late = self.late.clone();
            ctx.spawn(
                &self.rt,
                async move {
                    let _ = release.wait_for(|go| *go).await;
                    b"held".to_vec()
                },
                move |ctx, reply| {
                    let _ = late.send((conn, ctx.send(conn, &reply)));
                },
            );
            return;
        }
        let key = message.to_vec();
        ctx.spawn(
            &self.rt,
            async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                key.to_ascii_uppercase()
            },
            move |ctx, value| {
                let _ = ctx.send(conn, &value);
            },
        );
    }

    fn on_close(&mut self, _: &mut Context<'_>, conn: ConnId, _: (), _: CloseReason) {
        let _ = self.closed.send(conn);
    }
}

#[test]
fn spawned_futures_reply_on_the_connection_and_late_results_are_refused() {
    let rt = runtime();
    let (release_tx, release_rx) = tokio::sync::watch::channel(false);
    let (late_tx, late_rx) = mpsc::channel();
    let (closed_tx, closed_rx) = mpsc::channel();
    let (connected_tx, connected_rx) = mpsc::channel();
    let (holding_tx, holding_rx) = mpsc::channel();
    let handle = rt.handle().clone();
    // One shard of one slot: the next connection reuses the closed one's
    // slot (asserted below).
    let mut cfg = config();
    cfg.shards = 1;
    cfg.connections_per_shard = Some(1);
    let server = Server::start(cfg, LengthDelimited::new(), move |_| Lookup {
        rt: handle.clone(),
        release: release_rx.clone(),
        late: late_tx.clone(),
        closed: closed_tx.clone(),
        connected: connected_tx.clone(),
        holding: holding_tx.clone(),
    })
    .expect("start server");
    assert_backend(&server);

    let mut c = connect(server.local_addr());
    for word in [&b"alpha"[..], b"beta", b""] {
        write_frame(&mut c, word).unwrap();
    }
    // Each lookup is its own task: replies come in completion order.
    let mut replies: Vec<_> = (0..3).map(|_| read_frame(&mut c, 100).unwrap()).collect();
    replies.sort();
    assert_eq!(replies, [&b""[..], b"ALPHA", b"BETA"]);

    // A result that arrives after its connection closed. The handler has
    // the "hold" (reported) before the client resets.
    let first = connected_rx.recv_timeout(IO_TIMEOUT).expect("on_connect");
    write_frame(&mut c, b"hold").unwrap();
    assert_eq!(holding_rx.recv_timeout(IO_TIMEOUT), Ok(first));
    reset(c);
    let gone = closed_rx.recv_timeout(IO_TIMEOUT).expect("on_close");
    assert_eq!(gone, first);
    let mut next = connect(server.local_addr());
    let reused = connected_rx.recv_timeout(IO_TIMEOUT).expect("on_connect");
    assert_eq!(
        (reused.shard(), reused.slot()),
        (gone.shard(), gone.slot()),
        "the one-slot table reuses the slot"
    );
    assert_ne!(reused.generation(), gone.generation());
    assert_eq!(round_trip(&mut next, b"x"), b"X");
    release_tx.send(true).unwrap();
    let (conn, result) = late_rx.recv_timeout(IO_TIMEOUT).expect("late result");
    assert_eq!(conn, gone);
    assert_eq!(result, Err(SendError::Closed));
    // Nothing reached the connection now in the same slot: the next reply
    // it gets is the first frame it reads after the refused send.
    assert_eq!(round_trip(&mut next, b"y"), b"Y");
    server.stop();
}
