"""dumbkv.Client against the real server over real sockets, and against fake peers that
misbehave on purpose. tests/test_client_async.py has the same tests for dumbkv.AsyncClient."""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from client_fakes import (
    answer_after_three,
    fake_peer,
    first_breaks_then_pong,
    full_backlog,
    garbage_reply,
    many_open_files,
    read_one_then_close,
    silent_listener,
)
from conftest import ServerProcess, StoreSQL

import dumbkv
from dumbkv.client import core
from dumbkv.resp import ErrorReply, Parser

pytestmark = pytest.mark.backends("sqlite")


@pytest.fixture
def client(server: ServerProcess) -> Iterator[dumbkv.Client]:
    with dumbkv.Client(*server.address, timeout=10) as c:
        yield c


def test_string_commands(client: dumbkv.Client) -> None:
    assert client.set("k", "v") is True
    assert client.get("k") == b"v"
    assert client.get("missing") is None
    assert client.mset({"a": 1, b"b": b"\x00\r\n"}) is True
    assert client.mget("a", "missing", "b") == [b"1", None, b"\x00\r\n"]
    assert client.exists("a", "a", "missing") == 2
    assert client.strlen("b") == 3
    assert client.append("k", "w") == 2
    assert client.incr("n") == 1
    assert client.incrby("n", 10) == 11
    assert client.decr("n") == 10
    assert client.decrby("n", 4) == 6
    assert client.set("f", 1.5) is True
    assert client.get("f") == b"1.5"
    assert client.getdel("k") == b"vw"
    assert client.getdel("k") is None
    assert client.delete("a", "b", "missing") == 2
    with pytest.raises(dumbkv.CommandError) as caught:
        client.incr("f")
    assert caught.value.prefix == "ERR"
    assert str(caught.value) == "value is not an integer or out of range"


def test_set_options(client: dumbkv.Client) -> None:
    assert client.set("k", "v1") is True
    assert client.set("k", "v2", nx=True) is None
    assert client.set("new", "x", xx=True) is None
    assert client.get("new") is None
    assert client.set("k", "v2", xx=True, get=True) == b"v1"
    assert client.set("absent", "v", get=True) is None
    assert client.set("k", "v", ex=100) is True
    assert 99 <= client.ttl("k") <= 100
    assert client.set("k", "v", px=datetime.timedelta(seconds=50)) is True
    assert 49_000 <= client.pttl("k") <= 50_000
    assert client.set("k", "v2", keepttl=True) is True
    assert 49_000 <= client.pttl("k") <= 50_000
    now = int(time.time())
    assert client.set("k", "v", exat=now + 200) is True
    assert 198 <= client.ttl("k") <= 200
    assert client.set("k", "v", pxat=(now + 300) * 1000) is True
    assert 298 <= client.ttl("k") <= 300
    with pytest.raises(dumbkv.CommandError, match="syntax error"):
        client.set("k", "v", nx=True, xx=True)
    with pytest.raises(dumbkv.CommandError, match="invalid expire time"):
        client.set("k", "v", ex=0)


def test_expiry_commands(client: dumbkv.Client) -> None:
    assert client.expire("missing", 10) is False
    assert client.ttl("missing") == -2
    assert client.set("k", "v") is True
    assert client.ttl("k") == -1
    assert client.persist("k") is False
    assert client.expire("k", 100) is True
    assert client.expire("k", 50, gt=True) is False
    assert client.expire("k", datetime.timedelta(seconds=200), gt=True) is True
    assert 199 <= client.ttl("k") <= 200
    assert client.expire("k", 10, nx=True) is False
    assert client.pexpire("k", 5000, lt=True) is True
    assert 4000 <= client.pttl("k") <= 5000
    assert client.persist("k") is True
    assert client.ttl("k") == -1
    assert client.pexpire("k", 1, xx=True) is False  # no expiry now: XX not met
    assert client.pexpire("k", 0) is True  # a time <= 0 deletes the key
    assert client.get("k") is None
    with pytest.raises(dumbkv.CommandError, match="not compatible"):
        client.expire("k", 10, gt=True, lt=True)


def test_connection_and_server_commands(client: dumbkv.Client, server: ServerProcess) -> None:
    assert client.ping() is True
    assert client.echo("hi there") == b"hi there"
    assert client.client_getname() is None
    assert client.client_setname("worker-1") is True
    assert client.client_getname() == b"worker-1"
    first_id = client.client_id()
    assert isinstance(first_id, int) and first_id == client.client_id()
    assert client.set("a", 1) is True
    assert client.select(4) is True
    assert client.db == 4
    assert client.get("a") is None
    assert client.set("b", 1) is True and client.set("c", 2) is True
    assert client.dbsize() == 2
    info = client.info()
    assert info["tcp_port"] == server.port
    assert info["redis_version"] == "7.0.0"
    assert info["db0"] == {"keys": 1, "expires": 0, "avg_ttl": 0}
    assert info["db4"]["keys"] == 2
    assert set(client.info("clients")) == {"connected_clients"}
    assert client.config_get("port") == {b"port": str(server.port).encode()}
    assert client.command_count() > 30
    seconds, micros = client.time()
    assert abs(seconds - time.time()) < 60 and 0 <= micros < 1_000_000
    assert client.flushdb() is True
    assert client.dbsize() == 0
    assert client.select(0) is True and client.dbsize() == 1
    assert client.flushall() is True
    assert client.dbsize() == 0


def test_decode_responses(server: ServerProcess) -> None:
    with dumbkv.Client(*server.address, decode_responses=True) as client:
        assert client.set("k", "välue") is True
        assert client.get("k") == "välue"
        assert client.mget("k", "missing") == ["välue", None]
        assert client.echo(b"abc") == "abc"
        assert client.set("k", "new", get=True) == "välue"
        assert client.client_setname("n1") is True and client.client_getname() == "n1"
        assert client.config_get("databases") == {"databases": "16"}
        assert client.incr("n") == 1
        assert client.execute_raw("GET", "k") == b"new"  # raw stays raw
        # A value that is not UTF-8: UnicodeDecodeError (in place in a pipeline), as documented.
        assert client.set("bin", b"\xff\xfe") is True
        with pytest.raises(UnicodeDecodeError):
            client.get("bin")
        with client.pipeline() as p:
            results = p.get("bin").get("k").execute()
        assert isinstance(results[0], UnicodeDecodeError) and results[1] == "new"


def test_execute_raw(client: dumbkv.Client) -> None:
    assert client.execute_raw("SET", "k", b"v") == "OK"
    assert client.execute_raw("GET", "k") == b"v"
    assert client.execute_raw("GET", "missing") is None
    assert client.execute_raw("INCR", "n") == 1
    assert client.execute_raw("MGET", "k", "missing") == [b"v", None]
    error = client.execute_raw("INCR", "k")
    assert isinstance(error, ErrorReply)
    assert error == "ERR value is not an integer or out of range"
    assert client.execute_raw("SELECT", 99) == "ERR DB index is out of range"
    assert client.db == 0
    assert client.execute_raw("SELECT", "3") == "OK"
    assert client.db == 3
    assert client.get("k") is None
    client.close()  # the reconnect must go back to db 3
    assert client.execute_raw("SET", "in3", "x") == "OK"
    assert client.info("keyspace")["db3"]["keys"] == 1


def test_pipeline_results_and_error_in_place(client: dumbkv.Client) -> None:
    with client.pipeline() as pipe:
        assert pipe.set("a", "1") is pipe
        pipe.incr("a")
        pipe.set("s", "text")
        pipe.incr("s")  # fails in place
        pipe.get("a")
        pipe.select(2)
        pipe.set("in2", "y")
        assert len(pipe) == 7
        results = pipe.execute()
    assert results[:3] == [True, 2, True]
    assert isinstance(results[3], dumbkv.CommandError)
    assert results[4:] == [b"2", True, True]
    assert client.db == 2
    assert client.get("in2") == b"y"
    with client.pipeline() as pipe:
        pipe.incr("in2")
        pipe.set("after", "z")
        with pytest.raises(dumbkv.CommandError, match="not an integer"):
            pipe.execute(raise_on_error=True)
    assert client.get("after") == b"z"  # every command ran; the first error was raised after
    with client.pipeline() as pipe:
        assert pipe.execute() == []
        pipe.ping()
    with client.pipeline() as pipe:
        assert len(pipe) == 0  # a fresh pipeline; the unsent one was dropped


def test_pipeline_is_one_write() -> None:
    with fake_peer(answer_after_three) as peer:
        with dumbkv.Client(*peer.address, timeout=5) as client, client.pipeline() as pipe:
            pipe.set("a", 1)
            pipe.set("b", 2)
            pipe.set("c", 3)
            assert pipe.execute() == [True, True, True]
        assert [cmd[:2] for cmd in peer.commands] == [[b"SET", b"a"], [b"SET", b"b"],
                                                      [b"SET", b"c"]]
        assert len(Parser().feed(peer.chunks[0])) == 3  # all three arrived in one read


def test_large_pipeline_with_large_replies_is_read_while_it_is_written(
    client: dumbkv.Client,
) -> None:
    """30 GETs of 1 MiB, then 20 SETs of 1 MiB: the server stops reading a client that does
    not read its replies, so a client that wrote everything first would wait for ever."""
    big = b"v" * (1 << 20)
    assert client.set("big", big) is True
    with client.pipeline() as pipe:
        for _ in range(30):
            pipe.get("big")
        for i in range(20):
            pipe.set(f"k{i}", big)
        results = pipe.execute()
    assert results == [big] * 30 + [True] * 20
    assert client.strlen("k19") == len(big)


def test_command_timeout() -> None:
    with silent_listener() as address, dumbkv.Client(*address, timeout=0.3) as client:
        client.connect()
        started = time.monotonic()
        with pytest.raises(dumbkv.TimeoutError, match="no reply within"):
            client.ping()
        assert 0.25 <= time.monotonic() - started < 3


def test_connect_timeout() -> None:
    with full_backlog() as address, dumbkv.Client(*address, connect_timeout=0.3) as client:
        started = time.monotonic()
        with pytest.raises(dumbkv.TimeoutError, match="could not connect"):
            client.connect()
        assert 0.25 <= time.monotonic() - started < 3


def test_connection_refused() -> None:
    with silent_listener() as address:
        pass  # the port is free again: nothing listens there
    with dumbkv.Client(*address) as client:
        with pytest.raises(dumbkv.ConnectionError, match="refused") as caught:
            client.ping()
        assert not isinstance(caught.value, dumbkv.TimeoutError)
        assert isinstance(caught.value, ConnectionError)  # also the builtin
        assert caught.value.reason == "Connection refused"  # without the address


def test_no_retry_after_send() -> None:
    with fake_peer(read_one_then_close) as peer:
        with dumbkv.Client(*peer.address, timeout=5) as client, \
                pytest.raises(dumbkv.ConnectionError, match="closed"):
            client.incr("counter")
        assert peer.connections == 1
        assert peer.commands == [[b"INCR", b"counter"]]


def test_reconnect_after_broken_connection() -> None:
    with fake_peer(first_breaks_then_pong) as peer:
        with dumbkv.Client(*peer.address, timeout=5) as client:
            with pytest.raises(dumbkv.ConnectionError):
                client.ping()
            assert client.ping() is True
            assert client.ping() is True
        assert peer.connections == 2
        assert peer.commands == [[b"PING"]] * 3


def test_same_connection_with_many_open_files(client: dumbkv.Client) -> None:
    with many_open_files():
        first = client.client_id()
        assert client.ping() is True
        assert client.client_id() == first  # the idle check did not reconnect


def test_threads_share_one_client(client: dumbkv.Client) -> None:
    mixed: list[object] = []

    def worker(i: int) -> None:
        for j in range(100):
            value = f"{i}-{j}".encode()
            if client.set(f"t{i}", value) is not True or client.get(f"t{i}") != value:
                mixed.append((i, j))
                return

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert mixed == []  # every thread read its own replies
    assert client.mget(*(f"t{i}" for i in range(8))) == [f"{i}-99".encode() for i in range(8)]


def test_invalid_reply() -> None:
    with fake_peer(garbage_reply) as peer, dumbkv.Client(*peer.address, timeout=5) as client, \
            pytest.raises(dumbkv.InvalidReplyError):
        client.ping()


def test_reconnect_after_server_restart(
    server_factory: type[ServerProcess], tmp_path: Path
) -> None:
    first = server_factory(tmp_path, "--requirepass", "s3cret").start()
    url = f"dumbkv://:s3cret@{first.host}:{first.port}/3"
    with dumbkv.Client.from_url(url, timeout=10) as client:
        assert client.set("k", "v") is True
        first.stop()
        second = server_factory(tmp_path, "--requirepass", "s3cret", "--port",
                                str(first.port)).start()
        assert second.port == first.port
        assert client.get("k") == b"v"  # db 3 again, authenticated again
        assert client.info("keyspace") == {"db3": {"keys": 1, "expires": 0, "avg_ttl": 0}}


def test_auth(server_factory: type[ServerProcess], tmp_path: Path) -> None:
    server = server_factory(tmp_path, "--requirepass", "s3cret").start()
    with dumbkv.Client(*server.address) as client:
        with pytest.raises(dumbkv.AuthError) as caught:
            client.ping()
        assert caught.value.prefix == "NOAUTH"
        assert client.execute_raw("AUTH", "s3cret") == "OK"
        assert client.password == "s3cret"
        client.close()
        assert client.ping() is True  # the reconnect authenticated with the new password
    with dumbkv.Client(*server.address, password="wrong") as client:
        with pytest.raises(dumbkv.AuthError) as caught:
            client.connect()
        assert caught.value.prefix == "WRONGPASS"
    url = f"dumbkv://default:s3cret@{server.host}:{server.port}"
    with dumbkv.Client.from_url(url) as client:
        assert client.ping() is True
        assert client.auth("s3cret") is True


def test_auth_with_a_user_name_is_sent_again_in_the_same_form(
    server_factory: type[ServerProcess], tmp_path: Path
) -> None:
    """``AUTH default pw`` is what reconnects send too (``AUTH pw`` alone would be refused by a
    server without a password, which accepts any password for ``default``)."""
    for flags, password in (((), "anything"), (("--requirepass", "s3cret"), "s3cret")):
        data_dir = tmp_path / (flags[1] if flags else "open")
        data_dir.mkdir()
        server = server_factory(data_dir, *flags).start()
        with dumbkv.Client(*server.address) as client:
            assert client.auth(password, username="default") is True
            assert (client.username, client.password) == ("default", password)
            client.close()
            assert client.ping() is True  # reconnected with AUTH default <password>
        server.stop()


def test_hello_protocol_and_credentials_are_kept_across_reconnects(
    server_factory: type[ServerProcess], tmp_path: Path
) -> None:
    server = server_factory(tmp_path, "--requirepass", "s3cret").start()
    with dumbkv.Client(*server.address) as client:
        hello = client.execute_raw("HELLO", 3, "SETNAME", "auth", "AUTH", "default", "s3cret")
        assert isinstance(hello, dict) and hello[b"proto"] == 3
        assert (client.protocol, client.username, client.password) == (3, "default", "s3cret")
        first = client.client_id()
        client.close()
        again = client.execute_raw("HELLO")  # the new connection authenticated and spoke RESP3
        assert isinstance(again, dict) and again[b"proto"] == 3 and again[b"id"] != first
        assert client.execute_raw("HELLO", 2) == [*_flat(again, proto=2)]
        client.close()
        assert isinstance(client.execute_raw("HELLO"), list)  # back to RESP2 on reconnect too


def _flat(hello: dict[object, object], proto: int) -> list[object]:
    """HELLO's map as RESP2 sends it: keys and values in turn."""
    return [item for key, val in hello.items()
            for item in (key, proto if key == b"proto" else val)]


def test_the_command_after_quit_reconnects(client: dumbkv.Client) -> None:
    assert client.execute_raw("QUIT") == "OK"
    assert client.ping() is True


def test_client_errors_for_what_it_cannot_send_or_reach() -> None:
    with dumbkv.Client("a..b", 1) as client, pytest.raises(dumbkv.ConnectionError,
                                                          match="invalid address"):
        client.ping()
    with dumbkv.Client(port=1) as client, pytest.raises(ValueError, match="needs at least"):
        client.execute_raw()
    # A kernel timeout (ETIMEDOUT) with no timeout of ours set: a ConnectionError, with words.
    refused = core.link_failed("h", 1, OSError(110, "Connection timed out"), None)
    assert isinstance(refused, dumbkv.ConnectionError) and refused.reason
    assert isinstance(core.connect_failed("h", 1, OSError(110, "x"), None),
                      dumbkv.ConnectionError)


def test_an_unparseable_url_does_not_repeat_its_password() -> None:
    with pytest.raises(ValueError) as caught:
        dumbkv.Client.from_url("dumbkv://:s3cr\uff03t@127.0.0.1:7379/0")
    assert "s3cr" not in str(caught.value)


def test_from_url(server: ServerProcess) -> None:
    url = f"dumbkv://{server.host}:{server.port}/5"
    with dumbkv.Client.from_url(url, decode_responses=True, timeout=7) as client:
        assert (client.host, client.port, client.db) == (server.host, server.port, 5)
        assert (client.timeout, client.decode_responses, client.password) == (7, True, None)
        client.connect()
        client.connect()  # idempotent
        assert client.set("k", "v") is True
        assert client.info("keyspace") == {"db5": {"keys": 1, "expires": 0, "avg_ttl": 0}}


def test_error_table(server: ServerProcess) -> None:
    with dumbkv.Client(*server.address) as client:
        assert client.set("k", "v") is True
        with pytest.raises(dumbkv.CommandError) as caught:
            client.auth("x")
        assert caught.value.prefix == "ERR"
        assert str(caught.value).startswith("AUTH <password> called without any password")
        with StoreSQL(server.store) as sql:
            sql.execute("UPDATE kv SET value = ?", b"\x00")
        with pytest.raises(dumbkv.ServerError) as server_error:
            client.get("k")
        assert server_error.value.prefix == "SERVERERR"
        assert not isinstance(server_error.value, dumbkv.ClientError)
        assert client.set("k", "fixed") is True  # the connection is still usable
