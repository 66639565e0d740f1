//! A scratch buffer lent out for one step and given back, so a hot path
//! reuses its allocation; one that grew past [`RETAIN`] is dropped when
//! given back, so a single large receive does not hold memory for good.

/// A scratch buffer keeps at most this much capacity between steps.
pub(super) const RETAIN: usize = 256 * 1024;

/// See the module docs.
#[derive(Default)]
pub(super) struct Scratch(Vec<u8>);

impl Scratch {
    /// The buffer, empty (a new one if it is lent out already).
    #[inline]
    pub fn take(&mut self) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.0);
        buf.clear();
        buf
    }

    /// Gives the buffer back (dropped if its capacity passed [`RETAIN`]).
    #[inline]
    pub fn put(&mut self, buf: Vec<u8>) {
        if buf.capacity() <= RETAIN {
            self.0 = buf;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_buffer_is_reused_unless_it_grew_too_large() {
        let mut s = Scratch::default();
        let mut buf = s.take();
        buf.extend_from_slice(b"abc");
        let kept = buf.as_ptr();
        s.put(buf);
        let again = s.take();
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), kept, "the same allocation");
        assert!(s.take().is_empty(), "lent out: a new, empty one");
        s.put(Vec::with_capacity(RETAIN + 1));
        assert_eq!(s.take().capacity(), 0, "a large one is dropped");
    }
}
