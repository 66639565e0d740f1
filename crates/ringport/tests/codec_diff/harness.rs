//! Shared harness of the `codec_diff` differential tests: a reproducible
//! random generator, read boundaries, what a decoder made of a stream
//! (`Outcome`), ringport's side of every comparison, and the loop that runs
//! the configurations and reports what was compared.

use std::fmt::Write as _;

use ringport::codec::{Codec, CodecError, Framer, LengthDelimited, MAX_HEADER_LEN};

/// xorshift64*: reproducible, no dependency.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64, case: u64) -> Self {
        let mut r = Rng((seed ^ case.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1);
        for _ in 0..4 {
            r.next();
        }
        r
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// `0..n` (n > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub(crate) fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % ((hi - lo + 1) as u64)) as i64
    }
    pub(crate) fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }
    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }
}

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.replace('_', "").parse().ok())
        .unwrap_or(default)
}

pub(crate) fn hex(b: &[u8]) -> String {
    let mut s = String::new();
    for (i, x) in b.iter().enumerate() {
        if i == 200 {
            let _ = write!(s, "… ({} bytes)", b.len());
            break;
        }
        let _ = write!(s, "{x:02x} ");
    }
    s
}

/// Random read boundaries: none, one byte at a time, or a few random cuts.
pub(crate) fn cuts(rng: &mut Rng, len: usize) -> Vec<usize> {
    let mut c: Vec<usize> = match rng.below(10) {
        0 => vec![],
        1 if len < 3000 => (1..len).collect(),
        _ => (0..rng.below(8)).map(|_| rng.below(len + 1)).collect(),
    };
    c.sort_unstable();
    c
}

pub(crate) fn split<'a>(stream: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut reads = Vec::new();
    let mut prev = 0;
    for &c in cuts {
        reads.push(&stream[prev..c]);
        prev = c;
    }
    reads.push(&stream[prev..]);
    reads
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    TooLarge,
    Invalid,
}

/// What a decoder made of a whole stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub(crate) frames: Vec<Vec<u8>>,
    pub(crate) error: Option<Kind>,
    /// The stream ended inside a frame (no error).
    pub(crate) cut_frame: bool,
}

fn ringport_kind(e: &CodecError) -> Kind {
    match e {
        CodecError::FrameTooLarge { .. } => Kind::TooLarge,
        CodecError::InvalidHeader(_) => Kind::Invalid,
    }
}

pub(crate) fn run_ringport(codec: LengthDelimited, reads: &[&[u8]]) -> Outcome {
    let mut framer = Framer::new(codec);
    let mut frames = Vec::new();
    for read in reads {
        if let Err(e) = framer.feed(read, |p| {
            frames.push(p.to_vec());
            true
        }) {
            return Outcome {
                frames,
                error: Some(ringport_kind(&e)),
                cut_frame: false,
            };
        }
    }
    Outcome {
        frames,
        error: None,
        cut_frame: framer.partial().is_some(),
    }
}

pub(crate) fn ringport_encode(codec: &LengthDelimited, payload: &[u8]) -> Result<Vec<u8>, Kind> {
    let mut hdr = [0u8; MAX_HEADER_LEN];
    let n = codec
        .encode_header(payload.len(), &mut hdr)
        .map_err(|e| ringport_kind(&e))?;
    let mut v = hdr[..n].to_vec();
    v.extend_from_slice(payload);
    Ok(v)
}

#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) configs: u64,
    pub(crate) streams: u64,
    pub(crate) frames: u64,
    pub(crate) errors: u64,
    pub(crate) cut: u64,
    pub(crate) encodings: u64,
    pub(crate) overlapping: u64,
    pub(crate) beyond: u64,
    pub(crate) truncated_encodings: u64,
    pub(crate) silent_cut: u64,
}

pub(crate) fn run_cases(name: &str, default_configs: u64, case: impl Fn(u64, u64, &mut Counts)) {
    let seed = env("CODEC_DIFF_SEED", 0x5EED);
    let mut counts = Counts::default();
    let start = std::time::Instant::now();
    if let Ok(one) = std::env::var("CODEC_DIFF_CASE") {
        case(seed, one.parse().expect("CODEC_DIFF_CASE"), &mut counts);
    } else {
        for i in 0..env("CODEC_DIFF_CONFIGS", default_configs) {
            case(seed, i, &mut counts);
        }
    }
    let notes = if counts.silent_cut + counts.truncated_encodings > 0 {
        format!(
            " [of which {} cut frames after a complete head, that tokio-util's decode_eof \
             does not report; {} encodings where tokio-util writes a truncated length and \
             ringport refuses]",
            counts.silent_cut, counts.truncated_encodings
        )
    } else {
        String::new()
    };
    eprintln!(
        "{name}: seed {seed}: {} configurations ({} with num_skip below the end of the \
         length field, {} above), {} streams x cuts: {} frames identical, {} errors and {} \
         frames cut by the end of the stream identical; {} encodings identical{notes}; \
         {:.1} s",
        counts.configs,
        counts.overlapping,
        counts.beyond,
        counts.streams,
        counts.frames,
        counts.errors,
        counts.cut,
        counts.encodings,
        start.elapsed().as_secs_f64()
    );
}
