"""Replies printed the way redis-cli prints them.

``pretty(reply)`` is redis-cli's terminal form (``(nil)``, ``(integer) 3``, quoted and escaped
bulk strings, numbered and indented lists, ``(error) ...``); ``raw(reply)`` is its ``--raw``
form (the bytes as they are, one array element a line). Both return the complete output of one
reply, final newline included, as bytes: a bulk string may hold any byte.
"""

from __future__ import annotations

from ..resp import ClientReply, ErrorReply, quote

__all__ = ["format_reply", "pretty", "raw"]

_EMPTY = {list: b"(empty array)\n", dict: b"(empty hash)\n"}


def _text(value: str) -> bytes:
    return value.encode("utf-8", "surrogateescape")


def _double(value: float) -> bytes:
    """A RESP3 double as Redis writes it (``%.17g``: ``1.5``, ``3``, ``inf``, ``nan``)."""
    return b"%.17g" % value


def _scalar(reply: ClientReply) -> bytes | None:
    """The terminal form of a reply that is not an aggregate, or None for an aggregate."""
    if isinstance(reply, ErrorReply):
        return b"(error) " + _text(reply) + b"\n"
    if isinstance(reply, str):
        return _text(reply) + b"\n"
    if isinstance(reply, bytes):
        return quote(reply) + b"\n"
    if reply is None:
        return b"(nil)\n"
    if isinstance(reply, bool):
        return b"(true)\n" if reply else b"(false)\n"
    if isinstance(reply, int):
        return b"(integer) %d\n" % reply
    if isinstance(reply, float):
        return b"(double) " + _double(reply) + b"\n"
    return None


def _pretty(reply: ClientReply, prefix: bytes) -> bytes:
    line = _scalar(reply)
    if line is not None:
        return line
    pairs: list[tuple[ClientReply, ClientReply | None]]
    if isinstance(reply, dict):
        pairs = list(reply.items())
        mark = b"#"
    else:
        assert isinstance(reply, list)
        pairs = [(item, None) for item in reply]
        mark = b")"
    if not pairs:
        return _EMPTY[type(reply)]
    width = len(str(len(pairs)))
    inner = prefix + b" " * (width + 2)
    out = bytearray()
    for index, (item, value) in enumerate(pairs, 1):
        # The first entry goes right after the index its parent already printed.
        out += (prefix if index > 1 else b"") + b"%*d" % (width, index) + mark + b" "
        out += _pretty(item, inner)
        if isinstance(reply, dict):
            out[-1:] = b" => "
            out += _pretty(value, inner)
    return bytes(out)


def pretty(reply: ClientReply) -> bytes:
    """redis-cli's terminal form of one reply, ending in a newline."""
    return _pretty(reply, b"")


def _raw(reply: ClientReply) -> bytes:
    if isinstance(reply, ErrorReply):
        return _text(reply) + b"\n"
    if isinstance(reply, str):
        return _text(reply)
    if isinstance(reply, bytes):
        return reply
    if reply is None:
        return b""
    if isinstance(reply, bool):
        return b"(true)" if reply else b"(false)"
    if isinstance(reply, int):
        return b"%d" % reply
    if isinstance(reply, float):
        return _double(reply)
    if isinstance(reply, dict):
        return b"\n".join(_raw(key) + b" " + _raw(value) for key, value in reply.items())
    return b"\n".join(_raw(item) for item in reply)


def raw(reply: ClientReply) -> bytes:
    """redis-cli's ``--raw`` form of one reply, ending in a newline."""
    return _raw(reply) + b"\n"


def format_reply(reply: ClientReply, as_raw: bool) -> bytes:
    """``raw(reply)`` when ``as_raw``, else ``pretty(reply)``."""
    return raw(reply) if as_raw else pretty(reply)
