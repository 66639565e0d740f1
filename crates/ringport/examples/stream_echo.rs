//! An echo server written against the async event stream (feature
//! `tokio`): one tokio task takes every event from `events.stream()` and
//! answers each message with `send_async` (or, with `--send plain`, the
//! non-waiting `send`). It is bench/compare.sh's `ringport-stream`, to
//! measure what the bridge to async Rust costs per message next to the
//! handler API (`ringport serve`) and a plain tokio echo (`peer-tokio`).
//!
//! Run: `cargo run --release --features tokio --example stream_echo --
//! --addr 127.0.0.1:7000 --shards 1`. Prints `listening on ADDR` once it
//! accepts; exits with status 0 on SIGTERM or SIGINT.

use ringport::{Event, LengthDelimited, SendError, Server, ServerConfig};

fn main() -> std::io::Result<()> {
    let mut addr = "127.0.0.1:7000".to_string();
    let mut shards = 1usize;
    let mut plain = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().expect("a value after the option");
        match arg.as_str() {
            "--addr" => addr = value(),
            "--shards" | "--threads" => shards = value().parse().expect("a number"),
            "--send" => plain = value() == "plain",
            other => panic!("unknown option {other} (use --addr, --shards, --send async|plain)"),
        }
    }
    let config = {
        let mut config = ServerConfig::default();
        config.addr = addr.parse().expect("an address");
        config.shards = shards;
        config
    };
    let events = Server::start_events(config, LengthDelimited::new())?;
    println!("listening on {}", events.local_addr());
    // One thread for the consumer: the shards are the other threads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut stream = events.stream()?;
        let echo = async {
            while let Some(event) = stream.next().await {
                if let Event::Message { conn, bytes } = event {
                    let sent = if plain {
                        events.send(conn, bytes)
                    } else {
                        events.send_async(conn, bytes).await
                    };
                    match sent {
                        Ok(()) | Err(SendError::Closed) => {}
                        Err(e) => eprintln!("{conn}: {e}"),
                    }
                }
            }
        };
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = echo => {}
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok::<_, std::io::Error>(())
    })?;
    events.stop();
    Ok(())
}
