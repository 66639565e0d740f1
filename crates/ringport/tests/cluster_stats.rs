//! The cluster link's counters (`Server::cluster_stats`) against a real
//! nats-server on loopback whose `max_payload` is 1 KiB: a broadcast within
//! it reaches the other node and counts in `sent` and `received`; one over
//! it is refused by NATS and counted in `dropped_out` (the README's
//! promise), and never arrives.
//!
//! Needs nats-server (Debian package `nats-server`): without it the test
//! fails, unless `RINGPORT_SKIP` names `nats`.

mod common;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use ringport::cluster::ClusterConfig;
use ringport::{EventServer, LengthDelimited, Server, handlers::Echo};

/// A nats-server on a free loopback port, killed on drop.
struct Nats {
    child: Child,
    port: u16,
    dir: std::path::PathBuf,
}

impl Nats {
    fn start(max_payload: usize) -> Nats {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("ringport-nats-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let conf = dir.join("nats.conf");
        std::fs::write(
            &conf,
            format!("listen: 127.0.0.1:{port}\nmax_payload: {max_payload}\n"),
        )
        .unwrap();
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server (Debian package nats-server)");
        let nats = Nats { child, port, dir };
        assert!(
            wait_until(IO_TIMEOUT, || TcpStream::connect(("127.0.0.1", port))
                .is_ok()),
            "nats-server did not start"
        );
        nats
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn a_message_over_the_bus_max_payload_is_counted_in_dropped_out() {
    if !require_program("nats-server", "nats-server", "nats") {
        return;
    }
    let nats = Nats::start(1024);
    let prefix = format!("rp{}", std::process::id());
    let node = |name: &str| {
        let mut cluster = ClusterConfig::new(nats.url(), name);
        cluster.subject_prefix = prefix.clone();
        cluster.heartbeat = Duration::from_millis(100);
        let mut cfg = config();
        cfg.cluster = Some(cluster);
        cfg
    };
    let a = Server::start(node("a"), LengthDelimited::new(), |_| Echo).expect("start node a");
    assert_backend(&a);
    let b: EventServer = Server::start_events(node("b"), LengthDelimited::new()).expect("node b");
    for (server, name) in [(&a, "a"), (&*b, "b")] {
        assert!(
            wait_until(IO_TIMEOUT, || server
                .cluster_stats()
                .is_some_and(|c| c.connected && c.nodes_up == 1)),
            "node {name} hears the other: {:?}",
            server.cluster_stats()
        );
    }
    let mut client = connect(b.local_addr());
    expect_connected(&b, &client);

    // Within the bus's max_payload: delivered on the other node.
    a.broadcast(&b"small one"[..]).unwrap();
    assert_eq!(read_frame(&mut client, 64).unwrap(), b"small one");
    // Over it (2 KiB > 1 KiB): refused by NATS, counted, not delivered.
    let before = a.cluster_stats().unwrap();
    assert_eq!(before.dropped_out, 0, "{before:?}");
    a.broadcast(pattern(1, 2048)).unwrap();
    assert!(
        wait_until(IO_TIMEOUT, || a.cluster_stats().unwrap().dropped_out == 1),
        "{:?}",
        a.cluster_stats()
    );
    // The next one is the next frame the client gets: the large one never
    // arrived.
    a.broadcast(&b"small two"[..]).unwrap();
    assert_eq!(read_frame(&mut client, 4096).unwrap(), b"small two");
    let after = a.cluster_stats().unwrap();
    assert_eq!(after.dropped_out, 1, "{after:?}");
    assert_eq!(after.sent, before.sent + 1, "{after:?}");
    let at_b = b.cluster_stats().unwrap();
    assert_eq!(at_b.dropped_in, 0, "{at_b:?}");
    assert!(at_b.received >= 2, "{at_b:?}");
    drop(client);
    a.stop();
    b.stop();
}
