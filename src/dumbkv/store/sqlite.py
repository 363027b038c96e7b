"""SQLite backend on aiosqlite: the embedded default.

A batch costs at most one thread hop. Its rows are read with one indexed ``IN (...)`` query on a
read-only connection used directly on the event loop (in WAL mode readers never wait for the
writer, and a point lookup of cached pages takes about a microsecond). If the batch changed
anything, its deletes and upserts run on the loop too, inside ``BEGIN IMMEDIATE`` on the write
connection, and only the ``COMMIT``, the step that waits for the disk, goes to aiosqlite's worker
thread. It is one C call that holds no Python lock, so the loop keeps parsing the next commands
(the next group) while the disk works. A batch that would have to wait for a lock another
process holds runs whole on the worker thread instead, so the loop never blocks on it.

Batches run one at a time and each starts after the previous commit, so the reader sees every
acknowledged write. DumbKV is the only writer of its file (Kubernetes runs one replica with the
Recreate strategy).

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

__all__ = ["SQLiteStore", "sqlite_path"]

T = TypeVar("T")
SCHEMA_VERSION = 1
_CHUNK = 500  # rows per IN (...) query, well under SQLite's variable limit
_MMAP_BYTES = 1 << 30  # address space only; the OS pages the file in and out as it needs

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


class SQLiteStore(Store):
    backend = "sqlite"
    # The writer thread runs jobs first-in first-out, so batches may overlap.
    max_inflight = 8

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        super().__init__(url, timeout=timeout)
        self.path, options = sqlite_path(url)
        self.synchronous = options.get("synchronous", "full").upper()
        if self.synchronous not in ("FULL", "NORMAL"):
            raise ValueError("sqlite synchronous must be 'full' or 'normal'")
        self._db: aiosqlite.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._last_job: asyncio.Future[Any] | None = None
        self._busy_ms = int(timeout * 1000)
        self._identity: tuple[int, int] | None = None
        self._writes_inflight = 0

    def _in_thread(self, fn: Callable[[sqlite3.Connection], T]) -> Awaitable[T]:
        """Run ``fn(connection)`` on aiosqlite's worker thread: one hop for many statements.

        Jobs run first-in first-out. A caller's timeout may stop waiting for a job but not the
        job itself, so the last one is remembered: the loop touches the write connection only
        once it has finished (``_settled``).
        """
        db = self._db
        if db is None:
            raise StoreError("sqlite store is not open")
        job: asyncio.Future[T] = asyncio.ensure_future(
            db._execute(lambda: fn(db._conn))  # type: ignore[no-untyped-call]
        )
        job.add_done_callback(_retrieve)
        self._last_job = job
        return asyncio.shield(job)

    async def _settled(self) -> None:
        """Wait until the worker thread has no job that could still use the connection."""
        job = self._last_job
        if job is not None and not job.done():
            await asyncio.wait([job])

    @property
    def _writer(self) -> sqlite3.Connection:
        """The write connection itself, for the statements that never wait on the disk."""
        if self._db is None:
            raise StoreError("sqlite store is not open")
        conn: sqlite3.Connection = self._db._conn
        return conn

    async def _open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # Autocommit mode: transactions are begun and committed explicitly. The connection is
        # used from the loop and from aiosqlite's thread, never from both at once.
        self._db = await aiosqlite.connect(
            self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
        )
        await self._in_thread(self._init_schema)
        self._identity = self._file_identity()
        if self.path == ":memory:":
            self._reader = self._writer  # one private in-memory database
        else:
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
        if self._reader is not None and self._db is not None and self._reader is not (
            self._db._conn
        ):
            self._reader.close()
        self._reader = None
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    async def _transact(
        self, keys: list[Key], compute: Callable[[dict[Key, Row], int], Changes], writes: bool
    ) -> None:
        if self._reader is None:
            raise StoreError("sqlite store is not open")
        rows = _load(self._reader, keys) if keys else {}
        changes = compute(rows, now_ms())
        if not changes:
            return
        self._check_file()
        await self._settled()
        conn = self._writer
        conn.execute("PRAGMA busy_timeout=0")  # on the loop: never wait for a lock
        try:
            conn.execute("BEGIN IMMEDIATE")
            locked = False
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise
            locked = True
        finally:
            conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")
        if locked:
            # Another process holds the write lock: wait for it (up to the busy timeout)
            # off the loop.
            await self._in_thread(lambda c: _write_waiting(c, changes))
            return
        try:
            _apply_changes(conn, changes)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        await self._in_thread(_commit)

    async def _flush(self, db: int | None) -> None:
        def flush(conn: sqlite3.Connection) -> None:
            if db is None:
                conn.execute("DELETE FROM kv")
            else:
                conn.execute("DELETE FROM kv WHERE db = ?", (db,))
            conn.commit()

        await self._in_thread(flush)

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
