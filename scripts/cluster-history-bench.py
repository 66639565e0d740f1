#!/usr/bin/env python3
"""Cluster measurements for docs/cluster.md and issue 30, against running
`ringport serve --mode pubsub` nodes (started by cluster-history-bench.sh).

  interest  NODES MONITOR   NATS bytes sent to each node by nats-server
                            (from its /connz) while one publisher publishes
                            to 30 topics whose subscribers are spread over
                            the nodes (topic i has subscribers on node i%3).
  recovery  NODES CLIENTS TOPICS MISSED
                            CLIENTS clients subscribe with `R` (no
                            position), disconnect, MISSED messages are
                            published per topic, then every client
                            reconnects to the next node and resumes from its
                            last position: time until all have caught up.

NODES is a comma-separated list of HOST:PORT. Frames: 4-byte big-endian
length, then the pubsub payload (see crates/ringport-cli/src/pubsub.rs).
"""

import asyncio
import json
import struct
import sys
import time
import urllib.request


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def resume(topic: bytes, epoch: int = 0, seq: int = 0) -> bytes:
    return frame(b"R" + bytes([len(topic)]) + topic + struct.pack(">QQ", epoch, seq))


def publish(topic: bytes, data: bytes) -> bytes:
    return frame(b"P" + bytes([len(topic)]) + topic + data)


def subscribe(topic: bytes) -> bytes:
    return frame(b"S" + topic)


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    (n,) = struct.unpack(">I", await reader.readexactly(4))
    return await reader.readexactly(n)


def parse(payload: bytes):
    """('N', topic, epoch, seq, data) / ('Y', topic, status, epoch, seq) /
    ('M', topic, data) / ('K', ...) / ('E', ...)"""
    op = payload[:1]
    if op in (b"N", b"Y", b"M"):
        n = payload[1]
        topic = payload[2 : 2 + n]
        rest = payload[2 + n :]
        if op == b"N":
            epoch, seq = struct.unpack(">QQ", rest[:16])
            return ("N", topic, epoch, seq, rest[16:])
        if op == b"Y":
            status = rest[0]
            epoch, seq = struct.unpack(">QQ", rest[1:17])
            return ("Y", topic, status, epoch, seq)
        return ("M", topic, rest)
    return (payload[:1].decode(), payload[1:])


def addr(node: str):
    host, port = node.rsplit(":", 1)
    return host, int(port)


async def open_conn(node: str, limit: asyncio.Semaphore):
    async with limit:
        return await asyncio.open_connection(*addr(node))


def connz(monitor: str):
    with urllib.request.urlopen(f"http://{monitor}/connz?limit=1000") as r:
        data = json.load(r)
    return {
        c.get("name", ""): (c["out_msgs"], c["out_bytes"])
        for c in data["connections"]
        if c.get("name", "").startswith("ringport-")
    }


async def interest(nodes, monitor):
    topics = [f"t{i}".encode() for i in range(30)]
    per_topic = 1000
    subs = []
    for i, t in enumerate(topics):
        for _ in range(2):
            r, w = await asyncio.open_connection(*addr(nodes[i % len(nodes)]))
            w.write(subscribe(t))
            await w.drain()
            assert parse(await read_frame(r))[0] == "K"
            subs.append((r, w))
    before = connz(monitor)
    pr, pw = await asyncio.open_connection(*addr(nodes[0]))
    data = b"x" * 64
    for k in range(per_topic):
        for t in topics:
            pw.write(publish(t, data))
        if k % 50 == 0:
            await pw.drain()
    await pw.drain()
    # Every subscriber gets its topic's messages: then NATS has sent all.
    async def drain(r):
        for _ in range(per_topic):
            await read_frame(r)

    await asyncio.wait_for(asyncio.gather(*(drain(r) for r, _ in subs)), 120)
    after = connz(monitor)
    total = per_topic * len(topics)
    print(f"{total} publishes of 64 bytes on node 1, 30 topics, subscribers of topic i on node i%3+1")
    for name in sorted(after):
        msgs = after[name][0] - before.get(name, (0, 0))[0]
        size = after[name][1] - before.get(name, (0, 0))[1]
        print(f"  {name}: nats-server sent it {msgs} messages, {size} bytes")
    for _, w in subs:
        w.close()
    pw.close()


async def recovery(nodes, clients, ntopics, missed):
    topics = [f"chat.r{i}".encode() for i in range(ntopics)]
    limit = asyncio.Semaphore(500)
    # A watcher on the last node hears every published message: once it has
    # them all, they are in the history.
    wr, ww = await asyncio.open_connection(*addr(nodes[-1]))
    for t in topics:
        ww.write(resume(t))
    await ww.drain()
    for _ in topics:
        assert parse(await read_frame(wr))[0] == "Y"

    async def first(i):
        r, w = await open_conn(nodes[i % len(nodes)], limit)
        t = topics[i % ntopics]
        w.write(resume(t))
        await w.drain()
        while True:
            f = parse(await read_frame(r))
            if f[0] == "Y":
                w.close()
                return (f[3], f[4])

    t0 = time.monotonic()
    positions = await asyncio.gather(*(first(i) for i in range(clients)))
    print(f"{clients} clients subscribed with R over {len(nodes)} nodes, {ntopics} topics: "
          f"{time.monotonic() - t0:.2f} s")
    # Published while they are away.
    pr, pw = await asyncio.open_connection(*addr(nodes[0]))
    for k in range(missed):
        for t in topics:
            pw.write(publish(t, struct.pack(">I", k)))
    await pw.drain()
    for _ in range(missed * ntopics):
        await read_frame(wr)

    statuses = {}
    done_at = []

    async def again(i):
        r, w = await open_conn(nodes[(i + 1) % len(nodes)], limit)
        t = topics[i % ntopics]
        epoch, seq = positions[i]
        w.write(resume(t, epoch, seq))
        await w.drain()
        got = []
        while True:
            f = parse(await read_frame(r))
            if f[0] == "N":
                got.append(struct.unpack(">I", f[4])[0])
            elif f[0] == "Y":
                statuses[f[2]] = statuses.get(f[2], 0) + 1
                done_at.append(time.monotonic())
                w.close()
                return got

    t0 = time.monotonic()
    results = await asyncio.gather(*(again(i) for i in range(clients)))
    elapsed = max(done_at) - t0
    complete = sum(1 for g in results if g == list(range(missed)))
    print(f"{clients} clients reconnected to another node with their positions, "
          f"{missed} missed messages each ({clients * missed} replayed in all): "
          f"all caught up in {elapsed:.2f} s; statuses {statuses} (1 recovered, 2 reset); "
          f"{complete} got exactly the {missed} missed messages in order")
    done_at.sort()
    for q in (0.5, 0.9, 0.99):
        print(f"  p{int(q * 100)} caught up after {done_at[int(q * (len(done_at) - 1))] - t0:.2f} s")
    ww.close()
    pw.close()


def main():
    if len(sys.argv) < 3:
        print(__doc__)
        sys.exit(2)
    nodes = sys.argv[2].split(",")
    if sys.argv[1] == "interest":
        asyncio.run(interest(nodes, sys.argv[3]))
    elif sys.argv[1] == "recovery":
        asyncio.run(recovery(nodes, int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])))
    else:
        print(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main()
