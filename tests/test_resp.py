"""resp.py on bytes only: the request parser (inline + RESP arrays) and the reply encoder.

The inline rules follow Redis's ``processInlineBuffer`` + ``sdssplitargs`` and the multibulk
rules ``processMultibulkBuffer`` (see /work/shared/reference/redis-clients.md, section (b)).
``sdssplitargs`` below is a line-by-line transcription of the C function, used as an oracle.
"""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dumbkv import resp
from dumbkv.errors import (
    AuthError,
    ClientError,
    CommandError,
    DumbKVError,
    IntegrityError,
    ProtocolError,
    ServerError,
)
from dumbkv.resp import Parser, encode, encode_command, encode_inline, split_inline, strict_int

Argv = list[bytes]

UNBALANCED = b"-ERR Protocol error: unbalanced quotes in request\r\n"
BAD_MULTIBULK = b"-ERR Protocol error: invalid multibulk length\r\n"
BAD_BULK = b"-ERR Protocol error: invalid bulk length\r\n"


# --------------------------------------------------------------------------- helpers


def feed_all(data: bytes) -> tuple[list[Argv], Parser]:
    parser = Parser()
    return parser.feed(data), parser


def feed_chunks(chunks: list[bytes]) -> tuple[list[Argv], Parser]:
    parser = Parser()
    commands: list[Argv] = []
    for chunk in chunks:
        commands.extend(parser.feed(chunk))
    return commands, parser


def feed_bytewise(data: bytes) -> tuple[list[Argv], Parser]:
    return feed_chunks([data[i : i + 1] for i in range(len(data))])


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in itertools.pairwise(points)]


def error_wire(parser: Parser) -> bytes | None:
    return None if parser.error is None else parser.error.wire()


def parse_ok(data: bytes) -> list[Argv]:
    """Commands of ``data``, asserting the stream is valid; also checks byte-wise feeding."""
    commands, parser = feed_all(data)
    assert parser.error is None, parser.error
    bytewise, parser2 = feed_bytewise(data)
    assert parser2.error is None
    assert bytewise == commands
    return commands


def parse_error(data: bytes) -> bytes:
    """The error reply of ``data`` (which must be broken); also checks byte-wise feeding."""
    commands, parser = feed_all(data)
    assert parser.error is not None, f"no error for {data!r}, got {commands!r}"
    assert isinstance(parser.error, ProtocolError)
    _, parser2 = feed_bytewise(data)
    assert error_wire(parser2) == parser.error.wire()
    return parser.error.wire()


_C_ISSPACE = b" \t\n\v\f\r"


def sdssplitargs(line: bytes) -> list[bytes] | None:
    """Redis ``sdssplitargs`` (sds.c) transcribed: ``None`` where C returns NULL (bad quotes)."""
    s = line + b"\x00"  # a C string; everything reads up to the first NUL
    p = 0
    argv: list[bytes] = []
    escapes = {ord("n"): 10, ord("r"): 13, ord("t"): 9, ord("b"): 8, ord("a"): 7}
    hexdigits = b"0123456789abcdefABCDEF"
    while True:
        while s[p] and s[p] in _C_ISSPACE:
            p += 1
        if not s[p]:
            return argv
        inq = insq = done = False
        current = bytearray()
        while not done:
            c = s[p]
            if inq:
                if (
                    c == ord("\\")
                    and s[p + 1] == ord("x")
                    and s[p + 2] in hexdigits
                    and s[p + 3] in hexdigits
                ):
                    current.append(int(s[p + 2 : p + 4], 16))
                    p += 3
                elif c == ord("\\") and s[p + 1]:
                    p += 1
                    current.append(escapes.get(s[p], s[p]))
                elif c == ord('"'):
                    if s[p + 1] and s[p + 1] not in _C_ISSPACE:
                        return None
                    done = True
                elif not c:
                    return None
                else:
                    current.append(c)
            elif insq:
                if c == ord("\\") and s[p + 1] == ord("'"):
                    p += 1
                    current.append(ord("'"))
                elif c == ord("'"):
                    if s[p + 1] and s[p + 1] not in _C_ISSPACE:
                        return None
                    done = True
                elif not c:
                    return None
                else:
                    current.append(c)
            elif c in b" \n\r\t\x00":
                done = True
            elif c == ord('"'):
                inq = True
            elif c == ord("'"):
                insq = True
            else:
                current.append(c)
            if s[p]:
                p += 1
        argv.append(bytes(current))


def decode_reply(data: bytes, resp3: bool, pos: int = 0) -> tuple[object, int]:
    """A minimal reply reader for checking the encoder; RESP3-only types need ``resp3``."""
    eol = data.index(b"\r\n", pos)
    kind, rest = data[pos : pos + 1], data[pos + 1 : eol]
    pos = eol + 2
    assert resp3 or kind not in (b"_", b"%"), f"RESP3 type {kind!r} in a RESP2 reply"
    if kind == b"+":
        return rest.decode(), pos
    if kind == b"-":
        return ("error", rest.decode()), pos
    if kind == b":":
        return int(rest), pos
    if kind == b"_":
        return None, pos
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None, pos
        assert data[pos + size : pos + size + 2] == b"\r\n"
        return data[pos : pos + size], pos + size + 2
    if kind in (b"*", b"%"):
        count = int(rest) * (2 if kind == b"%" else 1)
        items = []
        for _ in range(count):
            item, pos = decode_reply(data, resp3, pos)
            items.append(item)
        if kind == b"%":
            return dict(zip(items[::2], items[1::2], strict=True)), pos
        return items, pos
    raise AssertionError(f"unexpected reply type {kind!r}")


# --------------------------------------------------------------------------- inline requests


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"PING\n", [[b"PING"]]),
        (b"PING\r\n", [[b"PING"]]),
        (b"SET key value\r\n", [[b"SET", b"key", b"value"]]),
        (b"  SET \t key    value \t \r\n", [[b"SET", b"key", b"value"]]),
        # \r inside the line ends an unquoted argument, like a space
        (b"SET a\rb\r\n", [[b"SET", b"a", b"b"]]),
        # \v and \f are skipped between arguments but do not end an unquoted one
        (b"GET a\x0bb\n", [[b"GET", b"a\x0bb"]]),
        (b"\x0b\x0cGET\x0c a\n", [[b"GET\x0c", b"a"]]),
        # any other byte is part of an unquoted argument
        (b"SET k \xff\xfe\x01\x7f\n", [[b"SET", b"k", b"\xff\xfe\x01\x7f"]]),
        (b"ECHO \\n\\x41\n", [[b"ECHO", b"\\n\\x41"]]),
    ],
)
def test_inline_lines(data: bytes, expected: list[Argv]) -> None:
    assert parse_ok(data) == expected


def test_inline_waits_for_newline() -> None:
    parser = Parser()
    assert parser.feed(b"SET a b") == []
    assert parser.feed(b"\r") == []  # a \r alone does not end a line
    assert parser.error is None
    assert parser.feed(b"\n") == [[b"SET", b"a", b"b"]]
    assert parser.feed(b"") == []


@pytest.mark.parametrize("blank", [b"\n", b"\r\n", b"   \r\n", b"\t \t\n", b" \x0b\x0c \r\n"])
def test_blank_lines_give_no_command(blank: bytes) -> None:
    assert parse_ok(blank) == []
    assert parse_ok(blank * 3 + b"PING\r\n" + blank) == [[b"PING"]]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b'SET "a b" c\r\n', [b"SET", b"a b", b"c"]),
        (b'ECHO "\\n\\r\\t\\b\\a"\n', [b"ECHO", b"\n\r\t\b\a"]),
        (b'ECHO "\\x41\\x00\\xff\\xFf\\x7e"\n', [b"ECHO", b"A\x00\xff\xff~"]),
        # \c for any other character is that character
        (b'ECHO "\\"\\\\\\q\\\'\\ "\n', [b"ECHO", b"\"\\q' "]),
        # an incomplete \x escape is just an escaped 'x'
        (b'ECHO "\\x4" "\\xg1" "\\x"\n', [b"ECHO", b"x4", b"xg1", b"x"]),
        (b'ECHO "it\'s"\n', [b"ECHO", b"it's"]),
        # a quote may start in the middle of an argument
        (b'SET a"b c"\n', [b"SET", b"ab c"]),
        (b'SET k ""\r\n', [b"SET", b"k", b""]),
        (b'""\n', [b""]),
        (b'ECHO "" ""\n', [b"ECHO", b"", b""]),
        # a closing quote may be followed by any C isspace() character
        (b'ECHO "a"\tb\n', [b"ECHO", b"a", b"b"]),
        (b'ECHO "a"\x0bb\n', [b"ECHO", b"a", b"b"]),
        (b'ECHO "a"\r\n', [b"ECHO", b"a"]),
        (b'ECHO "a"\rb\r\n', [b"ECHO", b"a", b"b"]),
        (b'ECHO "a\rb"\r\n', [b"ECHO", b"a\rb"]),
        (b'ECHO "\xff\x01"\n', [b"ECHO", b"\xff\x01"]),
    ],
)
def test_inline_double_quotes(data: bytes, expected: Argv) -> None:
    assert parse_ok(data) == [expected]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"SET 'a b' c\n", [b"SET", b"a b", b"c"]),
        (b"ECHO 'it\\'s'\n", [b"ECHO", b"it's"]),
        # no other escape is understood inside single quotes
        (b"ECHO 'a\\nb\\x41\\\"'\n", [b"ECHO", b'a\\nb\\x41\\"']),
        (b"ECHO 'a\\\\b'\n", [b"ECHO", b"a\\\\b"]),
        (b"ECHO 'say \"hi\"'\n", [b"ECHO", b'say "hi"']),
        (b"SET k ''\n", [b"SET", b"k", b""]),
        (b"SET a'b c'\n", [b"SET", b"ab c"]),
        (b"ECHO 'a'\t'b'\r\n", [b"ECHO", b"a", b"b"]),
    ],
)
def test_inline_single_quotes(data: bytes, expected: Argv) -> None:
    assert parse_ok(data) == [expected]


@pytest.mark.parametrize(
    "data",
    [
        b'"a"b\r\n',
        b'a"b c"d\r\n',
        b"'a'b\r\n",
        b"SET k 'v'x\n",
        b'SET k "v""w"\n',
        b'"unterminated\r\n',
        b"'unterminated\r\n",
        b'ECHO "a\\"\r\n',  # the escaped quote does not close
        b'ECHO "a\\"\n',
        b"ECHO '\\\\'\n",  # a plain backslash, then \' (escaped): still open
        b"ECHO 'a\\'\n",  # \' is an escape, so the quote stays open
        b'ECHO "a\nb"\n',  # a line ends at \n even inside quotes
        b'ECHO "a\x00"\n',  # a NUL ends the line before the closing quote
        b'"\n',
        b"'\n",
    ],
)
def test_inline_unbalanced_quotes(data: bytes) -> None:
    assert parse_error(data) == UNBALANCED


def test_unbalanced_quotes_error_text() -> None:
    _, parser = feed_all(b'"a"b\r\n')
    assert parser.error is not None
    assert parser.error.message == "Protocol error: unbalanced quotes in request"
    assert str(parser.error) == "Protocol error: unbalanced quotes in request"
    assert parser.error.status == "client_error"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"GET a\x00b c\nPING\n", [[b"GET", b"a"], [b"PING"]]),
        (b"\x00GET a\nPING\r\n", [[b"PING"]]),
        (b'ECHO "a b"\x00"\n', [[b"ECHO", b"a b"]]),
        (b"ECHO a\x00'\n", [[b"ECHO", b"a"]]),
    ],
)
def test_nul_ends_an_inline_line(data: bytes, expected: list[Argv]) -> None:
    assert parse_ok(data) == expected


def test_split_inline_directly() -> None:
    assert split_inline(b"SET a b") == [b"SET", b"a", b"b"]
    assert split_inline(b"") == []
    assert split_inline(b"  ") == []
    assert split_inline(b'SET "a b"') == [b"SET", b"a b"]
    with pytest.raises(ProtocolError):
        split_inline(b'"a"b')


_LINE_ALPHABET = [
    b"a", b"b", b"x", b"4", b"f", b"n", b"'", b'"', b"\\", b" ", b"\t", b"\r", b"\x0b",
    b"\x0c", b"\x00", b"\xff", b"*",
]  # fmt: skip


@settings(max_examples=800, deadline=None)
@given(
    line=st.lists(st.sampled_from(_LINE_ALPHABET), max_size=14).map(b"".join),
    crlf=st.booleans(),
)
def test_inline_matches_sdssplitargs(line: bytes, crlf: bool) -> None:
    if line.startswith(b"*"):
        line = b"a" + line  # a leading '*' would make it a multibulk request
    data = line + (b"\r\n" if crlf else b"\n")
    # processInlineBuffer strips one \r before the \n, then calls sdssplitargs
    c_line = data[:-1]
    if c_line.endswith(b"\r"):
        c_line = c_line[:-1]
    expected = sdssplitargs(c_line)
    commands, parser = feed_all(data)
    if expected is None:
        assert commands == []
        assert error_wire(parser) == UNBALANCED
    else:
        assert parser.error is None
        assert commands == ([expected] if expected else [])


# --------------------------------------------------------------------------- RESP arrays


def test_multibulk_simple() -> None:
    assert parse_ok(b"*2\r\n$3\r\nGET\r\n$1\r\na\r\n") == [[b"GET", b"a"]]


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"a\r\nb",
        b"\r\n",
        b"\x00",
        b"a\x00b\nc\r",
        b"*1\r\n$4\r\nPING\r\n",
        b'"unbalanced',
        bytes(range(256)),
    ],
)
def test_multibulk_is_binary_safe(value: bytes) -> None:
    data = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$%d\r\n%b\r\n" % (len(value), value)
    assert parse_ok(data) == [[b"SET", b"k", value]]


def test_multibulk_waits_for_all_bytes() -> None:
    data = b"*2\r\n$4\r\nECHO\r\n$5\r\nhello\r\n"
    for cut in range(len(data)):
        partial = Parser()
        assert partial.feed(data[:cut]) == []
        assert partial.error is None
    parser = Parser()
    assert parser.feed(data[:-1]) == []
    assert parser.error is None
    assert parser.feed(data[-1:]) == [[b"ECHO", b"hello"]]


@pytest.mark.parametrize("empty", [b"*0\r\n", b"*-1\r\n", b"*-2\r\n"])
def test_empty_and_null_arrays_are_ignored(empty: bytes) -> None:
    assert parse_ok(empty) == []
    assert parse_ok(empty + b"PING\r\n" + empty + b"*1\r\n$4\r\nPING\r\n") == [
        [b"PING"],
        [b"PING"],
    ]


def test_trailing_crlf_of_bulk_is_skipped_unchecked_like_redis() -> None:
    # processMultibulkBuffer advances bulklen + 2 without looking at the two bytes
    assert parse_ok(b"*1\r\n$4\r\nPINGxx*1\r\n$4\r\nPING\r\n") == [[b"PING"], [b"PING"]]


@pytest.mark.parametrize(
    "header",
    [
        b"*x\r\n",
        b"*+3\r\n",
        b"* 3\r\n",
        b"*3 \r\n",
        b"*03\r\n",
        b"*00\r\n",
        b"*-0\r\n",
        b"*\r\n",
        b"*3x\r\n",
        b"*1.5\r\n",
        b"*0x10\r\n",
        b"*2147483648\r\n",  # > INT_MAX
        b"*99999999999999999999\r\n",
        b"*abc\r\n",
    ],
)
def test_invalid_multibulk_length(header: bytes) -> None:
    assert parse_error(header + b"$4\r\nPING\r\n") == BAD_MULTIBULK


def test_int_max_multibulk_length_is_accepted() -> None:
    commands, parser = feed_all(b"*2147483647\r\n$4\r\nPING\r\n")
    assert commands == []
    assert parser.error is None  # still waiting for the other arguments


@pytest.mark.parametrize(
    ("data", "got"),
    [
        (b"*1\r\nfoo\r\n", "f"),
        (b"*2\r\n$3\r\nGET\r\n:1\r\n", ":"),
        (b"*1\r\n*1\r\n$4\r\nPING\r\n", "*"),
        (b"*1\r\nPING\r\n", "P"),
    ],
)
def test_expected_dollar(data: bytes, got: str) -> None:
    assert parse_error(data) == f"-ERR Protocol error: expected '$', got '{got}'\r\n".encode()


@pytest.mark.parametrize("byte", [b"\r", b"\n", b"\x00", b"\xff"])
def test_expected_dollar_with_unprintable_byte_stays_one_line(byte: bytes) -> None:
    wire = parse_error(b"*1\r\n" + byte + b"xx\r\n")
    assert wire.startswith(b"-ERR Protocol error: expected '$', got '")
    assert wire.endswith(b"'\r\n")
    assert wire.count(b"\r") == 1
    assert wire.count(b"\n") == 1


@pytest.mark.parametrize(
    "bulk_header",
    [b"$-1", b"$-5", b"$x", b"$+3", b"$ 3", b"$3 ", b"$03", b"$-0", b"$", b"$3x", b"$1.0",
     b"$9223372036854775808", b"$99999999999999999999"],
)
def test_invalid_bulk_length(bulk_header: bytes) -> None:
    assert parse_error(b"*1\r\n" + bulk_header + b"\r\nabc\r\n") == BAD_BULK


def test_mixed_inline_and_multibulk() -> None:
    data = (
        b"PING\r\n"
        b"*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n"
        b"SET a 'b c'\n"
        b"\r\n"
        b"*1\r\n$4\r\nPING\r\n"
        b"GET a\r\n"
    )
    assert parse_ok(data) == [
        [b"PING"],
        [b"ECHO", b"hi"],
        [b"SET", b"a", b"b c"],
        [b"PING"],
        [b"GET", b"a"],
    ]


def test_pipelining_many_commands_in_one_feed() -> None:
    expected = []
    data = bytearray()
    for i in range(1000):
        argv = [b"SET", b"key:%d" % i, b"value\r\n%d" % i]
        expected.append(argv)
        data += encode_command(argv)
        data += b"GET key:%d\r\n" % i
        expected.append([b"GET", b"key:%d" % i])
    commands, parser = feed_all(bytes(data))
    assert parser.error is None
    assert commands == expected


_MIXED_STREAM = (
    b"PING\r\n"
    b"*3\r\n$3\r\nSET\r\n$3\r\nk\r\n\r\n$4\r\nv\x00\r\n\r\n"
    b'ECHO "a\\x41 b" \'c d\'\n'
    b"\r\n  \n"
    b"*0\r\n*-1\r\n"
    b"*2\r\n$3\r\nGET\r\n$0\r\n\r\n"
    b"DEL a\x00ignored\r\n"
)
_MIXED_EXPECTED = [
    [b"PING"],
    [b"SET", b"k\r\n", b"v\x00\r\n"],
    [b"ECHO", b"aA b", b"c d"],
    [b"GET", b""],
    [b"DEL", b"a"],
]


def test_split_at_every_byte_boundary() -> None:
    assert feed_all(_MIXED_STREAM)[0] == _MIXED_EXPECTED
    assert feed_bytewise(_MIXED_STREAM)[0] == _MIXED_EXPECTED
    for cut in range(len(_MIXED_STREAM) + 1):
        commands, parser = feed_chunks([_MIXED_STREAM[:cut], _MIXED_STREAM[cut:]])
        assert parser.error is None
        assert commands == _MIXED_EXPECTED, cut


def test_each_command_is_returned_as_soon_as_it_is_complete() -> None:
    parser = Parser()
    first = b"*1\r\n$4\r\nPING\r\n"
    assert parser.feed(first + b"*2\r\n$3\r\nGET") == [[b"PING"]]
    assert parser.feed(b"\r\n$1\r\na\r\nPI") == [[b"GET", b"a"]]
    assert parser.feed(b"NG\n") == [[b"PING"]]


@pytest.mark.parametrize(
    ("bad", "wire"),
    [
        (b"*x\r\n", BAD_MULTIBULK),
        (b"*1\r\n$-1\r\n", BAD_BULK),
        (b"*1\r\nx\r\n", b"-ERR Protocol error: expected '$', got 'x'\r\n"),
        (b'ECHO "a"b\r\n', UNBALANCED),
    ],
)
def test_commands_before_an_error_are_returned(bad: bytes, wire: bytes) -> None:
    good = b"PING\r\n*3\r\n$3\r\nSET\r\n$1\r\na\r\n$1\r\nb\r\n"
    commands, parser = feed_all(good + bad + b"GET a\r\n")
    assert commands == [[b"PING"], [b"SET", b"a", b"b"]]
    assert error_wire(parser) == wire
    # once broken, the parser returns nothing more, even for valid input
    assert parser.feed(b"PING\r\n") == []
    assert parser.feed(b"*1\r\n$4\r\nPING\r\n") == []
    assert error_wire(parser) == wire
    # the same over many small feeds
    commands, parser = feed_bytewise(good + bad + b"GET a\r\n")
    assert commands == [[b"PING"], [b"SET", b"a", b"b"]]
    assert error_wire(parser) == wire


def test_error_in_a_later_feed() -> None:
    parser = Parser()
    assert parser.feed(b"PING\r\n") == [[b"PING"]]
    assert parser.error is None
    assert parser.feed(b"*1\r\n$x\r\n") == []
    assert error_wire(parser) == BAD_BULK
    assert parser.feed(b"PING\r\n") == []


def test_large_bulk_in_64k_chunks() -> None:
    value = bytes(range(256)) * (5 * 1024 * 1024 // 256) + b"\r\n\x00end"
    data = encode_command([b"SET", b"big", value]) + b"PING\r\n"
    parser = Parser()
    commands: list[Argv] = []
    chunk = 64 * 1024
    for start in range(0, len(data), chunk):
        got = parser.feed(data[start : start + chunk])
        if start + chunk < len(data) - len(b"PING\r\n"):
            assert got == []
        commands.extend(got)
    assert parser.error is None
    assert len(commands) == 2
    assert commands[0][:2] == [b"SET", b"big"]
    assert len(commands[0][2]) == len(value)
    assert commands[0][2] == value
    assert commands[1] == [b"PING"]


@pytest.mark.parametrize("chunk", [7, 1000, 64 * 1024])
def test_large_array_in_chunks_keeps_only_its_incomplete_tail(chunk: int) -> None:
    """An MSET of 20,000 pairs arriving in many reads: the arguments already read are kept,
    and the bytes held back never exceed one read plus one argument (they used to be the whole
    array so far, parsed again from its start at every read)."""
    argv = [b"MSET"] + [b"key:%06d" % (i // 2) if i % 2 == 0 else b"v\r\n%d" % i
                        for i in range(40_000)]
    data = encode_command(argv) + encode_command([b"GET", b"k"])
    parser = Parser()
    commands: list[Argv] = []
    for start in range(0, len(data), chunk):
        commands += parser.feed(data[start : start + chunk])
        assert len(parser._buf) <= chunk + 32
    assert parser.error is None
    assert commands == [argv, [b"GET", b"k"]]


@settings(max_examples=200, deadline=None)
@given(argvs=st.lists(st.lists(st.binary(max_size=12), min_size=1, max_size=30), min_size=1,
                      max_size=4),
       data=st.data())
def test_arrays_resumed_across_reads_match_one_read(argvs: list[Argv],
                                                    data: st.DataObject) -> None:
    wire = b"".join(encode_command(a) for a in argvs) + b"*2\r\n$3\r\nGET\r\nx"
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=12), label="cuts")
    commands, parser = feed_chunks(split_at(wire, cuts))
    assert commands == argvs
    assert error_wire(parser) == b"-ERR Protocol error: expected '$', got 'x'\r\n"


def test_long_inline_line_has_no_size_limit() -> None:
    # Redis caps an unfinished inline line at 64 KiB; DumbKV is unbounded by design.
    value = b"v" * 200_000
    data = b"SET k " + value + b"\r\n"
    commands, parser = feed_chunks([data[i : i + 4096] for i in range(0, len(data), 4096)])
    assert parser.error is None
    assert commands == [[b"SET", b"k", value]]


# --------------------------------------------------------------------------- property tests

_argv = st.builds(
    lambda first, rest: [first, *rest],
    st.binary(min_size=1, max_size=30),
    st.lists(st.binary(max_size=40), max_size=6),
)


@settings(max_examples=300, deadline=None)
@given(argv=_argv)
def test_encode_command_round_trip(argv: Argv) -> None:
    data = encode_command(argv)
    assert parse_ok(data) == [argv]


@settings(max_examples=300, deadline=None)
@given(argv=_argv)
def test_encode_inline_round_trip(argv: Argv) -> None:
    data = encode_inline(argv)
    assert data.endswith(b"\r\n")
    assert all(32 <= byte < 127 for byte in data[:-2])
    assert not data.startswith(b"*")
    assert parse_ok(data) == [argv]


@settings(max_examples=200, deadline=None)
@given(
    stream=st.lists(st.tuples(_argv, st.booleans()), min_size=1, max_size=6),
    data=st.data(),
)
def test_round_trip_of_split_pipelines(
    stream: list[tuple[Argv, bool]], data: st.DataObject
) -> None:
    wire = b"".join(encode_inline(a) if inline else encode_command(a) for a, inline in stream)
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=8), label="cuts")
    commands, parser = feed_chunks(split_at(wire, cuts))
    assert parser.error is None
    assert commands == [argv for argv, _ in stream]


_GARBAGE_TOKENS = [
    b"*", b"$", b"\r\n", b"\n", b"\r", b"0", b"1", b"2", b"-1", b"3", b"+", b" ", b'"', b"'",
    b"\\", b"x", b"4", b"\x00", b"a", b"PING", b"\xff", b"*1\r\n", b"$1\r\n", b"*2\r\n",
]  # fmt: skip

_garbage = st.one_of(
    st.binary(max_size=60),
    st.lists(st.sampled_from(_GARBAGE_TOKENS), max_size=30).map(b"".join),
)


@settings(max_examples=500, deadline=None)
@given(garbage=_garbage, data=st.data())
def test_garbage_never_raises(garbage: bytes, data: st.DataObject) -> None:
    commands, parser = feed_all(garbage)
    for argv in commands:
        assert argv
        assert all(isinstance(arg, bytes) for arg in argv)
    if parser.error is not None:
        assert isinstance(parser.error, ProtocolError)
        wire = parser.error.wire()
        assert wire.startswith(b"-ERR Protocol error: ")
        assert wire.endswith(b"\r\n")
        assert wire.count(b"\n") == 1
        assert wire.count(b"\r") == 1
        assert parser.feed(b"PING\r\n") == []
    # how the bytes are split never changes the outcome
    cuts = data.draw(st.lists(st.integers(0, len(garbage)), max_size=6), label="cuts")
    split_commands, split_parser = feed_chunks(split_at(garbage, cuts))
    assert split_commands == commands
    assert error_wire(split_parser) == error_wire(parser)
    bytewise_commands, bytewise_parser = feed_bytewise(garbage)
    assert bytewise_commands == commands
    assert error_wire(bytewise_parser) == error_wire(parser)


# --------------------------------------------------------------------------- strict_int


@pytest.mark.parametrize(
    ("text", "value"),
    [
        (b"0", 0),
        (b"7", 7),
        (b"-7", -7),
        (b"9223372036854775807", 2**63 - 1),
        (b"-9223372036854775808", -(2**63)),
        (b"9223372036854775808", None),
        (b"-9223372036854775809", None),
        (b"", None),
        (b"-", None),
        (b"-0", None),
        (b"01", None),
        (b"+1", None),
        (b" 1", None),
        (b"1 ", None),
        (b"1.0", None),
        (b"\xd9\xa1", None),  # non-ASCII digits
    ],
)
def test_strict_int(text: bytes, value: int | None) -> None:
    assert strict_int(text) == value


# --------------------------------------------------------------------------- encoder


@pytest.mark.parametrize("resp3", [False, True])
@pytest.mark.parametrize(
    ("reply", "wire"),
    [
        ("OK", b"+OK\r\n"),
        ("", b"+\r\n"),
        ("a\r\nb\nc", b"+a  b c\r\n"),
        ("caf\u00e9", "+caf\u00e9\r\n".encode()),
        (b"abc", b"$3\r\nabc\r\n"),
        (b"", b"$0\r\n\r\n"),
        (b"a\r\n\x00", b"$4\r\na\r\n\x00\r\n"),
        (0, b":0\r\n"),
        (-5, b":-5\r\n"),
        (2**63 - 1, b":9223372036854775807\r\n"),
        ([], b"*0\r\n"),
        ([b"a", 1, "OK"], b"*3\r\n$1\r\na\r\n:1\r\n+OK\r\n"),
        ([[b"x"], []], b"*2\r\n*1\r\n$1\r\nx\r\n*0\r\n"),
        (CommandError("syntax error"), b"-ERR syntax error\r\n"),
        (IntegrityError("bad row"), b"-SERVERERR bad row\r\n"),
        (AuthError("Authentication required.", prefix="NOAUTH"),
         b"-NOAUTH Authentication required.\r\n"),
        (ProtocolError("invalid bulk length"), BAD_BULK),
        (CommandError("a\r\nb"), b"-ERR a  b\r\n"),
        ([CommandError("nope"), b"v"], b"*2\r\n-ERR nope\r\n$1\r\nv\r\n"),
    ],
)
def test_encode_same_in_both_protocols(reply: object, wire: bytes, resp3: bool) -> None:
    assert encode(reply, resp3) == wire  # type: ignore[arg-type]


def test_encode_nil() -> None:
    assert encode(None) == b"$-1\r\n"
    assert encode(None, False) == b"$-1\r\n"
    assert encode(None, resp3=True) == b"_\r\n"


def test_encode_nested_list_with_nil() -> None:
    reply = [b"a", None, [None, 1]]
    assert encode(reply) == b"*3\r\n$1\r\na\r\n$-1\r\n*2\r\n$-1\r\n:1\r\n"
    assert encode(reply, resp3=True) == b"*3\r\n$1\r\na\r\n_\r\n*2\r\n_\r\n:1\r\n"


def test_encode_dict() -> None:
    reply = {"server": "dumbkv", "proto": 3, "name": None, "modules": []}
    assert encode(reply) == (
        b"*8\r\n"
        b"$6\r\nserver\r\n+dumbkv\r\n"
        b"$5\r\nproto\r\n:3\r\n"
        b"$4\r\nname\r\n$-1\r\n"
        b"$7\r\nmodules\r\n*0\r\n"
    )
    assert encode(reply, resp3=True) == (
        b"%4\r\n"
        b"$6\r\nserver\r\n+dumbkv\r\n"
        b"$5\r\nproto\r\n:3\r\n"
        b"$4\r\nname\r\n_\r\n"
        b"$7\r\nmodules\r\n*0\r\n"
    )
    assert encode({}) == b"*0\r\n"
    assert encode({}, resp3=True) == b"%0\r\n"


def test_encode_nested_dict() -> None:
    reply = [{"a": {"b": b"c"}}]
    assert encode(reply) == b"*1\r\n*2\r\n$1\r\na\r\n*2\r\n$1\r\nb\r\n$1\r\nc\r\n"
    assert encode(reply, resp3=True) == b"*1\r\n%1\r\n$1\r\na\r\n%1\r\n$1\r\nb\r\n$1\r\nc\r\n"


def test_encode_error_is_its_wire_form() -> None:
    for error in (CommandError("x"), ServerError("y"), DumbKVError("z"), AuthError("w")):
        assert encode(error) == error.wire()
        assert encode(error, resp3=True) == error.wire()


@pytest.mark.parametrize("bad", [1.5, object(), ("a",), {"a"}])
def test_encode_rejects_other_types(bad: object) -> None:
    with pytest.raises(TypeError):
        encode(bad)  # type: ignore[arg-type]


def test_encode_command() -> None:
    assert encode_command([b"SET", "k\u00e9", 5, b""]) == (
        b"*4\r\n$3\r\nSET\r\n$3\r\nk\xc3\xa9\r\n$1\r\n5\r\n$0\r\n\r\n"
    )
    assert encode_command([b"PING"]) == b"*1\r\n$4\r\nPING\r\n"
    assert encode_command(iter([b"a\r\n"])) == b"*1\r\n$3\r\na\r\n\r\n"


def test_encode_inline() -> None:
    assert encode_inline([b"SET", b"a b", b""]) == b'"SET" "a b" ""\r\n'
    line = encode_inline([b'q"\\\n\r\x00\xff\'', b"\t"])
    assert all(32 <= byte < 127 for byte in line[:-2])  # typeable: printable ASCII only
    assert parse_ok(line) == [[b'q"\\\n\r\x00\xff\'', b"\t"]]


_text = st.text(st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=10)
_leaf = st.one_of(
    st.none(),
    _text,
    st.binary(max_size=20),
    st.integers(-(2**63), 2**63 - 1),
)
_reply = st.recursive(
    _leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(_text, inner, max_size=3)
    ),
    max_leaves=15,
)


def _expected_decoded(reply: object, resp3: bool) -> object:
    if isinstance(reply, list):
        return [_expected_decoded(item, resp3) for item in reply]
    if isinstance(reply, dict):
        if resp3:
            return {key.encode(): _expected_decoded(value, resp3) for key, value in reply.items()}
        flat: list[object] = []
        for key, value in reply.items():
            flat += [key.encode(), _expected_decoded(value, resp3)]
        return flat
    return reply


@settings(max_examples=200, deadline=None)
@given(reply=_reply, resp3=st.booleans())
def test_encode_decodes_back(reply: object, resp3: bool) -> None:
    wire = encode(reply, resp3)  # type: ignore[arg-type]
    decoded, end = decode_reply(wire, resp3)
    assert end == len(wire)
    assert decoded == _expected_decoded(reply, resp3)


@settings(max_examples=200, deadline=None)
@given(replies=st.lists(_reply, min_size=1, max_size=4), resp3=st.booleans(), data=st.data())
def test_reply_parser_gives_the_same_replies_however_the_bytes_are_split(
    replies: list[object], resp3: bool, data: st.DataObject
) -> None:
    wire = b"".join(encode(r, resp3) for r in replies)  # type: ignore[arg-type]
    expected = [decode_reply(encode(r, resp3), resp3)[0] for r in replies]  # type: ignore[arg-type]
    cuts = data.draw(st.lists(st.integers(0, len(wire)), max_size=10), label="cuts")
    parser = resp.ReplyParser()
    got: list[object] = []
    for chunk in split_at(wire, cuts):
        got += parser.feed(chunk)
    assert got == expected


def test_reply_parser_waits_for_a_large_value_without_parsing_it_again() -> None:
    """After the first read of a large value the parser knows how many bytes the reply needs,
    so the reads in between are only stored (they used to re-parse everything so far)."""
    value = bytes(range(256)) * 4096 + b"\r\n"
    wire = b"*2\r\n$2\r\nok\r\n" + encode(value) + b":7\r\n"
    parser = resp.ReplyParser()
    got = parser.feed(wire[:1000])
    assert got == []
    assert parser._need >= len(value)  # the whole array, known from the bulk's header
    for start in range(1000, len(wire), 1000):
        got += parser.feed(wire[start : start + 1000])
    assert got == [[b"ok", value], 7]


@pytest.mark.parametrize("nested", [False, True])
def test_reply_parser_keeps_only_the_incomplete_item_of_a_long_array(nested: bool) -> None:
    """An MGET-like reply of 20,000 items (inside a map, when nested) in 1000-byte reads:
    the items read so far are kept, and the bytes held back never exceed one read plus one
    item (they used to be the whole reply so far, parsed again at every read)."""
    items: list[object] = [b"value:%06d" % i if i % 3 else None for i in range(20_000)]
    reply: object = {"outer": [1, items, "x"]} if nested else items
    wire = encode(reply, resp3=True) + b"+OK\r\n"  # type: ignore[arg-type]
    parser = resp.ReplyParser()
    got: list[object] = []
    for start in range(0, len(wire), 1000):
        got += parser.feed(wire[start : start + 1000])
        assert len(parser._buf) <= 1000 + 32
    assert got == [{b"outer": [1, items, "x"]} if nested else items, "OK"]


# --------------------------------------------------------------------------- the plain-array path


def _slow_feed(data: bytes) -> tuple[list[Argv], bytes | None]:
    """Parse with the general path only (the plain-array shortcut switched off)."""
    saved = resp._FAST_MAX
    resp._FAST_MAX = -1
    try:
        commands, parser = feed_all(data)
    finally:
        resp._FAST_MAX = saved
    return commands, error_wire(parser)


def test_plain_arrays_take_a_whole_pipeline() -> None:
    wire = encode_command([b"SET", b"k", b"v"]) + encode_command([b"GET", b""]) * 2
    assert resp._plain_arrays(wire) == ([[b"SET", b"k", b"v"], [b"GET", b""], [b"GET", b""]],
                                        len(wire))


@pytest.mark.parametrize(
    "rest",
    [
        encode_command([b"SET", b"k", b"a\r\nb"]),  # CRLF inside an argument
        encode_command([b"SET", b"k", b"x" * 10_000]),  # beyond the canonical header table
        b"*2\r\n$3\r\nGET\r\n$1\r\n",  # incomplete
        b"*2\r\n$03\r\nGET\r\n$1\r\nk\r\n",  # non-canonical header
        b"*1\r\n$3\r\nGETxy",  # bulk not followed by CRLF
        b"*0\r\n",
        b"PING\r\n",
    ],
)
def test_plain_arrays_stop_where_the_general_parser_must_go_on(rest: bytes) -> None:
    head = encode_command([b"GET", b"k"])
    assert resp._plain_arrays(head + rest + head) == ([[b"GET", b"k"]], len(head))


_PLAIN_TOKENS = [
    b"*1\r\n", b"*2\r\n", b"*3\r\n", b"*02\r\n", b"*0\r\n", b"*-1\r\n", b"$0\r\n", b"$1\r\n",
    b"$2\r\n", b"$3\r\n", b"$01\r\n", b"$-1\r\n", b"\r\n", b"a", b"ab", b"GET", b"\r", b"\n",
    b"x\r\n", b"PING\r\n", b"$", b"*",
]  # fmt: skip


@settings(max_examples=500, deadline=None)
@given(
    stream=st.lists(
        st.one_of(
            _argv.map(encode_command),
            st.lists(st.sampled_from(_PLAIN_TOKENS), max_size=12).map(b"".join),
        ),
        max_size=8,
    )
)
def test_plain_arrays_agree_with_the_general_parser(stream: list[bytes]) -> None:
    wire = b"".join(stream)
    commands, parser = feed_all(wire)
    assert (commands, error_wire(parser)) == _slow_feed(wire)


def test_encode_command_takes_byte_buffers_text_and_numbers_and_refuses_the_rest() -> None:
    """The same in the compiled and the plain Python build (the argument types are checked in
    the code, not by annotations)."""
    assert encode_command([b"SET", bytearray(b"k"), memoryview(b"v\x00"), "é", 7, 1.5]) == (
        b"*6\r\n$3\r\nSET\r\n$1\r\nk\r\n$2\r\nv\x00\r\n$2\r\n\xc3\xa9\r\n$1\r\n7\r\n$3\r\n1.5\r\n"
    )
    for bad in (None, object(), [b"x"]):
        with pytest.raises(ClientError, match=r"^invalid argument of type \w+: send bytes"):
            encode_command([b"SET", b"k", bad])
