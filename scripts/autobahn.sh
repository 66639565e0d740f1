#!/usr/bin/env bash
# Autobahn|Testsuite conformance cases against a WebSocket echo server, driven
# by kosoku (PyPI; the original wstest needs Python 2.7).
#
# Usage:
#   scripts/autobahn.sh [options] -- SERVER_COMMAND...
#
#   --port N        port the server listens on (default 9001); the literal
#                   string {PORT} in SERVER_COMMAND is replaced by it
#   --cases LIST    comma-separated case globs to run (default: the groups of
#                   issue 28: 1-7, 9, 10, 12, 13)
#   --exclude LIST  comma-separated case globs to leave out (e.g. '12.*,13.*')
#   --parallel N    cases run in parallel (kosoku -p, default 4)
#   --out DIR       report directory (default target/autobahn/NAME, NAME being
#                   the server binary's name); raw per-case files stay there
#   --name NAME     label for the summary (default: the binary's name)
#
# Examples:
#   scripts/autobahn.sh -- bench/peers/target/release/peer-ws-tungstenite --addr 127.0.0.1:{PORT}
#   scripts/autobahn.sh --cases '1.*,2.*' -- target/debug/ringport serve --ws-addr 127.0.0.1:{PORT}
#
# The server is started, waited for (the port accepting connections), the
# cases run, the server stopped (SIGTERM to the process this script started),
# and a per-group summary printed from index.json: group -> number of cases
# per verdict (OK, NON-STRICT, INFORMATIONAL, UNIMPLEMENTED, FAILED) and the
# ids of the cases that are NON-STRICT or FAILED. Exit status 1 if a
# case FAILED.
set -euo pipefail

port=9001
cases='1.*,2.*,3.*,4.*,5.*,6.*,7.*,9.*,10.*,12.*,13.*'
exclude=''
parallel=4
out=''
name=''
while [[ $# -gt 0 ]]; do
    case "$1" in
        --port) port=$2; shift 2 ;;
        --cases) cases=$2; shift 2 ;;
        --exclude) exclude=$2; shift 2 ;;
        --parallel) parallel=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        --name) name=$2; shift 2 ;;
        --) shift; break ;;
        -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
        *) echo "autobahn.sh: unknown option $1 (server command goes after --)" >&2; exit 2 ;;
    esac
done
if [[ $# -eq 0 ]]; then
    echo "autobahn.sh: no server command (after --)" >&2
    exit 2
fi

root=$(cd "$(dirname "$0")/.." && pwd)
[[ -n $name ]] || name=$(basename "$1")
[[ -n $out ]] || out="$root/target/autobahn/$name"

if ! command -v kosoku >/dev/null 2>&1; then
    echo "autobahn.sh: installing kosoku from PyPI" >&2
    python3 -m pip install --quiet kosoku >&2
fi

cmd=()
for a in "$@"; do cmd+=("${a//\{PORT\}/$port}"); done

rm -rf "$out"
mkdir -p "$out"
"${cmd[@]}" >"$out/server.log" 2>&1 &
server=$!
cleanup() {
    if kill -0 "$server" 2>/dev/null; then
        kill -TERM "$server" 2>/dev/null || true
        wait "$server" 2>/dev/null || true
    fi
}
trap cleanup EXIT

# Wait (at most 10 s) for the port to accept connections.
ready=0
for _ in $(seq 1 100); do
    if ! kill -0 "$server" 2>/dev/null; then
        echo "autobahn.sh: server exited early; its output:" >&2
        cat "$out/server.log" >&2
        exit 1
    fi
    if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), timeout=0.2).close()" 2>/dev/null; then
        ready=1
        break
    fi
    sleep 0.1
done
if [[ $ready -ne 1 ]]; then
    echo "autobahn.sh: server not accepting on 127.0.0.1:$port after 10 s" >&2
    exit 1
fi

args=(-m fuzzingclient "127.0.0.1:$port" -p "$parallel" -o "$out")
IFS=',' read -ra inc <<<"$cases"
for c in "${inc[@]}"; do args+=(-i "$c"); done
if [[ -n $exclude ]]; then
    IFS=',' read -ra exc <<<"$exclude"
    for c in "${exc[@]}"; do args+=(-x "$c"); done
fi

start=$(date +%s.%N)
# kosoku exits non-zero whenever a case is not OK; the verdicts are read
# from index.json below.
kosoku "${args[@]}" >"$out/kosoku.log" 2>&1 || true
end=$(date +%s.%N)
cleanup

index=$(find "$out" -name index.json | head -n 1)
if [[ -z $index ]]; then
    echo "autobahn.sh: no index.json under $out (see $out/kosoku.log)" >&2
    exit 1
fi
python3 - "$index" "$name" "$start" "$end" <<'PY'
import json, sys
from collections import defaultdict

index, name, start, end = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
data = json.load(open(index))
verdicts = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED"]
groups = defaultdict(lambda: defaultdict(int))
odd = defaultdict(list)
total = defaultdict(int)

def case_key(c):
    return [int(p) if p.isdigit() else p for p in c.split(".")]

for agent, cases in data.items():
    for case, res in sorted(cases.items(), key=lambda kv: case_key(kv[0])):
        group = case.split(".")[0]
        b = res.get("behavior", "?")
        groups[group][b] += 1
        total[b] += 1
        if b not in ("OK", "INFORMATIONAL", "UNIMPLEMENTED"):
            odd[group].append(f"{case}:{b}" + ("" if res.get("behaviorClose", "OK") in ("OK", "INFORMATIONAL") else f"(close {res.get('behaviorClose')})"))

print(f"Autobahn cases against {name} ({sum(total.values())} cases in {end - start:.1f} s)")
print()
print("| group | " + " | ".join(verdicts) + " | other |")
print("|---|" + "---|" * (len(verdicts) + 1))
for g in sorted(groups, key=int):
    row = groups[g]
    other = sum(v for k, v in row.items() if k not in verdicts)
    print(f"| {g} | " + " | ".join(str(row.get(v, 0)) for v in verdicts) + f" | {other} |")
other = sum(v for k, v in total.items() if k not in verdicts)
print("| all | " + " | ".join(str(total.get(v, 0)) for v in verdicts) + f" | {other} |")
if odd:
    print()
    print("Cases neither OK, INFORMATIONAL nor UNIMPLEMENTED:")
    for g in sorted(odd, key=int):
        print(f"- group {g}: " + ", ".join(odd[g]))
sys.exit(1 if total.get("FAILED", 0) else 0)
PY
