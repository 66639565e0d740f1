#!/usr/bin/env bash
# The whole test suite: unit, property, doc and integration tests (real
# servers on loopback). Heavy runs (30,000+ connections, fuzzing, the peer
# comparison) are separate: see README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace 2>&1 | tee "$log"
# One closing line over every test binary (cargo prints one per binary).
awk '/^test result:/ { p += $4; f += $6; i += $8 }
     END { printf "summary: %d passed, %d failed, %d skipped\n", p, f, i }' "$log"
