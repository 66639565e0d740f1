#!/usr/bin/env bash
# WebSocket servers side by side in one run (issue 28 item 10): ringport
# (`serve --ws-addr`, 1 shard) and the echo peers of bench/peers built from
# tokio-tungstenite, tokio-websockets and fastwebsockets (1 thread), the
# server pinned to CPU 1 and the load generator to CPU 0, alternating
# servers round after round under the same load:
#
#   small      100 connections x 20 B echo, closed loop
#   large      500 connections x 16 KiB echo, closed loop
#   broadcast  1 publisher -> 10,000 subscribers (pubsub mode), ringport
#              over WebSocket against ringport over framed TCP (the peers
#              only echo, so they have no broadcast row)
#
# Reported per row (medians over the rounds): msgs/s (echo replies, or
# deliveries for broadcast), server CPU over a window in the middle of the
# measured phase (utime+stime from /proc/PID/stat) as % of a core and as
# microseconds per message, p50/p99 latency, and the generator's own CPU
# share over the same window: a generator near 100 % of its core is the
# bottleneck, and the row is marked so.
#
# usage: bench/ws-compare.sh [options]
#   --servers LIST   default ringport,tungstenite,tokio-websockets,fastwebsockets
#                    (ringport-tcp is added to broadcast by itself)
#   --shapes LIST    default small,large,broadcast
#   --rounds N       default 3
#   --duration S     measured seconds per run (default 10)
#   --warmup S       default 2
#   --subscribers N  broadcast subscribers (default 10000)
#   --rate N         broadcast: messages/s the publisher sends (default 10)
#   --quick          plumbing check: 1 round, 2 s, 10 connections, 200
#                    subscribers
#   --no-build       use the binaries as they are
#   --out FILE       Markdown table (default target/ws-compare/ws-compare.md)
#   --raw DIR        each run's JSON and log (default target/ws-compare/raw)
#
# Environment (the defaults need nothing set):
#   RINGPORT  the ringport binary serving (default target/release/ringport)
#   GEN       THE LOAD GENERATOR, one variable: a command taking ringport
#             bench's options (default "$RINGPORT bench"; WebSocket rows add
#             --ws). `ringport bench --ws` comes with branch wsclient.
#   PEERS     the peers' binaries (default bench/peers/target/release)
#
# Raw runs stay under target/ (never in git); results worth keeping go to
# bench/results/ by hand, with the command line.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

SERVERS=ringport,tungstenite,tokio-websockets,fastwebsockets
SHAPES=small,large,broadcast
ROUNDS=3
DURATION=10
WARMUP=2
SUBSCRIBERS=10000
RATE=10
QUICK=0
BUILD=1
OUT=target/ws-compare/ws-compare.md
RAW=target/ws-compare/raw
while [[ $# -gt 0 ]]; do
    case $1 in
        --servers) SERVERS=$2; shift 2 ;;
        --shapes) SHAPES=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --warmup) WARMUP=$2; shift 2 ;;
        --subscribers) SUBSCRIBERS=$2; shift 2 ;;
        --rate) RATE=$2; shift 2 ;;
        --quick) QUICK=1; shift ;;
        --no-build) BUILD=0; shift ;;
        --out) OUT=$2; shift 2 ;;
        --raw) RAW=$2; shift 2 ;;
        -h|--help) sed -n '2,44p' "$0"; exit 0 ;;
        *) echo "ws-compare.sh: unknown option $1 (--help)" >&2; exit 2 ;;
    esac
done
SMALL_C=100 LARGE_C=500
if [[ $QUICK -eq 1 ]]; then
    ROUNDS=1 DURATION=2 WARMUP=1 SMALL_C=10 LARGE_C=10 SUBSCRIBERS=200
fi
for n in "$ROUNDS" "$DURATION" "$WARMUP" "$SUBSCRIBERS" "$RATE"; do
    [[ $n =~ ^[0-9]+$ ]] || { echo "ws-compare.sh: $n: expected a whole number" >&2; exit 2; }
done
[[ $DURATION -ge 2 ]] || { echo "ws-compare.sh: --duration must be at least 2" >&2; exit 2; }

RINGPORT=${RINGPORT:-$ROOT/target/release/ringport}
PEERS=${PEERS:-$ROOT/bench/peers/target/release}
# ====================================================================
# THE LOAD GENERATOR. `ringport bench --ws` (branch wsclient) once
# merged; GEN=/path/to/other/ringport\ bench to use another build.
GEN=${GEN:-"$RINGPORT bench"}
# ====================================================================
read -r -a GEN_CMD <<<"$GEN"

IFS=',' read -r -a servers <<<"$SERVERS"
IFS=',' read -r -a shapes <<<"$SHAPES"
for s in "${servers[@]}"; do
    case $s in ringport|ringport-tcp|tungstenite|tokio-websockets|fastwebsockets) ;;
        *) echo "ws-compare.sh: unknown server $s" >&2; exit 2 ;; esac
done
for s in "${shapes[@]}"; do
    case $s in small|large|broadcast) ;; *) echo "ws-compare.sh: unknown shape $s" >&2; exit 2 ;; esac
done

if [[ $BUILD -eq 1 ]]; then
    echo "== building ringport (release) and the WebSocket peers (release)"
    cargo build --release -q -p ringport-cli --bin ringport
    (cd bench/peers && cargo build --release -q -p peer-ws-tungstenite \
        -p peer-ws-tokio-websockets -p peer-ws-fastwebsockets)
fi

mkdir -p "$RAW" "$(dirname "$OUT")"
results=$RAW/results.tsv
: >"$results"
ticks=$(getconf CLK_TCK)
# utime + stime of a process in clock ticks; fails if it is gone.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null; }
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

server='' gen=''
stop_all() {
    [[ -n $gen ]] && kill "$gen" 2>/dev/null && wait "$gen" 2>/dev/null
    [[ -n $server ]] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
    gen='' server=''
    return 0
}
trap stop_all EXIT

# Starts server $1 for shape $2 on port $3 (framed TCP beside it on $4),
# pinned to CPU 1; sets $server. Prints nothing.
start_server() {
    local name=$1 shape=$2 port=$3 port2=$4 mode=echo log=$5
    [[ $shape == broadcast ]] && mode=pubsub
    case $name in
        ringport)
            # Needs `ringport serve --ws-addr` (the engine's WebSocket listener).
            taskset -c 1 "$RINGPORT" serve --addr "127.0.0.1:$port2" --ws-addr "127.0.0.1:$port" \
                --mode "$mode" --shards 1 --stats-interval 0 >"$log" 2>&1 & ;;
        ringport-tcp)
            taskset -c 1 "$RINGPORT" serve --addr "127.0.0.1:$port" \
                --mode "$mode" --shards 1 --stats-interval 0 >"$log" 2>&1 & ;;
        *)
            taskset -c 1 "$PEERS/peer-ws-$name" --addr "127.0.0.1:$port" --threads 1 >"$log" 2>&1 & ;;
    esac
    server=$!
    local i
    for i in $(seq 1 100); do
        kill -0 "$server" 2>/dev/null || { echo "ws-compare.sh: $name exited at start:" >&2; cat "$log" >&2; server=''; return 1; }
        python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), timeout=0.2).close()" 2>/dev/null && return 0
        sleep 0.1
    done
    echo "ws-compare.sh: $name not accepting on 127.0.0.1:$port" >&2
    return 1
}

# One run: server $2, shape $3, round $1. Appends a line to $results.
run_one() {
    local round=$1 name=$2 shape=$3
    local port port2 tag=$RAW/$shape-$name-r$round
    port=$(free_port); port2=$(free_port)
    local load=() ws=(--ws)
    [[ $name == ringport-tcp ]] && ws=()
    case $shape in
        small) load=(-c "$SMALL_C" --size 20 --depth 1) ;;
        large) load=(-c "$LARGE_C" --size 16384 --depth 1) ;;
        broadcast) load=(--mode pubsub --connections "$SUBSCRIBERS" --publishers 1 --rate "$RATE" --size 64) ;;
    esac
    if ! start_server "$name" "$shape" "$port" "$port2" "$tag.server.log"; then
        printf '%s\t%s\t%s\tstart-failed\n' "$shape" "$name" "$round" >>"$results"
        stop_all
        return 0
    fi
    taskset -c 0 "${GEN_CMD[@]}" --addr "127.0.0.1:$port" "${ws[@]}" "${load[@]}" \
        --duration "${DURATION}s" --warmup "${WARMUP}s" --json "$tag.json" >"$tag.gen.log" 2>&1 &
    gen=$!
    # The window: the middle 60 % of the measured phase, which starts once
    # every connection is up and the warm-up is over (the generator prints
    # its first "measure" progress line then). At most 120 s of waiting.
    # (fan-out runs print no progress: from "connected" on they publish.)
    local started='^measure'
    [[ $shape == broadcast ]] && started='^connected'
    local waited=0
    until grep -q "$started" "$tag.gen.log" 2>/dev/null; do
        kill -0 "$gen" 2>/dev/null || break
        sleep 0.1; waited=$((waited + 1))
        [[ $waited -lt 1200 ]] || break
    done
    local s0=0 s1=0 g0=0 g1=0 t0=0 t1=1
    if grep -q "$started" "$tag.gen.log" 2>/dev/null; then
        sleep "$(awk -v d="$DURATION" 'BEGIN { print d * 0.2 }')"
        if s0=$(cpu_ticks "$server") && g0=$(cpu_ticks "$gen"); then
            t0=$(date +%s%N)
            sleep "$(awk -v d="$DURATION" 'BEGIN { print d * 0.6 }')"
            if s1=$(cpu_ticks "$server") && g1=$(cpu_ticks "$gen"); then
                t1=$(date +%s%N)
            else
                s0=0 s1=0 g0=0 g1=0 t0=0 t1=1
            fi
        else
            s0=0 g0=0
        fi
    fi
    local status=0
    wait "$gen" || status=$?
    gen=''
    stop_all
    python3 - "$tag" "$shape" "$name" "$round" "$status" $((s1 - s0)) $((g1 - g0)) $((t1 - t0)) "$ticks" >>"$results" <<'PY'
import json, re, sys
tag, shape, name, rnd, status, s_ticks, g_ticks, ns, hz = sys.argv[1:]
secs = int(ns) / 1e9
server_cpu = int(s_ticks) / int(hz) / secs if secs > 0 else 0
gen_cpu = int(g_ticks) / int(hz) / secs if secs > 0 else 0
if shape == "broadcast":
    # Fan-out runs report in text: "deliveries expected N, made N (100.000%),
    # order/format errors 0" and "delivered R msgs/s (...); latency ms p50 A p99 B".
    log = open(tag + ".gen.log", errors="replace").read()
    made = re.search(r"deliveries expected (\d+), made (\d+) .*order/format errors (\d+)", log)
    rate_m = re.search(r"delivered (\d+) msgs/s.*latency ms p50 ([\d.]+) p99 ([\d.]+)", log)
    if not made or not rate_m:
        print(f"{shape}\t{name}\t{rnd}\tgenerator-failed(exit {status})")
        sys.exit()
    complete = made.group(1) == made.group(2) and made.group(3) == "0"
    r = {"ok": complete}
    rate = float(rate_m.group(1))
    lat = {"p50": round(float(rate_m.group(2)) * 1000), "p99": round(float(rate_m.group(3)) * 1000)}
else:
    try:
        r = json.load(open(tag + ".json"))
    except (OSError, ValueError):
        print(f"{shape}\t{name}\t{rnd}\tgenerator-failed(exit {status})")
        sys.exit()
    rate = r.get("messages_per_sec") or 0
    lat = r.get("latency_us") or {}
ok = "ok" if r.get("ok") and status == "0" else f"errors(exit {status})"
if ok == "ok" and secs <= 1e-6:
    ok = "no-cpu-window"
us = server_cpu * 1e6 / rate if rate else float("nan")
print(f"{shape}\t{name}\t{rnd}\t{ok}\t{rate:.0f}\t{server_cpu * 100:.0f}\t{us:.3f}\t{lat.get('p50', '')}\t{lat.get('p99', '')}\t{gen_cpu * 100:.0f}")
PY
    tail -n 1 "$results" | awk -F'\t' '{ printf "round %s  %-10s %-17s %s  msg/s %s  server %s%% (%s us/msg)  p50 %s us  p99 %s us  generator %s%%\n", $3, $1, $2, $4, $5, $6, $7, $8, $9, $10 }'
}

echo "== ws-compare: servers ${servers[*]}; shapes ${shapes[*]}; $ROUNDS round(s) of ${DURATION}s (+${WARMUP}s warm-up)"
echo "   generator: ${GEN_CMD[*]} [--ws] (CPU 0); servers on CPU 1"
for round in $(seq 1 "$ROUNDS"); do
    for shape in "${shapes[@]}"; do
        if [[ $shape == broadcast ]]; then
            row=()
            for s in "${servers[@]}"; do [[ $s == ringport ]] && row+=(ringport); done
            row+=(ringport-tcp)
        else
            row=()
            for s in "${servers[@]}"; do [[ $s != ringport-tcp ]] && row+=("$s"); done
        fi
        for name in "${row[@]}"; do
            run_one "$round" "$name" "$shape"
        done
    done
done

python3 - "$results" "$OUT" "$ROUNDS" "$DURATION" "$SMALL_C" "$LARGE_C" "$SUBSCRIBERS" "$RATE" "${GEN_CMD[*]}" <<'PY'
import statistics, sys
from collections import defaultdict
results, out, rounds, duration, small_c, large_c, subs, rate, gen = sys.argv[1:]
rows = defaultdict(list)
bad = defaultdict(list)
order = []
for line in open(results):
    f = line.rstrip("\n").split("\t")
    key = (f[0], f[1])
    if key not in order:
        order.append(key)
    if len(f) < 10 or f[3] != "ok":
        bad[key].append(f"round {f[2]}: {f[3]}")
        continue
    rows[key].append([float(x) if x not in ("", "nan") else float("nan") for x in f[4:10]])
shape_text = {
    "small": f"{small_c} connections x 20 B echo",
    "large": f"{large_c} connections x 16 KiB echo",
    "broadcast": f"1 publisher ({rate}/s) -> {subs} subscribers",
}
def med(vals, i):
    xs = [v[i] for v in vals if v[i] == v[i]]
    return statistics.median(xs) if xs else float("nan")
lines = [
    f"WebSocket servers side by side: {rounds} round(s) of {duration} s, server on CPU 1 (1 shard / 1 thread),",
    f"generator `{gen}` on CPU 0; medians over the rounds. \"gen CPU\" is the generator's share of its core",
    "over the measured window: near 100 % it, not the server, is the bottleneck (marked GEN-BOUND);",
    "in the closed-loop echo shapes one side should be near 100 %, else the run was latency-bound or the host busy.",
    "",
    "| shape | server | msgs/s | server CPU | server us/msg | p50 us | p99 us | gen CPU | runs | note |",
    "|---|---|---|---|---|---|---|---|---|---|",
]
for shape, name in order:
    vals = rows.get((shape, name), [])
    note = "; ".join(bad.get((shape, name), []))
    if not vals:
        lines.append(f"| {shape_text.get(shape, shape)} | {name} | - | - | - | - | - | - | 0 | {note or 'no run'} |")
        continue
    r, cpu, us, p50, p99, g = (med(vals, i) for i in range(6))
    if g >= 90 and cpu < 90:
        note = ("GEN-BOUND; " + note).rstrip("; ")
    elif shape != "broadcast" and g < 80 and cpu < 80:
        # A closed loop with enough connections keeps one side busy unless
        # other processes hold the cores (the figures then measure the host).
        note = ("neither side saturated: latency-bound or host busy; " + note).rstrip("; ")
    lines.append(f"| {shape_text.get(shape, shape)} | {name} | {r:,.0f} | {cpu:.0f} % | {us:.2f} | {p50:.0f} | {p99:.0f} | {g:.0f} % | {len(vals)} | {note} |")
text = "\n".join(lines) + "\n"
open(out, "w").write(text)
print()
print(text)
PY
echo "ws-compare: table in $OUT, raw runs in $RAW"
# A run that failed (server did not start, generator error) fails the script.
if awk -F'\t' '$4 != "ok" { bad = 1 } END { exit !bad }' "$results"; then
    echo "ws-compare: some runs failed (see the note column and $RAW)" >&2
    exit 1
fi
