"""The wire protocol, sans-IO: bytes in, commands out; replies in, bytes out.

``Parser.feed(data)`` accepts any slice of a byte stream and returns the complete commands it
holds, each an argv list of ``bytes``. Requests are either RESP arrays (``*2\\r\\n$3\\r\\nGET...``)
or inline lines as typed into telnet, split exactly like Redis's ``sdssplitargs``. The two may be
mixed on one connection. No size limits apply: DumbKV is unbounded by design.

``encode(reply, resp3)`` turns a reply value into bytes:

==================  ==================  ==============
Python value        RESP2               RESP3
==================  ==================  ==============
``str``             ``+OK``             same
``bytes``           ``$3 abc``          same
``int``             ``:1``              same
``None``            ``$-1``             ``_``
``list``            ``*n ...``          same
``dict``            flat ``*2n`` array  ``%n`` map
``DumbKVError``     ``-PREFIX message``  same
==================  ==================  ==============
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Union

from mypy_extensions import mypyc_attr

from .errors import ClientError, DumbKVError, ProtocolError

__all__ = [
    "ErrorReply",
    "Parser",
    "Reply",
    "ReplyParser",
    "encode",
    "encode_command",
    "encode_inline",
    "quote",
    "split_inline",
    "strict_int",
]

Reply = Union[str, bytes, int, None, list["Reply"], dict[str, "Reply"], DumbKVError]  # noqa: UP007

_CRLF = b"\r\n"
# C's isspace(): where sdssplitargs skips between arguments and what may follow a closing quote.
_ISSPACE = frozenset(b" \t\n\v\f\r")
# What ends an unquoted argument (note: not \v or \f).
_UNQUOTED_END = frozenset(b" \n\r\t")
_NEEDS_SLOW_SPLIT = re.compile(rb"[\"'\x0b\x0c\x00]")
_HEX = frozenset(b"0123456789abcdefABCDEF")
_ESCAPES = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("a"): 7}


def strict_int(text: bytes) -> int | None:
    """Parse a signed 64-bit decimal like Redis's string2ll: no '+', spaces or leading zeros."""
    negative = text[:1] == b"-"
    digits = text[1:] if negative else text
    if not digits.isdigit() or len(digits) > 19 or (digits[:1] == b"0" and (
        len(digits) > 1 or negative
    )):
        return None
    value = -int(digits) if negative else int(digits)
    return value if -(2**63) <= value < 2**63 else None


class Parser:
    """Incremental request parser for one connection.

    Complete commands are parsed straight from the bytes just received: a read of RESP arrays
    with canonical headers and no CRLF inside an argument (what clients send) by splitting it
    at CRLF once (``_plain_arrays``), anything else by ``_array_header`` and
    ``_bulk_strings``. An incomplete tail is kept, with the length it must reach before
    parsing can progress (``_need``). An array whose arguments arrive over many reads keeps
    the ones already read (``_argv``, with ``_left`` still to come), and its tail starts at
    the first incomplete one. So a value, a line or an array of any size is parsed once, not
    rescanned on every read.
    """

    __slots__ = ("_argv", "_buf", "_left", "_need", "error")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._need = 0
        self._argv: list[bytes] | None = None
        self._left = 0
        #: Set when the stream is broken; the commands before it are still returned.
        self.error: ProtocolError | None = None

    def feed(self, data: bytes) -> list[list[bytes]]:
        """Add bytes; return every complete command. After an error, returns nothing more."""
        if self.error is not None:
            return []
        if self._buf:
            buf = self._buf
            buf += data
            if len(buf) < self._need or (
                buf[0] != 42 and self._argv is None and b"\n" not in data
            ):
                return []  # still short of the pending value, or of the inline line's end
            data = bytes(buf)
            self._buf = bytearray()
        commands: list[list[bytes]] = []
        pos = 0
        end = len(data)
        try:
            if self._argv is not None:  # the rest of an array begun in an earlier read
                pos = self._bulks(data, 0, self._argv, self._left)
                if pos < 0:
                    return commands
                commands.append(self._argv)
                self._argv = None
            elif end <= _FAST_MAX and data[:1] == b"*":
                commands, pos = _plain_arrays(data)
            while pos < end:
                if data[pos] == 42:  # '*'
                    count, new_pos = _array_header(data, pos)
                    argv: list[bytes] | None = None
                    if count > 0:
                        argv = []
                        new_pos = self._bulks(data, new_pos, argv, count)
                        if new_pos < 0:
                            break
                else:
                    newline = data.find(b"\n", pos)
                    if newline < 0:
                        new_pos = -(end - pos + 1)
                    else:
                        argv, new_pos = split_inline(data[pos:newline]), newline + 1
                if new_pos < 0:
                    self._buf = bytearray(data[pos:])
                    self._need = -new_pos
                    break
                pos = new_pos
                if argv:
                    commands.append(argv)
        except ProtocolError as exc:
            self.error = exc
        return commands

    def _bulks(self, data: bytes, pos: int, argv: list[bytes], left: int) -> int:
        """Read ``left`` more arguments of an array into ``argv``: the position after them,
        or -1 when the data ends first (what is missing is then kept for the next read)."""
        read = len(argv)
        pos, need = _bulk_strings(data, pos, argv, left)
        if need:
            self._argv = argv
            self._left = left - (len(argv) - read)
            self._buf = bytearray(data[pos:])
            self._need = need
            return -1
        return pos


#: Canonical decimal lengths (no sign, no leading zero) up to 9999, for the common case: one
#: dict lookup both checks and converts a header. Anything else takes the strict path.
_SMALL = {b"%d" % n: n for n in range(10000)}


#: Reads up to this size try ``_plain_arrays`` first (splitting copies the whole read once).
_FAST_MAX = 1 << 16


#: Whole canonical headers, for ``_plain_arrays``: ``*1``..``*9999`` and ``$0``..``$9999``.
_ARRAY_HEADERS = {b"*%d" % n: n for n in range(1, 10000)}
_BULK_HEADERS = {b"$%d" % n: n for n in range(10000)}


def _plain_arrays(data: bytes) -> tuple[list[list[bytes]], int]:
    """The common case in one pass: the complete RESP arrays at the start of ``data`` whose
    headers are canonical and whose arguments hold no CRLF, as (commands, bytes used).

    It stops at the first array that does not fit that shape (incomplete, inline, empty,
    malformed, an argument with CRLF inside or of 10,000 bytes and more); the general path
    parses the rest, errors included, so both paths give the same commands."""
    parts = data.split(_CRLF)
    last = len(parts) - 1  # what follows the final CRLF: never a complete part
    arrays = _ARRAY_HEADERS
    bulks = _BULK_HEADERS
    commands: list[list[bytes]] = []
    i = 0
    while i < last:
        count = arrays.get(parts[i])
        if count is None:
            break
        stop = i + 1 + 2 * count
        if stop > last:
            break
        argv = parts[i + 2 : stop : 2]
        header = i + 1
        for arg in argv:
            if bulks.get(parts[header]) != len(arg):
                break
            header += 2
        else:
            commands.append(argv)
            i = stop
            continue
        break
    if i == last:
        return commands, len(data) - len(parts[last])
    return commands, sum(map(len, parts[:i])) + 2 * i


def _array_header(data: bytes, pos: int) -> tuple[int, int]:
    """The count of the RESP array at ``pos`` and the position after its header; (0, -n)
    when the header is incomplete and needs at least n bytes counted from ``pos``. A count of
    0 or less means an empty command."""
    end = len(data)
    eol = data.find(_CRLF, pos)
    if eol < 0:
        return 0, -(end - pos + 1)
    head = data[pos + 1 : eol]
    count = _SMALL.get(head)
    if count is None:
        # Plain digits without a leading zero; anything else goes to strict_int.
        if head.isdigit() and head[0] != 48 and len(head) < 11:
            count = int(head)
        else:
            parsed = strict_int(head)
            if parsed is None or parsed > 0:  # a positive count here had a leading zero
                raise ProtocolError("invalid multibulk length")
            count = parsed
        if count > 0x7FFFFFFF:
            raise ProtocolError("invalid multibulk length")
    return count, eol + 2


def _bulk_strings(data: bytes, pos: int, argv: list[bytes], count: int) -> tuple[int, int]:
    """Append the ``count`` bulk strings at ``pos`` to ``argv``: (position after them, 0), or,
    when the data ends first, (position of the first incomplete one, bytes it needs from
    there); the complete ones before it are appended."""
    end = len(data)
    find = data.find
    append = argv.append
    for _ in range(count):
        eol = find(_CRLF, pos)
        if pos < end and data[pos] != 36:  # '$'
            got = chr(data[pos]) if 32 <= data[pos] < 127 else "?"
            raise ProtocolError(f"expected '$', got '{got}'")
        if eol < 0:
            return pos, end - pos + 1
        head = data[pos + 1 : eol]
        size = _SMALL.get(head)
        if size is None:
            # Unbounded by design, but it must be a number Redis could read (64-bit signed).
            if not head.isdigit() or (head[0] == 48 and len(head) > 1) or len(head) > 19 or (
                int(head) >= 2**63
            ):
                raise ProtocolError("invalid bulk length")
            size = int(head)
        start = eol + 2
        stop = start + size + 2  # like Redis, the trailing CRLF is skipped unchecked
        if stop > end:
            return pos, stop - pos
        append(data[start : stop - 2])
        pos = stop
    return pos, 0


def split_inline(line: bytes) -> list[bytes]:
    """Split one inline request line (without its newline) like Redis's ``sdssplitargs``."""
    if not _NEEDS_SLOW_SPLIT.search(line):
        return line.split()
    line = line.split(b"\x00", 1)[0]  # C string semantics: a NUL ends the line
    args: list[bytes] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in _ISSPACE:
            i += 1
        if i >= n:
            return args
        arg, i = _split_one(line, i, n)
        args.append(arg)


def _split_one(line: bytes, i: int, n: int) -> tuple[bytes, int]:
    current = bytearray()
    in_double = in_single = False
    unbalanced = ProtocolError("unbalanced quotes in request")
    while True:
        if i >= n:
            if in_double or in_single:
                raise unbalanced
            return bytes(current), i
        c = line[i]
        if in_double:
            if c == 92 and i + 3 < n and line[i + 1] == 120 and line[i + 2] in _HEX and (
                line[i + 3] in _HEX
            ):  # \xHH
                current.append(int(line[i + 2 : i + 4], 16))
                i += 3
            elif c == 92 and i + 1 < n:
                i += 1
                current.append(_ESCAPES.get(line[i], line[i]))
            elif c == 34:  # closing "
                return bytes(current), _after_closing_quote(line, i, n)
            else:
                current.append(c)
        elif in_single:
            if c == 92 and i + 1 < n and line[i + 1] == 39:  # \'
                i += 1
                current.append(39)
            elif c == 39:  # closing '
                return bytes(current), _after_closing_quote(line, i, n)
            else:
                current.append(c)
        elif c in _UNQUOTED_END:
            return bytes(current), i + 1
        elif c == 34:
            in_double = True
        elif c == 39:
            in_single = True
        else:
            current.append(c)
        i += 1


def _after_closing_quote(line: bytes, i: int, n: int) -> int:
    """Position after the closing quote at ``i``, which must end the argument."""
    if i + 1 < n and line[i + 1] not in _ISSPACE:
        raise ProtocolError("unbalanced quotes in request")
    return i + 1


_NIL2 = b"$-1\r\n"
_NIL3 = b"_\r\n"


def encode(reply: Reply, resp3: bool = False) -> bytes:
    """Encode one reply value (see the module table)."""
    if isinstance(reply, bytes):
        return b"$%d\r\n%b\r\n" % (len(reply), reply)
    if reply is None:
        return _NIL3 if resp3 else _NIL2
    if isinstance(reply, str):
        return b"+" + reply.replace("\r", " ").replace("\n", " ").encode("utf-8", "replace") + _CRLF
    if isinstance(reply, int):
        return b":%d\r\n" % reply
    if isinstance(reply, list):
        return b"*%d\r\n" % len(reply) + b"".join([encode(item, resp3) for item in reply])
    if isinstance(reply, dict):
        parts = [b"%%%d\r\n" % len(reply)] if resp3 else [b"*%d\r\n" % (2 * len(reply))]
        for key, value in reply.items():
            parts.append(encode(key.encode(), resp3))
            parts.append(encode(value, resp3))
        return b"".join(parts)
    if isinstance(reply, DumbKVError):
        return reply.wire()
    raise TypeError(f"cannot encode a reply of type {type(reply).__name__}")


def encode_command(args: Iterable[object]) -> bytes:
    """Encode a request as a RESP array, as clients send it: bytes (also bytearray and
    memoryview), str as UTF-8, int and float as their ``str()``; anything else is refused
    with ``ClientError`` (checked here, not by annotations: the compiled build checks those,
    the plain Python one would not)."""
    parts = []
    for arg in args:
        if isinstance(arg, bytes):
            raw = arg
        elif isinstance(arg, (bytearray, memoryview)):
            raw = bytes(arg)
        elif isinstance(arg, (str, int, float)):
            raw = str(arg).encode()
        else:
            raise ClientError(f"invalid argument of type {type(arg).__name__}: send bytes, "
                              "str, int or float")
        parts.append(b"$%d\r\n%b\r\n" % (len(raw), raw))
    return b"*%d\r\n" % len(parts) + b"".join(parts)


_REPR_ESCAPES = {0x5C: b"\\\\", 0x22: b'\\"', 0x0A: b"\\n", 0x0D: b"\\r", 0x09: b"\\t",
                 0x07: b"\\a", 0x08: b"\\b"}


def quote(data: bytes) -> bytes:
    """``data`` in double quotes as Redis's sdscatrepr writes it (``"a\\x00b\\n"``): printable
    ASCII as is, named escapes for \\ " \\n \\r \\t \\a \\b, ``\\xHH`` for the rest. What redis-cli
    shows for a bulk string, and what ``split_inline`` reads back exactly."""
    out = bytearray(b'"')
    for byte in data:
        escaped = _REPR_ESCAPES.get(byte)
        if escaped is not None:
            out += escaped
        elif 0x20 <= byte < 0x7F:
            out.append(byte)
        else:
            out += b"\\x%02x" % byte
    out.append(0x22)
    return bytes(out)


def encode_inline(args: Iterable[bytes]) -> bytes:
    """Encode a request as one inline line that ``split_inline`` reads back exactly."""
    return b" ".join(quote(arg) for arg in args) + _CRLF


# --------------------------------------------------------------------------- client side
@mypyc_attr(native_class=False)  # compiled (setup.py): a str subclass stays a Python class
class ErrorReply(str):
    """An error reply as a client receives it, e.g. ``ERR syntax error``."""

    __slots__ = ()

    @property
    def prefix(self) -> str:
        return self.split(" ", 1)[0]


ClientReply = Union[  # noqa: UP007
    str, bytes, int, float, bool, None, ErrorReply, list["ClientReply"],
    dict["ClientReply", "ClientReply"],
]


class _Incomplete(Exception):
    """The buffer ends before the reply: ``need`` is the length it must reach first."""

    def __init__(self, need: int) -> None:
        self.need = need


class _Aggregate:
    """An array, set, push or map still being read: its items so far and how many are left."""

    __slots__ = ("items", "left", "map")

    def __init__(self, count: int, is_map: bool) -> None:
        self.items: list[ClientReply] = []
        self.left = 2 * count if is_map else count
        self.map = is_map

    def value(self) -> ClientReply:
        if not self.map:
            return self.items
        items = self.items
        return {items[i]: items[i + 1] for i in range(0, len(items), 2)}


class ReplyParser:
    """Incremental parser of server replies (RESP2 and RESP3), for clients.

    ``feed(data)`` returns every complete reply: ``+`` str, ``-`` ErrorReply, ``:`` int,
    ``$`` bytes or None, ``*`` list or None, and from RESP3 ``_`` None, ``%`` dict, ``~``/``>``
    list, ``#`` bool, ``,`` float, ``(`` int, ``=`` bytes (the verbatim text without its format).

    Items are read one at a time; the arrays and maps still open are kept (``_open``) with
    the items read so far, and an incomplete item is kept with the length it needs. So a large
    value, or an array of many items, arriving in many reads is parsed once.
    """

    __slots__ = ("_buf", "_need", "_open")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._need = 0
        self._open: list[_Aggregate] = []

    def feed(self, data: bytes) -> list[ClientReply]:
        if self._buf:
            self._buf += data
            if len(self._buf) < self._need:
                return []
            buf = bytes(self._buf)
        else:
            buf = data
        replies: list[ClientReply] = []
        opened = self._open
        pos = 0
        self._need = 0
        while pos < len(buf):
            try:
                item, pos = self._item(buf, pos)
            except _Incomplete as incomplete:
                self._need = incomplete.need - pos
                break
            # An aggregate header opens a level; anything else is an item of the innermost
            # open one, which may close it (and so on outwards), or a whole reply.
            if isinstance(item, _Aggregate):
                if item.left:
                    opened.append(item)
                    continue
                item = item.value()
            while opened:
                top = opened[-1]
                top.items.append(item)
                top.left -= 1
                if top.left:
                    break
                opened.pop()
                item = top.value()
            else:
                replies.append(item)
        self._buf = bytearray(buf[pos:])
        return replies

    def _item(self, buf: bytes, pos: int) -> tuple[ClientReply | _Aggregate, int]:
        """One scalar, or the header of an aggregate, at ``pos``."""
        kind = buf[pos : pos + 1]
        eol = buf.find(_CRLF, pos)
        if eol < 0:
            raise _Incomplete(len(buf) + 1)
        line = buf[pos + 1 : eol]
        pos = eol + 2
        if kind == b"+":
            return line.decode("utf-8", "replace"), pos
        if kind == b"-":
            return ErrorReply(line.decode("utf-8", "replace")), pos
        if kind in (b":", b"("):
            return int(line), pos
        if kind in (b"$", b"="):
            size = int(line)
            if size < 0:
                return None, pos
            if len(buf) < pos + size + 2:
                raise _Incomplete(pos + size + 2)
            data = buf[pos : pos + size]
            return (data[4:] if kind == b"=" else data), pos + size + 2
        if kind in (b"*", b"~", b">"):
            count = int(line)
            return (None if count < 0 else _Aggregate(count, False)), pos
        if kind == b"%":
            return _Aggregate(max(int(line), 0), True), pos
        if kind == b"_":
            return None, pos
        if kind == b"#":
            return line == b"t", pos
        if kind == b",":
            return float(line), pos
        raise ProtocolError(f"unexpected reply type {kind!r}")
