#!/usr/bin/env bash
# A three-node ringport cluster on loopback, over one nats-server:
# starts nats-server and three `ringport serve --cluster` nodes (chat mode
# on ports 17101-17103, pubsub mode on 17201-17203), connects clients to
# each node, shows a chat message, a topic publish and a direct send from
# node 1 reaching clients on nodes 2 and 3, then stops everything.
#
# Needs: nats-server (Debian package nats-server), python3, and a built
# ringport (cargo build --release -p ringport-cli; RINGPORT=path overrides).
set -euo pipefail
cd "$(dirname "$0")/.."
RINGPORT=${RINGPORT:-${CARGO_TARGET_DIR:-target}/release/ringport}
[ -x "$RINGPORT" ] || { echo "build first: cargo build --release -p ringport-cli" >&2; exit 1; }
command -v nats-server >/dev/null || { echo "install nats-server (apt-get install nats-server)" >&2; exit 1; }

NATS_PORT=${NATS_PORT:-14222}
logs=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    echo "logs: $logs"
}
trap cleanup EXIT

# One NATS server per mode: the chat cluster's broadcasts must not reach
# the pubsub nodes (both use the default subject prefix).
for port in "$NATS_PORT" $((NATS_PORT + 1)); do
    nats-server -a 127.0.0.1 -p "$port" >"$logs/nats-$port.log" 2>&1 &
    pids+=($!)
    for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
done

for i in 1 2 3; do
    for mode in chat pubsub; do
        port=$([ $mode = chat ] && echo 1710$i || echo 1720$i)
        nats=$([ $mode = chat ] && echo "$NATS_PORT" || echo $((NATS_PORT + 1)))
        RUST_LOG=info "$RINGPORT" serve --addr 127.0.0.1:$port --mode $mode --shards 1 \
            --stats-interval 0 --cluster nats://127.0.0.1:$nats --node-id "$mode-n$i" \
            >"$logs/$mode-n$i.log" 2>&1 &
        pids+=($!)
    done
done
# Each node logs "node is up" for every peer it hears (2 peers per mode).
for f in "$logs"/chat-n*.log "$logs"/pubsub-n*.log; do
    for _ in $(seq 100); do [ "$(grep -c 'node is up' "$f")" -ge 2 ] && break; sleep 0.1; done
done

python3 - <<'PY'
import socket, struct

def conn(port):
    s = socket.create_connection(("127.0.0.1", port)); s.settimeout(5); return s
def send(s, b): s.sendall(struct.pack(">I", len(b)) + b)
def recv(s):
    def exact(n):
        d = b""
        while len(d) < n:
            c = s.recv(n - len(d))
            if not c: raise EOFError
            d += c
        return d
    return exact(struct.unpack(">I", exact(4))[0])

# Chat: one client per node; a message from node 1 reaches all three.
chat = [conn(17100 + i) for i in (1, 2, 3)]
for _ in range(20):                       # until every node has its client open
    send(chat[0], b"warm-up")
    try:
        got = [recv(c) for c in chat]; break
    except socket.timeout:
        pass
send(chat[0], b"hello from node 1")
for i, c in enumerate(chat, 1):
    m = recv(c)
    while m == b"warm-up": m = recv(c)
    print(f"chat     node {i} client got: {m.decode()}")

# Pubsub: a subscriber of "news" on every node; a publisher on node 1.
subs = [conn(17200 + i) for i in (1, 2, 3)]
for s in subs:
    send(s, b"Snews"); r = recv(s); assert r == b"KSnews", r
pub = conn(17201)
send(pub, b"P\x04news" + b"published on node 1")
for i, s in enumerate(subs, 1):
    m = recv(s); t = m[2:2 + m[1]]
    print(f"pubsub   node {i} subscriber got on {t.decode()!r}: {m[2 + m[1]:].decode()}")

# Direct send: node 3's subscriber says who it is; node 1 writes to it.
send(subs[2], b"I"); me = recv(subs[2])[1:]
send(pub, b"D" + bytes([len(me)]) + me + b"just for you")
m = recv(subs[2]); frm = m[2:2 + m[1]]
print(f"direct   {me.decode()} got from {frm.decode()}: {m[2 + m[1]:].decode()}")
subs[2].close()
import time; time.sleep(0.3)
send(pub, b"D" + bytes([len(me)]) + me + b"too late")
m = recv(pub)
print(f"direct   after it closed, the sender got error code {m[1]} (1 = stale id) for {m[2:].decode()}")
PY
echo "cluster-demo: ok"
