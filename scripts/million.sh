#!/usr/bin/env bash
# The 1,000,000-connection case, end to end on this machine (not part of the
# default tests: it takes a few minutes and ~4-6 GB of RAM).
#
# Starts `ringport serve` pinned to CPU 0 and `ringport bench` pinned to
# CPU 1; the bench opens CONNECTIONS connections from explicit source
# (address, port) pairs spread over 127.0.0.0/8, sends RATE messages per
# second per connection of SIZE bytes for DURATION, verifies every reply,
# and the script prints
#   connections, connect rate, offered vs delivered msg/s, late sends,
#   latency p50/p99 and the slowest reply of each second, server RSS
#   before/after and marginal bytes per connection, and what the kernel did
#   meanwhile (packets dropped at a full input backlog, TCP retransmissions,
#   TCP socket-buffer memory and memory pressure)
# Every process it starts is stopped on exit (bounded: the bench runs under
# `timeout`); logs and the bench JSON are kept in target/million/.
#
# Settings (environment):
#   CONNECTIONS  (default 1000000)
#   SHARDS       server shards (default 2, one per core: a shard spreads its
#                connections over as many io_uring rings as it needs)
#   BENCH_THREADS bench engine threads (default 2: more connects in flight
#                per core; each thread spreads its connections over rings)
#   RATE         messages/s per connection (default 0.05: 50,000 msg/s in all)
#   SIZE         payload bytes (default 64)
#   DURATION     measured seconds (default 60), WARMUP seconds (default 5)
#   SOURCES      --sources for the bench (default: enough addresses of a
#                127.N.0.0/16 block picked at random, so TIME_WAITs left by
#                an earlier run do not collide)
#   SERVER_CPU / BENCH_CPU  CPUs to pin to (default 0 / 1)
#   SERVER_BIN   the ringport binary that serves (default: this tree's
#                release build, as for the bench): to compare two builds'
#                servers under the same load generator
#   BACKEND      io-uring or epoll (default auto)
#   TIME_LIMIT   seconds the bench may take in all (default DURATION + 600)
#   NETNS        1 (default when root): run server and bench in a network
#                namespace of their own whose TCP established-connection hash
#                table has a bucket per socket (net.ipv4.tcp_child_ehash_entries,
#                Linux 6.1+, set only while the namespace is created). The
#                default table is sized at boot (262,144 buckets here): with
#                2,000,000 sockets (both ends) every packet walks chains of ~8
#                sockets in __inet_lookup_established, and each side then
#                needs ~53 us of CPU per message instead of ~18 (measured:
#                15,400 of 50,000 msg/s delivered, against all of them in
#                the namespace). 0: the current namespace as it is.
#   RPS          1 (default): in that namespace, spread loopback packet
#                processing over all CPUs (receive packet steering on its
#                own lo, by flow hash). On loopback the connecting thread
#                otherwise runs both ends' handshake in its own softirq, so
#                the bench's core does most of the kernel work of every
#                connect while the server's core idles (measured: ~100 % vs
#                ~55 %). 0: leave it off.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${NETNS:-auto}" != 0 ] && [ "${NETNS:-auto}" != inside ] \
    && [ "$(id -u)" -eq 0 ] && [ -e /proc/sys/net/ipv4/tcp_child_ehash_entries ]; then
    want=$(( ${CONNECTIONS:-1000000} * 2 ))
    buckets=1
    while [ "$buckets" -lt "$want" ]; do buckets=$((buckets * 2)); done
    old=$(cat /proc/sys/net/ipv4/tcp_child_ehash_entries)
    echo "== network namespace of its own, TCP established hash of $buckets buckets"
    echo "$buckets" > /proc/sys/net/ipv4/tcp_child_ehash_entries
    status=0
    # Not visible inside a namespace other than the first (global setting).
    export MAX_BACKLOG TCP_MEM
    MAX_BACKLOG=$(cat /proc/sys/net/core/netdev_max_backlog)
    TCP_MEM=$(cat /proc/sys/net/ipv4/tcp_mem)
    # A mount namespace too, so that /sys shows this namespace's loopback
    # device (for RPS below) without touching the host's.
    NETNS=inside unshare -n -m bash -c '
        ip link set lo up
        if [ "${RPS:-1}" = 1 ] && mount -t sysfs sysfs /sys 2>/dev/null; then
            cpus=$(printf %x $(( (1 << $(nproc)) - 1 )))
            echo "$cpus" > /sys/class/net/lo/queues/rx-0/rps_cpus \
                && echo "== RPS on the namespace'"'"'s loopback: CPU mask $cpus"
        fi
        exec "$0"' "$0" || status=$?
    echo "$old" > /proc/sys/net/ipv4/tcp_child_ehash_entries
    exit "$status"
fi

CONNECTIONS=${CONNECTIONS:-1000000}
SHARDS=${SHARDS:-2}
BENCH_THREADS=${BENCH_THREADS:-2}
RATE=${RATE:-0.05}
SIZE=${SIZE:-64}
DURATION=${DURATION:-60}
WARMUP=${WARMUP:-5}
SERVER_CPU=${SERVER_CPU:-0}
BENCH_CPU=${BENCH_CPU:-1}
BACKEND=${BACKEND:-${RINGPORT_BACKEND:-auto}}
TIME_LIMIT=${TIME_LIMIT:-$((DURATION + 600))}

OUT=target/million
BIN=${BIN:-${CARGO_TARGET_DIR:-target}/release}
mkdir -p "$OUT"
rm -f "$OUT"/*.log "$OUT"/*.json "$OUT"/*.out

SERVER_PID=
BENCH_PID=

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    for pid in $BENCH_PID $SERVER_PID; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in $BENCH_PID $SERVER_PID; do
        for _ in $(seq 300); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    [ "$status" -eq 0 ] || echo "million: FAILED (logs in $OUT/)" >&2
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() {
    echo "million: error: $*" >&2
    exit 1
}

rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
# Packets the kernel dropped because a CPU's input backlog was full
# (net.core.netdev_max_backlog; loopback traffic always passes through it),
# over all CPUs: the second column of softnet_stat, in hex.
backlog_drops() {
    local total=0 _ dropped _rest
    while read -r _ dropped _rest; do total=$((total + 16#$dropped)); done </proc/net/softnet_stat
    echo "$total"
}
# One TCP counter of this network namespace: tcp_counter Tcp: RetransSegs
# (/proc/net/snmp) or tcp_counter TcpExt: TCPTimeouts (/proc/net/netstat).
tcp_counter() {
    awk -v prefix="$1" -v name="$2" '$1 == prefix {
        if (!col) { for (i = 2; i <= NF; i++) if ($i == name) col = i; next }
        print $col; exit }' /proc/net/snmp /proc/net/netstat
}
kernel_counters() {
    echo "$(backlog_drops) $(tcp_counter Tcp: RetransSegs) $(tcp_counter TcpExt: TCPTimeouts)" \
        "$(tcp_counter TcpExt: TCPMemoryPressures) $(tcp_counter TcpExt: TCPMemoryPressuresChrono)" \
        "$(tcp_counter TcpExt: DelayedACKs)"
}
# Pages of socket buffers all TCP sockets hold (machine-wide, whichever
# namespace reads it); past the middle value of net.ipv4.tcp_mem TCP is
# under memory pressure and shrinks buffers; past the last, sends wait.
tcp_mem_pages() { awk '$1 == "TCP:" { for (i = 2; i < NF; i++) if ($i == "mem") print $(i + 1) }' /proc/net/sockstat; }
busy_ticks() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat; }
# Time the hypervisor ran something else on this machine's CPUs (steal):
# a virtual machine's neighbours show up here, not in any process.
steal_ticks() { awk '/^cpu / { print $9 }' /proc/stat; }

avail_mib=$(awk '/^MemAvailable:/ { print int($2 / 1024) }' /proc/meminfo)
[ "$avail_mib" -ge 6144 ] || fail "only $avail_mib MiB available; this run needs about 6 GiB"

# Source addresses: the bench binds ports 1024-65535 outside the kernel's
# ephemeral range (and reserved ports) itself; enough addresses for all
# connections, plus a few for ports somebody else holds.
if [ -z "${SOURCES:-}" ]; then
    read -r lo hi </proc/sys/net/ipv4/ip_local_port_range
    per_source=$((65535 - 1024 + 1 - (hi - lo + 1)))
    count=$(((CONNECTIONS + per_source - 1) / per_source + 2))
    block=$((RANDOM % 200 + 20))
    SOURCES="127.$block.0.1-127.$block.$((count / 256)).$((count % 256))"
fi

if [ "${NO_BUILD:-}" != 1 ]; then
    echo "== building (release)"
    cargo build --release -q -p ringport-cli --bins
fi

echo "== machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)," \
    "$avail_mib MiB available, open-files limit $(ulimit -Sn)/$(ulimit -Hn)"

taskset -c "$SERVER_CPU" "${SERVER_BIN:-$BIN/ringport}" serve --addr 127.0.0.1:0 --shards "$SHARDS" --backend "$BACKEND" \
    --max-connections $((CONNECTIONS + 1000)) --stats-interval 10s \
    >"$OUT/server.log" 2>&1 &
SERVER_PID=$!
PORT=
for _ in $(seq 300); do
    PORT=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$OUT/server.log" | head -n1)
    [ -n "$PORT" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { cat "$OUT/server.log" >&2; fail "the server exited at start"; }
    sleep 0.1
done
[ -n "$PORT" ] || fail "the server did not listen within 30 s"
sleep 1
IDLE_KIB=$(rss_kib "$SERVER_PID")
echo "== server pid $SERVER_PID on 127.0.0.1:$PORT, $SHARDS shards, CPU $SERVER_CPU," \
    "idle RSS $((IDLE_KIB / 1024)) MiB"
echo "== bench: $CONNECTIONS connections from $SOURCES, $RATE msg/s each, $SIZE B," \
    "${WARMUP}s warm-up + ${DURATION}s measured, CPU $BENCH_CPU"

ticks_before=$(busy_ticks)
steal_before=$(steal_ticks)
read -r drops_before retrans_before timeouts_before pressures_before pressure_ms_before \
    delacks_before <<<"$(kernel_counters)"
PEAK_TCP_MEM=0
started=$SECONDS
set +e
timeout --signal=TERM --kill-after=30 "$TIME_LIMIT" \
    taskset -c "$BENCH_CPU" "$BIN/ringport" bench --addr "127.0.0.1:$PORT" \
    --connections "$CONNECTIONS" --threads "$BENCH_THREADS" --backend "$BACKEND" \
    --sources "$SOURCES" --rate "$RATE" --size "$SIZE" \
    --duration "$DURATION" --warmup "$WARMUP" --drain-timeout 30s \
    --server-pid "$SERVER_PID" --json "$OUT/bench.json" \
    >"$OUT/bench.out" 2>"$OUT/bench.log" &
BENCH_PID=$!
# Sample the server's RSS while the bench runs (peak and at the end).
PEAK_KIB=$IDLE_KIB
while kill -0 "$BENCH_PID" 2>/dev/null; do
    now=$(rss_kib "$SERVER_PID" 2>/dev/null || echo 0)
    [ "${now:-0}" -gt "$PEAK_KIB" ] && PEAK_KIB=$now
    pages=$(tcp_mem_pages)
    [ "${pages:-0}" -gt "$PEAK_TCP_MEM" ] && PEAK_TCP_MEM=$pages
    sleep 1
done
wait "$BENCH_PID"
bench_status=$?
BENCH_PID=
set -e
elapsed=$((SECONDS - started))
read -r drops_after retrans_after timeouts_after pressures_after pressure_ms_after \
    delacks_after <<<"$(kernel_counters)"
ticks_after=$(busy_ticks)
steal_after=$(steal_ticks)

grep -E '^(connected|note|warning|error)' "$OUT/bench.log" | sed 's/^/   bench: /' || true
sed 's/^/   /' "$OUT/bench.out"
[ -s "$OUT/bench.json" ] || fail "the bench wrote no JSON (status $bench_status; see $OUT/bench.log)"

hz=$(getconf CLK_TCK)
python3 - "$OUT/bench.json" "$IDLE_KIB" "$PEAK_KIB" "$elapsed" \
    "$(((ticks_after - ticks_before) / hz))" "$(nproc)" "$OUT/bench.log" \
    "$((drops_after - drops_before))" "$((retrans_after - retrans_before))" \
    "$((timeouts_after - timeouts_before))" \
    "${MAX_BACKLOG:-$(cat /proc/sys/net/core/netdev_max_backlog 2>/dev/null || echo 0)}" \
    "$((pressures_after - pressures_before))" "$((pressure_ms_after - pressure_ms_before))" \
    "$PEAK_TCP_MEM" "${TCP_MEM:-$(cat /proc/sys/net/ipv4/tcp_mem 2>/dev/null || echo 0 0 0)}" \
    "$(((steal_after - steal_before) * 10 / hz))" "$((delacks_after - delacks_before))" \
    "$(python3 -c "print(round($RATE * $CONNECTIONS * ($WARMUP + $DURATION)))")" <<'EOF'
import json, os, re, sys
b = json.load(open(sys.argv[1]))
idle_kib, peak_kib, elapsed, busy_secs, cpus = map(int, sys.argv[2:7])
drops, retrans, timeouts, max_backlog, pressures, pressure_ms, tcp_mem_peak = map(int, sys.argv[8:15])
tcp_mem = [int(v) for v in sys.argv[15].split()]
# The bench's progress lines carry the slowest reply of each second: a
# stall shows where it happened (warm-up or measured), not only in p99.
slowest = {"warm-up": [], "measure": []}
for line in open(sys.argv[7], errors="replace"):
    m = re.match(r"(warm-up|measure): .*slowest reply ([0-9.]+) (us|ms|s),", line)
    if m:
        slowest[m[1]].append(m[2] + m[3])
s = b.get("server") or {}
conns = b["connections_established"]
print()
print(f"connections:   {conns:,} of {b['connections']:,} ({b['connect_failed']:,} failed)")
print(f"connect rate:  {b['connects_per_sec']:,.0f}/s")
series = b.get("connects_per_second_series") or []
if series:
    print("  by second:   " + " ".join(f"{r / 1000:.0f}k" for r in series))
off, dlv = b.get("offered_per_sec"), b.get("delivered_per_sec")
if off:
    print(f"messages:      offered {off:,.0f} msg/s, delivered {dlv:,.0f} msg/s "
          f"({100 * b['delivered_share']:.1f} %), late sends {100 * b['late_send_share']:.2f} %")
else:
    print(f"messages:      {b['messages_per_sec']:,.0f} msg/s (closed loop)")
lat = b["latency_us"]
print(f"latency:       p50 {lat['p50']:,} us, p99 {lat['p99']:,} us, max {lat['max']:,} us")
if slowest["measure"]:
    print("  slowest reply by second: warm-up " + " ".join(slowest["warm-up"])
          + " | measured " + " ".join(slowest["measure"]))
before = s.get("rss_bytes_before_connect")
during = s.get("rss_bytes")
if before and during:
    print(f"server RSS:    {before / 2**20:,.0f} MiB before connecting -> {during / 2**20:,.0f} MiB "
          f"with {conns:,} connections (peak {peak_kib / 1024:,.0f} MiB); "
          f"marginal {s['rss_marginal_bytes_per_connection']:,.0f} B per connection")
print(f"server CPU:    {s.get('cpu_percent', 0):.0f} % of one core while measuring; "
      f"bench CPU {100 * b['bench_cpu_seconds'] / max(b['duration_secs'], 1e-9):.0f} %")
steal_tenths = int(sys.argv[16])
print(f"machine:       {elapsed} s wall, all CPUs busy {busy_secs} s of {elapsed * cpus} s;"
      f" {steal_tenths / 10:.1f} s stolen by the hypervisor")
# A dropped packet costs its connection a retransmission timeout (200 ms
# or more).
print(f"kernel:        {drops:,} packets dropped at a full input backlog "
      f"(netdev_max_backlog {max_backlog:,}; all CPUs, all namespaces), "
      f"{retrans:,} TCP segments retransmitted, {timeouts:,} retransmission timeouts")
# A connection quiet between messages acknowledges what it received with
# a packet of its own: at once while the socket is in quick-ACK mode (a
# young connection), else when the delayed-ACK timer fires (40 ms+), which
# is what this counts.
delayed_acks, offered = int(sys.argv[17]), int(sys.argv[18])
print(f"               {delayed_acks:,} delayed ACKs sent (both ends), "
      f"{delayed_acks / max(offered, 1):.2f} per message offered")
# Under TCP memory pressure the kernel shrinks socket buffers, and sends
# wait for memory: replies stall without any packet lost.
page_mib = os.sysconf("SC_PAGE_SIZE") / 2**20
print(f"TCP memory:    peak {tcp_mem_peak * page_mib:,.0f} MiB of socket buffers "
      f"(tcp_mem pressure at {tcp_mem[1] * page_mib:,.0f} MiB); "
      f"entered memory pressure {pressures:,} times, {pressure_ms / 1000:,.1f} s in it")
print(f"errors:        {b['errors'] or 'none'}; ok: {b['ok']}")
EOF
[ "$bench_status" -eq 0 ] || fail "the bench exited with status $bench_status (see above)"
echo "million: OK"
