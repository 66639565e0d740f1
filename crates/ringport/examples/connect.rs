use ringport::*;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
struct C {
    got: Arc<AtomicUsize>,
    failed: Arc<AtomicUsize>,
}
impl Handler for C {
    type ConnState = ();
    fn on_connect(&mut self, ctx: &mut Context<'_>, conn: ConnId, _peer: std::net::SocketAddr) {
        ctx.send(conn, b"hello").unwrap();
    }
    fn on_message(&mut self, _ctx: &mut Context<'_>, _conn: ConnId, _: &mut (), m: &[u8]) {
        assert_eq!(m, b"hello");
        self.got.fetch_add(1, Ordering::Relaxed);
    }
    fn on_connect_failed(
        &mut self,
        _ctx: &mut Context<'_>,
        r: std::net::SocketAddr,
        e: std::io::Error,
    ) {
        eprintln!("failed {r}: {e}");
        self.failed.fetch_add(1, Ordering::Relaxed);
    }
}
fn main() {
    let n: usize = std::env::args().nth(1).map_or(1000, |a| a.parse().unwrap());
    let mut cfg = ServerConfig::default();
    cfg.addr = "127.0.0.1:0".parse().unwrap();
    cfg.shards = 4;
    let server = Server::start(cfg, LengthDelimited::new(), |_| handlers::Echo).unwrap();
    let mut ccfg = ServerConfig::default();
    ccfg.listen = false;
    ccfg.shards = 4;
    let got = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let (g, f) = (got.clone(), failed.clone());
    let client = Server::start(ccfg, LengthDelimited::new(), move |_| C {
        got: g.clone(),
        failed: f.clone(),
    })
    .unwrap();
    let t = std::time::Instant::now();
    for i in 0..n {
        let src = std::net::SocketAddr::from(([127, 0, 0, 2 + (i % 8) as u8], 0));
        while client.connect(server.local_addr(), Some(src)).is_err() {
            std::thread::yield_now();
        }
    }
    client
        .connect("127.0.0.1:1".parse().unwrap(), None)
        .unwrap();
    while got.load(Ordering::Relaxed) < n && t.elapsed().as_secs() < 20 {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    println!(
        "{} echoes, {} failed, in {:?}; server {:?}",
        got.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed),
        t.elapsed(),
        server.stats().connections
    );
    println!("client {:?}", client.stats());
    let t = std::time::Instant::now();
    client.stop();
    println!("client stop {:?}", t.elapsed());
    let t = std::time::Instant::now();
    server.stop();
    println!("server stop {:?}", t.elapsed());
}
