#!/usr/bin/env bash
# The 30,000-connection proof: one `ringport serve` process holds 30,000
# concurrent connections although the open-files limit is 20,000.
#
# The server keeps its connections as io_uring direct descriptors, which do
# not use the process's file-descriptor table: 2 shards x 20,000 table
# entries. A client process cannot do the same with ordinary sockets, so the
# connections come from two `ringport-hold` processes (15,000 each), each
# bound to its own loopback source address (127.0.0.2, 127.0.0.3) so that
# each has its own ~28,000 ephemeral ports. No sysctl is changed.
#
# While the clients hold their (echo-verified) connections, the script reads
# the server's open-connection count from its stats log line and its RSS
# from /proc, prints
#   server held N connections, RSS X MiB, ~Y bytes per connection
# and fails unless N >= 30000. Every process it started is stopped on exit.
#
# Settings (environment): HOLD_SOURCES (one ringport-hold process per entry;
# an entry may be a comma-separated list of source addresses; default
# "127.0.0.2 127.0.0.3"), CONNECTIONS (total, default 30000), HOLD_SECS
# (default 20), SHARDS (default 2), BIN (directory of the binaries, default
# target/release, built first unless BUILD=0). Logs are kept in
# target/hold30k/ (LOGS). Smoke mode (CI, scripts/smoke.sh): a few hundred
# connections from debug binaries, e.g.
#   BIN=target/debug BUILD=0 CONNECTIONS=200 HOLD_SECS=4 scripts/hold30k.sh
set -euo pipefail
cd "$(dirname "$0")/.."

HOLD_SOURCES=${HOLD_SOURCES:-"127.0.0.2 127.0.0.3"}
CONNECTIONS=${CONNECTIONS:-30000}
HOLD_SECS=${HOLD_SECS:-20}
SHARDS=${SHARDS:-2}
read -r -a SOURCES <<<"$HOLD_SOURCES"
CLIENTS=${#SOURCES[@]}
PER_CLIENT=$(((CONNECTIONS + CLIENTS - 1) / CLIENTS))

LOGS=${LOGS:-target/hold30k}
BIN=${BIN:-target/release}
mkdir -p "$LOGS"
rm -f "$LOGS"/*.log "$LOGS"/*.out

SERVER_PID=
HOLD_PIDS=()

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    for pid in "${HOLD_PIDS[@]}" $SERVER_PID; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    for pid in "${HOLD_PIDS[@]}" $SERVER_PID; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [ "$status" -ne 0 ]; then
        echo "hold30k: FAILED (logs in $LOGS/)" >&2
    fi
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
    echo "hold30k: error: $*" >&2
    exit 1
}

rss_kib() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

if [ "${BUILD:-1}" != 0 ]; then
    echo "== building (release)"
    cargo build --release -p ringport-cli --bins
fi

echo "== open-files limit: soft $(ulimit -Sn), hard $(ulimit -Hn)"

echo "== starting ringport serve --shards $SHARDS"
"$BIN/ringport" serve --shards "$SHARDS" --addr 127.0.0.1:0 --stats-interval 1 \
    >"$LOGS/server.log" 2>&1 &
SERVER_PID=$!

PORT=
for _ in $(seq 150); do
    PORT=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$LOGS/server.log" | head -n1)
    [ -n "$PORT" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$LOGS/server.log" >&2; fail "the server exited at start"; }
    sleep 0.1
done
[ -n "$PORT" ] || { cat "$LOGS/server.log" >&2; fail "the server did not start listening within 15 s"; }
grep -E 'open-files limit|io_uring|listening' "$LOGS/server.log" | sed 's/^/   server: /'

sleep 1
IDLE_KIB=$(rss_kib "$SERVER_PID")
echo "== server pid $SERVER_PID on 127.0.0.1:$PORT, idle RSS $((IDLE_KIB / 1024)) MiB"

echo "== $CLIENTS ringport-hold processes x $PER_CLIENT connections, holding ${HOLD_SECS}s"
for i in "${!SOURCES[@]}"; do
    "$BIN/ringport-hold" --addr "127.0.0.1:$PORT" --connections "$PER_CLIENT" \
        --source "${SOURCES[$i]}" --hold "$HOLD_SECS" \
        >"$LOGS/hold-$i.out" 2>"$LOGS/hold-$i.log" &
    HOLD_PIDS+=($!)
done

# Wait until every client has opened and verified all of its connections.
deadline=$((SECONDS + 180))
while :; do
    ready=0
    for i in "${!SOURCES[@]}"; do
        if grep -qs "^held $PER_CLIENT connections, verified $PER_CLIENT echoes" "$LOGS/hold-$i.out"; then
            ready=$((ready + 1))
        elif ! kill -0 "${HOLD_PIDS[$i]}" 2>/dev/null; then
            cat "$LOGS/hold-$i.log" >&2
            fail "ringport-hold from ${SOURCES[$i]} exited before holding its connections"
        fi
    done
    [ "$ready" -eq "$CLIENTS" ] && break
    [ "$SECONDS" -lt "$deadline" ] || fail "the clients did not all connect within 180 s"
    kill -0 "$SERVER_PID" 2>/dev/null || fail "the server died"
    sleep 0.2
done
for i in "${!SOURCES[@]}"; do
    sed "s/^/   client ${SOURCES[$i]}: /" "$LOGS/hold-$i.log" "$LOGS/hold-$i.out"
done

# Read the server's own count from a stats line logged after that point.
stats_lines_before=$(grep -c 'ringport::stats: stats' "$LOGS/server.log" || true)
HELD=
for _ in $(seq 100); do
    now=$(grep -c 'ringport::stats: stats' "$LOGS/server.log" || true)
    if [ "$now" -ge $((stats_lines_before + 2)) ]; then
        HELD=$(grep 'ringport::stats: stats' "$LOGS/server.log" | tail -n1 |
            sed -n 's/.* connections=\([0-9]*\) .*/\1/p')
        break
    fi
    sleep 0.1
done
[ -n "$HELD" ] || fail "no stats line from the server"
RSS_KIB=$(rss_kib "$SERVER_PID")
HWM_KIB=$(awk '/^VmHWM:/ { print $2 }' "/proc/$SERVER_PID/status")
FDS=$(find "/proc/$SERVER_PID/fd" -mindepth 1 -maxdepth 1 | wc -l)
THREADS=$(awk '/^Threads:/ { print $2 }' "/proc/$SERVER_PID/status")
grep 'ringport::stats: stats' "$LOGS/server.log" | tail -n1 | sed 's/^/   server: /'

PER_CONN=$((RSS_KIB * 1024 / (HELD > 0 ? HELD : 1)))
MARGINAL=$(((RSS_KIB - IDLE_KIB) * 1024 / (HELD > 0 ? HELD : 1)))
echo
echo "server held $HELD connections, RSS $((RSS_KIB / 1024)) MiB, ~$PER_CONN bytes per connection"
echo "   (bytes per connection = whole RSS $RSS_KIB KiB / $HELD; over the idle RSS of" \
    "$IDLE_KIB KiB, measured before any client connected (shard tables, receive" \
    "buffer rings, runtime), each connection added ~$MARGINAL bytes; peak RSS $((HWM_KIB / 1024)) MiB)"
echo "   (the server process has $FDS open file descriptors and $THREADS threads;" \
    "kernel $(grep '^TCP:' /proc/net/sockstat), not counted in RSS)"
echo

[ "$HELD" -ge "$CONNECTIONS" ] || fail "the server held $HELD connections, expected at least $CONNECTIONS"

echo "== waiting for the clients to finish holding and re-verify"
for i in "${!SOURCES[@]}"; do
    if ! wait "${HOLD_PIDS[$i]}"; then
        cat "$LOGS/hold-$i.log" >&2
        fail "ringport-hold from ${SOURCES[$i]} failed"
    fi
    grep '^after holding' "$LOGS/hold-$i.out" | sed "s/^/   client ${SOURCES[$i]}: /"
done
HOLD_PIDS=()

echo "== stopping the server (SIGTERM)"
kill -TERM "$SERVER_PID"
stopped=
for _ in $(seq 300); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        stopped=1
        break
    fi
    sleep 0.1
done
[ -n "$stopped" ] || fail "the server did not stop within 30 s of SIGTERM"
if ! wait "$SERVER_PID"; then
    fail "the server exited with a failure status after SIGTERM"
fi
SERVER_PID=
grep -E 'received SIG|stopped in' "$LOGS/server.log" | sed 's/^/   server: /'
echo "hold30k: OK: one server process held $HELD concurrent connections"
