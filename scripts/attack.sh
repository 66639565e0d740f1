#!/usr/bin/env bash
# Attacks against a fresh `ringport serve` each (slow senders, silent
# connections, RST bursts, waiters at the connection limit, garbage,
# non-readers, restart after SIGKILL), one line of results per attack.
# Loopback only, bounded in count and time (about 3 minutes).
#
#   scripts/attack.sh                 # all, on the default backend
#   RINGPORT_BACKEND=epoll scripts/attack.sh slowloris silent
set -euo pipefail
cd "$(dirname "$0")/.."
# BUILD=0 with RINGPORT=path: use that binary as it is (smoke mode).
[ "${BUILD:-1}" = 0 ] || cargo build --release -q -p ringport-cli
exec python3 scripts/attack.py "$@"
