#!/usr/bin/env python3
"""STAND-IN for `ringport serve --ws-addr`, used ONLY until the engine's
WebSocket listener is merged (issue 28). Delete it then.

The WebSocket harnesses (tests/browser.rs, tests/ws_interop.rs) start this
instead of `ringport serve` while `ws_common::WS_SERVER` says so; it takes
the same command line and behaves as `ringport serve` is specified to:

    ws_standin.py serve --addr HOST:PORT --ws-addr HOST:PORT
                  [--mode echo|chat] [--tls-cert PEM --tls-key PEM]
                  [--max-frame BYTES] [other ringport options, ignored]

* `--addr`: framed TCP, `[u32 big-endian length][payload]`.
* `--ws-addr`: WebSocket (Python `websockets`, permessage-deflate offered).
* echo: each message goes back to its sender, text as text, binary as
  binary; a TCP frame back as a frame.
* chat: every WebSocket message goes to every client, the sender included:
  to WebSocket clients keeping its kind, to TCP clients as a frame (text as
  its UTF-8 bytes); every TCP frame goes to every TCP client as a frame and
  to every WebSocket client as a binary message.
* `--tls-cert/--tls-key`: both listeners speak TLS (wss on --ws-addr).
* SIGTERM/SIGINT: WebSocket clients get close 1001 (going away), exit 0.

Each listener logs `listening on ADDR (stand-in, PROTO)` on stderr once
bound. Pubsub mode is not provided.
"""

import argparse
import asyncio
import signal
import ssl
import struct
import sys

from websockets.asyncio.server import broadcast, serve
from websockets.exceptions import ConnectionClosed


def parse_args(argv):
    p = argparse.ArgumentParser(prog="ws_standin.py")
    p.add_argument("command", choices=["serve"])
    p.add_argument("--addr", required=True)
    p.add_argument("--ws-addr", required=True)
    p.add_argument("--mode", choices=["echo", "chat"], default="echo")
    p.add_argument("--tls-cert")
    p.add_argument("--tls-key")
    p.add_argument("--max-frame", type=int, default=16 * 1024 * 1024)
    # ringport serve options the harnesses may pass; meaningless here.
    for ignored in ("--shards", "--stats-interval", "--backend", "--log-format"):
        p.add_argument(ignored)
    return p.parse_args(argv)


def split_addr(addr):
    host, _, port = addr.rpartition(":")
    return host.strip("[]"), int(port)


class Room:
    def __init__(self, mode):
        self.mode = mode
        self.ws = set()
        self.tcp = set()

    def from_ws(self, conn, message):
        if self.mode == "echo":
            return conn.send(message)
        broadcast(self.ws, message)
        payload = message.encode() if isinstance(message, str) else message
        self.to_tcp(payload)
        return None

    def from_tcp(self, writer, payload):
        if self.mode == "echo":
            writer.write(struct.pack(">I", len(payload)) + payload)
            return
        self.to_tcp(payload)
        broadcast(self.ws, payload)

    def to_tcp(self, payload):
        frame = struct.pack(">I", len(payload)) + payload
        for w in list(self.tcp):
            if w.is_closing():
                self.tcp.discard(w)
            else:
                w.write(frame)


async def main(argv):
    args = parse_args(argv)
    tls = None
    if args.tls_cert:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    room = Room(args.mode)

    async def ws_handler(conn):
        room.ws.add(conn)
        try:
            async for message in conn:
                sent = room.from_ws(conn, message)
                if sent is not None:
                    await sent
        except ConnectionClosed:
            pass
        finally:
            room.ws.discard(conn)

    async def tcp_handler(reader, writer):
        room.tcp.add(writer)
        try:
            while True:
                header = await reader.readexactly(4)
                (n,) = struct.unpack(">I", header)
                if n > args.max_frame:
                    break
                room.from_tcp(writer, await reader.readexactly(n))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            room.tcp.discard(writer)
            writer.close()

    ws_host, ws_port = split_addr(args.ws_addr)
    tcp_host, tcp_port = split_addr(args.addr)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    tcp_server = await asyncio.start_server(tcp_handler, tcp_host, tcp_port, ssl=tls)
    print(f"listening on {args.addr} (stand-in, framed tcp{', tls' if tls else ''})",
          file=sys.stderr, flush=True)
    async with serve(ws_handler, ws_host, ws_port, ssl=tls, max_size=args.max_frame,
                     ping_interval=None, compression="deflate") as ws_server:
        print(f"listening on {args.ws_addr} (stand-in, websocket{', tls' if tls else ''})",
              file=sys.stderr, flush=True)
        await stop.wait()
        tcp_server.close()
        # Closes every WebSocket with 1001 (going away).
        ws_server.close()
        await ws_server.wait_closed()
    print("stand-in: stopped", file=sys.stderr, flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
