#!/usr/bin/env bash
# The long differential run of LengthDelimited (issue 15): random settings x
# random streams x random read boundaries, against the real tokio-util 0.7
# LengthDelimitedCodec and against a model of Netty's
# LengthFieldBasedFrameDecoder (crates/ringport/tests/codec_diff/; the
# default `cargo test` runs 5,000 configurations of each).
#
# usage: scripts/codec-diff.sh [CONFIGURATIONS] [SEED]
#   CONFIGURATIONS  per reference (default 300000)
#   SEED            default: the time; a failure names its seed and case,
#                   replay it with CODEC_DIFF_SEED=S CODEC_DIFF_CASE=N.
# Built in release (debug runs about 300 configurations per second);
# CODEC_DIFF_PROFILE=--profile=dev runs the debug build (smoke mode).
set -euo pipefail
cd "$(dirname "$0")/.."
configs=${1:-300000}
seed=${2:-$(date +%s)}
echo "codec-diff: $configs configurations per reference, seed $seed"
CODEC_DIFF_CONFIGS=$configs CODEC_DIFF_SEED=$seed \
    cargo test ${CODEC_DIFF_PROFILE:---release} -p ringport --test codec_diff differential_against \
    -- --nocapture --test-threads 2
