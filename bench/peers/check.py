#!/usr/bin/env python3
"""Functional check of a framed echo server (ringport's default framing:
4-byte big-endian payload length N, then N bytes; N = 0 valid; N > 16 MiB
closes the connection). Python 3.11 standard library only.

Usage:
  check.py --addr 127.0.0.1:7001            # test a server that is running
  check.py [--raw] -- CMD [ARGS...]          # start CMD, wait for its
                                             # "listening on ADDR" line, test
                                             # it, then SIGTERM it and check
                                             # that it exits cleanly
  check.py --all                             # build nothing; start each peer
                                             # from target/release in turn

With a command, `--addr 127.0.0.1:0` is appended unless the command already
has --addr, and the address is taken from the server's "listening on" line.
--raw skips the test that needs a framing-aware server (oversized header
closes the connection): peer-uring echoes raw bytes without parsing.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

MAX_FRAME = 16 * 1024 * 1024
SIZES = [0, 1, 100 * 1024, 1024 * 1024]
TIMEOUT = 30.0
HERE = Path(__file__).resolve().parent

_RANDOM = os.urandom(MAX_FRAME)


def payload(size: int, tag: int) -> bytes:
    """Deterministic per-(size, tag) payload so cross-talk is detected."""
    if size == 0:
        return b""
    head = struct.pack(">Q", tag)[:size]
    start = (tag * 7919) % 4096
    body = _RANDOM[start : start + size - len(head)]
    return head + body


def frame(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def connect(addr: tuple[str, int]) -> socket.socket:
    s = socket.create_connection(addr, timeout=TIMEOUT)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def recv_exact(s: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = s.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise ConnectionError(f"EOF after {len(buf)} of {n} bytes")
        buf += chunk
    return bytes(buf)


def recv_frame(s: socket.socket) -> bytes:
    (n,) = struct.unpack(">I", recv_exact(s, 4))
    return recv_exact(s, n)


def send_in_thread(s: socket.socket, data: bytes) -> threading.Thread:
    """Writes `data` from a thread so that big echoes can be read meanwhile."""
    err: list[BaseException] = []

    def run() -> None:
        try:
            s.sendall(data)
        except BaseException as e:  # noqa: BLE001 - reported by the reader
            err.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.err = err  # type: ignore[attr-defined]
    t.start()
    return t


def expect_echo(s: socket.socket, payloads: list[bytes], what: str) -> None:
    for i, p in enumerate(payloads):
        got = recv_frame(s)
        if got != p:
            raise AssertionError(
                f"{what}: frame {i}: sent {len(p)} bytes, got {len(got)} "
                f"({'different content' if len(got) == len(p) else 'different length'})"
            )


# --------------------------------------------------------------------- tests


def t_sequential(addr) -> str:
    """One connection, request/response for 0 B, 1 B, 100 KiB, 1 MiB."""
    with connect(addr) as s:
        for size in SIZES:
            p = payload(size, size)
            w = send_in_thread(s, frame(p))
            expect_echo(s, [p], f"size {size}")
            w.join()
    return f"sizes {SIZES}"


def t_pipelined(addr) -> str:
    """All sizes plus 200 small frames written back to back in one go."""
    ps = [payload(sz, i) for i, sz in enumerate(SIZES * 2)] + [
        payload(512, 1000 + i) for i in range(200)
    ]
    with connect(addr) as s:
        w = send_in_thread(s, b"".join(frame(p) for p in ps))
        expect_echo(s, ps, "pipelined")
        w.join()
    return f"{len(ps)} frames, {sum(map(len, ps))} payload bytes"


def t_fragmented(addr) -> str:
    """Frames trickled in small pieces (header split across writes)."""
    ps = [payload(0, 1), payload(1, 2), payload(300, 3), payload(5000, 4)]
    data = b"".join(frame(p) for p in ps)
    with connect(addr) as s:
        pieces = [data[i : i + 3] for i in range(0, 63, 3)] + [data[63:]]
        for piece in pieces:
            s.sendall(piece)
            time.sleep(0.002)
        expect_echo(s, ps, "fragmented")
    return f"{len(pieces)} writes"


def t_max_frame(addr) -> str:
    """A frame of exactly 16 MiB (the limit) is echoed."""
    p = payload(MAX_FRAME, 77)
    with connect(addr) as s:
        w = send_in_thread(s, frame(p))
        expect_echo(s, [p], "16 MiB frame")
        w.join()
    return "16 MiB echoed"


def t_concurrent(addr, conns: int = 100) -> str:
    """`conns` connections at once, each echoing 0 B, 1 B, 100 KiB, 1 MiB."""
    errors: list[str] = []
    start = threading.Barrier(conns)

    def client(i: int) -> None:
        try:
            with connect(addr) as s:
                start.wait(timeout=TIMEOUT)
                for size in SIZES:
                    p = payload(size, i * 10 + size)
                    w = send_in_thread(s, frame(p))
                    expect_echo(s, [p], f"conn {i} size {size}")
                    w.join()
                # and a small pipelined burst
                ps = [payload(64, i * 100 + k) for k in range(8)]
                s.sendall(b"".join(frame(p) for p in ps))
                expect_echo(s, ps, f"conn {i} burst")
        except BaseException as e:  # noqa: BLE001
            errors.append(f"conn {i}: {type(e).__name__}: {e}")

    ts = [threading.Thread(target=client, args=(i,)) for i in range(conns)]
    t0 = time.monotonic()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise AssertionError(f"{len(errors)} of {conns} failed; first: {errors[0]}")
    return f"{conns} connections ok in {time.monotonic() - t0:.2f}s"


def t_slow_reader(addr) -> str:
    """48 MiB of 256 KiB frames while the client does not read for 1 s
    (server-side backpressure: full socket buffers, partial sends)."""
    ps = [payload(256 * 1024, 3000 + i) for i in range(192)]
    with connect(addr) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        w = send_in_thread(s, b"".join(frame(p) for p in ps))
        time.sleep(1.0)
        expect_echo(s, ps, "slow reader")
        w.join()
    return f"{len(ps)} frames after a 1 s stall"


def t_half_close(addr) -> str:
    """Frames then shutdown(SHUT_WR): every echo arrives, then EOF."""
    ps = [payload(sz, 500 + i) for i, sz in enumerate([1, 2000, 0, 70000])]
    with connect(addr) as s:
        s.sendall(b"".join(frame(p) for p in ps))
        s.shutdown(socket.SHUT_WR)
        expect_echo(s, ps, "half-close")
        rest = s.recv(1)
        if rest:
            raise AssertionError(f"expected EOF, got {rest!r}")
    return "echoes then EOF"


def t_oversized(addr) -> str:
    """A header announcing 16 MiB + 1 closes the connection (earlier frames
    on it are still echoed)."""
    ok = payload(10, 9)
    with connect(addr) as s:
        s.sendall(frame(ok) + struct.pack(">I", MAX_FRAME + 1) + b"xxxx")
        expect_echo(s, [ok], "before oversized")
        s.settimeout(5.0)
        try:
            rest = s.recv(1)
        except ConnectionResetError:
            rest = b""
        except socket.timeout:
            raise AssertionError("connection not closed after oversized header")
        if rest:
            raise AssertionError(f"expected close, got {rest!r}")
    # and the server still serves others
    with connect(addr) as s:
        s.sendall(frame(ok))
        expect_echo(s, [ok], "after oversized")
    return "closed; server still up"


TESTS = [
    ("sequential 0/1/100KiB/1MiB", t_sequential),
    ("pipelined batch", t_pipelined),
    ("fragmented writes", t_fragmented),
    ("16 MiB frame", t_max_frame),
    ("100 concurrent connections", t_concurrent),
    ("slow reader", t_slow_reader),
    ("half-close", t_half_close),
    ("oversized header closes", t_oversized),
]


def run_tests(addr: tuple[str, int], raw: bool, label: str) -> tuple[int, int, int]:
    passed = failed = skipped = 0
    for name, fn in TESTS:
        if raw and fn is t_oversized:
            print(f"  SKIP {name} (raw byte echo does not parse frames)")
            skipped += 1
            continue
        t0 = time.monotonic()
        try:
            info = fn(addr)
            print(f"  PASS {name}: {info} [{time.monotonic() - t0:.2f}s]")
            passed += 1
        except BaseException as e:  # noqa: BLE001
            print(f"  FAIL {name}: {type(e).__name__}: {e}")
            failed += 1
        sys.stdout.flush()
    return passed, failed, skipped


def parse_addr(s: str) -> tuple[str, int]:
    host, _, port = s.rpartition(":")
    return host.strip("[]"), int(port)


def start_server(cmd: list[str]) -> tuple[subprocess.Popen, tuple[str, int]]:
    if "--addr" not in cmd and not any(a.startswith("--addr=") for a in cmd):
        cmd = cmd + ["--addr", "127.0.0.1:0"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    assert p.stdout is not None
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            raise RuntimeError(f"{cmd[0]} exited (rc={p.wait()}) before listening")
        if line.startswith("listening on "):
            # keep draining stdout so the server never blocks on it
            threading.Thread(target=p.stdout.read, daemon=True).start()
            return p, parse_addr(line.split()[-1])
    p.kill()
    raise RuntimeError(f"{cmd[0]} did not print 'listening on' in 30s")


def stop_server(p: subprocess.Popen) -> tuple[bool, str]:
    t0 = time.monotonic()
    p.send_signal(signal.SIGTERM)
    try:
        rc = p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
        return False, "did not exit within 10s of SIGTERM (killed)"
    dt = time.monotonic() - t0
    return rc == 0, f"exit code {rc} {dt * 1000:.0f} ms after SIGTERM"


def check_command(cmd: list[str], raw: bool) -> tuple[int, int, int]:
    label = Path(cmd[0]).name
    print(f"== {label}: {' '.join(cmd)}")
    p, addr = start_server(cmd)
    print(f"  listening on {addr[0]}:{addr[1]} (pid {p.pid})")
    passed, failed, skipped = run_tests(addr, raw, label)
    ok, info = stop_server(p)
    print(f"  {'PASS' if ok else 'FAIL'} clean exit on SIGTERM: {info}")
    return passed + ok, failed + (not ok), skipped


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--addr", help="test a running server at HOST:PORT")
    ap.add_argument("--raw", action="store_true", help="server echoes raw bytes (skip framing-only test)")
    ap.add_argument("--all", action="store_true", help="start and test every peer in target/release")
    ap.add_argument("--threads", type=int, default=None, help="pass --threads N to the peers (with --all)")
    ap.add_argument("cmd", nargs=argparse.REMAINDER, help="-- CMD [ARGS...] to start and test")
    a = ap.parse_args()
    cmd = a.cmd[1:] if a.cmd[:1] == ["--"] else a.cmd

    totals = [0, 0, 0]
    if a.all:
        rel = HERE / "target" / "release"
        for name in ["peer-tokio", "peer-monoio", "peer-uring", "peer-mio"]:
            c = [str(rel / name)]
            if a.threads:
                c += ["--threads", str(a.threads)]
            r = check_command(c, raw=(name == "peer-uring"))
            totals = [x + y for x, y in zip(totals, r)]
    elif cmd:
        raw = a.raw or Path(cmd[0]).name == "peer-uring"
        totals = list(check_command(cmd, raw))
    elif a.addr:
        print(f"== server at {a.addr}")
        totals = list(run_tests(parse_addr(a.addr), a.raw, a.addr))
    else:
        ap.error("give --addr, --all or -- CMD")
    passed, failed, skipped = totals
    print(f"{passed} passed, {failed} failed, {skipped} skipped")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
