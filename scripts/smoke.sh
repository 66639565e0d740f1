#!/usr/bin/env bash
# Smoke runs of every script under scripts/ and bench/ (but scripts/test.sh,
# which CI runs on its own): each one once, small and short, with debug
# binaries, so that a renamed flag, a changed log line or a moved file
# breaks CI instead of the next person who runs the full version. The
# figures they print mean nothing at this size; their own checks (every
# reply verified, connections held, RSS flat, ...) still have to pass.
#
#   scripts/smoke.sh                 # all (about 3-5 minutes, plus builds)
#   scripts/smoke.sh hold30k soak    # some, by name
#
# Needs python3, taskset, ss, openssl and nats-server (the cluster scripts;
# .ci/run installs it). scripts/million.sh runs in a network namespace of
# its own when run as root (as in CI). A failing script fails the run; the
# summary names it.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=target/smoke
mkdir -p "$OUT"

ALL=(codec-diff hold30k attack soak million cluster-demo cluster-bench
     cluster-history-bench compare ab loadgen tls-handshakes tls-idle-memory
     peers-check autobahn ws-compare)
if [ $# -gt 0 ]; then WANT=("$@"); else WANT=("${ALL[@]}"); fi
wanted() { local w; for w in "${WANT[@]}"; do [ "$w" = "$1" ] && return 0; done; return 1; }
for w in "${WANT[@]}"; do
    case " ${ALL[*]} " in *" $w "*) ;; *) echo "smoke: unknown script $w (one of: ${ALL[*]})" >&2; exit 2 ;; esac
done

echo "== smoke: building debug binaries"
cargo build -q -p ringport-cli --bins || exit 1
if wanted cluster-bench; then
    cargo build -q -p ringport --features cluster --example nats_fanout || exit 1
fi
# The peers (own workspace): only the small ones the scripts need.
peers=()
wanted loadgen && peers+=(-p gen-pingpong)
wanted tls-handshakes && peers+=(-p peer-tokio-rustls -p tls-handshakes)
wanted peers-check && peers+=(-p peer-mio)
wanted autobahn && peers+=(-p ws-sansio)
wanted ws-compare && peers+=(-p peer-ws-tungstenite)
if [ ${#peers[@]} -gt 0 ]; then
    echo "== smoke: building peers ${peers[*]} (debug)"
    (cd bench/peers && cargo build -q "${peers[@]}") || exit 1
fi
D=$ROOT/target/debug
P=$ROOT/bench/peers/target/debug

passed=()
failed=()
run() { # name[/variant] command...
    local name=${1//\//-} selector=${1%%/*}; shift
    wanted "$selector" || return 0
    echo
    echo "== smoke: $name: $*"
    local start=$SECONDS
    if "$@" >"$OUT/$name.log" 2>&1; then
        tail -n 3 "$OUT/$name.log" | sed 's/^/   /'
        passed+=("$name ($((SECONDS - start)) s)")
    else
        local status=$?
        tail -n 30 "$OUT/$name.log" | sed 's/^/   /'
        failed+=("$name (exit $status, log $OUT/$name.log)")
    fi
}

run codec-diff env CODEC_DIFF_PROFILE=--profile=dev scripts/codec-diff.sh 100 20261207
run hold30k env BIN=target/debug BUILD=0 CONNECTIONS=200 HOLD_SECS=4 LOGS=$OUT/hold30k \
    scripts/hold30k.sh
run attack env RINGPORT=$D/ringport BUILD=0 scripts/attack.sh garbage sigkill
run soak/judge python3 -m unittest discover -s scripts/lib -p 'test_*.py'
run soak env BIN=$D/ringport BUILD=0 SOAK_SECONDS=10 SOAK_WARMUP_SECONDS=2 SOAK_SAMPLE_SECONDS=1 \
    SOAK_CONNECTIONS=50 SOAK_RATE=10 SOAK_OUT=$OUT/soak.csv scripts/soak.sh
run million env BIN=target/debug NO_BUILD=1 CONNECTIONS=2000 RATE=2 DURATION=2 WARMUP=1 \
    scripts/million.sh
run cluster-demo env RINGPORT=$D/ringport scripts/cluster-demo.sh
run cluster-bench env TARGET=target/debug CHAT_CLIENTS=30 SUBS=1000 DURATION=1s RATES=2 \
    scripts/cluster-bench.sh
run cluster-history-bench env RINGPORT_BIN=$D/ringport SUBS=60 RATES=5 CLIENTS=30 TOPICS=3 \
    MISSED=2 DURATION=1s scripts/cluster-history-bench.sh
# compare.sh: the real bench against two servers, then the stub bench
# (bench/stub_bench.py) for the plumbing it exists to test.
run compare env RINGPORT_TARGET=$D bench/compare.sh --no-build --quick --only a \
    --servers ringport,ringport-epoll --repeats 1 --duration 1 --warmup 0 \
    --out "$OUT/compare.md" --raw "$OUT/compare"
run compare/stub env RINGPORT_TARGET=$D BENCH_CMD="python3 bench/stub_bench.py" bench/compare.sh \
    --no-build --quick --only a --servers ringport --repeats 1 --duration 1 --warmup 0 \
    --out "$OUT/compare-stub.md" --raw "$OUT/compare-stub"
run ab bench/ab.sh --rounds 1 --window 1 --load "-c 10 --size 512 --depth 2" \
    "$D/ringport" "$D/ringport --backend epoll"
run loadgen env GEN=$P/gen-pingpong bench/loadgen.sh --server "$D/ringport" --bench "$D/ringport" \
    -c 2 --size 1024 --rounds 1 --seconds 1
run tls-handshakes env RINGPORT=$D/ringport PEERS=$P bench/tls_handshakes.sh 1 1 2
run tls-idle-memory python3 bench/tls_idle_memory.py 50 "$D/ringport"
# The peers' functional check, against one peer it starts itself and
# against a running ringport serve (--addr mode).
check_ringport() {
    local log=$OUT/check-serve.log port="" status
    "$D/ringport" serve --addr 127.0.0.1:0 --shards 1 --stats-interval 0 2>"$log" &
    local pid=$!
    for _ in $(seq 150); do
        port=$(sed -n 's/.*listening on 127\.0\.0\.1:\([0-9][0-9]*\).*/\1/p' "$log" | head -n1)
        [ -n "$port" ] && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$port" ]; then
        kill "$pid" 2>/dev/null; cat "$log"; return 1
    fi
    timeout 120 python3 bench/peers/check.py --addr "127.0.0.1:$port"
    status=$?
    kill -TERM "$pid"; wait "$pid" || status=1
    return "$status"
}
# Autobahn: a few groups against the sans-I/O WebSocket core's echo peer
# (the full run: scripts/autobahn.sh, see bench/results/autobahn-*.md).
run autobahn scripts/autobahn.sh --cases '1.*,2.*,5.*,7.1.*' --out "$OUT/autobahn" \
    -- "$P/ws-sansio-echo" --addr '127.0.0.1:{PORT}'
# Autobahn against the engine (`ringport serve --ws-addr --mode echo`, debug
# build): groups 1-7, 9 and 10, about 10 s. The permessage-deflate groups 12
# and 13 take 4-5 minutes even against release builds (kosoku compresses and
# checks in Python; 12.1 and 13.1 alone take 3 minutes against debug builds),
# so they run by hand: `scripts/autobahn.sh serve tungstenite --summary
# bench/results/autobahn-serve.md` (see that file).
run autobahn/serve env RINGPORT="$D/ringport" scripts/autobahn.sh \
    --cases '1.*,2.*,3.*,4.*,5.*,6.*,7.*,9.*,10.*' --out "$OUT/autobahn-serve" serve
# WebSocket comparison: its plumbing (servers, pinning, /proc sampling, the
# generator's JSON, the table), ringport against one peer, tiny shapes. The
# generator is `ringport bench --ws` (branch wsclient).
run ws-compare env RINGPORT="$D/ringport" PEERS="$P" bench/ws-compare.sh --quick --no-build \
    --servers ringport,tungstenite --out "$OUT/ws-compare.md" --raw "$OUT/ws-compare"
run peers-check/mio timeout 120 python3 bench/peers/check.py -- "$P/peer-mio"
run peers-check/ringport check_ringport

echo
echo "smoke: ${#passed[@]} passed, ${#failed[@]} failed"
for p in "${passed[@]}"; do echo "   ok    $p"; done
for f in "${failed[@]}"; do echo "   FAIL  $f"; done
[ ${#failed[@]} -eq 0 ]
