#!/usr/bin/env bash
# The whole test suite: unit, property, doc and integration tests (real
# servers on loopback), with the integration tests run once per backend:
# io_uring, then epoll (`RINGPORT_BACKEND` selects the backend of every
# server that the tests and the CLI start with `Backend::Auto`, and every
# integration test binary asserts that its servers run on that backend).
# Heavy runs (30,000+ connections, fuzzing, the peer comparison) are
# separate: see README.md.
#
# Backend-independent suites run once, in the first pass: the unit tests of
# both crates (`--lib`: codecs, proptests, engine, and the Driver contract
# tests, which run on both drivers by themselves), doc tests, and the
# integration test binaries listed in ONCE below. The
# epoll pass runs every other integration test binary (`--test NAME`).
#
# Tests needing an external program (nats-server, promtool, openssl,
# python3) fail when it is missing, naming the Debian package. Set
# RINGPORT_SKIP to a comma-separated list (nats, promtool, openssl,
# python3, ipv6, io-uring) to skip them explicitly: each skipped test is
# recorded in a file and counted below as skipped, not passed.
set -euo pipefail
cd "$(dirname "$0")/.."

# Integration test binaries whose outcome does not depend on the backend:
# codec_diff, pool and client_alloc start no server; config only prints settings;
# seccomp blocks io_uring and removes RINGPORT_BACKEND, so it is on epoll
# in both passes.
ONCE="codec_diff pool client_alloc config seccomp"

log=$(mktemp)
skips=$(mktemp)
trap 'rm -f "$log" "$skips"' EXIT
export RINGPORT_SKIP_LOG="$skips"

# `--test NAME` for each integration test binary of crate directory $1,
# except those in ONCE.
test_args() {
    local dir=$1 name
    for t in "$dir"/tests/*.rs "$dir"/tests/*/main.rs; do
        [ -e "$t" ] || continue
        case $t in
            */main.rs) name=$(basename "$(dirname "$t")") ;;
            *) name=$(basename "$t" .rs) ;;
        esac
        case " $ONCE " in *" $name "*) continue ;; esac
        printf -- '--test %s ' "$name"
    done
}

# Every pass runs to its end (--no-fail-fast), and the summary is printed
# whatever failed; the exit status is non-zero if anything did.
status=0
echo "== backend io-uring: cargo test --workspace"
RINGPORT_BACKEND=io-uring cargo test --workspace --no-fail-fast 2>&1 | tee "$log" || status=1
echo "== backend epoll: the integration tests that start servers (not: unit, doc, $ONCE)"
# shellcheck disable=SC2046 # word splitting of the --test list is wanted
RINGPORT_BACKEND=epoll cargo test -p ringport --no-fail-fast $(test_args crates/ringport) 2>&1 |
    tee -a "$log" || status=1
# shellcheck disable=SC2046
RINGPORT_BACKEND=epoll cargo test -p ringport-cli --no-fail-fast $(test_args crates/ringport-cli) 2>&1 |
    tee -a "$log" || status=1
# One closing line over every test binary of both runs (cargo prints one
# per binary). A test that skipped itself on RINGPORT_SKIP returned
# normally, so libtest counted it as passed: it is moved to skipped here.
# libtest's ignored tests are skipped too.
skipped=$(grep -c '^ringport-skip: ' "$skips" || true)
if [ "$skipped" -gt 0 ]; then
    echo "== skipped on request (RINGPORT_SKIP=${RINGPORT_SKIP:-}):"
    sed 's/^ringport-skip: /  /' "$skips"
fi
awk -v s="$skipped" '/^test result:/ { p += $4; f += $6; i += $8 }
     END { printf "summary: %d passed, %d failed, %d skipped\n", p - s, f, i + s }' "$log"
exit "$status"
