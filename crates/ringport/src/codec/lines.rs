//! Newline-delimited messages.

use super::{Codec, CodecError, Decode, MAX_HEADER_LEN};

/// Default maximum line length (without its line ending): 64 KiB.
pub const DEFAULT_MAX_LINE: usize = 64 * 1024;

/// One message per line. A line ends at `\n`; a `\r` just before it is
/// dropped too (both count as the frame's trailer), so `\r\n` clients work.
/// Encoding appends `\n` and writes no header.
///
/// A line whose content exceeds the maximum fails with
/// [`CodecError::FrameTooLarge`] as soon as the bytes received prove it,
/// without waiting for its end: more than `max + 1` bytes without a newline,
/// or `max + 1` bytes whose last one is not the `\r` of a `\r\n`. The verdict
/// therefore never depends on how the stream was split into reads.
///
/// Encoding does not look inside the payload: a payload containing `\n` is
/// received as several lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lines {
    max: usize,
    /// Bytes at the start of the current buffer already known to hold no
    /// `\n`: the framer hands us the same bytes again, with more appended,
    /// after `NeedMore`, so each call scans only what is new.
    scanned: usize,
}

impl Default for Lines {
    fn default() -> Self {
        Lines {
            max: DEFAULT_MAX_LINE,
            scanned: 0,
        }
    }
}

impl Lines {
    /// Lines of at most 64 KiB (without the line ending).
    pub fn new() -> Self {
        Self::default()
    }

    /// Set the maximum line length in bytes, not counting the line ending.
    pub fn max_line_length(mut self, max: usize) -> Self {
        self.max = max;
        self
    }
}

impl Codec for Lines {
    fn decode(&mut self, buf: &[u8]) -> Result<Decode, CodecError> {
        // A line of `max` bytes ends at index max + 1 at the latest
        // (`max` bytes, `\r`, `\n`): no need to look further.
        let limit = buf.len().min(self.max.saturating_add(2));
        // Scan state from a previous call is only valid for a buffer at least
        // as long; anything else means the caller started over.
        let start = if self.scanned <= limit {
            self.scanned
        } else {
            0
        };
        let found = buf[start..limit]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| start + i);
        match found {
            Some(newline) => {
                self.scanned = 0;
                let end = if newline > 0 && buf[newline - 1] == b'\r' {
                    newline - 1
                } else {
                    newline
                };
                if end > self.max {
                    return Err(CodecError::FrameTooLarge {
                        len: end as u64,
                        max: self.max,
                    });
                }
                Ok(Decode::Frame {
                    skip: 0,
                    payload: end,
                    trailer: newline + 1 - end,
                })
            }
            None => {
                self.scanned = limit;
                let over = buf.len() > self.max.saturating_add(1)
                    || (buf.len() == self.max.saturating_add(1) && buf[self.max] != b'\r');
                if over {
                    return Err(CodecError::FrameTooLarge {
                        len: buf.len() as u64,
                        max: self.max,
                    });
                }
                Ok(Decode::NeedMore { at_least: None })
            }
        }
    }

    fn frame_consumed(&mut self) {
        self.scanned = 0;
    }

    fn encode_header(
        &self,
        payload_len: usize,
        _dst: &mut [u8; MAX_HEADER_LEN],
    ) -> Result<usize, CodecError> {
        super::headerless(payload_len, self.max)
    }

    fn trailer(&self) -> &'static [u8] {
        b"\n"
    }

    fn max_frame(&self) -> usize {
        self.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::Framer;

    fn lines(codec: Lines, chunks: &[&[u8]]) -> (Vec<Vec<u8>>, Result<(), CodecError>) {
        let mut framer = Framer::new(codec);
        let mut out = Vec::new();
        for chunk in chunks {
            let r = framer.feed(chunk, |p| {
                out.push(p.to_vec());
                true
            });
            if r.is_err() {
                return (out, r);
            }
        }
        (out, Ok(()))
    }

    #[test]
    fn lf_and_crlf_are_stripped() {
        let (got, r) = lines(Lines::new(), &[b"a\nbb\r\n\n\r\nc\rd\n"]);
        r.unwrap();
        assert_eq!(
            got,
            vec![
                b"a".to_vec(),
                b"bb".to_vec(),
                vec![],
                vec![],
                b"c\rd".to_vec()
            ]
        );
    }

    #[test]
    fn decode_reports_cr_as_trailer() {
        let mut c = Lines::new();
        assert_eq!(
            c.decode(b"ab\r\nxx").unwrap(),
            Decode::Frame {
                skip: 0,
                payload: 2,
                trailer: 2
            }
        );
        assert_eq!(
            c.decode(b"ab\nxx").unwrap(),
            Decode::Frame {
                skip: 0,
                payload: 2,
                trailer: 1
            }
        );
        assert_eq!(
            c.decode(b"\n").unwrap(),
            Decode::Frame {
                skip: 0,
                payload: 0,
                trailer: 1
            }
        );
        assert_eq!(c.decode(b"").unwrap(), Decode::NeedMore { at_least: None });
    }

    #[test]
    fn scan_state_only_covers_new_bytes_and_resets() {
        let mut c = Lines::new();
        assert_eq!(
            c.decode(b"abc").unwrap(),
            Decode::NeedMore { at_least: None }
        );
        assert_eq!(c.scanned, 3);
        assert_eq!(
            c.decode(b"abcde").unwrap(),
            Decode::NeedMore { at_least: None }
        );
        assert_eq!(c.scanned, 5);
        assert!(matches!(
            c.decode(b"abcde\r\n").unwrap(),
            Decode::Frame { payload: 5, .. }
        ));
        c.frame_consumed();
        assert_eq!(c.scanned, 0);
        // A shorter buffer than the scan state (caller started over) is
        // rescanned from 0, not misread.
        c.decode(b"xxxxxxxx").unwrap();
        assert!(matches!(
            c.decode(b"\n").unwrap(),
            Decode::Frame { payload: 0, .. }
        ));
    }

    #[test]
    fn lines_split_anywhere() {
        let input = b"first\r\nsecond\nthird line\r\n";
        for split in 0..=input.len() {
            let (got, r) = lines(Lines::new(), &[&input[..split], &input[split..]]);
            r.unwrap();
            assert_eq!(
                got,
                vec![
                    b"first".to_vec(),
                    b"second".to_vec(),
                    b"third line".to_vec()
                ],
                "split at {split}"
            );
        }
    }

    #[test]
    fn max_length_lines_are_accepted_with_either_ending() {
        let c = Lines::new().max_line_length(4);
        let (got, r) = lines(c.clone(), &[b"abcd", b"\r", b"\n", b"efgh\n"]);
        r.unwrap();
        assert_eq!(got, vec![b"abcd".to_vec(), b"efgh".to_vec()]);
        let (_, r) = lines(c, &[b"abcd\r\n"]);
        r.unwrap();
    }

    #[test]
    fn too_long_line_fails_as_soon_as_known() {
        let c = Lines::new().max_line_length(4);
        // Five bytes, the fifth not a '\r': cannot be a line of <= 4.
        let (_, r) = lines(c.clone(), &[b"abc", b"de"]);
        assert_eq!(r, Err(CodecError::FrameTooLarge { len: 5, max: 4 }));
        // "abcd\r" might still become "abcd\r\n": wait.
        let (_, r) = lines(c.clone(), &[b"abcd\r"]);
        r.unwrap();
        let (_, r) = lines(c.clone(), &[b"abcd\r", b"x"]);
        assert!(matches!(r, Err(CodecError::FrameTooLarge { max: 4, .. })));
        // Whole too-long line in one piece.
        let (got, r) = lines(c.clone(), &[b"ok\nabcde\nnext\n"]);
        assert_eq!(got, vec![b"ok".to_vec()]);
        assert_eq!(r, Err(CodecError::FrameTooLarge { len: 5, max: 4 }));
        // "abcd\r\r\n": content "abcd\r" is 5 bytes.
        let (_, r) = lines(c, &[b"abcd\r\r\n"]);
        assert!(matches!(r, Err(CodecError::FrameTooLarge { max: 4, .. })));
    }

    #[test]
    fn zero_max_accepts_only_empty_lines() {
        let c = Lines::new().max_line_length(0);
        let (got, r) = lines(c.clone(), &[b"\n\r\n"]);
        r.unwrap();
        assert_eq!(got, vec![Vec::<u8>::new(), vec![]]);
        let (_, r) = lines(c, &[b"a"]);
        assert!(r.is_err());
    }

    #[test]
    fn encode() {
        let c = Lines::new().max_line_length(3);
        let mut hdr = [0u8; MAX_HEADER_LEN];
        assert_eq!(c.encode_header(3, &mut hdr), Ok(0));
        assert_eq!(
            c.encode_header(4, &mut hdr),
            Err(CodecError::FrameTooLarge { len: 4, max: 3 })
        );
        assert_eq!(c.trailer(), b"\n");
        assert_eq!(Lines::new().max_frame(), DEFAULT_MAX_LINE);
    }
}
