"""The public names of ``dumbkv``, the client's URL form and its error table (no I/O)."""

from __future__ import annotations

import builtins

import pytest

import dumbkv
from dumbkv import errors
from dumbkv.client import ERROR_CLASSES, Address, parse_url
from dumbkv.client.commands import Commands
from dumbkv.client.errormap import error_from_reply
from dumbkv.resp import ErrorReply


def test_all_is_exactly_the_public_api() -> None:
    assert dumbkv.__all__ == [
        "AsyncClient",
        "AsyncPipeline",
        "AuthError",
        "Client",
        "ClientError",
        "CommandError",
        "ConnectionError",
        "DumbKVError",
        "InvalidReplyError",
        "Pipeline",
        "ServerError",
        "TimeoutError",
        "__version__",
    ]
    for name in dumbkv.__all__:
        assert getattr(dumbkv, name) is not None, name
    for name in dumbkv.__all__:
        if name[0].isupper() and name.endswith("Error"):
            assert getattr(dumbkv, name) is getattr(errors, name)


def test_exception_tree() -> None:
    for cls in (dumbkv.ClientError, dumbkv.ServerError, dumbkv.ConnectionError):
        assert issubclass(cls, dumbkv.DumbKVError)
    assert issubclass(dumbkv.CommandError, dumbkv.ClientError)
    assert issubclass(dumbkv.AuthError, dumbkv.ClientError)
    assert issubclass(dumbkv.TimeoutError, dumbkv.ConnectionError)
    assert issubclass(dumbkv.InvalidReplyError, dumbkv.ConnectionError)
    assert issubclass(dumbkv.ConnectionError, builtins.ConnectionError)
    assert issubclass(dumbkv.TimeoutError, builtins.TimeoutError)
    assert not issubclass(dumbkv.ConnectionError, dumbkv.ClientError | dumbkv.ServerError)


def test_both_clients_and_pipelines_share_the_command_methods() -> None:
    for cls in (dumbkv.Client, dumbkv.AsyncClient, dumbkv.Pipeline, dumbkv.AsyncPipeline):
        assert issubclass(cls, Commands)
        assert cls.get is Commands.get and cls.set is Commands.set
    public = [name for name in vars(Commands) if not name.startswith("_")]
    assert len(public) >= 30
    for name in public:
        assert getattr(Commands, name).__doc__, name


@pytest.mark.parametrize(("url", "address"), [
    ("dumbkv://", Address()),
    ("dumbkv://example.org", Address(host="example.org")),
    ("dumbkv://10.0.0.1:7400/3", Address("10.0.0.1", 7400, 3)),
    ("dumbkv://:s%40cret@host:1/15", Address("host", 1, 15, "s@cret")),
    ("dumbkv://default:pw@host/", Address("host", 7379, 0, "pw")),
    ("dumbkv://[::1]:7379", Address("::1", 7379)),
])
def test_parse_url(url: str, address: Address) -> None:
    assert parse_url(url) == address


@pytest.mark.parametrize("url", [
    "redis://host", "dumbkv://host:port", "dumbkv://host/abc", "dumbkv://bob:pw@host",
    "dumbkv://host/1?x=1", "dumbkv://host:99999", "dumbkv://host//3", "dumbkv://host/3/",
    "dumbkv://host/\u0663", "dumbkv://host/-1",
])
def test_parse_url_rejects(url: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_url(url)
    assert "pw" not in str(caught.value)


def test_from_url_keywords_override() -> None:
    client = dumbkv.Client.from_url("dumbkv://:pw@h:1/2", db=4, timeout=3)
    assert (client.host, client.port, client.db, client.password, client.timeout) == (
        "h", 1, 4, "pw", 3)
    aclient = dumbkv.AsyncClient.from_url("dumbkv://h", max_connections=3)
    assert aclient.pool.max_connections == 3


@pytest.mark.parametrize(("line", "cls"), [
    ("ERR syntax error", dumbkv.CommandError),
    ("NOPROTO unsupported protocol version", dumbkv.CommandError),
    ("NOAUTH Authentication required.", dumbkv.AuthError),
    ("WRONGPASS invalid username-password pair or user is disabled.", dumbkv.AuthError),
    ("SERVERERR sqlite backend did not answer within 5s", dumbkv.ServerError),
    ("WRONGTYPE not one of ours", dumbkv.ClientError),
])
def test_error_table(line: str, cls: type[dumbkv.DumbKVError]) -> None:
    error = error_from_reply(ErrorReply(line))
    assert type(error) is cls
    prefix, _, message = line.partition(" ")
    assert (error.prefix, error.message, str(error)) == (prefix, message, message)
    assert ERROR_CLASSES.get(prefix, dumbkv.ClientError) is cls
