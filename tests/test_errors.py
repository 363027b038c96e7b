"""errors.py: the error tree, SLO statuses, wire prefixes and the one-line wire form."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dumbkv import errors
from dumbkv.errors import (
    AuthError,
    ClientError,
    CommandError,
    DumbKVError,
    IntegrityError,
    ProtocolError,
    ServerError,
    StoreError,
)

CLIENT_ERRORS = [ClientError, CommandError, AuthError]
SERVER_ERRORS = [ServerError, StoreError, IntegrityError]


def test_tree() -> None:
    for cls in (ClientError, ServerError):
        assert issubclass(cls, DumbKVError)
    assert issubclass(DumbKVError, Exception)
    for cls in (ProtocolError, CommandError, AuthError):
        assert issubclass(cls, ClientError)
        assert not issubclass(cls, ServerError)
    for cls in (StoreError, IntegrityError):
        assert issubclass(cls, ServerError)
        assert not issubclass(cls, ClientError)
    assert not issubclass(ClientError, ServerError)
    assert not issubclass(ServerError, ClientError)


def test_all_names_exist() -> None:
    for name in errors.__all__:
        assert hasattr(errors, name), name
    assert set(errors.__all__) >= {
        "DumbKVError", "ClientError", "ServerError", "ProtocolError", "CommandError",
        "AuthError", "StoreError", "IntegrityError",
    }  # fmt: skip


@pytest.mark.parametrize("cls", CLIENT_ERRORS)
def test_client_errors(cls: type[DumbKVError]) -> None:
    error = cls("syntax error")
    assert cls.status == "client_error"
    assert error.status == "client_error"
    assert error.prefix == "ERR"
    assert error.wire() == b"-ERR syntax error\r\n"


def test_protocol_error() -> None:
    error = ProtocolError("invalid bulk length")
    assert error.status == "client_error"
    assert error.message == "Protocol error: invalid bulk length"
    assert str(error) == "Protocol error: invalid bulk length"
    assert error.wire() == b"-ERR Protocol error: invalid bulk length\r\n"


@pytest.mark.parametrize("cls", SERVER_ERRORS)
def test_server_errors(cls: type[DumbKVError]) -> None:
    error = cls("backend timed out")
    assert cls.status == "server_error"
    assert error.status == "server_error"
    assert error.prefix == "SERVERERR"
    assert error.wire() == b"-SERVERERR backend timed out\r\n"


def test_unclassified_root_error_counts_as_server_error() -> None:
    # A DumbKVError that is neither kind is a bug, which is DumbKV's fault.
    error = DumbKVError("unexpected")
    assert error.status == "server_error"
    assert error.wire() == b"-ERR unexpected\r\n"


@pytest.mark.parametrize(
    ("prefix", "message"),
    [
        ("NOAUTH", "Authentication required."),
        ("WRONGPASS", "invalid username-password pair or user is disabled."),
    ],
)
def test_auth_prefix_override(prefix: str, message: str) -> None:
    error = AuthError(message, prefix=prefix)
    assert error.prefix == prefix
    assert error.status == "client_error"
    assert error.wire() == f"-{prefix} {message}\r\n".encode()
    # the override belongs to this instance only
    assert AuthError.prefix == "ERR"
    assert AuthError("x").wire() == b"-ERR x\r\n"


def test_prefix_override_keeps_status() -> None:
    error = CommandError("unsupported protocol version", prefix="NOPROTO")
    assert error.wire() == b"-NOPROTO unsupported protocol version\r\n"
    assert error.status == "client_error"
    server = StoreError("busy", prefix="BUSY")
    assert server.wire() == b"-BUSY busy\r\n"
    assert server.status == "server_error"
    assert StoreError.prefix == "SERVERERR"


def test_message_and_str() -> None:
    error = CommandError("value is not an integer or out of range")
    assert error.message == "value is not an integer or out of range"
    assert str(error) == "value is not an integer or out of range"
    assert error.args == ("value is not an integer or out of range",)
    with pytest.raises(ClientError, match="not an integer"):
        raise error


@pytest.mark.parametrize(
    ("message", "wire"),
    [
        ("a\r\nb", b"-ERR a  b\r\n"),
        ("a\nb\rc", b"-ERR a b c\r\n"),
        ("trailing\r\n", b"-ERR trailing  \r\n"),
        ("\n", b"-ERR  \r\n"),
    ],
)
def test_wire_strips_cr_lf(message: str, wire: bytes) -> None:
    assert CommandError(message).wire() == wire


def test_wire_strips_cr_lf_from_server_errors_and_prefixes() -> None:
    assert StoreError("db\r\ndown").wire() == b"-SERVERERR db  down\r\n"
    assert AuthError("m", prefix="NO\nAUTH").wire() == b"-NO AUTH m\r\n"


def test_wire_encoding() -> None:
    assert CommandError("caf\u00e9").wire() == "-ERR caf\u00e9\r\n".encode()
    # a lone surrogate cannot be UTF-8 encoded; it is replaced, never raised
    assert CommandError("a\udc80b").wire() == b"-ERR a?b\r\n"


@settings(max_examples=200, deadline=None)
@given(
    message=st.text(max_size=40),
    cls=st.sampled_from([*CLIENT_ERRORS, *SERVER_ERRORS, DumbKVError]),
)
def test_wire_is_always_one_line(message: str, cls: type[DumbKVError]) -> None:
    wire = cls(message).wire()
    assert wire.startswith(f"-{cls.prefix} ".encode())
    assert wire.endswith(b"\r\n")
    assert wire.count(b"\r") == 1
    assert wire.count(b"\n") == 1


def test_redis_message_constants() -> None:
    assert errors.SYNTAX == "syntax error"
    assert errors.NOT_INTEGER == "value is not an integer or out of range"
    assert errors.OVERFLOW == "increment or decrement would overflow"
