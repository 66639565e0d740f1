#!/usr/bin/env python3
"""The Python `websockets` half of tests/ws_interop.rs (issue 28 item 8).

    ws_interop_client.py --url ws://127.0.0.1:PORT/ --mode echo
    ws_interop_client.py --url wss://localhost:PORT/ --mode chat \\
        --tcp 127.0.0.1:PORT --ca ca.pem

Runs every check for the mode against the server and prints one JSON
object on stdout: {"passed": [check names], "extensions": "..."}. The first
failing check ends the run with exit status 1 and its reason on stderr.
Every wait is bounded (STEP seconds).

echo: text (non-ASCII), binary (all 256 byte values), 1 MiB binary and
1 MiB text sent fragmented, ping/pong, permessage-deflate negotiated (the
default offer, then one asking for no context takeover both ways and a
10-bit server window) with a compressible 256 KiB message, close 1000 and
close 4001 echoed, invalid UTF-8 in a text message closed with 1007.

chat: two WebSocket clients and a framed-TCP client (`--tcp`, TLS when
`--ca` is given) in the room: text and binary from WebSocket clients reach
both WebSocket clients with their kind kept and the TCP client as frames;
a TCP frame reaches both WebSocket clients as binary; a 1 MiB fragmented
message reaches everyone whole.
"""

import argparse
import asyncio
import json
import os
import ssl
import struct
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory

STEP = 10.0
MIB = 1024 * 1024


class CheckFailed(Exception):
    pass


def expect(cond, what):
    if not cond:
        raise CheckFailed(what)


async def within(awaitable, what):
    try:
        return await asyncio.wait_for(awaitable, STEP)
    except asyncio.TimeoutError:
        raise CheckFailed(f"timed out after {STEP} s: {what}") from None


def chunks(data, size):
    return [data[i:i + size] for i in range(0, len(data), size)]


class Runner:
    def __init__(self, args):
        self.args = args
        self.passed = []
        self.extensions = None
        self.tls = None
        if args.ca:
            self.tls = ssl.create_default_context(cafile=args.ca)

    def connect(self, **kw):
        return connect(self.args.url, ssl=self.tls, max_size=4 * MIB, open_timeout=STEP,
                       close_timeout=STEP, ping_interval=None, **kw)

    def ok(self, name):
        self.passed.append(name)

    async def echo(self):
        async with self.connect() as ws:
            self.extensions = ws.response.headers.get("Sec-WebSocket-Extensions")
            text = "héllo ✓ žluťoučký 🚀"
            await ws.send(text)
            got = await within(ws.recv(), "text echo")
            expect(got == text, f"text echo: {got!r}")
            self.ok("text")

            binary = bytes(range(256))
            await ws.send(binary)
            got = await within(ws.recv(), "binary echo")
            expect(isinstance(got, bytes) and got == binary, f"binary echo: {got[:32]!r}")
            self.ok("binary")

            big = os.urandom(MIB)
            await ws.send(chunks(big, 64 * 1024))  # 16 fragments
            got = await within(ws.recv(), "1 MiB fragmented binary echo")
            expect(isinstance(got, bytes) and got == big, "1 MiB fragmented binary echo differs")
            self.ok("binary 1 MiB in 16 fragments")

            piece = "ž🚀 ringport "
            big_text = piece * (MIB // len(piece.encode()))  # 1 MiB of UTF-8
            await ws.send(chunks(big_text, 40_000))
            got = await within(ws.recv(), "fragmented text echo")
            expect(got == big_text, "fragmented text echo differs")
            expect(len(big_text.encode()) == MIB, "1 MiB of text")
            self.ok("text 1 MiB in fragments")

            pong = await ws.ping(b"interop-ping")
            await within(pong, "pong")
            self.ok("ping/pong")

            expect(self.extensions is not None and "permessage-deflate" in self.extensions,
                   f"permessage-deflate not negotiated: {self.extensions!r}")
            compressible = ("ringport permessage-deflate " * 10_000)[: 256 * 1024]
            await ws.send(compressible)
            got = await within(ws.recv(), "compressible echo")
            expect(got == compressible, "compressible message differs")
            self.ok("permessage-deflate negotiated")

            await within(ws.close(4001, "interop bye"), "close 4001")
            expect(ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 4001,
                   f"close 4001 answered with {ws.protocol.close_rcvd}")
            self.ok("close 4001 echoed")

        offer = ClientPerMessageDeflateFactory(
            server_no_context_takeover=True, client_no_context_takeover=True,
            server_max_window_bits=10)
        async with self.connect(extensions=[offer], compression=None) as ws:
            ext = ws.response.headers.get("Sec-WebSocket-Extensions") or ""
            expect("permessage-deflate" in ext, f"no-context-takeover offer refused: {ext!r}")
            expect("server_no_context_takeover" in ext, f"server_no_context_takeover missing: {ext!r}")
            expect("server_max_window_bits=10" in ext, f"server_max_window_bits=10 missing: {ext!r}")
            for i in range(3):
                msg = f"no context takeover {i} " * 2000
                await ws.send(msg)
                got = await within(ws.recv(), "no-context-takeover echo")
                expect(got == msg, "no-context-takeover echo differs")
            await within(ws.close(1000), "close 1000")
            expect(ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1000,
                   f"close 1000 answered with {ws.protocol.close_rcvd}")
            self.ok(f"deflate with no context takeover, 10-bit window ({ext})")
            self.ok("close 1000 echoed")

        async with self.connect(compression=None) as ws:
            await ws.send(b"\xff\xfe not UTF-8", text=True)
            try:
                got = await within(ws.recv(), "close after invalid UTF-8")
                raise CheckFailed(f"invalid UTF-8 was answered with {got!r}")
            except ConnectionClosed as e:
                expect(e.rcvd is not None and e.rcvd.code == 1007,
                       f"invalid UTF-8 closed with {e.rcvd}")
            self.ok("invalid UTF-8 closed with 1007")

    async def chat(self):
        expect(self.args.tcp, "chat mode needs --tcp")
        host, _, port = self.args.tcp.rpartition(":")
        reader, writer = await within(
            asyncio.open_connection(host, int(port), ssl=self.tls,
                                    server_hostname="localhost" if self.tls else None),
            "framed-TCP connect")

        async def tcp_recv(what):
            (n,) = struct.unpack(">I", await within(reader.readexactly(4), what))
            return await within(reader.readexactly(n), what)

        async with self.connect() as a, self.connect() as b:
            self.extensions = a.response.headers.get("Sec-WebSocket-Extensions")
            text = "chat text ✓"
            await a.send(text)
            for name, ws in (("sender", a), ("other", b)):
                got = await within(ws.recv(), f"chat text at {name}")
                expect(got == text, f"chat text at {name}: {got!r}")
            got = await tcp_recv("chat text at the TCP client")
            expect(got == text.encode(), f"chat text at the TCP client: {got!r}")
            self.ok("text to both WebSocket clients as text, to TCP as a frame")

            binary = b"\x00\xffchat binary"
            await b.send(binary)
            for name, ws in (("other", a), ("sender", b)):
                got = await within(ws.recv(), f"chat binary at {name}")
                expect(isinstance(got, bytes) and got == binary, f"chat binary at {name}: {got!r}")
            got = await tcp_recv("chat binary at the TCP client")
            expect(got == binary, f"chat binary at the TCP client: {got!r}")
            self.ok("binary to both WebSocket clients as binary, to TCP as a frame")

            frame = b"\xfe\x00from tcp"
            writer.write(struct.pack(">I", len(frame)) + frame)
            await writer.drain()
            for name, ws in (("a", a), ("b", b)):
                got = await within(ws.recv(), f"TCP frame at WebSocket client {name}")
                expect(isinstance(got, bytes) and got == frame, f"TCP frame at {name}: {got!r}")
            got = await tcp_recv("TCP frame back at its sender")
            expect(got == frame, f"TCP frame back at its sender: {got!r}")
            self.ok("TCP frame to WebSocket clients as binary")

            big = os.urandom(MIB)
            await a.send(chunks(big, 100_000))
            for name, ws in (("sender", a), ("other", b)):
                got = await within(ws.recv(), f"1 MiB at {name}")
                expect(isinstance(got, bytes) and got == big, f"1 MiB differs at {name}")
            got = await tcp_recv("1 MiB at the TCP client")
            expect(got == big, "1 MiB differs at the TCP client")
            self.ok("1 MiB fragmented message to everyone whole")

            pong = await b.ping(b"chat-ping")
            await within(pong, "pong in chat mode")
            self.ok("ping/pong")
        writer.close()


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--mode", choices=["echo", "chat"], required=True)
    p.add_argument("--tcp")
    p.add_argument("--ca")
    args = p.parse_args()
    runner = Runner(args)
    try:
        await (runner.echo() if args.mode == "echo" else runner.chat())
    except Exception as e:  # every failure is reported the same way
        print(json.dumps({"passed": runner.passed, "extensions": runner.extensions}))
        print(f"ws_interop_client: {args.mode} {args.url}: FAILED after {runner.passed}: "
              f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
    print(json.dumps({"passed": runner.passed, "extensions": runner.extensions}))


if __name__ == "__main__":
    asyncio.run(main())
