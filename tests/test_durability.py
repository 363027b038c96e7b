"""Durability and secrecy of both stores, checked from outside the real server process.

Every test runs on SQLite and on PostgreSQL unless it is marked for one backend; the on-disk
plaintext scan has a PostgreSQL twin that reads the table (and, on the throwaway cluster, the
database files and WAL).

* An acknowledged write survives SIGKILL, also with many clients writing at once.
* The database files and the log hold no key and no value in plain text.
* Tampered, swapped or moved rows answer ``-SERVERERR``, never wrong data.
* The server pepper changes the stored ids; concurrent INCRs are atomic; TTLs survive restarts.
* A locked database gives ``-SERVERERR`` within the store timeout; the server keeps serving.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
import redis.asyncio
import redis.backoff
import redis.retry
from conftest import RawClient, ServerProcess, StoreSQL, store_rows
from postgres import Postgres

SOCKET_TIMEOUT = 10

Factory = type[ServerProcess]


def client(server: ServerProcess, **kw: object) -> redis.Redis:
    """A redis-py client that never retries: a failed command must surface, not be re-sent."""
    return redis.Redis(
        host=server.host, port=server.port, socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=SOCKET_TIMEOUT,
        retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0), **kw,  # type: ignore[arg-type]
    )


def stored_rows(server: ServerProcess) -> list[tuple[int, bytes, bytes, int | None]]:
    """The rows at rest in ``server``'s store (SQLite file or PostgreSQL database)."""
    return store_rows(server.store)


def sha(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def call(raw: RawClient, *argv: bytes) -> object:
    raw.send(b"*%d\r\n" % len(argv) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in argv))
    return raw.read_reply()


def assert_server_error(reply: object) -> None:
    assert isinstance(reply, tuple) and reply[0] == "error", reply
    assert reply[1].startswith("SERVERERR "), reply


# =========================================================================== SIGKILL
def test_acked_writes_survive_sigkill(server_factory: Factory, tmp_path: Path) -> None:
    n = 500
    server = server_factory(tmp_path).start()
    with client(server) as r:
        for i in range(n):
            assert r.set(f"key:{i}", f"value:{i}:" + "x" * (i % 50)) is True
        for i in range(300):
            assert r.incr("counter") == i + 1
    server.kill()
    assert server.proc is not None and server.proc.returncode == -9

    again = server_factory(tmp_path).start()
    with client(again) as r:
        values = r.mget([f"key:{i}" for i in range(n)])
        assert values == [f"value:{i}:".encode() + b"x" * (i % 50) for i in range(n)]
        assert r.get("counter") == b"300"
        assert r.dbsize() == n + 1


def test_acked_concurrent_writes_survive_sigkill(server_factory: Factory, tmp_path: Path) -> None:
    threads_n, per_thread, kill_after = 20, 100, 1000
    server = server_factory(tmp_path).start()
    lock = threading.Lock()
    acked: dict[str, bytes] = {}
    attempted: dict[str, bytes] = {}
    enough = threading.Event()
    failures: list[BaseException] = []

    def writer(t: int) -> None:
        try:
            with client(server) as r:
                for i in range(per_thread):
                    key, value = f"t{t}:k{i}", f"t{t}:v{i}:{'y' * t}".encode()
                    with lock:
                        attempted[key] = value
                    try:
                        ok = r.set(key, value)
                    except (redis.ConnectionError, redis.TimeoutError):
                        return  # the server was killed: this write was never acknowledged
                    assert ok is True
                    with lock:
                        acked[key] = value
                        if len(acked) >= kill_after:
                            enough.set()
        except BaseException as exc:  # surfaced in the main thread
            failures.append(exc)
            enough.set()

    workers = [threading.Thread(target=writer, args=(t,), daemon=True) for t in range(threads_n)]
    for w in workers:
        w.start()
    assert enough.wait(60), "writers did not get enough writes acknowledged"
    server.kill()  # while the other writers are still sending
    for w in workers:
        w.join(60)
        assert not w.is_alive()
    assert not failures, failures
    assert len(acked) >= kill_after

    again = server_factory(tmp_path).start()
    keys = sorted(attempted)
    with client(again) as r:
        found = dict(zip(keys, r.mget(keys), strict=True))
    lost = [k for k in acked if found[k] != acked[k]]
    assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:5]}"
    # An unacknowledged write may or may not have landed, but never as anything else.
    assert all(found[k] in (None, attempted[k]) for k in attempted)


# =========================================================================== secrecy at rest
_TEXT_KEY, _TEXT_VALUE = "secret-key-XYZ-ключ", "secret-value-ABC-значение"
_BIN_KEY = b"\x00\x01bin-key-QRS\xfe\xff"
_BIN_VALUE = b"\xffbin-value-TUV\x00\r\n" * 4


def _needles() -> list[bytes]:
    needles = [_BIN_KEY, _BIN_VALUE[:20]]
    for text in (_TEXT_KEY, _TEXT_VALUE):
        for encoding in ("utf-8", "utf-16-le", "utf-16-be"):
            needles.append(text.encode(encoding))
        needles.append(text.encode("ascii", "ignore"))  # the ASCII part on its own
    needles.append(b"secret-key-XYZ")
    needles.append(b"secret-value-ABC")
    return needles


def _data_dir_bytes(data_dir: Path) -> bytes:
    files = sorted(p for p in data_dir.rglob("*") if p.is_file() and p.name != "server.log")
    assert any(p.name == "dumbkv.db" for p in files), files
    return b"".join(p.read_bytes() for p in files)


@pytest.mark.backends("sqlite")
def test_no_plaintext_key_or_value_at_rest(server_factory: Factory, tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = server_factory(data_dir, "--log-level", "debug").start()
    with client(server) as r:
        assert r.set(_TEXT_KEY, _TEXT_VALUE) is True
        assert r.set(_BIN_KEY, _BIN_VALUE) is True
        assert r.mset({_TEXT_KEY + "-2": _TEXT_VALUE + "-2"}) is True
        assert r.append(_TEXT_KEY + "-3", _TEXT_VALUE) == len(_TEXT_VALUE.encode())
        with pytest.raises(redis.ResponseError):
            r.incr(_TEXT_KEY)  # an error path must not log the key or value either
    server.kill()  # leaves the WAL as the last commit wrote it
    killed = _data_dir_bytes(data_dir)

    again = server_factory(data_dir, "--log-level", "debug").start()
    with client(again) as r:
        assert r.get(_TEXT_KEY) == _TEXT_VALUE.encode()
        assert r.get(_BIN_KEY) == _BIN_VALUE
    assert again.stop() == 0
    stopped = _data_dir_bytes(data_dir)

    for blob in (killed, stopped):
        # The rows are there (their ids are), so the scan looks at the right bytes...
        assert sha(_TEXT_KEY.encode()) in blob
        assert sha(_BIN_KEY) in blob
        # ...but no key and no value in any form.
        for needle in _needles():
            assert needle not in blob, needle
    logs = (server.log + again.log).encode()
    assert "listening on" in server.log
    for needle in _needles():
        assert needle not in logs, needle


def _cluster_files(postgres: Postgres, store: str, since: float) -> bytes | None:
    """On the throwaway cluster: the database's files and the WAL written since ``since``,
    after a CHECKPOINT has put every page in its file. None on an external server."""
    cluster = postgres.cluster
    if cluster is None:
        return None
    with StoreSQL(store) as sql:
        sql.execute("CHECKPOINT")
        oid = sql.fetchval("SELECT oid FROM pg_database WHERE datname = current_database()")
    files = [p for p in (cluster.datadir / "base" / str(oid)).iterdir() if p.is_file()]
    files += [p for p in (cluster.datadir / "pg_wal").iterdir()
              if p.is_file() and p.stat().st_mtime >= since - 1]
    return b"".join(p.read_bytes() for p in sorted(files))


@pytest.mark.backends("postgres")
def test_no_plaintext_key_or_value_in_postgres(
    server_factory: Factory, tmp_path: Path, postgres: Postgres
) -> None:
    """The PostgreSQL twin of the file scan: the bytea columns (and, on the throwaway
    cluster, the table's files and the WAL) hold ids and sealed values, never a key or value."""
    started = time.time()
    server = server_factory(tmp_path, "--log-level", "debug").start()
    with client(server) as r:
        assert r.set(_TEXT_KEY, _TEXT_VALUE) is True
        assert r.set(_BIN_KEY, _BIN_VALUE) is True
        assert r.mset({_TEXT_KEY + "-2": _TEXT_VALUE + "-2"}) is True
        assert r.append(_TEXT_KEY + "-3", _TEXT_VALUE) == len(_TEXT_VALUE.encode())
        with pytest.raises(redis.ResponseError):
            r.incr(_TEXT_KEY)
    server.kill()
    again = server_factory(tmp_path, "--log-level", "debug").start()
    with client(again) as r:
        assert r.get(_TEXT_KEY) == _TEXT_VALUE.encode()
        assert r.get(_BIN_KEY) == _BIN_VALUE
    assert again.stop() == 0

    rows = stored_rows(again)
    assert len(rows) == 4
    ids = {row[1] for row in rows}
    assert {sha(_TEXT_KEY.encode()), sha(_BIN_KEY)} <= ids
    assert all(isinstance(row[2], bytes) and len(row[2]) > 24 for row in rows)  # sealed
    columns = b"".join(row[1] + row[2] for row in rows)
    on_disk = _cluster_files(postgres, again.store, started)
    for blob in (columns, on_disk):
        if blob is None:
            continue
        assert sha(_TEXT_KEY.encode()) in blob
        for needle in _needles():
            assert needle not in blob, needle
    logs = (server.log + again.log).encode()
    for needle in _needles():
        assert needle not in logs, needle


# =========================================================================== tampering
def _tamper_swap(sql: StoreSQL) -> None:
    va = sql.fetchval("SELECT value FROM kv WHERE id = ?", sha(b"a"))
    vb = sql.fetchval("SELECT value FROM kv WHERE id = ?", sha(b"b"))
    sql.execute("UPDATE kv SET value = ? WHERE id = ?", vb, sha(b"a"))
    sql.execute("UPDATE kv SET value = ? WHERE id = ?", va, sha(b"b"))


def _tamper_copy(sql: StoreSQL) -> None:
    sql.execute(
        "UPDATE kv SET value = (SELECT value FROM kv WHERE id = ?) WHERE id = ?",
        sha(b"a"), sha(b"b"),
    )


def _rewrite_b(change: Callable[[bytes], bytes]) -> Callable[[StoreSQL], None]:
    def tamper(sql: StoreSQL) -> None:
        value = sql.fetchval("SELECT value FROM kv WHERE id = ?", sha(b"b"))
        sql.execute("UPDATE kv SET value = ? WHERE id = ?", change(bytes(value)), sha(b"b"))

    return tamper


def _flip(index: int) -> Callable[[bytes], bytes]:
    def change(value: bytes) -> bytes:
        data = bytearray(value)
        data[index] ^= 0x01
        return bytes(data)

    return change


def _move_b_to_db_7(sql: StoreSQL) -> None:
    sql.execute("UPDATE kv SET db = 7 WHERE db = 0 AND id = ?", sha(b"b"))


def _rename_b_to_a(sql: StoreSQL) -> None:
    sql.execute("DELETE FROM kv WHERE id = ?", sha(b"a"))
    sql.execute("UPDATE kv SET id = ? WHERE id = ?", sha(b"a"), sha(b"b"))


TAMPERS = {
    "swap-values": (_tamper_swap, [(0, b"a"), (0, b"b")]),
    "copy-a-onto-b": (_tamper_copy, [(0, b"b")]),
    "flip-ciphertext-byte": (_rewrite_b(_flip(30)), [(0, b"b")]),
    "flip-nonce-byte": (_rewrite_b(_flip(5)), [(0, b"b")]),
    "flip-tag-byte": (_rewrite_b(_flip(-1)), [(0, b"b")]),
    "version-byte": (_rewrite_b(lambda v: b"\x02" + v[1:]), [(0, b"b")]),
    "truncated": (_rewrite_b(lambda v: v[:10]), [(0, b"b")]),
    "moved-to-db-7": (_move_b_to_db_7, [(7, b"b")]),
    "row-id-changed": (_rename_b_to_a, [(0, b"a")]),
}


@pytest.mark.parametrize("kind", list(TAMPERS))
def test_tampered_row_is_a_server_error(
    server_factory: Factory, tmp_path: Path, kind: str
) -> None:
    tamper, broken = TAMPERS[kind]
    server = server_factory(tmp_path).start()
    with client(server) as r:
        assert r.mset({"a": "1", "b": "2-the-value-of-b", "keep": "kept"}) is True
    assert server.stop() == 0

    with StoreSQL(server.store) as sql:
        tamper(sql)

    again = server_factory(tmp_path).start()
    raw = RawClient(again.address, timeout=SOCKET_TIMEOUT)
    try:
        for db, key in broken:
            assert call(raw, b"SELECT", b"%d" % db) == "OK"
            assert_server_error(call(raw, b"GET", key))
            assert_server_error(call(raw, b"INCR", key))  # no read-modify-write on bad data
            assert_server_error(call(raw, b"APPEND", key, b"x"))
            assert_server_error(call(raw, b"GET", key))
        # The server keeps serving everything else on the same connection.
        assert call(raw, b"SELECT", b"0") == "OK"
        assert call(raw, b"PING") == "PONG"
        assert call(raw, b"GET", b"keep") == b"kept"
        assert call(raw, b"SET", b"c", b"new") == "OK"
        assert call(raw, b"GET", b"c") == b"new"
        if kind == "moved-to-db-7":
            assert call(raw, b"GET", b"b") is None  # gone from db 0, not served from db 7
        if kind == "copy-a-onto-b":
            assert call(raw, b"GET", b"a") == b"1"
        # Overwriting a broken key repairs it.
        db, key = broken[0]
        assert call(raw, b"SELECT", b"%d" % db) == "OK"
        assert call(raw, b"SET", key, b"repaired") == "OK"
        assert call(raw, b"GET", key) == b"repaired"
    finally:
        raw.close()
    assert again.proc is not None and again.proc.poll() is None


# =========================================================================== pepper
def test_secret_pepper_changes_ids(server_factory: Factory, tmp_path: Path) -> None:
    key = b"peppered-key"
    s1 = server_factory(tmp_path, "--secret", "s1").start()
    with client(s1) as r:
        assert r.set(key, "under-s1") is True
    assert s1.stop() == 0
    assert [row[:2] for row in stored_rows(s1)] == [
        (0, hmac.new(b"s1", key, hashlib.sha256).digest())
    ]

    s2 = server_factory(tmp_path, "--secret", "s2").start()
    with client(s2) as r:
        assert r.get(key) is None
        assert r.exists(key) == 0
        assert r.set(key, "under-s2") is True
    assert s2.stop() == 0
    ids = {row[1] for row in stored_rows(s2)}
    assert ids == {hmac.new(s, key, hashlib.sha256).digest() for s in (b"s1", b"s2")}

    back = server_factory(tmp_path, "--secret", "s1").start()
    with client(back) as r:
        assert r.get(key) == b"under-s1"
    assert back.stop() == 0

    plain_dir = tmp_path / "plain"
    plain = server_factory(plain_dir).start()
    with client(plain) as r:
        assert r.get(key) is None
        assert r.set(key, "no-secret") is True
    assert plain.stop() == 0
    assert plain.store != s1.store  # another data dir is another, fresh store
    assert [row[:2] for row in stored_rows(plain)] == [(0, sha(key))]


# =========================================================================== atomic INCR
async def test_incr_is_atomic_under_concurrency(server: ServerProcess) -> None:
    clients_n, per_client = 50, 200

    async def worker() -> list[int]:
        async with redis.asyncio.Redis(
            host=server.host, port=server.port, socket_timeout=SOCKET_TIMEOUT
        ) as r:
            return [await r.incr("hits") for _ in range(per_client)]

    results = await asyncio.wait_for(
        asyncio.gather(*(worker() for _ in range(clients_n))), 120
    )
    seen = sorted(v for chunk in results for v in chunk)
    assert seen == list(range(1, clients_n * per_client + 1))  # each value handed out once
    for chunk in results:
        assert chunk == sorted(chunk)  # a client's own INCRs are ordered
    async with redis.asyncio.Redis(host=server.host, port=server.port) as r:
        assert await r.get("hits") == b"10000"


# =========================================================================== TTL
def test_ttl_survives_restart(server_factory: Factory, tmp_path: Path) -> None:
    server = server_factory(tmp_path).start()
    past = int(time.time() * 1000) - 60_000
    with client(server) as r:
        assert r.set("long", "lives", ex=1000) is True
        assert r.set("forever", "stays") is True
        assert r.set("past", "never", pxat=past) is True
        assert r.get("past") is None
        assert r.set("later-past", "gone", exat=past // 1000) is True
        assert r.get("later-past") is None
    server.kill()

    again = server_factory(tmp_path, "--sweep-interval", "3600").start()
    with client(again) as r:
        assert 0 < r.ttl("long") <= 1000
        assert 0 < r.pttl("long") <= 1_000_000
        assert r.get("long") == b"lives"
        assert r.ttl("forever") == -1
        for key in ("past", "later-past"):
            assert r.get(key) is None
            assert r.exists(key) == 0
            assert r.ttl(key) == -2
            assert r.mget(key, "forever") == [None, b"stays"]
        assert r.dbsize() == 2
    assert again.stop() == 0
    # Expiry is stored as an absolute time: a restart does not restart the clock.
    expiries = [row[3] for row in stored_rows(again) if row[3] is not None]
    assert any(past + 60_000 < e <= past + 60_000 + 1_000_000 + 60_000 for e in expiries)


# =========================================================================== store failure
def test_locked_database_gives_server_error(server_factory: Factory, tmp_path: Path) -> None:
    server = server_factory(tmp_path, "--store-timeout", "1").start()
    with client(server) as r:
        for i in range(50):
            assert r.set(f"before:{i}", f"v{i}") is True

    raw = RawClient(server.address, timeout=SOCKET_TIMEOUT)
    try:
        # Another program holds the write lock (SQLite: BEGIN EXCLUSIVE; PostgreSQL: LOCK TABLE
        # kv IN EXCLUSIVE MODE): writes cannot go through, plain reads can.
        with StoreSQL(server.store) as locker, locker.write_lock():
            started = time.monotonic()
            reply = call(raw, b"SET", b"during", b"lock")
            elapsed = time.monotonic() - started
            assert_server_error(reply)
            assert elapsed < 5, f"SERVERERR took {elapsed:.1f}s with --store-timeout 1"
            assert call(raw, b"PING") == "PONG"
            assert call(raw, b"GET", b"before:7") == b"v7"
            assert server.proc is not None and server.proc.poll() is None
        # The lock is gone: the same connection writes again.
        assert call(raw, b"SET", b"after", b"unlocked") == "OK"
        assert call(raw, b"GET", b"after") == b"unlocked"
    finally:
        raw.close()
    with client(server) as r:
        assert r.mget([f"before:{i}" for i in range(50)]) == [b"v%d" % i for i in range(50)]
    server.kill()
    again = server_factory(tmp_path).start()
    with client(again) as r:
        assert r.mget([f"before:{i}" for i in range(50)]) == [b"v%d" % i for i in range(50)]
        assert r.get("after") == b"unlocked"


@pytest.mark.backends("sqlite")
def test_removed_database_file_refuses_writes_and_keeps_serving(
    server_factory: type[ServerProcess], tmp_path: Path
) -> None:
    """A trainee deletes the SQLite file under a running server: writes answer a clear
    SERVERERR (they would be lost at the next start) instead of OK, PING still works, and
    nothing acknowledged before the deletion is reported as written after it."""
    srv = server_factory(tmp_path).start()
    client = RawClient(srv.address)
    client.send(b"SET before 1\r\n")
    assert client.read_reply() == "OK"
    for name in ("dumbkv.db", "dumbkv.db-wal", "dumbkv.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    client.send(b"SET after 2\r\n")
    reply = client.read_reply()
    assert isinstance(reply, tuple) and reply[1].startswith("SERVERERR sqlite database file")
    client.send(b"PING\r\n")
    assert client.read_reply() == "PONG"
    client.close()
