#!/usr/bin/env bash
# bench/compare.sh: ringport (io_uring and epoll backends) side by side with
# peer echo servers (tokio, monoio, raw io_uring, mio), all speaking
# ringport's default framing.
#
# Each server runs pinned to one CPU (taskset -c 0), the load generator
# (`ringport bench`) on the other (taskset -c 1). Every scenario is repeated
# (3 times by default) against a freshly started server; the server's CPU time
# (utime+stime from /proc/PID/stat) and RSS (/proc/PID/status) are sampled
# around and during each run. A markdown table per scenario goes to
# bench/results/compare-YYYY-MM-DD.md (the summary, meant to be committed)
# and to stdout; raw per-run data (bench JSON, server and bench logs, /proc
# samples, runs.jsonl) to target/bench/compare-YYYY-MM-DD/ (or --raw DIR),
# which git ignores.
#
# See bench/README.md. `bench/compare.sh --help` lists the options.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
PEERS=$HERE/peers
# The directory of the ringport binaries (smoke mode: target/debug).
RP_TARGET=${RINGPORT_TARGET:-$ROOT/target/release}
RESULTS=$HERE/results

usage() {
    cat <<'EOF'
Usage: bench/compare.sh [options]

  --quick             1 repeat, 3 s runs (+1 s warmup), scenario f skipped
                      unless named in --only
  --only a,b,...      scenarios to run (default: all of a-g)
  --servers LIST      servers to run (default: ringport,ringport-epoll,
                      peer-tokio,peer-monoio,peer-uring,peer-mio)
  --repeats N         repeats per scenario (default 3; 1 with --quick)
  --duration SECS     measured seconds per run (default 10; 3 with --quick;
                      scenario f: 60, or this value if given)
  --warmup SECS       warmup seconds per run (default 2; 1 with --quick; f: 5)
  --no-build          do not run cargo build (use the binaries as they are)
  --try-fd-limited    in scenario f, also run servers that use plain file
                      descriptors (ringport-epoll, tokio, monoio, mio)
                      although RLIMIT_NOFILE is below the connection count
                      (default: report them as "cannot hold (fd limit)"
                      without running)
  --out FILE          markdown output (default bench/results/compare-YYYY-MM-DD.md)
  --raw DIR           raw per-run data (default target/bench/ and the name of
                      --out without .md, e.g. target/bench/compare-YYYY-MM-DD)
  --report DIR        run nothing: rewrite the markdown (--out, default
                      bench/results/ and DIR's name with .md) from the raw
                      data of an earlier run (DIR/runs.jsonl)
  --server-cpu N      CPU for the server (default 0)
  --bench-cpu N       CPU for the load generator (default 1)
  -h, --help          this help

Servers:
  ringport        ringport serve --shards N (io_uring backend)
  ringport-epoll  ringport serve --backend epoll --shards N
  ringport-stream the async event-stream echo (crates/ringport/examples/
                  stream_echo.rs, feature tokio), replies with send_async;
                  ringport-stream-plain: the same replying with the plain
                  (non-waiting) send; neither in the default list
  ringport-base   $RINGPORT_BASE serve --shards N: another ringport build
                  (e.g. an earlier commit's), for regression checks; not
                  in the default list
  peer-tokio, peer-monoio, peer-uring, peer-mio
                  bench/peers/target/release/NAME --threads N
  ringport-tls    ringport serve --shards N --tls-cert .. --tls-key .. (TLS;
                  the bench runs with --tls --insecure); not in the default
                  list
  peer-tokio-rustls
                  peer-tokio behind tokio-rustls (same rustls and ring
                  provider as ringport); not in the default list
  TLS servers get a self-signed ECDSA P-256 certificate made with openssl
  at the start of the run. TLS rows: --servers
  ringport,ringport-tls,peer-tokio-rustls --only a,d; handshakes per
  second: bench/tls_handshakes.sh.

Scenarios:
  a  100 connections, 512 B, depth 1
  b  1,000 connections, 512 B, depth 1
  c  1,000 connections, 512 B, depth 8
  d  10 connections, 64 KiB, depth 1, --verify header
  e  4 connections, 16 MiB, depth 1, --verify header
     (the bulk rows check each reply's length and stamp, not every byte:
     writing and comparing every byte of a 16 MiB body costs the bench a
     third of its rate, so it, not the server, would bound row e;
     bench/loadgen.sh measures this)
  f  65,000 connections, 512 B, --rate 1 msg/s each, 60 s; servers get
     4 threads/shards; --sources 127.0.0.2-127.0.0.9
  g  fixed load: 1,000 connections, 512 B, --rate 100 msg/s each
     (100,000 msg/s in all): compare server CPU %

Environment:
  RINGPORT_TARGET  directory of the ringport binaries (default
              <repo>/target/release; --no-build with target/debug for a
              smoke run)
  BENCH_CMD   load generator command (word-split), default
              "<repo>/target/release/ringport bench". For plumbing tests:
              BENCH_CMD="python3 bench/stub_bench.py" bench/compare.sh --quick
  CARGO       cargo binary (default cargo)
EOF
}

QUICK=0
ONLY=""
SERVERS="ringport,ringport-epoll,peer-tokio,peer-monoio,peer-uring,peer-mio"
REPEATS=""
DURATION=""
WARMUP=""
NO_BUILD=0
TRY_FD_LIMITED=0
OUT=""
RAW_DIR=""
REPORT_ONLY=""
SERVER_CPU=0
BENCH_CPU=1

while [[ $# -gt 0 ]]; do
    case $1 in
        --quick) QUICK=1 ;;
        --only) ONLY=${2:?--only needs a value}; shift ;;
        --only=*) ONLY=${1#*=} ;;
        --servers) SERVERS=${2:?--servers needs a value}; shift ;;
        --servers=*) SERVERS=${1#*=} ;;
        --repeats) REPEATS=${2:?}; shift ;;
        --repeats=*) REPEATS=${1#*=} ;;
        --duration) DURATION=${2:?}; shift ;;
        --duration=*) DURATION=${1#*=} ;;
        --warmup) WARMUP=${2:?}; shift ;;
        --warmup=*) WARMUP=${1#*=} ;;
        --no-build) NO_BUILD=1 ;;
        --try-fd-limited) TRY_FD_LIMITED=1 ;;
        --out) OUT=${2:?}; shift ;;
        --out=*) OUT=${1#*=} ;;
        --raw) RAW_DIR=${2:?}; shift ;;
        --raw=*) RAW_DIR=${1#*=} ;;
        --report) REPORT_ONLY=${2:?}; shift ;;
        --server-cpu) SERVER_CPU=${2:?}; shift ;;
        --bench-cpu) BENCH_CPU=${2:?}; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "compare.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

# Relative paths (--out, a relative BENCH_CMD) are taken from the repo root.
if [[ -n $OUT && $OUT != /* ]]; then OUT=$PWD/$OUT; fi
if [[ -n $REPORT_ONLY && $REPORT_ONLY != /* ]]; then REPORT_ONLY=$PWD/$REPORT_ONLY; fi
if [[ -n $RAW_DIR && $RAW_DIR != /* ]]; then RAW_DIR=$PWD/$RAW_DIR; fi
cd "$ROOT"

log() { printf '[compare %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- selection
if [[ -n $ONLY ]]; then
    IFS=, read -r -a SCENARIOS <<<"$ONLY"
    for s in "${SCENARIOS[@]}"; do
        [[ $s =~ ^[a-g]$ ]] || die "unknown scenario '$s' (a-g)"
    done
elif [[ $QUICK == 1 ]]; then
    SCENARIOS=(a b c d e g)
else
    SCENARIOS=(a b c d e f g)
fi
IFS=, read -r -a _servers <<<"$SERVERS"
SERVER_LIST=()
for s in "${_servers[@]}"; do
    case $s in ringport|ringport-epoll|ringport-stream|ringport-stream-plain|ringport-base|ringport-tls|peer-tokio|peer-monoio|peer-uring|peer-mio|peer-tokio-rustls) ;; *) die "unknown server '$s'" ;; esac
    [[ " ${SERVER_LIST[*]} " == *" $s "* ]] || SERVER_LIST+=("$s")
done
if [[ -z $REPEATS ]]; then REPEATS=$([[ $QUICK == 1 ]] && echo 1 || echo 3); fi
[[ $REPEATS =~ ^[1-9][0-9]*$ ]] || die "--repeats must be a positive integer"

# scenario NAME -> S_* variables
scenario() {
    S_RATE=0 S_THREADS=1 S_SOURCES="" S_VERIFY="" S_DUR=${DURATION:-$([[ $QUICK == 1 ]] && echo 3 || echo 10)}
    S_WARM=${WARMUP:-$([[ $QUICK == 1 ]] && echo 1 || echo 2)}
    case $1 in
        a) S_CONNS=100 S_SIZE=512 S_DEPTH=1 S_DESC="100 connections, 512 B, depth 1" ;;
        b) S_CONNS=1000 S_SIZE=512 S_DEPTH=1 S_DESC="1,000 connections, 512 B, depth 1" ;;
        c) S_CONNS=1000 S_SIZE=512 S_DEPTH=8 S_DESC="1,000 connections, 512 B, depth 8" ;;
        d) S_CONNS=10 S_SIZE=65536 S_DEPTH=1 S_VERIFY=header S_DESC="10 connections, 64 KiB, depth 1, replies checked by length and stamp" ;;
        e) S_CONNS=4 S_SIZE=16777216 S_DEPTH=1 S_VERIFY=header S_DESC="4 connections, 16 MiB, depth 1, replies checked by length and stamp" ;;
        # Sources other than 127.0.0.1, where the servers listen: the bench
        # picks its source ports itself, and sockets of a finished run that
        # still hold 127.0.0.1:P would make a later server's bind to P fail.
        f) S_CONNS=65000 S_SIZE=512 S_DEPTH=1 S_RATE=1 S_THREADS=4 S_SOURCES=127.0.0.2-127.0.0.9
           S_DUR=${DURATION:-60} S_WARM=${WARMUP:-5}
           S_DESC="65,000 connections, 512 B, 1 msg/s each, 4 threads/shards" ;;
        g) S_CONNS=1000 S_SIZE=512 S_DEPTH=1 S_RATE=100
           S_DESC="fixed load: 1,000 connections × 100 msg/s = 100,000 msg/s, 512 B" ;;
    esac
}

# server_cmd NAME THREADS ADDR -> CMD array
server_cmd() {
    case $1 in
        ringport) CMD=("$RP_TARGET/ringport" serve --addr "$3" --shards "$2") ;;
        ringport-epoll) CMD=("$RP_TARGET/ringport" serve --backend epoll --addr "$3" --shards "$2") ;;
        ringport-stream) CMD=("$RP_TARGET/examples/stream_echo" --addr "$3" --shards "$2") ;;
        ringport-stream-plain) CMD=("$RP_TARGET/examples/stream_echo" --send plain --addr "$3" --shards "$2") ;;
        ringport-base) CMD=("${RINGPORT_BASE:?set RINGPORT_BASE to the ringport binary to compare against}" serve --addr "$3" --shards "$2") ;;
        ringport-tls) CMD=("$RP_TARGET/ringport" serve --addr "$3" --shards "$2"
            --tls-cert "${TLS_DIR:-x}/cert.pem" --tls-key "${TLS_DIR:-x}/key.pem") ;;
        peer-tokio-rustls) CMD=("$PEERS/target/release/$1" --addr "$3" --threads "$2"
            --cert "${TLS_DIR:-x}/cert.pem" --key "${TLS_DIR:-x}/key.pem") ;;
        *) CMD=("$PEERS/target/release/$1" --addr "$3" --threads "$2") ;;
    esac
}
server_label() {
    local unit=threads
    [[ $1 == ringport* ]] && unit=shards
    [[ $2 == 1 ]] && unit=${unit%s}
    echo "$1 ($2 $unit)"
}
# Servers whose connections are plain file descriptors (bounded by
# RLIMIT_NOFILE): the epoll ones, and tokio/monoio (ringport and peer-uring
# use io_uring direct descriptors).
fd_limited() { [[ $1 == ringport-epoll || $1 == peer-tokio || $1 == peer-monoio || $1 == peer-mio || $1 == peer-tokio-rustls ]]; }
# Servers that speak TLS (the bench connects with --tls --insecure).
is_tls() { [[ $1 == ringport-tls || $1 == peer-tokio-rustls ]]; }

# ---------------------------------------------------------------- cleanup
SERVER_PIDS=()
AUX_PIDS=()
cleanup() {
    local p
    for p in "${AUX_PIDS[@]}" "${SERVER_PIDS[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${AUX_PIDS[@]}" "${SERVER_PIDS[@]}"; do
        for _ in $(seq 40); do kill -0 "$p" 2>/dev/null || break; sleep 0.05; done
        kill -KILL "$p" 2>/dev/null || true
    done
    if [[ -n ${TLS_DIR:-} ]]; then rm -rf "$TLS_DIR"; fi
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

# ---------------------------------------------------------------- build
if [[ -n $REPORT_ONLY ]]; then
    NO_BUILD=1
fi
if [[ $NO_BUILD == 0 ]]; then
    log "building ringport (cargo build --release -p ringport-cli)"
    (cd "$ROOT" && "${CARGO:-cargo}" build --release -p ringport-cli) >&2
    if [[ " ${SERVER_LIST[*]} " == *" ringport-stream"* ]]; then
        log "building the event-stream echo (cargo build --release -p ringport --features tokio --example stream_echo)"
        (cd "$ROOT" && "${CARGO:-cargo}" build --release -p ringport --features tokio --example stream_echo) >&2
    fi
    log "building peers (cd bench/peers && cargo build --release)"
    (cd "$PEERS" && "${CARGO:-cargo}" build --release) >&2
fi
for s in "${SERVER_LIST[@]}"; do
    server_cmd "$s" 1 x
    [[ -n $REPORT_ONLY || -x ${CMD[0]} ]] || die "${CMD[0]} is missing (build it, or drop --no-build)"
done
if [[ -z $REPORT_ONLY && " ${SERVER_LIST[*]} " == *" ringport-epoll "* ]]; then
    _help=$("$RP_TARGET/ringport" serve --help 2>&1 || true)
    [[ $_help == *--backend* ]] ||
        log "warning: this ringport has no 'serve --backend': the ringport-epoll runs will fail to start"
fi
if [[ -n ${BENCH_CMD:-} ]]; then
    read -r -a BENCH <<<"$BENCH_CMD"
else
    BENCH=("$RP_TARGET/ringport" bench)
    [[ -n $REPORT_ONLY ]] || "${BENCH[@]}" --help >/dev/null 2>&1 ||
        die "'ringport bench' is not available in $RP_TARGET/ringport; set BENCH_CMD (e.g. BENCH_CMD=\"python3 bench/stub_bench.py\")"
fi
for c in taskset python3 ss; do command -v $c >/dev/null || die "$c is required"; done

# ---------------------------------------------------------------- output
DAY=$(date +%F)
if [[ -n $REPORT_ONLY ]]; then
    RAW=${REPORT_ONLY%/}
    OUT=${OUT:-$RESULTS/$(basename "$RAW").md}
    RUNS=$RAW/runs.jsonl
    [[ -s $RUNS ]] || die "$RUNS: no runs recorded there"
else
    OUT=${OUT:-$RESULTS/compare-$DAY.md}
    # Raw runs stay out of git (.gitignore): only the summary is committed.
    RAW=${RAW_DIR:-$ROOT/target/bench/$(basename "${OUT%.md}")}
    mkdir -p "$RAW"
    RUNS=$RAW/runs.jsonl
    : >"$RUNS"
fi
CLK_TCK=$(getconf CLK_TCK)
# A throwaway certificate for the TLS servers, outside the results (which
# get committed), removed at exit.
if [[ -z $REPORT_ONLY && " ${SERVER_LIST[*]} " == *" ringport-tls "* || " ${SERVER_LIST[*]} " == *" peer-tokio-rustls "* ]]; then
    TLS_DIR=$(mktemp -d)
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -keyout "$TLS_DIR/key.pem" -out "$TLS_DIR/cert.pem" -subj /CN=localhost \
        -addext subjectAltName=DNS:localhost,IP:127.0.0.1 2>/dev/null ||
        die "openssl could not make the test certificate"
fi
NOFILE_HARD=$(ulimit -Hn)
PORT=$((10000 + RANDOM % 20000)) # below the ephemeral range
log "raw data in $RAW"

# proc_sample PID -> "EPOCH TICKS RSS_KB HWM_KB" (utime+stime of all threads)
proc_sample() {
    local stat rest rss=0 hwm=0 k v _
    read -r stat <"/proc/$1/stat" || return 1
    rest=${stat##*) }
    read -r -a f <<<"$rest"
    while read -r k v _; do
        case $k in VmRSS:) rss=$v ;; VmHWM:) hwm=$v ;; esac
    done <"/proc/$1/status"
    echo "$EPOCHREALTIME $((f[11] + f[12])) $rss $hwm"
}

# sys_busy -> "EPOCH BUSY_TICKS": all CPUs' non-idle time from /proc/stat
# (user nice system irq softirq steal; guest time is inside user).
sys_busy() {
    local _cpu u n s i w irq sirq st _rest
    read -r _cpu u n s i w irq sirq st _rest </proc/stat
    echo "$EPOCHREALTIME $((u + n + s + irq + sirq + st))"
}

# children_cpu: sets CHILD_CPU to the CPU seconds of this shell's reaped
# children (the bench, once waited for), from the `times` builtin. Not to be
# called in $(...): a subshell's children times start at 0.
children_cpu() {
    times >"$RAW/.times"
    CHILD_CPU=$(python3 -c 'import re,sys
t = open(sys.argv[1]).read().splitlines()[-1]
print(sum(float(m)*60+float(s) for m,s in re.findall(r"(\d+)m([\d.]+)s", t)))' "$RAW/.times")
}

# sampler PID FILE: a proc_sample line every 100 ms while PID lives
sampler() {
    exec 3>"$2" 4<> <(:)
    # `read -t` on a pipe that never gets data: a 100 ms sleep without forking.
    while proc_sample "$1" >&3 2>/dev/null; do
        read -r -t 0.1 -u 4 || true
    done
}

# wait_ready PID PORT LOG: the server printed "listening on" and listens
wait_ready() {
    local i
    for i in $(seq 600); do
        kill -0 "$1" 2>/dev/null || return 1
        if grep -q "listening on" "$3" 2>/dev/null &&
            [[ -n $(ss -Hltn "sport = :$2" 2>/dev/null) ]]; then
            return 0
        fi
        sleep 0.05
    done
    return 1
}

# stop_server PID -> STOP_RC (exit code, or "killed")
stop_server() {
    local i
    kill -TERM "$1" 2>/dev/null || true
    for i in $(seq 300); do kill -0 "$1" 2>/dev/null || break; sleep 0.05; done
    if kill -0 "$1" 2>/dev/null; then
        kill -KILL "$1" 2>/dev/null || true
        wait "$1" 2>/dev/null || true
        STOP_RC=killed
    else
        STOP_RC=0
        wait "$1" 2>/dev/null || STOP_RC=$?
    fi
    local keep=() p
    for p in "${SERVER_PIDS[@]}"; do [[ $p == "$1" ]] || keep+=("$p"); done
    SERVER_PIDS=("${keep[@]}")
}

# record KEY=VALUE... : one JSON line in runs.jsonl (python reads the files)
record() {
    python3 - "$@" >>"$RUNS" <<'PY'
import json, sys
rec = {}
for arg in sys.argv[1:]:
    k, _, v = arg.partition("=")
    rec[k] = v
def lines(path):
    try:
        with open(path) as f:
            return [tuple(map(float, l.split())) for l in f if len(l.split()) == 4]
    except (OSError, ValueError):
        return []
tck = float(rec.get("clk_tck", 100))
# The bench's own JSON (any key may be missing).
bench = {}
if rec.get("json"):
    try:
        with open(rec["json"]) as f:
            bench = json.load(f)
    except (OSError, ValueError) as e:
        rec["json_error"] = str(e)
rec["bench"] = bench
# Whole run: before/after samples.
b, a = rec.pop("before", ""), rec.pop("after", "")
try:
    b = tuple(map(float, b.split())); a = tuple(map(float, a.split()))
    rec["run_wall_s"] = a[0] - b[0]
    rec["run_cpu_s"] = (a[1] - b[1]) / tck
    rec["rss_kb"] = a[2]
    rec["hwm_kb"] = a[3]
except (ValueError, IndexError):
    pass
# Measured window: CPU over the interior of the last `duration` seconds
# before the bench exited (the warmup and the connection phase come before
# it), from the 100 ms samples. CPU % = that CPU fraction; server us/msg =
# CPU fraction / measured messages per second.
s = lines(rec.get("samples", ""))
try:
    t_end = float(rec["bench_end"])
    dur = float(bench.get("duration_secs") or rec["duration"])
    w0, w1 = t_end - 0.9 * dur, t_end - 0.1 * dur
    inside = [x for x in s if w0 <= x[0] <= w1]
    if len(inside) >= 2 and inside[-1][0] > inside[0][0]:
        frac = (inside[-1][1] - inside[0][1]) / tck / (inside[-1][0] - inside[0][0])
        rec["cpu_frac"] = frac
        rec["window_s"] = inside[-1][0] - inside[0][0]
        mps = bench.get("messages_per_sec")
        if mps:
            rec["cpu_us_per_msg"] = frac * 1e6 / mps
    if s:
        rec["rss_kb_max"] = max(x[2] for x in s)
except (KeyError, ValueError, TypeError):
    pass
# Other load on the machine during the run: all CPUs' busy time minus the
# server's and the load generator's (a busy machine makes numbers noisy).
try:
    sb, sa = rec.pop("sys_before").split(), rec.pop("sys_after").split()
    kb, ka = float(rec.pop("kids_before")), float(rec.pop("kids_after"))
    wall = float(sa[0]) - float(sb[0])
    busy = (int(sa[1]) - int(sb[1])) / tck
    rec["bench_run_cpu_s"] = ka - kb
    # server CPU over the same span, from the 100 ms samples
    srv = rec.get("run_cpu_s", 0.0)
    inside = [x for x in s if float(sb[0]) <= x[0] <= float(sa[0])]
    if len(inside) >= 2:
        srv = (inside[-1][1] - inside[0][1]) / tck * wall / max(1e-9, inside[-1][0] - inside[0][0])
    rec["other_cpu_frac"] = max(0.0, (busy - srv - (ka - kb)) / wall) if wall > 0 else None
except (KeyError, ValueError, IndexError):
    pass
print(json.dumps(rec))
PY
}

# run_one SCENARIO SERVER REPEAT
run_one() {
    local sc=$1 srv=$2 rep=$3 threads=$S_THREADS tag="$1-$2-$3"
    local addr="127.0.0.1:$PORT" port=$PORT
    PORT=$((PORT + 1))
    local slog=$RAW/$tag.server.log json=$RAW/$tag.json blog=$RAW/$tag.bench.log samples=$RAW/$tag.samples
    rm -f "$json"
    server_cmd "$srv" "$threads" "$addr"
    local common=(scenario="$sc" server="$srv" repeat="$rep" threads="$threads" clk_tck="$CLK_TCK"
        duration="$S_DUR" warmup="$S_WARM" server_log="$slog")
    taskset -c "$SERVER_CPU" "${CMD[@]}" >"$slog" 2>&1 &
    local spid=$!
    SERVER_PIDS+=("$spid")
    if ! wait_ready "$spid" "$port" "$slog"; then
        stop_server "$spid"
        log "$tag: server did not start (see $slog)"
        record "${common[@]}" status=server_failed note="server did not start (see ${slog#$ROOT/})" stop_rc="$STOP_RC"
        return
    fi
    local before after bench_end brc=0
    before=$(proc_sample "$spid")
    local sys_before sys_after kids_before kids_after
    sys_before=$(sys_busy)
    children_cpu
    kids_before=$CHILD_CPU
    sampler "$spid" "$samples" &
    local sp=$!
    AUX_PIDS+=("$sp")
    taskset -pc "$BENCH_CPU" "$sp" >/dev/null 2>&1 || true
    local args=(--addr "$addr" --connections "$S_CONNS" --size "$S_SIZE" --depth "$S_DEPTH"
        --duration "$S_DUR" --warmup "$S_WARM" --json "$json" --server-pid "$spid")
    [[ $S_RATE != 0 ]] && args+=(--rate "$S_RATE")
    [[ -n $S_SOURCES ]] && args+=(--sources "$S_SOURCES")
    [[ -n $S_VERIFY ]] && args+=(--verify "$S_VERIFY")
    if is_tls "$srv"; then args+=(--tls --insecure); fi
    local limit
    limit=$(awk -v a="$S_DUR" -v b="$S_WARM" 'BEGIN { printf "%d", a + b + 181 }')
    log "$tag: $(server_label "$srv" "$threads") on $addr (pid $spid); bench ${args[*]:0:12}"
    # In the background and `wait`ed for, so that INT/TERM reach our trap.
    taskset -c "$BENCH_CPU" timeout -k 10 "$limit" "${BENCH[@]}" "${args[@]}" >"$blog" 2>&1 &
    local bpid=$!
    AUX_PIDS+=("$bpid")
    wait "$bpid" || brc=$?
    bench_end=$EPOCHREALTIME
    children_cpu
    kids_after=$CHILD_CPU
    sys_after=$(sys_busy)
    after=$(proc_sample "$spid" || true)
    kill "$sp" 2>/dev/null || true
    wait "$sp" 2>/dev/null || true
    AUX_PIDS=()
    stop_server "$spid"
    local status=ok note=""
    if [[ ! -s $json ]]; then
        local why
        why=$(grep -iE '^(error|.*: error)' "$blog" | tail -1 | cut -c1-160 || true)
        status=bench_failed note="no JSON from the bench (exit $brc${why:+: $why}; see ${blog#$ROOT/})"
    elif [[ $brc != 0 ]]; then
        note="bench exit $brc"
    fi
    [[ $STOP_RC != 0 ]] && note="${note:+$note; }server stop: $STOP_RC"
    record "${common[@]}" status="$status" note="$note" bench_rc="$brc" json="$json" samples="$samples" \
        before="$before" after="$after" bench_end="$bench_end" stop_rc="$STOP_RC" conns="$S_CONNS" \
        sys_before="$sys_before" sys_after="$sys_after" kids_before="$kids_before" kids_after="$kids_after" \
        fd_limited="$(fd_limited "$srv" && echo 1 || echo 0)" \
        server_emfile="$(grep -qiE 'too many open files|EMFILE' "$slog" && echo 1 || echo 0)"
    log "$tag: $(python3 -c 'import json,sys
r=[json.loads(l) for l in open(sys.argv[1])][-1]; b=r.get("bench",{})
print(r["status"], "msgs/s=%s" % round(b.get("messages_per_sec") or 0),
      "p99us=%s" % (b.get("latency_us") or {}).get("p99"),
      "cpu%%=%.1f" % (100*r.get("cpu_frac",0)), "us/msg=%.2f" % r.get("cpu_us_per_msg",0), r.get("note",""))' "$RUNS")"
}

# ---------------------------------------------------------------- run
START=$EPOCHREALTIME
[[ -n $REPORT_ONLY ]] && SCENARIOS=()
for sc in "${SCENARIOS[@]}"; do
    scenario "$sc"
    log "scenario $sc: $S_DESC; $REPEATS x ${S_DUR}s (+${S_WARM}s warmup)"
    for srv in "${SERVER_LIST[@]}"; do
        if [[ $sc == f ]] && fd_limited "$srv" && [[ $TRY_FD_LIMITED == 0 ]] &&
            [[ $NOFILE_HARD != unlimited ]] && ((NOFILE_HARD < S_CONNS + 16)); then
            log "$sc-$srv: cannot hold (fd limit: RLIMIT_NOFILE $NOFILE_HARD < $S_CONNS), not run"
            record scenario="$sc" server="$srv" repeat=0 threads="$S_THREADS" status=fd_limit \
                note="RLIMIT_NOFILE $NOFILE_HARD < $S_CONNS connections; plain fds" clk_tck="$CLK_TCK"
            continue
        fi
        for rep in $(seq "$REPEATS"); do
            run_one "$sc" "$srv" "$rep"
        done
    done
done

# ---------------------------------------------------------------- report
ELAPSED="total time $(python3 -c "print(round($EPOCHREALTIME - $START))") s"
[[ -n $REPORT_ONLY ]] && ELAPSED="report rewritten from ${RUNS#$ROOT/}"
if [[ -n $REPORT_ONLY && -f $RAW/meta.txt ]]; then
    META=$(cat "$RAW/meta.txt")
else
    COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
    git -C "$ROOT" diff --quiet HEAD 2>/dev/null || COMMIT="$COMMIT (+ uncommitted changes)"
    CPU_MODEL=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//' || true)
    META="- date: $DAY; $ELAPSED
- machine: $(nproc) CPUs ($CPU_MODEL), Linux $(uname -r), RLIMIT_NOFILE $NOFILE_HARD
- ringport commit: $COMMIT; $(rustc --version 2>/dev/null || echo rustc unknown)
- load generator: \`${BENCH[*]}\` pinned to CPU $BENCH_CPU; servers pinned to CPU $SERVER_CPU (\`taskset -c\`)"
    [[ -n $REPORT_ONLY ]] || printf '%s\n' "$META" >"$RAW/meta.txt"
fi
export META
python3 - "$RUNS" "$OUT" <<PY
import json, statistics, sys
runs_path, out_path = sys.argv[1], sys.argv[2]
runs = [json.loads(l) for l in open(runs_path) if l.strip()]
SCEN = {
$(for sc in a b c d e f g; do scenario "$sc"; printf '    "%s": ("%s", %s, %s),\n' "$sc" "$S_DESC" "$S_DUR" "$S_WARM"; done)
}
ORDER = ["ringport", "ringport-epoll", "ringport-stream", "ringport-stream-plain", "ringport-base", "ringport-tls", "peer-tokio", "peer-monoio", "peer-uring", "peer-mio", "peer-tokio-rustls"]
UNIT = {"ringport": "shard", "ringport-epoll": "shard", "ringport-stream": "shard", "ringport-stream-plain": "shard", "ringport-base": "shard", "ringport-tls": "shard"}

def label(srv, threads):
    u = UNIT.get(srv, "thread")
    return f"{srv} ({threads} {u}{'' if str(threads) == '1' else 's'})"

def get(r, *path):
    x = r
    for p in path:
        if not isinstance(x, dict) or p not in x or x[p] is None:
            return None
        x = x[p]
    return x

METRICS = [  # (title, getter, format, ratio to ringport?)
    ("msgs/s", lambda r: get(r, "bench", "messages_per_sec"), lambda v: f"{v:,.0f}", True),
    ("p99 µs", lambda r: get(r, "bench", "latency_us", "p99"), lambda v: f"{v:,.0f}" if v >= 100 else f"{v:.1f}", True),
    ("server µs/msg", lambda r: r.get("cpu_us_per_msg"), lambda v: f"{v:.2f}", True),
    ("server CPU %", lambda r: 100 * r["cpu_frac"] if "cpu_frac" in r else None, lambda v: f"{v:.1f}", True),
    ("RSS MiB", lambda r: (r.get("rss_kb_max") or r.get("rss_kb") or 0) / 1024 or None, lambda v: f"{v:.1f}", False),
]

def cell(vals, fmt):
    if not vals:
        return "–"
    med = statistics.median(vals)
    if len(vals) == 1:
        return fmt(med)
    return f"{fmt(med)} ({fmt(min(vals))}–{fmt(max(vals))})"

lines = []
lines.append("# ringport vs peer echo servers")
lines.append("")
import os
lines += os.environ["META"].splitlines()
lines.append("- each run against a freshly started server; cells are median (min–max) over the runs")
lines.append("- server CPU % and µs/msg: utime+stime from /proc/PID/stat, sampled every 100 ms, over the middle 80 % of the measured window; µs/msg = CPU fraction / messages per second; RSS: peak VmRSS during the run")
lines.append("- ×ringport: the server's median divided by ringport's (msgs/s: higher is better; p99, µs/msg, CPU %: lower is better)")
lines.append("- raw data: \`${RAW#$ROOT/}/\`")
others = [r["other_cpu_frac"] for r in runs if r.get("other_cpu_frac") is not None]
if others:
    worst = max(others)
    lines.append(f"- other load during the runs (all CPUs' busy time minus server and load generator, from /proc/stat): median {100 * statistics.median(others):.0f} %, max {100 * worst:.0f} % of a core"
                 + (" — **the machine was busy: treat these numbers as noisy**" if worst > 0.10 else ""))
for sc in sorted({r["scenario"] for r in runs}):
    desc, dur, warm = SCEN[sc]
    timed = [r for r in runs if r["scenario"] == sc and r.get("duration")]
    if timed:
        dur, warm = timed[0]["duration"], timed[0].get("warmup", warm)
    lines.append("")
    lines.append(f"## ({sc}) {desc}")
    lines.append("")
    nrep = max([int(r.get("repeat") or 0) for r in runs if r["scenario"] == sc] + [1])
    lines.append(f"{nrep} run(s) per server, {dur} s measured after {warm} s warmup each.")
    lines.append("")
    head = ["server"]
    for title, _, _, ratio in METRICS:
        head.append(title)
        if ratio:
            head.append("×ringport")
    head.append("notes")
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 2) + ["---"]) + "|")
    rs = [r for r in runs if r["scenario"] == sc]
    servers = sorted({r["server"] for r in rs}, key=lambda s: ORDER.index(s) if s in ORDER else 99)
    def medians(srv):
        ok = [r for r in rs if r["server"] == srv and r.get("status") == "ok"]
        out = []
        for _, g, _, _ in METRICS:
            vals = [v for v in (g(r) for r in ok) if v is not None]
            out.append(statistics.median(vals) if vals else None)
        return out
    base = medians("ringport") if "ringport" in servers else [None] * len(METRICS)
    for srv in servers:
        mine = [r for r in rs if r["server"] == srv]
        threads = mine[0].get("threads", "1")
        row = [label(srv, threads)]
        want = int(mine[0].get("conns") or 0)
        def short(r):
            held = get(r, "bench", "connections_established")
            return r.get("status") != "ok" or (held is not None and want and held < want)
        skipped = [r for r in mine if r.get("status") == "fd_limit"]
        tried = [r for r in mine if r.get("fd_limited") == "1" and r.get("server_emfile") == "1" and short(r)]
        if skipped or (tried and len(tried) == len(mine)):
            row.append("cannot hold (fd limit)")
            row += ["–"] * (len(head) - 3)
            if skipped:
                row.append(skipped[0].get("note", "") + "; not run")
            else:
                held = [get(r, "bench", "connections_established") for r in tried]
                held = [h for h in held if h is not None]
                what = f"held {max(held):,} of {want:,}" if held else "the bench failed"
                row.append(f"tried {len(tried)}x: accept hit EMFILE, {what}; " + "; ".join(sorted({r.get('note') for r in tried if r.get('note')})))
            lines.append("| " + " | ".join(row) + " |")
            continue
        ok = [r for r in mine if r.get("status") == "ok"]
        meds = medians(srv)
        for (title, g, fmt, ratio), m, b in zip(METRICS, meds, base):
            vals = [v for v in (g(r) for r in ok) if v is not None]
            row.append(cell(vals, fmt))
            if ratio:
                row.append(f"{m / b:.2f}" if (m is not None and b) else "–")
        notes = []
        failed = [r for r in mine if r.get("status") != "ok"]
        if failed:
            notes.append(f"{len(failed)} of {len(mine)} runs failed: " + "; ".join(sorted({r.get('note') or r.get('status') for r in failed})))
        conns = [get(r, "bench", "connections_established") for r in ok]
        held = [c for c in conns if c is not None]
        if want and held and min(held) < want:
            what = "cannot hold (fd limit)" if mine[0].get("fd_limited") == "1" else "did not hold all"
            notes.append(f"{what}: {min(held):,} of {want:,} connections")
        errs = []
        for r in ok:
            e = get(r, "bench", "errors")
            n = sum(v for v in e.values() if isinstance(v, (int, float))) if isinstance(e, dict) else 0
            n += get(r, "bench", "connect_failed") or 0
            errs.append(n)
        if any(errs):
            notes.append(f"errors per run: {', '.join(str(int(e)) for e in errs)}")
        notes += sorted({r.get("note") for r in ok if r.get("note")})
        other = [r["other_cpu_frac"] for r in mine if r.get("other_cpu_frac") is not None]
        if other and max(other) > 0.10:
            notes.append(f"busy machine: other processes used up to {100 * max(other):.0f} % of a core")
        if any(get(r, "bench", "stub") for r in ok):
            notes.append("stub load generator")
        row.append("; ".join(notes))
        lines.append("| " + " | ".join(row) + " |")
text = "\n".join(lines) + "\n"
with open(out_path, "w") as f:
    f.write(text)
print(text)
PY
log "wrote $OUT"
