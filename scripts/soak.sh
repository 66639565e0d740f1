#!/usr/bin/env bash
# Soak: one `ringport serve` under steady echo load from `ringport bench`
# for a long time (30 minutes by default), its RSS and open descriptors
# sampled every 10 s. Passes when, after the warm-up, neither RSS nor the
# descriptor count has a rising trend (scripts/lib/soak_judge.py: the
# fitted growth over the run and the last third's median against the
# first third's must both stay under a floor of 1 MiB or 5 % of the
# median; breathing without a direction passes), and the bench verified
# every reply.
#
#   scripts/soak.sh                       # 30 minutes, default backend
#   SOAK_MINUTES=5 RINGPORT_BACKEND=epoll scripts/soak.sh
#
# Loopback only; stops by itself. Samples go to $SOAK_OUT (default
# target/soak/soak.csv).
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=${SOAK_MINUTES:-30}
WARMUP_MINUTES=${SOAK_WARMUP_MINUTES:-3}
# Seconds override minutes (smoke mode: SOAK_SECONDS=6 SOAK_WARMUP_SECONDS=2).
SECONDS_=${SOAK_SECONDS:-$((MINUTES * 60))}
WARMUP_SECONDS=${SOAK_WARMUP_SECONDS:-$((WARMUP_MINUTES * 60))}
SAMPLE=${SOAK_SAMPLE_SECONDS:-10}
CONNS=${SOAK_CONNECTIONS:-2000}
RATE=${SOAK_RATE:-25}          # messages per second per connection
OUT=${SOAK_OUT:-target/soak/soak.csv}
mkdir -p "$(dirname "$OUT")"
BACKEND=${RINGPORT_BACKEND:-auto}

# BIN=path with BUILD=0: use that binary as it is (smoke mode).
[ "${BUILD:-1}" = 0 ] || cargo build --release -q -p ringport-cli
BIN=${BIN:-target/release/ringport}
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
LOG=$(mktemp)
BENCH_JSON=$(mktemp)
"$BIN" serve --addr "127.0.0.1:$PORT" --backend "$BACKEND" --stats-interval 60s \
    --idle-timeout 5m 2>"$LOG" &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; kill $BENCH 2>/dev/null || true; rm -f "$LOG" "$BENCH_JSON"' EXIT
for _ in $(seq 100); do grep -q "listening on" "$LOG" && break; sleep 0.1; done
grep -q "listening on" "$LOG" || { cat "$LOG"; exit 1; }

echo "soak: ${SECONDS_} s, $CONNS connections x $RATE msg/s, backend $BACKEND, server pid $SERVER"
"$BIN" bench --addr "127.0.0.1:$PORT" --backend "$BACKEND" --connections "$CONNS" \
    --rate "$RATE" --size 256 --duration "${SECONDS_}s" --warmup 1s \
    --sources 127.0.0.1-127.0.0.4 --json "$BENCH_JSON" >/dev/null 2>&1 &
BENCH=$!

echo "seconds,rss_kib,fds" >"$OUT"
START=$(date +%s)
while kill -0 $BENCH 2>/dev/null; do
    now=$(( $(date +%s) - START ))
    rss=$(awk '/^VmRSS:/ {print $2}' /proc/$SERVER/status)
    fds=$(ls /proc/$SERVER/fd | wc -l)
    echo "$now,$rss,$fds" >>"$OUT"
    sleep "$SAMPLE"
done
set +e
wait $BENCH
BENCH_STATUS=$?
set -e

PYTHONPATH=scripts/lib python3 - "$OUT" "$BENCH_JSON" "$BENCH_STATUS" "$WARMUP_SECONDS" <<'PY'
import csv, json, sys
from soak_judge import judge
out, bench_json, bench_status, warm = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
samples = [(float(r["seconds"]), int(r["rss_kib"]) / 1024, int(r["fds"])) for r in csv.DictReader(open(out))]
flat, s = judge(samples, warm_s=warm)
if "samples" not in s:
    sys.exit(f"soak: {s['reason']}")
try:
    b = json.load(open(bench_json))
    msgs = b.get("messages_per_sec") or b.get("msgs_per_sec")
    errors = b.get("errors")
    bench = f"bench: {msgs:,.0f} msg/s, p99 {b['latency_us']['p99']:,.0f} us, errors {errors}"
except Exception as e:  # a bench that failed writes no JSON
    bench = f"bench: no report ({e})"
ok = flat and bench_status == 0
print(f"soak: {s['samples']} samples after {warm:g} s warm-up: RSS {s['rss_min']:.1f}-{s['rss_max']:.1f} MiB "
      f"(median {s['rss_median']:.1f}; growth fitted {s['fitted_growth_mib']:+.2f}, last third vs first "
      f"{s['thirds_growth_mib']:+.2f}, floor {s['floor_mib']:.2f} MiB; {s['reason']}), fd growth {s['fd_growth']}; "
      f"{bench}; bench exit {bench_status}: {'PASS' if ok else 'FAIL'}")
sys.exit(0 if ok else 1)
PY
