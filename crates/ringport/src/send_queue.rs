//! Per-connection outbound byte queue, filled from a per-shard chunk pool.
//!
//! Small frames are copied into pooled 16 KiB chunks (many frames share one
//! chunk, so an echo of small messages needs no allocation once the pool is
//! warm); large payloads handed over as [`Bytes`] are queued by reference, not
//! copied. The queue hands the kernel an iovec list over its front segments
//! and is advanced by the byte count each send completion reports. Memory
//! under an in-flight send is never released or rewritten: appends only add
//! bytes past what the iovecs cover, and `consume` releases only what the
//! kernel reported as sent.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use crate::stats::SEND_CHUNKS;

/// Size of one pooled send chunk.
pub(crate) const CHUNK_SIZE: usize = 16 * 1024;
/// Payloads handed over as `Bytes` below this size are copied into a chunk
/// (fewer iovecs); larger ones are queued by reference.
const SHARE_MIN: usize = 4 * 1024;

/// Queue bodies kept for reuse by one shard (each with the segment list's
/// small allocation, ~200 bytes in all), so that queues filled and drained
/// per message (an echo on many connections at once) allocate nothing once
/// warm. At most `MAX_KEEP_BODIES` are kept after a burst; [`ChunkPool::trim`]
/// (every tick) lets the pool shrink back towards `KEEP_BODIES` when they
/// stop being used.
const KEEP_BODIES: usize = 256;
const MAX_KEEP_BODIES: usize = 16 * 1024;

/// Segment-list capacity a reused queue body keeps at most.
const KEEP_SEGMENTS: usize = 16;

/// Free chunks kept by one shard. Chunks beyond this are freed when
/// returned, so an idle shard does not keep the memory of a past burst.
/// Also keeps the bodies of emptied queues (see [`SendQueue`]).
pub(crate) struct ChunkPool {
    /// Empty vectors of capacity `CHUNK_SIZE`: filled by appending, so a
    /// new chunk is never zeroed first, and never reallocated (appends stop
    /// at the capacity), so iovecs into it stay valid.
    free: Vec<Vec<u8>>,
    keep: usize,
    /// Empty queue bodies, at most `MAX_KEEP_BODIES`. Boxed: a body moves
    /// between the pool and a queue as one pointer.
    #[allow(clippy::vec_box)]
    bodies: Vec<Box<QueueBody>>,
    /// Fewest bodies in `bodies` since the last trim: that many were not
    /// needed.
    bodies_low: usize,
}

impl ChunkPool {
    pub fn new(keep: usize) -> Self {
        ChunkPool {
            free: Vec::new(),
            keep,
            bodies: Vec::new(),
            bodies_low: 0,
        }
    }

    /// Frees half of the bodies beyond `KEEP_BODIES` that were not used
    /// since the last call (called every tick), so an idle shard gives back
    /// the bodies of a past burst within a few ticks.
    pub fn trim(&mut self) {
        let unused = self.bodies_low.min(self.bodies.len());
        let excess = unused.min(self.bodies.len().saturating_sub(KEEP_BODIES));
        let keep = self.bodies.len() - excess.div_ceil(2);
        self.bodies.truncate(keep);
        self.bodies.shrink_to(keep.max(KEEP_BODIES));
        self.bodies_low = self.bodies.len();
    }

    fn take_body(&mut self) -> Box<QueueBody> {
        let body = self.bodies.pop().unwrap_or_default();
        self.bodies_low = self.bodies_low.min(self.bodies.len());
        body
    }

    fn give_body(&mut self, mut body: Box<QueueBody>) {
        debug_assert!(body.segments.is_empty());
        if self.bodies.len() < MAX_KEEP_BODIES {
            // Checked first: nearly every body comes back small, and the
            // call costs as much as the rest of this (once per reply).
            if body.segments.capacity() > KEEP_SEGMENTS {
                body.segments.shrink_to(KEEP_SEGMENTS);
            }
            body.front_offset = 0;
            body.len = 0;
            self.bodies.push(body);
        }
    }

    fn take(&mut self) -> Vec<u8> {
        self.free.pop().unwrap_or_else(|| {
            SEND_CHUNKS.fetch_add(1, Ordering::Relaxed);
            Vec::with_capacity(CHUNK_SIZE)
        })
    }

    /// Frees half of the free chunks above a small floor: called every
    /// few seconds, so the pool of a shard that served a burst shrinks back
    /// while one that keeps sending keeps what it uses. Returns how many
    /// chunks were freed.
    pub fn trim_chunks(&mut self) -> usize {
        const FLOOR: usize = 16;
        let excess = self.free.len().saturating_sub(FLOOR);
        let freed = excess.div_ceil(2);
        self.free.truncate(self.free.len() - freed);
        if self.free.capacity() > 2 * self.free.len().max(FLOOR) {
            self.free.shrink_to(self.free.len().max(FLOOR));
        }
        SEND_CHUNKS.fetch_sub(freed, Ordering::Relaxed);
        freed
    }

    fn give(&mut self, mut chunk: Vec<u8>) {
        if self.free.len() < self.keep {
            chunk.clear();
            self.free.push(chunk);
        } else {
            SEND_CHUNKS.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for ChunkPool {
    fn drop(&mut self) {
        SEND_CHUNKS.fetch_sub(self.free.len(), Ordering::Relaxed);
    }
}

enum Segment {
    /// A pooled chunk holding queued data.
    Chunk(Vec<u8>),
    Shared(Bytes),
}

impl Segment {
    fn bytes(&self) -> &[u8] {
        match self {
            Segment::Chunk(buf) => buf,
            Segment::Shared(b) => b,
        }
    }
}

/// A connection's queue: one pointer while empty (most connections, most
/// of the time); the body is taken from the shard's [`ChunkPool`] when data
/// is queued and given back when the queue drains.
#[derive(Default)]
pub(crate) struct SendQueue {
    body: Option<Box<QueueBody>>,
}

/// The segments of a non-empty queue.
#[derive(Default)]
pub(crate) struct QueueBody {
    segments: VecDeque<Segment>,
    /// Bytes of the front segment already written.
    front_offset: usize,
    /// Unsent bytes in the queue.
    len: usize,
}

impl SendQueue {
    #[inline]
    pub fn len(&self) -> usize {
        self.body.as_ref().map_or(0, |b| b.len)
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the unsent bytes to `out` (engine tests read what a send
    /// would write).
    #[cfg(test)]
    pub fn copy_to(&self, out: &mut Vec<u8>) {
        if let Some(body) = &self.body {
            for (i, seg) in body.segments.iter().enumerate() {
                let bytes = seg.bytes();
                out.extend_from_slice(if i == 0 {
                    &bytes[body.front_offset..]
                } else {
                    bytes
                });
            }
        }
    }

    /// Copies `parts` (header, payload, trailer) to the end of the queue.
    #[inline]
    pub fn push_copy(&mut self, pool: &mut ChunkPool, parts: &[&[u8]]) {
        let body = self.body.get_or_insert_with(|| pool.take_body());
        // Usually all parts fit the last chunk: one check, then the copies
        // (an echo of small messages: a third of `append`'s instructions).
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if let Some(Segment::Chunk(buf)) = body.segments.back_mut()
            && CHUNK_SIZE - buf.len() >= total
        {
            for part in parts {
                buf.extend_from_slice(part);
            }
            body.len += total;
            return;
        }
        // An empty queue (every reply of a ping-pong): one fresh chunk for
        // all parts, rather than `append` finding there is none, part by part.
        if body.segments.is_empty() && total <= CHUNK_SIZE {
            let mut buf = pool.take();
            for part in parts {
                buf.extend_from_slice(part);
            }
            body.segments.push_back(Segment::Chunk(buf));
            body.len += total;
            return;
        }
        for part in parts {
            body.append(pool, part);
        }
    }

    /// Queues `header`, then `payload` by reference (copied if small), then
    /// `trailer`.
    pub fn push_shared(
        &mut self,
        pool: &mut ChunkPool,
        header: &[u8],
        payload: Bytes,
        trailer: &[u8],
    ) {
        let body = self.body.get_or_insert_with(|| pool.take_body());
        body.push_shared(pool, header, payload, trailer);
    }

    /// Fills `iov` with up to `max` iovecs over the unsent bytes, front
    /// first; returns how many bytes they cover. The memory they point to
    /// stays valid and unchanged until `consume` or `clear`.
    pub fn fill_iovecs(&self, iov: &mut Vec<libc::iovec>, max: usize) -> usize {
        iov.clear();
        self.body.as_ref().map_or(0, |b| b.fill_iovecs(iov, max))
    }

    /// Drops the first `n` bytes (the kernel wrote them), returning emptied
    /// chunks (and, once empty, the body) to the pool.
    pub fn consume(&mut self, pool: &mut ChunkPool, n: usize) {
        let Some(body) = self.body.as_mut() else {
            debug_assert_eq!(n, 0);
            return;
        };
        body.consume(pool, n);
        if body.len == 0 {
            self.clear(pool);
        }
    }

    /// Drops everything queued. Only call when no send is in flight.
    pub fn clear(&mut self, pool: &mut ChunkPool) {
        if let Some(mut body) = self.body.take() {
            body.clear(pool);
            pool.give_body(body);
        }
    }
}

impl QueueBody {
    fn push_shared(&mut self, pool: &mut ChunkPool, header: &[u8], payload: Bytes, trailer: &[u8]) {
        self.append(pool, header);
        if payload.len() < SHARE_MIN {
            self.append(pool, &payload);
        } else {
            self.len += payload.len();
            self.segments.push_back(Segment::Shared(payload));
        }
        self.append(pool, trailer);
    }

    fn append(&mut self, pool: &mut ChunkPool, mut data: &[u8]) {
        self.len += data.len();
        while !data.is_empty() {
            if let Some(Segment::Chunk(buf)) = self.segments.back_mut() {
                let room = CHUNK_SIZE - buf.len();
                if room > 0 {
                    let n = room.min(data.len());
                    buf.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    continue;
                }
            }
            self.segments.push_back(Segment::Chunk(pool.take()));
        }
    }

    fn fill_iovecs(&self, iov: &mut Vec<libc::iovec>, max: usize) -> usize {
        let mut total = 0;
        for (i, seg) in self.segments.iter().take(max).enumerate() {
            let mut bytes = seg.bytes();
            if i == 0 {
                bytes = &bytes[self.front_offset..];
            }
            if bytes.is_empty() {
                continue;
            }
            iov.push(libc::iovec {
                iov_base: bytes.as_ptr() as *mut libc::c_void,
                iov_len: bytes.len(),
            });
            total += bytes.len();
        }
        total
    }

    fn consume(&mut self, pool: &mut ChunkPool, mut n: usize) {
        debug_assert!(n <= self.len);
        self.len -= n.min(self.len);
        while n > 0 {
            let Some(front) = self.segments.front() else {
                break;
            };
            let avail = front.bytes().len() - self.front_offset;
            if n < avail {
                self.front_offset += n;
                return;
            }
            n -= avail;
            self.front_offset = 0;
            self.pop_front(pool);
        }
        // A fully drained chunk still at the front (written exactly to its
        // end) is released by the caller, which clears an empty queue.
    }

    fn pop_front(&mut self, pool: &mut ChunkPool) {
        if let Some(Segment::Chunk(buf)) = self.segments.pop_front() {
            pool.give(buf);
        }
    }

    fn clear(&mut self, pool: &mut ChunkPool) {
        while !self.segments.is_empty() {
            self.pop_front(pool);
        }
        self.front_offset = 0;
        self.len = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_shrinks_back_after_a_burst_by_halves_to_a_floor() {
        let mut pool = ChunkPool::new(1024);
        let chunks: Vec<Vec<u8>> = (0..400).map(|_| pool.take()).collect();
        for c in chunks {
            pool.give(c);
        }
        assert_eq!(pool.free.len(), 400);
        assert_eq!(pool.trim_chunks(), 192);
        assert_eq!(pool.free.len(), 208);
        let mut rounds = 1;
        while pool.trim_chunks() > 0 {
            rounds += 1;
        }
        assert_eq!(
            pool.free.len(),
            16,
            "a small floor stays for the next sends"
        );
        assert!(rounds <= 10, "{rounds} trims to shrink");
        assert_eq!(pool.take().capacity(), CHUNK_SIZE);
    }

    fn drain(q: &mut SendQueue, pool: &mut ChunkPool, step: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut iov = Vec::new();
        while !q.is_empty() {
            let covered = q.fill_iovecs(&mut iov, 8);
            assert!(covered > 0);
            let mut want = step.min(covered);
            let mut taken = 0;
            for v in &iov {
                if want == 0 {
                    break;
                }
                let n = v.iov_len.min(want);
                // SAFETY (test): the iovec points into the queue's live
                // segments, unchanged until consume.
                out.extend_from_slice(unsafe {
                    std::slice::from_raw_parts(v.iov_base as *const u8, n)
                });
                want -= n;
                taken += n;
            }
            q.consume(pool, taken);
        }
        out
    }

    #[test]
    fn copies_and_shares_in_order_with_partial_writes() {
        let mut pool = ChunkPool::new(4);
        let mut q = SendQueue::default();
        let big: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
        let mut expect = Vec::new();
        for i in 0..50u8 {
            q.push_copy(&mut pool, &[&[i; 3], &[i; 700]]);
            expect.extend_from_slice(&[i; 703]);
        }
        q.push_shared(&mut pool, b"HDR", Bytes::from(big.clone()), b"\n");
        expect.extend_from_slice(b"HDR");
        expect.extend_from_slice(&big);
        expect.push(b'\n');
        assert_eq!(q.len(), expect.len());
        assert_eq!(drain(&mut q, &mut pool, 5_000), expect);
        assert_eq!(q.len(), 0);
    }

    /// Each way `push_copy` can take: into an empty queue (one fresh
    /// chunk for all parts when they fit one, `append` when not), into the
    /// last chunk when it has room, across chunks when it has not.
    #[test]
    fn push_copy_keeps_order_on_every_path() {
        let mut pool = ChunkPool::new(8);
        let mut q = SendQueue::default();
        let mut expect = Vec::new();
        let mut push = |q: &mut SendQueue, pool: &mut ChunkPool, parts: &[&[u8]]| {
            q.push_copy(pool, parts);
            for part in parts {
                expect.extend_from_slice(part);
            }
        };
        let segments = |q: &SendQueue| q.body.as_ref().map_or(0, |b| b.segments.len());
        // Empty queue, parts filling exactly one chunk: one segment.
        let half = vec![7u8; CHUNK_SIZE / 2 - 2];
        push(&mut q, &mut pool, &[b"ab", &half, &half, b"yz"]);
        assert_eq!(segments(&q), 1);
        assert_eq!(q.len(), CHUNK_SIZE);
        // A full last chunk: the next message starts a new one.
        push(&mut q, &mut pool, &[b"HDR", b"payload", b"\n"]);
        assert_eq!(segments(&q), 2);
        // Room in the last chunk: no new segment.
        push(&mut q, &mut pool, &[b"h", b"more"]);
        assert_eq!(segments(&q), 2);
        // Not enough room: fills the last chunk, then continues in a new
        // one (16 bytes were in it, so 28 spill over).
        let big = vec![3u8; CHUNK_SIZE + 10];
        push(&mut q, &mut pool, &[b"h2", &big]);
        assert_eq!(segments(&q), 3);
        assert_eq!(q.len(), expect.len());
        assert_eq!(drain(&mut q, &mut pool, 777), expect);
        // Empty again, a message larger than a chunk: split over chunks.
        let mut expect = Vec::new();
        let first = vec![1u8; CHUNK_SIZE - 1];
        q.push_copy(&mut pool, &[b"ab", &first]);
        expect.extend_from_slice(b"ab");
        expect.extend_from_slice(&first);
        assert_eq!(segments(&q), 2);
        assert_eq!(drain(&mut q, &mut pool, 4096), expect);
    }

    #[test]
    fn a_body_that_grew_goes_back_shrunk_and_a_small_one_as_it_is() {
        let mut pool = ChunkPool::new(64);
        let mut q = SendQueue::default();
        q.push_copy(&mut pool, &[&vec![1u8; CHUNK_SIZE * 40]]);
        assert!(q.body.as_ref().unwrap().segments.capacity() > KEEP_SEGMENTS);
        q.clear(&mut pool);
        let body = pool.bodies.last().unwrap();
        assert!(body.segments.capacity() <= KEEP_SEGMENTS);
        assert_eq!((body.len, body.front_offset), (0, 0));
        // A small one keeps its (small) deque: no reallocation next time.
        let mut q = SendQueue::default();
        q.push_copy(&mut pool, &[b"x"]);
        let capacity = q.body.as_ref().unwrap().segments.capacity();
        assert!(capacity <= KEEP_SEGMENTS);
        q.clear(&mut pool);
        assert_eq!(pool.bodies.last().unwrap().segments.capacity(), capacity);
    }

    #[test]
    fn pool_keeps_at_most_its_bound() {
        let mut pool = ChunkPool::new(2);
        let mut q = SendQueue::default();
        q.push_copy(&mut pool, &[&vec![1u8; CHUNK_SIZE * 5]]);
        q.clear(&mut pool);
        assert_eq!(pool.free.len(), 2);
    }

    #[test]
    fn unused_bodies_are_trimmed_back() {
        let mut pool = ChunkPool::new(4);
        let mut queues: Vec<SendQueue> = (0..1000).map(|_| SendQueue::default()).collect();
        for q in &mut queues {
            q.push_copy(&mut pool, &[b"x"]);
        }
        for q in &mut queues {
            q.clear(&mut pool);
        }
        assert_eq!(pool.bodies.len(), 1000);
        pool.trim(); // the burst's round: all were used
        assert_eq!(pool.bodies.len(), 1000);
        for _ in 0..20 {
            pool.trim();
        }
        assert_eq!(pool.bodies.len(), KEEP_BODIES);
    }

    #[test]
    fn an_empty_queue_is_one_pointer_and_its_body_is_reused() {
        assert_eq!(std::mem::size_of::<SendQueue>(), 8);
        let mut pool = ChunkPool::new(4);
        let mut q = SendQueue::default();
        q.push_copy(&mut pool, &[b"abc"]);
        assert!(q.body.is_some());
        let body: *const QueueBody = &**q.body.as_ref().unwrap();
        q.consume(&mut pool, 3);
        assert!(q.body.is_none() && q.is_empty());
        assert_eq!(pool.bodies.len(), 1);
        q.push_copy(&mut pool, &[b"de"]);
        assert_eq!(&**q.body.as_ref().unwrap() as *const QueueBody, body);
        assert_eq!(drain(&mut q, &mut pool, 1), b"de");
        let mut iov = Vec::new();
        assert_eq!(q.fill_iovecs(&mut iov, 8), 0);
        assert!(iov.is_empty());
    }
}
