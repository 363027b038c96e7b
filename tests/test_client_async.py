"""dumbkv.AsyncClient against the real server over real sockets, and against fake peers that
misbehave on purpose. tests/test_client_sync.py has the same tests for dumbkv.AsyncClient; the pool
tests are this file's own."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import AsyncIterator
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
from dumbkv.resp import ErrorReply, Parser

pytestmark = pytest.mark.backends("sqlite")


@pytest.fixture
async def client(server: ServerProcess) -> AsyncIterator[dumbkv.AsyncClient]:
    async with dumbkv.AsyncClient(*server.address, timeout=10) as c:
        yield c


async def test_string_commands(client: dumbkv.AsyncClient) -> None:
    assert await client.set("k", "v") is True
    assert await client.get("k") == b"v"
    assert await client.get("missing") is None
    assert await client.mset({"a": 1, b"b": b"\x00\r\n"}) is True
    assert await client.mget("a", "missing", "b") == [b"1", None, b"\x00\r\n"]
    assert await client.exists("a", "a", "missing") == 2
    assert await client.strlen("b") == 3
    assert await client.append("k", "w") == 2
    assert await client.incr("n") == 1
    assert await client.incrby("n", 10) == 11
    assert await client.decr("n") == 10
    assert await client.decrby("n", 4) == 6
    assert await client.set("f", 1.5) is True
    assert await client.get("f") == b"1.5"
    assert await client.getdel("k") == b"vw"
    assert await client.getdel("k") is None
    assert await client.delete("a", "b", "missing") == 2
    with pytest.raises(dumbkv.CommandError) as caught:
        await client.incr("f")
    assert caught.value.prefix == "ERR"
    assert str(caught.value) == "value is not an integer or out of range"


async def test_set_options(client: dumbkv.AsyncClient) -> None:
    assert await client.set("k", "v1") is True
    assert await client.set("k", "v2", nx=True) is None
    assert await client.set("new", "x", xx=True) is None
    assert await client.get("new") is None
    assert await client.set("k", "v2", xx=True, get=True) == b"v1"
    assert await client.set("absent", "v", get=True) is None
    assert await client.set("k", "v", ex=100) is True
    assert 99 <= await client.ttl("k") <= 100
    assert await client.set("k", "v", px=datetime.timedelta(seconds=50)) is True
    assert 49_000 <= await client.pttl("k") <= 50_000
    assert await client.set("k", "v2", keepttl=True) is True
    assert 49_000 <= await client.pttl("k") <= 50_000
    now = int(time.time())
    assert await client.set("k", "v", exat=now + 200) is True
    assert 198 <= await client.ttl("k") <= 200
    assert await client.set("k", "v", pxat=(now + 300) * 1000) is True
    assert 298 <= await client.ttl("k") <= 300
    with pytest.raises(dumbkv.CommandError, match="syntax error"):
        await client.set("k", "v", nx=True, xx=True)
    with pytest.raises(dumbkv.CommandError, match="invalid expire time"):
        await client.set("k", "v", ex=0)


async def test_expiry_commands(client: dumbkv.AsyncClient) -> None:
    assert await client.expire("missing", 10) is False
    assert await client.ttl("missing") == -2
    assert await client.set("k", "v") is True
    assert await client.ttl("k") == -1
    assert await client.persist("k") is False
    assert await client.expire("k", 100) is True
    assert await client.expire("k", 50, gt=True) is False
    assert await client.expire("k", datetime.timedelta(seconds=200), gt=True) is True
    assert 199 <= await client.ttl("k") <= 200
    assert await client.expire("k", 10, nx=True) is False
    assert await client.pexpire("k", 5000, lt=True) is True
    assert 4000 <= await client.pttl("k") <= 5000
    assert await client.persist("k") is True
    assert await client.ttl("k") == -1
    assert await client.pexpire("k", 1, xx=True) is False  # no expiry now: XX not met
    assert await client.pexpire("k", 0) is True  # a time <= 0 deletes the key
    assert await client.get("k") is None
    with pytest.raises(dumbkv.CommandError, match="not compatible"):
        await client.expire("k", 10, gt=True, lt=True)


async def test_connection_and_server_commands(
    client: dumbkv.AsyncClient, server: ServerProcess
) -> None:
    assert await client.ping() is True
    assert await client.echo("hi there") == b"hi there"
    assert await client.client_getname() is None
    assert await client.client_setname("worker-1") is True
    assert await client.client_getname() == b"worker-1"
    first_id = await client.client_id()
    assert isinstance(first_id, int) and first_id == await client.client_id()
    assert await client.set("a", 1) is True
    assert await client.select(4) is True
    assert client.db == 4
    assert await client.get("a") is None
    assert await client.set("b", 1) is True and await client.set("c", 2) is True
    assert await client.dbsize() == 2
    info = await client.info()
    assert info["tcp_port"] == server.port
    assert info["redis_version"] == "7.0.0"
    assert info["db0"] == {"keys": 1, "expires": 0, "avg_ttl": 0}
    assert info["db4"]["keys"] == 2
    assert set(await client.info("clients")) == {"connected_clients"}
    assert await client.config_get("port") == {b"port": str(server.port).encode()}
    assert await client.command_count() > 30
    seconds, micros = await client.time()
    assert abs(seconds - time.time()) < 60 and 0 <= micros < 1_000_000
    assert await client.flushdb() is True
    assert await client.dbsize() == 0
    assert await client.select(0) is True and await client.dbsize() == 1
    assert await client.flushall() is True
    assert await client.dbsize() == 0


async def test_decode_responses(server: ServerProcess) -> None:
    async with dumbkv.AsyncClient(*server.address, decode_responses=True) as client:
        assert await client.set("k", "välue") is True
        assert await client.get("k") == "välue"
        assert await client.mget("k", "missing") == ["välue", None]
        assert await client.echo(b"abc") == "abc"
        assert await client.set("k", "new", get=True) == "välue"
        assert await client.client_setname("n1") is True
        assert await client.client_getname() == "n1"
        assert await client.config_get("databases") == {"databases": "16"}
        assert await client.incr("n") == 1
        assert await client.execute_raw("GET", "k") == b"new"  # raw stays raw
        # A value that is not UTF-8: UnicodeDecodeError (in place in a pipeline), as documented.
        assert await client.set("bin", b"\xff\xfe") is True
        with pytest.raises(UnicodeDecodeError):
            await client.get("bin")
        async with client.pipeline() as p:
            p.get("bin")
            p.get("k")
            results = await p.execute()
        assert isinstance(results[0], UnicodeDecodeError) and results[1] == "new"


async def test_execute_raw(client: dumbkv.AsyncClient) -> None:
    assert await client.execute_raw("SET", "k", b"v") == "OK"
    assert await client.execute_raw("GET", "k") == b"v"
    assert await client.execute_raw("GET", "missing") is None
    assert await client.execute_raw("INCR", "n") == 1
    assert await client.execute_raw("MGET", "k", "missing") == [b"v", None]
    error = await client.execute_raw("INCR", "k")
    assert isinstance(error, ErrorReply)
    assert error == "ERR value is not an integer or out of range"
    assert await client.execute_raw("SELECT", 99) == "ERR DB index is out of range"
    assert client.db == 0
    assert await client.execute_raw("SELECT", "3") == "OK"
    assert client.db == 3
    assert await client.get("k") is None
    await client.close()  # the reconnect must go back to db 3
    assert await client.execute_raw("SET", "in3", "x") == "OK"
    assert (await client.info("keyspace"))["db3"]["keys"] == 1


async def test_pipeline_results_and_error_in_place(client: dumbkv.AsyncClient) -> None:
    async with client.pipeline() as pipe:
        assert pipe.set("a", "1") is pipe
        pipe.incr("a")
        pipe.set("s", "text")
        pipe.incr("s")  # fails in place
        pipe.get("a")
        pipe.select(2)
        pipe.set("in2", "y")
        assert len(pipe) == 7
        results = await pipe.execute()
    assert results[:3] == [True, 2, True]
    assert isinstance(results[3], dumbkv.CommandError)
    assert results[4:] == [b"2", True, True]
    assert client.db == 2
    assert await client.get("in2") == b"y"
    async with client.pipeline() as pipe:
        pipe.incr("in2")
        pipe.set("after", "z")
        with pytest.raises(dumbkv.CommandError, match="not an integer"):
            await pipe.execute(raise_on_error=True)
    assert await client.get("after") == b"z"  # every command ran; the first error was raised after
    async with client.pipeline() as pipe:
        assert await pipe.execute() == []
        pipe.ping()
    async with client.pipeline() as pipe:
        assert len(pipe) == 0  # a fresh pipeline; the unsent one was dropped


async def test_large_pipeline_with_large_replies_is_read_while_it_is_written(
    client: dumbkv.AsyncClient,
) -> None:
    big = b"v" * (1 << 20)
    assert await client.set("big", big) is True
    async with client.pipeline() as pipe:
        for _ in range(30):
            pipe.get("big")
        for i in range(20):
            pipe.set(f"k{i}", big)
        results = await pipe.execute()
    assert results == [big] * 30 + [True] * 20
    assert await client.strlen("k19") == len(big)


async def test_pipeline_is_one_write() -> None:
    with fake_peer(answer_after_three) as peer:
        async with dumbkv.AsyncClient(*peer.address, timeout=5) as client, \
                client.pipeline() as pipe:
            pipe.set("a", 1)
            pipe.set("b", 2)
            pipe.set("c", 3)
            assert await pipe.execute() == [True, True, True]
        assert [cmd[:2] for cmd in peer.commands] == [[b"SET", b"a"], [b"SET", b"b"],
                                                      [b"SET", b"c"]]
        assert len(Parser().feed(peer.chunks[0])) == 3  # all three arrived in one read


async def test_command_timeout() -> None:
    with silent_listener() as address:
        async with dumbkv.AsyncClient(*address, timeout=0.3) as client:
            await client.connect()
            started = time.monotonic()
            with pytest.raises(dumbkv.TimeoutError, match="no reply within"):
                await client.ping()
            assert 0.25 <= time.monotonic() - started < 3


async def test_connect_timeout() -> None:
    with full_backlog() as address:
        async with dumbkv.AsyncClient(*address, connect_timeout=0.3) as client:
            started = time.monotonic()
            with pytest.raises(dumbkv.TimeoutError, match="could not connect"):
                await client.connect()
            assert 0.25 <= time.monotonic() - started < 3


async def test_connection_refused() -> None:
    with silent_listener() as address:
        pass  # the port is free again: nothing listens there
    async with dumbkv.AsyncClient(*address) as client:
        with pytest.raises(dumbkv.ConnectionError, match="refused") as caught:
            await client.ping()
        assert not isinstance(caught.value, dumbkv.TimeoutError)
        assert isinstance(caught.value, ConnectionError)  # also the builtin
        assert caught.value.reason == "Connection refused"  # without the address


async def test_no_retry_after_send() -> None:
    with fake_peer(read_one_then_close) as peer:
        async with dumbkv.AsyncClient(*peer.address, timeout=5) as client:
            with pytest.raises(dumbkv.ConnectionError, match="closed"):
                await client.incr("counter")
        assert peer.connections == 1
        assert peer.commands == [[b"INCR", b"counter"]]


async def test_reconnect_after_broken_connection() -> None:
    with fake_peer(first_breaks_then_pong) as peer:
        async with dumbkv.AsyncClient(*peer.address, timeout=5) as client:
            with pytest.raises(dumbkv.ConnectionError):
                await client.ping()
            assert await client.ping() is True
            assert await client.ping() is True
        assert peer.connections == 2
        assert peer.commands == [[b"PING"]] * 3


async def test_same_connection_with_many_open_files(client: dumbkv.AsyncClient) -> None:
    with many_open_files():
        first = await client.client_id()
        assert await client.ping() is True
        assert await client.client_id() == first  # the idle check did not reconnect


async def test_threads_share_one_client(server: ServerProcess) -> None:
    # asyncio's form of sharing: tasks on one client (two pooled connections).
    async with dumbkv.AsyncClient(*server.address, timeout=10, max_connections=2) as client:
        async def worker(i: int) -> None:
            for j in range(100):
                value = f"{i}-{j}".encode()
                assert await client.set(f"t{i}", value) is True
                assert await client.get(f"t{i}") == value

        await asyncio.gather(*(worker(i) for i in range(8)))
        assert await client.mget(*(f"t{i}" for i in range(8))) == [
            f"{i}-99".encode() for i in range(8)]


async def test_invalid_reply() -> None:
    with fake_peer(garbage_reply) as peer:
        async with dumbkv.AsyncClient(*peer.address, timeout=5) as client:
            with pytest.raises(dumbkv.InvalidReplyError):
                await client.ping()


async def test_reconnect_after_server_restart(
    server_factory: type[ServerProcess], tmp_path: Path
) -> None:
    first = server_factory(tmp_path, "--requirepass", "s3cret").start()
    url = f"dumbkv://:s3cret@{first.host}:{first.port}/3"
    async with dumbkv.AsyncClient.from_url(url, timeout=10) as client:
        assert await client.set("k", "v") is True
        first.stop()
        second = server_factory(tmp_path, "--requirepass", "s3cret", "--port",
                                str(first.port)).start()
        assert second.port == first.port
        assert await client.get("k") == b"v"  # db 3 again, authenticated again
        assert await client.info("keyspace") == {"db3": {"keys": 1, "expires": 0, "avg_ttl": 0}}


async def test_auth(server_factory: type[ServerProcess], tmp_path: Path) -> None:
    server = server_factory(tmp_path, "--requirepass", "s3cret").start()
    async with dumbkv.AsyncClient(*server.address) as client:
        with pytest.raises(dumbkv.AuthError) as caught:
            await client.ping()
        assert caught.value.prefix == "NOAUTH"
        assert await client.execute_raw("AUTH", "s3cret") == "OK"
        assert client.password == "s3cret"
        await client.close()
        assert await client.ping() is True  # the reconnect authenticated with the new password
    async with dumbkv.AsyncClient(*server.address, password="wrong") as client:
        with pytest.raises(dumbkv.AuthError) as caught:
            await client.connect()
        assert caught.value.prefix == "WRONGPASS"
    url = f"dumbkv://default:s3cret@{server.host}:{server.port}"
    async with dumbkv.AsyncClient.from_url(url) as client:
        assert await client.ping() is True
        assert await client.auth("s3cret") is True


async def test_auth_with_a_user_name_is_sent_again_in_the_same_form(
    server: ServerProcess,
) -> None:
    async with dumbkv.AsyncClient(*server.address) as client:
        assert await client.auth("anything", username="default") is True
        assert (client.username, client.password) == ("default", "anything")
        await client.close()
        assert await client.ping() is True  # AUTH default anything: accepted with no password


async def test_hello_protocol_and_credentials_are_kept_across_reconnects(
    server_factory: type[ServerProcess], tmp_path: Path
) -> None:
    server = server_factory(tmp_path, "--requirepass", "s3cret").start()
    async with dumbkv.AsyncClient(*server.address) as client:
        hello = await client.execute_raw("HELLO", 3, "AUTH", "default", "s3cret")
        assert isinstance(hello, dict) and hello[b"proto"] == 3
        first = await client.client_id()
        await client.close()
        again = await client.execute_raw("HELLO")
        assert isinstance(again, dict) and again[b"proto"] == 3 and again[b"id"] != first


async def test_the_command_after_quit_reconnects(client: dumbkv.AsyncClient) -> None:
    assert await client.execute_raw("QUIT") == "OK"
    assert await client.ping() is True


async def test_client_errors_for_what_it_cannot_reach() -> None:
    async with dumbkv.AsyncClient("a..b", 1) as client:
        with pytest.raises(dumbkv.ConnectionError, match="invalid address"):
            await client.ping()
        with pytest.raises(ValueError, match="needs at least"):
            await client.execute_raw()


async def test_from_url(server: ServerProcess) -> None:
    url = f"dumbkv://{server.host}:{server.port}/5"
    async with dumbkv.AsyncClient.from_url(url, decode_responses=True, timeout=7) as client:
        assert (client.host, client.port, client.db) == (server.host, server.port, 5)
        assert (client.timeout, client.decode_responses, client.password) == (7, True, None)
        await client.connect()
        await client.connect()  # idempotent
        assert await client.set("k", "v") is True
        assert await client.info("keyspace") == {"db5": {"keys": 1, "expires": 0, "avg_ttl": 0}}


async def test_error_table(server: ServerProcess) -> None:
    async with dumbkv.AsyncClient(*server.address) as client:
        assert await client.set("k", "v") is True
        with pytest.raises(dumbkv.CommandError) as caught:
            await client.auth("x")
        assert caught.value.prefix == "ERR"
        assert str(caught.value).startswith("AUTH <password> called without any password")
        with StoreSQL(server.store) as sql:
            sql.execute("UPDATE kv SET value = ?", b"\x00")
        with pytest.raises(dumbkv.ServerError) as server_error:
            await client.get("k")
        assert server_error.value.prefix == "SERVERERR"
        assert not isinstance(server_error.value, dumbkv.ClientError)
        assert await client.set("k", "fixed") is True  # the connection is still usable


# ---------------------------------------------------------------------------- the pool
async def test_pool_bounded_under_200_tasks(server: ServerProcess) -> None:
    async with dumbkv.AsyncClient(*server.address, timeout=20) as observer, \
            dumbkv.AsyncClient(*server.address, timeout=20, max_connections=5) as client:
        before = (await observer.info("stats"))["total_connections_received"]
        most_open = 0
        most_clients = 0

        async def worker(i: int) -> int:
            nonlocal most_open
            value = await client.incr("counter")
            assert await client.set(f"key-{i}", i) is True
            most_open = max(most_open, client.pool.open_connections)
            return int(value)

        async def sampler(done: asyncio.Event) -> None:
            nonlocal most_clients
            while not done.is_set():
                clients = (await observer.info("clients"))["connected_clients"]
                most_clients = max(most_clients, clients)

        done = asyncio.Event()
        watching = asyncio.create_task(sampler(done))
        values = await asyncio.gather(*(worker(i) for i in range(200)))
        done.set()
        await watching
        after = (await observer.info("stats"))["total_connections_received"]
        assert sorted(values) == list(range(1, 201))
        assert await client.get("counter") == b"200"
        assert 1 <= most_open <= 5
        assert after - before <= 5  # never more than max_connections sockets were opened
        assert most_clients <= 5 + 1  # the pool's connections plus the observer's


async def test_pool_timeout_waiting_for_a_free_connection() -> None:
    with silent_listener() as address:
        async with dumbkv.AsyncClient(*address, timeout=10, max_connections=1,
                                      pool_timeout=0.2) as client:
            stuck = asyncio.create_task(client.ping())  # holds the only connection
            while client.pool.open_connections == 0:
                await asyncio.sleep(0)  # let the task take the connection
            started = time.monotonic()
            with pytest.raises(dumbkv.TimeoutError, match="no free connection"):
                await client.ping()
            assert 0.15 <= time.monotonic() - started < 3
            stuck.cancel()
            with pytest.raises(asyncio.CancelledError):
                await stuck
            assert client.pool.open_connections == 0  # cancelled mid-command: discarded


def test_pool_serves_one_event_loop_after_another(server: ServerProcess) -> None:
    client = dumbkv.AsyncClient(*server.address, timeout=10, max_connections=1,
                                pool_timeout=10)

    async def busy() -> list[int]:
        async with client:  # two tasks share the one connection: the second one waits
            return list(await asyncio.gather(client.incr("runs"), client.incr("runs")))

    assert asyncio.run(busy()) == [1, 2]  # a program that calls asyncio.run twice
    assert asyncio.run(busy()) == [3, 4]
    assert client.pool.open_connections == 0


async def test_pool_discards_broken_connection() -> None:
    with fake_peer(first_breaks_then_pong) as peer:
        async with dumbkv.AsyncClient(*peer.address, timeout=5, max_connections=2) as client:
            with pytest.raises(dumbkv.ConnectionError):
                await client.ping()
            assert client.pool.open_connections == 0
            assert await client.ping() is True
            assert client.pool.open_connections == 1
            assert await client.ping() is True
        assert peer.connections == 2
