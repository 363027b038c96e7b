"""Connection behaviour over real sockets: pipelining, inline requests, protocol errors, big and
many clients, concurrency, server errors and shutdown.

Protocol error texts: /work/shared/reference/redis-clients.md section (b) (Redis 7.0.15).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
import socket
import struct
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis
from conftest import RawClient, ServerProcess, StoreSQL, call, enc

from dumbkv.app import _sweep_forever


@contextlib.contextmanager
def connect(server: ServerProcess, timeout: float = 5.0) -> Iterator[RawClient]:
    client = RawClient(server.address, timeout=timeout)
    try:
        yield client
    finally:
        client.close()


def assert_alive(server: ServerProcess) -> None:
    """The process runs and a brand-new connection is served."""
    assert server.proc is not None
    assert server.proc.poll() is None, server.log
    with connect(server) as fresh:
        assert call(fresh, "PING") == "PONG"
        assert call(fresh, "SET", "alive-check", "1") == "OK"
        assert call(fresh, "GET", "alive-check") == b"1"


def reset_on_close(client: RawClient) -> None:
    """Make close() send RST, like a client that vanishes."""
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


# --------------------------------------------------------------------------- pipelining
def test_pipeline_of_100_commands_replies_in_order(raw: RawClient) -> None:
    request = b"".join(
        enc("SET", f"k{i}", f"v{i}") + enc("GET", f"k{i}") for i in range(50)
    )
    raw.send(request)  # one send: 100 commands
    for i in range(50):
        assert raw.read_reply() == "OK"
        assert raw.read_reply() == f"v{i}".encode()  # read-your-writes inside the pipeline
    raw.send(b"".join(enc("INCR", "counter") for _ in range(100)))
    assert [raw.read_reply() for _ in range(100)] == list(range(1, 101))


def test_pipeline_overwrites_and_deletes_in_order(raw: RawClient) -> None:
    raw.send(
        enc("SET", "k", "1") + enc("GET", "k") + enc("SET", "k", "2") + enc("GET", "k")
        + enc("DEL", "k") + enc("GET", "k") + enc("INCR", "k") + enc("APPEND", "k", "0")
        + enc("GET", "k") + enc("SET", "k", "x", "NX") + enc("GETDEL", "k") + enc("EXISTS", "k")
    )
    assert [raw.read_reply() for _ in range(12)] == [
        "OK", b"1", "OK", b"2", 1, None, 1, 2, b"10", None, b"10", 0,
    ]


def test_pipeline_mixes_immediate_store_and_whole_db_replies(raw: RawClient) -> None:
    """PING/ECHO answer at once, GET waits for the store, DBSIZE/FLUSHDB run alone:
    the replies still leave in command order."""
    raw.send(
        enc("SET", "a", "1") + enc("PING") + enc("GET", "a") + enc("ECHO", "e")
        + enc("DBSIZE") + enc("FLUSHDB") + enc("GET", "a") + enc("PING", "p")
        + enc("SET", "a", "2") + enc("DBSIZE") + enc("FOO") + enc("INCR", "a")
        + enc("GET") + enc("TIME")
    )
    replies = [raw.read_reply() for _ in range(14)]
    assert replies[:13] == [
        "OK", "PONG", b"1", b"e", 1, "OK", None, b"p", "OK", 1,
        ("error", "ERR unknown command 'FOO', with args beginning with: "), 3,
        ("error", "ERR wrong number of arguments for 'get' command"),
    ]
    assert isinstance(replies[13], list)
    assert len(replies[13]) == 2


def test_pipeline_across_select(raw: RawClient) -> None:
    raw.send(
        enc("SET", "k", "zero") + enc("SELECT", "1") + enc("GET", "k") + enc("SET", "k", "one")
        + enc("SELECT", "0") + enc("GET", "k") + enc("SELECT", "1") + enc("GET", "k")
    )
    assert [raw.read_reply() for _ in range(8)] == [
        "OK", "OK", None, "OK", "OK", b"zero", "OK", b"one",
    ]


def test_big_pipeline(raw: RawClient) -> None:
    raw.send(b"".join(enc("INCR", "n") for _ in range(10_000)) + enc("GET", "n"))
    for expected in range(1, 10_001):
        assert raw.read_reply() == expected
    assert raw.read_reply() == b"10000"


def test_request_split_into_single_bytes(raw: RawClient) -> None:
    raw.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    data = enc("SET", "split", "value\r\n") + b"GET split\r\n" + enc("STRLEN", "split")
    for i in range(len(data)):
        raw.send(data[i : i + 1])
    assert raw.read_reply() == "OK"
    assert raw.read_reply() == b"value\r\n"
    assert raw.read_reply() == 7


def test_pipeline_with_unread_replies_under_backpressure(raw: RawClient) -> None:
    """The client sends far more than it reads; nothing is lost or reordered."""
    value = bytes(range(256)) * 4096  # 1 MiB
    assert call(raw, "SET", "big", value) == "OK"
    count = 64
    request = b"".join(enc("GET", "big") + enc("ECHO", str(i)) for i in range(count))
    sender = threading.Thread(target=raw.send, args=(request,))
    sender.start()
    try:
        for i in range(count):
            assert raw.read_reply() == value
            assert raw.read_reply() == str(i).encode()
    finally:
        sender.join(30)
    assert not sender.is_alive()


# --------------------------------------------------------------------------- inline requests
def test_mixed_inline_and_resp_in_one_send(raw: RawClient) -> None:
    raw.send(
        b"PING\r\n" + enc("ECHO", "hi") + b"SET a b\r\n" + enc("GET", "a")
        + b"GET a\n" + enc("SET", "a", "c") + b"get a\r\n"
    )
    assert [raw.read_reply() for _ in range(7)] == [
        "PONG", b"hi", "OK", b"b", b"b", "OK", b"c",
    ]


def test_inline_quoting(raw: RawClient) -> None:
    raw.send(
        b'SET k "a b"\r\nGET k\r\n'
        b'SET k2 "tab\\there \\"q\\" \\x41\\x00\\xff \\n"\r\nGET k2\r\n'
        b"SET k3 'it\\'s \"x\"'\r\nGET k3\r\n"
        b'SET k4 ""\r\nSTRLEN k4\r\nEXISTS k4\r\n'
        b"SET   k5 \t v5   \r\nGET k5\r\n"
    )
    assert [raw.read_reply() for _ in range(11)] == [
        "OK", b"a b",
        "OK", b'tab\there "q" A\x00\xff \n',
        "OK", b"it's \"x\"",
        "OK", 0, 1,
        "OK", b"v5",
    ]


def test_blank_lines_get_no_reply(raw: RawClient) -> None:
    raw.send(b"\r\n\n   \r\n\t\r\n" + b"PING\r\n" + b"\r\n\r\n" + b"ECHO x\r\n")
    assert raw.read_reply() == "PONG"
    assert raw.read_reply() == b"x"
    raw.send(b"\r\n" + enc("PING", "last"))
    assert raw.read_reply() == b"last"
    assert raw.buf == b""


def test_empty_multibulk_is_ignored(raw: RawClient) -> None:
    raw.send(b"*0\r\n*-1\r\nPING\r\n")
    assert raw.read_reply() == "PONG"
    raw.send(enc("PING", "next"))
    assert raw.read_reply() == b"next"
    assert raw.buf == b""


def test_inline_unknown_command(raw: RawClient) -> None:
    raw.send(b"FOO a b\r\n")
    assert raw.read_line() == b"-ERR unknown command 'FOO', with args beginning with: 'a' 'b' "


# --------------------------------------------------------------------------- protocol errors
@pytest.mark.parametrize(
    ("request_bytes", "error"),
    [
        (b"*abc\r\n", b"-ERR Protocol error: invalid multibulk length"),
        (b"*3000000000\r\n", b"-ERR Protocol error: invalid multibulk length"),
        (b"*1\r\nfoo\r\n", b"-ERR Protocol error: expected '$', got 'f'"),
        (b"*1\r\n$-5\r\n", b"-ERR Protocol error: invalid bulk length"),
        (b"*1\r\n$abc\r\n", b"-ERR Protocol error: invalid bulk length"),
        (b"*2\r\n$3\r\nGET\r\n:1\r\n", b"-ERR Protocol error: expected '$', got ':'"),
        (b'SET k "abc\r\n', b"-ERR Protocol error: unbalanced quotes in request"),
        (b"SET k 'abc\r\n", b"-ERR Protocol error: unbalanced quotes in request"),
        (b'SET k "a"b\r\n', b"-ERR Protocol error: unbalanced quotes in request"),
    ],
    ids=["multibulk-nan", "multibulk-huge", "expected-dollar", "bulk-negative", "bulk-nan",
         "expected-dollar-colon", "dquote", "squote", "quote-then-char"],
)
def test_protocol_error_replies_then_closes(
    server: ServerProcess, request_bytes: bytes, error: bytes
) -> None:
    with connect(server) as bystander, connect(server) as bad:
        assert call(bystander, "SET", "k", "orig") == "OK"
        # Commands before the bad bytes run; anything after them is ignored.
        bad.send(enc("PING", "first") + request_bytes + enc("SET", "after", "1") + b"PING\r\n")
        assert bad.read_reply() == b"first"
        assert bad.read_line() == error
        assert bad.is_closed()
        assert bad.buf == b""
        # The other connection never noticed.
        assert call(bystander, "PING") == "PONG"
        assert call(bystander, "GET", "k") == b"orig"
        assert call(bystander, "EXISTS", "after") == 0
    assert_alive(server)


def test_protocol_error_counts_in_info(server: ServerProcess) -> None:
    with connect(server) as bad:
        bad.send(b"*abc\r\n")
        assert bad.read_line() == b"-ERR Protocol error: invalid multibulk length"
        assert bad.is_closed()
    with connect(server) as client:
        info = call(client, "INFO", "stats")
        assert isinstance(info, bytes)
        assert b"protocol_errors:1\r\n" in info


# --------------------------------------------------------------------------- disconnects
def test_client_vanishing_with_replies_pending(server: ServerProcess) -> None:
    value = b"x" * (4 * 1024 * 1024)
    with connect(server) as setup:
        assert call(setup, "SET", "big", value) == "OK"
    # Many replies (tens of MB) owed to a client that resets the connection without reading.
    for _ in range(3):
        client = RawClient(server.address)
        reset_on_close(client)
        client.send(b"".join(enc("GET", "big") + enc("INCR", "n") for _ in range(20)))
        client.close()
    # A client that half-reads a pipeline, like redis-benchmark's CONFIG probe.
    client = RawClient(server.address)
    client.send(enc("CONFIG", "GET", "save") + enc("CONFIG", "GET", "appendonly"))
    assert client.read_reply() == [b"save", b""]
    client.close()
    assert_alive(server)
    with connect(server) as after:
        assert call(after, "STRLEN", "big") == len(value)
        n = call(after, "INCR", "n")
        assert isinstance(n, int)
        assert 1 <= n <= 61


# --------------------------------------------------------------------------- unbounded sizes
def test_20_mb_value_via_resp(server: ServerProcess) -> None:
    value = bytes(range(256)) * (20 * 1024 * 1024 // 256)
    with connect(server, timeout=60) as client:
        assert call(client, "SET", "big", value) == "OK"
        assert call(client, "STRLEN", "big") == len(value)
        client.send(enc("GET", "big"))
        assert client.read_line() == b"$%d" % len(value)
        assert client.read_exact(len(value) + 2) == value + b"\r\n"
        assert call(client, "APPEND", "big", "!") == len(value) + 1


def test_1_mb_inline_line(server: ServerProcess) -> None:
    value = b"a" * (1024 * 1024)
    with connect(server, timeout=60) as client:
        client.send(b"SET inline " + value + b"\r\n")
        assert client.read_reply() == "OK"
        client.send(b"ECHO " + value + b"\r\n")
        assert client.read_reply() == value
        assert call(client, "GET", "inline") == value


def test_many_arguments(raw: RawClient) -> None:
    keys = [f"k{i}" for i in range(5000)]
    assert call(raw, "MSET", *[x for k in keys for x in (k, k.upper())]) == "OK"
    assert call(raw, "MGET", *keys) == [k.upper().encode() for k in keys]
    assert call(raw, "EXISTS", *keys, "missing") == 5000
    assert call(raw, "DEL", *keys) == 5000


# --------------------------------------------------------------------------- many clients
def test_200_connections_at_once(server: ServerProcess) -> None:
    clients = [RawClient(server.address, timeout=20) for _ in range(200)]
    try:
        for i, client in enumerate(clients):
            client.send(enc("SET", f"c{i}", str(i)) + enc("PING"))
        for client in clients:
            assert client.read_reply() == "OK"
            assert client.read_reply() == "PONG"
        info = call(clients[0], "INFO", "clients")
        assert isinstance(info, bytes)
        assert b"connected_clients:200\r\n" in info
        ids = {call(client, "CLIENT", "ID") for client in clients}
        assert len(ids) == 200
        for i, client in enumerate(clients):
            assert call(client, "GET", f"c{(i + 1) % 200}") == str((i + 1) % 200).encode()
        assert call(clients[-1], "DBSIZE") == 200
    finally:
        for client in clients:
            client.close()
    assert_alive(server)


def test_concurrent_incr_is_exact(server: ServerProcess) -> None:
    host, port = server.address
    workers, per_worker = 50, 200
    barrier = threading.Barrier(workers, timeout=30)

    def work(_: int) -> list[int]:
        client = redis.Redis(host=host, port=port, protocol=2, socket_timeout=60)
        try:
            client.ping()
            barrier.wait()
            return [client.incr("counter") for _ in range(per_worker)]
        finally:
            client.close()

    with ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(work, range(workers)))
    for replies in results:
        assert replies == sorted(replies)  # each client sees its own increments in order
    every = sorted(r for replies in results for r in replies)
    assert every == list(range(1, workers * per_worker + 1))  # no lost or doubled update
    with connect(server) as client:
        assert call(client, "GET", "counter") == b"10000"


def test_concurrent_pipelines_keep_read_your_writes(server: ServerProcess) -> None:
    """Many connections batch together in the store; each still sees its own writes."""
    def work(n: int) -> None:
        with connect(server, timeout=30) as client:
            request = b"".join(
                enc("SET", f"w{n}", f"{n}:{i}") + enc("GET", f"w{n}") + enc("INCR", f"c{n}")
                for i in range(100)
            )
            client.send(request)
            for i in range(100):
                assert client.read_reply() == "OK"
                assert client.read_reply() == f"{n}:{i}".encode()
                assert client.read_reply() == i + 1

    with ThreadPoolExecutor(20) as pool:
        list(pool.map(work, range(20)))
    with connect(server) as client:
        assert call(client, "DBSIZE") == 40


# --------------------------------------------------------------------------- server errors
def _rows(server: ServerProcess) -> list[tuple[bytes, bytes]]:
    with StoreSQL(server.store) as sql:
        return [(bytes(i), bytes(v)) for i, v in sql.fetch("SELECT id, value FROM kv")]


def _update(server: ServerProcess, statement: str, *params: object) -> None:
    """Change the store's rows behind the running server's back."""
    with StoreSQL(server.store) as sql:
        sql.execute(statement, *params)


def test_tampered_row_is_a_server_error_not_a_crash(server: ServerProcess,
                                                    raw: RawClient) -> None:
    assert call(raw, "SET", "victim", "secret value") == "OK"
    assert call(raw, "SET", "other", "fine") == "OK"
    rows = dict(_rows(server))
    victim_id = hashlib.sha256(b"victim").digest()  # the id without a server secret
    assert set(rows) == {victim_id, hashlib.sha256(b"other").digest()}
    tampered = bytearray(rows[victim_id])
    tampered[-1] ^= 0x01  # one bit of the authentication tag
    _update(server, "UPDATE kv SET value = ? WHERE id = ?", bytes(tampered), victim_id)

    raw.send(enc("GET", "victim"))
    line = raw.read_line()
    assert line.startswith(b"-SERVERERR "), line
    assert b"secret" not in line
    # The connection, the other keys and the process are fine.
    assert call(raw, "GET", "other") == b"fine"
    reply = call(raw, "MGET", "other", "victim")
    assert isinstance(reply, tuple)
    assert reply[1].startswith("SERVERERR ")
    assert_alive(server)
    info = call(raw, "INFO", "stats")
    assert isinstance(info, bytes)
    assert b"replies_server_error:0\r\n" not in info
    # Overwriting the damaged key heals it.
    assert call(raw, "SET", "victim", "new") == "OK"
    assert call(raw, "GET", "victim") == b"new"


def test_swapped_row_is_an_error_never_wrong_data(server: ServerProcess,
                                                  raw: RawClient) -> None:
    assert call(raw, "SET", "a", "value of a") == "OK"
    assert call(raw, "SET", "b", "value of b") == "OK"
    id_a, id_b = hashlib.sha256(b"a").digest(), hashlib.sha256(b"b").digest()
    rows = dict(_rows(server))
    assert set(rows) == {id_a, id_b}
    _update(server, "UPDATE kv SET value = ? WHERE id = ?", rows[id_a], id_b)
    reply = call(raw, "GET", "b")
    assert isinstance(reply, tuple)
    assert reply[1].startswith("SERVERERR ")
    assert call(raw, "GET", "a") == b"value of a"
    assert_alive(server)


def test_store_unavailable_is_a_server_error_then_recovers(
    server_factory: type[ServerProcess], tmp_path: Path
) -> None:
    srv = server_factory(tmp_path, "--store-timeout", "0.5").start()
    with connect(srv, timeout=20) as client:
        assert call(client, "SET", "k", "before") == "OK"
        # Another program holds the store's write lock: writes cannot commit in time.
        with StoreSQL(srv.store) as locker, locker.write_lock():
            client.send(enc("SET", "k", "during"))
            line = client.read_line()
            assert line.startswith(b"-SERVERERR "), line
            assert call(client, "PING") == "PONG"
        assert call(client, "SET", "k", "after") == "OK"
        assert call(client, "GET", "k") == b"after"
    assert_alive(srv)


# --------------------------------------------------------------------------- shutdown
def test_sigterm_exits_zero_and_keeps_acknowledged_writes(
    server_factory: type[ServerProcess], tmp_path: Path
) -> None:
    first = server_factory(tmp_path).start()
    client = RawClient(first.address)
    try:
        client.send(b"".join(enc("SET", f"k{i}", f"v{i}") for i in range(100)))
        assert [client.read_reply() for _ in range(100)] == ["OK"] * 100
        assert call(client, "SELECT", "3") == "OK"
        assert call(client, "SET", "last", "acknowledged") == "OK"  # right before SIGTERM
        assert first.stop() == 0
        assert client.is_closed()
    finally:
        client.close()
    assert "stopped" in first.log

    second = server_factory(tmp_path).start()
    with connect(second) as after:
        assert call(after, "MGET", *[f"k{i}" for i in range(100)]) == [
            f"v{i}".encode() for i in range(100)
        ]
        assert call(after, "SELECT", "3") == "OK"
        assert call(after, "GET", "last") == b"acknowledged"


def test_sigterm_during_a_pipeline_loses_no_acknowledged_write(
    server_factory: type[ServerProcess], tmp_path: Path
) -> None:
    # A short shutdown timeout, so the server closes the connection mid-pipeline.
    first = server_factory(tmp_path, "--shutdown-timeout", "0.2").start()
    assert first.proc is not None
    total = 50_000
    client = RawClient(first.address, timeout=20)
    acked: list[object] = []

    def send() -> None:
        # The server may close before it has read everything: that is allowed.
        with contextlib.suppress(OSError):
            client.send(b"".join(enc("INCR", "n") for _ in range(total)))

    sender = threading.Thread(target=send)
    sender.start()
    try:
        acked.append(client.read_reply())  # the pipeline is being served
        first.proc.terminate()  # one SIGTERM, as Kubernetes sends
        with contextlib.suppress(ConnectionError):
            while len(acked) < total:
                acked.append(client.read_reply())
    finally:
        sender.join(30)
        client.close()
    assert not sender.is_alive()
    code = first.proc.wait(30)
    first.stop()  # collects the log; sends nothing to an exited process
    assert code == 0, first.log
    assert acked == list(range(1, len(acked) + 1))

    second = server_factory(tmp_path).start()
    with connect(second) as after:
        stored = call(after, "GET", "n")
        assert isinstance(stored, bytes)
        assert len(acked) <= int(stored) <= total


def test_sigterm_under_pipelined_load_is_bounded_and_loses_nothing_acknowledged(
    server_factory: type[ServerProcess], tmp_path: Path
) -> None:
    """SIGTERM while a 100k-command pipeline runs: the server stops reading, answers every
    command it read (executed: the new value; not started by the shutdown timeout: a server
    error), exits 0 in bounded time, and the counter after a restart equals exactly the number
    of increments it acknowledged."""
    total = 500_000
    srv = server_factory(tmp_path, "--shutdown-timeout", "0.05").start()
    client = RawClient(srv.address, timeout=30)
    def send_all() -> None:
        with contextlib.suppress(OSError):  # the server stops reading and closes
            client.send(b"*2\r\n$4\r\nINCR\r\n$1\r\nc\r\n" * total)

    sender = threading.Thread(target=send_all, daemon=True)
    sender.start()
    assert client.read_reply() == 1  # the load is running
    assert srv.proc is not None
    srv.proc.send_signal(signal.SIGTERM)
    acked = 1
    refused = 0
    while True:
        try:
            reply = client.read_reply()
        except ConnectionError:
            break
        if isinstance(reply, int):
            acked += 1
            assert reply == acked  # in order, no gaps
        else:
            assert reply == ("error", "SERVERERR server is shutting down")
            refused += 1
    client.close()
    assert srv.proc.wait(30) == 0
    assert acked < total  # the shutdown really cut the pipeline short
    sender.join(30)
    after = server_factory(tmp_path).start()
    check = RawClient(after.address)
    try:
        check.send(b"GET c\r\n")
        assert check.read_reply() == str(acked).encode()
    finally:
        check.close()


def test_half_closed_client_gets_every_reply(server: ServerProcess) -> None:
    """`printf 'SET a 1\\nGET a\\n' | nc -N host port`: the client shuts down its sending side
    right after the commands; every reply (including those that wait for the store) still
    arrives, then the server closes."""
    client = RawClient(server.address)
    client.send(b"PING\r\nSET half 1\r\nINCR half\r\nGET half\r\n")
    client.sock.shutdown(socket.SHUT_WR)
    assert client.read_reply() == "PONG"
    assert client.read_reply() == "OK"
    assert client.read_reply() == 2
    assert client.read_reply() == b"2"
    assert client.is_closed()
    client.close()


async def test_a_bug_in_the_expiry_sweep_is_logged_and_the_sweeper_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Not a store error but a bug (here a RuntimeError quoting a value): the sweeper logs its
    frames, not its message, and sweeps again at the next interval instead of dying (a dead
    sweeper's exception would also surface at shutdown and skip the orderly stop)."""
    swept = asyncio.Event()
    calls: list[str] = []
    secret = "-".join(("secret", "value"))  # not in this source, which the traceback quotes

    class Store:
        async def size_bytes(self) -> int:
            calls.append("size")
            if len(calls) == 1:
                raise RuntimeError("the value " + secret)
            return 1

        async def sweep(self) -> int:
            swept.set()
            return 0

    state = SimpleNamespace(store=Store(), config=SimpleNamespace(sweep_interval=0.001),
                            store_size=None)
    task = asyncio.create_task(_sweep_forever(state))  # type: ignore[arg-type]
    try:
        await asyncio.wait_for(swept.wait(), 10)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert calls[:2] == ["size", "size"]
    assert "expiry sweep failed: RuntimeError" in caplog.text
    assert secret not in caplog.text
