//! A handler-API server: replies to every message with its upper-case form
//! and counts messages per connection (per-connection state).
//!
//! Run: `cargo run --example uppercase`, then talk to 127.0.0.1:7001 with
//! `ringport::Client`.

use std::net::SocketAddr;

use ringport::{ConnId, Context, Handler, LengthDelimited, Server, ServerConfig};

struct Uppercase {
    scratch: Vec<u8>,
}

impl Handler for Uppercase {
    /// Messages seen on this connection.
    type ConnState = u64;

    fn on_connect(&mut self, _: &mut Context<'_>, conn: ConnId, peer: SocketAddr) -> u64 {
        println!("{conn} connected from {peer}");
        0
    }

    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, seen: &mut u64, msg: &[u8]) {
        *seen += 1;
        self.scratch.clear();
        self.scratch.extend(msg.iter().map(u8::to_ascii_uppercase));
        // Fails only if the connection is gone or over its send bound.
        let _ = ctx.send(conn, &self.scratch);
    }
}

fn main() -> std::io::Result<()> {
    let config = ServerConfig {
        addr: "127.0.0.1:7001".parse().unwrap(),
        ..ServerConfig::default()
    };
    let server = Server::start(config, LengthDelimited::new(), |_shard| Uppercase {
        scratch: Vec::new(),
    })?;
    let mut client = ringport::Client::connect(server.local_addr())?;
    client.send(b"hello, ring")?;
    println!("reply: {}", String::from_utf8_lossy(&client.recv()?));
    let stats = server.stop();
    println!(
        "{} message(s) in, {} out",
        stats.messages_in, stats.messages_out
    );
    Ok(())
}
