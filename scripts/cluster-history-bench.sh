#!/usr/bin/env bash
# Cluster figures for issue 30 (docs/cluster.md), on loopback, one after the
# other; every process is stopped at the end. Raw output: target/cluster-history-bench/.
#  (1) publish -> SUBS subscribers over 3 nodes, without and with history
#  (2) NATS bytes per node, per-topic interest vs every publish
#  (3) CLIENTS clients reconnecting to another node with positions
# Sizes: SUBS (10000), RATES ("10 100"), CLIENTS (10000), TOPICS (100),
# MISSED (10), DURATION (5s). Needs nats-server (with -js) and a release
# build: cargo build --release -p ringport-cli.
set -euo pipefail
cd "$(dirname "$0")/.."
T=${CARGO_TARGET_DIR:-target}/release
R=${RINGPORT_BIN:-$T/ringport}
SUBS=${SUBS:-10000}
CLIENTS=${CLIENTS:-10000}
TOPICS=${TOPICS:-100}
MISSED=${MISSED:-10}
DURATION=${DURATION:-5s}
NATS_PORT=${NATS_PORT:-14422}
MON_PORT=${MON_PORT:-18422}
out=target/cluster-history-bench
mkdir -p "$out"
store=$(mktemp -d)
pids=()
stop_all() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    pids=()
}
trap 'stop_all; rm -rf "$store"' EXIT
ulimit -n "$(ulimit -Hn)"
nats() {
    nats-server -a 127.0.0.1 -p "$NATS_PORT" -m "$MON_PORT" -js -sd "$store" >"$out/nats.log" 2>&1 &
    pids+=($!)
    until curl -sf "http://127.0.0.1:$MON_PORT/healthz" >/dev/null; do sleep 0.1; done
}
nodes() { # extra args...
    for i in 1 2 3; do
        RUST_LOG=info "$R" serve --addr "127.0.0.1:1860$i" --mode pubsub --shards 1 \
            --stats-interval 0 --cluster "nats://127.0.0.1:$NATS_PORT" --node-id "n$i" "$@" \
            >"$out/n$i.log" 2>&1 &
        pids+=($!)
    done
    for i in 1 2 3; do
        until grep -q "INFO.*listening on" "$out/n$i.log"; do
            if grep -q "^error" "$out/n$i.log"; then cat "$out/n$i.log"; exit 1; fi
            sleep 0.1
        done
    done
}
NODES=127.0.0.1:18601,127.0.0.1:18602,127.0.0.1:18603
b() { echo "\$ ringport bench $*"; "$R" bench --duration "$DURATION" --threads 1 "$@" || echo "(exit $?)"; }
# Output to the terminal and the report (not through a pipe into a
# subshell: the EXIT trap must see every started process).
exec > >(tee "$out/report.txt") 2>&1
for history in no yes; do
    nats
    if [ $history = yes ]; then nodes --cluster-history '*'; else nodes; fi
    for rate in ${RATES:-10 100}; do
        echo "== (1) history: $history; pubsub, 1 publisher x $rate/s -> $SUBS subscribers over 3 nodes"
        b --mode pubsub -c "$SUBS" --publishers 1 --rate "$rate" --size 64 --nodes "$NODES"
    done
    stop_all
    rm -rf "${store:?}"/*
done
for interest in topic all; do
    nats
    nodes --cluster-interest "$interest"
    echo "== (2) --cluster-interest $interest"
    python3 scripts/cluster-history-bench.py interest "$NODES" "127.0.0.1:$MON_PORT"
    stop_all
done
nats
nodes --cluster-history 'chat.' --cluster-history-size 1000
echo "== (3) $CLIENTS clients reconnecting with positions ($TOPICS topics, $MISSED missed each)"
python3 scripts/cluster-history-bench.py recovery "$NODES" "$CLIENTS" "$TOPICS" "$MISSED"
grep -h " WARN \| ERROR " "$out"/n*.log | head -5 || true
