//! Reassembly of frames across receive buffers.
//!
//! The server hands every received buffer of a connection to that
//! connection's [`Framer`]. Most buffers hold whole frames, so the common
//! path must be free: frames lying wholly inside the buffer are passed on as
//! sub-slices of it, without copying and without touching the heap. Only the
//! frame that straddles the end of a buffer is copied into a per-connection
//! reassembly buffer, which grows as its bytes arrive (never to the size the
//! peer announces, which a hostile peer controls) and is released after a
//! large frame so idle connections cost no memory.

use std::mem::MaybeUninit;

use bytes::Bytes;

use super::{Codec, CodecError, Decode, FramePool, MAX_HEADER_LEN};

/// A reassembly buffer whose capacity exceeds this is freed once its frame
/// has been delivered, so that a single large message does not pin memory
/// for the rest of the connection's life.
const RELEASE_ABOVE: usize = 64 * 1024;

/// Smallest allocation made for a partial frame: avoids a string of tiny
/// reallocations while a header trickles in.
const MIN_CAPACITY: usize = 256;

/// A receive target ([`Framer::recv_target`]) grows the buffer to this many
/// times the bytes that arrived: more than the copying path's doubling,
/// because growing a large buffer moves it (glibc's realloc copies once its
/// dynamic mmap threshold has risen past the frame size, which the first
/// large frame does), and every copy saved is the point of receiving
/// directly. Still bounded by what arrived, and accounted (`heap_bytes`).
const DIRECT_GROWTH: usize = 4;

/// When the codec cannot say how many bytes it needs (`NeedMore` without a
/// hint) while a partial frame is buffered, at least this many new bytes are
/// appended before asking again (or as many as are buffered, whichever is
/// more, so that the number of attempts per frame stays logarithmic).
const MIN_SCAN_STEP: usize = 4096;

/// Where a located frame lies in the reassembly buffer.
#[derive(Debug, Clone, Copy)]
struct Layout {
    skip: usize,
    payload: usize,
    total: usize,
}

/// Cuts a byte stream into frames with a [`Codec`]; one per connection.
///
/// It is sans-I/O: the caller feeds bytes as they are received and gets
/// whole payloads back through a callback, in order.
#[derive(Debug, Clone)]
pub struct Framer<C: Codec> {
    codec: C,
    /// Bytes of the frame in progress; the frame starts at index 0.
    buf: Vec<u8>,
    /// The frame in `buf`, once the codec has located it.
    layout: Option<Layout>,
    /// The codec's `at_least` from its last `NeedMore`.
    hint: Option<usize>,
    /// `buf` holds bytes left after a frame that ended inside them, which
    /// the codec has not looked at yet. Only a codec whose frames can be
    /// shorter than the header it reads (tokio-util's rules with `num_skip`
    /// below the end of the length field) leaves such bytes.
    fresh: bool,
    /// Where large reassembly buffers come from and go back to, if set.
    pool: Option<FramePool>,
}

/// A frame cut short: what [`Framer::partial`] reports, e.g. when the
/// stream ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partial {
    /// Bytes of the frame received (and buffered) so far.
    pub have: u64,
    /// Bytes still missing to complete it, when the frame has been located
    /// (its header was complete); `None` while the codec cannot yet say how
    /// long the frame is (a header still incomplete, a line without its end).
    pub missing: Option<u64>,
}

impl<C: Codec> Framer<C> {
    /// A framer with nothing buffered. Allocates nothing.
    pub fn new(codec: C) -> Self {
        Framer {
            codec,
            buf: Vec::new(),
            layout: None,
            hint: None,
            fresh: false,
            pool: None,
        }
    }

    /// A framer whose large reassembly buffers are recycled through `pool`
    /// (shared with other framers, e.g. of one thread's connections): a
    /// located frame that grows past 64 KiB continues in a kept buffer that
    /// holds all of it, when the pool has one, instead of growing by
    /// reallocation into fresh memory; and a large frame handed over as
    /// [`Bytes`] ([`feed_shared`](Self::feed_shared)) returns its buffer to
    /// the pool when the last reference is dropped. Allocates nothing.
    ///
    /// A kept buffer is memory the process already holds, so lending it to
    /// a frame that has brought 32 KiB (16 KiB when received directly) of
    /// its announced length costs nothing new; [`heap_bytes`](Self::heap_bytes)
    /// counts its whole capacity, as for any buffer.
    pub fn with_pool(codec: C, pool: FramePool) -> Self {
        Framer {
            pool: Some(pool),
            ..Framer::new(codec)
        }
    }

    /// The codec, e.g. to encode replies with the same settings.
    pub fn codec(&self) -> &C {
        &self.codec
    }

    /// Feed received bytes. Calls `on_frame(payload)` for every complete
    /// frame, in order.
    ///
    /// If `on_frame` returns false, stop: the rest of `data` is discarded
    /// (the connection is being closed). Complete frames lying wholly inside
    /// `data` are passed as sub-slices of `data` (zero copy); only a frame
    /// that spans calls is copied into the internal reassembly buffer.
    ///
    /// On error the connection must be closed: the framer's state is then
    /// unspecified (but using it further never panics).
    pub fn feed(
        &mut self,
        data: &[u8],
        on_frame: impl FnMut(&[u8]) -> bool,
    ) -> Result<(), CodecError> {
        self.feed_until(data, on_frame).map(|_| ())
    }

    /// Like [`feed`](Self::feed), but when `on_frame` returns false the
    /// bytes after that frame are left unconsumed instead of discarded, and
    /// the number of bytes of `data` consumed is returned (all of them
    /// unless `on_frame` stopped). The unconsumed bytes are to be fed again
    /// later: this is how a blocking client takes one frame at a time out of
    /// a read that returned several.
    pub fn feed_until(
        &mut self,
        data: &[u8],
        mut on_frame: impl FnMut(&[u8]) -> bool,
    ) -> Result<usize, CodecError> {
        self.feed_shared(data, |payload, _| on_frame(payload))
    }

    /// Like [`feed_until`](Self::feed_until), and for a large frame that
    /// had to be reassembled (one whose buffer would be freed afterwards
    /// anyway) also hands over the payload as [`Bytes`] that own the
    /// reassembly buffer: the caller can keep or forward it (e.g. queue it
    /// for sending by reference) without copying. The slice and the `Bytes`
    /// are then the same bytes.
    pub fn feed_shared(
        &mut self,
        data: &[u8],
        mut on_frame: impl FnMut(&[u8], Option<&Bytes>) -> bool,
    ) -> Result<usize, CodecError> {
        let mut pos = 0;

        // 1. Complete the frame in progress, copying only its own bytes.
        while !self.buf.is_empty() {
            if let Some(layout) = self.layout {
                if self.buf.len() < layout.total {
                    let take = (layout.total - self.buf.len()).min(data.len() - pos);
                    self.append(&data[pos..pos + take], Some(layout.total));
                    pos += take;
                    if self.buf.len() < layout.total {
                        return Ok(pos);
                    }
                }
                self.layout = None;
                if !self.deliver_buffered(layout, &mut on_frame) {
                    return Ok(pos);
                }
                // Bytes left after the frame (if any) are decoded next.
                continue;
            }
            // Not located yet: give the codec more bytes, as many as it
            // asked for, else a geometrically growing step (none if it has
            // not seen what is buffered yet).
            let had = self.buf.len();
            let take = if self.fresh {
                0
            } else {
                if pos == data.len() {
                    return Ok(pos);
                }
                let want = match self.hint {
                    Some(at_least) if at_least > had => at_least - had,
                    // Without a hint, no frame can start further than the
                    // search limit: one byte past it is enough to fail.
                    _ => had
                        .max(MIN_SCAN_STEP)
                        .min((self.search_limit() + 1).saturating_sub(had))
                        .max(1),
                };
                want.min(data.len() - pos)
            };
            self.fresh = false;
            self.append(&data[pos..pos + take], None);
            match self.codec.decode(&self.buf)? {
                Decode::NeedMore { at_least } => {
                    pos += take;
                    self.need_more(at_least, self.buf.len())?;
                }
                Decode::Frame {
                    skip,
                    payload,
                    trailer,
                } => {
                    self.hint = None;
                    let layout = self.check(skip, payload, trailer)?;
                    // Keep what the frame needs, and what was held before
                    // (a frame may end inside it); bytes just appended past
                    // the frame's end go back to the zero-copy path.
                    let keep = layout.total.max(had).min(self.buf.len());
                    self.buf.truncate(keep);
                    pos += keep - had;
                    self.layout = Some(layout);
                }
            }
        }

        // 2. Frames lying wholly inside `data`: zero copy, no allocation.
        while pos < data.len() {
            let rest = &data[pos..];
            match self.codec.decode(rest)? {
                Decode::Frame {
                    skip,
                    payload,
                    trailer,
                } => {
                    let layout = self.check(skip, payload, trailer)?;
                    if layout.total > rest.len() {
                        // Spans into later reads: start reassembling.
                        self.append(rest, Some(layout.total));
                        self.layout = Some(layout);
                        return Ok(data.len());
                    }
                    self.codec.frame_consumed();
                    pos += layout.total;
                    if !on_frame(&rest[layout.skip..layout.skip + layout.payload], None) {
                        return Ok(pos);
                    }
                }
                Decode::NeedMore { at_least } => {
                    self.need_more(at_least, rest.len())?;
                    self.append(rest, None);
                    return Ok(data.len());
                }
            }
        }
        Ok(pos)
    }

    /// Room to receive the rest of the located frame in progress straight
    /// into the reassembly buffer (no copy): the buffer's spare capacity,
    /// at most the bytes the frame still misses (never past its end, so
    /// nothing after the frame lands here). `None` when no frame is
    /// located or it is complete.
    ///
    /// The buffer grows here with the bytes that arrived, as
    /// [`feed`](Self::feed) grows it but faster: to at most four times what
    /// it holds (or a small minimum), never to the length the header
    /// announces, so a peer that announces 16 MiB and
    /// sends 100 bytes still costs little; a target smaller than what is
    /// missing is followed by another once its bytes came. (With a
    /// [pool](Self::with_pool), a growth past 64 KiB takes a kept buffer
    /// that holds the whole frame instead, when there is one.)
    ///
    /// Write into it, then [`commit_received`](Self::commit_received) the
    /// bytes written; a frame completed so is delivered by the next
    /// [`feed_shared`](Self::feed_shared) (an empty one is enough).
    pub(crate) fn recv_target(&mut self) -> Option<&mut [MaybeUninit<u8>]> {
        let layout = self.layout?;
        let have = self.buf.len();
        let missing = layout.total.checked_sub(have).filter(|&m| m > 0)?;
        let spare = self.buf.capacity() - have;
        if spare < missing.min(have.max(MIN_CAPACITY)) {
            let target = have
                .saturating_mul(DIRECT_GROWTH)
                .max(MIN_CAPACITY)
                .min(layout.total)
                .max(have + 1);
            self.grow(target, Some(layout.total));
        }
        let room = (self.buf.capacity() - have).min(missing);
        Some(&mut self.buf.spare_capacity_mut()[..room])
    }

    /// Room to receive the next bytes of the stream straight into the
    /// reassembly buffer while nothing is buffered (between frames): `size`
    /// bytes, allocated now or lent by the [pool](Self::with_pool) (the
    /// caller bounds it; it may hold the end of a frame and what follows
    /// it, which the next feed decodes). `None` while bytes are buffered.
    pub(crate) fn recv_target_between(&mut self, size: usize) -> Option<&mut [MaybeUninit<u8>]> {
        if !self.buf.is_empty() || self.layout.is_some() || size == 0 {
            return None;
        }
        // Only a kept buffer of exactly this size: the caller's bound on
        // these buffers (bulk mode: 64 per shard, 256 KiB each) stays exact.
        if size > RELEASE_ABOVE
            && self.buf.capacity() < size
            && let Some(lent) = self.pool.as_ref().and_then(|p| p.take(size, size))
        {
            self.replace_buf(lent);
        }
        self.buf.reserve_exact(size);
        Some(&mut self.buf.spare_capacity_mut()[..size])
    }

    /// Bytes the located frame in progress still misses (`None`: no frame
    /// located).
    pub fn missing(&self) -> Option<usize> {
        self.layout.map(|l| l.total.saturating_sub(self.buf.len()))
    }

    /// Takes `n` bytes written into the slice the last
    /// [`recv_target`](Self::recv_target) or
    /// [`recv_target_between`](Self::recv_target_between) returned as
    /// received.
    ///
    /// # Safety
    ///
    /// The first `n` bytes of that slice have been initialised (written),
    /// and the framer was not used in between. `n` must not exceed the
    /// slice's length (it is clamped to it in any case).
    pub(crate) unsafe fn commit_received(&mut self, n: usize) {
        let have = self.buf.len();
        let spare = self.buf.capacity() - have;
        let room = match self.missing() {
            Some(missing) => missing.min(spare),
            // A target between frames: the codec has not seen these bytes.
            None => spare,
        };
        debug_assert!(n <= room, "committed {n} bytes into a target of {room}");
        // SAFETY: the caller guarantees the first `n` bytes of the spare
        // capacity were written (they are initialised), and `n` is clamped
        // to the spare capacity.
        unsafe { self.buf.set_len(have + n.min(room)) };
        if self.layout.is_none() && n > 0 {
            self.fresh = true;
        }
    }

    /// Bytes currently held for a partial frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Heap bytes held (capacity of the reassembly buffer), for memory
    /// accounting. The buffer grows with the bytes that actually arrived
    /// (at most twice what it holds, four times for a receive target, or a
    /// small minimum), never to the length a header announces.
    pub fn heap_bytes(&self) -> usize {
        self.buf.capacity()
    }

    /// The frame in progress, if any bytes of one are buffered: how many
    /// bytes of it arrived, and how many are missing when the frame's
    /// length is known. `None` when nothing is buffered (the stream is
    /// between frames).
    ///
    /// When the peer closes its side, `Some` means the stream ended inside
    /// a frame (tokio-util's `decode_eof` reports "bytes remaining on
    /// stream" in exactly that case).
    pub fn partial(&self) -> Option<Partial> {
        if self.buf.is_empty() {
            return None;
        }
        let have = self.buf.len();
        Some(Partial {
            have: have as u64,
            missing: self.layout.map(|l| l.total.saturating_sub(have) as u64),
        })
    }

    /// Validate a frame located by the codec. The codec is trusted to
    /// enforce its own limits, but a user codec with a bug must not make the
    /// framer overflow, loop forever on frames that consume nothing, or
    /// reassemble more than its declared maximum.
    fn check(&self, skip: usize, payload: usize, trailer: usize) -> Result<Layout, CodecError> {
        let max = self.codec.max_frame();
        if payload > max {
            return Err(CodecError::FrameTooLarge {
                len: payload as u64,
                max,
            });
        }
        let total = skip
            .checked_add(payload)
            .and_then(|n| n.checked_add(trailer))
            .ok_or(CodecError::FrameTooLarge { len: u64::MAX, max })?;
        if total == 0 {
            return Err(CodecError::InvalidHeader(
                "codec located a frame of zero bytes",
            ));
        }
        Ok(Layout {
            skip,
            payload,
            total,
        })
    }

    /// Record a `NeedMore`. A codec that gives no hint and still cannot
    /// locate a frame in more bytes than a maximal payload plus generous
    /// header and trailer room is treated as facing an oversize frame, so
    /// that no codec can make a connection buffer without bound.
    fn need_more(&mut self, at_least: Option<usize>, have: usize) -> Result<(), CodecError> {
        self.hint = at_least;
        if at_least.is_none() && have > self.search_limit() {
            return Err(CodecError::FrameTooLarge {
                len: have as u64,
                max: self.codec.max_frame(),
            });
        }
        Ok(())
    }

    fn search_limit(&self) -> usize {
        self.codec.max_frame().saturating_add(2 * MAX_HEADER_LEN)
    }

    /// Append to the reassembly buffer, growing it geometrically with the
    /// bytes that arrived: to twice what it will hold (amortised O(1) per
    /// byte), at least [`MIN_CAPACITY`], and never past the most this frame
    /// can need (`frame_total`, the located frame's length, else the search
    /// limit). Never by the length a header announces: a peer that
    /// announces 16 MiB and sends 100 bytes costs [`MIN_CAPACITY`].
    fn append(&mut self, bytes: &[u8], frame_total: Option<usize>) {
        let need = self.buf.len() + bytes.len();
        if need > self.buf.capacity() {
            let cap = frame_total.unwrap_or_else(|| self.search_limit());
            let target = need.saturating_mul(2).max(MIN_CAPACITY).min(cap).max(need);
            self.grow(target, frame_total);
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Grows the buffer's capacity to `target`, or, for a located frame of
    /// `frame_total` bytes growing past [`RELEASE_ABOVE`], moves what it
    /// holds into a buffer from the pool that holds the whole frame (and
    /// at most twice it), when there is one: no further growth, and memory
    /// already faulted in.
    fn grow(&mut self, target: usize, frame_total: Option<usize>) {
        if target > RELEASE_ABOVE
            && let (Some(total), Some(pool)) = (frame_total, &self.pool)
            && let Some(mut lent) = pool.take(total, total.saturating_mul(2))
        {
            lent.extend_from_slice(&self.buf);
            self.replace_buf(lent);
            return;
        }
        self.buf.reserve_exact(target - self.buf.len());
    }

    /// Puts `buf` in place of the reassembly buffer; a large one replaced
    /// goes back to the pool.
    fn replace_buf(&mut self, buf: Vec<u8>) {
        let old = std::mem::replace(&mut self.buf, buf);
        match &self.pool {
            Some(pool) if old.capacity() > RELEASE_ABOVE => pool.give(old),
            _ => drop(old),
        }
    }

    /// Deliver the complete frame at the start of the reassembly buffer and
    /// remove it, freeing the buffer if it grew large.
    fn deliver_buffered(
        &mut self,
        layout: Layout,
        on_frame: &mut impl FnMut(&[u8], Option<&Bytes>) -> bool,
    ) -> bool {
        self.codec.frame_consumed();
        let payload = layout.skip..layout.skip + layout.payload;
        let large = self.buf.capacity() > RELEASE_ABOVE;
        if large && self.buf.len() == layout.total {
            // Freed after this frame anyway: hand the buffer itself over
            // (back to the pool once the last reference is dropped).
            let buf = std::mem::take(&mut self.buf);
            let shared = match &self.pool {
                Some(pool) => pool.share(buf),
                None => Bytes::from(buf),
            };
            let shared = shared.slice(payload);
            return on_frame(&shared, Some(&shared));
        }
        let go_on = on_frame(&self.buf[payload], None);
        if self.buf.len() == layout.total {
            self.buf.clear();
        } else {
            self.buf.drain(..layout.total);
            self.fresh = true;
        }
        if large {
            let rest = self.buf.as_slice().to_vec();
            self.replace_buf(rest);
        }
        go_on
    }
}

#[cfg(test)]
mod tests;
