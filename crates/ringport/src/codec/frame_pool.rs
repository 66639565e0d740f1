//! Recycling of large reassembly buffers (see [`FramePool`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

/// Large reassembly buffers kept for reuse, shared by the framers of one
/// shard (cheap to clone: a reference).
///
/// A large frame (above 64 KiB) is reassembled in a buffer of its own, and
/// the buffer is handed to the handler as [`Bytes`] so that echoing or
/// forwarding the message does not copy it. Without recycling every such
/// frame costs a fresh allocation: for a 16 MiB frame, a growth by
/// reallocation that copies what arrived so far several times over, and a
/// page fault (with the page zeroed by the kernel) for every page of the
/// new buffer. A [`FramePool`] takes those buffers back when the last
/// `Bytes` pointing into them is dropped (on whatever thread that happens:
/// after the send that echoed it completed, say) and lends them to the
/// next large frame of a [`Framer`](crate::codec::Framer) that uses the pool.
///
/// Bounded: the pool keeps at most its byte limit, and a pool that lent
/// nothing between two [`trim`](FramePool::trim)s frees what it keeps, so
/// one burst of large messages does not pin memory for good.
#[derive(Clone, Debug)]
pub struct FramePool {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    limit: usize,
    free: Mutex<Free>,
    /// `Free::bytes`, readable without the lock (for statistics).
    kept: AtomicUsize,
}

#[derive(Debug, Default)]
struct Free {
    bufs: Vec<Vec<u8>>,
    /// Capacity of `bufs`, summed.
    bytes: usize,
    /// A buffer was lent since the last trim.
    lent: bool,
}

impl FramePool {
    /// A pool that keeps at most `limit` bytes of buffers (their
    /// capacity). Allocates nothing until buffers come back.
    pub fn new(limit: usize) -> Self {
        FramePool {
            inner: Arc::new(Inner {
                limit,
                free: Mutex::new(Free::default()),
                kept: AtomicUsize::new(0),
            }),
        }
    }

    /// The most bytes the pool keeps.
    pub fn limit(&self) -> usize {
        self.inner.limit
    }

    /// Bytes kept now (capacity of the buffers waiting to be lent).
    /// Does not take the pool's lock.
    pub fn kept_bytes(&self) -> usize {
        self.inner.kept.load(Ordering::Relaxed)
    }

    /// Lends the smallest kept buffer whose capacity lies in `min..=max`,
    /// empty.
    pub fn take(&self, min: usize, max: usize) -> Option<Vec<u8>> {
        let mut free = self.free();
        let (index, _) = free
            .bufs
            .iter()
            .enumerate()
            .map(|(i, b)| (i, b.capacity()))
            .filter(|&(_, cap)| (min..=max).contains(&cap))
            .min_by_key(|&(_, cap)| cap)?;
        let buf = free.bufs.swap_remove(index);
        free.bytes -= buf.capacity();
        free.lent = true;
        self.inner.kept.store(free.bytes, Ordering::Relaxed);
        Some(buf)
    }

    /// Takes a buffer back to lend it again, if the pool has room for it
    /// (else it is freed, outside the lock).
    pub fn give(&self, mut buf: Vec<u8>) {
        let cap = buf.capacity();
        if cap == 0 {
            return;
        }
        buf.clear();
        let mut free = self.free();
        if free.bytes + cap <= self.inner.limit {
            free.bytes += cap;
            free.bufs.push(buf);
            self.inner.kept.store(free.bytes, Ordering::Relaxed);
            return;
        }
        drop(free);
        drop(buf);
    }

    /// Frees every kept buffer if none was lent since the last call (the
    /// shard calls it every tick); returns the bytes freed.
    pub fn trim(&self) -> usize {
        let freed = {
            let mut free = self.free();
            if std::mem::take(&mut free.lent) {
                return 0;
            }
            free.bytes = 0;
            self.inner.kept.store(0, Ordering::Relaxed);
            std::mem::take(&mut free.bufs)
        };
        freed.iter().map(Vec::capacity).sum()
    }

    /// `buf` as [`Bytes`] that give it back to this pool when the last
    /// reference is dropped.
    pub fn share(&self, buf: Vec<u8>) -> Bytes {
        Bytes::from_owner(Lent {
            buf,
            pool: self.clone(),
        })
    }

    fn free(&self) -> MutexGuard<'_, Free> {
        // A panic while holding the lock leaves the list consistent (every
        // update is a push or a remove with its count), so a poisoned lock
        // is used as it is.
        self.inner.free.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A pooled buffer owned by [`Bytes`]; back to the pool on drop.
struct Lent {
    buf: Vec<u8>,
    pool: FramePool,
}

impl AsRef<[u8]> for Lent {
    fn as_ref(&self) -> &[u8] {
        &self.buf
    }
}

impl Drop for Lent {
    fn drop(&mut self) {
        self.pool.give(std::mem::take(&mut self.buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shared_buffer_comes_back_when_its_last_bytes_are_dropped() {
        let pool = FramePool::new(1 << 20);
        let mut buf = Vec::with_capacity(100_000);
        buf.extend_from_slice(&[7u8; 1000]);
        let ptr = buf.as_ptr();
        let bytes = pool.share(buf);
        let part = bytes.slice(10..20);
        drop(bytes);
        assert_eq!(pool.kept_bytes(), 0, "a slice still refers to it");
        assert_eq!(&part[..], &[7u8; 10]);
        drop(part);
        assert_eq!(pool.kept_bytes(), 100_000);
        let again = pool.take(50_000, 200_000).expect("lent again");
        assert_eq!(again.as_ptr(), ptr, "the same memory");
        assert!(again.is_empty());
        assert_eq!(pool.kept_bytes(), 0);
    }

    #[test]
    fn take_picks_the_smallest_buffer_that_fits_and_none_outside_the_range() {
        let pool = FramePool::new(1 << 30);
        for cap in [300_000, 100_000, 200_000] {
            pool.give(Vec::with_capacity(cap));
        }
        assert_eq!(pool.take(150_000, 1 << 20).unwrap().capacity(), 200_000);
        assert!(pool.take(400_000, 1 << 20).is_none());
        assert!(pool.take(1, 50_000).is_none());
        assert_eq!(pool.take(0, usize::MAX).unwrap().capacity(), 100_000);
    }

    #[test]
    fn the_pool_keeps_no_more_than_its_limit() {
        let pool = FramePool::new(250_000);
        pool.give(Vec::with_capacity(100_000));
        pool.give(Vec::with_capacity(100_000));
        pool.give(Vec::with_capacity(100_000));
        assert_eq!(pool.kept_bytes(), 200_000);
        let off = FramePool::new(0);
        off.give(Vec::with_capacity(100_000));
        assert_eq!(off.kept_bytes(), 0);
    }

    #[test]
    fn trim_frees_only_a_pool_that_lent_nothing_since_the_last_trim() {
        let pool = FramePool::new(1 << 20);
        pool.give(Vec::with_capacity(100_000));
        pool.give(Vec::with_capacity(100_000));
        let lent = pool.take(0, usize::MAX).unwrap();
        assert_eq!(pool.trim(), 0, "in use since the last trim");
        pool.give(lent);
        assert_eq!(pool.kept_bytes(), 200_000);
        assert_eq!(pool.trim(), 200_000, "nothing lent since");
        assert_eq!(pool.kept_bytes(), 0);
    }

    #[test]
    fn buffers_come_back_from_other_threads() {
        let pool = FramePool::new(1 << 20);
        let bytes = pool.share(vec![1u8; 70_000]);
        std::thread::spawn(move || drop(bytes)).join().unwrap();
        assert!(pool.kept_bytes() >= 70_000);
    }
}
