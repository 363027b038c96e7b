"""Minimal in-memory RESP2 server on uvloop: the performance ceiling DumbKV is compared with.

Supports PING, SET, GET, INCR and MSET over RESP arrays (and inline lines, e.g. ``PING`` typed
in netcat); everything else, e.g. ``CONFIG GET``, gets an ``-ERR`` reply. Pipelined input is
handled: every complete command in a read is answered, in order, with one write; a partial
command waits for more bytes.

Usage: python bench/inmem_server.py [--host 127.0.0.1] --port N   (N=0 picks a free port)
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import cast

import uvloop

Command = list[bytes]


class ProtocolError(Exception):
    pass


def parse(buf: bytearray, pos: int) -> tuple[Command, int] | None:
    """Parse one command at buf[pos:]; return (argv, next_pos), or None if incomplete."""
    eol = buf.find(b"\n", pos)
    if eol < 0:
        return None
    if buf[pos] != ord("*"):  # inline command: whitespace-separated words on one line
        return bytes(buf[pos:eol]).split(), eol + 1
    count, pos = int(buf[pos + 1 : eol]), eol + 1
    argv: Command = []
    for _ in range(count):
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        if buf[pos] != ord("$"):
            raise ProtocolError("expected '$'")
        length = int(buf[pos + 1 : eol])
        if length < 0:
            raise ProtocolError("negative bulk length")
        start = eol + 2
        end = start + length
        if len(buf) < end + 2:
            return None
        argv.append(bytes(buf[start:end]))
        pos = end + 2
    return argv, pos


def bulk(value: bytes | None) -> bytes:
    return b"$-1\r\n" if value is None else b"$%d\r\n%s\r\n" % (len(value), value)


def execute(store: dict[bytes, bytes], argv: Command) -> bytes:
    name, n = argv[0].upper(), len(argv)
    if name == b"GET" and n == 2:
        return bulk(store.get(argv[1]))
    if name == b"SET" and n == 3:
        store[argv[1]] = argv[2]
        return b"+OK\r\n"
    if name == b"PING" and n <= 2:
        return bulk(argv[1]) if n == 2 else b"+PONG\r\n"
    if name == b"INCR" and n == 2:
        try:
            value = int(store.get(argv[1], b"0")) + 1
        except ValueError:
            return b"-ERR value is not an integer or out of range\r\n"
        store[argv[1]] = b"%d" % value
        return b":%d\r\n" % value
    if name == b"MSET" and n >= 3 and n % 2 == 1:
        store.update(zip(argv[1::2], argv[2::2], strict=True))
        return b"+OK\r\n"
    return b"-ERR unknown command or wrong number of arguments\r\n"


class RespProtocol(asyncio.Protocol):
    def __init__(self, store: dict[bytes, bytes]) -> None:
        self.store = store
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buf += data
        replies: list[bytes] = []
        pos = 0
        try:
            while pos < len(self.buf) and (parsed := parse(self.buf, pos)) is not None:
                argv, pos = parsed
                if argv:
                    replies.append(execute(self.store, argv))
        except (ProtocolError, ValueError):
            replies.append(b"-ERR Protocol error\r\n")
            self.transport.write(b"".join(replies))
            self.transport.close()
            return
        del self.buf[:pos]
        if replies:
            self.transport.write(b"".join(replies))


async def serve(host: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    store: dict[bytes, bytes] = {}
    server = await loop.create_server(lambda: RespProtocol(store), host, port)
    bound_port = server.sockets[0].getsockname()[1]
    print(f"listening on {host}:{bound_port}", flush=True)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="Minimal in-memory RESP2 server (uvloop).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvloop.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
