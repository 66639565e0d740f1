use std::io::{Read, Write};
use std::net::TcpStream;
fn main() {
    let mut cfg = ringport::ServerConfig::default();
    cfg.addr = "127.0.0.1:0".parse().unwrap();
    cfg.shards = 2;
    let server = ringport::Server::start(cfg, ringport::LengthDelimited::new(), |_| {
        ringport::handlers::Echo
    })
    .unwrap();
    let addr = server.local_addr();
    let mut s = TcpStream::connect(addr).unwrap();
    for size in [0usize, 1, 100, 70000, 1 << 20] {
        let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
        s.write_all(&(size as u32).to_be_bytes()).unwrap();
        s.write_all(&payload).unwrap();
        let mut h = [0u8; 4];
        s.read_exact(&mut h).unwrap();
        let n = u32::from_be_bytes(h) as usize;
        let mut back = vec![0u8; n];
        s.read_exact(&mut back).unwrap();
        assert_eq!(back, payload);
        println!("echo {size} ok");
    }
    println!("{:?}", server.stats());
    drop(s);
    std::thread::sleep(std::time::Duration::from_millis(200));
    println!("{:?}", server.stats());
    server.stop();
    println!("stopped");
}
