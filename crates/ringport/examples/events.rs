//! The pull-style event API: one thread takes events and answers them.
//!
//! Run: `cargo run --example events`.

use std::time::Duration;

use ringport::{Client, Event, LengthDelimited, Server, ServerConfig};

fn main() -> std::io::Result<()> {
    let config = {
        let mut config = ServerConfig::default();
        config.addr = "127.0.0.1:0".parse().unwrap();
        config
    };
    let server = Server::start_events(config, LengthDelimited::new())?;
    let addr = server.local_addr();
    let client = std::thread::spawn(move || -> std::io::Result<Vec<u8>> {
        let mut c = Client::connect(addr)?;
        c.send(b"ping")?;
        c.recv()
    });
    while let Some(event) = server.next_event(Duration::from_secs(2)) {
        match event {
            Event::Connected { conn, peer } => println!("{conn} from {peer}"),
            Event::Message { conn, bytes } => {
                // A stale `conn` would fail with SendError::Closed.
                server.send(conn, bytes).expect("connection is open");
            }
            Event::Closed { conn, reason } => {
                println!("{conn} closed: {reason:?}");
                break;
            }
            // Events added in later versions.
            _ => {}
        }
    }
    println!(
        "client got {:?}",
        String::from_utf8_lossy(&client.join().unwrap()?)
    );
    server.stop();
    Ok(())
}
