//! Outbound connections ([`Op::Socket`], [`Op::Connect`]) on both
//! drivers.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener as StdListener};

use super::{Harness, TestDriver, skipped};
use crate::sys::{Completion, Op};

fn connects_and_carries_data<D: TestDriver>() {
    let server = StdListener::bind("127.0.0.1:0").unwrap();
    let mut h = Harness::<D>::new(false, 2, 1024);
    let (slot, result) = h.connect(server.local_addr().unwrap(), None);
    assert_eq!(result, 0);
    let (mut peer, _) = server.accept().unwrap();
    h.queue(slot, b"ping");
    assert_eq!(h.send_all(slot), vec![4]);
    let mut got = [0u8; 4];
    peer.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"ping");
    h.submit(Op::Recv {
        slot,
        generation: 1,
    });
    peer.write_all(b"pong").unwrap();
    assert_eq!(h.receive(slot, 4), b"pong");
}

fn connect_refused<D: TestDriver>() {
    let addr = StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut h = Harness::<D>::new(false, 2, 1024);
    let (slot, result) = h.connect(addr, None);
    assert_eq!(result, -libc::ECONNREFUSED);
    h.submit(Op::Close {
        slot,
        generation: 9,
    });
    assert!(matches!(h.next().0, Completion::Closed { result: 0, .. }));
}

fn connect_from_an_unbindable_address_fails_at_bind<D: TestDriver>() {
    let server = StdListener::bind("127.0.0.1:0").unwrap();
    let mut h = Harness::<D>::new(false, 2, 1024);
    let local = "10.255.255.1:0".parse().unwrap();
    let (slot, result) = h.connect(server.local_addr().unwrap(), Some(local));
    assert_eq!(result, -libc::EADDRNOTAVAIL);
    h.submit(Op::Close {
        slot,
        generation: 9,
    });
    assert!(matches!(h.next().0, Completion::Closed { result: 0, .. }));
}

fn connect_from_a_local_address<D: TestDriver>() {
    let server = StdListener::bind("127.0.0.1:0").unwrap();
    let mut h = Harness::<D>::new(false, 2, 1024);
    let local: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let (_, result) = h.connect(server.local_addr().unwrap(), Some(local));
    assert_eq!(result, 0);
    let (_, peer) = server.accept().unwrap();
    assert!(peer.ip().is_loopback());
}

/// Needs an IPv6 loopback: without one it fails, unless `RINGPORT_SKIP`
/// names `ipv6`.
fn connects_over_ipv6<D: TestDriver>() {
    if skipped(
        "ipv6",
        &format!("sys::contract_tests::{}::connects_over_ipv6", D::NAME),
    ) {
        return;
    }
    let server = StdListener::bind("[::1]:0")
        .expect("no IPv6 loopback (::1): set RINGPORT_SKIP=ipv6 to skip this test");
    let mut h = Harness::<D>::new(false, 2, 1024);
    let local = "[::1]:0".parse().unwrap();
    let (_, result) = h.connect(server.local_addr().unwrap(), Some(local));
    assert_eq!(result, 0);
    let (_, peer) = server.accept().unwrap();
    assert!(peer.is_ipv6());
}

fn socket_without_a_free_slot_fails<D: TestDriver>() {
    let server = StdListener::bind("127.0.0.1:0").unwrap();
    let remote = server.local_addr().unwrap();
    let mut h = Harness::<D>::new(false, 1, 64);
    h.connect(remote, None);
    h.submit(Op::Socket { token: 8, remote });
    assert_eq!(
        h.next().0,
        Completion::SocketCreated {
            token: 8,
            result: -libc::ENFILE
        }
    );
}

for_each_driver!(
    connects_and_carries_data,
    connect_refused,
    connect_from_an_unbindable_address_fails_at_bind,
    connect_from_a_local_address,
    connects_over_ipv6,
    socket_without_a_free_slot_fails,
);
