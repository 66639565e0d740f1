#!/usr/bin/env python3
"""Attacks against a fresh `ringport serve`, one line of results each.

Run by scripts/attack.sh (which builds the release binary). Every attack
starts its own server on a free loopback port with the flags it needs,
drives it from this process with plain sockets, prints one line, and stops
the server. Everything stays on 127.0.0.0/8 and is bounded in count and
time.

  slowloris    2,000 connections send a 16 MiB frame header, then 1 byte/s:
               cut by --frame-timeout, when (p50/p99/max)
  silent       5,000 connections send nothing: closed by --idle-timeout,
               when (p50/p99/max)
  rst-burst    8 bursts of 20,000 connect, send a 1 KiB frame, RST: server
               RSS before/after
  limit        --max-connections 1000, 1,508 clients, 600 leave: how many of
               the 508 waiting get in, how many are cut
  garbage      200 connections send random bytes: all closed, a well-behaved
               client still served
  non-readers  7 rounds on one server: 100 connections send 4 MiB each and
               read nothing (server RSS stays bounded), then read and get
               every echo back (RSS returns, no creep over the rounds)
  sigkill      SIGKILL a loaded server, restart on the same port at once
  per-ip, deny, chat-flood, handshake-flood: admission control, see
               scripts/attack_admission.py (ATTACK_NO_LIMITS=1: without
               the flags, for a binary that predates them)
"""

import os
import random
import selectors
import signal
import socket
import struct
import subprocess
import tempfile
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import attack_admission as admission  # noqa: E402

BIN = os.environ.get("RINGPORT", os.path.join(os.path.dirname(__file__), "..", "target", "release", "ringport"))
BACKEND = os.environ.get("RINGPORT_BACKEND", "auto")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, *flags, port=None):
        self.port = port or free_port()
        self.addr = ("127.0.0.1", self.port)
        args = [BIN, "serve", "--addr", f"127.0.0.1:{self.port}", "--backend", BACKEND,
                "--stats-interval", "0", *flags]
        # The log goes to a file: a pipe nobody drains would block the
        # server's logging (and its shards) once full.
        self.log_file = tempfile.NamedTemporaryFile("w+", prefix="ringport-attack-", suffix=".log")
        self.proc = subprocess.Popen(args, stderr=self.log_file, stdout=subprocess.DEVNULL)
        deadline = time.time() + 20
        while time.time() < deadline:
            if "listening on" in self.text():
                break
            if self.proc.poll() is not None:
                raise SystemExit(f"server exited: {self.text()}")
            time.sleep(0.05)

    def text(self):
        with open(self.log_file.name) as f:
            return f.read()

    @property
    def log(self):
        return self.text().splitlines()

    def rss_mib(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def frame(payload):
    return struct.pack(">I", len(payload)) + payload


def connect_many(addr, n, first_source=1):
    """n connections spread over source addresses 127.0.1.x (no port search)."""
    socks = []
    for i in range(n):
        s = socket.socket()
        s.bind((f"127.0.1.{first_source + i // 10000}", 0))
        s.connect(addr)
        socks.append(s)
    return socks


def closed_times(socks, started, limit, every_second=None):
    """Waits (up to `limit` s) for every socket to see EOF/RST; returns the
    seconds after `started` at which each closed (None: still open).
    `every_second(open_sockets)` runs once a second meanwhile."""
    sel = selectors.DefaultSelector()
    for i, s in enumerate(socks):
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
    times = [None] * len(socks)
    left = len(socks)
    deadline = started + limit
    next_tick = time.time()
    while left and time.time() < deadline:
        if every_second and time.time() >= next_tick:
            every_second([socks[i] for i in range(len(socks)) if times[i] is None])
            next_tick += 1
        for key, _ in sel.select(timeout=0.2):
            s = key.fileobj
            try:
                data = s.recv(65536)
            except (ConnectionResetError, BrokenPipeError):
                data = b""
            except BlockingIOError:
                continue
            if not data:
                times[key.data] = time.time() - started
                sel.unregister(s)
                left -= 1
    sel.close()
    return times


def pct(values, p):
    v = sorted(values)
    return v[min(len(v) - 1, int(len(v) * p))]


def summary(times):
    done = [t for t in times if t is not None]
    if not done:
        return "none closed"
    return (f"closed {len(done)}/{len(times)}, after p50 {pct(done, 0.5):.1f} s, "
            f"p99 {pct(done, 0.99):.1f} s, max {max(done):.1f} s")


def echo_ok(addr):
    with socket.create_connection(addr, timeout=10) as c:
        c.sendall(frame(b"still served?"))
        got = b""
        while len(got) < 4 + 13:
            chunk = c.recv(100)
            if not chunk:
                return False
            got += chunk
        return got[4:] == b"still served?"


def slowloris():
    n, timeout = 2000, 5
    srv = Server("--frame-timeout", f"{timeout}s", "--idle-timeout", "60s")
    socks = connect_many(srv.addr, n)
    started = time.time()
    for s in socks:
        s.sendall(struct.pack(">I", 16 << 20))

    def trickle(open_socks):
        for s in open_socks:
            try:
                s.send(b"x")
            except OSError:
                pass

    # One byte per second from each while they last.
    times = closed_times(socks, started, 30, trickle)
    ok = echo_ok(srv.addr)
    srv.stop()
    print(f"slowloris: {n} trickling senders, --frame-timeout {timeout}s: {summary(times)}; "
          f"others served: {ok}")
    for s in socks:
        s.close()


def silent():
    n, timeout = 5000, 5
    srv = Server("--idle-timeout", f"{timeout}s")
    started = time.time()
    socks = connect_many(srv.addr, n)
    times = closed_times(socks, started, 30)
    ok = echo_ok(srv.addr)
    srv.stop()
    print(f"silent: {n} silent connections, --idle-timeout {timeout}s: {summary(times)}; "
          f"others served: {ok}")
    for s in socks:
        s.close()


def rst_burst():
    srv = Server()
    before = srv.rss_mib()
    for burst in range(8):
        # 20,000 per burst, in chunks this process's open-files limit holds.
        for chunk in range(4):
            socks = connect_many(srv.addr, 5000, first_source=10 + burst * 4 + chunk)
            for s in socks:
                s.sendall(frame(b"r" * 1024))
            for s in socks:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.close()
    time.sleep(2)
    after = srv.rss_mib()
    ok = echo_ok(srv.addr)
    srv.stop()
    print(f"rst-burst: 8 x 20,000 connect+frame+RST: server RSS {before:.1f} MiB before, "
          f"{after:.1f} MiB after with none open; others served: {ok}")


def limit():
    srv = Server("--max-connections", "1000")
    held = connect_many(srv.addr, 1000)
    for s in held:
        s.sendall(frame(b"in"))
    for s in held:
        s.settimeout(10)
        assert s.recv(6) == frame(b"in")
    waiting = connect_many(srv.addr, 508, first_source=5)
    for i, s in enumerate(waiting):
        s.sendall(frame(b"w%03d" % i))
    time.sleep(1)
    for s in held[:600]:
        s.close()
    admitted, cut = 0, 0
    sel = selectors.DefaultSelector()
    for s in waiting:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    deadline = time.time() + 15
    left = len(waiting)
    while left and time.time() < deadline:
        for key, _ in sel.select(timeout=0.2):
            s = key.fileobj
            try:
                data = s.recv(100)
            except BlockingIOError:
                continue
            except ConnectionResetError:
                data = b""
            if data:
                admitted += 1  # the 8-byte echo arrives in one piece on loopback
            else:
                cut += 1
            sel.unregister(s)
            left -= 1
    srv.stop()
    print(f"limit: --max-connections 1000, 1,508 clients, 600 left: {admitted} of 508 waiting "
          f"admitted, {cut} cut, {left} still waiting")
    for s in held + waiting:
        s.close()


def garbage():
    srv = Server()
    rng = random.Random(7)
    socks = connect_many(srv.addr, 200)
    started = time.time()
    for s in socks:
        s.sendall(bytes(rng.getrandbits(8) for _ in range(rng.randrange(5, 3000))))
    times = closed_times(socks, started, 10)
    ok = echo_ok(srv.addr)
    srv.stop()
    print(f"garbage: 200 connections of random bytes: {summary(times)}; others served: {ok}")
    for s in socks:
        s.close()


class Pusher:
    """Sends whole frames on a non-blocking socket, keeping the unsent rest
    of a frame for the next try (a send may take part of it)."""

    def __init__(self, sock):
        self.sock = sock
        self.pending = b""
        self.sent = 0  # bytes of whole frames handed over

    def push(self, data, limit):
        """Sends (the rest of) a frame; starts a new one while under
        `limit`. Returns whether anything was sent."""
        if not self.pending:
            if self.sent >= limit:
                return False
            self.pending = data
            self.sent += len(data)
        try:
            n = self.sock.send(self.pending)
        except BlockingIOError:
            return False
        self.pending = self.pending[n:]
        return n > 0


def push_without_reading(addr, payload, per_conn):
    """100 connections send `per_conn` bytes each without reading; returns
    their pushers."""
    pushers = [Pusher(s) for s in connect_many(addr, 100)]
    for p in pushers:
        p.sock.setblocking(False)
    data = frame(payload)
    deadline = time.time() + 20
    while time.time() < deadline:
        progress = False
        for p in pushers:
            progress |= p.push(data, per_conn)
        if not progress:
            if all(p.sent >= per_conn and not p.pending for p in pushers):
                break
            time.sleep(0.05)
    return pushers


def read_back(pushers, payload, per_conn):
    """Reads every echo back (sending what is still to send meanwhile);
    returns how many connections got every byte they sent."""
    data = frame(payload)
    got = [0] * len(pushers)
    deadline = time.time() + 60
    while time.time() < deadline and any(
        got[i] < p.sent or p.pending or p.sent < per_conn for i, p in enumerate(pushers)
    ):
        for i, p in enumerate(pushers):
            try:
                got[i] += len(p.sock.recv(1 << 20))
            except BlockingIOError:
                pass
            p.push(data, per_conn)
    complete = sum(1 for i, p in enumerate(pushers) if got[i] == p.sent and not p.pending)
    for p in pushers:
        p.sock.close()
    return complete


def non_readers():
    srv = Server()
    before = srv.rss_mib()
    payload = bytes(range(256)) * 256  # 64 KiB
    rounds = []
    for _ in range(7):
        pushers = push_without_reading(srv.addr, payload, 4 << 20)
        peak = srv.rss_mib()
        complete = read_back(pushers, payload, 4 << 20)
        time.sleep(0.5)
        rounds.append((sum(p.sent for p in pushers) / 2**20, peak, complete, srv.rss_mib()))
    # The shards give memory that traffic no longer needs back every 2 s,
    # by halves: wait for that before the last figure.
    time.sleep(12)
    settled = srv.rss_mib()
    abnormal = [l for l in srv.log if "connection closed" in l]
    srv.stop()
    if abnormal:
        print("non-readers: abnormal closes:", len(abnormal), abnormal[:3])
    print(f"non-readers: 7 rounds of 100 connections pushing 4 MiB each without reading, then "
          f"reading back: RSS {before:.1f} MiB at start; per round peak/after: "
          + ", ".join(f"{p:.0f}/{a:.0f}" for _, p, _, a in rounds)
          + f" MiB; 12 s after the last round: {settled:.1f} MiB; "
          + f"every byte back: {all(c == 100 for _, _, c, _ in rounds)}")


def sigkill():
    srv = Server("--shards", "2")
    socks = connect_many(srv.addr, 500)
    port = srv.port
    srv.proc.kill()
    srv.proc.wait()
    started = time.time()
    again = Server("--shards", "2", port=port)
    ok = echo_ok(again.addr)
    took = time.time() - started
    retried = any("retrying" in line for line in again.log)
    again.stop()
    print(f"sigkill: restart on the same port right after SIGKILL with 500 connections: "
          f"serving after {took:.2f} s (bind retried: {retried}); echo: {ok}")
    for s in socks:
        s.close()


ATTACKS = {
    "slowloris": slowloris, "silent": silent, "rst-burst": rst_burst, "limit": limit,
    "garbage": garbage, "non-readers": non_readers, "sigkill": sigkill,
    "per-ip": lambda: admission.per_ip(Server),
    "deny": lambda: admission.deny(Server),
    "chat-flood": lambda: admission.chat_flood(Server),
    "handshake-flood": lambda: admission.handshake_flood(Server),
}

if __name__ == "__main__":
    names = sys.argv[1:] or list(ATTACKS)
    for name in names:
        ATTACKS[name]()
