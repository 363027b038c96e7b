"""SQLite backend on aiosqlite: the embedded default.

Writes go through one aiosqlite connection. Its worker thread runs queued jobs first-in
first-out, so a batch's upserts, deletes and commit (with its fsync) are one job, one thread hop,
and the event loop never waits on the disk. While a commit is in progress the next batches are
queued behind it whole (load, compute, write): each sees the previous one's writes, and group
commit keeps going back to back.

When no write is queued, a batch's rows are read with one indexed ``IN (...)`` query on a
second, read-only connection used directly on the event loop: in WAL mode readers never wait for
the writer, and a point lookup of cached pages costs about a microsecond a key, far less than a
thread hop. A read-only batch (GET, MGET, TTL...) then never leaves the loop.

DumbKV is the only writer of its file (Kubernetes runs one replica with the Recreate strategy).

URL forms: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``; query options
``synchronous=full|normal`` (default ``full``: a commit reaches the disk before its reply).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs

import aiosqlite

from ..errors import StoreError
from .base import Changes, Key, Row, Store, now_ms

__all__ = ["SQLiteStore", "sqlite_path"]

T = TypeVar("T")
SCHEMA_VERSION = 1
_CHUNK = 500  # rows per IN (...) query, well under SQLite's variable limit

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
        self._writes_inflight = 0

    def _in_thread(self, fn: Callable[[sqlite3.Connection], T]) -> Any:
        """Run ``fn(connection)`` on aiosqlite's worker thread: one hop for many statements."""
        db = self._db
        if db is None:
            raise StoreError("sqlite store is not open")
        return db._execute(lambda: fn(db._conn))  # type: ignore[no-untyped-call]

    async def _open(self) -> None:
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path, timeout=self.timeout)
        await self._in_thread(self._init_schema)
        if self.path == ":memory:":
            self._reader = None  # one private in-memory database: read through the writer
        else:
            self._reader = sqlite3.connect(
                f"file:{Path(self.path).absolute()}?mode=ro", uri=True, timeout=self.timeout,
                isolation_level=None,
            )

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.executescript(_SCHEMA)
        row = conn.execute("SELECT max(version) FROM dumbkv_schema").fetchone()
        if row[0] is None:
            conn.execute("INSERT INTO dumbkv_schema (version) VALUES (?)", (SCHEMA_VERSION,))
        elif row[0] > SCHEMA_VERSION:
            raise StoreError(
                f"database schema version {row[0]} is newer than this DumbKV ({SCHEMA_VERSION})"
            )
        conn.commit()

    async def _close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    async def _transact(
        self, keys: list[Key], compute: Callable[[dict[Key, Row], int], Changes]
    ) -> None:
        if self._writes_inflight == 0 and self._reader is not None:
            # Nothing is waiting to be written, so the reader sees every earlier batch:
            # load and compute here, and hop to the writer only if something changed.
            rows = _load(self._reader, keys) if keys else {}
            changes = compute(rows, now_ms())
            if not changes:
                return

            def job(conn: sqlite3.Connection) -> None:
                _write(conn, changes.items())

        else:
            # Earlier batches are queued on the writer: run this one whole behind them.
            def job(conn: sqlite3.Connection) -> None:
                changes = compute(_load(conn, keys) if keys else {}, now_ms())
                if changes:
                    _write(conn, changes.items())

        self._writes_inflight += 1
        try:
            await self._in_thread(job)
        finally:
            self._writes_inflight -= 1

    async def _flush(self, db: int | None) -> None:
        def flush(conn: sqlite3.Connection) -> None:
            if db is None:
                conn.execute("DELETE FROM kv")
            else:
                conn.execute("DELETE FROM kv WHERE db = ?", (db,))
            conn.commit()

        await self._in_thread(flush)

    async def _count(self, now: int) -> dict[int, int]:
        def count(conn: sqlite3.Connection) -> dict[int, int]:
            cur = conn.execute(
                "SELECT db, count(*) FROM kv WHERE expires_at IS NULL OR expires_at > ? "
                "GROUP BY db",
                (now,),
            )
            return dict(cur.fetchall())

        result: dict[int, int] = await self._in_thread(count)
        return result

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
        await self._in_thread(lambda conn: conn.execute("SELECT 1").fetchone())

    def size_bytes(self) -> int:
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


def _write(conn: sqlite3.Connection, changes: Iterable[tuple[Key, Row | None]]) -> None:
    upserts = []
    deletes = []
    for (db, kid), row in changes:
        if row is None:
            deletes.append((db, kid))
        else:
            upserts.append((db, kid, row.value, row.expires_at))
    try:
        if deletes:
            conn.executemany(_DELETE, deletes)
        if upserts:
            conn.executemany(_UPSERT, upserts)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
