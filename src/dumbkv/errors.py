"""Every error DumbKV answers with, and how each one is classified.

The tree::

    DumbKVError                 root of everything DumbKV raises
    ├── ClientError             the client's fault ("4xx"); status ``client_error``
    │   ├── ProtocolError       malformed request bytes; the connection is closed after the reply
    │   ├── CommandError        unknown command, wrong arity, syntax, not an integer, ...
    │   └── AuthError           ``-NOAUTH`` / ``-WRONGPASS``
    ├── ServerError             DumbKV's fault ("5xx"); status ``server_error``;
    │   │                       wire prefix ``-SERVERERR``
    │   ├── StoreError          the backend failed or timed out
    │   └── IntegrityError      a stored value failed authentication (tampered or swapped row)
    └── ConnectionError         client side only: no connection, or it broke (also a builtin
        │                       ``ConnectionError``, so ``except OSError`` catches it)
        ├── TimeoutError        no connection or no reply in time (also a builtin
        │                       ``TimeoutError``)
        └── InvalidReplyError   the server's bytes could not be parsed as a reply

The client (``dumbkv.client``) raises an error reply as the class its prefix maps to
(``dumbkv.client.errormap``); the last three are raised by the client alone, never sent.

A reply's wire form is ``-<PREFIX> <message>``. ``status`` is the one place that decides how a
reply counts for the SLOs: ``ok`` (no error), ``client_error`` (excluded from the error-rate
SLO) or ``server_error``. Messages never contain a key or a value.
"""

from __future__ import annotations

import builtins
from typing import ClassVar, Literal

Status = Literal["ok", "client_error", "server_error"]

__all__ = [
    "AuthError",
    "ClientError",
    "CommandError",
    "ConnectionError",
    "DumbKVError",
    "IntegrityError",
    "InvalidReplyError",
    "ProtocolError",
    "ServerError",
    "Status",
    "StoreError",
    "TimeoutError",
]


class DumbKVError(Exception):
    """Root of every error DumbKV raises."""

    prefix: ClassVar[str] = "ERR"
    status: ClassVar[Status] = "server_error"
    #: Client side: the command the client sent by itself (``AUTH`` or ``SELECT`` on a new
    #: connection) when this error came back as its reply, else None.
    command: str | None = None

    def __init__(self, message: str, *, prefix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if prefix is not None:
            self.prefix = prefix  # type: ignore[misc]

    def wire(self) -> bytes:
        """The error as a RESP error line, e.g. ``b"-ERR syntax error\\r\\n"``."""
        text = f"-{self.prefix} {self.message}".replace("\r", " ").replace("\n", " ")
        return text.encode("utf-8", "replace") + b"\r\n"


class ClientError(DumbKVError):
    """The request was wrong; retrying the same request gives the same answer."""

    status: ClassVar[Status] = "client_error"


class ProtocolError(ClientError):
    """The bytes were not a valid request. The server closes the connection after replying."""

    def __init__(self, message: str) -> None:
        super().__init__(f"Protocol error: {message}")


class CommandError(ClientError):
    """A well-formed request that cannot be executed as given."""


class AuthError(ClientError):
    """Authentication is required or failed (``-NOAUTH`` / ``-WRONGPASS``)."""


class ServerError(DumbKVError):
    """DumbKV failed to serve a valid request. Counted against the error-rate SLO."""

    prefix: ClassVar[str] = "SERVERERR"
    status: ClassVar[Status] = "server_error"


class StoreError(ServerError):
    """The storage backend failed or did not answer in time."""


class IntegrityError(ServerError):
    """A stored value could not be authenticated: the row was tampered with or swapped."""


class ConnectionError(DumbKVError, builtins.ConnectionError):
    """Client side: the connection could not be made, or it broke. When it broke after a
    command was sent, that command's outcome is unknown; the client never resends it.
    ``reason`` is the failure alone in words (``Connection refused``), without the address."""

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason or message


class TimeoutError(ConnectionError, builtins.TimeoutError):
    """Client side: no connection within the connect timeout, no reply within the command
    timeout, or no free pooled connection in time. A connection that timed out is closed."""


class InvalidReplyError(ConnectionError):
    """Client side: the server sent bytes that are not a RESP reply; the connection is closed."""


SYNTAX = "syntax error"
NOT_INTEGER = "value is not an integer or out of range"
OVERFLOW = "increment or decrement would overflow"
