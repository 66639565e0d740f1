#!/usr/bin/env bash
# Installs the Python packages the WebSocket tests and scripts use, from
# PyPI, when missing:
#   websockets  the interop client (crates/ringport-cli/tests/ws_interop.rs,
#               tests/ws_support/ws_interop_client.py)
#   kosoku      the Autobahn|Testsuite driver (scripts/autobahn.sh)
# Idempotent and fast when both import. Called by .ci/run.
set -euo pipefail

need=()
python3 -c 'import websockets, sys; sys.exit(int(websockets.__version__.split(".")[0]) < 14)' \
    2>/dev/null || need+=('websockets>=14,<18')
command -v kosoku >/dev/null 2>&1 || need+=(kosoku)
if [ ${#need[@]} -eq 0 ]; then
    echo "install-python-ws: present: websockets $(python3 -c 'import websockets; print(websockets.__version__)'), $(command -v kosoku)"
    exit 0
fi
echo "install-python-ws: pip install ${need[*]}"
python3 -m pip install --quiet "${need[@]}"
python3 -c 'import websockets; print("websockets", websockets.__version__)'
