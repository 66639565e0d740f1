#!/usr/bin/env bash
# bench/tls_handshakes.sh: TLS handshakes per second, ringport serve
# --tls-cert vs peer-tokio-rustls (1 shard / 1 thread each), side by side.
#
# Each server runs pinned to CPU 0, the load generator
# (bench/peers/target/release/tls-handshakes: 1 tokio thread, --conns loops
# of connect, full handshake with resumption off, one 64-byte echo, close)
# on CPU 1. Servers alternate, REPEATS times each, against a freshly
# started server. Prints one JSON line per run and a median table. Server
# CPU per handshake comes from /proc/PID/stat over the measured window.
#
# Usage: bench/tls_handshakes.sh [REPEATS=3] [DURATION=5] [CONNS=16]
# Needs: target/release/ringport and the peers built
# (cd bench/peers && cargo build --release -p peer-tokio-rustls -p tls-handshakes).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REPEATS=${1:-3} DURATION=${2:-5} CONNS=${3:-16}
# Binaries: RINGPORT, PEERS (the peers' target dir) override (smoke mode:
# debug builds).
RINGPORT=${RINGPORT:-$ROOT/target/release/ringport}
PEERS=${PEERS:-$ROOT/bench/peers/target/release}
PEER=$PEERS/peer-tokio-rustls
LOAD=$PEERS/tls-handshakes
for b in "$RINGPORT" "$PEER" "$LOAD"; do [[ -x $b ]] || { echo "missing $b" >&2; exit 1; }; done
TLS=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    rm -rf "$TLS"
}
trap cleanup EXIT
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -keyout "$TLS/key.pem" -out "$TLS/cert.pem" -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null
# A port free now, chosen by the kernel (a random one can be taken).
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
RESULTS=$TLS/runs.txt
for rep in $(seq "$REPEATS"); do
    for srv in ringport-tls peer-tokio-rustls; do
        PORT=$(free_port)
        addr=127.0.0.1:$PORT
        if [[ $srv == ringport-tls ]]; then
            cmd=("$RINGPORT" serve --addr "$addr" --shards 1 --stats-interval 0
                --tls-cert "$TLS/cert.pem" --tls-key "$TLS/key.pem")
        else
            cmd=("$PEER" --addr "$addr" --threads 1 --cert "$TLS/cert.pem" --key "$TLS/key.pem")
        fi
        taskset -c 0 "${cmd[@]}" >"$TLS/$srv.log" 2>&1 &
        spid=$!
        PIDS+=("$spid")
        ready=0
        for _ in $(seq 600); do
            if grep -q "listening on" "$TLS/$srv.log" 2>/dev/null &&
                [[ -n $(ss -Hltn "sport = :$PORT" 2>/dev/null) ]]; then
                ready=1
                break
            fi
            sleep 0.05
        done
        ((ready)) || { echo "$srv did not start:" >&2; cat "$TLS/$srv.log" >&2; exit 1; }
        line=$(taskset -c 1 timeout 120 "$LOAD" --addr "$addr" --conns "$CONNS" \
            --duration "$DURATION" --warmup 1 --server-pid "$spid")
        echo "{\"server\":\"$srv\",\"repeat\":$rep,${line#\{}" | tee -a "$RESULTS"
        kill -TERM "$spid" 2>/dev/null || true
        wait "$spid" 2>/dev/null || true
    done
done
python3 - "$RESULTS" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
print("\n| server | handshakes/s | server CPU µs/handshake | failed |")
print("|---|---:|---:|---:|")
for srv in ("ringport-tls", "peer-tokio-rustls"):
    rs = [r for r in runs if r["server"] == srv]
    def cell(k, fmt):
        v = [r[k] for r in rs if r.get(k) is not None]
        if not v:
            return "–"
        return f"{fmt(statistics.median(v))} ({fmt(min(v))}–{fmt(max(v))})"
    print(f"| {srv} (1 {'shard' if srv.startswith('ringport') else 'thread'}) | {cell('handshakes_per_sec', lambda x: f'{x:,.0f}')} | "
          f"{cell('server_cpu_us_per_handshake', lambda x: f'{x:.0f}')} | {sum(r['failed'] for r in rs)} |")
PY
