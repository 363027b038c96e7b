"""One asyncio connection to the server and what it has been told."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import socket
from collections.abc import Sequence

from ..errors import DumbKVError
from ..resp import ClientReply
from .core import (
    SEND_AT_ONCE,
    LinkState,
    Request,
    connect_failed,
    link_failed,
    parse_replies,
    take_replies,
)
from .idle import peer_spoke

__all__ = ["AsyncConnection"]


class AsyncConnection:
    """A stream pair to the server and its ``LinkState``; not shared between tasks."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.link = LinkState()
        self._closing: asyncio.StreamWriter | None = None

    @property
    def connected(self) -> bool:
        """Whether a socket is open (it may still be stale: see ``is_stale``)."""
        return self.writer is not None

    async def open(self, timeout: float | None) -> None:
        """Connect; ``ConnectionError`` / ``TimeoutError`` on failure."""
        try:
            async with asyncio.timeout(timeout):
                self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        except (OSError, UnicodeError, OverflowError) as exc:
            raise connect_failed(self.host, self.port, exc, timeout) from None
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.link = LinkState()

    def is_stale(self) -> bool:
        """Whether an idle connection is unusable: the server closed or reset it, or sent
        bytes nobody asked for. Checked before sending, so nothing is lost by reconnecting."""
        reader, writer = self.reader, self.writer
        if reader is None or writer is None or self.link.quit:
            return True
        sock = writer.get_extra_info("socket")
        return (writer.is_closing() or reader.at_eof() or reader.exception() is not None
                or bool(getattr(reader, "_buffer", b"")) or sock is None or peer_spoke(sock))

    async def roundtrip(self, requests: Sequence[Request],
                        timeout: float | None) -> list[ClientReply]:
        """Send every request in one write, then read one reply each, within ``timeout``."""
        assert self.reader is not None and self.writer is not None
        link = self.link
        try:
            async with asyncio.timeout(timeout):
                payload = b"".join(request.encode() for request in requests)
                self.writer.write(payload)
                if len(payload) <= SEND_AT_ONCE:
                    await self.writer.drain()
                    await self._read_replies(len(requests))
                else:  # flushed while its replies are read (see SEND_AT_ONCE)
                    drained = asyncio.ensure_future(self.writer.drain())
                    try:
                        await self._read_replies(len(requests))
                        await drained
                    finally:
                        drained.cancel()
                        drained.add_done_callback(_retrieve)
        except DumbKVError:
            raise
        except OSError as exc:
            raise link_failed(self.host, self.port, exc, timeout) from None
        return take_replies(link, len(requests))

    async def _read_replies(self, count: int) -> None:
        assert self.reader is not None
        while len(self.link.pending) < count:
            parse_replies(self.link, await self.reader.read(65536))

    def close(self) -> None:
        """Close the socket (idempotent); the transport finishes closing in the loop."""
        writer, self.writer, self.reader = self.writer, None, None
        if writer is not None:
            writer.close()
            self._closing = writer

    async def wait_closed(self) -> None:
        """Wait until the transport closed after ``close()`` (errors ignored)."""
        writer, self._closing = self._closing, None
        if writer is not None:
            with contextlib.suppress(OSError, builtins.TimeoutError):
                async with asyncio.timeout(5):
                    await writer.wait_closed()


def _retrieve(task: asyncio.Future[None]) -> None:
    """Consume a finished drain's outcome (its error, if any, is the read's error too)."""
    if not task.cancelled():
        task.exception()
