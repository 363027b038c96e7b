"""The SQLite backend's writer process and row cache, checked on real servers.

* The writer is a child process of the server; it goes when the server stops, and ends by
  itself when the server is killed.
* A writer killed while clients write: in-flight writes answer ``-SERVERERR`` (or OK), none
  hangs; the server starts a new writer and keeps every acknowledged write.
* Reads never see uncommitted data, and a read of a cached key with no write in flight is
  answered while the writer is stopped.
* ``cache_mb`` in the store URL: 0 turns the cache off; a bad value stops ``dumbkv serve``.
* A row changed behind the server's back is noticed even when it is cached.
* Unit checks of ``RowCache`` and of the writer's pipe framing.
* ``sqlite:///:memory:``: its writer is a thread; a failure of the thread's job is answered.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.backoff
import redis.retry
from conftest import (
    RawClient,
    ServerProcess,
    StoreSQL,
    call,
    environ_without_settings,
    poll_until,
    sqlite_url,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from dumbkv.app import start_server, stop_server
from dumbkv.config import Config
from dumbkv.errors import StoreError
from dumbkv.store.base import Row
from dumbkv.store.rowcache import ENTRY_OVERHEAD, MISSING, RowCache
from dumbkv.store.sqlite import SQLiteStore
from dumbkv.store.writer import FrameReader, Writer, frame

Factory = type[ServerProcess]
SOCKET_TIMEOUT = 10
#: How long a reply that must not come is waited for (a bounded read, not a synchronisation).
NO_REPLY_WAIT = 0.5

pytestmark = pytest.mark.backends("sqlite")


# --------------------------------------------------------------------------- processes
def _stat(pid: int) -> tuple[str, int] | None:
    """(state, start time) of ``pid`` from /proc, or None when there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text.rsplit(")", 1)[1].split()
    return fields[0], int(fields[19])


class Proc:
    """One process, identified by pid and start time (a reused pid is another process)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        stat = _stat(pid)
        assert stat is not None, f"process {pid} is gone"
        self.started = stat[1]

    def running(self) -> bool:
        """Exists, is this process, and is not a zombie."""
        stat = _stat(self.pid)
        return stat is not None and stat[1] == self.started and stat[0] != "Z"

    def signal(self, sig: int) -> None:
        assert self.running(), f"process {self.pid} is gone"
        os.kill(self.pid, sig)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (FileNotFoundError, ProcessLookupError):
        return ""


def writers(server: ServerProcess) -> list[int]:
    """PIDs of the server's writer child processes (not zombies)."""
    assert server.proc is not None
    return [pid for pid in _children(server.proc.pid)
            if "dumbkv.store.writer" in _cmdline(pid) and (_stat(pid) or ("Z",))[0] != "Z"]


def the_writer(server: ServerProcess) -> Proc:
    """The server's one writer process (waits for it to be up)."""
    pids = poll_until("the server's writer process", lambda: writers(server), 10)
    assert len(pids) == 1, pids
    return Proc(pids[0])


def client(server: ServerProcess) -> redis.Redis:
    """redis-py that never retries: a failed command must surface, not be re-sent."""
    return redis.Redis(host=server.host, port=server.port, socket_timeout=SOCKET_TIMEOUT,
                       socket_connect_timeout=SOCKET_TIMEOUT,
                       retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0))


def is_server_error(reply: object) -> bool:
    return isinstance(reply, tuple) and reply[0] == "error" and reply[1].startswith("SERVERERR")


def no_reply(raw: RawClient, wait: float = NO_REPLY_WAIT) -> bool:
    """True when nothing arrives on ``raw`` within ``wait`` seconds (a bounded read)."""
    if raw.buf:
        return False
    raw.sock.settimeout(wait)
    try:
        chunk = raw.sock.recv(65536)
    except TimeoutError:
        return True
    finally:
        raw.sock.settimeout(SOCKET_TIMEOUT)
    raw.buf += chunk
    return False


@contextmanager
def stopped(proc: Proc) -> Iterator[None]:
    """``proc`` SIGSTOPped for the block; always continued after."""
    proc.signal(signal.SIGSTOP)
    poll_until("the writer to stop", lambda: (_stat(proc.pid) or ("?",))[0] == "T", 5)
    try:
        yield
    finally:
        os.kill(proc.pid, signal.SIGCONT)


# =========================================================================== 1. lifecycle
def test_writer_is_a_child_and_goes_with_a_clean_stop(server_factory: Factory,
                                                      tmp_path: Path) -> None:
    server = server_factory(tmp_path).start()
    writer = the_writer(server)
    assert str(Path(tmp_path / "dumbkv.db").absolute()) in _cmdline(writer.pid)
    with client(server) as r:
        assert r.set("k", "v") is True
    assert server.stop() == 0
    poll_until("the writer to exit", lambda: not writer.running(), 10)


def test_writer_exits_by_itself_when_the_server_is_killed(server_factory: Factory,
                                                          tmp_path: Path) -> None:
    server = server_factory(tmp_path).start()
    writer = the_writer(server)
    with client(server) as r:
        assert r.set("k", "v") is True
    server.kill()
    poll_until("the orphaned writer to exit", lambda: not writer.running(), 10)
    again = server_factory(tmp_path).start()  # the file is usable: nothing holds its lock
    with client(again) as r:
        assert r.get("k") == b"v"
        assert r.set("k2", "v2") is True


# =========================================================================== 2. writer killed
def test_killed_writer_is_replaced_and_acknowledged_writes_survive(
    server_factory: Factory, tmp_path: Path
) -> None:
    threads_n = 4
    server = server_factory(tmp_path).start()
    first = the_writer(server)
    lock = threading.Lock()
    acked: dict[bytes, bytes] = {}
    attempted: dict[bytes, bytes] = {}
    errors: list[object] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def write(t: int) -> None:
        raw = RawClient(server.address, timeout=SOCKET_TIMEOUT)
        try:
            i = 0
            while not stop.is_set():
                key, value = b"t%d:k%d" % (t, i), b"t%d:v%d" % (t, i)
                i += 1
                with lock:
                    attempted[key] = value
                reply = call(raw, b"SET", key, value)  # a hang raises TimeoutError
                with lock:
                    if reply == "OK":
                        acked[key] = value
                    else:
                        errors.append(reply)
        except BaseException as exc:  # surfaced in the main thread
            failures.append(exc)
        finally:
            raw.close()

    def acked_count() -> int:
        with lock:
            return len(acked)

    workers = [threading.Thread(target=write, args=(t,), daemon=True) for t in range(threads_n)]
    for w in workers:
        w.start()
    try:
        poll_until("writes acknowledged before the kill", lambda: acked_count() >= 200, 30)
        first.signal(signal.SIGKILL)
        poll_until("the killed writer to be gone", lambda: not first.running(), 10)
        second = Proc(poll_until(
            "a new writer process",
            lambda: [p for p in writers(server) if p != first.pid], 15)[0])
        assert second.pid != first.pid
        after = acked_count()
        poll_until("writes acknowledged after the restart",
                   lambda: acked_count() >= after + 200, 30)
    finally:
        stop.set()
        for w in workers:
            w.join(SOCKET_TIMEOUT + 5)
    assert not [w for w in workers if w.is_alive()], "a writer thread hangs"
    assert not failures, failures
    assert all(is_server_error(e) for e in errors), errors[:5]
    assert server.proc is not None and server.proc.poll() is None, "the server died"
    assert second.running() and writers(server) == [second.pid]
    assert "sqlite writer process exited" in server.log

    assert server.stop() == 0
    again = server_factory(tmp_path).start()
    keys = sorted(attempted)
    with client(again) as r:
        found: dict[bytes, Any] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            found.update(zip(chunk, r.mget(chunk), strict=True))
    lost = [k for k, v in acked.items() if found[k] != v]
    assert not lost, f"{len(lost)} acknowledged writes lost, e.g. {lost[:5]}"
    # A write answered with an error may or may not have landed, but never as anything else.
    assert all(found[k] in (None, v) for k, v in attempted.items())


# =========================================================================== 3. isolation
def test_reads_never_see_uncommitted_data(server_factory: Factory, tmp_path: Path) -> None:
    server = server_factory(tmp_path).start()
    writer = the_writer(server)
    a = RawClient(server.address, timeout=SOCKET_TIMEOUT)
    b = RawClient(server.address, timeout=SOCKET_TIMEOUT)
    c = RawClient(server.address, timeout=SOCKET_TIMEOUT)
    try:
        assert call(a, b"SET", b"k", b"old") == "OK"
        assert call(a, b"SET", b"other", b"committed") == "OK"
        assert call(b, b"GET", b"other") == b"committed"  # now in the row cache
        with stopped(writer):
            a.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nnew\r\n")
            assert no_reply(a), "SET answered while the writer is stopped"
            # A key with no write in flight: answered at once, from committed rows.
            assert call(b, b"GET", b"other") == b"committed"
            b.send(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n")
            if no_reply(b):
                k_blocked = True  # waits for the commit
            else:
                k_blocked = False
                assert b.read_reply() == b"old"  # never the uncommitted value
            # A blocked read holds up no other connection.
            assert call(c, b"GET", b"other") == b"committed"
            assert no_reply(a), "SET answered while the writer is stopped"
        assert a.read_reply() == "OK"
        if k_blocked:
            assert b.read_reply() == b"new"  # answered once the SET before it committed
        assert call(b, b"GET", b"k") == b"new"
        assert call(c, b"GET", b"k") == b"new"
    finally:
        for raw in (a, b, c):
            raw.close()


def test_flushdb_waits_for_a_write_that_timed_out(server_factory: Factory,
                                                 tmp_path: Path) -> None:
    """A write answered with a timeout may still commit later; a FLUSHDB after it must not be
    acknowledged before that commit is settled, or the write would outlive the flush."""
    server = server_factory(tmp_path, "--store-timeout", "1").start()
    writer = the_writer(server)
    raw = RawClient(server.address, timeout=SOCKET_TIMEOUT)
    try:
        with stopped(writer):
            assert is_server_error(call(raw, b"SET", b"late", b"1"))  # the timeout
            # The write is still on its way to the disk: the flush cannot go before it.
            assert is_server_error(call(raw, b"FLUSHDB"))
        assert call(raw, b"FLUSHDB") == "OK"
        assert call(raw, b"EXISTS", b"late") == 0
        assert call(raw, b"DBSIZE") == 0
    finally:
        raw.close()
    server.stop()
    again = server_factory(tmp_path).start()
    with client(again) as r:
        assert r.exists("late") == 0  # not resurrected on disk either


@pytest.mark.parametrize("key", [b"cached", b"uncached"])
def test_read_with_no_write_in_flight_is_answered_while_a_commit_stalls(
    server_factory: Factory, tmp_path: Path, key: bytes
) -> None:
    """A read of a key with no change in flight needs nothing from the stalled commit: it is
    answered at once, also when the expiry sweep comes due meanwhile, and also when its row
    is not in the cache."""
    sweep = 0.2
    server = server_factory(tmp_path, "--sweep-interval", str(sweep)).start()
    writer = the_writer(server)
    a = RawClient(server.address, timeout=SOCKET_TIMEOUT)
    b = RawClient(server.address, timeout=SOCKET_TIMEOUT)
    try:
        assert call(a, b"SET", key, b"committed") == "OK"
        assert call(b, b"GET", key) == b"committed"
        if key == b"uncached":
            assert server.stop() == 0  # a restart empties the cache
            a.close()
            b.close()
            server = server_factory(tmp_path, "--sweep-interval", str(sweep)).start()
            writer = the_writer(server)
            a = RawClient(server.address, timeout=SOCKET_TIMEOUT)
            b = RawClient(server.address, timeout=SOCKET_TIMEOUT)
        with stopped(writer):
            a.send(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nnew\r\n")
            assert no_reply(a), "SET answered while the writer is stopped"
            end = time.monotonic() + 5 * sweep  # several sweeps come due meanwhile
            answered = 0

            def read_once() -> bool:
                nonlocal answered
                b.send(b"*2\r\n$3\r\nGET\r\n$%d\r\n%b\r\n" % (len(key), key))
                assert not no_reply(b, 1.0), (
                    f"GET {key!r} held up by a stalled commit of another key "
                    f"after {answered} reads answered")
                assert b.read_reply() == b"committed"
                answered += 1
                return time.monotonic() > end

            poll_until("reads over several sweep intervals", read_once, 20 * sweep + 10)
        assert a.read_reply() == "OK"
    finally:
        a.close()
        b.close()


# =========================================================================== 4. cache_mb
def test_cache_off_serves_correctly(server_factory: Factory, tmp_path: Path) -> None:
    store = f"sqlite:///{(tmp_path / 'nocache.db').absolute()}?cache_mb=0"
    server = server_factory(tmp_path, store=store).start()
    with client(server) as r:
        assert r.set("s", "one") is True
        assert r.get("s") == b"one"
        assert r.set("s", "two") is True
        assert r.get("s") == b"two"
        assert [r.incr("n") for _ in range(5)] == [1, 2, 3, 4, 5]
        assert r.get("n") == b"5"
        assert r.delete("s") == 1
        assert r.get("s") is None
        assert r.delete("s") == 0
        pipe = r.pipeline(transaction=False)
        pipe.set("p", "x").incr("n").get("p").delete("p").get("p")
        assert pipe.execute() == [True, 6, b"x", 1, None]
    assert server.stop() == 0
    again = server_factory(tmp_path, store=store).start()
    with client(again) as r:
        assert r.get("n") == b"6"
        assert r.get("s") is None
        assert r.get("p") is None


@pytest.mark.parametrize("bad", ["abc", "-1", "1.5", "64MB"])
def test_bad_cache_mb_stops_serve_with_one_clear_line(tmp_path: Path, bad: str) -> None:
    store = f"sqlite:///{(tmp_path / 'x.db').absolute()}?cache_mb={bad}"
    done = subprocess.run(
        [sys.executable, "-m", "dumbkv", "serve", "--port", "0", "--admin-port", "0",
         "--store", store, "--data-dir", str(tmp_path)],
        capture_output=True, text=True, env=environ_without_settings(), timeout=60, check=False,
    )
    assert done.returncode != 0, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("dumbkv: ") and "cache_mb" in lines[0], done.stderr


# =========================================================================== 5. outside change
def _sha(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def _copy_other_envelope(sql: StoreSQL) -> None:
    sql.execute("UPDATE kv SET value = (SELECT value FROM kv WHERE id = ?) WHERE id = ?",
                _sha(b"other"), _sha(b"cached"))


def _delete_row(sql: StoreSQL) -> None:
    sql.execute("DELETE FROM kv WHERE id = ?", _sha(b"cached"))


def _write_and_cache(raw: RawClient) -> None:
    """Write ``cached`` and ``other``; read ``cached``, which puts it in the row cache."""
    assert call(raw, b"SET", b"cached", b"the-old-value") == "OK"
    assert call(raw, b"SET", b"other", b"another-value") == "OK"
    assert call(raw, b"GET", b"cached") == b"the-old-value"


@pytest.mark.parametrize(("change", "expected"), [
    (_copy_other_envelope, "SERVERERR"),
    (_delete_row, None),
], ids=["other-envelope", "deleted"])
def test_row_changed_behind_the_servers_back_is_noticed_when_cached(
    server_factory: Factory, tmp_path: Path, change: Any, expected: str | None
) -> None:
    server = server_factory(tmp_path).start()
    raw = RawClient(server.address, timeout=SOCKET_TIMEOUT)
    try:
        _write_and_cache(raw)
        with StoreSQL(server.store) as sql:
            assert sql.fetchval("SELECT count(*) FROM kv WHERE id = ?", _sha(b"cached")) == 1
            change(sql)
        for _ in range(3):
            reply = call(raw, b"GET", b"cached")
            if expected is None:
                assert reply is None
            else:
                assert is_server_error(reply), reply
        assert call(raw, b"GET", b"other") == b"another-value"
        assert call(raw, b"SET", b"cached", b"repaired") == "OK"
        assert call(raw, b"GET", b"cached") == b"repaired"
    finally:
        raw.close()


# =========================================================================== 6. units
def _key(i: int) -> tuple[int, bytes]:
    return 0, b"id-%d" % i


def _row(size: int) -> Row:
    return Row(b"v" * size, None)


def test_rowcache_evicts_oldest_first_within_budget() -> None:
    cost = ENTRY_OVERHEAD + 10
    cache = RowCache(10 * cost)
    for i in range(10):
        cache.put(_key(i), _row(10))
    assert len(cache) == 10 and cache.size == 10 * cost
    cache.put(_key(0), _row(10))  # rewritten: now the newest
    cache.put(_key(10), _row(10))
    assert cache.get(_key(1)) is MISSING  # the oldest went
    assert cache.get(_key(0)) == _row(10)
    assert cache.get(_key(10)) == _row(10)
    assert len(cache) == 10 and cache.size == 10 * cost
    cache.put(_key(11), _row(30))  # 20 bytes more: two entries go
    assert cache.get(_key(2)) is MISSING and cache.get(_key(3)) is MISSING
    assert cache.size <= cache.budget


def test_rowcache_keeps_no_value_bigger_than_an_eighth_of_the_budget() -> None:
    budget = 8 * (ENTRY_OVERHEAD + 100)
    cache = RowCache(budget)
    cache.put(_key(0), _row(100))  # exactly an eighth: kept
    assert cache.get(_key(0)) == _row(100)
    cache.put(_key(1), _row(50))
    cache.put(_key(0), _row(101))  # too big: not kept, and the old row is not left behind
    assert cache.get(_key(0)) is MISSING
    assert cache.get(_key(1)) == _row(50)
    assert cache.size == ENTRY_OVERHEAD + 50


def test_rowcache_none_is_known_absent_and_clear_empties() -> None:
    cache = RowCache(1 << 20)
    assert cache.get(_key(0)) is MISSING
    cache.put(_key(0), None)
    assert cache.get(_key(0)) is None
    assert cache.size == ENTRY_OVERHEAD
    cache.put(_key(0), _row(5))
    assert cache.size == ENTRY_OVERHEAD + 5
    cache.clear()
    assert len(cache) == 0 and cache.size == 0 and cache.get(_key(0)) is MISSING
    cache.discard(_key(0))  # absent: nothing to do
    assert cache.size == 0


def test_rowcache_off_keeps_nothing() -> None:
    cache = RowCache(0)
    cache.put(_key(0), _row(1))
    cache.put(_key(1), None)
    assert cache.get(_key(0)) is MISSING and cache.get(_key(1)) is MISSING
    assert cache.size == 0


_ops = st.lists(st.tuples(st.sampled_from(["put", "absent", "discard", "clear"]),
                          st.integers(0, 12), st.integers(0, 400)), max_size=80)


@settings(max_examples=200, deadline=None)
@given(budget=st.integers(0, 6000), ops=_ops)
def test_rowcache_size_matches_its_entries(budget: int, ops: list[tuple[str, int, int]]) -> None:
    cache = RowCache(budget)
    for op, i, size in ops:
        if op == "put":
            cache.put(_key(i), _row(size))
        elif op == "absent":
            cache.put(_key(i), None)
        elif op == "discard":
            cache.discard(_key(i))
        else:
            cache.clear()
        held = [(i, cache.get(_key(i))) for i in range(13)]
        counted = sum(ENTRY_OVERHEAD + (0 if r is None else len(r.value))  # type: ignore[union-attr]
                      for _, r in held if r is not MISSING)
        assert 0 <= cache.size == counted <= budget
        assert len(cache) == sum(1 for _, r in held if r is not MISSING)
    if ops and ops[-1][0] == "put" and budget and ENTRY_OVERHEAD + ops[-1][2] <= budget // 8:
        assert cache.get(_key(ops[-1][1])) == _row(ops[-1][2])  # the newest is always kept


_leaf = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.binary(max_size=300)
         | st.text(max_size=40))
_messages = st.lists(st.tuples(st.sampled_from(["w", "ok", "err", "reset"]),
                               st.lists(_leaf, max_size=6).map(tuple)), max_size=25)


@settings(max_examples=200, deadline=None)
@given(messages=_messages, cuts=st.lists(st.integers(0, 1 << 16), max_size=40))
def test_frames_come_out_whole_and_in_order(messages: list[Any], cuts: list[int]) -> None:
    stream = b"".join(frame(m) for m in messages)
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    reader = FrameReader()
    out: list[Any] = []
    for start, end in itertools.pairwise(points):
        out += list(reader.feed(stream[start:end]))
        out += list(reader.feed(b""))  # an empty read changes nothing
    assert out == messages


def test_frames_byte_by_byte() -> None:
    messages = [("w", 1, [(0, b"id", b"\x00" * 70000, None)], [(0, b"gone")]), ("reset",),
                ("ok", 7, True)]
    stream = b"".join(frame(m) for m in messages)
    reader = FrameReader()
    out: list[Any] = []
    for i in range(len(stream)):
        out += list(reader.feed(stream[i : i + 1]))
        if i < len(stream) - 1:
            assert len(out) < 3
    assert out == messages


# =========================================================================== 6. :memory:
def test_memory_store_commits_on_a_thread_and_forgets_at_exit(server_factory: Factory,
                                                              tmp_path: Path) -> None:
    """``sqlite:///:memory:`` has no writer process: its one connection's thread commits."""
    server = server_factory(tmp_path, store="sqlite:///:memory:").start()
    assert writers(server) == []
    per_thread, threads_n = 100, 4

    def incr() -> None:
        with client(server) as r:
            for _ in range(per_thread):
                r.incr("n")

    threads = [threading.Thread(target=incr) for _ in range(threads_n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with client(server) as r:
        assert r.get("n") == str(per_thread * threads_n).encode()
        pipe = r.pipeline(transaction=False)
        pipe.set("p", "x").append("p", "y").get("p").delete("p").get("p").mset({"a": 1, "b": 2})
        pipe.mget("a", "b", "c").set("t", "v", px=60_000).pttl("t").flushdb().dbsize()
        replies = pipe.execute()
        assert replies[:7] == [True, 2, b"xy", 1, None, True, [b"1", b"2", None]]
        assert replies[7] is True and 0 < replies[8] <= 60_000
        assert replies[9:] == [True, 0]
        assert r.set("kept?", "no") is True
    assert writers(server) == []
    assert server.stop() == 0
    again = server_factory(tmp_path, store="sqlite:///:memory:").start()
    with client(again) as r:
        assert r.get("kept?") is None
        assert r.dbsize() == 0


async def test_memory_store_answers_a_failed_thread_job_and_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the thread's job itself fails (not a SQL error, which the writer answers), the
    writes it carried answer ``-SERVERERR``, nothing of them is kept, and later writes work."""
    server = await start_server(Config(host="127.0.0.1", port=0, admin_port=0,
                                       store="sqlite:///:memory:", data_dir=str(tmp_path)))
    try:
        r = redis.asyncio.Redis(host="127.0.0.1", port=server.state.port, protocol=2,
                                retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0))
        async with r:
            assert await r.set("before", "1") is True
            real_apply = Writer.apply
            failures = [RuntimeError("the worker thread broke")]

            def apply(self: Writer, messages: list[Any]) -> list[Any]:
                if failures and any(m[0] == "w" for m in messages):
                    raise failures.pop()
                return real_apply(self, messages)

            monkeypatch.setattr(Writer, "apply", apply)
            with pytest.raises(redis.ResponseError, match=r"^SERVERERR"):
                await r.set("lost", "1")
            assert not failures
            assert await r.set("after", "2") is True
            assert await r.mget("before", "lost", "after") == [b"1", None, b"2"]
            assert await r.incr("before") == 2
    finally:
        await stop_server(server)


# =========================================================================== 7. review fixes
async def _server(tmp_path: Path, store: str, store_timeout: float = 5.0) -> Any:
    return await start_server(Config(host="127.0.0.1", port=0, admin_port=0, store=store,
                                      data_dir=str(tmp_path), store_timeout=store_timeout,
                                      shutdown_timeout=2.0))


def _aclient(server: Any) -> redis.asyncio.Redis:
    return redis.asyncio.Redis(host="127.0.0.1", port=server.state.port, protocol=2,
                               retry=redis.retry.Retry(redis.backoff.NoBackoff(), 0))


async def test_writes_after_a_flush_that_timed_out_wait_for_it(tmp_path: Path) -> None:
    """FLUSHALL answered with a timeout while its job is held up (a slow disk, here a job that
    holds the store's worker thread until the gate opens, queued just before the flush): a
    later SET must not be acknowledged before the flush, which would delete it."""
    server = await _server(tmp_path, f"sqlite:///{tmp_path / 'f.db'}", store_timeout=1.0)
    store = server.state.store
    assert isinstance(store, SQLiteStore)
    gate = threading.Event()
    try:
        async with _aclient(server) as r:
            assert await r.set("k", "old") is True
            store._job(lambda conn: gate.wait(30))
            with pytest.raises(redis.ResponseError, match=r"^SERVERERR .*within"):
                await r.flushall()
            # Held up behind the flush: not acknowledged, and not done.
            with pytest.raises(redis.ResponseError, match=r"^SERVERERR .*within"):
                await r.set("k", "new")
            gate.set()
            assert await r.dbsize() == 0  # the thread's next job: the flush is through
            assert await r.get("k") is None
            assert await r.set("k", "after") is True
            assert await r.incr("n") == 1
            assert await r.mget("k", "n") == [b"after", b"1"]
    finally:
        gate.set()
        await stop_server(server)


def test_no_new_writer_for_a_database_file_put_in_place_of_ours(
    server_factory: Factory, tmp_path: Path
) -> None:
    """The file is deleted (a new one may appear at its path), then the writer dies: the
    server must not start a writer on what is now at the path, and writes keep answering the
    file's error, never OK."""
    server = server_factory(tmp_path, "--store-timeout", "1").start()
    writer = the_writer(server)
    raw = RawClient(server.address, timeout=SOCKET_TIMEOUT)
    try:
        assert call(raw, b"SET", b"before", b"1") == "OK"
        for name in ("dumbkv.db", "dumbkv.db-wal", "dumbkv.db-shm"):
            (tmp_path / name).unlink(missing_ok=True)
        with StoreSQL(sqlite_url(tmp_path)) as sql:  # someone else's database at our path
            sql.execute("CREATE TABLE other (x)")
        writer.signal(signal.SIGKILL)
        poll_until("the writer to be gone", lambda: not writer.running(), 10)

        def file_error() -> object:
            reply = call(raw, b"SET", b"after", b"2")
            assert is_server_error(reply), reply
            return reply if "database file" in str(reply) else None

        poll_until("writes to answer the file's error", file_error, 10)
        assert writers(server) == []
        assert call(raw, b"PING") == "PONG"
        with StoreSQL(sqlite_url(tmp_path)) as sql:
            assert sql.fetchval("SELECT count(*) FROM sqlite_master WHERE name = 'kv'") == 0
    finally:
        raw.close()


def _sweeps(server: ServerProcess) -> float:
    """How many expiry sweeps the server has finished (from its /metrics)."""
    with urllib.request.urlopen(server.admin_url + "/metrics", timeout=SOCKET_TIMEOUT) as resp:
        text = resp.read().decode()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "dumbkv_store_query_duration_seconds_count"
               and s.labels.get("operation") == "sweep")


@pytest.mark.parametrize("expired_rows", [0, 3], ids=["sweep-deletes-nothing", "sweep-deletes"])
def test_sweeps_do_not_hide_a_change_made_behind_the_servers_back(
    server_factory: Factory, tmp_path: Path, expired_rows: int
) -> None:
    """The expiry sweep commits on the server's own connection; that must not make a cached
    row that another process changed meanwhile look current."""
    server = server_factory(tmp_path, "--sweep-interval", "0.05").start()
    raw = RawClient(server.address, timeout=SOCKET_TIMEOUT)
    try:
        _write_and_cache(raw)
        with StoreSQL(server.store) as sql:
            _copy_other_envelope(sql)
            for i in range(expired_rows):  # rows for the next sweep to delete
                sql.execute("INSERT INTO kv (db, id, value, expires_at) VALUES (0, ?, ?, 1)",
                            _sha(b"expired:%d" % i), b"\x01" * 41)
        swept = _sweeps(server)
        poll_until("two more sweeps", lambda: _sweeps(server) >= swept + 2, 10)
        with StoreSQL(server.store) as sql:
            assert sql.fetchval("SELECT count(*) FROM kv WHERE expires_at = 1") == 0
        assert is_server_error(call(raw, b"GET", b"cached"))
        assert call(raw, b"GET", b"other") == b"another-value"
    finally:
        raw.close()


async def test_memory_store_takes_writes_again_when_the_job_with_its_reset_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A commit fails (the writer then drops writes until the store's reset), and the thread
    job that carries that reset fails too: later writes must still be committed."""
    server = await _server(tmp_path, "sqlite:///:memory:", store_timeout=2.0)
    real_apply, real_commit = Writer.apply, Writer.commit
    faults = {"commit": 1, "reset": 1}

    def commit(self: Writer, writes: list[Any]) -> bool:
        if faults["commit"]:
            faults["commit"] -= 1
            raise sqlite3.OperationalError("disk I/O error")
        return real_commit(self, writes)

    def apply(self: Writer, messages: list[Any]) -> list[Any]:
        if faults["reset"] and messages == [("reset",)]:
            faults["reset"] -= 1
            raise RuntimeError("the worker thread broke")
        return real_apply(self, messages)

    try:
        async with _aclient(server) as r:
            monkeypatch.setattr(Writer, "commit", commit)
            monkeypatch.setattr(Writer, "apply", apply)
            with pytest.raises(redis.ResponseError, match=r"^SERVERERR"):
                await r.set("lost", "1")
            assert await r.set("after", "2") is True
            assert await r.mget("lost", "after") == [None, b"2"]
            assert faults == {"commit": 0, "reset": 0}
    finally:
        await stop_server(server)


async def test_a_stalled_writer_holds_up_no_reply_beyond_the_timeout(tmp_path: Path) -> None:
    """With the writer stopped, batches that timed out keep their slots until it answers. Once
    every slot is taken, what is queued behind them still gets the timeout error within the
    timeout, reads of cached keys are answered, and a stop does not hang."""
    server = await _server(tmp_path, f"sqlite:///{tmp_path / 's.db'}", store_timeout=0.5)
    server.state.store.max_inflight = 2
    pids = [p for p in _children(os.getpid()) if "dumbkv.store.writer" in _cmdline(p)]
    assert len(pids) == 1, pids
    writer = Proc(pids[0])
    stopped_server = False
    try:
        async with _aclient(server) as r:
            assert await r.set("cached", "v") is True
            assert await r.get("cached") == b"v"
            writer.signal(signal.SIGSTOP)
            try:
                for key in ("a1", "a2", "a3", "a4"):  # the slots fill up after a2
                    with pytest.raises(redis.ResponseError, match=r"^SERVERERR .*within"):
                        await asyncio.wait_for(r.set(key, "1"), SOCKET_TIMEOUT)
                assert await asyncio.wait_for(r.get("cached"), SOCKET_TIMEOUT) == b"v"
            finally:
                os.kill(writer.pid, signal.SIGCONT)
            assert await r.set("after", "2") is True  # a1 and a2 committed before it
            assert await r.mget("a1", "a2", "a3", "a4", "after") == [b"1", b"1", None, None,
                                                                     b"2"]
            writer.signal(signal.SIGSTOP)
            for key in ("b1", "b2", "b3"):
                with pytest.raises(redis.ResponseError, match=r"^SERVERERR"):
                    await asyncio.wait_for(r.set(key, "1"), SOCKET_TIMEOUT)
        await asyncio.wait_for(stop_server(server), 60)
        stopped_server = True
        poll_until("the stopped writer to be gone", lambda: not writer.running(), 10)
    finally:
        if writer.running():
            os.kill(writer.pid, signal.SIGCONT)
        if not stopped_server:
            await stop_server(server)


@pytest.mark.parametrize("given", ["right", "other"])
def test_writer_commits_only_to_the_file_it_was_given(tmp_path: Path, given: str) -> None:
    """``python -m dumbkv.store.writer PATH SYNC BUSY_MS DEV:INO``: the (device, inode) is the
    file the server opened; a writer that finds another file at PATH refuses every write."""
    with StoreSQL(sqlite_url(tmp_path)) as sql:
        sql.execute("CREATE TABLE kv (db INTEGER NOT NULL, id BLOB NOT NULL, value BLOB NOT "
                    "NULL, expires_at INTEGER, PRIMARY KEY (db, id)) WITHOUT ROWID")
    path = tmp_path / "dumbkv.db"
    st = path.stat()
    identity = f"{st.st_dev}:{st.st_ino}" if given == "right" else f"{st.st_dev}:{st.st_ino + 1}"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dumbkv.store.writer", str(path), "FULL", "1000", identity],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=environ_without_settings())
    assert proc.stdin is not None and proc.stdout is not None
    try:
        reader = FrameReader()
        proc.stdin.write(frame(("w", 1, [(0, b"id", b"sealed", None)], [])))
        proc.stdin.flush()
        replies: list[Any] = []
        while len(replies) < 2:
            chunk = os.read(proc.stdout.fileno(), 65536)
            assert chunk, "the writer closed its output"
            replies += reader.feed(chunk)
        assert replies[0] == ("ready",)
        if given == "right":
            assert replies[1][:2] == ("ok", 1)
        else:
            assert replies[1][:3] == ("err", 1, "FileGone")
        proc.stdin.close()
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    with StoreSQL(sqlite_url(tmp_path)) as sql:
        assert sql.fetchval("SELECT count(*) FROM kv") == (1 if given == "right" else 0)


async def test_a_command_answered_while_it_waits_behind_a_stalled_writer(
    tmp_path: Path,
) -> None:
    """A command queued behind full commit slots is answered by ``abort`` (what shutdown
    does); when the writer then resumes and frees the slots, the queue's runner finds nothing
    left and ends cleanly (no task dies with an error)."""
    server = await _server(tmp_path, f"sqlite:///{tmp_path / 'q.db'}", store_timeout=2.0)
    store = server.state.store
    store.max_inflight = 2
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _, context: errors.append(context))
    pids = [p for p in _children(os.getpid()) if "dumbkv.store.writer" in _cmdline(p)]
    writer = Proc(pids[0])
    try:
        async with _aclient(server) as r, _aclient(server) as queued_client:
            writer.signal(signal.SIGSTOP)
            try:
                for key in ("a1", "a2"):  # they time out and keep the two slots
                    with pytest.raises(redis.ResponseError, match=r"^SERVERERR .*within"):
                        await r.set(key, "1")
                queued = loop.create_task(queued_client.set("a3", "1"))

                async def queued_up() -> None:  # the server has read it: it waits for room
                    while not store._queue:
                        await asyncio.sleep(0)

                await asyncio.wait_for(queued_up(), SOCKET_TIMEOUT)
                store.abort("answered by abort")
            finally:
                os.kill(writer.pid, signal.SIGCONT)
            with pytest.raises(redis.ResponseError, match=r"^SERVERERR answered by abort"):
                await queued
            await asyncio.wait_for(store.drain(), SOCKET_TIMEOUT)  # a1, a2 committed
            assert await r.mget("a1", "a2", "a3") == [b"1", b"1", None]
        gc.collect()
        assert errors == []
    finally:
        loop.set_exception_handler(None)
        await stop_server(server)


async def _ping_fails(store: Any, within: float) -> str:
    """The message of the first ``ping`` that fails, polling for up to ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            await store.ping()
        except StoreError as exc:
            return exc.message
        await asyncio.sleep(0.05)
    raise AssertionError(f"ping kept answering for {within}s")


async def test_not_ready_while_the_writer_is_stuck_on_a_batch(tmp_path: Path) -> None:
    """/ready's store check: a writer that has committed nothing for twice the store timeout
    while a batch waits (SIGSTOP here, a hung disk in life) makes the store unready; it is
    ready again once the writer goes on."""
    server = await _server(tmp_path, f"sqlite:///{tmp_path / 'r.db'}", store_timeout=0.5)
    store = server.state.store
    pids = [p for p in _children(os.getpid()) if "dumbkv.store.writer" in _cmdline(p)]
    writer = Proc(pids[0])
    try:
        async with _aclient(server) as r:
            assert await r.set("k", "v") is True
            await store.ping()
            writer.signal(signal.SIGSTOP)
            try:
                await store.ping()  # stopped, but nothing waits for it: no sign of trouble
                with pytest.raises(redis.ResponseError, match=r"^SERVERERR .*within"):
                    await r.set("k", "w")
                message = await _ping_fails(store, SOCKET_TIMEOUT)
                assert message == "sqlite writer has committed nothing for 1s"  # 2 x timeout
            finally:
                os.kill(writer.pid, signal.SIGCONT)
            await asyncio.wait_for(store.drain(), SOCKET_TIMEOUT)
            await store.ping()
            assert await r.get("k") == b"w"
    finally:
        await stop_server(server)


async def test_ready_while_a_sweep_waits_for_another_process_write_lock(tmp_path: Path) -> None:
    """The sweep runs on the worker thread and waits there (up to the store timeout) for a
    write lock another process holds; the readiness check does not queue behind it."""
    path = tmp_path / "l.db"
    server = await _server(tmp_path, f"sqlite:///{path}", store_timeout=3.0)
    store = server.state.store
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # holds the write lock
        sweep = asyncio.get_running_loop().create_task(store.sweep())
        await asyncio.sleep(0)  # the sweep's job is on the worker thread
        async with asyncio.timeout(1.0):  # /ready's own limit
            await store.ping()
        assert not sweep.done()
        other.execute("ROLLBACK")
        assert await asyncio.wait_for(sweep, SOCKET_TIMEOUT) == 0
    finally:
        other.close()
        await stop_server(server)
