"""A bounded pool of asyncio connections, safe under many concurrent tasks.

The pool holds ``max_connections`` slots in a LIFO queue; a slot is an idle connection or
``None`` (a connection not opened yet). Taking a slot waits, up to ``timeout`` seconds, so no
more than ``max_connections`` sockets are ever open. A connection whose use ended in an
exception (broken, timed out, cancelled mid-command) is closed and its slot goes back empty.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
from collections.abc import AsyncIterator

from ..errors import TimeoutError
from .asyncconn import AsyncConnection

__all__ = ["ConnectionPool"]


class ConnectionPool:
    """At most ``max_connections`` connections to ``host:port``; waiting for a free one
    raises ``TimeoutError`` after ``timeout`` seconds (``None``: wait forever)."""

    def __init__(self, host: str, port: int, *, max_connections: int = 10,
                 timeout: float | None = None) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.host = host
        self.port = port
        self.max_connections = max_connections
        self.timeout = timeout
        self._live: set[AsyncConnection] = set()
        self._generation = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots = self._empty_slots()

    def _empty_slots(self) -> asyncio.LifoQueue[AsyncConnection | None]:
        slots: asyncio.LifoQueue[AsyncConnection | None] = asyncio.LifoQueue()
        for _ in range(self.max_connections):
            slots.put_nowait(None)
        return slots

    def _follow_loop(self) -> None:
        """A pool used from another event loop (a second ``asyncio.run``) starts afresh: the
        old loop's queue and connections cannot serve this one."""
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            return
        if self._loop is not None:
            self._generation += 1
            for conn in self._live:
                with contextlib.suppress(RuntimeError):  # its loop is closed
                    conn.close()
            self._live.clear()
            self._slots = self._empty_slots()
        self._loop = loop

    @property
    def open_connections(self) -> int:
        """How many connections exist now (idle or in use, open or about to open)."""
        return len(self._live)

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[AsyncConnection]:
        """Hold one connection for the block (possibly not yet connected)."""
        self._follow_loop()
        slots = self._slots
        try:
            async with asyncio.timeout(self.timeout):
                conn = await slots.get()
        except builtins.TimeoutError:
            raise TimeoutError(f"no free connection within {self.timeout:g}s "
                               f"(max_connections={self.max_connections})") from None
        if conn is None:
            conn = AsyncConnection(self.host, self.port)
            self._live.add(conn)
        generation = self._generation
        reusable = False
        try:
            yield conn
            reusable = True
        finally:
            if conn not in self._live:  # dropped when the pool moved to another event loop
                conn.close()
            elif not reusable or generation != self._generation or not conn.connected:
                conn.close()
                self._live.discard(conn)
                self._slots.put_nowait(None)
            else:
                self._slots.put_nowait(conn)

    async def close(self) -> None:
        """Close every idle connection; one in use is closed when it is given back."""
        self._follow_loop()
        self._generation += 1
        closed: list[AsyncConnection] = []
        while True:
            try:
                conn = self._slots.get_nowait()
            except asyncio.QueueEmpty:
                break
            if conn is not None:
                conn.close()
                self._live.discard(conn)
                closed.append(conn)
        for _ in range(self.max_connections - len(self._live)):
            self._slots.put_nowait(None)
        for conn in closed:
            await conn.wait_closed()
