#!/usr/bin/env bash
# Fan-out figures for docs/performance.md: (a) chat over 3 nodes vs 1 node, (b) one
# publisher to many subscribers over 3 nodes vs 1 node, and (c) nats-server
# alone doing the fan-out (examples/nats_fanout.rs). Everything runs on
# loopback on this machine, one after the other; every process is stopped
# at the end. Sizes: CHAT_CLIENTS (3000), SUBS (10000), DURATION (5s).
#
# Needs a release build: cargo build --release -p ringport-cli and
# cargo build --release -p ringport --features cluster --example nats_fanout.
set -euo pipefail
cd "$(dirname "$0")/.."
# TARGET: the directory of the built binaries (smoke mode: target/debug).
T=${TARGET:-${CARGO_TARGET_DIR:-target}/release}
R=$T/ringport
CHAT_CLIENTS=${CHAT_CLIENTS:-3000}
SUBS=${SUBS:-10000}
DURATION=${DURATION:-5s}
NATS_PORT=${NATS_PORT:-14322}
logs=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)"
nats-server -a 127.0.0.1 -p "$NATS_PORT" >"$logs/nats.log" 2>&1 &
pids+=($!)
# wait_for WHAT TEST...: polls TEST for up to 20 s; fails naming WHAT.
wait_for() {
    local what=$1 _
    shift
    for _ in $(seq 200); do "$@" && return 0; sleep 0.1; done
    echo "cluster-bench: $what not within 20 s; logs:" >&2
    tail -n 5 "$logs"/*.log >&2
    exit 1
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_for "nats-server listening on $NATS_PORT" port_open "$NATS_PORT"
node() { # mode port name [cluster]
    local extra=()
    [ -n "${4:-}" ] && extra=(--cluster "nats://127.0.0.1:$NATS_PORT" --node-id "$3")
    RUST_LOG=info "$R" serve --addr "127.0.0.1:$2" --mode "$1" --shards 1 --stats-interval 0 \
        "${extra[@]}" >"$logs/$3.log" 2>&1 &
    pids+=($!)
}
for i in 1 2 3; do node chat 1740$i chat$i c; node pubsub 1750$i pub$i c; done
node chat 17410 chat-single; node pubsub 17510 pub-single
for port in 17401 17402 17403 17410 17501 17502 17503 17510; do
    wait_for "a node listening on $port" port_open "$port"
done
# Each clustered node logs "node is up" for every peer it hears: the two
# other nodes of its mode and the three of the other mode (one NATS server).
peers_up() { [ "$(grep -c 'node is up' "$logs/$1.log")" -ge 5 ]; }
for n in chat1 chat2 chat3 pub1 pub2 pub3; do wait_for "$n hearing its peers" peers_up "$n"; done
failures=0
b() {
    echo "\$ ringport bench $*"
    "$R" bench --duration "$DURATION" --threads 1 "$@" || { echo "(exit $?)"; failures=$((failures + 1)); }
}
echo "== (a) chat, $CHAT_CLIENTS clients, 10 talkers x 5/s"
b --mode chat-fanout -c "$CHAT_CLIENTS" --publishers 10 --rate 5 --size 64 \
    --nodes 127.0.0.1:17401,127.0.0.1:17402,127.0.0.1:17403
b --mode chat-fanout -c "$CHAT_CLIENTS" --publishers 10 --rate 5 --size 64 --nodes 127.0.0.1:17410
for rate in ${RATES:-10 40}; do
    echo "== (b) pubsub, 1 publisher x $rate/s -> $SUBS subscribers"
    b --mode pubsub -c "$SUBS" --publishers 1 --rate "$rate" --size 64 \
        --nodes 127.0.0.1:17501,127.0.0.1:17502,127.0.0.1:17503
    b --mode pubsub -c "$SUBS" --publishers 1 --rate "$rate" --size 64 --nodes 127.0.0.1:17510
    echo "== (c) nats-server alone: 1,000 connections x 10 subscriptions, 1 publisher x $rate/s"
    "$T/examples/nats_fanout" "nats://127.0.0.1:$NATS_PORT" 1000 $((SUBS / 1000)) "$rate" 5 ||
        { echo "(nats_fanout exit $?)"; failures=$((failures + 1)); }
done
grep -h "dropped\|SlowConsumer" "$logs"/*.log | head -5 || true
# Every row is printed whatever happens; the status says whether all ran.
[ "$failures" -eq 0 ] || { echo "cluster-bench: $failures run(s) failed" >&2; exit 1; }
