"""The asyncio client: commands run on connections from a bounded pool."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

from ..resp import ClientReply
from .asyncconn import AsyncConnection
from .commands import Commands, Value
from .convert import Converter, raw
from .core import DEFAULT_CONNECT_TIMEOUT, ClientBase, Request, finish
from .pipeline import PipelineBase
from .pool import ConnectionPool
from .url import DEFAULT_HOST, DEFAULT_PORT

__all__ = ["AsyncClient", "AsyncPipeline"]


class AsyncClient(ClientBase, Commands):
    """asyncio DumbKV client; every command method returns an awaitable.

    Same settings as ``Client``, plus ``max_connections`` (the pool's bound, default 10) and
    ``pool_timeout`` (seconds to wait for a free connection, ``None``: forever). Each command
    takes a connection from the pool for its round trip, so any number of tasks may share one
    client. A connection is switched to the client's database and password before use; a
    ``SELECT``/``AUTH`` that succeeds moves the whole client. After a dropped connection the
    next command reconnects; a command whose connection broke after it was sent raises
    ``ConnectionError`` and is never resent.
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        db: int = 0,
        password: str | None = None,
        connect_timeout: float | None = DEFAULT_CONNECT_TIMEOUT,
        timeout: float | None = None,
        decode_responses: bool = False,
        max_connections: int = 10,
        pool_timeout: float | None = None,
    ) -> None:
        super().__init__(host, port, db=db, password=password, connect_timeout=connect_timeout,
                         timeout=timeout, decode_responses=decode_responses)
        #: The connection pool (``open_connections``, ``max_connections``, ``timeout``).
        self.pool = ConnectionPool(host, port, max_connections=max_connections,
                                   timeout=pool_timeout)

    async def _ready(self, conn: AsyncConnection) -> None:
        """Open a stale or new connection, then bring it to the client's db and password."""
        if conn.connected and conn.is_stale():
            conn.close()
        if not conn.connected:
            await conn.open(self.connect_timeout)
        prelude = self.prelude(conn.link)
        if prelude:
            replies = await conn.roundtrip(prelude, self.connect_timeout)
            self.check_prelude(conn.link, prelude, replies)

    async def connect(self) -> None:
        """Open (authenticate, select) one pooled connection now; ``ConnectionError``,
        ``TimeoutError`` or ``AuthError`` on failure. Idempotent."""
        async with self.pool.connection() as conn:
            await self._ready(conn)

    async def _roundtrip(self, requests: Sequence[Request]) -> list[ClientReply]:
        async with self.pool.connection() as conn:
            await self._ready(conn)
            replies = await conn.roundtrip(requests, self.timeout)
            self.observe_all(conn.link, requests, replies)
            return replies

    async def _call(self, converter: Converter, args: tuple[Value, ...]) -> Any:
        reply = (await self._roundtrip([Request(args, converter)]))[0]
        return finish(reply, converter, self.decode_responses)

    def _execute(self, converter: Converter, *args: Value) -> Any:
        return self._call(converter, args)

    async def execute_raw(self, *args: bytes | str | int) -> ClientReply:
        """Send one command; return its reply exactly as ``resp.ReplyParser`` produced it:
        an error reply is returned as ``resp.ErrorReply``, not raised. ``ConnectionError`` /
        ``TimeoutError`` on I/O failure. A successful ``SELECT``/``AUTH`` moves the client."""
        return (await self._roundtrip([Request(args, raw)]))[0]

    def pipeline(self) -> AsyncPipeline:
        """A pipeline that runs on one pooled connection (see ``AsyncPipeline``)."""
        return AsyncPipeline(self)

    async def close(self) -> None:
        """Close every idle pooled connection (one in use closes when its command ends); a
        later command opens new ones."""
        await self.pool.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()


class AsyncPipeline(PipelineBase):
    """Commands queued on an ``AsyncClient`` and sent in one write by ``await execute()``::

        async with client.pipeline() as p:
            p.set("a", 1)
            p.incr("a")
            results = await p.execute()   # [True, 2]
    """

    def __init__(self, client: AsyncClient) -> None:
        super().__init__(client.decode_responses)
        self._client = client

    async def execute(self, raise_on_error: bool = False) -> list[Any]:
        """Send the queue in one write and return one result per command, in order; a failed
        command's exception is its result (``raise_on_error=True`` raises the first one after
        every reply was read). ``ConnectionError`` if the connection breaks: nothing resent."""
        requests = self._take()
        if not requests:
            return []
        replies = await self._client._roundtrip(requests)
        return self._results(requests, replies, raise_on_error)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.reset()
