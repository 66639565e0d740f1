"""Admission-control attacks for scripts/attack.py (issue 29), one line each:

  per-ip         --max-connections 200: 127.0.0.2 opens 200 connections and
                 holds them; 20 clients from 127.0.0.3 then make 20 round
                 trips each (3 s timeout): served?, p99
  deny           --max-connections 200 --deny 127.0.0.2: the same flood from
                 the denied address: others served?, p99
  chat-flood     --mode chat, 100 clients send 10 msg/s for 4 s while one
                 floods as fast as it can (reading everything): every
                 normal message delivered?, delivery p99
  handshake-flood TLS, 20 established clients doing round trips while 4,000
                 connections send a ClientHello and stall: served?, p99

With ATTACK_NO_LIMITS=1 the servers start without the admission flags (to
measure a binary that predates them: the "before" figures).
"""

import os
import selectors
import socket
import ssl
import struct
import subprocess
import tempfile
import threading
import time

NO_LIMITS = os.environ.get("ATTACK_NO_LIMITS") == "1"


def limits(*flags):
    return [] if NO_LIMITS else list(flags)


def frame(payload):
    return struct.pack(">I", len(payload)) + payload


def connect_from(source, addr, timeout=3):
    s = socket.socket()
    s.settimeout(timeout)
    s.bind((source, 0))
    s.connect(addr)
    return s


def read_exact(s, n):
    got = b""
    while len(got) < n:
        chunk = s.recv(n - len(got))
        if not chunk:
            raise ConnectionError("closed")
        got += chunk
    return got


def p99_ms(values):
    if not values:
        return "n/a"
    v = sorted(values)
    return f"{v[min(len(v) - 1, int(len(v) * 0.99))] * 1000:.1f} ms"


def round_trips(source, addr, clients=20, each=20):
    """`clients` clients from `source`, `each` echo round trips each with a
    3 s timeout: (clients fully served, latencies)."""
    served, lat = 0, []
    for _ in range(clients):
        try:
            c = connect_from(source, addr)
            for i in range(each):
                msg = b"x" * 32
                t = time.time()
                c.sendall(frame(msg))
                n = struct.unpack(">I", read_exact(c, 4))[0]
                read_exact(c, n)
                lat.append(time.time() - t)
            served += 1
            c.close()
        except OSError:
            pass
    return served, lat


def hold_from(source, addr, n):
    socks = []
    for _ in range(n):
        try:
            socks.append(connect_from(source, addr))
        except OSError:
            pass
    return socks


def per_ip(Server):
    srv = Server("--max-connections", "200", *limits("--max-connections-per-ip", "50"))
    held = hold_from("127.0.0.2", srv.addr, 200)
    served, lat = round_trips("127.0.0.3", srv.addr)
    rejected = sum("clients refused at accept" in line for line in srv.log)
    srv.stop()
    for s in held:
        s.close()
    flags = "" if NO_LIMITS else " --max-connections-per-ip 50"
    print(f"per-ip: --max-connections 200{flags}, 127.0.0.2 holds 200 connections: "
          f"other address served {served}/20 clients (3 s timeout), p99 {p99_ms(lat)}"
          f"{'' if NO_LIMITS else f'; refusals logged {rejected} time(s)'}")


def deny(Server):
    srv = Server("--max-connections", "200", *limits("--deny", "127.0.0.2"))
    held = hold_from("127.0.0.2", srv.addr, 200)
    served, lat = round_trips("127.0.0.3", srv.addr)
    srv.stop()
    for s in held:
        s.close()
    flags = "" if NO_LIMITS else " --deny 127.0.0.2"
    print(f"deny: --max-connections 200{flags}, 127.0.0.2 opens 200 connections: "
          f"other address served {served}/20 clients (3 s timeout), p99 {p99_ms(lat)}")


def chat_flood(Server):
    clients, rate, seconds = 100, 10, 4
    srv = Server("--mode", "chat", "--shards", "2",
                 *limits("--max-message-rate", "100", "--message-burst", "100"))
    flooder = socket.create_connection(srv.addr)
    normals = [socket.create_connection(srv.addr) for _ in range(clients)]
    time.sleep(0.5)  # let every client be open before the broadcasts start
    stop = threading.Event()
    flood_sent = [0]

    def flood():
        flooder.setblocking(False)
        burst = frame(b"F" * 16) * 256
        pending = b""
        while not stop.is_set():
            try:
                while True:
                    try:
                        flooder.recv(1 << 20)
                    except BlockingIOError:
                        break
                if not pending:
                    pending = burst
                    flood_sent[0] += 256
                n = flooder.send(pending)
                pending = pending[n:]
            except BlockingIOError:
                time.sleep(0.001)
            except OSError:
                return

    ft = threading.Thread(target=flood, daemon=True)
    ft.start()
    sel = selectors.DefaultSelector()
    bufs = {}
    for i, s in enumerate(normals):
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, i)
        bufs[i] = bytearray()
    got = [0] * clients
    lat = []
    closed = 0
    want = clients * rate * seconds
    started = time.time()
    next_send = started
    sent_rounds = 0
    deadline = started + seconds + 10
    while time.time() < deadline:
        now = time.time()
        if sent_rounds < rate * seconds and now >= next_send:
            for i, s in enumerate(normals):
                try:
                    s.send(frame(b"N" + struct.pack(">d", time.time())))
                except OSError:
                    pass
            sent_rounds += 1
            next_send += 1 / rate
        for key, _ in sel.select(timeout=0.01):
            i = key.data
            try:
                data = key.fileobj.recv(1 << 20)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                sel.unregister(key.fileobj)
                closed += 1
                continue
            b = bufs[i]
            b += data
            pos = 0
            now = time.time()
            while len(b) - pos >= 4:
                n = struct.unpack_from(">I", b, pos)[0]
                if len(b) - pos - 4 < n:
                    break
                if b[pos + 4:pos + 5] == b"N":
                    got[i] += 1
                    lat.append(now - struct.unpack_from(">d", b, pos + 5)[0])
                pos += 4 + n
            del b[:pos]
        if sent_rounds >= rate * seconds and all(g >= want for g in got):
            break
    stop.set()
    ft.join(2)
    complete = sum(g >= want for g in got)
    srv.stop()
    flags = "" if NO_LIMITS else " --max-message-rate 100"
    print(f"chat-flood: --mode chat{flags}, 100 clients at {rate} msg/s for {seconds} s, one "
          f"flooder ({flood_sent[0]} messages written): clients with every message "
          f"{complete}/100, closed {closed}, delivery p99 {p99_ms(lat)}")
    for s in normals + [flooder]:
        s.close()


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_cert(tmp):
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost"],
                   check=True, capture_output=True)
    return cert, key


def handshake_flood(Server):
    with tempfile.TemporaryDirectory() as tmp:
        cert, key = make_cert(tmp)
        srv = Server("--shards", "1", "--tls-cert", cert, "--tls-key", key,
                     *limits("--max-handshakes", "64"))
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        established = []
        for _ in range(20):
            s = ctx.wrap_socket(socket.create_connection(srv.addr, timeout=3),
                                server_hostname="localhost")
            established.append(s)
        stop = threading.Event()
        flooded = [0]

        def flood_bio():
            socks = []
            for i in range(4000):
                if stop.is_set():
                    break
                try:
                    raw = socket.create_connection(srv.addr, timeout=3)
                    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
                    obj = ctx.wrap_bio(inc, out, server_hostname="localhost")
                    try:
                        obj.do_handshake()
                    except ssl.SSLWantReadError:
                        pass
                    raw.sendall(out.read())
                    socks.append(raw)
                    flooded[0] += 1
                except OSError:
                    pass
            stop.wait(30)
            for raw in socks:
                raw.close()

        cpu_before = cpu_seconds(srv.proc.pid)
        ft = threading.Thread(target=flood_bio, daemon=True)
        ft.start()
        lat, failed = [], 0
        started = time.time()
        while time.time() - started < 6:
            for s in established:
                try:
                    t = time.time()
                    s.sendall(frame(b"y" * 32))
                    n = struct.unpack(">I", read_exact(s, 4))[0]
                    read_exact(s, n)
                    lat.append(time.time() - t)
                except OSError:
                    failed += 1
        cpu = cpu_seconds(srv.proc.pid) - cpu_before
        rss = srv.rss_mib()
        stop.set()
        ft.join(5)
        srv.stop()
        flags = "" if NO_LIMITS else " --max-handshakes 64"
        print(f"handshake-flood: TLS{flags}, {flooded[0]} connections send a ClientHello and "
              f"stall while 20 established clients make round trips for 6 s: "
              f"served {len(established) - min(failed, len(established))}/20, "
              f"{len(lat)} round trips, p99 {p99_ms(lat)}; server CPU {cpu:.2f} s, RSS {rss:.0f} MiB")
        for s in established:
            s.close()
