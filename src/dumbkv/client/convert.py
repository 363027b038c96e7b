"""Turning a (non-error) reply into the Python value a command method returns.

Each converter takes the reply as ``resp.ReplyParser`` produced it and ``decode`` (the
client's ``decode_responses``: bulk strings become ``str`` when true). A reply of an unexpected
shape raises ``InvalidReplyError``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import InvalidReplyError
from ..resp import ClientReply

__all__ = [
    "Converter",
    "boolean",
    "config_map",
    "info",
    "integer",
    "ok",
    "pong",
    "raw",
    "set_reply",
    "time_pair",
    "value",
    "values",
]

Converter = Callable[[ClientReply, bool], Any]


def _unexpected(reply: ClientReply) -> InvalidReplyError:
    return InvalidReplyError(f"unexpected reply of type {type(reply).__name__}")


def raw(reply: ClientReply, decode: bool) -> ClientReply:
    """The reply unchanged (``execute_raw``)."""
    return reply


def value(reply: ClientReply, decode: bool) -> bytes | str | None:
    """A bulk string or nil: ``bytes``, ``str`` when decoding, or ``None``."""
    if reply is None:
        return None
    if isinstance(reply, bytes):
        return reply.decode() if decode else reply
    if isinstance(reply, str):  # a status reply where a bulk string may also come
        return reply if decode else reply.encode()
    raise _unexpected(reply)


def values(reply: ClientReply, decode: bool) -> list[bytes | str | None]:
    """An array of bulk strings and nils (``MGET``)."""
    if not isinstance(reply, list):
        raise _unexpected(reply)
    return [value(item, decode) for item in reply]


def integer(reply: ClientReply, decode: bool) -> int:
    """An integer reply."""
    if isinstance(reply, int) and not isinstance(reply, bool):
        return reply
    raise _unexpected(reply)


def boolean(reply: ClientReply, decode: bool) -> bool:
    """An integer reply that means yes (1) or no (0)."""
    return integer(reply, decode) != 0


def ok(reply: ClientReply, decode: bool) -> bool:
    """``+OK`` -> ``True``."""
    if reply == "OK":
        return True
    raise _unexpected(reply)


def pong(reply: ClientReply, decode: bool) -> bool:
    """``+PONG`` -> ``True``."""
    if reply == "PONG":
        return True
    raise _unexpected(reply)


def set_reply(reply: ClientReply, decode: bool) -> bool | None:
    """``SET``: ``True`` when written, ``None`` when NX/XX prevented it."""
    return None if reply is None else ok(reply, decode)


def time_pair(reply: ClientReply, decode: bool) -> tuple[int, int]:
    """``TIME``: (Unix seconds, microseconds)."""
    if isinstance(reply, list) and len(reply) == 2 and all(
        isinstance(item, bytes) and item.isdigit() for item in reply
    ):
        return int(reply[0]), int(reply[1])  # type: ignore[arg-type]
    raise _unexpected(reply)


def _scalar(text: str) -> int | float | str:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def info(reply: ClientReply, decode: bool) -> dict[str, Any]:
    """``INFO``: one flat dict of every ``name:value`` line, values as int, float or str;
    a keyspace line ``db0:keys=1,expires=0,avg_ttl=0`` becomes ``{"keys": 1, ...}``."""
    if not isinstance(reply, bytes):
        raise _unexpected(reply)
    result: dict[str, Any] = {}
    for line in reply.decode("utf-8", "replace").splitlines():
        if not line or line.startswith("#") or ":" not in line:
            continue
        name, _, text = line.partition(":")
        if ("=" in text and "," in text) or (name.startswith("db") and "=" in text):
            fields = (pair.partition("=") for pair in text.split(","))
            result[name] = {key: _scalar(val) for key, _, val in fields}
        else:
            result[name] = _scalar(text)
    return result


def config_map(reply: ClientReply, decode: bool) -> dict[bytes | str, bytes | str | None]:
    """``CONFIG GET``: name -> value (both ``str`` when decoding), from a flat array or map."""
    if isinstance(reply, dict):
        reply = [item for pair in reply.items() for item in pair]
    if not isinstance(reply, list) or len(reply) % 2:
        raise _unexpected(reply)
    items = [value(item, decode) for item in reply]
    return {key: val for key, val in zip(items[::2], items[1::2], strict=True) if key is not None}
