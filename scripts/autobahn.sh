#!/usr/bin/env bash
# Autobahn|Testsuite conformance cases against a WebSocket echo server, driven
# by kosoku (PyPI; the original wstest needs Python 2.7).
#
# Usage:
#   scripts/autobahn.sh [options] TARGET...
#   scripts/autobahn.sh [options] -- SERVER_COMMAND...
#
# TARGET (several run one after the other, each on a port of its own):
#   serve        ringport's engine: $RINGPORT serve --addr 127.0.0.1:{PORT2}
#                --ws-addr 127.0.0.1:{PORT} --mode echo --ws-deflate
#                --max-frame 64MiB --shards 1 --stats-interval 0 (group 9
#                sends 16 MiB messages; RINGPORT defaults to
#                target/release/ringport)
#   tungstenite  the second implementation: $PEERS/peer-ws-tungstenite
#   sansio       ringport's protocol core alone: $PEERS/ws-sansio-echo
#                (PEERS defaults to bench/peers/target/release)
# Build them first: cargo build --release -p ringport-cli;
# (cd bench/peers && cargo build --release -p peer-ws-tungstenite -p ws-sansio).
#
#   --port N        port the (first) server listens on (default: one the
#                   kernel says is free); the literal string {PORT} in
#                   SERVER_COMMAND is replaced by it, {PORT2} by a second
#                   free port
#   --cases LIST    comma-separated case globs to run (default: the groups of
#                   issue 28: 1-7, 9, 10, 12, 13)
#   --exclude LIST  comma-separated case globs to leave out (e.g. '12.*,13.*')
#   --parallel N    cases run in parallel (kosoku -p, default 4)
#   --out DIR       report directory (default target/autobahn/NAME, NAME being
#                   the target or the server binary's name); raw per-case
#                   files stay there, never in git
#   --name NAME     label for the summary (default: the target or binary name)
#   --known-errors LIST  comma-separated case globs whose ERROR verdict
#                   (an exception inside kosoku's own case code, not a
#                   verdict on the server) is known and documented: listed,
#                   but not failing the run. Every other verdict outside OK,
#                   NON-STRICT, INFORMATIONAL, UNIMPLEMENTED fails it.
#   --summary FILE  also write the summary (Markdown: command, date, kosoku
#                   version, per-group table) to FILE, e.g.
#                   bench/results/autobahn-serve.md (committed; per-case
#                   files are not)
#
# Examples:
#   scripts/autobahn.sh serve tungstenite --summary bench/results/autobahn-serve.md
#   scripts/autobahn.sh --cases '1.*,2.*' serve
#   scripts/autobahn.sh -- bench/peers/target/release/peer-ws-tungstenite --addr 127.0.0.1:{PORT}
#
# Each server is started, waited for (the port accepting connections), the
# cases run, the server stopped (SIGTERM to the process this script started),
# and a per-group summary printed from index.json: group -> number of cases
# per verdict (OK, NON-STRICT, INFORMATIONAL, UNIMPLEMENTED, FAILED), the
# summed case time per group, and the ids of the cases that are NON-STRICT
# or FAILED. Exit status 1 if a case FAILED (or a server did not run).
set -euo pipefail

invocation=("$@")
port=''
cases='1.*,2.*,3.*,4.*,5.*,6.*,7.*,9.*,10.*,12.*,13.*'
exclude=''
parallel=4
out_opt=''
name_opt=''
summary_file=''
known_errors=''
targets=()
command=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --port) port=$2; shift 2 ;;
        --cases) cases=$2; shift 2 ;;
        --exclude) exclude=$2; shift 2 ;;
        --parallel) parallel=$2; shift 2 ;;
        --out) out_opt=$2; shift 2 ;;
        --name) name_opt=$2; shift 2 ;;
        --summary) summary_file=$2; shift 2 ;;
        --known-errors) known_errors=$2; shift 2 ;;
        --) shift; command=("$@"); break ;;
        -h|--help) sed -n '2,53p' "$0"; exit 0 ;;
        serve|tungstenite|sansio) targets+=("$1"); shift ;;
        *) echo "autobahn.sh: unknown option or target $1 (targets: serve, tungstenite, sansio; a server command goes after --)" >&2; exit 2 ;;
    esac
done
if [[ ${#targets[@]} -eq 0 && ${#command[@]} -eq 0 ]]; then
    echo "autobahn.sh: no target and no server command (after --); see --help" >&2
    exit 2
fi
if [[ ${#targets[@]} -gt 0 && ${#command[@]} -gt 0 ]]; then
    echo "autobahn.sh: give targets or a server command, not both" >&2
    exit 2
fi
if [[ ${#targets[@]} -gt 1 && ( -n $out_opt || -n $name_opt || -n $port ) ]]; then
    echo "autobahn.sh: --out, --name and --port apply to a single target" >&2
    exit 2
fi

root=$(cd "$(dirname "$0")/.." && pwd)
RINGPORT=${RINGPORT:-$root/target/release/ringport}
PEERS=${PEERS:-$root/bench/peers/target/release}

if ! command -v kosoku >/dev/null 2>&1; then
    echo "autobahn.sh: installing kosoku from PyPI" >&2
    python3 -m pip install --quiet kosoku >&2
fi
kosoku_version=$(python3 -c 'import importlib.metadata as m; print(m.version("kosoku"))' 2>/dev/null || echo unknown)

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# The server command of a target ({PORT} and {PORT2} replaced later).
target_command() {
    case "$1" in
        serve) echo "$RINGPORT serve --addr 127.0.0.1:{PORT2} --ws-addr 127.0.0.1:{PORT} --mode echo --ws-deflate --max-frame 64MiB --shards 1 --stats-interval 0" ;;
        tungstenite) echo "$PEERS/peer-ws-tungstenite --addr 127.0.0.1:{PORT}" ;;
        sansio) echo "$PEERS/ws-sansio-echo --addr 127.0.0.1:{PORT}" ;;
    esac
}

summaries=$(mktemp)
server=''
cleanup() {
    if [[ -n $server ]] && kill -0 "$server" 2>/dev/null; then
        kill -TERM "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
    server=''
}
trap 'cleanup; rm -f "$summaries"' EXIT

# run_cases NAME OUT COMMAND...: one server, the cases, its summary
# (appended to $summaries). Returns 1 if a case FAILED or the run broke.
run_cases() {
    local name=$1 out=$2
    shift 2
    local p=${port:-$(free_port)} p2
    p2=$(free_port)
    local cmd=() a
    for a in "$@"; do
        a=${a//\{PORT2\}/$p2}
        cmd+=("${a//\{PORT\}/$p}")
    done
    if [[ ! -x ${cmd[0]} ]] && ! command -v "${cmd[0]}" >/dev/null 2>&1; then
        echo "autobahn.sh: $name: ${cmd[0]} is not an executable (build it first, see --help)" >&2
        return 1
    fi
    rm -rf "$out"
    mkdir -p "$out"
    echo "== autobahn: $name: ${cmd[*]}" >&2
    "${cmd[@]}" >"$out/server.log" 2>&1 &
    server=$!

    # Wait (at most 10 s) for the port to accept connections.
    local ready=0
    for _ in $(seq 1 100); do
        if ! kill -0 "$server" 2>/dev/null; then
            echo "autobahn.sh: $name: server exited early; its output:" >&2
            cat "$out/server.log" >&2
            server=''
            return 1
        fi
        if python3 -c "import socket; socket.create_connection(('127.0.0.1', $p), timeout=0.2).close()" 2>/dev/null; then
            ready=1
            break
        fi
        sleep 0.1
    done
    if [[ $ready -ne 1 ]]; then
        echo "autobahn.sh: $name: server not accepting on 127.0.0.1:$p after 10 s" >&2
        cleanup
        return 1
    fi

    local args=(-m fuzzingclient "127.0.0.1:$p" -p "$parallel" -o "$out") c inc exc
    IFS=',' read -ra inc <<<"$cases"
    for c in "${inc[@]}"; do args+=(-i "$c"); done
    if [[ -n $exclude ]]; then
        IFS=',' read -ra exc <<<"$exclude"
        for c in "${exc[@]}"; do args+=(-x "$c"); done
    fi

    local start end
    start=$(date +%s.%N)
    # kosoku exits non-zero whenever a case is not OK; the verdicts are read
    # from index.json below.
    kosoku "${args[@]}" >"$out/kosoku.log" 2>&1 || true
    end=$(date +%s.%N)
    cleanup

    local index
    index=$(find "$out" -name index.json | head -n 1)
    if [[ -z $index ]]; then
        echo "autobahn.sh: $name: no index.json under $out (see $out/kosoku.log)" >&2
        return 1
    fi
    python3 - "$index" "$name" "$start" "$end" "${cmd[*]}" "$known_errors" <<'PY' | tee -a "$summaries"
import fnmatch, json, sys
from collections import defaultdict

index, name, start, end, command = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
known = [g for g in sys.argv[6].split(",") if g]
known_hit = []
data = json.load(open(index))
verdicts = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
groups = defaultdict(lambda: defaultdict(int))
seconds = defaultdict(float)
odd = defaultdict(list)
total = defaultdict(int)

def case_key(c):
    return [int(p) if p.isdigit() else p for p in c.split(".")]

for agent, cases in data.items():
    for case, res in sorted(cases.items(), key=lambda kv: case_key(kv[0])):
        group = case.split(".")[0]
        b = res.get("behavior", "?")
        if b == "ERROR" and any(fnmatch.fnmatchcase(case, g) for g in known):
            known_hit.append(case)
            b = "ERROR (known, tool)"
        groups[group][b] += 1
        total[b] += 1
        seconds[group] += (res.get("duration") or 0) / 1000
        if b not in ("OK", "INFORMATIONAL", "UNIMPLEMENTED", "ERROR (known, tool)"):
            odd[group].append(f"{case}:{b}" + ("" if res.get("behaviorClose", "OK") in ("OK", "INFORMATIONAL") else f"(close {res.get('behaviorClose')})"))

print(f"### {name}")
print()
print(f"`{command}`: {sum(total.values())} cases in {end - start:.1f} s")
print()
print("| group | " + " | ".join(verdicts) + " | other | case time (s) |")
print("|---|" + "---|" * (len(verdicts) + 2))
for g in sorted(groups, key=int):
    row = groups[g]
    other = sum(v for k, v in row.items() if k not in verdicts)
    print(f"| {g} | " + " | ".join(str(row.get(v, 0)) for v in verdicts) + f" | {other} | {seconds[g]:.1f} |")
other = sum(v for k, v in total.items() if k not in verdicts)
print("| all | " + " | ".join(str(total.get(v, 0)) for v in verdicts) + f" | {other} | {sum(seconds.values()):.1f} |")
print()
if odd:
    print("Cases neither OK, INFORMATIONAL nor UNIMPLEMENTED:")
    for g in sorted(odd, key=int):
        print(f"- group {g}: " + ", ".join(odd[g]))
    print()
if known_hit:
    print(f"ERROR verdicts known to be the tool's (--known-errors), counted in 'other' but not failing: {', '.join(known_hit)}")
    print()
failed = total.get("FAILED", 0) + other - len(known_hit)
print(f"{name}: {'FAILED: ' + str(failed) + ' case(s)' if failed else 'no FAILED case'}")
print()
sys.exit(1 if failed else 0)
PY
}

status=0
if [[ ${#command[@]} -gt 0 ]]; then
    name=${name_opt:-$(basename "${command[0]}")}
    run_cases "$name" "${out_opt:-$root/target/autobahn/$name}" "${command[@]}" || status=1
else
    for t in "${targets[@]}"; do
        name=${name_opt:-$t}
        read -r -a cmd <<<"$(target_command "$t")"
        run_cases "$name" "${out_opt:-$root/target/autobahn/$name}" "${cmd[@]}" || status=1
    done
fi

if [[ -n $summary_file ]]; then
    {
        echo "# Autobahn|Testsuite cases (kosoku $kosoku_version)"
        echo
        echo "Run on $(date -u +%Y-%m-%d) ($(nproc) cores, loopback), by:"
        echo
        echo '```sh'
        [[ " ${targets[*]} " == *" serve "* ]] && printf 'RINGPORT=%s ' "$RINGPORT"
        python3 -c 'import shlex, sys; print(shlex.join(sys.argv[1:]))' scripts/autobahn.sh "${invocation[@]}"
        echo '```'
        echo
        echo "Cases: \`$cases\`${exclude:+, excluded \`$exclude\`}; kosoku -p $parallel. \"case time\" sums"
        echo "kosoku's per-case durations (cases overlap with -p > 1). Raw per-case"
        echo "reports: target/autobahn/NAME/ (not committed)."
        echo
        cat "$summaries"
    } >"$summary_file"
    echo "autobahn.sh: summary written to $summary_file" >&2
fi
exit "$status"
