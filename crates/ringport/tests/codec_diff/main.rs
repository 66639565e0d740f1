//! Differential tests of `LengthDelimited` against its two references:
//!
//! - **tokio-util** (`tokio_util_ref.rs`; the real
//!   `tokio_util::codec::LengthDelimitedCodec` 0.7, a dev-dependency):
//!   random builder settings × random streams (mostly valid, sometimes
//!   ending in an invalid or cut header) × random read boundaries. Frames
//!   are compared byte for byte, then the error (if any) and whether the
//!   stream ended inside a frame (`decode_eof`'s "bytes remaining on
//!   stream" against `Framer::partial`); encoding is compared on payload
//!   lengths around every limit.
//! - **Netty** (`netty.rs`; no Rust implementation exists): an independent,
//!   literal model of `LengthFieldBasedFrameDecoder.decode` and of
//!   `LengthFieldPrepender.encode`, written from Netty's source.
//!
//! `harness.rs` holds what both share (random generator, read boundaries,
//! outcomes, ringport's side, the case loop); this file, the test of the
//! harness itself.
//!
//! The number of configurations is `CODEC_DIFF_CONFIGS` (default 5,000 for
//! each reference, a few seconds in debug), the seed `CODEC_DIFF_SEED`.
//! `CODEC_DIFF_CASE=n` replays configuration `n` alone (the failure message
//! names it). `scripts/codec-diff.sh` runs hundreds of thousands.

mod harness;
mod netty;
// Not `tokio_util`: that would shadow the crate of the same name.
mod tokio_util_ref;

use ringport::codec::{Codec, LengthDelimited};

use harness::run_ringport;
use tokio_util_ref::{run_tokio, tc};

/// Sanity check of the harness: a trivially wrong codec is caught.
#[test]
fn harness_catches_a_difference() {
    let config = tc(0, 1, 0, Some(0));
    let reads = [&b"\x01\x01"[..]];
    let theirs = run_tokio(config.tokio(), &reads);
    // Netty's reading of the same settings (the old ringport rule).
    let netty = run_ringport(LengthDelimited::netty(1024, 0, 1, 0, 0, true), &reads);
    assert_ne!(theirs, netty);
    assert_eq!(netty.frames, vec![b"\x01\x01".to_vec()]);
    let _ = LengthDelimited::new().max_frame();
}
