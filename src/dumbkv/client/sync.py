"""The blocking client: one socket, reconnected on demand."""

from __future__ import annotations

import builtins
import selectors
import socket
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

from ..errors import ConnectionError, DumbKVError
from ..resp import ClientReply
from .commands import Commands, Value
from .convert import Converter, raw
from .core import (
    SEND_AT_ONCE,
    ClientBase,
    LinkState,
    Request,
    connect_failed,
    finish,
    link_failed,
    parse_replies,
    take_replies,
)
from .idle import peer_spoke
from .pipeline import PipelineBase

__all__ = ["Client", "Pipeline"]


class Connection:
    """One socket to the server and what it has been told (``LinkState``)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.sock: socket.socket | None = None
        self.link = LinkState()

    def open(self, timeout: float | None) -> None:
        """Connect; ``ConnectionError`` / ``TimeoutError`` on failure."""
        try:
            self.sock = socket.create_connection((self.host, self.port), timeout=timeout)
        except (OSError, UnicodeError, OverflowError) as exc:
            raise connect_failed(self.host, self.port, exc, timeout) from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.link = LinkState()

    def is_stale(self) -> bool:
        """Whether an idle connection is unusable: the server closed or reset it, or sent
        bytes nobody asked for. Checked before sending, so nothing is lost by reconnecting."""
        return self.sock is None or self.link.quit or peer_spoke(self.sock)

    def roundtrip(self, requests: Sequence[Request], timeout: float | None) -> list[ClientReply]:
        """Send every request in one write, then read one reply each, within ``timeout``."""
        sock = self.sock  # close() from another thread makes the next call fail: OSError
        if sock is None:  # closed by another thread since this one connected
            raise ConnectionError("the connection was closed", reason="closed")
        deadline = None if timeout is None else time.monotonic() + timeout
        link = self.link
        payload = b"".join(request.encode() for request in requests)
        try:
            sock.settimeout(timeout)
            if len(payload) <= SEND_AT_ONCE:
                sock.sendall(payload)
            else:
                self._send_while_reading(sock, payload, deadline)
            while len(link.pending) < len(requests):
                if deadline is not None:
                    sock.settimeout(max(deadline - time.monotonic(), 1e-6))
                data = sock.recv(65536)
                parse_replies(link, data)
        except DumbKVError:
            raise
        except OSError as exc:
            raise link_failed(self.host, self.port, exc, timeout) from None
        return take_replies(link, len(requests))

    def _send_while_reading(self, sock: socket.socket, payload: bytes,
                            deadline: float | None) -> None:
        view = memoryview(payload)
        sent = 0
        with selectors.DefaultSelector() as selector:
            selector.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE)
            while sent < len(view):
                left = None if deadline is None else deadline - time.monotonic()
                events = selector.select(left) if left is None or left > 0 else []
                if not events:
                    raise builtins.TimeoutError
                mask = events[0][1]
                if mask & selectors.EVENT_READ:
                    parse_replies(self.link, sock.recv(65536))
                if mask & selectors.EVENT_WRITE:
                    sent += sock.send(view[sent : sent + SEND_AT_ONCE])

    def close(self) -> None:
        """Close the socket (idempotent)."""
        sock, self.sock = self.sock, None
        if sock is not None:
            sock.close()


class Client(ClientBase, Commands):
    """Blocking DumbKV client over one connection.

    ``Client(host="127.0.0.1", port=7379, *, db=0, password=None, connect_timeout=5.0,
    timeout=None, decode_responses=False)`` or ``Client.from_url("dumbkv://...")``. It
    connects on first use (or ``connect()``), and after a dropped connection reconnects on the
    next command, re-sending ``AUTH``, ``HELLO 3`` (after one) and ``SELECT``. A command whose
    connection broke after it was sent raises ``ConnectionError`` and is never resent.
    Thread-safe: threads sharing a client take turns, one command (or pipeline) at a time on its
    one connection.
    """

    _conn: Connection | None = None

    def _connection(self) -> Connection:
        if self._conn is None or (self._conn.host, self._conn.port) != (self.host, self.port):
            self.close()
            self._conn = Connection(self.host, self.port)
        return self._conn

    def connect(self) -> None:
        """Connect (and authenticate, select) now unless connected; ``ConnectionError``,
        ``TimeoutError`` or ``AuthError`` on failure. Idempotent."""
        with self._lock:
            conn = self._connection()
            if conn.sock is not None and conn.is_stale():
                conn.close()
            if conn.sock is None:
                conn.open(self.connect_timeout)
            prelude = self.prelude(conn.link)
            if prelude:
                try:
                    replies = conn.roundtrip(prelude, self.connect_timeout)
                    self.check_prelude(conn.link, prelude, replies)
                except BaseException:
                    conn.close()
                    raise

    def _roundtrip(self, requests: Sequence[Request]) -> list[ClientReply]:
        with self._lock:
            self.connect()
            conn = self._connection()
            try:
                replies = conn.roundtrip(requests, self.timeout)
            except BaseException:
                conn.close()
                raise
            self.observe_all(conn.link, requests, replies)
            return replies

    def _execute(self, converter: Converter, *args: Value) -> Any:
        reply = self._roundtrip([Request(args, converter)])[0]
        return finish(reply, converter, self.decode_responses)

    def execute_raw(self, *args: bytes | str | int) -> ClientReply:
        """Send one command; return its reply exactly as ``resp.ReplyParser`` produced it:
        an error reply is returned as ``resp.ErrorReply``, not raised. ``ConnectionError`` /
        ``TimeoutError`` on I/O failure. A successful ``SELECT``/``AUTH`` moves the client."""
        return self._roundtrip([Request(args, raw)])[0]

    def pipeline(self) -> Pipeline:
        """A pipeline on this client's connection (see ``Pipeline``)."""
        return Pipeline(self)

    def close(self) -> None:
        """Close the connection; a later command opens a new one."""
        if self._conn is not None:
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class Pipeline(PipelineBase):
    """Commands queued on a ``Client`` and sent in one write by ``execute()``::

        with client.pipeline() as p:
            p.set("a", 1)
            p.incr("a")
            results = p.execute()   # [True, 2]
    """

    def __init__(self, client: Client) -> None:
        super().__init__(client.decode_responses)
        self._client = client

    def execute(self, raise_on_error: bool = False) -> list[Any]:
        """Send the queue in one write and return one result per command, in order; a failed
        command's exception is its result (``raise_on_error=True`` raises the first one after
        every reply was read). ``ConnectionError`` if the connection breaks: nothing resent."""
        requests = self._take()
        if not requests:
            return []
        replies = self._client._roundtrip(requests)
        return self._results(requests, replies, raise_on_error)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.reset()
