"""PostgreSQL only: several DumbKV processes on one database, backend faults, the schema, URLs.

The contract suite (test_commands, test_server, test_durability, test_real_clients) already runs
every command on PostgreSQL; this file covers what only a shared database has.

* Atomicity across processes: INCR, SET NX, APPEND, MSET and GETDEL from two server processes
  on one database (row locks in the database, not an in-process lock).
* Faults: PostgreSQL stopped mid-load (``pg_ctl stop -m immediate``), hung (SIGSTOP) or holding
  a lock answers ``-SERVERERR`` within the store timeout, PING and other connections keep
  working, the process stays up and recovers by itself when PostgreSQL returns; no
  acknowledged write is lost.
* The schema is created on start, versioned, and two servers starting at once both come up.
* ``postgres://`` is an alias; ``?pool_size=N`` bounds the connections.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis
import redis.asyncio
import redis.asyncio.retry
import redis.backoff
import redis.retry
from conftest import RawClient, ServerProcess, StoreSQL, call, enc
from postgres import Cluster, PgConn, Postgres

from dumbkv.store import create_store

pytestmark = pytest.mark.backends("postgres")

Factory = type[ServerProcess]
SOCKET_TIMEOUT = 30


def two_servers(server_factory: Factory, tmp_path: Path, store_url: str,
                *flags: str) -> tuple[ServerProcess, ServerProcess]:
    """Two DumbKV processes on the same PostgreSQL database."""
    a = server_factory(tmp_path / "a", *flags, store=store_url).start()
    b = server_factory(tmp_path / "b", *flags, store=store_url).start()
    return a, b


@asynccontextmanager
async def async_clients(
    servers: list[ServerProcess], per_server: int
) -> AsyncIterator[list[tuple[int, redis.asyncio.Redis]]]:
    """``per_server`` connected clients on each server, as (server index, client)."""
    async with AsyncExitStack() as stack:
        clients = []
        for index, server in enumerate(servers):
            for _ in range(per_server):
                r = redis.asyncio.Redis(
                    host=server.host, port=server.port, protocol=2,
                    socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT,
                    retry=redis.asyncio.retry.Retry(redis.backoff.NoBackoff(), 0),
                    single_connection_client=True,
                )
                await stack.enter_async_context(r)
                clients.append((index, r))
        # Connect every client before the race starts.
        await asyncio.gather(*(r.ping() for _, r in clients))
        yield clients


def sync_client(server: ServerProcess) -> redis.Redis:
    return redis.Redis(host=server.host, port=server.port, protocol=2,
                       socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT,
                       retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0))


# =========================================================================== across processes
async def test_incr_across_two_processes_is_exact(
    server_factory: Factory, tmp_path: Path, store_url: str
) -> None:
    """2 processes x 25 clients x 200 INCR on one key: every value handed out exactly once."""
    a, b = two_servers(server_factory, tmp_path, store_url)
    per_server, per_client = 25, 200

    async def work(r: redis.asyncio.Redis) -> list[int]:
        return [await r.incr("hits") for _ in range(per_client)]

    async with async_clients([a, b], per_server) as clients:
        results = await asyncio.wait_for(
            asyncio.gather(*(work(r) for _, r in clients)), 180
        )
    total = 2 * per_server * per_client
    every = sorted(v for chunk in results for v in chunk)
    assert every == list(range(1, total + 1))  # no lost and no doubled increment
    for chunk in results:
        assert chunk == sorted(chunk)
    # Both processes really took part: each handed out values from the whole range.
    per_process = [
        [v for (index, _), chunk in zip(clients, results, strict=True) if index == i
         for v in chunk]
        for i in (0, 1)
    ]
    assert all(max(values) > total // 2 for values in per_process), "one process ran alone"
    for server in (a, b):
        with sync_client(server) as r:
            assert r.get("hits") == str(total).encode()


async def test_set_nx_has_exactly_one_winner_across_processes(
    server_factory: Factory, tmp_path: Path, store_url: str
) -> None:
    a, b = two_servers(server_factory, tmp_path, store_url)
    rounds, per_server = 30, 10
    async with async_clients([a, b], per_server) as clients:
        for n in range(rounds):
            key = f"lock:{n}"
            names = [f"p{index}-c{i}" for i, (index, _) in enumerate(clients)]
            replies = await asyncio.wait_for(asyncio.gather(
                *(r.set(key, name, nx=True) for name, (_, r) in zip(names, clients, strict=True))
            ), 60)
            won = [name for name, reply in zip(names, replies, strict=True) if reply is True]
            assert len(won) == 1, (n, replies)
            assert all(reply in (True, None) for reply in replies), replies
            # Both processes agree on the winner's value.
            for _, r in (clients[0], clients[-1]):
                assert await r.get(key) == won[0].encode()


async def test_append_is_atomic_across_processes(
    server_factory: Factory, tmp_path: Path, store_url: str
) -> None:
    """Every APPEND returns a distinct length, and the value holds every piece exactly once,
    each client's pieces in its order."""
    a, b = two_servers(server_factory, tmp_path, store_url)
    per_server, per_client = 10, 40
    width = 8

    def piece(client: int, i: int) -> bytes:
        token = f"<{client:02d}:{i:03d}>".encode()
        assert len(token) == width
        return token

    async def work(c: int, r: redis.asyncio.Redis) -> list[int]:
        return [await r.append("log", piece(c, i)) for i in range(per_client)]

    async with async_clients([a, b], per_server) as clients:
        lengths = await asyncio.wait_for(
            asyncio.gather(*(work(c, r) for c, (_, r) in enumerate(clients))), 120
        )
    count = 2 * per_server * per_client
    assert sorted(n for chunk in lengths for n in chunk) == [
        width * k for k in range(1, count + 1)
    ]
    with sync_client(b) as r:
        value = r.get("log")
    assert value is not None and len(value) == width * count
    pieces = [value[i : i + width] for i in range(0, len(value), width)]
    assert sorted(pieces) == sorted(piece(c, i) for c in range(2 * per_server)
                                    for i in range(per_client))
    for c in range(2 * per_server):
        mine = [p for p in pieces if p.startswith(b"<%02d:" % c)]
        assert mine == [piece(c, i) for i in range(per_client)]


async def test_mset_is_atomic_across_processes(
    server_factory: Factory, tmp_path: Path, store_url: str
) -> None:
    """One process MSETs 10 keys to all-'a' values, the other to all-'b' values, over and
    over; readers on both never see a mix, and at the end all 10 keys hold one MSET's value."""
    a, b = two_servers(server_factory, tmp_path, store_url)
    keys = [f"m{i}" for i in range(10)]
    per_server, per_client = 8, 25
    done = asyncio.Event()
    mixed: list[list[object]] = []
    reads = 0

    async def write(index: int, c: int, r: redis.asyncio.Redis) -> None:
        letter = "ab"[index]
        for i in range(per_client):
            value = f"{letter * 4}-{c}-{i}"
            assert await r.mset(dict.fromkeys(keys, value)) is True

    async def read(r: redis.asyncio.Redis) -> None:
        nonlocal reads
        while not done.is_set():
            values = await r.mget(keys)
            reads += 1
            if len(set(values)) != 1:
                mixed.append(list(values))

    async with async_clients([a, b], per_server + 1) as clients:
        writers = [(index, r) for index, r in clients if index == 0][:per_server] + [
            (index, r) for index, r in clients if index == 1][:per_server]
        readers = [r for index, r in clients if index == 0][per_server:] + [
            r for index, r in clients if index == 1][per_server:]
        reader_tasks = [asyncio.create_task(read(r)) for r in readers]
        try:
            await asyncio.wait_for(asyncio.gather(
                *(write(index, c, r) for c, (index, r) in enumerate(writers))
            ), 120)
        finally:
            done.set()
            await asyncio.wait_for(asyncio.gather(*reader_tasks), 30)
    assert reads > 0
    assert not mixed, f"{len(mixed)} of {reads} MGETs saw a partial MSET, e.g. {mixed[0]}"
    for server in (a, b):
        with sync_client(server) as r:
            final = r.mget(keys)
        assert len(set(final)) == 1, final
        assert final[0] is not None and final[0][:4] in (b"aaaa", b"bbbb")


async def test_getdel_and_incr_across_processes_lose_nothing(
    server_factory: Factory, tmp_path: Path, store_url: str
) -> None:
    """Producers INCR a counter on one process while consumers GETDEL it on the other: the
    values taken plus what is left add up to exactly the increments made."""
    a, b = two_servers(server_factory, tmp_path, store_url)
    increments = 10 * 100
    taken: list[int] = []
    done = asyncio.Event()

    async def produce(r: redis.asyncio.Redis) -> None:
        for _ in range(100):
            await r.incr("bucket")

    async def consume(r: redis.asyncio.Redis) -> None:
        while not done.is_set():
            value = await r.getdel("bucket")
            if value is not None:
                taken.append(int(value))

    async with async_clients([a, b], 10) as clients:
        takers = [r for index, r in clients if index == 1][:5]
        consumers = [asyncio.create_task(consume(r)) for r in takers]
        try:
            await asyncio.wait_for(asyncio.gather(
                *(produce(r) for index, r in clients if index == 0)
            ), 120)
        finally:
            done.set()
            await asyncio.wait_for(asyncio.gather(*consumers), 30)
    with sync_client(a) as r:
        left = int(r.get("bucket") or 0)
    assert taken, "the consumers never took anything"
    assert sum(taken) + left == increments


# =========================================================================== backend faults
class Writers:
    """Threads that SET unique keys over raw sockets until stopped, recording every reply and
    how long it took."""

    def __init__(self, server: ServerProcess, count: int, reply_timeout: float) -> None:
        self.server = server
        self.reply_timeout = reply_timeout
        self.lock = threading.Condition()  # notified on every reply
        self.acked: dict[bytes, bytes] = {}
        self.failed: dict[bytes, bytes] = {}  # answered with an error: may or may not be there
        self.error_latencies: list[float] = []
        self.unexpected: list[object] = []
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self._run, args=(t,), daemon=True)
                        for t in range(count)]

    def start(self) -> Writers:
        for thread in self.threads:
            thread.start()
        return self

    def _run(self, t: int) -> None:
        try:
            client = RawClient(self.server.address, timeout=self.reply_timeout)
        except OSError as exc:
            self.unexpected.append(exc)
            return
        try:
            i = 0
            while not self.stop.is_set():
                key, value = b"w%d:%d" % (t, i), b"value-%d-%d" % (t, i)
                started = time.monotonic()
                reply = call(client, b"SET", key, value)
                elapsed = time.monotonic() - started
                with self.lock:
                    if reply == "OK":
                        self.acked[key] = value
                    elif isinstance(reply, tuple) and reply[1].startswith("SERVERERR "):
                        self.failed[key] = value
                        self.error_latencies.append(elapsed)
                    else:
                        self.unexpected.append(reply)
                        return
                    self.lock.notify_all()
                i += 1
        except TimeoutError:
            self.unexpected.append(f"SET {key!r}: no reply within {self.reply_timeout:g}s")
        except Exception as exc:  # a dropped connection: surfaced by the test
            self.unexpected.append(exc)
        finally:
            client.close()
            with self.lock:
                self.lock.notify_all()

    def counts(self) -> tuple[int, int]:
        with self.lock:
            return len(self.acked), len(self.failed)

    def wait_for(self, condition: Callable[[int, int], bool], timeout: float, what: str) -> None:
        """Wait (bounded) until ``condition(acked, failed)`` holds, woken by each reply a writer
        gets; fail at once if a writer died."""
        with self.lock:
            ok = self.lock.wait_for(
                lambda: bool(self.unexpected)
                or condition(len(self.acked), len(self.failed)),
                timeout,
            )
        assert not self.unexpected, self.unexpected[:3]
        assert ok, f"timed out waiting for {what}: (acked, failed) = {self.counts()}"

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(SOCKET_TIMEOUT + 5)
            assert not thread.is_alive(), "a writer hung"


def _timed(client: RawClient, *args: bytes | str) -> tuple[object, float]:
    started = time.monotonic()
    reply = call(client, *args)
    return reply, time.monotonic() - started


def _is_server_error(reply: object) -> bool:
    return isinstance(reply, tuple) and reply[1].startswith("SERVERERR ")


def test_postgres_outage_gives_server_errors_then_recovers(
    pg_cluster: Cluster, server_factory: Factory, tmp_path: Path
) -> None:
    """``pg_ctl stop -m immediate`` while clients write: commands answer -SERVERERR within the
    store timeout (2 s), PING and new connections work, the process stays up; after
    ``pg_ctl start`` writes succeed again by themselves; every acknowledged write is there."""
    store_timeout = 2.0
    bound = store_timeout + 3.0  # the reply may wait for one batch's timeout, plus slack
    with PgConn(pg_cluster.dsn()) as admin:
        admin.execute("CREATE DATABASE outage")
    url = pg_cluster.dsn("outage")
    srv = server_factory(tmp_path, "--store-timeout", f"{store_timeout:g}", store=url).start()
    assert srv.proc is not None
    writers = Writers(srv, 4, reply_timeout=bound + 5).start()
    try:
        writers.wait_for(lambda acked, _: acked >= 300, 60, "writes before the outage")
        acked_before = writers.counts()[0]

        pg_cluster.stop("immediate")
        down_at = time.monotonic()
        writers.wait_for(lambda _, failed: failed >= 20, 30, "server errors during the outage")
        first_errors = time.monotonic() - down_at
        assert first_errors < bound, f"first SERVERERRs came {first_errors:.1f}s after the stop"

        # While PostgreSQL is down: other connections, new ones, and non-store commands work;
        # store commands fail fast with SERVERERR; the process is up.
        bystander = RawClient(srv.address, timeout=SOCKET_TIMEOUT)
        try:
            reply, elapsed = _timed(bystander, "PING")
            assert reply == "PONG" and elapsed < 1.0, (reply, elapsed)
            assert call(bystander, "ECHO", "still here") == b"still here"
            for args in (("GET", "w0:0"), ("INCR", "n"), ("DBSIZE",)):
                reply, elapsed = _timed(bystander, *args)
                assert _is_server_error(reply), (args, reply)
                assert elapsed < bound, f"{args} took {elapsed:.1f}s to fail"
            fresh = RawClient(srv.address, timeout=SOCKET_TIMEOUT)
            assert call(fresh, "PING") == "PONG"
            fresh.close()
        finally:
            bystander.close()
        assert srv.proc.poll() is None, srv.log
        acked_during = writers.counts()[0] - acked_before

        pg_cluster.start()
        up_at = time.monotonic()
        # Recovery by itself: poll (bounded) with real commands until one succeeds.
        probe = RawClient(srv.address, timeout=SOCKET_TIMEOUT)
        try:
            while (reply := call(probe, "SET", "probe", "back")) != "OK":
                assert _is_server_error(reply), reply
                assert time.monotonic() - up_at < 30, "no recovery within 30 s of the restart"
            assert call(probe, "GET", "probe") == b"back"
        finally:
            probe.close()
        recovered = time.monotonic() - up_at
        acked_at_recovery = writers.counts()[0]
        writers.wait_for(lambda acked, _: acked >= acked_at_recovery + 300, 60,
                         "writes after the recovery")
    finally:
        writers.finish()
        if not pg_cluster.running:
            pg_cluster.start()
    assert not writers.unexpected, writers.unexpected[:3]
    worst = max(writers.error_latencies)
    assert worst < bound, f"a SET took {worst:.1f}s to answer SERVERERR"
    assert srv.proc.poll() is None, srv.log
    print(f"outage: first SERVERERR {first_errors:.2f}s after the stop, slowest error reply "
          f"{worst:.2f}s, {len(writers.failed)} errors, {acked_during} acked during the "
          f"outage, recovered {recovered:.2f}s after the restart")

    # Every acknowledged write (before, during and after the outage) is stored; a write that
    # got an error is either absent or exactly what was sent.
    def check(server: ServerProcess) -> None:
        keys = sorted(writers.acked) + sorted(writers.failed)
        with sync_client(server) as r:
            found: dict[bytes, bytes | None] = {}
            for i in range(0, len(keys), 500):
                chunk = keys[i : i + 500]
                found.update(zip(chunk, r.mget(chunk), strict=True))
        lost = [k for k, v in writers.acked.items() if found[k] != v]
        assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:5]}"
        assert all(found[k] in (None, v) for k, v in writers.failed.items())

    check(srv)
    assert srv.stop() == 0, srv.log
    again = server_factory(tmp_path / "again", store=url).start()
    check(again)
    assert again.stop() == 0


def _server_on_a_new_database(pg_cluster: Cluster, server_factory: Factory, tmp_path: Path,
                              name: str, store_timeout: float) -> ServerProcess:
    """A server on database ``name``, created in the test's own cluster (which the test may
    freeze), with ``--store-timeout`` and no sweeps to get in the way."""
    with PgConn(pg_cluster.dsn()) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    return server_factory(tmp_path, "--store-timeout", f"{store_timeout:g}",
                          "--sweep-interval", "3600", store=pg_cluster.dsn(name)).start()


def test_hung_postgres_gives_server_errors_then_recovers(
    pg_cluster: Cluster, server_factory: Factory, tmp_path: Path
) -> None:
    """PostgreSQL hangs (every server process SIGSTOPped: TCP connects, nothing answers):
    commands answer -SERVERERR within the store timeout (a command may also wait out the
    batch ahead of it), PING works, the process stays up; once PostgreSQL runs again, service
    resumes by itself and every acknowledged write is there."""
    store_timeout = 1.0
    bound = 2 * store_timeout + 2.0
    srv = _server_on_a_new_database(pg_cluster, server_factory, tmp_path, "hang", store_timeout)
    assert srv.proc is not None
    writers = Writers(srv, 4, reply_timeout=bound + 5).start()
    try:
        writers.wait_for(lambda acked, _: acked >= 300, 60, "writes before the hang")
    finally:
        writers.finish()
    assert not writers.unexpected and not writers.failed
    # The server is idle, its pooled connection too: the hang meets the next command.
    pg_cluster.freeze()
    try:
        client = RawClient(srv.address, timeout=bound + 3)
        bystander = RawClient(srv.address, timeout=SOCKET_TIMEOUT)
        try:
            for args in (("SET", "during", "hang"), ("GET", "w0:0"), ("INCR", "n")):
                try:
                    reply, elapsed = _timed(client, *args)
                except TimeoutError:
                    pytest.fail(f"{args}: no reply within {bound + 3:g}s while PostgreSQL hangs "
                                f"(--store-timeout {store_timeout:g})")
                assert _is_server_error(reply), (args, reply)
                assert elapsed < bound, f"{args} took {elapsed:.1f}s to fail"
                reply, elapsed = _timed(bystander, "PING")
                assert reply == "PONG" and elapsed < 1.0, (reply, elapsed)
        finally:
            client.close()
            bystander.close()
        assert srv.proc.poll() is None, srv.log
    finally:
        pg_cluster.thaw()
    thawed_at = time.monotonic()
    probe = RawClient(srv.address, timeout=SOCKET_TIMEOUT)
    try:
        while (reply := call(probe, "SET", "probe", "back")) != "OK":
            assert _is_server_error(reply), reply
            assert time.monotonic() - thawed_at < 30, "no recovery within 30 s"
        assert call(probe, "GET", "probe") == b"back"
        keys = sorted(writers.acked)
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            assert call(probe, "MGET", *chunk) == [writers.acked[k] for k in chunk]
    finally:
        probe.close()
    assert srv.stop() == 0, srv.log


def test_postgres_hung_in_the_middle_of_a_write_gives_server_errors_then_recovers(
    pg_cluster: Cluster, server_factory: Factory, tmp_path: Path
) -> None:
    """PostgreSQL hangs while a write batch is inside its transaction (waiting for a row lock,
    then every server process SIGSTOPped): the batch and the commands after it still answer
    -SERVERERR within the timeout, as no rollback waits for the hung server; once it runs
    again, the write that failed is not there and service resumes."""
    store_timeout = 1.0
    bound = 2 * store_timeout + 2.0
    srv = _server_on_a_new_database(pg_cluster, server_factory, tmp_path, "midhang",
                                    store_timeout)
    url = srv.store
    client = RawClient(srv.address, timeout=bound + 3)
    try:
        assert call(client, "SET", "k", "before") == "OK"
        with PgConn(url) as locker:
            locker.execute("BEGIN")
            locker.execute("SELECT 1 FROM kv FOR UPDATE")  # the row of k, locked
            started = time.monotonic()
            client.send(enc("SET", "k", "during"))
            deadline = time.monotonic() + 10
            with PgConn(pg_cluster.dsn()) as watcher:  # until the batch waits for the lock
                while not watcher.fetchval("SELECT count(*) FROM pg_stat_activity WHERE "
                                           "datname = 'midhang' AND wait_event_type = 'Lock'"):
                    assert time.monotonic() < deadline, "the batch never waited for the lock"
            pg_cluster.freeze()
            try:
                try:
                    reply = client.read_reply()
                except TimeoutError:
                    pytest.fail("no reply to a write stuck in a hung transaction")
                assert _is_server_error(reply), reply
                assert time.monotonic() - started < bound
                for args in (("GET", "k"), ("SET", "other", "x")):
                    reply, elapsed = _timed(client, *args)
                    assert _is_server_error(reply), (args, reply)
                    assert elapsed < bound, f"{args} took {elapsed:.1f}s to fail"
            finally:
                pg_cluster.thaw()
            locker.execute("ROLLBACK")
        thawed_at = time.monotonic()
        while (reply := call(client, "GET", "k")) != b"before":
            assert _is_server_error(reply), reply
            assert time.monotonic() - thawed_at < 30, "no recovery within 30 s"
        assert call(client, "SET", "k", "after") == "OK"
        assert call(client, "GET", "k") == b"after"
    finally:
        client.close()
    assert srv.stop() == 0, srv.log


def test_server_errors_while_the_table_is_locked_then_recovers(
    server_factory: Factory, tmp_path: Path, store_url: str
) -> None:
    """A slow database (an ACCESS EXCLUSIVE lock on the table: even reads wait): reads and
    writes answer SERVERERR within the timeout, PING is unaffected, and once the lock goes
    the same connections work again."""
    srv = server_factory(tmp_path, "--store-timeout", "1", store=store_url).start()
    client = RawClient(srv.address, timeout=SOCKET_TIMEOUT)
    try:
        assert call(client, "SET", "k", "before") == "OK"
        with StoreSQL(store_url) as locker:
            locker.execute("BEGIN")
            locker.execute("LOCK TABLE kv IN ACCESS EXCLUSIVE MODE")
            try:
                for args in (("GET", "k"), ("SET", "k", "during"), ("DBSIZE",)):
                    reply, elapsed = _timed(client, *args)
                    assert _is_server_error(reply), (args, reply)
                    assert elapsed < 4, f"{args} took {elapsed:.1f}s with --store-timeout 1"
                reply, elapsed = _timed(client, "PING")
                assert reply == "PONG" and elapsed < 1, (reply, elapsed)
            finally:
                locker.execute("ROLLBACK")
        assert call(client, "GET", "k") == b"before"  # the timed-out SET did not land
        assert call(client, "SET", "k", "after") == "OK"
        assert call(client, "GET", "k") == b"after"
    finally:
        client.close()
    assert srv.stop() == 0


# =========================================================================== schema
def _schema(store_url: str) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    with StoreSQL(store_url) as sql:
        versions = sql.fetch("SELECT version FROM dumbkv_schema")
        columns = sql.fetch(
            "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = 'kv' "
            "ORDER BY ordinal_position"
        )
    return versions, columns


def test_schema_is_created_on_start_and_versioned(
    server_factory: Factory, tmp_path: Path, store_url: str
) -> None:
    with StoreSQL(store_url) as sql:
        assert sql.fetchval("SELECT to_regclass('kv')") is None  # a really fresh database
    srv = server_factory(tmp_path).start()
    versions, columns = _schema(store_url)
    assert versions == [(1,)]
    assert columns == [
        ("db", "integer", "NO"), ("id", "bytea", "NO"), ("value", "bytea", "NO"),
        ("expires_at", "bigint", "YES"),
    ]
    with sync_client(srv) as r:
        assert r.set("k", "v") is True
    assert srv.stop() == 0
    # A restart keeps the data and does not add a second version row.
    again = server_factory(tmp_path).start()
    with sync_client(again) as r:
        assert r.get("k") == b"v"
    assert again.stop() == 0
    assert _schema(store_url)[0] == [(1,)]
    # A database written by a newer DumbKV is refused, not misread.
    with StoreSQL(store_url) as sql:
        sql.execute("UPDATE dumbkv_schema SET version = 2")
    newer = server_factory(tmp_path)
    with pytest.raises(RuntimeError, match="did not start"):
        newer.start()
    assert "schema version 2 is newer" in newer.log, newer.log
    assert newer.proc is not None and newer.proc.returncode not in (None, 0)


def start_together(servers: list[ServerProcess]) -> list[BaseException]:
    """Start every server at the same moment; return the errors."""
    barrier = threading.Barrier(len(servers), timeout=30)
    errors: list[BaseException] = []

    def start(server: ServerProcess) -> None:
        try:
            barrier.wait()
            server.start(timeout=30)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=start, args=(s,)) for s in servers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
        assert not thread.is_alive()
    return errors


def test_servers_starting_at_once_on_a_fresh_database_all_come_up(
    server_factory: Factory, tmp_path: Path, postgres: Postgres
) -> None:
    for attempt in range(3):
        with postgres.database() as url:
            servers = [server_factory(tmp_path / f"{attempt}-{i}", store=url) for i in range(3)]
            errors = start_together(servers)
            assert not errors, [str(e) for e in errors]
            assert _schema(url)[0] == [(1,)]
            for i, server in enumerate(servers):
                with sync_client(server) as r:
                    assert r.set(f"from-{i}", i) is True
            with sync_client(servers[0]) as r:
                assert r.mget([f"from-{i}" for i in range(len(servers))]) == [
                    b"%d" % i for i in range(len(servers))
                ]
            for server in servers:
                assert server.stop() == 0


# =========================================================================== URLs
def test_postgres_scheme_alias(server_factory: Factory, tmp_path: Path, store_url: str) -> None:
    alias = "postgres://" + store_url.split("://", 1)[1]
    srv = server_factory(tmp_path, store=alias).start()
    client = RawClient(srv.address)
    try:
        assert call(client, "SET", "via-alias", "yes") == "OK"
        info = call(client, "INFO", "store")
        assert isinstance(info, bytes) and b"store_backend:postgres\r\n" in info, info
    finally:
        client.close()
    with StoreSQL(store_url) as sql:  # it is the same database
        assert sql.fetchval("SELECT count(*) FROM kv") == 1


def test_password_in_the_url_is_never_shown(
    server_factory: Factory, tmp_path: Path, store_url: str, postgres: Postgres
) -> None:
    parts = urlsplit(store_url)
    password = parts.password
    if password is None and postgres.cluster is not None:
        # The throwaway cluster trusts 127.0.0.1, so any password connects. An external
        # server's DSN is used as it is, with its own password if it has one.
        password = "hunter2-not-checked-by-trust"
        host = parts.netloc.rsplit("@", 1)[-1]
        parts = parts._replace(netloc=f"{parts.username or 'postgres'}:{password}@{host}")
    srv = server_factory(tmp_path, store=urlunsplit(parts)).start()
    client = RawClient(srv.address)
    try:
        assert call(client, "SET", "k", "v") == "OK"
        info = call(client, "INFO", "store")
        assert isinstance(info, bytes) and b"store_backend:postgres\r\n" in info, info
        if password is not None:
            assert b":***@" in info, info
            assert password.encode() not in info
    finally:
        client.close()
    assert srv.stop() == 0
    if password is not None:
        assert password not in srv.log


def with_option(url: str, option: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query="&".join(filter(None, [parts.query, option]))))


def test_pool_size_option(server_factory: Factory, tmp_path: Path, store_url: str) -> None:
    """``?pool_size=2`` is DumbKV's option (not sent to PostgreSQL as a setting): the server
    starts, serves many concurrent clients correctly, and never holds more than 2 connections;
    ``?pool_size=0`` is refused at start."""
    srv = server_factory(tmp_path, store=with_option(store_url, "pool_size=2")).start()
    dbname = urlsplit(store_url).path.lstrip("/")
    peak = 0
    with StoreSQL(store_url) as monitor:
        def connections() -> int:
            return int(monitor.fetchval(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = ? AND pid <> pg_backend_pid()", dbname))

        clients = [RawClient(srv.address, timeout=SOCKET_TIMEOUT) for _ in range(20)]
        try:
            for round_ in range(20):
                for i, client in enumerate(clients):
                    client.send(enc("INCR", "n") + enc("SET", f"k{i}", round_)
                                + enc("GET", f"k{(i + 1) % 20}") + enc("DBSIZE"))
                peak = max(peak, connections())
                for client in clients:
                    assert isinstance(client.read_reply(), int)
                    assert client.read_reply() == "OK"
                    client.read_reply()
                    assert isinstance(client.read_reply(), int)
                peak = max(peak, connections())
            assert call(clients[0], "GET", "n") == b"400"
        finally:
            for client in clients:
                client.close()
    assert 1 <= peak <= 2, peak
    assert srv.stop() == 0

    refused = server_factory(tmp_path / "zero", store=with_option(store_url, "pool_size=0"))
    with pytest.raises(RuntimeError, match="did not start"):
        refused.start()
    assert "pool_size" in refused.log, refused.log


async def test_the_sweep_skips_rows_another_transaction_holds(store_url: str) -> None:
    """An expired row locked by a transaction (a batch writing it, elsewhere) is skipped, not
    waited for: the sweep cannot deadlock with a batch, and the next sweep takes the row."""
    store = create_store(store_url, timeout=2.0)
    await store.open()
    try:
        with StoreSQL(store_url) as sql:
            sql.execute("INSERT INTO kv (db, id, value, expires_at) VALUES "
                        "(0, ?, ?, 1), (0, ?, ?, 1)", b"\x01" * 32, b"v", b"\x02" * 32, b"v")
            sql.execute("BEGIN")
            sql.execute("SELECT 1 FROM kv WHERE db = 0 AND id = ? FOR UPDATE", b"\x01" * 32)
            try:
                assert await asyncio.wait_for(store.sweep(), 10) == 1  # the other row only
            finally:
                sql.execute("ROLLBACK")
            assert await store.sweep() == 1
            assert sql.rows() == []
    finally:
        await store.close()


async def test_a_process_whose_clock_runs_ahead_deletes_no_live_key(store_url: str) -> None:
    """The sweep deletes only what is expired by its own clock and by the database's: a
    process two hours ahead does not remove a key that expires in one hour."""
    store = create_store(store_url, timeout=5.0)
    await store.open()
    try:
        with StoreSQL(store_url) as sql:
            db_now = int(sql.fetchval("SELECT (extract(epoch FROM now()) * 1000)::bigint"))
            sql.execute("INSERT INTO kv (db, id, value, expires_at) VALUES "
                        "(0, ?, ?, ?), (0, ?, ?, ?)", b"\x01" * 32, b"v", db_now + 3_600_000,
                        b"\x02" * 32, b"v", db_now - 1_000)
            ahead = db_now + 2 * 3_600_000
            assert await store._sweep(ahead, 1000) == 1  # only the really expired one
            assert [row[1] for row in sql.rows()] == [b"\x01" * 32]
    finally:
        await store.close()
