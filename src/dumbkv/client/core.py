"""What the sync and asyncio clients share apart from socket I/O: settings, the state of one
connection, what to send after (re)connecting, what a reply changes, and finishing a reply."""

from __future__ import annotations

import builtins
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from ..errors import (
    ConnectionError,
    DumbKVError,
    InvalidReplyError,
    ProtocolError,
    TimeoutError,
)
from ..resp import ClientReply, ErrorReply, ReplyParser, encode_command
from .convert import Converter, ok, raw
from .errormap import error_from_reply
from .url import DEFAULT_HOST, DEFAULT_PORT, parse_url

__all__ = ["DEFAULT_CONNECT_TIMEOUT", "SEND_AT_ONCE", "ClientBase", "LinkState", "Request",
           "connect_failed", "finish", "finish_in_place", "first_error", "link_failed", "os_reason",
           "parse_replies", "take_replies"]

DEFAULT_CONNECT_TIMEOUT = 5.0
#: Requests up to this size are written in one go before their replies are read. A larger
#: pipeline is written while its replies are read: the server stops reading a client that
#: does not read its replies, so writing it all first could wait for ever.
SEND_AT_ONCE = 1 << 16
Arg = bytes | str | int | float


@dataclass
class LinkState:
    """What one connection has been told: its database and password, and its reply parser."""

    db: int = 0
    password: str | None = None
    username: str | None = None
    #: The protocol it speaks: 2, or 3 after ``HELLO 3``.
    protocol: int = 2
    #: It answered QUIT: the server closes it, so the next command needs a new one.
    quit: bool = False
    parser: ReplyParser = field(default_factory=ReplyParser)
    pending: list[ClientReply] = field(default_factory=list)


@dataclass(frozen=True)
class Request:
    """One command: its arguments and the converter of its reply."""

    args: tuple[Arg, ...]
    converter: Converter

    def __post_init__(self) -> None:
        if not self.args:  # an empty array gets no reply at all: it would wait for ever
            raise ValueError("a command needs at least its name")

    def encode(self) -> bytes:
        return encode_command(self.args)


def parse_replies(link: LinkState, data: bytes) -> None:
    """Feed received bytes to the connection's parser; unparseable bytes raise
    ``InvalidReplyError`` (the connection is then unusable), no bytes (the server closed the
    connection) ``ConnectionError``."""
    if not data:
        raise ConnectionError("the server closed the connection")
    try:
        link.pending.extend(link.parser.feed(data))
    except (ProtocolError, ValueError, IndexError) as exc:
        raise InvalidReplyError(f"unreadable reply from the server: {exc}") from None


def take_replies(link: LinkState, count: int) -> list[ClientReply]:
    """The first ``count`` replies received, removed from the connection's queue."""
    replies = link.pending[:count]
    del link.pending[:count]
    return replies


def os_reason(exc: OSError) -> str:
    """A socket error in words, e.g. ``Connection refused`` (asyncio's own message for a
    failed connect is replaced by the errno's text)."""
    return os.strerror(exc.errno) if exc.errno else str(exc) or type(exc).__name__


def connect_failed(host: str, port: int, exc: Exception,
                   timeout: float | None) -> ConnectionError:
    """The error for a connection that could not be made (``TimeoutError`` when it timed
    out), the same for the sync and the asyncio client."""
    if not isinstance(exc, OSError):  # a host name IDNA cannot encode, a port out of range
        return ConnectionError(f"could not connect to {host}:{port}: invalid address",
                               reason="invalid address")
    if isinstance(exc, builtins.TimeoutError) and timeout is not None:
        return TimeoutError(f"could not connect to {host}:{port} within {timeout:g}s",
                            reason="timed out")
    reason = os_reason(exc)
    return ConnectionError(f"could not connect to {host}:{port}: {reason}", reason=reason)


def link_failed(host: str, port: int, exc: OSError, timeout: float | None) -> ConnectionError:
    """The error for a connection that broke or timed out while a command was in flight."""
    if isinstance(exc, builtins.TimeoutError) and timeout is not None:
        return TimeoutError(f"no reply within {timeout:g}s", reason="timed out")
    reason = os_reason(exc)
    return ConnectionError(f"connection to {host}:{port} broke: {reason}", reason=reason)


def finish(reply: ClientReply, converter: Converter, decode: bool) -> Any:
    """The value of one reply: an error reply raises its mapped exception."""
    if isinstance(reply, ErrorReply):
        raise error_from_reply(reply)
    return converter(reply, decode)


def finish_in_place(replies: Sequence[ClientReply], requests: Sequence[Request],
                    decode: bool) -> list[Any]:
    """A pipeline's results: each value, or the exception instance where a command failed."""
    results: list[Any] = []
    for reply, request in zip(replies, requests, strict=True):
        try:
            results.append(finish(reply, request.converter, decode))
        except (DumbKVError, ValueError) as exc:
            results.append(exc)
    return results


def first_error(results: Sequence[Any]) -> BaseException | None:
    """The first exception in a pipeline's results, if any."""
    return next((item for item in results if isinstance(item, BaseException)), None)


class ClientBase:
    """Settings and state shared by ``Client`` and ``AsyncClient``."""

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
    ) -> None:
        #: Server address.
        self.host = host
        self.port = port
        #: The database the client is in: every (re)connection is switched to it.
        self.db = db
        #: The password every (re)connection authenticates with (``None``: no ``AUTH``).
        self.password = password
        #: The user name it was given with (``AUTH username password``), if any.
        self.username: str | None = None
        #: The protocol every (re)connection is switched to: 2, or 3 after a ``HELLO 3``.
        self.protocol = 2
        #: Seconds to connect (and authenticate / select); ``None`` waits forever.
        self.connect_timeout = connect_timeout
        #: Seconds for one command's (or pipeline's) reply; ``None`` waits forever.
        self.timeout = timeout
        #: Bulk strings come back as ``str`` (UTF-8) instead of ``bytes``.
        self.decode_responses = decode_responses
        # The blocking client's turn-taking: one thread at a time on its connection.
        self._lock = threading.RLock()

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> Self:
        """A client for ``dumbkv://[:password@]host[:port][/db]``; keyword arguments are
        passed on (``timeout``, ``decode_responses``, ...) and override the URL's."""
        address = parse_url(url)
        settings: dict[str, Any] = {"db": address.db, "password": address.password}
        settings.update(kwargs)
        return cls(address.host, address.port, **settings)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.host}:{self.port} db={self.db}>"

    # ---------------------------------------------------------------- sans-IO steps
    def prelude(self, link: LinkState) -> list[Request]:
        """Commands that bring a connection to the client's password and database, sent and
        answered before any command of the caller."""
        requests = []
        if self.password is not None and (link.username, link.password) != (
            self.username, self.password
        ):  # the same form as the AUTH that set it
            args = ("AUTH", self.password) if self.username is None else (
                "AUTH", self.username, self.password)
            requests.append(Request(args, ok))
        if link.protocol != self.protocol:
            requests.append(Request(("HELLO", self.protocol), raw))
        if link.db != self.db:
            requests.append(Request(("SELECT", self.db), ok))
        return requests

    def check_prelude(self, link: LinkState, requests: Sequence[Request],
                      replies: Sequence[ClientReply]) -> None:
        """Raise the first failed prelude reply (e.g. ``AuthError`` for a wrong password)."""
        for request, reply in zip(requests, replies, strict=True):
            try:
                finish(reply, request.converter, False)
            except DumbKVError as exc:
                exc.command = _text(request.args[0]).upper()
                raise
            self.observe(link, request.args, reply)

    def observe(self, link: LinkState, args: Sequence[Arg], reply: ClientReply) -> None:
        """A successful ``SELECT``, ``AUTH`` or ``HELLO`` moves the client (and the connection)
        there: a new connection is brought to the same database, credentials and protocol."""
        if isinstance(reply, (list, dict)) and args and _text(args[0]).upper() == "HELLO":
            self._observe_hello(link, [_text(arg) for arg in args[1:]])
        if reply != "OK" or not args:
            return
        name = _text(args[0]).upper()
        if name == "SELECT" and len(args) == 2:
            link.db = self.db = int(_text(args[1]))
        elif name == "QUIT":
            link.quit = True
        elif name == "AUTH" and len(args) in (2, 3):
            link.password = self.password = _text(args[-1])
            link.username = self.username = _text(args[1]) if len(args) == 3 else None

    def _observe_hello(self, link: LinkState, args: list[str]) -> None:
        """``HELLO [protover [AUTH username password] [SETNAME name]]`` was answered."""
        if args:
            link.protocol = self.protocol = int(args[0])
        i = 1
        while i < len(args):  # the server answered, so each option has its values
            if args[i].upper() == "AUTH":
                link.username = self.username = args[i + 1]
                link.password = self.password = args[i + 2]
                i += 3
            else:  # SETNAME name
                i += 2

    def observe_all(self, link: LinkState, requests: Sequence[Request],
                    replies: Sequence[ClientReply]) -> None:
        """``observe`` every reply of a round trip, in order."""
        for request, reply in zip(requests, replies, strict=True):
            self.observe(link, request.args, reply)


def _text(arg: Arg) -> str:
    return arg.decode("utf-8", "replace") if isinstance(arg, bytes) else str(arg)
