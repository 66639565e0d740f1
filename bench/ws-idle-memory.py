#!/usr/bin/env python3
"""Server memory per idle connection: framed TCP against WebSocket.

Starts `ringport serve` (1 shard) with a framed and a WebSocket listener,
opens N framed connections and measures the server's RSS growth, closes
them, then opens N WebSocket connections (handshake done, one message
echoed on each) and measures again. Prints bytes per connection for both
and the difference: what a WebSocket connection costs beyond a framed one.

    bench/ws-idle-memory.py target/release/ringport [N] [--deflate]
"""
import base64, os, socket, subprocess, sys, time

def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")

def settle(pid):
    # RSS after the server has handled everything (two equal readings).
    last = -1
    for _ in range(50):
        time.sleep(0.2)
        now = rss(pid)
        if now == last:
            return now
        last = now
    return last

def ws_open(port, deflate):
    s = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    ext = "Sec-WebSocket-Extensions: permessage-deflate\r\n" if deflate else ""
    s.sendall((f"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{ext}\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk:
            raise RuntimeError("closed during the handshake")
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    # One masked binary message of 8 bytes (zero key), echoed back.
    s.sendall(bytes([0x82, 0x88, 0, 0, 0, 0]) + b"ping1234")
    got = head.split(b"\r\n\r\n", 1)[1]
    while len(got) < 10:
        got += s.recv(64)
    return s

def tcp_open(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(b"\x00\x00\x00\x08ping1234")
    got = b""
    while len(got) < 12:
        got += s.recv(64)
    return s

def main():
    binary = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2].isdigit() else 5000
    deflate = "--deflate" in sys.argv
    args = [binary, "serve", "--addr", "127.0.0.1:7411", "--ws-addr", "127.0.0.1:7412",
            "--shards", "1", "--stats-interval", "0", "--mode", "echo"]
    if deflate:
        args.append("--ws-deflate")
    server = subprocess.Popen(args, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1)
        # Warm both paths (pools, buffers) before measuring.
        warm = [tcp_open(7411) for _ in range(100)] + [ws_open(7412, deflate) for _ in range(100)]
        for s in warm:
            s.close()
        base = settle(server.pid)
        conns = [tcp_open(7411) for _ in range(n)]
        tcp = settle(server.pid)
        for s in conns:
            s.close()
        conns = []
        base2 = settle(server.pid)
        conns = [ws_open(7412, deflate) for _ in range(n)]
        ws = settle(server.pid)
        per_tcp = (tcp - base) / n
        per_ws = (ws - base2) / n
        print(f"{n} idle connections each, 1 shard, deflate {'offered' if deflate else 'off'}")
        print(f"framed TCP : {per_tcp:8.1f} B per connection (RSS {base/2**20:.1f} -> {tcp/2**20:.1f} MiB)")
        print(f"WebSocket  : {per_ws:8.1f} B per connection (RSS {base2/2**20:.1f} -> {ws/2**20:.1f} MiB)")
        print(f"WebSocket beyond framed: {per_ws - per_tcp:8.1f} B per connection")
        for s in conns:
            s.close()
    finally:
        server.terminate()
        server.wait()

main()
