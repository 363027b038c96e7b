"""SQLite backend on aiosqlite: the embedded default.

Reads run on the event loop, on a read-only connection: in WAL mode a reader never waits for
the writer, and a point lookup of cached pages costs about a microsecond. Writes never touch
the loop: a staged batch's changes go to aiosqlite's worker thread, which writes and commits
them there (the commit waits for the disk without holding the GIL).

Staging does not wait for the commit. The changes of every batch staged but not yet committed
stay in an in-memory overlay, and a later batch reads its rows through it: it sees those
changes (read-your-writes, atomic INCR) while the disk works. The writer takes every batch
staged while it was busy as one group, in one transaction (group commit). A batch is answered
only when its group has committed, and a read that saw uncommitted changes only when they
are committed. If a group fails, its batches and every batch staged after it (computed on top
of it) are answered with a server error and the overlay is dropped: nothing of them was
acknowledged, and the next batch reads the committed rows again.

DumbKV is the only writer of its file (Kubernetes runs one replica with the Recreate strategy);
if another process holds the write lock, the worker thread waits for it up to the timeout.

URL forms: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``; query option
``synchronous=full|normal`` (default ``full``: a commit reaches the disk before its reply).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs

import aiosqlite

from ..errors import StoreError
from .base import Changes, Key, KeyCount, Row, Store, now_ms, split_changes
from .checkpoint import Checkpointer
from .rowcache import MISSING, RowCache

__all__ = ["SQLiteStore", "sqlite_path"]

T = TypeVar("T")
SCHEMA_VERSION = 1
_CHUNK = 500  # rows per IN (...) query, well under SQLite's variable limit
_MMAP_BYTES = 1 << 30
_CACHE_MB = 64
#: The writer checkpoints by itself only past this many WAL pages; the Checkpointer runs first.
_AUTOCHECKPOINT_PAGES = 8192  # address space only; the OS pages the file in and out as it needs

_SCHEMA = """
CREATE TABLE IF NOT EXISTS dumbkv_schema (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS kv (
    db INTEGER NOT NULL,
    id BLOB NOT NULL,
    value BLOB NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (db, id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS kv_expires ON kv (expires_at) WHERE expires_at IS NOT NULL;
"""
_UPSERT = (
    "INSERT INTO kv (db, id, value, expires_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (db, id) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at"
)
_DELETE = "DELETE FROM kv WHERE db = ? AND id = ?"


def sqlite_path(url: str) -> tuple[str, dict[str, str]]:
    """Split ``sqlite:///path?opt=v`` into the file path and its options."""
    rest = url.split("://", 1)[1]
    rest, _, query = rest.partition("?")
    path = rest[1:] if rest.startswith("/") else rest
    if not path:
        raise ValueError(f"no file path in store URL {url!r}")
    options = {k: v[-1] for k, v in parse_qs(query).items()}
    return path, options


class _Staged:
    """A batch handed to the writer: its changes, and the future its replies wait for."""

    __slots__ = ("changes", "durable", "seq")

    def __init__(self, seq: int, changes: Changes, durable: asyncio.Future[None]) -> None:
        self.seq = seq
        self.changes = changes
        self.durable = durable


class SQLiteStore(Store):
    backend = "sqlite"

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        super().__init__(url, timeout=timeout)
        self.path, options = sqlite_path(url)
        self.synchronous = options.get("synchronous", "full").upper()
        if self.synchronous not in ("FULL", "NORMAL"):
            raise ValueError("sqlite synchronous must be 'full' or 'normal'")
        self._db: aiosqlite.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None
        #: Uncommitted changes by key: (seq of the batch that made it, row or None = deleted).
        self._overlay: dict[Key, tuple[int, Row | None]] = {}
        self._seq = 0
        #: Batches waiting for the writer, and the group it is committing.
        self._staged: list[_Staged] = []
        self._writing: list[_Staged] | None = None
        #: The newest worker-thread job: the loop uses the write connection only once it is
        #: done (a caller's timeout stops waiting for a job, not the job itself).
        self._last_job: asyncio.Future[Any] | None = None
        self._busy_ms = int(timeout * 1000)
        self._checkpointer = Checkpointer(self.path)
        #: Committed rows kept in memory (DumbKV is the only writer of its file).
        self._cache = RowCache(_cache_budget(options))
        self._flushing = 0  # FLUSHDB/FLUSHALL jobs in the thread: cache nothing meanwhile
        self._version: int | None = None
        self._version_checked = False

    def _job(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Run ``fn(connection)`` on aiosqlite's worker thread (first-in first-out).

        The call goes straight into the thread's queue: through ``Connection._execute`` (a
        coroutine) it would wait for the loop's next turn first, a third of a millisecond
        under load, on the path of every commit.
        """
        db = self._db
        if db is None:
            raise StoreError("sqlite store is not open")
        conn = db._conn
        job: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        db._tx.put_nowait((job, lambda: fn(conn)))
        job.add_done_callback(_retrieve)
        self._last_job = job
        return job

    def _in_thread(self, fn: Callable[[sqlite3.Connection], T]) -> Awaitable[T]:
        """``_job`` for a caller that may stop waiting (a timeout): the job still runs."""
        return asyncio.shield(self._job(fn))

    async def _open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: transactions are begun and committed explicitly.
        self._db = await aiosqlite.connect(
            self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
        )
        await self._in_thread(self._init_schema)
        self._identity = self._file_identity()
        if self.path != ":memory:":  # a private in-memory database has one connection
            self._reader = sqlite3.connect(
                f"file:{Path(self.path).absolute()}?mode=ro", uri=True, timeout=self.timeout,
                isolation_level=None,
            )
            # Read pages through a memory map: a lookup then costs no read() system call.
            self._reader.execute(f"PRAGMA mmap_size={_MMAP_BYTES}")

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute(f"PRAGMA mmap_size={_MMAP_BYTES}")
        conn.execute(f"PRAGMA wal_autocheckpoint={_AUTOCHECKPOINT_PAGES}")
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            row = conn.execute("SELECT max(version) FROM dumbkv_schema").fetchone()
            if row[0] is None:
                conn.execute("INSERT INTO dumbkv_schema (version) VALUES (?)", (SCHEMA_VERSION,))
            elif row[0] > SCHEMA_VERSION:
                raise StoreError(
                    f"database schema version {row[0]} is newer than this DumbKV "
                    f"({SCHEMA_VERSION})"
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def _close(self) -> None:
        await self._checkpointer.close()
        if self._reader is not None:
            self._reader.close()
        self._reader = None
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    # ----------------------------------------------------------------- batches
    async def _stage(
        self, keys: list[Key], compute: Callable[[dict[Key, Row], int], Changes], writes: bool
    ) -> Awaitable[None] | None:
        if self._db is None:
            raise StoreError("sqlite store is not open")
        rows: dict[Key, Row] = {}
        missing: list[Key] = []
        overlay = self._overlay
        cache = self._cache
        if keys:
            self._cache_fresh()
        for key in keys:
            hit = overlay.get(key)
            if hit is not None:
                row: Row | object | None = hit[1]
            else:
                row = cache.get(key)
                if row is MISSING:
                    missing.append(key)
                    continue
            if row is not None:
                rows[key] = row  # type: ignore[assignment]
        if missing:
            reader = self._reader
            if reader is not None:
                loaded = _load(reader, missing)
            else:  # in memory: the one connection is the worker thread's
                loaded = await self._in_thread(lambda conn: _load(conn, missing))
            # Nothing in flight changes these keys (they are not in the overlay): what was
            # read is their committed state.
            if not self._flushing:
                for key in missing:
                    cache.put(key, loaded.get(key))
            rows.update(loaded)
        changes = compute(rows, now_ms())
        if not changes and self._writing is None and not self._staged:
            return None  # it read committed rows only
        seq = 0
        if changes:
            self._seq = seq = self._seq + 1
            for key, row in changes.items():
                overlay[key] = (seq, row)
        staged = _Staged(seq, changes, asyncio.get_running_loop().create_future())
        self._staged.append(staged)
        self._kick()
        return staged.durable

    def _kick(self, _: object = None) -> None:
        """Hand every staged batch to the writer as one group, unless it is busy.

        The group's statements run here, on the loop, inside ``BEGIN IMMEDIATE`` (a few
        microseconds a row); only the ``COMMIT``, which waits for the disk, goes to the worker
        thread: one hand-over, and the thread never contends for the GIL row by row.
        """
        if self._writing is not None or not self._staged:
            return
        last = self._last_job
        if last is not None and not last.done():
            last.add_done_callback(self._kick)  # the thread still uses the connection
            return
        group, self._staged = self._staged, []
        merged: Changes = {}
        for staged in group:
            merged.update(staged.changes)  # in order: the last change of a key wins
        if not merged:  # reads only, and every write before them is committed
            for staged in group:
                _resolve(staged.durable)
            return
        self._writing = group
        try:
            job = self._begin_write(merged)
        except BaseException as exc:
            job = asyncio.get_running_loop().create_future()
            job.set_exception(exc)
        job.add_done_callback(self._written)

    def _begin_write(self, changes: Changes) -> asyncio.Future[None]:
        """Write ``changes`` in a transaction and start its commit on the worker thread."""
        if self._db is None:
            raise StoreError("sqlite store is not open")
        self._check_file()
        conn: sqlite3.Connection = self._db._conn
        conn.execute("PRAGMA busy_timeout=0")  # on the loop: never wait for a lock
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise
            # Another process holds the write lock: wait for it (up to the busy timeout)
            # off the loop.
            self._cache.clear()  # another process writes: what we remember may be stale
            return self._job(lambda c: _write_waiting(c, changes))
        finally:
            conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")
        try:
            self._note_version(conn)  # the lock is ours: exact
            _apply_changes(conn, changes)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return self._job(_commit)

    def _note_version(self, conn: sqlite3.Connection) -> None:
        """Forget the cached rows if another process committed since we last looked.

        ``PRAGMA data_version`` on the write connection changes only with commits made by
        other connections, and ours never commit (the reader is read-only): a change means
        someone edited the file behind the server's back (a tampered row, a repair by hand).
        """
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if version != self._version:
            self._cache.clear()
            self._version = version

    def _cache_fresh(self) -> None:
        """Look for outside commits once per turn of the loop, when the writer is idle (while
        it works, each group looks under its lock)."""
        if self._version_checked or self._db is None or self._reader is None:
            return
        last = self._last_job
        if self._writing is not None or (last is not None and not last.done()):
            return
        self._version_checked = True
        asyncio.get_running_loop().call_soon(self._version_unchecked)
        self._note_version(self._db._conn)

    def _version_unchecked(self) -> None:
        self._version_checked = False

    def _written(self, job: asyncio.Future[None]) -> None:
        """On the loop, when a group is through: answer it, then start the next group."""
        group, self._writing = self._writing or [], None
        if job.cancelled():
            error: BaseException | None = StoreError("sqlite write was cancelled")
        else:
            error = job.exception()
        if error is None:
            overlay = self._overlay
            cache = self._cache
            rows = 0
            for staged in group:
                rows += len(staged.changes)
                for key, row in staged.changes.items():
                    cache.put(key, row)
                    hit = overlay.get(key)
                    if hit is not None and hit[0] == staged.seq:
                        del overlay[key]
                _resolve(staged.durable)
            self._checkpointer.written(rows)
            self._kick()
            return
        # Every batch staged since was computed on top of this group: none may commit.
        failed, self._staged = group + self._staged, []
        self._overlay.clear()
        self._cache.clear()  # the commit's outcome is unknown: read the file again
        for staged in failed:
            _fail(staged.durable, error)

    def _cached(self, keys: tuple[Key, ...]) -> dict[Key, Row] | None:
        self._cache_fresh()
        overlay = self._overlay
        cache = self._cache
        rows: dict[Key, Row] = {}
        for key in keys:
            if key in overlay:
                return None
            row = cache.get(key)
            if row is MISSING:
                return None
            if row is not None:
                rows[key] = row  # type: ignore[assignment]
        return rows

    async def _flush(self, db: int | None) -> None:
        def flush(conn: sqlite3.Connection) -> None:
            if db is None:
                conn.execute("DELETE FROM kv")
            else:
                conn.execute("DELETE FROM kv WHERE db = ?", (db,))
            conn.commit()

        self._flushing += 1
        job = self._job(flush)
        job.add_done_callback(self._flushed)
        await asyncio.shield(job)

    def _flushed(self, _: object) -> None:
        # When the job is through, not when its caller stops waiting (a timeout).
        self._flushing -= 1
        self._cache.clear()

    async def _count(self, now: int) -> dict[int, KeyCount]:
        def count(conn: sqlite3.Connection) -> dict[int, KeyCount]:
            cur = conn.execute(
                "SELECT db, count(*), count(expires_at) FROM kv "
                "WHERE expires_at IS NULL OR expires_at > ? GROUP BY db",
                (now,),
            )
            return {db: KeyCount(keys, expires) for db, keys, expires in cur.fetchall()}

        return await self._in_thread(count)

    async def _sweep(self, now: int, limit: int) -> int:
        def sweep(conn: sqlite3.Connection) -> int:
            cur = conn.execute(
                "DELETE FROM kv WHERE (db, id) IN (SELECT db, id FROM kv "
                "WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT ?)",
                (now, limit),
            )
            conn.commit()
            return cur.rowcount

        removed: int = await self._in_thread(sweep)
        return removed

    async def _ping(self) -> None:
        self._check_file()
        await self._in_thread(lambda conn: conn.execute("SELECT 1").fetchone())

    def _file_identity(self) -> tuple[int, int] | None:
        if self.path == ":memory:":
            return None
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino

    def _check_file(self) -> None:
        """Refuse writes once the database file was deleted or replaced under us: they would
        go to a file nobody can open again, and be lost at the next start."""
        if self._identity is not None and self._file_identity() != self._identity:
            raise StoreError(
                "sqlite database file was removed or replaced while in use; "
                "restart the server to open it again"
            )

    async def _size_bytes(self) -> int:
        """The database file plus its WAL, in bytes."""
        total = 0
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                total += os.path.getsize(self.path + suffix)
        return total


def _cache_budget(options: dict[str, str]) -> int:
    """The row cache's budget in bytes, from the URL option ``cache_mb`` (default 64)."""
    raw = options.get("cache_mb", str(_CACHE_MB))
    if not raw.isdigit():
        raise ValueError("sqlite cache_mb must be a whole number of MiB (0 turns it off)")
    return int(raw) << 20


def _load(conn: sqlite3.Connection, keys: list[Key]) -> dict[Key, Row]:
    by_db: dict[int, list[bytes]] = {}
    for db, kid in keys:
        by_db.setdefault(db, []).append(kid)
    rows: dict[Key, Row] = {}
    for db, ids in by_db.items():
        for i in range(0, len(ids), _CHUNK):
            chunk = ids[i : i + _CHUNK]
            sql = (
                "SELECT id, value, expires_at FROM kv WHERE db = ? AND id IN ("
                + ",".join("?" * len(chunk))
                + ")"
            )
            for kid, value, expires_at in conn.execute(sql, (db, *chunk)):
                rows[(db, kid)] = Row(value, expires_at)
    return rows


def _apply_changes(conn: sqlite3.Connection, changes: Changes) -> None:
    upserts, deletes = split_changes(changes)
    if deletes:
        conn.executemany(_DELETE, deletes)
    if upserts:
        conn.executemany(_UPSERT, upserts)


def _commit(conn: sqlite3.Connection) -> None:
    try:
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _write_waiting(conn: sqlite3.Connection, changes: Changes) -> None:
    """The whole write on the worker thread, where waiting for the lock blocks nobody."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        _apply_changes(conn, changes)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    _commit(conn)


def _retrieve(job: asyncio.Future[Any]) -> None:
    """Mark a worker job's outcome as seen: a caller that timed out will never look at it."""
    if not job.cancelled():
        job.exception()


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    return getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _resolve(durable: asyncio.Future[None]) -> None:
    if not durable.done():  # its batch may have stopped waiting (a timeout)
        durable.set_result(None)


def _fail(durable: asyncio.Future[None], error: BaseException) -> None:
    if not durable.done():
        durable.set_exception(error)
        durable.exception()  # seen: a batch that stopped waiting will never look
