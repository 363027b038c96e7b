"""The RESP server: one ``Connection`` (an ``asyncio.Protocol``) per client, and ``Server``.

A connection feeds bytes to the parser and dispatches each command at once. Commands that need
the store become operations queued in arrival order, so a pipeline reaches the store whole and
is batched with other clients' commands. Replies leave in command order: each command takes a
slot in ``_pending``, and slots are written from the head as soon as they are filled.

Unbounded by design: no limit on line or value size, on clients or on idle time. The place for
opt-in guards is ``Connection.data_received``, before the parser, and ``connection_made``.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import traceback
from collections import deque
from typing import cast

from .commands import dispatch, lookup
from .errors import DumbKVError, ServerError
from .resp import Parser, Reply, encode
from .session import Disconnect, ServerState, Session
from .store import NOT_NOW, DbOp, KeyOp

__all__ = ["Connection", "Server"]

log = logging.getLogger("dumbkv.server")

#: Flow control, not a limit: a connection with this many commands still waiting for the store
#: is not read from until they are down to PIPELINE_LOW. Nothing is refused; the client's
#: pipeline just waits in its socket, and the server's memory and latency stay bounded per
#: connection however deep the pipeline.
PIPELINE_HIGH = 8192
PIPELINE_LOW = 1024


class _Slot:
    """A reply that the store has not produced yet; the store calls it with the reply."""

    __slots__ = ("command", "conn", "data", "resp3", "started")

    def __init__(self, conn: Connection, command: str, started: float, resp3: bool) -> None:
        self.conn = conn
        self.command = command
        self.started = started
        # The protocol in force when the command arrived (a later HELLO must not change it).
        self.resp3 = resp3
        self.data: bytes | None = None

    def __call__(self, reply: Reply) -> None:
        self.conn._fill(self, reply)


class Connection(asyncio.Protocol):
    def __init__(self, state: ServerState, server: Server) -> None:
        self.state = state
        self.server = server
        self.session = Session(state)
        self.parser = Parser()
        self.transport: asyncio.Transport | None = None
        self._pending: deque[_Slot | bytes] = deque()
        self._out: list[bytes] = []
        self._close_after_flush = False
        #: Why reading is paused: "writing" (client not reading its replies), "pipeline"
        #: (too many of its commands still waiting for the store), "shutdown".
        self._paused_by: set[str] = set()
        self._flush_scheduled = False

    # ------------------------------------------------------------------ asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.server.connections.add(self)
        self.state.stats.connection_opened()

    def eof_received(self) -> bool:
        """The client half-closed (``nc -N``, ``printf ... | nc``): answer everything it sent,
        then close. Returning True keeps our sending side open until then."""
        self._close_after_flush = True
        self._flush()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.state.stats.connection_closed()
        self.transport = None

    # ------------------------------------------------------------------ flow control
    def _pause(self, reason: str) -> None:
        if not self._paused_by and self.transport is not None:
            self.transport.pause_reading()
        self._paused_by.add(reason)

    def _resume(self, reason: str) -> None:
        self._paused_by.discard(reason)
        if not self._paused_by and self.transport is not None:
            self.transport.resume_reading()

    def pause_writing(self) -> None:
        # The client reads slower than it sends: stop reading until it catches up.
        self._pause("writing")

    def resume_writing(self) -> None:
        self._resume("writing")

    def stop_reading(self) -> None:
        """Take no more commands (shutdown); replies to those already read still go out."""
        self._pause("shutdown")

    def data_received(self, data: bytes) -> None:
        self.state.stats.received(len(data))
        if self._close_after_flush:
            return
        for argv in self.parser.feed(data):
            self._execute(argv)
            if self.session.closing:
                self._close_after_flush = True
                break
        else:
            if self.parser.error is not None:
                self.state.stats.protocol_error()
                self._reply_now("protocol", self.parser.error, time.perf_counter())
                self._close_after_flush = True
        pending = self._pending
        if len(pending) >= PIPELINE_HIGH:
            self._pause("pipeline")
        if self._out or self._close_after_flush:
            self._flush()

    # ------------------------------------------------------------------ commands
    def _execute(self, argv: list[bytes]) -> None:
        started = time.perf_counter()
        name = "unknown"
        try:
            cmd = lookup(argv)
            name = cmd.name
            result = dispatch(self.session, cmd, argv)
        except DumbKVError as exc:
            result = exc
        except Disconnect:
            self.session.closing = True  # nothing after it is read; no reply of its own
            return
        except Exception as exc:
            result = _internal_error(name, exc)
        if isinstance(result, (KeyOp, DbOp)):
            if isinstance(result, KeyOp) and not result.writes:
                reply = self.state.store.read_now(result)
                if reply is not NOT_NOW:
                    self._reply_now(name, reply, started)  # type: ignore[arg-type]
                    return
            slot = _Slot(self, name, started, self.session.resp3)
            self._pending.append(slot)
            self.state.store.submit(result, slot)
        else:
            self._reply_now(name, result, started)

    def _reply_now(self, name: str, reply: Reply, started: float) -> None:
        data = self._encode(name, reply, started, self.session.resp3)
        if self._pending:
            self._pending.append(data)
        else:
            self._out.append(data)

    def _encode(self, name: str, reply: Reply, started: float, resp3: bool) -> bytes:
        status = reply.status if isinstance(reply, DumbKVError) else "ok"
        self.state.stats.record(name, status, time.perf_counter() - started)
        return encode(reply, resp3)

    def _fill(self, slot: _Slot, reply: Reply) -> None:
        slot.data = self._encode(slot.command, reply, slot.started, slot.resp3)
        pending = self._pending
        if pending[-1] is slot:
            self._flush()  # the newest reply is ready, so every one before it is too
        elif not self._flush_scheduled and pending[0] is slot:
            # More of this connection's replies may come from the same batch: write them with
            # one call once the batch is through.
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_scheduled = False
        out = self._out
        pending = self._pending
        while pending:
            head = pending[0]
            if isinstance(head, bytes):
                out.append(head)
            elif head.data is not None:
                out.append(head.data)
            else:
                break
            pending.popleft()
        if len(pending) <= PIPELINE_LOW and "pipeline" in self._paused_by:
            self._resume("pipeline")
        if out and self.transport is not None:
            data = b"".join(out) if len(out) > 1 else out[0]
            self.state.stats.sent(len(data))
            self.transport.write(data)
        out.clear()
        if self._close_after_flush and not pending and self.transport is not None:
            self.transport.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def _internal_error(name: str, exc: Exception) -> ServerError:
    # Frames only: the exception's message could quote a key or a value.
    log.error("internal error in %s: %s\n%s", name, type(exc).__name__,
              "".join(traceback.format_tb(exc.__traceback__)))
    return ServerError("internal error")


class Server:
    """The listening socket and the connections it accepted."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.connections: set[Connection] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        config = self.state.config
        self._server = await loop.create_server(
            lambda: Connection(self.state, self), config.host, config.port, reuse_address=True
        )
        self.state.port = self._sockets()[0].getsockname()[1]

    @property
    def addresses(self) -> list[str]:
        if self._server is None:
            return []
        return [f"{s.getsockname()[0]}:{s.getsockname()[1]}" for s in self._sockets()]

    def _sockets(self) -> list[socket.socket]:
        # uvloop's Server.sockets is a list, typeshed says tuple: read it untyped, so that the
        # compiled module (setup.py) does not check it against the annotation.
        return list(getattr(self._server, "sockets", ()))

    def stop_accepting(self) -> None:
        """Close the listener and stop reading from open connections."""
        if self._server is not None:
            self._server.close()
        for conn in self.connections:
            conn.stop_reading()

    async def drain(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the commands already read; then answer the rest with a
        server error. True if everything finished in time."""
        store = self.state.store
        try:
            async with asyncio.timeout(timeout):
                await store.drain()
            return True
        except TimeoutError:
            store.abort("server is shutting down")
            # The batches already staged: their commits are known within the store timeout.
            await store.settle(store.timeout, "server is shutting down")
            return False

    def close_connections(self) -> None:
        for conn in list(self.connections):
            conn.close()

    async def wait_closed(self) -> None:
        if self._server is not None:
            await self._server.wait_closed()
