//! peer-tokio: framed echo server on tokio's multi-thread runtime with
//! tokio-util's `LengthDelimitedCodec` (4-byte big-endian length, then the
//! payload; at most 16 MiB). Each decoded frame is echoed back; writes are
//! batched with `feed` and one `flush` once no further frame is ready on the
//! read side, which is the idiomatic fast way with `Framed`.

use std::io;
use std::time::Duration;

use futures::{FutureExt, SinkExt, StreamExt};
use peer_common::{Args, BACKLOG, MAX_FRAME};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::bytes::Bytes;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

fn main() {
    let args = Args::parse(
        "peer-tokio",
        "framed echo server (tokio multi-thread runtime + LengthDelimitedCodec)",
        &[],
    );
    peer_common::raise_nofile_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .unwrap_or_else(|e| {
            eprintln!("peer-tokio: runtime: {e}");
            std::process::exit(1)
        });
    let code = rt.block_on(async move {
        let listener = match bind(&args) {
            Ok(l) => l,
            Err(e) => {
                eprintln!("peer-tokio: bind {}: {e}", args.addr);
                return 1;
            }
        };
        let (mut term, mut int) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(t), Ok(i)) => (t, i),
            _ => {
                eprintln!("peer-tokio: cannot install signal handlers");
                return 1;
            }
        };
        peer_common::announce(listener.local_addr().unwrap_or(args.addr));
        // The accept loop runs on a worker thread like the connections; this
        // (the main) thread only waits for the signal.
        let acceptor = tokio::spawn(accept_loop(listener));
        let sig = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        eprintln!("peer-tokio: {sig}, shutting down");
        acceptor.abort();
        0
    });
    rt.shutdown_timeout(Duration::from_millis(500));
    std::process::exit(code);
}

fn bind(args: &Args) -> io::Result<TcpListener> {
    let std_listener = peer_common::reuseport_listener(args.addr, BACKLOG)?;
    std_listener.set_nonblocking(true)?;
    TcpListener::from_std(std_listener)
}

async fn accept_loop(listener: TcpListener) {
    let mut reported_emfile = false;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(stream));
            }
            Err(e) => {
                // EMFILE/ENFILE (fd limit) and the like: keep the server up,
                // back off briefly; the client sees its connect time out.
                if !reported_emfile {
                    eprintln!("peer-tokio: accept: {e} (backing off)");
                    reported_emfile = true;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

async fn serve(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let codec = LengthDelimitedCodec::builder()
        .length_field_length(4)
        .big_endian()
        .max_frame_length(MAX_FRAME)
        .new_codec();
    let mut framed = Framed::new(stream, codec);
    // Wait (really) for the first frame of a batch ...
    while let Some(Ok(frame)) = framed.next().await {
        if framed.feed(frame.freeze()).await.is_err() {
            return;
        }
        // ... then take every frame that is ready without waiting ...
        loop {
            match framed.next().now_or_never() {
                Some(Some(Ok(frame))) => {
                    if framed.feed(frame.freeze()).await.is_err() {
                        return;
                    }
                }
                // EOF or a bad frame (e.g. length > 16 MiB): send what was
                // echoed so far, then close.
                Some(Some(Err(_))) | Some(None) => {
                    let _ = SinkExt::<Bytes>::flush(&mut framed).await;
                    return;
                }
                None => break,
            }
        }
        // ... and write the whole batch at once.
        if SinkExt::<Bytes>::flush(&mut framed).await.is_err() {
            return;
        }
    }
}
