//! An async echo-with-lookup server (feature `tokio`): every message is a
//! key; an async "database" call (a tokio timer standing in for one)
//! looks it up, and the value goes back on the connection.
//!
//! Two ways to write it, both here:
//! - `stream` (default): the event [`Stream`](futures_core::Stream) read by
//!   one tokio task; each lookup is a tokio task that replies with
//!   `send_async` (which waits for room instead of failing).
//! - `handler`: the handler API on the shard threads; each lookup runs on
//!   the tokio runtime with `ctx.spawn`, its result handed back to the
//!   shard.
//!
//! Run: `cargo run --example async_lookup --features tokio [stream|handler]`
//! (a demo with three async clients, then exit), or add an address to
//! keep serving: `... -- stream 127.0.0.1:7000`.

use std::net::SocketAddr;
use std::time::Duration;

use ringport::{
    AsyncClient, ConnId, Context, Event, EventServer, Handler, LengthDelimited, Server,
    ServerConfig,
};

/// The stand-in for a database call.
async fn lookup(key: Vec<u8>) -> Vec<u8> {
    tokio::time::sleep(Duration::from_millis(10)).await;
    let mut value = b"value of ".to_vec();
    value.extend_from_slice(&key);
    value
}

/// The event stream, one task per lookup.
async fn serve_stream(events: EventServer) -> std::io::Result<()> {
    let mut stream = events.stream()?;
    let sender = events.async_sender();
    while let Some(event) = stream.next().await {
        match event {
            Event::Connected { conn, peer } => println!("{conn} connected from {peer}"),
            Event::Message { conn, bytes } => {
                let sender = sender.clone();
                // Spawned, so the stream keeps being read while lookups
                // and sends wait.
                tokio::spawn(async move {
                    let value = lookup(bytes.to_vec()).await;
                    if let Err(e) = sender.send(conn, value).await {
                        println!("{conn}: reply not sent: {e}");
                    }
                });
            }
            Event::Closed { conn, reason } => println!("{conn} closed: {reason:?}"),
            _ => {}
        }
    }
    Ok(())
}

/// The handler API, lookups on the tokio runtime.
struct LookupHandler {
    runtime: tokio::runtime::Handle,
}

impl Handler for LookupHandler {
    type ConnState = ();

    fn on_connect(&mut self, _: &mut Context<'_>, conn: ConnId, peer: SocketAddr) {
        println!("{conn} connected from {peer}");
    }

    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: &mut (), key: &[u8]) {
        ctx.spawn(&self.runtime, lookup(key.to_vec()), move |ctx, value| {
            // Fails with SendError::Closed if the client left meanwhile.
            let _ = ctx.send(conn, &value);
        });
    }
}

async fn demo(addr: SocketAddr) -> std::io::Result<()> {
    let mut clients = Vec::new();
    for i in 0..3 {
        clients.push(tokio::spawn(async move {
            let mut c = AsyncClient::connect(addr).await?;
            for key in ["apple", "pear"] {
                let key = format!("{key}-{i}");
                c.send(key.as_bytes()).await?;
                let value = c.recv().await?;
                println!("client {i}: {key} -> {}", String::from_utf8_lossy(&value));
            }
            Ok::<_, std::io::Error>(())
        }));
    }
    for c in clients {
        c.await.expect("client task")?;
    }
    Ok(())
}

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let mode = args.next().unwrap_or_else(|| "stream".into());
    let serve_on: Option<SocketAddr> = args.next().map(|a| a.parse().expect("an address"));
    let config = {
        let mut config = ServerConfig::default();
        config.addr = serve_on.unwrap_or_else(|| "127.0.0.1:0".parse().unwrap());
        config
    };
    let runtime = tokio::runtime::Runtime::new()?;
    match mode.as_str() {
        "stream" => {
            let events = Server::start_events(config, LengthDelimited::new())?;
            let addr = events.local_addr();
            println!("listening on {addr} (event stream)");
            runtime.block_on(async move {
                let server = tokio::spawn(serve_stream(events));
                if serve_on.is_none() {
                    demo(addr).await?;
                    server.abort();
                } else {
                    server.await.expect("server task")?;
                }
                Ok(())
            })
        }
        "handler" => {
            let handle = runtime.handle().clone();
            let server = Server::start(config, LengthDelimited::new(), move |_| LookupHandler {
                runtime: handle.clone(),
            })?;
            let addr = server.local_addr();
            println!("listening on {addr} (handler + ctx.spawn)");
            if serve_on.is_none() {
                runtime.block_on(demo(addr))?;
            } else {
                std::thread::park();
            }
            server.stop();
            Ok(())
        }
        other => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("mode {other:?}: use stream or handler"),
        )),
    }
}
