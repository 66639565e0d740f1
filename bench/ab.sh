#!/usr/bin/env bash
# Side-by-side A/B of servers: alternates the given binaries as the server
# (pinned to CPU 0) under the same load (`ringport bench`, pinned to CPU 1),
# round after round, and prints per run the bench's throughput and the
# server's CPU per message over a window in the middle of the run
# (utime+stime from /proc/PID/stat), split into user space (utime) and
# kernel (stime), then each server's medians.
#
# A binary is run as `BIN serve --shards 1 SERVE-ARGS` (a ringport build),
# unless its file name starts with `peer-` (a comparison peer from
# bench/peers): then as `BIN --threads 1`. A BIN given with words after it
# ("BIN ARGS", one shell word) gets ARGS too, so one binary can run with two
# settings side by side; it is named with its spaces as underscores.
#
# Alternating builds in one sitting is what makes small differences visible
# on a noisy VM; compare.sh's tables are for the peers.
#
# usage: bench/ab.sh [options] BIN...
#   --load "ARGS"   bench arguments (default "-c 1000 --size 512 --depth 8")
#   --serve "ARGS"  extra serve arguments (default none)
#   --rounds N      rounds (default 3); every round runs each BIN once
#   --window S      measured seconds of server CPU (default 4)
#   --bench BIN     the load generator's binary (default: the first BIN)
#
# examples:
#   bench/ab.sh --load "-c 4 --size 16777216" --window 10 old/ringport new/ringport
#   bench/ab.sh --rounds 5 target/release/ringport bench/peers/target/release/peer-uring
#   bench/ab.sh --bench target/release/ringport --load "-c 10 --size 65536 --depth 1" \
#       bench/peers/target/release/peer-uring "bench/peers/target/release/peer-uring --send-zc-min 16384"
set -euo pipefail

LOAD="-c 1000 --size 512 --depth 8"
SERVE=""
ROUNDS=3
WINDOW=4
BENCH=""
BINS=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --load) LOAD=$2; shift 2 ;;
        --serve) SERVE=$2; shift 2 ;;
        --rounds) ROUNDS=$2; shift 2 ;;
        --window) WINDOW=$2; shift 2 ;;
        --bench) BENCH=$2; shift 2 ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) BINS+=("$1"); shift ;;
    esac
done
[[ ${#BINS[@]} -gt 0 ]] || { echo "ab.sh: give at least one ringport binary (--help)" >&2; exit 2; }
[[ $ROUNDS =~ ^[1-9][0-9]*$ && $WINDOW =~ ^[1-9][0-9]*$ ]] || { echo "ab.sh: --rounds and --window take whole numbers" >&2; exit 2; }
BENCH=${BENCH:-${BINS[0]%% *}}
[[ $(basename "${BENCH%% *}") != peer-* ]] || { echo "ab.sh: the load generator must be a ringport binary: give --bench" >&2; exit 2; }
for spec in "${BINS[@]}" "$BENCH"; do
    bin=${spec%% *}
    [[ -x $bin ]] || { echo "ab.sh: $bin is not an executable" >&2; exit 2; }
done

ticks=$(getconf CLK_TCK)
# utime and stime of a process, in clock ticks; fails if it is gone.
cpu_ticks() { awk '{print $14, $15}' "/proc/$1/stat" 2>/dev/null; }
server=""
server_log=$(mktemp)
results=$(mktemp)
trap '[[ -n $server ]] && kill "$server" 2>/dev/null; rm -f "$results" "$server_log"' EXIT

# shellcheck source=bench/lib/server.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/server.sh"

empty_runs=0
for round in $(seq 1 "$ROUNDS"); do
    for spec in "${BINS[@]}"; do
        # shellcheck disable=SC2086 # SERVE is an argument list
        start_server "$server_log" "$spec" $SERVE
        out=$(mktemp)
        # shellcheck disable=SC2086
        taskset -c 1 timeout $((WINDOW + 60)) "$BENCH" bench --addr "127.0.0.1:$port" $LOAD \
            --duration "$((WINDOW + 2))s" --warmup 1s >"$out" 2>&1 &
        bench=$!
        sleep 2 # the bench's warm-up second and its ramp; the window follows
        read -r u0 k0 < <(cpu_ticks "$server") || server_failed "$server_log" "$spec died under load (round $round)"
        t0=$(date +%s%N)
        sleep "$WINDOW"
        read -r u1 k1 < <(cpu_ticks "$server") || server_failed "$server_log" "$spec died under load (round $round)"
        t1=$(date +%s%N)
        wait "$bench" || true
        kill "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
        server=""
        rate=$(grep -oP 'throughput:\s+\K[0-9]+' "$out" || echo 0)
        if [[ $rate == 0 ]]; then
            echo "ab.sh: the bench measured nothing against $spec (round $round):" >&2
            tail -n 5 "$out" | sed 's/^/  bench: /' >&2
            empty_runs=$((empty_runs + 1))
        fi
        rm -f "$out"
        awk -v name="${spec// /_}" -v round="$round" -v rate="$rate" -v user=$((u1 - u0)) \
            -v kernel=$((k1 - k0)) -v ns=$((t1 - t0)) -v hz="$ticks" '
            function per_msg(ticks) { return rate > 0 ? sprintf("%.3f", ticks / hz / (ns / 1e9) * 1e6 / rate) : "-" }
            BEGIN {
                cpu = (user + kernel) / hz / (ns / 1e9);
                printf "round %d  %s  msg/s %d  server cpu %.0f%%  us/msg %s  user %s  kernel %s\n",
                    round, name, rate, cpu * 100,
                    (rate > 0 ? sprintf("%.2f", cpu * 1e6 / rate) : "-"), per_msg(user), per_msg(kernel) }' | tee -a "$results"
    done
done

# Medians per server over the rounds.
echo "medians over $ROUNDS round(s):"
for spec in "${BINS[@]}"; do
    awk -v name="${spec// /_}" -v rate_col=5 -v us_col=10 -v user_col=12 -v kernel_col=14 \
        -f "$(dirname "${BASH_SOURCE[0]}")/medians.awk" "$results"
done
# A run the bench measured nothing in fails the comparison (after the table).
[[ $empty_runs -eq 0 ]] || { echo "ab.sh: $empty_runs run(s) measured nothing" >&2; exit 1; }
