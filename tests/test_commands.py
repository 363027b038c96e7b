"""Every command over a real socket against a real server: Redis-exact replies and errors.

Reference for the expected texts: /work/shared/reference/redis-clients.md (Redis 7.0.15).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from conftest import RawClient, ServerProcess, StoreSQL, call, enc

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)

NOT_INTEGER = ("error", "ERR value is not an integer or out of range")
SYNTAX = ("error", "ERR syntax error")
NOAUTH = ("error", "NOAUTH Authentication required.")
WRONGPASS = ("error", "WRONGPASS invalid username-password pair or user is disabled.")
NO_PASSWORD = (
    "error",
    "ERR AUTH <password> called without any password configured for the default user. "
    "Are you sure your configuration is correct?",
)


# --------------------------------------------------------------------------- helpers
def wire(raw: RawClient, *args: bytes | str | int) -> bytes:
    """Send one command; return the exact bytes of a one-line reply (status, error, int, nil)."""
    raw.send(enc(*args))
    return raw.read_line() + b"\r\n"


def unknown(name: str, *args: str) -> tuple[str, str]:
    quoted = "".join(f"'{a}' " for a in args)
    return ("error", f"ERR unknown command '{name}', with args beginning with: {quoted}")


def arity(name: str) -> tuple[str, str]:
    return ("error", f"ERR wrong number of arguments for '{name}' command")


def server_ms(raw: RawClient) -> int:
    reply = call(raw, "TIME")
    assert isinstance(reply, list)
    seconds, micros = (int(x) for x in reply)
    return seconds * 1000 + micros // 1000


def is_error(reply: object, prefix: str = "ERR ") -> bool:
    return isinstance(reply, tuple) and reply[0] == "error" and reply[1].startswith(prefix)


def as_text(value: object) -> object:
    return value.decode() if isinstance(value, bytes) else value


@pytest.fixture
def auth_server(server_factory: type[ServerProcess], tmp_path: Path) -> ServerProcess:
    return server_factory(tmp_path, "--requirepass", "pw").start()


@pytest.fixture
def auth_raw(auth_server: ServerProcess) -> Iterator[RawClient]:
    client = RawClient(auth_server.address)
    yield client
    client.close()


# --------------------------------------------------------------------------- PING / ECHO / QUIT
def test_ping(raw: RawClient) -> None:
    assert wire(raw, "PING") == b"+PONG\r\n"
    raw.send(enc("PING", "hello world"))
    assert raw.read_line() == b"$11"
    assert raw.read_line() == b"hello world"
    assert call(raw, "ping", "") == b""


def test_ping_too_many_args(raw: RawClient) -> None:
    assert call(raw, "PING", "a", "b") == arity("ping")
    assert call(raw, "PING") == "PONG"


def test_echo_is_binary_safe(raw: RawClient) -> None:
    payload = bytes(range(256)) + b"\r\n\r\n" + bytes(range(255, -1, -1))
    raw.send(enc("ECHO", payload))
    assert raw.read_line() == b"$%d" % len(payload)
    assert raw.read_exact(len(payload) + 2) == payload + b"\r\n"
    assert call(raw, "ECHO", "") == b""


def test_echo_arity(raw: RawClient) -> None:
    assert call(raw, "ECHO") == arity("echo")
    assert call(raw, "ECHO", "a", "b") == arity("echo")


def test_quit_replies_ok_then_closes(raw: RawClient) -> None:
    assert wire(raw, "QUIT") == b"+OK\r\n"
    assert raw.is_closed()
    assert raw.buf == b""


def exists_seen_afresh(server: ServerProcess, *keys: str) -> list[object]:
    """``EXISTS`` of each key, asked on a new connection (the test's own one was closed)."""
    other = RawClient(server.address)
    try:
        return [call(other, "EXISTS", key) for key in keys]
    finally:
        other.close()


def test_quit_drops_the_rest_of_the_pipeline(server: ServerProcess, raw: RawClient) -> None:
    raw.send(enc("SET", "before", "1") + enc("QUIT") + enc("SET", "after", "1"))
    assert raw.read_reply() == "OK"
    assert raw.read_reply() == "OK"
    assert raw.is_closed()
    assert raw.buf == b""
    assert exists_seen_afresh(server, "before", "after") == [1, 0]


@pytest.mark.parametrize("http", [
    b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 30\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"post /x HTTP/1.0\r\n\r\n",
], ids=["post", "get-then-host", "lower-case-post"])
def test_http_on_the_resp_port_closes_before_the_body_runs(
    server: ServerProcess, raw: RawClient, http: bytes, server_factory: type[ServerProcess],
    tmp_path: Path,
) -> None:
    """What a browser sends when a web page posts to the RESP port: the body (here a SET)
    must never run. The replies to the commands before it still come."""
    raw.send(enc("SET", "before", "1") + http + enc("SET", "body", "1"))
    assert raw.read_reply() == "OK"
    if http.startswith(b"GET"):  # a GET with two arguments, answered like any other
        assert raw.read_reply() == arity("get")
    assert raw.is_closed()
    assert raw.buf == b""
    assert exists_seen_afresh(server, "before", "body") == [1, 0]
    # Before AUTH too, with no NOAUTH reply that a browser could read.
    (tmp_path / "locked").mkdir()
    locked_server = server_factory(tmp_path / "locked", "--requirepass", "pw").start()
    locked = RawClient(locked_server.address)
    try:
        locked.send(b"POST / HTTP/1.1\r\n" + enc("AUTH", "pw") + enc("SET", "body", "1"))
        assert locked.is_closed()
        assert locked.buf == b""
    finally:
        locked.close()


# --------------------------------------------------------------------------- SELECT
def test_select_isolates_databases(server: ServerProcess, raw: RawClient) -> None:
    assert call(raw, "SET", "k", "zero") == "OK"
    assert wire(raw, "SELECT", "1") == b"+OK\r\n"
    assert call(raw, "GET", "k") is None
    assert call(raw, "EXISTS", "k") == 0
    assert call(raw, "SET", "k", "one") == "OK"
    assert call(raw, "DBSIZE") == 1
    assert call(raw, "SELECT", "0") == "OK"
    assert call(raw, "GET", "k") == b"zero"
    assert call(raw, "SELECT", "15") == "OK"
    assert call(raw, "GET", "k") is None
    # Another connection starts in db 0.
    other = RawClient(server.address)
    try:
        assert call(other, "GET", "k") == b"zero"
        assert call(other, "SELECT", "1") == "OK"
        assert call(other, "GET", "k") == b"one"
    finally:
        other.close()


def test_select_errors(raw: RawClient) -> None:
    out_of_range = ("error", "ERR DB index is out of range")
    assert call(raw, "SELECT", "16") == out_of_range
    assert call(raw, "SELECT", "-1") == out_of_range
    assert call(raw, "SELECT", "abc") == NOT_INTEGER
    assert call(raw, "SELECT", "1.5") == NOT_INTEGER
    assert call(raw, "SELECT", "99999999999999999999") == NOT_INTEGER
    beyond_32_bits = ("error", "ERR value is out of range, value must between -2147483648 and "
                      "2147483647")
    assert call(raw, "SELECT", "2147483648") == beyond_32_bits
    assert call(raw, "SELECT", "-2147483649") == beyond_32_bits
    assert call(raw, "SELECT", "2147483647") == out_of_range
    assert call(raw, "SELECT") == arity("select")
    # A failed SELECT leaves the connection where it was.
    assert call(raw, "SET", "k", "v") == "OK"
    assert call(raw, "SELECT", "16") == out_of_range
    assert call(raw, "GET", "k") == b"v"


def test_databases_flag_sets_the_range(server_factory: type[ServerProcess],
                                       tmp_path: Path) -> None:
    srv = server_factory(tmp_path, "--databases", "4").start()
    raw = RawClient(srv.address)
    try:
        assert call(raw, "SELECT", "3") == "OK"
        assert call(raw, "SELECT", "4") == ("error", "ERR DB index is out of range")
        assert call(raw, "CONFIG", "GET", "databases") == [b"databases", b"4"]
    finally:
        raw.close()


# --------------------------------------------------------------------------- AUTH
def test_commands_before_auth_are_refused(auth_raw: RawClient) -> None:
    assert wire(auth_raw, "GET", "k") == b"-NOAUTH Authentication required.\r\n"
    assert call(auth_raw, "SET", "k", "v") == NOAUTH
    assert call(auth_raw, "PING") == NOAUTH
    assert call(auth_raw, "SELECT", "1") == NOAUTH
    assert call(auth_raw, "CLIENT", "SETINFO", "LIB-NAME", "redis-py") == NOAUTH
    # Unknown commands and wrong arity are reported before authentication, as Redis does.
    assert call(auth_raw, "FOO", "a") == unknown("FOO", "a")
    assert call(auth_raw, "GET") == arity("get")
    assert call(auth_raw, "AUTH", "pw") == "OK"
    assert call(auth_raw, "GET", "k") is None  # the refused SET did not happen
    assert call(auth_raw, "PING") == "PONG"


def test_auth_wrong_password(auth_raw: RawClient) -> None:
    assert wire(auth_raw, "AUTH", "nope") == (
        b"-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    )
    assert call(auth_raw, "AUTH", "default", "nope") == WRONGPASS
    assert call(auth_raw, "AUTH", "alice", "pw") == WRONGPASS
    assert call(auth_raw, "AUTH", "PW") == WRONGPASS
    assert call(auth_raw, "GET", "k") == NOAUTH


def test_auth_with_username(auth_raw: RawClient) -> None:
    assert call(auth_raw, "AUTH", "default", "pw") == "OK"
    assert call(auth_raw, "SET", "k", "v") == "OK"
    assert call(auth_raw, "GET", "k") == b"v"


def test_auth_is_per_connection(auth_server: ServerProcess, auth_raw: RawClient) -> None:
    assert call(auth_raw, "AUTH", "pw") == "OK"
    other = RawClient(auth_server.address)
    try:
        assert call(other, "GET", "k") == NOAUTH
    finally:
        other.close()


def test_auth_arity_and_syntax(auth_raw: RawClient) -> None:
    assert call(auth_raw, "AUTH") == arity("auth")
    assert call(auth_raw, "AUTH", "a", "b", "c") == SYNTAX


def test_quit_allowed_before_auth(auth_raw: RawClient) -> None:
    assert call(auth_raw, "QUIT") == "OK"
    assert auth_raw.is_closed()


def test_auth_without_configured_password(raw: RawClient) -> None:
    assert call(raw, "AUTH", "secret") == NO_PASSWORD
    assert call(raw, "PING") == "PONG"


def test_auth_with_username_without_configured_password(raw: RawClient) -> None:
    assert call(raw, "AUTH", "default", "anything") == "OK"


def test_hello_auth_without_configured_password(raw: RawClient) -> None:
    assert isinstance(call(raw, "HELLO", "3", "AUTH", "default", "anything"), dict)


def test_redis_py_with_password(auth_server: ServerProcess) -> None:
    host, port = auth_server.address
    for protocol in (2, 3):
        client = redis.Redis(host=host, port=port, password="pw", protocol=protocol,
                             socket_timeout=10)
        try:
            assert client.set("k", "v") is True
            assert client.get("k") == b"v"
            assert client.get("missing") is None
        finally:
            client.close()
    bad = redis.Redis(host=host, port=port, password="wrong", protocol=2, socket_timeout=10)
    try:
        with pytest.raises(redis.AuthenticationError):
            bad.ping()
    finally:
        bad.close()


# --------------------------------------------------------------------------- HELLO
def _flat_to_dict(reply: object) -> dict[str, object]:
    assert isinstance(reply, list)
    assert len(reply) == 14
    keys = [as_text(k) for k in reply[::2]]
    return dict(zip(keys, reply[1::2], strict=True))


def test_hello_without_args_and_hello_2(raw: RawClient) -> None:
    my_id = call(raw, "CLIENT", "ID")
    for args in (("HELLO",), ("HELLO", "2")):
        raw.send(enc(*args))
        assert raw.read_line() == b"*14"
        fields = _flat_to_dict([raw.read_reply() for _ in range(14)])
        assert list(fields) == ["server", "version", "proto", "id", "mode", "role", "modules"]
        assert fields["proto"] == 2
        assert fields["id"] == my_id
        assert as_text(fields["mode"]) == "standalone"
        assert as_text(fields["role"]) == "master"
        assert fields["modules"] == []
        assert as_text(fields["server"])
        assert as_text(fields["version"])
    # Still RESP2: nil is $-1.
    assert wire(raw, "GET", "missing") == b"$-1\r\n"


def test_hello_3_returns_a_map_and_switches_to_resp3(raw: RawClient) -> None:
    my_id = call(raw, "CLIENT", "ID")
    raw.send(enc("HELLO", "3"))
    assert raw.read_line() == b"%7"
    raw.buf = b"%7\r\n" + raw.buf
    reply = raw.read_reply()
    assert isinstance(reply, dict)
    fields = {as_text(k): v for k, v in reply.items()}
    assert set(fields) == {"server", "version", "proto", "id", "mode", "role", "modules"}
    assert fields["proto"] == 3
    assert fields["id"] == my_id
    assert as_text(fields["mode"]) == "standalone"
    assert as_text(fields["role"]) == "master"
    assert fields["modules"] == []
    # RESP3 null.
    assert wire(raw, "GET", "missing") == b"_\r\n"
    assert wire(raw, "CLIENT", "GETNAME") == b"_\r\n"
    raw.send(enc("MGET", "missing", "missing"))
    assert raw.read_line() == b"*2"
    assert raw.read_line() == b"_"
    assert raw.read_line() == b"_"
    # Maps are maps.
    raw.send(enc("CONFIG", "GET", "save"))
    assert raw.read_line() == b"%1"
    assert [raw.read_reply(), raw.read_reply()] == [b"save", b""]
    # Back to RESP2: HELLO 2 answers in RESP2 already.
    raw.send(enc("HELLO", "2"))
    assert raw.read_line() == b"*14"
    assert _flat_to_dict([raw.read_reply() for _ in range(14)])["proto"] == 2
    assert wire(raw, "GET", "missing") == b"$-1\r\n"


def test_hello_switch_applies_from_the_next_command(raw: RawClient) -> None:
    raw.send(enc("GET", "missing") + enc("HELLO", "3") + enc("GET", "missing"))
    assert raw.read_line() == b"$-1"
    assert isinstance(raw.read_reply(), dict)
    assert raw.read_line() == b"_"


def test_hello_values_are_bulk_strings(raw: RawClient) -> None:
    fields = _flat_to_dict(call(raw, "HELLO", "2"))
    for name in ("server", "version", "mode", "role"):
        assert isinstance(fields[name], bytes), name


def test_hello_errors(raw: RawClient) -> None:
    assert wire(raw, "HELLO", "4") == b"-NOPROTO unsupported protocol version\r\n"
    assert call(raw, "HELLO", "1") == ("error", "NOPROTO unsupported protocol version")
    assert call(raw, "HELLO", "abc") == (
        "error", "ERR Protocol version is not an integer or out of range"
    )
    assert is_error(call(raw, "HELLO", "3", "BOGUS"))
    # None of those switched the protocol.
    assert wire(raw, "GET", "missing") == b"$-1\r\n"


def test_hello_setname(raw: RawClient) -> None:
    assert isinstance(call(raw, "HELLO", "3", "SETNAME", "myconn"), dict)
    assert call(raw, "CLIENT", "GETNAME") == b"myconn"


def test_hello_auth_with_requirepass(auth_raw: RawClient) -> None:
    # Without AUTH, HELLO is refused and the protocol does not change.
    reply = call(auth_raw, "HELLO", "3")
    assert is_error(reply, "NOAUTH ")
    assert call(auth_raw, "HELLO", "3", "AUTH", "default", "nope") == WRONGPASS
    assert call(auth_raw, "GET", "k") == NOAUTH
    # Every option is read before the password is checked: a bad one fails the whole HELLO,
    # which then authenticates nothing (Redis 7).
    bad_option = ("error", "ERR Syntax error in HELLO option 'bogus'")
    assert call(auth_raw, "HELLO", "3", "AUTH", "default", "pw", "bogus") == bad_option
    assert call(auth_raw, "HELLO", "3", "AUTH", "default", "nope", "bogus") == bad_option
    assert is_error(call(auth_raw, "HELLO", "3", "AUTH", "default", "pw", "SETNAME", "a b"))
    assert call(auth_raw, "GET", "k") == NOAUTH
    reply = call(auth_raw, "HELLO", "3", "AUTH", "default", "pw")
    assert isinstance(reply, dict)
    assert reply[b"proto"] == 3
    assert wire(auth_raw, "GET", "missing") == b"_\r\n"


def test_redis_py_default_protocol(server: ServerProcess) -> None:
    """redis-py 8 speaks RESP3 by default (HELLO 3 at connect)."""
    host, port = server.address
    client = redis.Redis(host=host, port=port, socket_timeout=10)
    try:
        assert client.set("k", "v") is True
        assert client.get("k") == b"v"
        assert client.get("missing") is None
        assert client.mget("k", "missing") == [b"v", None]
    finally:
        client.close()


# --------------------------------------------------------------------------- CLIENT
def test_client_name(raw: RawClient) -> None:
    assert wire(raw, "CLIENT", "GETNAME") == b"$-1\r\n"
    assert wire(raw, "CLIENT", "SETNAME", "worker-1") == b"+OK\r\n"
    assert call(raw, "CLIENT", "GETNAME") == b"worker-1"
    assert call(raw, "client", "setname", "a b") == (
        "error", "ERR Client names cannot contain spaces, newlines or special characters."
    )
    assert call(raw, "CLIENT", "GETNAME") == b"worker-1"
    assert call(raw, "CLIENT", "SETNAME", "") == "OK"
    assert call(raw, "CLIENT", "GETNAME") is None


def test_client_id_is_unique_per_connection(server: ServerProcess, raw: RawClient) -> None:
    first = call(raw, "CLIENT", "ID")
    assert isinstance(first, int)
    assert call(raw, "CLIENT", "ID") == first
    other = RawClient(server.address)
    try:
        second = call(other, "CLIENT", "ID")
        assert isinstance(second, int)
        assert second > first
    finally:
        other.close()


def test_client_setinfo(raw: RawClient) -> None:
    assert wire(raw, "CLIENT", "SETINFO", "LIB-NAME", "redis-py") == b"+OK\r\n"
    assert wire(raw, "CLIENT", "SETINFO", "LIB-VER", "8.1.0") == b"+OK\r\n"


@pytest.mark.parametrize(("command", "subcommands"), [
    ("CLIENT", {"GETNAME", "ID", "SETINFO", "SETNAME", "HELP"}),
    ("CONFIG", {"GET", "HELP"}),
])
def test_help_lists_the_subcommands_that_work(raw: RawClient, command: str,
                                              subcommands: set[str]) -> None:
    """The unknown-subcommand error says "Try X HELP.": that must answer, in Redis's format
    (an array of simple strings), with the subcommands DumbKV has."""
    lines = call(raw, command, "HELP")
    assert isinstance(lines, list)
    assert all(isinstance(line, str) for line in lines)  # simple strings, not bulk
    assert lines[0].startswith(f"{command} <subcommand>")
    assert {line.split()[0] for line in lines[1:] if not line.startswith(" ")} == subcommands
    assert is_error(call(raw, command, "HELP", "extra"))


def test_subcommand_errors_come_before_noauth(auth_raw: RawClient) -> None:
    """As in Redis, an unknown subcommand or a subcommand's wrong word count is reported
    before authentication is asked for; a valid one gets NOAUTH."""
    assert call(auth_raw, "CLIENT", "FOO") == (
        "error", "ERR unknown subcommand 'FOO'. Try CLIENT HELP."
    )
    assert call(auth_raw, "CLIENT", "SETNAME") == arity("client|setname")
    assert call(auth_raw, "client", "getname", "x") == arity("client|getname")
    assert call(auth_raw, "CONFIG", "GET") == arity("config|get")
    assert call(auth_raw, "CONFIG", "SET", "save") == arity("config|set")
    assert call(auth_raw, "CONFIG", "BOGUS") == (
        "error", "ERR unknown subcommand 'BOGUS'. Try CONFIG HELP."
    )
    for valid in (("CLIENT", "GETNAME"), ("CLIENT", "SETNAME", "x"), ("CONFIG", "GET", "save"),
                  ("CLIENT", "HELP")):
        assert call(auth_raw, *valid) == NOAUTH, valid


def test_client_errors(raw: RawClient) -> None:
    assert call(raw, "CLIENT", "FOO") == (
        "error", "ERR unknown subcommand 'FOO'. Try CLIENT HELP."
    )
    assert is_error(call(raw, "CLIENT", "MAINT_NOTIFICATIONS", "ON"))
    assert call(raw, "CLIENT") == arity("client")
    assert is_error(call(raw, "CLIENT", "SETNAME"))
    assert is_error(call(raw, "CLIENT", "SETINFO", "LIB-NAME"))


# --------------------------------------------------------------------------- COMMAND / CONFIG
def test_command_count(raw: RawClient) -> None:
    count = call(raw, "COMMAND", "COUNT")
    assert isinstance(count, int)
    assert count >= 30  # every command this file exercises


def test_command_and_command_docs_are_errors(raw: RawClient) -> None:
    """redis-cli falls back to its built-in help when these fail."""
    raw.send(enc("COMMAND", "DOCS"))
    assert raw.read_line().startswith(b"-ERR ")
    raw.send(enc("COMMAND"))
    assert raw.read_line().startswith(b"-ERR ")
    assert call(raw, "PING") == "PONG"


def test_config_get(raw: RawClient) -> None:
    raw.send(enc("CONFIG", "GET", "save"))
    assert raw.read_exact(len(b"*2\r\n$4\r\nsave\r\n$0\r\n\r\n")) == (
        b"*2\r\n$4\r\nsave\r\n$0\r\n\r\n"
    )
    assert call(raw, "CONFIG", "GET", "appendonly") == [b"appendonly", b"no"]
    assert call(raw, "CONFIG", "GET", "databases") == [b"databases", b"16"]
    assert call(raw, "config", "get", "DATABASES") == [b"databases", b"16"]
    assert call(raw, "CONFIG", "GET", "no-such-setting") == []


def test_config_get_glob_and_several(raw: RawClient) -> None:
    reply = call(raw, "CONFIG", "GET", "app*")
    assert isinstance(reply, list)
    got = dict(zip(reply[::2], reply[1::2], strict=True))
    assert got[b"appendonly"] == b"no"
    assert all(k.startswith(b"app") for k in got)
    reply = call(raw, "CONFIG", "GET", "save", "appendonly")
    assert isinstance(reply, list)
    assert dict(zip(reply[::2], reply[1::2], strict=True)) == {
        b"save": b"", b"appendonly": b"no"
    }
    reply = call(raw, "CONFIG", "GET", "*")
    assert isinstance(reply, list)
    assert b"databases" in reply[::2]


def test_config_errors(raw: RawClient) -> None:
    assert call(raw, "CONFIG") == arity("config")
    assert call(raw, "CONFIG", "GET") == arity("config|get")
    assert call(raw, "CONFIG", "FOO") == (
        "error", "ERR unknown subcommand 'FOO'. Try CONFIG HELP."
    )
    assert is_error(call(raw, "CONFIG", "SET", "save", ""))


# --------------------------------------------------------------------------- INFO / DBSIZE / FLUSH
def _info(raw: RawClient, *sections: str) -> str:
    reply = call(raw, "INFO", *sections)
    assert isinstance(reply, bytes)
    return reply.decode()


def test_info_sections(raw: RawClient) -> None:
    text = _info(raw)
    for header in ("# Server", "# Clients", "# Stats", "# Keyspace"):
        assert header + "\r\n" in text
    assert "redis_version:" in text
    assert "connected_clients:1\r\n" in text
    assert "\ndb0:" not in text  # empty databases are not listed
    server_only = _info(raw, "server")
    assert server_only.startswith("# Server\r\n")
    assert "# Keyspace" not in server_only
    assert "# Clients" not in server_only


def test_info_keyspace(raw: RawClient) -> None:
    assert call(raw, "MSET", "a", "1", "b", "2", "c", "3") == "OK"
    assert call(raw, "SELECT", "2") == "OK"
    assert call(raw, "SET", "x", "1") == "OK"
    text = _info(raw, "keyspace")
    assert text.startswith("# Keyspace\r\n")
    lines = text.split("\r\n")
    assert any(line.startswith("db0:keys=3,") for line in lines)
    assert any(line.startswith("db2:keys=1,") for line in lines)
    assert "# Server" not in text


def test_info_via_redis_py(server: ServerProcess) -> None:
    host, port = server.address
    client = redis.Redis(host=host, port=port, protocol=2, socket_timeout=10)
    try:
        client.set("a", "1")
        client.set("b", "2")
        info = client.info()
        assert info["db0"]["keys"] == 2
        assert info["connected_clients"] >= 1
        assert client.info("keyspace") == {"db0": info["db0"]}
    finally:
        client.close()


def test_dbsize(raw: RawClient) -> None:
    assert wire(raw, "DBSIZE") == b":0\r\n"
    assert call(raw, "SET", "a", "1") == "OK"
    assert call(raw, "SET", "a", "2") == "OK"
    assert call(raw, "SET", "b", "1") == "OK"
    assert call(raw, "DBSIZE") == 2
    assert call(raw, "DEL", "a") == 1
    assert call(raw, "DBSIZE") == 1
    assert call(raw, "DBSIZE", "x") == arity("dbsize")


def test_flushdb_only_this_database(raw: RawClient) -> None:
    assert call(raw, "MSET", "a", "1", "b", "2") == "OK"
    assert call(raw, "SELECT", "1") == "OK"
    assert call(raw, "SET", "c", "3") == "OK"
    assert wire(raw, "FLUSHDB") == b"+OK\r\n"
    assert call(raw, "DBSIZE") == 0
    assert call(raw, "GET", "c") is None
    assert call(raw, "SELECT", "0") == "OK"
    assert call(raw, "DBSIZE") == 2
    assert call(raw, "FLUSHDB", "ASYNC") == "OK"
    assert call(raw, "DBSIZE") == 0
    assert call(raw, "FLUSHDB", "SYNC") == "OK"
    assert call(raw, "FLUSHDB", "LATER") == SYNTAX


def test_flushall(raw: RawClient) -> None:
    assert call(raw, "SET", "a", "1") == "OK"
    assert call(raw, "SELECT", "3") == "OK"
    assert call(raw, "SET", "b", "1") == "OK"
    assert wire(raw, "FLUSHALL") == b"+OK\r\n"
    assert call(raw, "DBSIZE") == 0
    assert call(raw, "SELECT", "0") == "OK"
    assert call(raw, "GET", "a") is None
    assert call(raw, "DBSIZE") == 0
    assert call(raw, "FLUSHALL", "nope") == SYNTAX


def test_time(raw: RawClient) -> None:
    before = time.time()
    reply = call(raw, "TIME")
    after = time.time()
    assert isinstance(reply, list)
    assert len(reply) == 2
    assert all(isinstance(x, bytes) and x.isdigit() for x in reply)
    seconds, micros = int(reply[0]), int(reply[1])
    assert 0 <= micros < 1_000_000
    assert before - 1 <= seconds + micros / 1e6 <= after + 1
    assert call(raw, "TIME", "x") == arity("time")


# --------------------------------------------------------------------------- SET
def test_set_and_get(raw: RawClient) -> None:
    assert wire(raw, "GET", "k") == b"$-1\r\n"
    assert wire(raw, "SET", "k", "v") == b"+OK\r\n"
    raw.send(enc("GET", "k"))
    assert raw.read_exact(7) == b"$1\r\nv\r\n"
    assert call(raw, "SET", "k", "") == "OK"
    assert call(raw, "GET", "k") == b""
    assert call(raw, "EXISTS", "k") == 1
    assert call(raw, "SET", "k") == arity("set")
    assert call(raw, "GET") == arity("get")
    assert call(raw, "GET", "a", "b") == arity("get")


def test_set_nx_xx(raw: RawClient) -> None:
    assert wire(raw, "SET", "k", "1", "XX") == b"$-1\r\n"
    assert call(raw, "EXISTS", "k") == 0
    assert call(raw, "SET", "k", "1", "NX") == "OK"
    assert wire(raw, "SET", "k", "2", "NX") == b"$-1\r\n"
    assert call(raw, "GET", "k") == b"1"
    assert call(raw, "SET", "k", "3", "xx") == "OK"
    assert call(raw, "GET", "k") == b"3"
    assert call(raw, "SET", "k", "4", "NX", "XX") == SYNTAX
    assert call(raw, "SET", "k", "4", "XX", "NX") == SYNTAX
    assert call(raw, "GET", "k") == b"3"


def test_set_get_option(raw: RawClient) -> None:
    assert wire(raw, "SET", "k", "1", "GET") == b"$-1\r\n"
    assert call(raw, "GET", "k") == b"1"
    assert call(raw, "SET", "k", "2", "GET") == b"1"
    assert call(raw, "GET", "k") == b"2"
    # NX + GET: returns the old value and does not set.
    assert call(raw, "SET", "k", "3", "NX", "GET") == b"2"
    assert call(raw, "GET", "k") == b"2"
    assert call(raw, "SET", "new", "x", "NX", "GET") is None
    assert call(raw, "GET", "new") == b"x"
    # XX + GET on a missing key: nil, not set.
    assert call(raw, "SET", "gone", "x", "XX", "GET") is None
    assert call(raw, "EXISTS", "gone") == 0
    assert call(raw, "SET", "k", "4", "XX", "GET", "EX", "100") == b"2"
    assert call(raw, "GET", "k") == b"4"
    assert call(raw, "TTL", "k") in (99, 100)


def test_set_ex_px(raw: RawClient) -> None:
    assert call(raw, "SET", "k", "v", "EX", "100") == "OK"
    assert call(raw, "TTL", "k") in (99, 100)
    pttl = call(raw, "PTTL", "k")
    assert isinstance(pttl, int)
    assert 90_000 < pttl <= 100_000
    assert call(raw, "SET", "k", "v", "PX", "50000") == "OK"
    pttl = call(raw, "PTTL", "k")
    assert isinstance(pttl, int)
    assert 40_000 < pttl <= 50_000
    assert call(raw, "SET", "k", "v", "ex", "7") == "OK"
    assert call(raw, "TTL", "k") in (6, 7)
    # A plain SET clears the TTL.
    assert call(raw, "SET", "k", "v") == "OK"
    assert call(raw, "TTL", "k") == -1


def test_set_exat_pxat(raw: RawClient) -> None:
    now = server_ms(raw)
    assert call(raw, "SET", "k", "v", "EXAT", str(now // 1000 + 100)) == "OK"
    assert call(raw, "TTL", "k") in (98, 99, 100)
    assert call(raw, "SET", "k", "v", "PXAT", str(now + 100_000)) == "OK"
    pttl = call(raw, "PTTL", "k")
    assert isinstance(pttl, int)
    assert 90_000 < pttl <= 100_000


def test_set_keepttl(raw: RawClient) -> None:
    assert call(raw, "SET", "k", "v1", "EX", "100") == "OK"
    assert call(raw, "SET", "k", "v2", "KEEPTTL") == "OK"
    assert call(raw, "GET", "k") == b"v2"
    assert call(raw, "TTL", "k") in (99, 100)
    assert call(raw, "SET", "fresh", "v", "KEEPTTL") == "OK"
    assert call(raw, "TTL", "fresh") == -1
    assert call(raw, "SET", "k", "v3") == "OK"
    assert call(raw, "TTL", "k") == -1


def test_set_option_combinations_that_are_syntax_errors(raw: RawClient) -> None:
    assert call(raw, "SET", "k", "orig") == "OK"
    bad = [
        ("EX", "10", "PX", "10"),
        ("PX", "10", "EXAT", "10"),
        ("EX", "10", "KEEPTTL"),
        ("KEEPTTL", "EX", "10"),
        ("KEEPTTL", "PXAT", "10"),
        ("EX",),
        ("PX",),
        ("NX", "XX"),
        ("FOO",),
        ("10",),
        ("EX", "10", "BAR"),
    ]
    for options in bad:
        assert call(raw, "SET", "k", "new", *options) == SYNTAX, options
    assert call(raw, "GET", "k") == b"orig"
    assert call(raw, "TTL", "k") == -1


def test_set_repeated_expiry_option_last_wins(raw: RawClient) -> None:
    assert call(raw, "SET", "k", "v", "EX", "10", "EX", "100") == "OK"
    assert call(raw, "TTL", "k") in (99, 100)


def test_set_repeated_flags_are_accepted(raw: RawClient) -> None:
    assert call(raw, "SET", "k", "v", "NX", "NX") == "OK"
    assert call(raw, "SET", "k", "w", "XX", "XX", "GET", "GET") == b"v"
    assert call(raw, "SET", "k", "x", "KEEPTTL", "KEEPTTL") == "OK"
    assert call(raw, "GET", "k") == b"x"


def test_set_invalid_expire_time(raw: RawClient) -> None:
    invalid = ("error", "ERR invalid expire time in 'set' command")
    for options in (
        ("EX", "0"),
        ("EX", "-1"),
        ("PX", "0"),
        ("PX", "-100"),
        ("EXAT", "0"),
        ("PXAT", "-5"),
        ("EX", str(INT64_MAX)),
        ("EXAT", str(INT64_MAX // 10)),
    ):
        assert call(raw, "SET", "k", "v", *options) == invalid, options
    assert call(raw, "EXISTS", "k") == 0
    for options in (("EX", "abc"), ("PX", "1.5"), ("EX", ""), ("EXAT", "99999999999999999999")):
        assert call(raw, "SET", "k", "v", *options) == NOT_INTEGER, options
    assert call(raw, "EXISTS", "k") == 0
    # The expiry is checked before NX, XX and GET look at the key, whether it exists or not.
    for setup in ((), ("SET", "k", "old")):
        if setup:
            assert call(raw, *setup) == "OK"
        for options in (("NX", "EX", str(INT64_MAX)), ("XX", "PX", str(INT64_MAX)),
                        ("GET", "EX", "0"), ("NX", "GET", "PX", "-1")):
            assert call(raw, "SET", "k", "v", *options) == invalid, (setup, options)
    assert call(raw, "GET", "k") == b"old"


def test_set_all_options_together(raw: RawClient) -> None:
    assert call(raw, "SET", "k", "a", "NX", "GET", "PX", "60000") is None
    assert call(raw, "GET", "k") == b"a"
    assert call(raw, "SET", "k", "b", "XX", "KEEPTTL", "GET") == b"a"
    pttl = call(raw, "PTTL", "k")
    assert isinstance(pttl, int)
    assert 50_000 < pttl <= 60_000


# --------------------------------------------------------------------------- expiry
def test_expired_keys_are_never_returned(raw: RawClient) -> None:
    """PXAT/EXAT in the past (by the server's clock): the key is expired at once."""
    now = server_ms(raw)
    assert call(raw, "SET", "live", "v") == "OK"
    assert call(raw, "SET", "k", "v", "PXAT", str(now - 1000)) == "OK"
    assert call(raw, "SET", "k2", "v", "EXAT", str(now // 1000 - 10)) == "OK"
    for key in ("k", "k2"):
        assert call(raw, "GET", key) is None
        assert call(raw, "EXISTS", key) == 0
        assert call(raw, "TTL", key) == -2
        assert call(raw, "PTTL", key) == -2
        assert call(raw, "STRLEN", key) == 0
        assert call(raw, "MGET", key, "live") == [None, b"v"]
        assert call(raw, "GETDEL", key) is None
        assert call(raw, "PERSIST", key) == 0
        assert call(raw, "EXPIRE", key, "100") == 0
        assert call(raw, "SET", key, "x", "XX") is None
        assert call(raw, "DEL", key) == 0
    assert call(raw, "DBSIZE") == 1
    # Writing over an expired key starts from nothing.
    assert call(raw, "SET", "n", "5", "PXAT", str(now - 1000)) == "OK"
    assert call(raw, "INCR", "n") == 1
    assert call(raw, "TTL", "n") == -1
    assert call(raw, "SET", "s", "abc", "PXAT", str(now - 1000)) == "OK"
    assert call(raw, "APPEND", "s", "x") == 1
    assert call(raw, "SET", "t", "old", "PXAT", str(now - 1000)) == "OK"
    assert call(raw, "SET", "t", "new", "NX") == "OK"
    assert call(raw, "GET", "t") == b"new"


def test_key_with_px_expires(raw: RawClient) -> None:
    assert call(raw, "SET", "k", "v", "PX", "50") == "OK"
    deadline = time.monotonic() + 10
    while True:
        pttl = call(raw, "PTTL", "k")
        assert isinstance(pttl, int)
        if pttl == -2:
            break
        assert 0 <= pttl <= 50
        assert time.monotonic() < deadline, "key with PX 50 never expired"
    assert call(raw, "GET", "k") is None
    assert call(raw, "EXISTS", "k") == 0


def _stored_rows(store_url: str) -> int:
    """Rows at rest in the store, expired or not."""
    with StoreSQL(store_url) as sql:
        return int(sql.fetchval("SELECT count(*) FROM kv"))


def test_sweep_removes_expired_keys(server_factory: type[ServerProcess],
                                    tmp_path: Path) -> None:
    srv = server_factory(tmp_path, "--sweep-interval", "0.05").start()
    raw = RawClient(srv.address)
    try:
        now = server_ms(raw)
        assert call(raw, "SET", "live", "v") == "OK"
        assert call(raw, "SET", "ttl", "v", "EX", "1000") == "OK"
        for i in range(5):
            assert call(raw, "SET", f"dead{i}", "v", "PXAT", str(now - 1000)) == "OK"
        assert call(raw, "SELECT", "1") == "OK"
        assert call(raw, "SET", "dead-in-db1", "v", "PXAT", str(now - 1000)) == "OK"
        assert call(raw, "DBSIZE") == 0
        assert call(raw, "SELECT", "0") == "OK"
        # Counts never include expired keys, swept or not.
        assert call(raw, "DBSIZE") == 2
        keyspace = _info(raw, "keyspace")
        assert "db0:keys=2," in keyspace
        assert "db1:" not in keyspace
        # The sweep deletes the expired rows from the store itself.
        deadline = time.monotonic() + 10
        while _stored_rows(srv.store) != 2:
            assert time.monotonic() < deadline, "expired rows were never swept"
            assert call(raw, "PING") == "PONG"  # paces the poll on a server round trip
        assert call(raw, "GET", "live") == b"v"
        assert call(raw, "TTL", "ttl") > 990  # type: ignore[operator]
        assert call(raw, "DBSIZE") == 2
    finally:
        raw.close()


# --------------------------------------------------------------------------- GETDEL/DEL/EXISTS
def test_getdel(raw: RawClient) -> None:
    assert call(raw, "SET", "k", "v", "EX", "100") == "OK"
    assert call(raw, "GETDEL", "k") == b"v"
    assert call(raw, "EXISTS", "k") == 0
    assert wire(raw, "GETDEL", "k") == b"$-1\r\n"
    assert call(raw, "GETDEL") == arity("getdel")


def test_del_counts(raw: RawClient) -> None:
    assert call(raw, "MSET", "a", "1", "b", "2", "c", "3") == "OK"
    assert wire(raw, "DEL", "a", "b", "missing") == b":2\r\n"
    assert call(raw, "DEL", "a") == 0
    assert call(raw, "DEL", "c", "c", "c") == 1
    assert call(raw, "DBSIZE") == 0
    assert call(raw, "DEL") == arity("del")


def test_exists_counts_repeats(raw: RawClient) -> None:
    assert call(raw, "SET", "a", "1") == "OK"
    assert wire(raw, "EXISTS", "a") == b":1\r\n"
    assert call(raw, "EXISTS", "a", "a", "missing", "a") == 3
    assert call(raw, "EXISTS", "missing") == 0
    assert call(raw, "EXISTS") == arity("exists")


def test_mget_mset(raw: RawClient) -> None:
    assert wire(raw, "MSET", "a", "1", "b", "2") == b"+OK\r\n"
    raw.send(enc("MGET", "a", "missing", "b", "a"))
    assert raw.read_exact(len(b"*4\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n$1\r\n1\r\n")) == (
        b"*4\r\n$1\r\n1\r\n$-1\r\n$1\r\n2\r\n$1\r\n1\r\n"
    )
    # The last value for a repeated key wins.
    assert call(raw, "MSET", "x", "1", "x", "2") == "OK"
    assert call(raw, "GET", "x") == b"2"
    # MSET clears a TTL, like SET.
    assert call(raw, "SET", "t", "v", "EX", "100") == "OK"
    assert call(raw, "MSET", "t", "w") == "OK"
    assert call(raw, "TTL", "t") == -1
    assert call(raw, "MSET", "a", "1", "b") == arity("mset")
    assert call(raw, "MSET", "a") == arity("mset")
    assert call(raw, "MGET") == arity("mget")
    assert call(raw, "GET", "a") == b"1"


# --------------------------------------------------------------------------- counters
def test_incr_decr(raw: RawClient) -> None:
    assert wire(raw, "INCR", "n") == b":1\r\n"
    assert call(raw, "INCR", "n") == 2
    assert call(raw, "DECR", "n") == 1
    assert call(raw, "INCRBY", "n", "10") == 11
    assert call(raw, "INCRBY", "n", "-20") == -9
    assert call(raw, "DECRBY", "n", "1") == -10
    assert call(raw, "DECRBY", "n", "-15") == 5
    assert call(raw, "GET", "n") == b"5"
    assert call(raw, "DECR", "fresh") == -1
    assert call(raw, "DECRBY", "fresh2", "7") == -7
    assert call(raw, "INCRBY", "fresh3", "7") == 7


def test_incr_keeps_ttl(raw: RawClient) -> None:
    assert call(raw, "SET", "n", "1", "EX", "100") == "OK"
    assert call(raw, "INCR", "n") == 2
    assert call(raw, "TTL", "n") in (99, 100)


def test_incr_on_non_integer(raw: RawClient) -> None:
    for value in ("abc", "1.5", " 1", "1 ", "01", "+1", "", "-0", "99999999999999999999"):
        assert call(raw, "SET", "n", value) == "OK"
        for op in (("INCR", "n"), ("DECR", "n"), ("INCRBY", "n", "1"), ("DECRBY", "n", "1")):
            assert call(raw, *op) == NOT_INTEGER, (value, op)
        assert call(raw, "GET", "n") == value.encode()
    assert call(raw, "SET", "n", "0") == "OK"
    assert call(raw, "INCRBY", "n", "x") == NOT_INTEGER
    assert call(raw, "DECRBY", "n", "1.0") == NOT_INTEGER
    assert call(raw, "INCRBY", "n", str(INT64_MAX + 1)) == NOT_INTEGER
    assert call(raw, "GET", "n") == b"0"
    assert call(raw, "INCR") == arity("incr")
    assert call(raw, "INCRBY", "n") == arity("incrby")


def test_incr_overflow(raw: RawClient) -> None:
    overflow = ("error", "ERR increment or decrement would overflow")
    assert call(raw, "SET", "n", str(INT64_MAX)) == "OK"
    assert call(raw, "INCR", "n") == overflow
    assert call(raw, "INCRBY", "n", "1") == overflow
    assert call(raw, "GET", "n") == str(INT64_MAX).encode()
    assert call(raw, "DECRBY", "n", str(INT64_MAX)) == 0
    assert call(raw, "SET", "m", str(INT64_MIN)) == "OK"
    assert call(raw, "DECR", "m") == overflow
    assert call(raw, "DECRBY", "m", "1") == overflow
    assert call(raw, "INCRBY", "m", str(INT64_MIN)) == overflow
    assert call(raw, "INCRBY", "m", str(INT64_MAX)) == -1
    assert call(raw, "DECRBY", "m", str(INT64_MIN)) == (
        "error", "ERR decrement would overflow"
    )
    assert call(raw, "GET", "m") == b"-1"


# --------------------------------------------------------------------------- APPEND / STRLEN
def test_append_strlen(raw: RawClient) -> None:
    assert wire(raw, "STRLEN", "k") == b":0\r\n"
    assert wire(raw, "APPEND", "k", "Hello") == b":5\r\n"
    assert call(raw, "APPEND", "k", " World") == 11
    assert call(raw, "GET", "k") == b"Hello World"
    assert call(raw, "STRLEN", "k") == 11
    assert call(raw, "APPEND", "k", "") == 11
    assert call(raw, "SET", "t", "a", "EX", "100") == "OK"
    assert call(raw, "APPEND", "t", "b") == 2
    assert call(raw, "TTL", "t") in (99, 100)
    assert call(raw, "SET", "bin", b"\x00\xff\r\n") == "OK"
    assert call(raw, "STRLEN", "bin") == 4
    assert call(raw, "APPEND", "k") == arity("append")
    assert call(raw, "STRLEN") == arity("strlen")


# --------------------------------------------------------------------------- EXPIRE / TTL / PERSIST
def test_ttl_pttl_states(raw: RawClient) -> None:
    assert wire(raw, "TTL", "missing") == b":-2\r\n"
    assert wire(raw, "PTTL", "missing") == b":-2\r\n"
    assert call(raw, "SET", "k", "v") == "OK"
    assert call(raw, "TTL", "k") == -1
    assert call(raw, "PTTL", "k") == -1
    assert call(raw, "TTL") == arity("ttl")


def test_expire_and_pexpire(raw: RawClient) -> None:
    assert wire(raw, "EXPIRE", "missing", "100") == b":0\r\n"
    assert call(raw, "SET", "k", "v") == "OK"
    assert wire(raw, "EXPIRE", "k", "100") == b":1\r\n"
    assert call(raw, "TTL", "k") in (99, 100)
    assert call(raw, "PEXPIRE", "k", "5000") == 1
    pttl = call(raw, "PTTL", "k")
    assert isinstance(pttl, int)
    assert 4000 < pttl <= 5000
    assert call(raw, "PEXPIRE", "missing", "5000") == 0
    assert call(raw, "GET", "k") == b"v"


def test_expire_non_positive_deletes(raw: RawClient) -> None:
    for ttl in ("-1", "0", "-100"):
        assert call(raw, "SET", "k", "v") == "OK"
        assert call(raw, "EXPIRE", "k", ttl) == 1
        assert call(raw, "EXISTS", "k") == 0
        assert call(raw, "TTL", "k") == -2
    assert call(raw, "SET", "k", "v") == "OK"
    assert call(raw, "PEXPIRE", "k", "-1") == 1
    assert call(raw, "GET", "k") is None
    assert call(raw, "DBSIZE") == 0


def test_expire_options(raw: RawClient) -> None:
    assert call(raw, "SET", "k", "v") == "OK"
    # No TTL yet.
    assert call(raw, "EXPIRE", "k", "100", "XX") == 0
    assert call(raw, "EXPIRE", "k", "100", "GT") == 0  # no TTL counts as infinite
    assert call(raw, "TTL", "k") == -1
    assert call(raw, "EXPIRE", "k", "100", "NX") == 1
    assert call(raw, "TTL", "k") in (99, 100)
    # TTL 100 now.
    assert call(raw, "EXPIRE", "k", "200", "NX") == 0
    assert call(raw, "EXPIRE", "k", "50", "GT") == 0
    assert call(raw, "TTL", "k") in (99, 100)
    assert call(raw, "EXPIRE", "k", "200", "GT") == 1
    assert call(raw, "TTL", "k") in (199, 200)
    assert call(raw, "EXPIRE", "k", "300", "LT") == 0
    assert call(raw, "EXPIRE", "k", "150", "lt") == 1
    assert call(raw, "TTL", "k") in (149, 150)
    assert call(raw, "EXPIRE", "k", "120", "XX") == 1
    assert call(raw, "TTL", "k") in (119, 120)
    assert call(raw, "PEXPIRE", "k", "130000", "XX", "GT") == 1
    assert call(raw, "TTL", "k") in (129, 130)
    # LT on a key without TTL sets it.
    assert call(raw, "SET", "p", "v") == "OK"
    assert call(raw, "EXPIRE", "p", "100", "LT") == 1
    assert call(raw, "TTL", "p") in (99, 100)


def test_expire_errors(raw: RawClient) -> None:
    assert call(raw, "SET", "k", "v") == "OK"
    assert call(raw, "EXPIRE", "k", "10", "NX", "XX") == (
        "error", "ERR NX and XX, GT or LT options at the same time are not compatible"
    )
    assert call(raw, "EXPIRE", "k", "10", "NX", "GT") == (
        "error", "ERR NX and XX, GT or LT options at the same time are not compatible"
    )
    assert call(raw, "EXPIRE", "k", "10", "GT", "LT") == (
        "error", "ERR GT and LT options at the same time are not compatible"
    )
    assert call(raw, "EXPIRE", "k", "10", "FOO") == ("error", "ERR Unsupported option FOO")
    assert call(raw, "EXPIRE", "k", "abc") == NOT_INTEGER
    assert call(raw, "PEXPIRE", "k", "1.5") == NOT_INTEGER
    invalid = ("error", "ERR invalid expire time in 'expire' command")
    assert call(raw, "EXPIRE", "k", str(INT64_MAX)) == invalid
    assert call(raw, "EXPIRE", "k", str(INT64_MIN)) == invalid
    assert call(raw, "EXPIRE", "missing", str(INT64_MAX)) == invalid
    assert call(raw, "PEXPIRE", "k", str(INT64_MAX)) == (
        "error", "ERR invalid expire time in 'pexpire' command"
    )
    assert call(raw, "EXPIRE", "k") == arity("expire")
    assert call(raw, "PEXPIRE", "k") == arity("pexpire")
    # None of the failures touched the key.
    assert call(raw, "TTL", "k") == -1
    assert call(raw, "GET", "k") == b"v"


def test_expire_checks_options_before_the_time(raw: RawClient) -> None:
    assert call(raw, "EXPIRE", "k", "abc", "FOO") == ("error", "ERR Unsupported option FOO")


def test_persist(raw: RawClient) -> None:
    assert wire(raw, "PERSIST", "missing") == b":0\r\n"
    assert call(raw, "SET", "k", "v") == "OK"
    assert call(raw, "PERSIST", "k") == 0
    assert call(raw, "EXPIRE", "k", "100") == 1
    assert wire(raw, "PERSIST", "k") == b":1\r\n"
    assert call(raw, "TTL", "k") == -1
    assert call(raw, "GET", "k") == b"v"
    assert call(raw, "PERSIST") == arity("persist")


# --------------------------------------------------------------------------- refused by design
def test_keys_and_scan_explain_hashing(raw: RawClient) -> None:
    assert call(raw, "SET", "k", "v") == "OK"
    for args in (("KEYS", "*"), ("SCAN", "0"), ("SCAN", "0", "MATCH", "k*", "COUNT", "10")):
        reply = call(raw, *args)
        assert is_error(reply), args
        assert isinstance(reply, tuple)
        assert "hash" in reply[1].lower(), reply
    assert call(raw, "KEYS") == arity("keys")
    assert call(raw, "GET", "k") == b"v"


# --------------------------------------------------------------------------- unknown / arity
def test_unknown_command_exact_text(raw: RawClient) -> None:
    assert wire(raw, "FOO", "a", "b") == (
        b"-ERR unknown command 'FOO', with args beginning with: 'a' 'b' \r\n"
    )
    assert wire(raw, "FOO") == b"-ERR unknown command 'FOO', with args beginning with: \r\n"
    assert call(raw, "foo", "x") == unknown("foo", "x")
    raw.send(b"FOO a b\r\n")  # inline gives the same text
    assert raw.read_reply() == unknown("FOO", "a", "b")


def test_unknown_command_args_are_cut_and_cleaned(raw: RawClient) -> None:
    long_arg = "x" * 300
    assert call(raw, "FOO", long_arg, "next") == unknown("FOO", "x" * 128)
    assert call(raw, "FOO", "a\r\nb") == unknown("FOO", "a  b")
    # The quoted list stops growing at 128 characters: 'x...x' (100) + ' ' leaves 25.
    assert call(raw, "FOO", "x" * 100, "y" * 100, "z") == unknown("FOO", "x" * 100, "y" * 25)


def test_wrong_arity_uses_lowercase_name(raw: RawClient) -> None:
    assert wire(raw, "GET") == b"-ERR wrong number of arguments for 'get' command\r\n"
    assert call(raw, "Get", "a", "b") == arity("get")
    assert call(raw, "SET", "a") == arity("set")
    assert call(raw, "INCRBY", "a", "1", "2") == arity("incrby")
    assert call(raw, "PING") == "PONG"


# --------------------------------------------------------------------------- binary safety
def test_binary_keys_and_values_round_trip(raw: RawClient) -> None:
    every_byte = bytes(range(256))
    pairs = [
        (every_byte, every_byte * 4),
        (b"k\r\nwith crlf", b"v\r\n\r\nwith crlf\r\n"),
        (b"\x00", b"\x00\x00"),
        (b"", b"empty key"),
        (b"empty value", b""),
        (b"*1\r\n$4\r\nPING\r\n", b"-ERR not an error\r\n"),
    ]
    for key, value in pairs:
        assert call(raw, "SET", key, value) == "OK"
    for key, value in pairs:
        assert call(raw, "GET", key) == value
        assert call(raw, "STRLEN", key) == len(value)
        assert call(raw, "EXISTS", key) == 1
    keys = [k for k, _ in pairs]
    assert call(raw, "MGET", *keys) == [v for _, v in pairs]
    # Keys differing in one byte are different keys.
    for b in range(256):
        assert call(raw, "SET", bytes([b]), bytes([b]) * 3) == "OK"
    for b in range(256):
        assert call(raw, "GET", bytes([b])) == bytes([b]) * 3
    assert call(raw, "GETDEL", every_byte) == every_byte * 4
    assert call(raw, "EXISTS", every_byte) == 0


def test_binary_values_via_redis_py(server: ServerProcess) -> None:
    host, port = server.address
    client = redis.Redis(host=host, port=port, protocol=2, socket_timeout=10)
    try:
        value = bytes(range(256)) * 100
        assert client.set(b"\xff\x00key", value) is True
        assert client.get(b"\xff\x00key") == value
        assert client.append(b"\xff\x00key", b"\r\n") == len(value) + 2
        assert client.strlen(b"\xff\x00key") == len(value) + 2
    finally:
        client.close()
