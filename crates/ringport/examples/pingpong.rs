//! Quick sanity load: N threads, each a blocking connection doing ping-pong.
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
fn main() {
    let conns: usize = std::env::args().nth(1).map_or(50, |a| a.parse().unwrap());
    let mut cfg = ringport::ServerConfig::default();
    cfg.addr = "127.0.0.1:0".parse().unwrap();
    let server = ringport::Server::start(cfg, ringport::LengthDelimited::new(), |_| {
        ringport::handlers::Echo
    })
    .unwrap();
    let addr = server.local_addr();
    let dur = Duration::from_secs(3);
    let t0 = Instant::now();
    let handles: Vec<_> = (0..conns)
        .map(|_| {
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_nodelay(true).unwrap();
                let payload = [7u8; 512];
                let mut frame = Vec::new();
                frame.extend_from_slice(&512u32.to_be_bytes());
                frame.extend_from_slice(&payload);
                let mut back = vec![0u8; 516];
                let mut n = 0u64;
                while t0.elapsed() < dur {
                    s.write_all(&frame).unwrap();
                    s.read_exact(&mut back).unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    let total: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    println!(
        "{conns} conns: {:.0} round trips/s",
        total as f64 / t0.elapsed().as_secs_f64()
    );
    println!("{:?}", server.stats());
}
