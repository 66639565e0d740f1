#!/usr/bin/env bash
# Is `ringport bench` the bottleneck? Runs it (as `bench-full`: every byte of
# every reply checked, the default; and as `bench-header`: `--verify header`,
# length and stamp only) and gen-pingpong (the smallest depth-1 ping-pong
# generator, bench/peers/gen-pingpong) alternately against one server, same connections and message size, each pinned to CPU 1 with
# the server on CPU 0, and prints per run the messages per second and the
# generator's own CPU per message over the measured window (as each reports
# it), then each generator's medians. If ringport bench reaches what the
# minimal generator reaches, the server or the machine bounds the row, not
# the bench.
#
# usage: bench/loadgen.sh [options]
#   --server BIN    the server (default bench/peers/target/release/peer-uring;
#                   a ringport binary runs as `serve --shards 1`)
#   -c N            connections (default 10)
#   --size N        payload bytes (default 65536)
#   --rounds N      rounds (default 3)
#   --seconds N     measured seconds per run (default 5)
#   --bench BIN     the ringport binary whose bench is measured
#                   (default target/release/ringport)
#   GEN=BIN         (environment) the gen-pingpong binary
#                   (default bench/peers/target/release/gen-pingpong)
#
# example: bench/loadgen.sh --rounds 5
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SERVER=$ROOT/bench/peers/target/release/peer-uring
BENCH=$ROOT/target/release/ringport
GEN=${GEN:-$ROOT/bench/peers/target/release/gen-pingpong}
CONNS=10
SIZE=65536
ROUNDS=3
SECONDS_=5
while [[ $# -gt 0 ]]; do
    case $1 in
        --server) SERVER=$2; shift 2 ;;
        -c) CONNS=$2; shift 2 ;;
        --size) SIZE=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --seconds) SECONDS_=$2; shift 2 ;;
        --bench) BENCH=$2; shift 2 ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        *) echo "loadgen.sh: unknown argument $1 (--help)" >&2; exit 2 ;;
    esac
done
for n in "$CONNS" "$SIZE" "$ROUNDS" "$SECONDS_"; do
    [[ $n =~ ^[1-9][0-9]*$ ]] || { echo "loadgen.sh: -c, --size, --rounds and --seconds take whole numbers" >&2; exit 2; }
done
for bin in "$SERVER" "$BENCH" "$GEN"; do
    [[ -x $bin ]] || { echo "loadgen.sh: $bin is missing (cargo build --release; cd bench/peers && cargo build --release)" >&2; exit 2; }
done

# shellcheck source=bench/lib/server.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/server.sh"
server=""
server_log=$(mktemp)
results=$(mktemp)
out=$(mktemp)
trap '[[ -n $server ]] && kill "$server" 2>/dev/null; rm -f "$results" "$out" "$server_log"' EXIT
start_server "$server_log" "$SERVER"

for round in $(seq 1 "$ROUNDS"); do
    for gen in bench-full bench-header gen-pingpong; do
        if [[ $gen == bench-* ]]; then
            taskset -c 1 timeout $((SECONDS_ + 60)) "$BENCH" bench --addr "127.0.0.1:$port" -c "$CONNS" \
                --size "$SIZE" --depth 1 --threads 1 --warmup 1s --duration "${SECONDS_}s" \
                --verify "${gen#bench-}" >"$out" 2>&1 || true
            rate=$(grep -oP 'throughput:\s+\K[0-9]+' "$out" || echo 0)
            us=$(grep -oP 'bench cpu:.*, \K[0-9.]+(?= us/msg)' "$out" || echo -)
        else
            taskset -c 1 timeout $((SECONDS_ + 60)) "$GEN" --addr "127.0.0.1:$port" --connections "$CONNS" \
                --size "$SIZE" --warmup 1 --seconds "$SECONDS_" >"$out" 2>&1 || true
            rate=$(grep -oP 'gen-pingpong:\s+\K[0-9]+' "$out" || echo 0)
            us=$(grep -oP 'generator CPU \K[0-9.]+(?= us/msg)' "$out" || echo -)
        fi
        [[ $rate -gt 0 ]] || { echo "loadgen.sh: $gen failed:" >&2; cat "$out" >&2; exit 1; }
        printf "round %d  %-15s msg/s %d  generator us/msg %s\n" "$round" "$gen" "$rate" "$us" | tee -a "$results"
    done
done

echo "medians over $ROUNDS round(s), $CONNS connections x $SIZE B, depth 1, server $(basename "$SERVER"):"
for gen in bench-full bench-header gen-pingpong; do
    awk -v name="$gen" -v rate_col=5 -v us_col=8 -v label="generator us/msg" -v width=15 \
        -f "$ROOT/bench/medians.awk" "$results"
done
