"""The SQLite store's side of the writer (``writer.py``): a child process, or, for a private
in-memory database that no other process can open, the same ``Writer`` on aiosqlite's thread.

Both send write messages in order and hand every reply to ``on_reply`` on the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import sqlite3
import sys
import traceback
from collections.abc import Awaitable, Callable
from typing import Any

from ..errors import StoreError
from .writer import FrameReader, Writer, frame

__all__ = ["ProcessLink", "ThreadLink", "WriterLink"]

log = logging.getLogger("dumbkv.store")

Reply = Callable[[Any], None]


class WriterLink:
    """Where write messages go. ``on_reply`` gets each reply; ``on_lost`` is called if the
    writer stops by itself (it no longer answers anything sent before)."""

    def __init__(self, on_reply: Reply, on_lost: Callable[[], None]) -> None:
        self.on_reply = on_reply
        self.on_lost = on_lost

    async def start(self) -> None:
        raise NotImplementedError

    def send(self, message: Any) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class ProcessLink(WriterLink, asyncio.SubprocessProtocol):
    """``python -m dumbkv.store.writer`` with pipes on its stdin and stdout."""

    def __init__(self, on_reply: Reply, on_lost: Callable[[], None], path: str,
                 synchronous: str, busy_ms: int, start_timeout: float,
                 identity: tuple[int, int] | None) -> None:
        WriterLink.__init__(self, on_reply, on_lost)
        # The (device, inode) the server opened: the writer refuses to commit to another file.
        file = "-" if identity is None else f"{identity[0]}:{identity[1]}"
        self.argv = [sys.executable, "-m", "dumbkv.store.writer", path, synchronous,
                     str(busy_ms), file]
        self.start_timeout = start_timeout
        self._transport: asyncio.SubprocessTransport | None = None
        self._stdin: asyncio.WriteTransport | None = None
        self._frames = FrameReader()
        self._ready: asyncio.Future[None] | None = None
        self._exited: asyncio.Future[None] | None = None
        self._closing = False

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self._exited = loop.create_future()
        self._frames = FrameReader()
        transport, _ = await loop.subprocess_exec(
            lambda: self, *self.argv, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=None,
        )
        self._transport = transport
        self._stdin = transport.get_pipe_transport(0)  # type: ignore[assignment]
        try:
            async with asyncio.timeout(self.start_timeout):
                await asyncio.wait([self._ready, self._exited],
                                   return_when=asyncio.FIRST_COMPLETED)
            if not self._ready.done():
                raise StoreError("sqlite writer process did not start")
        except BaseException:  # a timeout, or the store closing meanwhile: leave nothing
            self._closing = True
            transport.kill()
            transport.close()
            self._transport = None
            raise

    def send(self, message: Any) -> None:
        if self._stdin is None or self._stdin.is_closing():
            raise StoreError("sqlite writer process is not running")
        self._stdin.write(frame(message))

    # asyncio.SubprocessProtocol
    @property
    def running(self) -> bool:
        """Started, and neither its input nor its output has closed."""
        return self._stdin is not None and not self._stdin.is_closing()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        for message in self._frames.feed(data):
            if message[0] == "ready":
                if self._ready is not None and not self._ready.done():
                    self._ready.set_result(None)
                continue
            try:
                self.on_reply(message)
            except Exception as exc:  # a bug: the replies after it must still be handled
                log.error("sqlite writer reply not handled: %s\n%s", type(exc).__name__,
                          "".join(traceback.format_tb(exc.__traceback__)))

    def pipe_connection_lost(self, fd: int, exc: Exception | None) -> None:
        # Its stdout closed: every reply it wrote has been read, so what is still unanswered
        # was never committed (or its outcome cannot be known).
        if fd == 1 and not self._closing and self._ready is not None and self._ready.done():
            self._stdin = None
            log.error("sqlite writer process exited (its output closed)")
            self.on_lost()

    def process_exited(self) -> None:
        if self._exited is not None and not self._exited.done():
            self._exited.set_result(None)
        self._stdin = None

    async def close(self) -> None:
        """Close its input (it ends after the transaction in progress) and wait for it."""
        self._closing = True
        if self._transport is None:
            return
        stdin = self._transport.get_pipe_transport(0)
        if stdin is not None:
            stdin.close()
        if self._exited is not None:
            try:
                async with asyncio.timeout(self.start_timeout):
                    await asyncio.shield(self._exited)
            except TimeoutError:
                self._transport.kill()
                await asyncio.shield(self._exited)
        self._transport.close()
        self._transport = None


class ThreadLink(WriterLink):
    """The writer on a worker thread, for ``:memory:`` (one connection, shared with reads)."""

    def __init__(self, on_reply: Reply, on_lost: Callable[[], None],
                 run: Callable[[Callable[[sqlite3.Connection], Any]], Awaitable[Any]]) -> None:
        super().__init__(on_reply, on_lost)
        self._run = run
        self._writer: Writer | None = None
        self._pending: list[Any] = []
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        def make(conn: sqlite3.Connection) -> Writer:
            return Writer(conn, ":memory:")

        self._writer = await self._run(make)

    def send(self, message: Any) -> None:
        self._pending.append(message)
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._drain())

    async def _drain(self) -> None:
        while self._pending and self._writer is not None:
            messages, self._pending = self._pending, []
            try:
                replies: list[Any] = await self._run(
                    functools.partial(_apply, self._writer, messages))
            except Exception as exc:  # the connection itself failed: nothing was committed
                # As after a failed commit (a job that carried only the store's reset: none).
                replies = self._writer.failure([m for m in messages if m[0] == "w"], exc)
            for reply in replies:
                self.on_reply(reply)

    async def close(self) -> None:
        if self._task is not None:
            await self._task
        self._writer = None


def _apply(writer: Writer, messages: list[Any], conn: sqlite3.Connection) -> list[Any]:
    return writer.apply(messages)
