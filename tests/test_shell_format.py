"""``dumbkv cli``'s reply formatting, value by value (redis-cli's forms, as redis-cli 7.0 prints
them; test_shell.py compares with the real redis-cli over a real server)."""

from __future__ import annotations

import pytest

from dumbkv.resp import ClientReply, ErrorReply, ReplyParser, quote
from dumbkv.shell.format import format_reply, pretty, raw


@pytest.mark.parametrize(("data", "shown"), [
    (b"", b'""'),
    (b"plain text", b'"plain text"'),
    (b"a\x00b", b'"a\\x00b"'),
    (b'q"b\\s', b'"q\\"b\\\\s"'),
    (b"\n\r\t\x07\x08", b'"\\n\\r\\t\\a\\b"'),
    (b"\x0b\x0c\x1f\x7f\x80\xff", b'"\\x0b\\x0c\\x1f\\x7f\\x80\\xff"'),
    ("é".encode(), b'"\\xc3\\xa9"'),
    (b"~ !", b'"~ !"'),
])
def test_bulk_strings_are_quoted_and_escaped_like_redis_cli(data: bytes, shown: bytes) -> None:
    assert quote(data) == shown
    assert pretty(data) == shown + b"\n"
    assert raw(data) == data + b"\n"


@pytest.mark.parametrize(("reply", "shown_pretty", "shown_raw"), [
    (None, b"(nil)\n", b"\n"),
    (3, b"(integer) 3\n", b"3\n"),
    (-9223372036854775808, b"(integer) -9223372036854775808\n", b"-9223372036854775808\n"),
    ("OK", b"OK\n", b"OK\n"),
    (ErrorReply("ERR syntax error"), b"(error) ERR syntax error\n", b"ERR syntax error\n\n"),
    (True, b"(true)\n", b"(true)\n"),
    (False, b"(false)\n", b"(false)\n"),
    (1.5, b"(double) 1.5\n", b"1.5\n"),
    (3.0, b"(double) 3\n", b"3\n"),
    (float("inf"), b"(double) inf\n", b"inf\n"),
    ([], b"(empty array)\n", b"\n"),
    ({}, b"(empty hash)\n", b"\n"),
])
def test_scalars_and_empty_aggregates(reply: ClientReply, shown_pretty: bytes,
                                      shown_raw: bytes) -> None:
    assert pretty(reply) == shown_pretty
    assert raw(reply) == shown_raw
    assert format_reply(reply, as_raw=False) == shown_pretty
    assert format_reply(reply, as_raw=True) == shown_raw


def test_an_error_reply_is_an_error_even_when_its_text_looks_like_a_status() -> None:
    assert pretty(ErrorReply("OK")) == b"(error) OK\n"
    assert pretty("OK") == b"OK\n"


def test_lists_are_numbered_with_nested_indentation() -> None:
    reply: ClientReply = [b"a", None, 7, [b"x", [b"deep"], []], "OK"]
    assert pretty(reply) == (
        b'1) "a"\n'
        b"2) (nil)\n"
        b"3) (integer) 7\n"
        b'4) 1) "x"\n'
        b'   2) 1) "deep"\n'
        b"   3) (empty array)\n"
        b"5) OK\n"
    )
    assert raw(reply) == b"a\n\n7\nx\ndeep\n\nOK\n"


def test_indexes_are_right_aligned_to_the_widest_and_nesting_follows_the_width() -> None:
    reply: ClientReply = [b"v%d" % i for i in range(1, 11)]
    reply[9] = [b"in", b"ner"]
    lines = pretty(reply).split(b"\n")
    assert lines[0] == b' 1) "v1"'
    assert lines[8] == b' 9) "v9"'
    assert lines[9] == b'10) 1) "in"'
    assert lines[10] == b'    2) "ner"'
    assert lines[11:] == [b""]


def test_maps_print_key_arrow_value_like_redis_cli() -> None:
    reply: ClientReply = {b"proto": 3, b"modules": [], b"nested": [b"a", b"b"]}
    assert pretty(reply) == (
        b'1# "proto" => (integer) 3\n'
        b'2# "modules" => (empty array)\n'
        b'3# "nested" => 1) "a"\n'
        b'   2) "b"\n'
    )
    assert raw(reply) == b"proto 3\nmodules \nnested a\nb\n"


def test_replies_straight_from_the_wire() -> None:
    """The formatter takes what resp.ReplyParser produces, RESP2 and RESP3 alike."""
    wire = (b"*3\r\n$1\r\na\r\n$-1\r\n:5\r\n"
            b"_\r\n"
            b"-WRONGTYPE no\r\n"
            b"%1\r\n+k\r\n#t\r\n")
    replies = ReplyParser().feed(wire)
    assert [pretty(reply) for reply in replies] == [
        b'1) "a"\n2) (nil)\n3) (integer) 5\n',
        b"(nil)\n",
        b"(error) WRONGTYPE no\n",
        b"1# k => (true)\n",
    ]
