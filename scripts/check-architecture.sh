#!/usr/bin/env bash
# Architecture checks (run by .ci/run):
# - no import cycle between the modules of either crate
#   (scripts/module-cycles.py);
# - the engine is sans-I/O and transport-agnostic: outside its test files,
#   crates/ringport/src/engine/ has no `cfg(feature = "tls")`, reads no
#   clock (`Instant::now`, `SystemTime::now`), writes no eventfd, takes no
#   lock, receives from no channel, and wakes no shard itself.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 scripts/module-cycles.py --edges crates/ringport/src crates/ringport-cli/src

pattern='cfg\(feature = "tls"\)|Instant::now|SystemTime::now|eventfd_add|eventfd::|\.lock\(\)|\.read\(\)\.unwrap|\.write\(\)\.unwrap|try_recv|recv_timeout|\.recv\(\)|\.wake\(\)'
found=$(grep -rnE "$pattern" crates/ringport/src/engine \
    --include='*.rs' \
    | grep -vE '^crates/ringport/src/engine/[a-z_]*tests\.rs:|^crates/ringport/src/engine/bench_echo\.rs:' \
    | grep -vE ':[0-9]+:\s*//' || true)
if [[ -n $found ]]; then
    echo "engine/ must stay sans-I/O and transport-agnostic; found:"
    echo "$found"
    exit 1
fi
echo "engine/: no cfg(feature = \"tls\"), clock read, eventfd, lock, channel receive or wake-up outside tests"
