//! A handler-API server: replies to every message with its upper-case form
//! and counts messages per connection (per-connection state).
//!
//! Run: `cargo run --example uppercase` starts it on a free port, sends one
//! message through `ringport::Client`, prints the reply and exits.
//!
//! `cargo run --example uppercase -- --serve` does the same on
//! 127.0.0.1:7001 and then keeps serving until Ctrl-C, so other programs
//! can talk to it, e.g. from Rust:
//!
//! ```no_run
//! let mut client = ringport::Client::connect("127.0.0.1:7001")?;
//! client.send(b"hello")?;
//! assert_eq!(client.recv()?, b"HELLO");
//! # Ok::<(), std::io::Error>(())
//! ```

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
    let serve = std::env::args().skip(1).any(|a| a == "--serve");
    let addr = if serve {
        "127.0.0.1:7001"
    } else {
        // Any free port: the self-test must not collide with anything.
        "127.0.0.1:0"
    };
    let config = {
        let mut config = ServerConfig::default();
        config.addr = addr.parse().unwrap();
        config
    };
    let server = Server::start(config, LengthDelimited::new(), |_shard| Uppercase {
        scratch: Vec::new(),
    })?;
    let mut client = ringport::Client::connect(server.local_addr())?;
    client.send(b"hello, ring")?;
    println!("reply: {}", String::from_utf8_lossy(&client.recv()?));
    drop(client);
    if serve {
        println!(
            "serving on {} until Ctrl-C (messages: 4-byte big-endian length, then payload)",
            server.local_addr()
        );
        // Ctrl-C's default action ends the process; the kernel closes the
        // sockets. (`ringport serve` shows a graceful stop on signals.)
        loop {
            std::thread::park();
        }
    }
    let stats = server.stop();
    println!(
        "{} message(s) in, {} out",
        stats.messages_in, stats.messages_out
    );
    Ok(())
}
