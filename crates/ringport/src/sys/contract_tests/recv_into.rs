//! The direct receive ([`Op::RecvInto`]) against real sockets on
//! 127.0.0.1, on both drivers: one read into the engine's target, one
//! completion, cancel and end of stream. Bounded: a completion is given up
//! on after 5 s.

use std::io::Write;
use std::net::{Shutdown, TcpListener as StdListener, TcpStream as StdStream};
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use super::{LIMIT, TestDriver};
use crate::send_queue::SendQueue;
use crate::sys::eventfd::eventfd;
use crate::sys::{Completion, Op, RecvTarget, SendQueues};

/// The engine's side: empty send queues and the recorded target.
struct Memory {
    queues: Vec<SendQueue>,
    target: Option<RecvTarget>,
}

impl SendQueues for Memory {
    fn send_queue(&self, slot: u32) -> &SendQueue {
        &self.queues[slot as usize]
    }

    fn recv_target(&self, _slot: u32) -> Option<RecvTarget> {
        self.target
    }
}

struct Harness<D: TestDriver> {
    driver: D,
    memory: Memory,
    _wake: OwnedFd,
    client: StdStream,
    slot: u32,
}

impl<D: TestDriver> Drop for Harness<D> {
    fn drop(&mut self) {
        self.driver.teardown();
    }
}

impl<D: TestDriver> Harness<D> {
    /// A driver with one accepted client.
    fn new() -> Self {
        let listener = StdListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let wake = eventfd().unwrap();
        let driver = D::open(vec![listener], wake.as_fd(), 4, 1024).unwrap();
        let mut h = Harness {
            driver,
            memory: Memory {
                queues: (0..4).map(|_| SendQueue::default()).collect(),
                target: None,
            },
            _wake: wake,
            client: StdStream::connect(addr).unwrap(),
            slot: u32::MAX,
        };
        h.submit(Op::Accept);
        match h.next() {
            Completion::Accepted(_, Ok((slot, _))) => h.slot = slot,
            c => panic!("expected an accept, got {c:?}"),
        }
        h
    }

    fn submit(&mut self, op: Op) {
        self.driver.submit(op, &self.memory).unwrap();
    }

    /// Arms a direct receive of generation 1 into `buf`.
    fn recv_into(&mut self, buf: &mut [u8]) {
        self.memory.target = Some(RecvTarget {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
        });
        self.submit(Op::RecvInto {
            slot: self.slot,
            generation: 1,
        });
        self.memory.target = None;
    }

    fn poll_for(&mut self, within: Duration) -> Option<Completion> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(c) = self.driver.next_completion() {
                return Some(c);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            let step = (deadline - now).min(Duration::from_millis(50));
            self.driver.wait(step).unwrap();
        }
    }

    fn next(&mut self) -> Completion {
        self.poll_for(LIMIT)
            .expect("no completion within the limit")
    }

    /// The result of the direct receive's completion.
    fn received(&mut self) -> i32 {
        match self.next() {
            Completion::RecvInto {
                slot,
                generation: 1,
                result,
            } if slot == self.slot => result,
            c => panic!("expected a direct receive, got {c:?}"),
        }
    }
}

fn reads_into_the_target_once_then_waits_for_data_and_end<D: TestDriver>() {
    let mut h = Harness::<D>::new();
    h.client.write_all(b"hello world").unwrap();
    let mut buf = vec![0u8; 4096];
    h.recv_into(&mut buf);
    let n = h.received() as usize;
    assert!(n > 0 && n <= 11);
    let mut got = buf[..n].to_vec();
    // One completion per op: nothing more until armed again.
    h.client.write_all(b"!").unwrap();
    assert_eq!(h.poll_for(Duration::from_millis(100)), None);
    while got.len() < 12 {
        h.recv_into(&mut buf);
        let n = h.received() as usize;
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, b"hello world!");
    // Armed before the bytes come: the readiness edge completes it.
    h.recv_into(&mut buf);
    assert_eq!(h.poll_for(Duration::from_millis(100)), None);
    h.client.write_all(b"late").unwrap();
    let n = h.received() as usize;
    assert_eq!(&buf[..n], b"late");
    h.client.shutdown(Shutdown::Write).unwrap();
    h.recv_into(&mut buf);
    assert_eq!(h.received(), 0);
}

fn never_writes_past_the_target<D: TestDriver>() {
    let mut h = Harness::<D>::new();
    let data: Vec<u8> = (0..5000).map(|i| (i % 251) as u8).collect();
    h.client.write_all(&data).unwrap();
    let mut got = Vec::new();
    while got.len() < data.len() {
        // A guard byte after the target must stay untouched.
        let mut buf = vec![0xAAu8; 701];
        h.recv_into(&mut buf[..700]);
        let n = h.received() as usize;
        assert!(n > 0 && n <= 700);
        assert_eq!(buf[700], 0xAA);
        got.extend_from_slice(&buf[..n]);
    }
    assert_eq!(got, data);
}

fn cancel_ends_it_and_stale_cancels_do_nothing<D: TestDriver>() {
    let mut h = Harness::<D>::new();
    let mut buf = vec![0u8; 64];
    h.recv_into(&mut buf);
    assert_eq!(h.poll_for(Duration::from_millis(50)), None);
    // Aimed at another generation: nothing.
    h.submit(Op::CancelRecvInto {
        slot: h.slot,
        generation: 2,
    });
    assert_eq!(h.poll_for(Duration::from_millis(50)), None);
    h.submit(Op::CancelRecvInto {
        slot: h.slot,
        generation: 1,
    });
    assert_eq!(h.received(), -libc::ECANCELED);
    // The bytes arriving later are not read into the abandoned target.
    h.client.write_all(b"xyz").unwrap();
    assert_eq!(h.poll_for(Duration::from_millis(100)), None);
    assert_eq!(buf, vec![0u8; 64]);
    // Nothing in flight: the close completes.
    h.submit(Op::Close {
        slot: h.slot,
        generation: 1,
    });
    assert!(matches!(h.next(), Completion::Closed { result: 0, .. }));
}

fn without_a_target_or_on_a_free_slot_it_fails_cleanly<D: TestDriver>() {
    let mut h = Harness::<D>::new();
    h.submit(Op::RecvInto {
        slot: h.slot,
        generation: 1,
    });
    // Without a target (an engine bug): a clean failure, one completion
    // (epoll says EBADF, io_uring EINVAL).
    let r = h.received();
    assert!([-libc::EBADF, -libc::EINVAL].contains(&r), "{r}");
    let mut buf = vec![0u8; 8];
    h.memory.target = Some(RecvTarget {
        ptr: buf.as_mut_ptr(),
        len: buf.len(),
    });
    h.submit(Op::RecvInto {
        slot: 3,
        generation: 1,
    });
    assert!(matches!(
        h.next(),
        Completion::RecvInto {
            slot: 3,
            result: r,
            ..
        } if r == -libc::EBADF
    ));
}

for_each_driver!(
    reads_into_the_target_once_then_waits_for_data_and_end,
    never_writes_past_the_target,
    cancel_ends_it_and_stale_cancels_do_nothing,
    without_a_target_or_on_a_free_slot_it_fails_cleanly,
);
