//! Every way to broadcast reaches the connections of another node of the
//! cluster (one router, whoever calls it): `Server::broadcast` and
//! `Server::publish` from a thread, `broadcast_async` from a task (it did
//! not before the router), and `ctx.broadcast` from a handler (chat).
//! Two nodes over a real nats-server on loopback.
//!
//! Needs nats-server (Debian package `nats-server`): without it the test
//! fails, unless `RINGPORT_SKIP` names `nats`.

mod common;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use ringport::cluster::ClusterConfig;
use ringport::handlers::Chat;
use ringport::{LengthDelimited, Server};

struct Nats {
    child: Child,
    port: u16,
}

impl Nats {
    fn start() -> Nats {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("nats-server")
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server (Debian package nats-server)");
        assert!(
            wait_until(IO_TIMEOUT, || TcpStream::connect(("127.0.0.1", port))
                .is_ok()),
            "nats-server did not start"
        );
        Nats { child, port }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn every_broadcast_entry_point_reaches_the_other_node() {
    if !require_program("nats-server", "nats-server", "nats") {
        return;
    }
    let nats = Nats::start();
    let prefix = format!("rt{}", std::process::id());
    let node = |name: &str| {
        let mut cluster = ClusterConfig::new(format!("nats://127.0.0.1:{}", nats.port), name);
        cluster.subject_prefix = prefix.clone();
        cluster.heartbeat = Duration::from_millis(100);
        let mut cfg = config();
        cfg.cluster = Some(cluster);
        cfg
    };
    // Chat on both nodes: a client's message is broadcast by the handler.
    let a = Server::start(node("a"), LengthDelimited::new(), |_| Chat).expect("node a");
    let b = Server::start(node("b"), LengthDelimited::new(), |_| Chat).expect("node b");
    assert_backend(&a);
    for (server, name) in [(&a, "a"), (&b, "b")] {
        assert!(
            wait_until(IO_TIMEOUT, || server
                .cluster_stats()
                .is_some_and(|c| c.connected && c.nodes_up == 1)),
            "node {name} hears the other"
        );
    }
    let mut far = connect(b.local_addr());
    let mut talker = connect(a.local_addr());
    for server in [&a, &b] {
        assert!(wait_until(IO_TIMEOUT, || server.stats().connections == 1));
    }
    b.broadcast(&b"hello"[..]).unwrap();
    assert_eq!(read_frame(&mut far, 64).unwrap(), b"hello");

    a.broadcast(&b"from the handle"[..]).unwrap();
    assert_eq!(read_frame(&mut far, 64).unwrap(), b"from the handle");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    runtime
        .block_on(a.broadcast_async(&b"from a task"[..]))
        .unwrap();
    assert_eq!(read_frame(&mut far, 64).unwrap(), b"from a task");

    write_frame(&mut talker, b"from a handler").unwrap();
    assert_eq!(read_frame(&mut far, 64).unwrap(), b"from a handler");

    drop((far, talker));
    a.stop();
    b.stop();
}
