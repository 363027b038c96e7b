"""Replies side by side: when two count as identical, how each one counts (ok, client error,
server error, no reply), and how it reads for people."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import ServerError
from ..errors import Status as ReplyStatus
from ..resp import ErrorReply
from .workload import Op, show_bytes

__all__ = [
    "TTL_TOLERANCE_MS",
    "NoReply",
    "Status",
    "is_ok",
    "reply_status",
    "same_result",
    "show_reply",
]

#: Both targets run each operation at the same moment: their TTLs differ only by how much one
#: lags the other between setting an expiry and reading it (milliseconds on a quiet machine),
#: or by a second boundary for TTL. An expiry off by more than a second is a difference.
TTL_TOLERANCE_MS = 1_000


@dataclass(frozen=True, slots=True)
class NoReply:
    """An operation that got no reply: the connection dropped, could not be made, or timed
    out."""

    reason: str


def _equal(a: object, b: object) -> bool:
    """Equal values of the same RESP type (``+OK`` is not ``-OK``, ``$2 10`` is not ``:10``)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def same_result(op: Op, a: object, b: object) -> bool:
    """Whether two replies to ``op`` count as identical. A missing reply or a server error
    never does (two backends failing alike have not given the same result); positive TTL/PTTL
    replies may differ by the time between the two targets' clocks and replies
    (``TTL_TOLERANCE_MS``); nothing else is fuzzed."""
    if _FAILED.intersection((reply_status(a), reply_status(b))):
        return False
    if (
        op.name in ("TTL", "PTTL") and type(a) is int and type(b) is int and a > 0 and b > 0
    ):
        tolerance = TTL_TOLERANCE_MS if op.name == "PTTL" else TTL_TOLERANCE_MS // 1000
        return abs(a - b) <= tolerance
    return _equal(a, b)


#: A reply's status as the server counts it (``dumbkv.errors.Status``), or no reply at all.
Status = Literal[ReplyStatus, "no_reply"]


#: The statuses that count as a target's failure (client errors are the workload's own doing).
_FAILED = frozenset(("server_error", "no_reply"))


def reply_status(reply: object) -> Status:
    if isinstance(reply, NoReply):
        return "no_reply"
    if isinstance(reply, ErrorReply):
        return "server_error" if reply.prefix == ServerError.prefix else "client_error"
    return "ok"


def is_ok(reply: object) -> bool:
    """Whether ``reply`` is the simple string ``+OK`` (not the error ``-OK``)."""
    return reply == "OK" and not isinstance(reply, ErrorReply)


def show_reply(reply: object, width: int = 48) -> str:
    """A reply for people, like redis-cli prints it (values quoted, escaped and cut)."""
    if isinstance(reply, NoReply):
        return f"(no reply: {reply.reason})"
    if isinstance(reply, ErrorReply):
        text = str(reply)
        return "(error) " + (text if len(text) <= 160 else text[:160] + "...")
    if isinstance(reply, str):
        return reply
    if isinstance(reply, int):
        return f"(integer) {reply}"
    if reply is None:
        return "(nil)"
    if isinstance(reply, bytes):
        text = show_bytes(reply, width)
        return text if text.startswith('"') else f'"{text}"'
    if isinstance(reply, list):
        items = [show_reply(item, 24) for item in reply[:8]]
        return "[" + ", ".join(items) + (", ..." if len(reply) > 8 else "") + "]"
    return repr(reply)
