//! peer-ws-tokio-websockets: WebSocket echo server on tokio-websockets (tokio
//! multi-thread runtime, `--threads` workers). Every text or binary message
//! is sent back as it came; the library answers pings and closes. Its
//! default limits apply (64 MiB per message), no compression (the library
//! has none).

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use peer_common::{Args, BACKLOG};
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{SignalKind, signal};

const NAME: &str = "peer-ws-tokio-websockets";

fn main() {
    let args = Args::parse(NAME, "WebSocket echo server (tokio-websockets)", &[]);
    peer_common::raise_nofile_limit();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
        .unwrap_or_else(|e| {
            eprintln!("{NAME}: runtime: {e}");
            std::process::exit(1)
        });
    let code = rt.block_on(async move {
        let listener = match peer_common::reuseport_listener(args.addr, BACKLOG)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(TcpListener::from_std)
        {
            Ok(l) => l,
            Err(e) => {
                eprintln!("{NAME}: bind {}: {e}", args.addr);
                return 1;
            }
        };
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            eprintln!("{NAME}: cannot install signal handlers");
            return 1;
        };
        peer_common::announce(listener.local_addr().unwrap_or(args.addr));
        let acceptor = tokio::spawn(accept_loop(listener));
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
        eprintln!("{NAME}: shutting down");
        acceptor.abort();
        0
    });
    rt.shutdown_timeout(Duration::from_millis(500));
    std::process::exit(code);
}

async fn accept_loop(listener: TcpListener) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(serve(stream));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

async fn serve(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let Ok((_request, mut ws)) = tokio_websockets::ServerBuilder::new().accept(stream).await else {
        return;
    };
    while let Some(Ok(msg)) = ws.next().await {
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
            return;
        }
    }
}
