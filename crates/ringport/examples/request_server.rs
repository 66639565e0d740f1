//! A request server: each request names an operation, dispatched to a
//! registered handler that runs on the worker pool (so a slow or blocking
//! operation never stalls the shard); the reply goes back on the same
//! connection. The modern form of the classic design's requests naming the
//! module and function that handle them.
//!
//! Request: `<op> <argument bytes>`. Operations: `sha256` (hex digest of
//! the argument), `compress` (zlib of the argument, reply = compressed
//! size), `sleep` (argument: milliseconds; blocks the worker, not the
//! shard), `upper`. Reply: `ok <result>` or `error <why>`.
//!
//! Run: `cargo run --example request_server` (serves 127.0.0.1:7002 and
//! talks to itself once to show it works; pass `--serve` to keep serving).

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ringport::pool::{Pool, PoolConfig};
use ringport::{Client, ConnId, Context, Handler, LengthDelimited, Server, ServerConfig};
use sha2::Digest;

/// What each worker keeps between requests: explicit per-worker state,
/// built on the worker's own thread.
struct Worker {
    compressor_scratch: Vec<u8>,
    served: u64,
}

type Operation = fn(&mut Worker, &[u8]) -> Result<Vec<u8>, String>;

fn registry() -> HashMap<&'static str, Operation> {
    let mut ops: HashMap<&'static str, Operation> = HashMap::new();
    ops.insert("sha256", |_, arg| {
        let digest = sha2::Sha256::digest(arg);
        Ok(digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
            .into_bytes())
    });
    ops.insert("compress", |w, arg| {
        w.compressor_scratch.clear();
        let mut z = flate2::write::ZlibEncoder::new(
            &mut w.compressor_scratch,
            flate2::Compression::default(),
        );
        z.write_all(arg).map_err(|e| e.to_string())?;
        z.finish().map_err(|e| e.to_string())?;
        Ok(format!("{} -> {} bytes", arg.len(), w.compressor_scratch.len()).into_bytes())
    });
    ops.insert("sleep", |_, arg| {
        let ms: u64 = std::str::from_utf8(arg)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .ok_or("sleep takes milliseconds")?;
        std::thread::sleep(Duration::from_millis(ms.min(10_000)));
        Ok(format!("slept {ms} ms").into_bytes())
    });
    ops.insert("upper", |_, arg| Ok(arg.to_ascii_uppercase()));
    ops
}

struct Requests {
    pool: Pool<Worker>,
    ops: Arc<HashMap<&'static str, Operation>>,
}

impl Handler for Requests {
    type ConnState = ();

    fn on_connect(&mut self, _: &mut Context<'_>, _: ConnId, _: SocketAddr) {}

    fn on_message(&mut self, ctx: &mut Context<'_>, conn: ConnId, _: &mut (), msg: &[u8]) {
        let (name, arg) = match msg.iter().position(|&b| b == b' ') {
            Some(i) => (&msg[..i], msg[i + 1..].to_vec()),
            None => (msg, Vec::new()),
        };
        let Some(&op) = std::str::from_utf8(name).ok().and_then(|n| self.ops.get(n)) else {
            let _ = ctx.send(conn, b"error unknown operation");
            return;
        };
        let offloaded = ctx.offload(
            &self.pool,
            move |worker| {
                worker.served += 1;
                op(worker, &arg)
            },
            move |ctx, result| {
                let reply = match result {
                    Ok(r) => [b"ok ".as_slice(), &r].concat(),
                    Err(e) => format!("error {e}").into_bytes(),
                };
                // Err(Closed) if the client left meanwhile: dropped.
                let _ = ctx.send(conn, &reply);
            },
        );
        if offloaded.is_err() {
            let _ = ctx.send(conn, b"error busy");
        }
    }
}

fn main() -> std::io::Result<()> {
    let pool = Pool::start(PoolConfig::default(), |_| Worker {
        compressor_scratch: Vec::new(),
        served: 0,
    })?;
    let ops = Arc::new(registry());
    let config = {
        let mut config = ServerConfig::default();
        config.addr = "127.0.0.1:7002".parse().unwrap();
        config
    };
    let handler_pool = pool.clone();
    let server = Server::start(config, LengthDelimited::new(), move |_| Requests {
        pool: handler_pool.clone(),
        ops: ops.clone(),
    })?;
    println!("request server on {}", server.local_addr());
    let mut client = Client::connect(server.local_addr())?;
    for request in [
        b"sha256 abc".as_slice(),
        b"compress aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        b"sleep 20",
        b"upper hello",
        b"nope",
    ] {
        client.send(request)?;
        println!(
            "{} -> {}",
            String::from_utf8_lossy(request),
            String::from_utf8_lossy(&client.recv()?)
        );
    }
    if std::env::args().any(|a| a == "--serve") {
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
    server.stop();
    Ok(())
}
