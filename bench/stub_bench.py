#!/usr/bin/env python3
"""A stand-in for `ringport bench`, to test bench/compare.sh's plumbing
(server start/stop, pinning, /proc sampling, JSON reading, the report)
before the real load generator exists, or without building it:

    BENCH_CMD="python3 bench/stub_bench.py" bench/compare.sh --quick

It takes the same options compare.sh passes (unknown ones are ignored),
opens the connections (selectors, non-blocking), keeps --depth framed
messages of --size bytes in flight on each (at most --rate per second per
connection if given), checks every echo, and writes the JSON keys
compare.sh reads. It is a slow Python client: its numbers measure the stub,
not the server. Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import selectors
import socket
import struct
import sys
import time


def parse_size(text: str) -> int:
    t = text.strip().lower().replace(" ", "")
    units = {"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "k": 1 << 10, "m": 1 << 20,
             "g": 1 << 30, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "b": 1}
    for u in sorted(units, key=len, reverse=True):
        if t.endswith(u):
            return int(float(t[: -len(u)]) * units[u])
    return int(t)


def sources(spec: str) -> list[str]:
    if not spec:
        return []
    if "-" in spec:
        a, b = spec.split("-", 1)
        pa, pb = a.split("."), b.split(".")
        return [".".join(pa[:3] + [str(i)]) for i in range(int(pa[3]), int(pb[3]) + 1)]
    return spec.split(",")


def proc_cpu(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return None


def proc_rss(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class Conn:
    __slots__ = ("sock", "out", "inbuf", "sent_at", "next_send", "frame", "need", "ev")

    def __init__(self, sock: socket.socket, frame: bytes):
        self.sock = sock
        self.out = bytearray()
        self.inbuf = bytearray()
        self.sent_at: collections.deque[float] = collections.deque()
        self.next_send = 0.0
        self.frame = frame
        self.need = len(frame)
        self.ev = selectors.EVENT_READ


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--addr", default="127.0.0.1:7000")
    ap.add_argument("--connections", "-c", type=int, default=100)
    ap.add_argument("--size", "-s", default="512")
    ap.add_argument("--depth", "-d", type=int, default=1)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--rate", type=float, default=0.0)
    ap.add_argument("--sources", default="")
    ap.add_argument("--json")
    ap.add_argument("--server-pid", type=int)
    args, unknown = ap.parse_known_args()
    if unknown:
        print(f"stub_bench: ignoring {unknown}", file=sys.stderr)
    host, port = args.addr.rsplit(":", 1)
    size = parse_size(args.size)
    frame = struct.pack(">I", size) + (b"x" * size)
    srcs = sources(args.sources)

    sel = selectors.DefaultSelector()
    conns: list[Conn] = []
    connect_failed = 0
    t_connect = time.monotonic()
    for i in range(args.connections):
        try:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if srcs:
                s.bind((srcs[i % len(srcs)], 0))
            s.settimeout(10)
            s.connect((host, int(port)))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setblocking(False)
        except OSError as e:
            connect_failed += 1
            if connect_failed == 1:
                print(f"stub_bench: connect: {e}", file=sys.stderr)
            continue
        c = Conn(s, frame)
        conns.append(c)
        sel.register(s, selectors.EVENT_READ, c)
    connect_secs = time.monotonic() - t_connect

    interval = 1.0 / args.rate if args.rate > 0 else 0.0
    errors = collections.Counter()
    lat: list[float] = []
    measured = 0
    start = time.monotonic()
    t_measure = start + args.warmup
    t_end = t_measure + args.duration
    cpu0 = None

    def pump(c: Conn, now: float) -> None:
        while len(c.sent_at) < args.depth and (interval == 0 or c.next_send <= now):
            c.out += c.frame
            c.sent_at.append(now)
            if interval:
                c.next_send = max(c.next_send + interval, now - 1.0)
        if c.out:
            try:
                n = c.sock.send(c.out)
                del c.out[:n]
            except BlockingIOError:
                pass
        ev = selectors.EVENT_READ | (selectors.EVENT_WRITE if c.out else 0)
        if ev != c.ev:
            c.ev = ev
            sel.modify(c.sock, ev, c)

    now = time.monotonic()
    for c in conns:
        pump(c, now)
    while conns:
        now = time.monotonic()
        if cpu0 is None and now >= t_measure and args.server_pid:
            cpu0 = (proc_cpu(args.server_pid), now)
        if now >= t_end:
            break
        timeout = min(0.05, interval) if interval else 0.05
        for key, mask in sel.select(timeout):
            c: Conn = key.data
            if mask & selectors.EVENT_READ:
                try:
                    data = c.sock.recv(1 << 20)
                except BlockingIOError:
                    data = None
                except OSError:
                    errors["recv"] += 1
                    data = b""
                if data == b"":
                    errors["closed_by_server"] += 1
                    sel.unregister(c.sock)
                    conns.remove(c)
                    continue
                if data:
                    c.inbuf += data
                    t = time.monotonic()
                    while len(c.inbuf) >= c.need:
                        if bytes(c.inbuf[: c.need]) != c.frame:
                            errors["bad_echo"] += 1
                        del c.inbuf[: c.need]
                        sent = c.sent_at.popleft()
                        if sent >= t_measure and t < t_end:
                            measured += 1
                            lat.append((t - sent) * 1e6)
            pump(c, time.monotonic())
        if interval:
            now = time.monotonic()
            for c in conns:
                if c.next_send <= now and len(c.sent_at) < args.depth:
                    pump(c, now)
    t_stop = time.monotonic()
    secs = max(1e-9, min(t_stop, t_end) - t_measure)
    server = {}
    if args.server_pid and cpu0 and cpu0[0] is not None:
        cpu1 = proc_cpu(args.server_pid)
        if cpu1 is not None:
            cpu_s = cpu1 - cpu0[0]
            server = {
                "cpu_percent": 100.0 * cpu_s / max(1e-9, t_stop - cpu0[1]),
                "cpu_seconds": cpu_s,
                "rss_bytes": proc_rss(args.server_pid),
                "cpu_us_per_message": cpu_s * 1e6 / measured if measured else 0.0,
            }
    lat.sort()

    def pct(q: float) -> float:
        return lat[min(len(lat) - 1, int(q / 100.0 * len(lat)))] if lat else 0.0

    out = {
        "connections": args.connections,
        "connections_established": args.connections - connect_failed,
        "connect_failed": connect_failed,
        "connects_per_sec": (args.connections - connect_failed) / max(connect_secs, 1e-9),
        "size": size,
        "depth": args.depth,
        "rate": args.rate,
        "duration_secs": secs,
        "messages": measured,
        "messages_per_sec": measured / secs,
        "mb_per_sec": measured * size / secs / 1e6,
        "latency_us": {"p50": pct(50), "p90": pct(90), "p99": pct(99), "p999": pct(99.9),
                       "max": lat[-1] if lat else 0.0},
        "errors": dict(errors),
        "server": server,
        "stub": True,
    }
    text = json.dumps(out, indent=2)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")
    print(f"stub_bench: {measured} messages in {secs:.2f}s = {measured / secs:.0f} msg/s, "
          f"p99 {pct(99):.0f} us, {args.connections - connect_failed} connections")
    for c in list(conns):
        c.sock.close()
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
