//! A fixed-length table whose memory is allocated a page at a time, on the
//! first write into that page.
//!
//! A shard's connection table can have hundreds of thousands of slots
//! while only a few are in use: allocating (and touching) every entry up
//! front would cost the whole table's memory in an idle server. Slots are
//! handed out by the kernel roughly from the lowest free index, so pages
//! fill from the bottom and an idle table costs one pointer per page.
//!
//! Reading an entry of a page never written gives the table's `empty`
//! value (`T::default()`); writing (`IndexMut`, [`PagedTable::get_mut`])
//! allocates the page, filled with defaults. Pages are not given back while
//! the table lives (a page that was needed once is likely needed again).

use std::ops::{Index, IndexMut};

/// Entries per page.
pub(crate) const PAGE: usize = 1024;

/// A table of `len` entries of `T`, allocated by pages of [`PAGE`].
pub(crate) struct PagedTable<T> {
    /// Pages of exactly `PAGE` entries (an array type, so that indexing
    /// within a page needs no bounds check: this table is on the
    /// per-message path, several lookups per message).
    pages: Box<[Option<Box<[T; PAGE]>>]>,
    len: usize,
    /// What an entry of an unallocated page reads as.
    empty: T,
}

impl<T: Default> PagedTable<T> {
    /// A table of `len` entries; allocates only the page directory.
    pub fn new(len: usize) -> Self {
        PagedTable {
            pages: (0..len.div_ceil(PAGE)).map(|_| None).collect(),
            len,
            empty: T::default(),
        }
    }

    /// Number of entries (allocated or not).
    pub fn len(&self) -> usize {
        self.len
    }

    /// The entry at `index`, or `None` past the end. An entry of an
    /// unallocated page is the default value.
    #[inline]
    pub fn get(&self, index: usize) -> Option<&T> {
        if index >= self.len {
            return None;
        }
        Some(match &self.pages[index / PAGE] {
            Some(page) => &page[index % PAGE],
            None => &self.empty,
        })
    }

    /// The entry at `index` for writing (allocating its page), or `None`
    /// past the end.
    #[inline]
    pub fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        if index >= self.len {
            return None;
        }
        let page = &mut self.pages[index / PAGE];
        if page.is_none() {
            Self::allocate(page);
        }
        page.as_mut().map(|page| &mut page[index % PAGE])
    }

    /// Allocates a page (out of the hot path).
    #[cold]
    #[inline(never)]
    fn allocate(page: &mut Option<Box<[T; PAGE]>>) {
        let entries: Box<[T]> = (0..PAGE).map(|_| T::default()).collect();
        *page = Some(
            entries
                .try_into()
                .unwrap_or_else(|_| unreachable!("PAGE entries")),
        );
    }

    /// The entry at `index` for writing if its page is allocated: an
    /// unallocated page is all defaults, so a caller that only changes
    /// entries that differ from the default need not allocate it.
    #[inline]
    pub fn get_mut_if_allocated(&mut self, index: usize) -> Option<&mut T> {
        if index >= self.len {
            return None;
        }
        self.pages[index / PAGE]
            .as_mut()
            .map(|page| &mut page[index % PAGE])
    }

    /// Pages allocated so far.
    #[cfg(test)]
    pub fn allocated_pages(&self) -> usize {
        self.pages.iter().filter(|p| p.is_some()).count()
    }
}

impl<T: Default> Index<usize> for PagedTable<T> {
    type Output = T;

    #[inline]
    fn index(&self, index: usize) -> &T {
        match self.get(index) {
            Some(entry) => entry,
            None => past_the_end(index, self.len),
        }
    }
}

impl<T: Default> IndexMut<usize> for PagedTable<T> {
    #[inline]
    fn index_mut(&mut self, index: usize) -> &mut T {
        let len = self.len;
        match self.get_mut(index) {
            Some(entry) => entry,
            None => past_the_end(index, len),
        }
    }
}

#[cold]
#[inline(never)]
fn past_the_end(index: usize, len: usize) -> ! {
    panic!("index {index} past a table of {len}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unwritten_entries_read_as_default_and_allocate_nothing() {
        let t: PagedTable<u64> = PagedTable::new(500_000);
        assert_eq!(t.len(), 500_000);
        assert_eq!(t.get(0), Some(&0));
        assert_eq!(t[499_999], 0);
        assert_eq!(t.get(500_000), None);
        assert_eq!(t.allocated_pages(), 0);
    }

    #[test]
    fn a_write_allocates_only_its_page() {
        let mut t: PagedTable<Option<u32>> = PagedTable::new(10 * PAGE + 7);
        t[3 * PAGE + 5] = Some(7);
        assert_eq!(t.allocated_pages(), 1);
        assert_eq!(t[3 * PAGE + 5], Some(7));
        assert_eq!(t[3 * PAGE + 4], None);
        assert_eq!(t[2 * PAGE + 5], None);
        assert!(t.get_mut_if_allocated(PAGE).is_none());
        assert!(t.get_mut_if_allocated(3 * PAGE).is_some());
        // The last, partial page.
        t[10 * PAGE + 6] = Some(1);
        assert_eq!(t.allocated_pages(), 2);
        assert!(t.get_mut(10 * PAGE + 7).is_none());
    }

    #[test]
    #[should_panic(expected = "past a table")]
    fn indexing_past_the_end_panics() {
        let mut t: PagedTable<u8> = PagedTable::new(3);
        t[3] = 1;
    }

    /// Random writes and reads agree with a plain vector (a small
    /// hand-rolled property test: a fixed-seed generator, many cases).
    #[test]
    fn behaves_like_a_vector() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..50 {
            let len = (next() % (5 * PAGE as u64)) as usize + 1;
            let mut table: PagedTable<u32> = PagedTable::new(len);
            let mut model = vec![0u32; len];
            for _ in 0..500 {
                let i = (next() % (len as u64 + 2)) as usize;
                let v = next() as u32;
                if next() % 2 == 0 {
                    match table.get_mut(i) {
                        Some(e) => {
                            *e = v;
                            model[i] = v;
                        }
                        None => assert!(i >= len),
                    }
                } else {
                    assert_eq!(table.get(i), model.get(i));
                }
            }
            let touched = model.chunks(PAGE).filter(|c| c.iter().any(|&v| v != 0));
            assert!(table.allocated_pages() >= touched.count());
        }
    }
}
