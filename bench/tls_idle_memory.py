#!/usr/bin/env python3
"""Bytes per idle TLS connection on a ringport server.

Starts `ringport serve` (1 shard) twice, plaintext and TLS (a throwaway
openssl certificate), opens N connections with Python's ssl module (or
plain sockets), sends one 512-byte frame on each and reads its echo (so the
handshake is complete and every buffer has been used once), then leaves
them idle and reads the server's VmRSS. Prints the growth per connection
for both and the difference: what TLS costs per idle connection.

Usage: python3 bench/tls_idle_memory.py [N=2000] [path/to/ringport]
"""
import os, socket, ssl, struct, subprocess, sys, tempfile, time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
BIN = sys.argv[2] if len(sys.argv) > 2 else os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "ringport")


def rss_kb(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def recvn(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError
        b += c
    return b


def measure(tls_dir):
    port = free_port()
    cmd = [BIN, "serve", "--addr", f"127.0.0.1:{port}", "--shards", "1", "--stats-interval", "0"]
    ctx = None
    if tls_dir:
        cmd += ["--tls-cert", f"{tls_dir}/cert.pem", "--tls-key", f"{tls_dir}/key.pem"]
        ctx = ssl.create_default_context(cafile=f"{tls_dir}/cert.pem")
    srv = subprocess.Popen(cmd, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        # Warm: one connection, so the shard's pools exist before the baseline.
        conns = []
        def one():
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            if ctx:
                s = ctx.wrap_socket(s, server_hostname="localhost")
            payload = os.urandom(512)
            s.sendall(struct.pack(">I", len(payload)) + payload)
            (n,) = struct.unpack(">I", recvn(s, 4))
            assert recvn(s, n) == payload
            return s
        conns.append(one())
        time.sleep(0.5)
        base = rss_kb(srv.pid)
        for _ in range(N):
            conns.append(one())
        time.sleep(1.0)
        after = rss_kb(srv.pid)
        for c in conns:
            c.close()
        return base, after
    finally:
        srv.terminate()
        srv.wait(timeout=10)


def main():
    with tempfile.TemporaryDirectory() as d:
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                        "-keyout", f"{d}/key.pem", "-out", f"{d}/cert.pem", "-subj", "/CN=localhost",
                        "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                       check=True, capture_output=True)
        pb, pa = measure(None)
        tb, ta = measure(d)
    plain = (pa - pb) * 1024 / N
    tls = (ta - tb) * 1024 / N
    print(f"connections: {N}")
    print(f"plaintext: RSS {pb} -> {pa} KiB, {plain:,.0f} bytes per idle connection")
    print(f"TLS:       RSS {tb} -> {ta} KiB, {tls:,.0f} bytes per idle connection")
    print(f"TLS state: {tls - plain:,.0f} bytes per idle connection")


main()
