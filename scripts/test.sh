#!/usr/bin/env bash
# The whole test suite: unit, property, doc and integration tests (real
# servers on loopback), with the integration tests run once per backend:
# io_uring, then epoll (`RINGPORT_BACKEND` selects the backend of every
# server that the tests and the CLI start with `Backend::Auto`). Heavy runs
# (30,000+ connections, fuzzing, the peer comparison) are separate: see
# README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
echo "== backend io-uring: cargo test --workspace"
RINGPORT_BACKEND=io-uring cargo test --workspace 2>&1 | tee "$log"
echo "== backend epoll: cargo test --workspace --tests (doc tests need no second run)"
RINGPORT_BACKEND=epoll cargo test --workspace --tests 2>&1 | tee -a "$log"
# One closing line over every test binary of both runs (cargo prints one
# per binary).
awk '/^test result:/ { p += $4; f += $6; i += $8 }
     END { printf "summary: %d passed, %d failed, %d skipped\n", p, f, i }' "$log"
