"""The RESP2 client crosscheck talks to each target with."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

from ..errors import ProtocolError
from ..resp import ReplyParser, encode_command
from .compare import NoReply, is_ok

__all__ = ["Client"]


class Client:
    """One RESP2 connection to a target, one request at a time. A failed request (dropped
    connection, timeout, unreadable reply) gives ``NoReply``; the next request reconnects and
    re-selects the database the connection was in."""

    def __init__(self, host: str, port: int, timeout: float) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.db = 0
        self.reconnects = 0
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._parser = ReplyParser()
        self._replies: deque[object] = deque()
        self._connected_once = False

    async def call(self, argv: tuple[bytes, ...]) -> object:
        try:
            async with asyncio.timeout(self.timeout):
                if self._writer is None:
                    await self._connect()
                return await self._roundtrip(encode_command(argv))
        except TimeoutError:
            self._drop()
            return NoReply(f"no reply within {self.timeout:g}s")
        except (OSError, ProtocolError, ValueError) as exc:
            self._drop()
            return NoReply(str(exc) or type(exc).__name__)

    async def _connect(self) -> None:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        self._parser = ReplyParser()
        self._replies.clear()
        if self._connected_once:
            self.reconnects += 1
        self._connected_once = True
        if self.db:
            reply = await self._roundtrip(encode_command([b"SELECT", b"%d" % self.db]))
            if not is_ok(reply):
                raise ConnectionError(f"reconnected, but SELECT {self.db} failed: {reply}")

    async def _roundtrip(self, request: bytes) -> object:
        assert self._reader is not None and self._writer is not None
        self._writer.write(request)
        await self._writer.drain()
        while not self._replies:
            data = await self._reader.read(65536)
            if not data:
                raise ConnectionError("the server closed the connection")
            self._replies.extend(self._parser.feed(data))
        return self._replies.popleft()

    def _drop(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(self.timeout):
                    await writer.wait_closed()
