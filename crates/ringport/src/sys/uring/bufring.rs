//! The provided buffer ring that multishot receives pick their buffers
//! from.
//!
//! Only part of the buffers is in the ring at a time: returned buffers go
//! onto a last-in-first-out stack and the ring is topped up from its top,
//! so the same few buffers stay in use while traffic is light and the rest
//! of the memory is never touched (an idle shard, or a mostly idle ring of
//! a shard with many connections, keeps its resident memory small). When
//! the ring runs dry (a receive ends with `-ENOBUFS`), the fill doubles, up
//! to every buffer.

use std::io;

use io_uring::IoUring;

/// A provided buffer ring (IORING_REGISTER_PBUF_RING, 5.19+): `count`
/// buffers of `size` bytes the kernel picks from for multishot receives.
///
/// The shard owns this memory; the kernel may write into any buffer that is
/// in the ring until it hands it back in a completion, after which the shard
/// reads it and returns it with [`BufRing::recycle`]. The memory is freed only
/// after the ring registration is gone (see `Drop` and the shard's teardown
/// order).
pub struct BufRing {
    /// mmap'd array of `io_uring_buf` entries shared with the kernel.
    entries: *mut io_uring::types::BufRingEntry,
    entries_len: usize,
    /// The buffers' memory: a private anonymous mapping, page-aligned so
    /// that the pages of idle buffers can be given back (see `trim`).
    data: *mut u8,
    data_len: usize,
    size: usize,
    count: u16,
    mask: u16,
    /// Our copy of the tail; published to the kernel by [`BufRing::publish`].
    tail: u16,
    group: u16,
    /// Buffers neither in the ring nor lent out, most recently used last.
    spare: Vec<u16>,
    /// Buffers in the ring (published or about to be), not yet handed
    /// back by the kernel.
    in_ring: u16,
    /// How many buffers the ring is topped up to.
    fill: u16,
    /// The ring ran dry since the last trim.
    dried: bool,
    /// Buffers whose pages may be resident (the kernel wrote into them
    /// since the last trim gave them back).
    touched: Vec<bool>,
    /// Ring entries the kernel has consumed (one per buffer it handed
    /// out): the ring's head, as far as this side can tell.
    head: u16,
    /// The kernel fills buffers only on this thread, inside io_uring_enter
    /// (DEFER_TASKRUN): buffers still in the ring may be trimmed too.
    trim_in_ring: bool,
}

/// Buffers in the ring at first; doubled each time the ring runs dry.
const INITIAL_FILL: u16 = 32;

impl BufRing {
    /// Allocates and registers `count` (a power of two, at most 32768)
    /// buffers of `size` bytes on `ring` as buffer group `group`.
    pub fn new(ring: &IoUring, group: u16, count: u16, size: usize) -> io::Result<Self> {
        if !count.is_power_of_two() || count > 32768 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "receive buffer count must be a power of two <= 32768",
            ));
        }
        if size == 0 || size > u32::MAX as usize {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "receive buffer size must be between 1 byte and 4 GiB",
            ));
        }
        let entries_len = count as usize * std::mem::size_of::<io_uring::types::BufRingEntry>();
        // SAFETY: an anonymous private mapping with no address hint; the
        // result is checked for MAP_FAILED before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                entries_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_ANONYMOUS | libc::MAP_PRIVATE | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let data_len = count as usize * size;
        // SAFETY: an anonymous private mapping with no address hint, not
        // populated (pages are touched only as buffers are used); the
        // result is checked for MAP_FAILED before use.
        let data = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                data_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_ANONYMOUS | libc::MAP_PRIVATE,
                -1,
                0,
            )
        };
        if data == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            // SAFETY: the entries mapping was created above with this
            // length and nothing refers to it yet.
            unsafe { libc::munmap(ptr, entries_len) };
            return Err(e);
        }
        crate::stats::RECV_BUFFER_BYTES.fetch_add(data_len, std::sync::atomic::Ordering::Relaxed);
        let mut ring_buf = BufRing {
            entries: ptr.cast(),
            entries_len,
            data: data.cast(),
            data_len,
            size,
            count,
            mask: count - 1,
            tail: 0,
            group,
            // Popped from the end: buffer 0 first.
            spare: (0..count).rev().collect(),
            in_ring: 0,
            fill: count.min(INITIAL_FILL),
            dried: false,
            touched: vec![false; count as usize],
            head: 0,
            trim_in_ring: false,
        };
        // SAFETY: `entries` is a page-aligned mapping of `count` entries that
        // lives until `Drop`, which runs after the registration is removed
        // (the shard unregisters before dropping, and ring teardown removes
        // it otherwise).
        unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(ptr as u64, count, group, 0)?;
        }
        ring_buf.publish();
        Ok(ring_buf)
    }

    pub fn group(&self) -> u16 {
        self.group
    }

    /// The first `len` bytes of buffer `bid`, which the kernel has handed
    /// back in a completion and will not touch until it is recycled.
    pub fn get(&self, bid: u16, len: usize) -> &[u8] {
        assert!(bid < self.count, "buffer {bid} outside the ring");
        let start = bid as usize * self.size;
        // SAFETY: the range lies inside the mapping (bid < count, len at
        // most the buffer size), which lives as long as `self`; the kernel
        // does not write into a buffer it has handed back until the buffer
        // is recycled, which needs `&mut self`.
        unsafe { std::slice::from_raw_parts(self.data.add(start), len.min(self.size)) }
    }

    /// The kernel handed buffer `bid` out in a completion: it is lent to
    /// the engine until [`BufRing::recycle`].
    pub fn taken(&mut self, bid: u16) {
        debug_assert!(bid < self.count);
        self.in_ring = self.in_ring.saturating_sub(1);
        self.head = self.head.wrapping_add(1);
        if let Some(t) = self.touched.get_mut(bid as usize) {
            *t = true;
        }
    }

    /// The ring ran dry: keep more buffers in it from now on.
    pub fn ran_dry(&mut self) {
        self.fill = self.fill.saturating_mul(2).min(self.count);
        self.dried = true;
    }

    /// Lets [`BufRing::trim`] give back buffers that are still in the ring.
    /// Only for a ring set up with SINGLE_ISSUER + DEFER_TASKRUN, whose
    /// receives write into buffers only while the owning thread is inside
    /// io_uring_enter (issue and completion both run as that thread's task
    /// work), never while it runs `trim`.
    pub fn allow_trim_in_ring(&mut self) {
        self.trim_in_ring = true;
    }

    /// Called now and then (every couple of seconds): unless the ring ran
    /// dry since the last call, the fill halves (not below the initial
    /// fill), and the pages of buffers the kernel used but that are not
    /// among the `fill` to be used next are given back to the system
    /// (`MADV_DONTNEED`: the next use of such a buffer finds zeroed pages,
    /// which a receive then fills). Those are the spare buffers beyond the
    /// fill and, where allowed (see [`BufRing::allow_trim_in_ring`]), the
    /// ring's entries past the first `fill` from its head. After a burst,
    /// the receive memory returns to what the traffic since needs. Returns
    /// how many buffers were given back.
    ///
    /// `settled`: every buffer the kernel has taken from the ring has been
    /// reported to [`BufRing::taken`] (the ring's completion queue was
    /// empty and had not overflowed). Otherwise the kernel may be further
    /// along the ring than this side knows, and entries counted as "past
    /// the fill" may already hold received bytes whose completions wait in
    /// the queue or in the kernel's overflow list: in-ring buffers are then
    /// left alone this time (spare ones are always safe).
    pub fn trim(&mut self, settled: bool) -> usize {
        if !std::mem::take(&mut self.dried) {
            self.fill = (self.fill / 2).max(self.count.min(INITIAL_FILL));
        }
        let mut idle: Vec<u16> = Vec::new();
        let spare_idle = self.spare.len().saturating_sub(self.fill as usize);
        idle.extend_from_slice(&self.spare[..spare_idle]);
        if self.trim_in_ring && settled {
            let mut pos = self.head.wrapping_add(self.fill);
            while pos != self.tail && self.tail.wrapping_sub(pos) <= self.count {
                // SAFETY: `pos & mask < count`: inside the entries mapping.
                // Reading an entry this side wrote; the kernel only reads
                // them.
                let bid = unsafe { (*self.entries.add((pos & self.mask) as usize)).bid() };
                idle.push(bid);
                pos = pos.wrapping_add(1);
            }
        }
        let mut released = 0;
        for bid in idle {
            let Some(touched) = self.touched.get_mut(bid as usize) else {
                continue;
            };
            if !*touched {
                continue;
            }
            // SAFETY: the range is buffer `bid`, inside the mapping, which
            // stays mapped. Nothing writes into it meanwhile: a spare buffer
            // is neither in the ring nor lent to the engine, and a buffer in
            // the ring is written only inside io_uring_enter on this thread
            // (`allow_trim_in_ring`). MADV_DONTNEED on a private anonymous
            // mapping only replaces the pages with zeroed ones at the next
            // touch; a buffer's old contents are never read again.
            let rc = unsafe {
                libc::madvise(
                    self.data.add(bid as usize * self.size).cast(),
                    self.size,
                    libc::MADV_DONTNEED,
                )
            };
            if rc == 0 {
                *touched = false;
                released += 1;
            }
        }
        released
    }

    /// How many buffers the ring is topped up to.
    #[cfg(test)]
    pub fn fill(&self) -> u16 {
        self.fill
    }

    /// Takes buffer `bid` back; it goes into the ring at the next
    /// [`BufRing::publish`] if the ring needs it.
    pub fn recycle(&mut self, bid: u16) {
        debug_assert!(bid < self.count);
        self.spare.push(bid);
    }

    /// Writes buffer `bid` at the tail (visible to the kernel after the
    /// tail is stored).
    fn push_entry(&mut self, bid: u16) {
        let index = (self.tail & self.mask) as usize;
        let addr = self.data as u64 + bid as u64 * self.size as u64;
        // SAFETY: `index < count`, so the entry lies inside the mapping; the
        // kernel only reads entries between its head and the published tail,
        // and this one is past the published tail until `publish`.
        unsafe {
            let entry = &mut *self.entries.add(index);
            entry.set_addr(addr);
            entry.set_len(self.size as u32);
            entry.set_bid(bid);
        }
        self.tail = self.tail.wrapping_add(1);
    }

    /// Tops the ring up to its fill with the most recently used spare
    /// buffers and makes them visible to the kernel (one release store).
    pub fn publish(&mut self) {
        let before = self.tail;
        while self.in_ring < self.fill {
            let Some(bid) = self.spare.pop() else { break };
            self.push_entry(bid);
            self.in_ring += 1;
        }
        if self.tail == before {
            return;
        }
        // SAFETY: the tail field overlays the first entry's reserved field,
        // inside the mapping; the kernel reads it with acquire semantics, so
        // a release store orders the entry writes before it.
        unsafe {
            let tail = io_uring::types::BufRingEntry::tail(self.entries)
                as *const std::sync::atomic::AtomicU16;
            (*tail).store(self.tail, std::sync::atomic::Ordering::Release);
        }
    }
}

impl Drop for BufRing {
    fn drop(&mut self) {
        crate::stats::RECV_BUFFER_BYTES
            .fetch_sub(self.data_len, std::sync::atomic::Ordering::Relaxed);
        // SAFETY: both mappings were created in `new` with these lengths
        // and are not referenced by the kernel any more: the owner
        // unregisters the group (or drops the ring) before dropping the
        // BufRing.
        unsafe {
            libc::munmap(self.entries.cast(), self.entries_len);
            libc::munmap(self.data.cast(), self.data_len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::uring::{new_ring, probe};

    #[test]
    fn buffer_ring_registers_and_recycles() {
        probe().expect("io_uring available on the test machine");
        let (ring, _) = new_ring(8).unwrap();
        let mut bufs = BufRing::new(&ring, 3, 8, 4096).unwrap();
        assert_eq!(bufs.get(7, 10).len(), 10);
        assert_eq!(bufs.get(0, 1 << 20).len(), 4096);
        bufs.recycle(2);
        bufs.publish();
        ring.submitter().unregister_buf_ring(3).unwrap();
    }

    #[test]
    fn the_most_recently_used_buffers_go_back_first_and_dry_runs_add_more() {
        probe().expect("io_uring available on the test machine");
        let (ring, _) = new_ring(8).unwrap();
        let mut bufs = BufRing::new(&ring, 4, 256, 64).unwrap();
        assert_eq!(bufs.fill(), INITIAL_FILL);
        assert_eq!(bufs.in_ring, INITIAL_FILL);
        // The kernel hands out buffers 0 and 1; they come back and are the
        // next ones put in the ring, ahead of the untouched rest.
        bufs.taken(0);
        bufs.taken(1);
        bufs.recycle(0);
        bufs.recycle(1);
        bufs.publish();
        assert_eq!(bufs.in_ring, INITIAL_FILL);
        assert_eq!(bufs.spare.len(), 256 - INITIAL_FILL as usize);
        assert_eq!(
            *bufs.spare.last().unwrap(),
            INITIAL_FILL,
            "the untouched buffers wait in order"
        );
        bufs.ran_dry();
        bufs.publish();
        assert_eq!(bufs.in_ring, 2 * INITIAL_FILL);
        for _ in 0..10 {
            bufs.ran_dry();
        }
        assert_eq!(bufs.fill(), 256, "never more than the buffers there are");
        ring.submitter().unregister_buf_ring(4).unwrap();
    }

    #[test]
    fn trims_give_back_buffers_that_stayed_spare_and_the_fill_decays() {
        probe().expect("io_uring available on the test machine");
        let (ring, _) = new_ring(8).unwrap();
        let mut bufs = BufRing::new(&ring, 5, 64, 4096).unwrap();
        // A burst: the ring runs dry once, every buffer is used.
        for bid in 0..INITIAL_FILL {
            bufs.taken(bid);
        }
        bufs.ran_dry();
        for bid in 0..INITIAL_FILL {
            bufs.recycle(bid);
        }
        bufs.publish();
        assert_eq!(bufs.in_ring, 64);
        for bid in 0..64 {
            bufs.taken(bid);
        }
        for bid in 0..64 {
            bufs.recycle(bid);
        }
        // Right after running dry: the fill stays, nothing is given back.
        assert_eq!(bufs.trim(true), 0);
        assert_eq!(bufs.fill(), 64);
        // Quiet since: the fill halves and the 32 least recently used
        // buffers are given back; a second quiet trim finds nothing more.
        assert_eq!(bufs.trim(true), 32);
        assert_eq!(bufs.fill(), INITIAL_FILL);
        assert_eq!(bufs.trim(true), 0);
        // A given-back buffer reads as zeroed memory.
        assert!(bufs.get(0, 4096).iter().all(|&b| b == 0));
        ring.submitter().unregister_buf_ring(5).unwrap();
    }

    /// A burst on a ring of 64 buffers: the ring runs dry, then every
    /// buffer goes through the kernel once and back into the ring.
    fn burst_through_64(bufs: &mut BufRing) {
        for bid in 0..INITIAL_FILL {
            bufs.taken(bid);
        }
        bufs.ran_dry();
        for bid in (0..INITIAL_FILL).rev() {
            bufs.recycle(bid);
        }
        bufs.publish();
        let order: Vec<u16> = (0..INITIAL_FILL).chain(INITIAL_FILL..64).collect();
        for &bid in &order {
            bufs.taken(bid);
        }
        for &bid in &order {
            bufs.recycle(bid);
        }
        bufs.publish();
    }

    #[test]
    fn buffers_left_in_the_ring_after_a_burst_are_given_back_where_allowed() {
        probe().expect("io_uring available on the test machine");
        for allowed in [false, true] {
            let (ring, _) = new_ring(8).unwrap();
            let mut bufs = BufRing::new(&ring, 6, 64, 4096).unwrap();
            if allowed {
                bufs.allow_trim_in_ring();
            }
            burst_through_64(&mut bufs);
            assert_eq!(bufs.in_ring, 64);
            assert_eq!(bufs.trim(true), 0, "right after running dry");
            // Quiet: the fill halves; the 32 entries the kernel reaches last
            // are given back if allowed, the 32 next to be used stay.
            assert_eq!(bufs.trim(true), if allowed { 32 } else { 0 });
            assert_eq!(bufs.trim(true), 0);
            ring.submitter().unregister_buf_ring(6).unwrap();
        }
    }

    /// Regression (found at 1,000,000 connections: replies read as zero
    /// bytes): with more completions than the completion queue holds, the
    /// kernel has filled buffers this side has not seen taken yet; a trim
    /// then must not give them back.
    #[test]
    fn a_trim_never_zeroes_buffers_whose_completions_are_not_reaped() {
        use std::io::Write;
        use std::os::fd::AsRawFd;

        probe().expect("io_uring available on the test machine");
        const GROUP: u16 = 7;
        const SIZE: usize = 16;
        const CHUNKS: usize = 60;
        // 4 entries: a completion queue of 16, far fewer than the receives.
        let (mut ring, mode) = new_ring(4).unwrap();
        if mode != "single_issuer+defer_taskrun" {
            // In-ring trims are allowed only on such rings.
            return;
        }
        let mut bufs = BufRing::new(&ring, GROUP, 64, SIZE).unwrap();
        bufs.allow_trim_in_ring();
        // After a burst: all 64 buffers used once and back in the ring, the
        // fill at 64 but about to halve at the next trim.
        burst_through_64(&mut bufs);
        assert_eq!(bufs.trim(true), 0, "right after running dry");

        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        let recv = io_uring::opcode::RecvMulti::new(io_uring::types::Fd(server.as_raw_fd()), GROUP)
            .build()
            .user_data(1);
        // SAFETY: the buffers belong to the registered group, which stays
        // registered until the end of the test.
        unsafe { ring.submission().push(&recv).unwrap() };
        let sent: Vec<u8> = (0..CHUNKS * SIZE).map(|i| (i % 251) as u8 + 1).collect();
        client.write_all(&sent).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));

        let mut received = Vec::new();
        let mut trimmed = false;
        let timeout = io_uring::types::Timespec::new().nsec(100_000_000);
        let args = io_uring::types::SubmitArgs::new().timespec(&timeout);
        for _ in 0..50 {
            match ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(libc::ETIME) => {}
                Err(e) => panic!("io_uring_enter: {e}"),
            }
            let cqes: Vec<_> = ring.completion().collect();
            for cqe in &cqes {
                assert!(cqe.result() > 0, "receive failed: {}", cqe.result());
                let bid = io_uring::cqueue::buffer_select(cqe.flags()).unwrap();
                bufs.taken(bid);
                received.extend_from_slice(bufs.get(bid, cqe.result() as usize));
                bufs.recycle(bid);
                if !io_uring::cqueue::more(cqe.flags()) {
                    // The kernel may end a multishot receive when its
                    // completions overflow: go on with a new one.
                    // SAFETY: as above.
                    unsafe { ring.submission().push(&recv).unwrap() };
                }
            }
            if !trimmed {
                // The shard's trim between two batches, as the driver does it.
                trimmed = true;
                let settled = ring.completion().is_empty() && !ring.submission().cq_overflow();
                assert!(!settled, "the test needs completions held back");
                bufs.trim(settled);
            }
            if received.len() >= sent.len() {
                break;
            }
        }
        assert_eq!(received.len(), sent.len());
        assert!(
            received == sent,
            "received bytes differ from those sent (zeroed buffers?)"
        );
        drop(ring);
    }

    #[test]
    fn rejects_bad_buffer_ring_shapes() {
        let (ring, _) = new_ring(8).unwrap();
        assert!(BufRing::new(&ring, 1, 6, 4096).is_err());
        assert!(BufRing::new(&ring, 1, 8, 0).is_err());
    }
}
