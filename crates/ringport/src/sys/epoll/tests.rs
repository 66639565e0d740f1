//! Tests of what only the epoll driver does (the contract both drivers
//! keep is tested in `sys/contract_tests.rs`, once per driver): read rounds
//! that keep one busy connection from starving the others, partial writes
//! bounded by the iovec limit, accept error classes, ops on slots outside
//! the table.

use std::io::Write;

use super::*;
use crate::sys::contract_tests::{
    Harness, flushed, pattern, sends_large_to_a_slow_reader_in_order,
};

#[test]
fn full_reads_go_round_by_round() {
    let mut h = Harness::<EpollDriver>::new(true, 4, 16);
    let (slot, mut client) = h.accept();
    let (other, mut client2) = h.accept();
    let data = pattern(100);
    client.write_all(&data).unwrap();
    client2.write_all(b"x").unwrap();
    flushed(&client);
    flushed(&client2);
    for s in [slot, other] {
        h.submit(Op::Recv {
            slot: s,
            generation: 1,
        });
    }
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut order = Vec::new();
    while a.len() < 100 || b.is_empty() {
        match h.next() {
            (
                Completion::Recv {
                    slot: s, result, ..
                },
                d,
            ) if result > 0 => {
                assert!(result <= 16);
                order.push(s);
                if s == slot { &mut a } else { &mut b }.extend_from_slice(&d);
            }
            (c, _) => panic!("unexpected {c:?}"),
        }
    }
    assert_eq!(a, data);
    assert_eq!(b, b"x");
    // The other connection was not made to wait for all 100 bytes.
    assert!(
        order.iter().position(|&s| s == other).unwrap() <= 1,
        "{order:?}"
    );
}

#[test]
fn accept_errors_are_reported_not_retried() {
    let e = |n| io::Error::from_raw_os_error(n);
    for n in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
        assert_eq!(classify_accept_error(&e(n)), AcceptError::Fail(n));
    }
    assert_eq!(
        classify_accept_error(&e(libc::EAGAIN)),
        AcceptError::Drained
    );
    assert_eq!(
        classify_accept_error(&e(libc::ECONNABORTED)),
        AcceptError::Retry
    );
    assert_eq!(
        classify_accept_error(&io::Error::other("no errno")),
        AcceptError::Fail(libc::EIO)
    );
}

#[test]
fn clamps_iovecs_to_a_byte_count() {
    let buf = [0u8; 10];
    let iov = |len| libc::iovec {
        iov_base: buf.as_ptr() as *mut libc::c_void,
        iov_len: len,
    };
    let mut v = vec![iov(4), iov(4), iov(4)];
    clamp_iovecs(&mut v, 6);
    assert_eq!(v.iter().map(|v| v.iov_len).collect::<Vec<_>>(), [4, 2]);
    let mut v = vec![iov(4), iov(4)];
    clamp_iovecs(&mut v, 8);
    assert_eq!(v.iter().map(|v| v.iov_len).collect::<Vec<_>>(), [4, 4]);
    clamp_iovecs(&mut v, 100);
    assert_eq!(v.len(), 2);
}

#[test]
fn large_sends_are_bounded_and_partial_to_a_slow_reader() {
    let results = sends_large_to_a_slow_reader_in_order::<EpollDriver>();
    // At most 64 chunks of 16 KiB per send; the slow reader makes some
    // sends partial.
    assert!(results.iter().all(|&n| n <= 64 * 16 * 1024));
    assert!(
        results.iter().any(|&n| n % (16 * 1024) != 0),
        "no partial write in {} sends",
        results.len()
    );
}

#[test]
fn ops_on_a_slot_outside_the_table_fail_cleanly() {
    let mut h = Harness::<EpollDriver>::new(false, 2, 64);
    h.submit(Op::Send {
        slot: 9,
        generation: 2,
    });
    assert!(matches!(h.next().0, Completion::Sent { result: r, .. } if r == -libc::EBADF));
}
