"""SQLite backend: the embedded default.

Reads run on the event loop, on a read-only connection: in WAL mode a reader never waits for
the writer, and a point lookup costs a few microseconds. Committed rows are also kept in a
bounded in-memory cache (``RowCache``), so a read with nothing in flight before it is answered
at once (``Store.read_now``).

Writes never touch the loop. A staged batch's row changes go to the writer (``writer.py``), a
child process with its own connection: it writes and commits them on the machine's other core,
taking every batch waiting in its pipe into one transaction (group commit). Staging does not
wait for the commit: the changes of every batch sent but not yet committed stay in an in-memory
overlay, and later batches read their rows through it (read-your-writes, atomic INCR). A batch
is answered when the writer acknowledges its commit, and a read that saw uncommitted changes
only when they are committed. If a commit fails, its batches and every batch sent after it
(computed on top of it) are answered with a server error, the overlay and the cache are
dropped, and the writer is told to start again from the committed rows. If the writer process
dies, the same happens and a new one is started.

Whole-database steps (FLUSHDB, counts) run on aiosqlite's worker thread, after every batch
before them is committed; the expiry sweep and readiness pings run there too, outside the
queue.

DumbKV is the only writer of its file (Kubernetes runs one replica with the Recreate strategy).
Commits made by anyone else are noticed (``PRAGMA data_version``) and empty the cache; a
foreign lock is waited for, up to the timeout, by the writer, never by the loop.

URL forms: ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``; query options
``synchronous=full|normal`` (default ``full``: a commit reaches the disk before its reply) and
``cache_mb=N`` (the row cache's budget in MiB, default 64; 0 turns it off).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs

import aiosqlite

from ..errors import StoreError
from .base import (
    Changes,
    Durable,
    Key,
    KeyCount,
    Row,
    Store,
    backend_error,
    now_ms,
    split_changes,
)
from .checkpoint import Checkpointer
from .rowcache import MISSING, RowCache
from .writer import AUTOCHECKPOINT_PAGES, FILE_GONE, MMAP_BYTES, file_identity
from .writerlink import ProcessLink, ThreadLink, WriterLink

__all__ = ["SQLiteStore", "sqlite_path"]

log = logging.getLogger("dumbkv.store")

T = TypeVar("T")
SCHEMA_VERSION = 1
_CHUNK = 500  # rows per IN (...) query, well under SQLite's variable limit
_CACHE_MB = 64
_PAGE_SIZE = 1024

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


def sqlite_path(url: str) -> tuple[str, dict[str, str]]:
    """Split ``sqlite:///path?opt=v`` into the file path and its options."""
    rest = url.split("://", 1)[1]
    rest, _, query = rest.partition("?")
    path = rest[1:] if rest.startswith("/") else rest
    if not path:
        raise ValueError(f"no file path in store URL {url!r}")
    options = {k: v[-1] for k, v in parse_qs(query).items()}
    return path, options


class _Sent:
    """A batch handed to the writer: its changes, and the ``Durable`` its replies wait for. A
    batch without changes waits for the write sent last before it (``seq``)."""

    __slots__ = ("changes", "durable", "sent_at", "seq")

    def __init__(self, seq: int, changes: Changes) -> None:
        self.seq = seq
        self.changes = changes
        self.durable = Durable()
        self.sent_at = time.monotonic()


class SQLiteStore(Store):
    backend = "sqlite"
    #: Smaller batches than the default: each is sent to the writer as soon as it is staged,
    #: so the writer commits the first while the loop stages the next (deep pipelines from
    #: many clients keep both cores busy instead of taking turns).
    max_batch = 256

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        super().__init__(url, timeout=timeout)
        self.path, options = sqlite_path(url)
        self.synchronous = options.get("synchronous", "full").upper()
        if self.synchronous not in ("FULL", "NORMAL"):
            raise ValueError("sqlite synchronous must be 'full' or 'normal'")
        self._db: aiosqlite.Connection | None = None
        self._reader: sqlite3.Connection | None = None
        self._identity: tuple[int, int] | None = None
        self._writer: WriterLink | None = None
        self._restarting: asyncio.Task[None] | None = None
        #: Uncommitted changes by key: (seq of the batch that made it, row or None = deleted).
        self._overlay: dict[Key, tuple[int, Row | None]] = {}
        self._seq = 0
        self._epoch = 0  # counts failures: a batch staged across one is void
        #: Batches sent to the writer and not yet acknowledged, in order.
        self._sent: deque[_Sent] = deque()
        self._checkpointer = Checkpointer(self.path)
        #: Committed rows kept in memory (DumbKV is the only writer of its file).
        self._cache = RowCache(_cache_budget(options))
        self._flushing = 0  # FLUSHDB/FLUSHALL jobs in the thread: cache nothing meanwhile
        #: The newest of them (the thread runs jobs in order): batches wait for it to be through.
        self._last_flush: asyncio.Future[None] | None = None
        #: The reader's ``PRAGMA data_version`` when the writer was last idle.
        self._version: int | None = None
        self._version_checked = False

    def _job(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Run ``fn(connection)`` on aiosqlite's worker thread (first-in first-out)."""
        db = self._db
        if db is None:
            raise StoreError("sqlite store is not open")
        job: asyncio.Future[T] = asyncio.ensure_future(
            db._execute(lambda: fn(db._conn))  # type: ignore[no-untyped-call]
        )
        job.add_done_callback(_retrieve)
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
        self._identity = file_identity(self.path)
        if self.path == ":memory:":  # one private database: the writer shares the connection
            self._writer = ThreadLink(self._on_reply, self._on_lost, self._in_thread)
        else:
            self._reader = sqlite3.connect(
                f"file:{Path(self.path).absolute()}?mode=ro", uri=True, timeout=self.timeout,
                isolation_level=None,
            )
            # Read pages through a memory map: a lookup then costs no read() system call.
            self._reader.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
            self._writer = self._process_link()
        await self._writer.start()

    def _process_link(self) -> ProcessLink:
        return ProcessLink(self._on_reply, self._on_lost, str(Path(self.path).absolute()),
                           self.synchronous, int(self.timeout * 1000), self.timeout,
                           self._identity)

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        # A new file gets 1 KiB pages: rows are small and land on random pages (keys are
        # hashes), so every changed row costs a page in the WAL, its fsync and its checkpoint.
        # An existing file keeps the page size it was made with.
        conn.execute(f"PRAGMA page_size={_PAGE_SIZE}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
        conn.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
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
        if self._restarting is not None:
            self._restarting.cancel()
            with contextlib.suppress(BaseException):
                await self._restarting
        if self._writer is not None:
            writer, self._writer = self._writer, None
            await writer.close()
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
    ) -> Durable | None:
        if self._db is None:
            raise StoreError("sqlite store is not open")
        flush = self._last_flush
        if flush is not None and not flush.done():
            # A FLUSHDB answered (a timeout) before its job ran: this batch must come after it,
            # and the writer would not wait for the thread. Waiting ends with the store timeout.
            await asyncio.wait([flush])
        if keys:
            self._cache_fresh()
        rows, missing, uncommitted = self._remembered(keys)
        cache = self._cache
        overlay = self._overlay
        if missing:
            reader = self._reader
            if reader is not None:
                loaded = _load(reader, missing)
            else:  # in memory: the one connection is the worker thread's
                epoch = self._epoch
                loaded = await self._in_thread(lambda conn: _load(conn, missing))
                if epoch != self._epoch:  # a commit failed meanwhile: what it read is void
                    raise StoreError("an earlier write failed; nothing of this batch was done")
            # Nothing in flight changes these keys (they are not in the overlay): what was
            # read is their committed state.
            if not self._flushing:
                for key in missing:
                    cache.put(key, loaded.get(key))
            rows.update(loaded)
        changes = compute(rows, now_ms())
        sent = self._sent
        if not changes:
            if not uncommitted or not sent:
                return None  # it read committed rows only
            # It read uncommitted changes: it is done when they are.
            waiter = _Sent(sent[-1].seq, changes)
            sent.append(waiter)
            return waiter.durable
        writer = self._writer
        if writer is None or self._restarting is not None:
            self._check_file()
            raise StoreError("sqlite writer process is restarting")
        self._seq = seq = self._seq + 1
        upserts, deletes = split_changes(changes)
        writer.send(("w", seq, upserts, deletes))
        for key, row in changes.items():
            overlay[key] = (seq, row)
        batch = _Sent(seq, changes)
        sent.append(batch)
        return batch.durable

    def _on_reply(self, reply: Any) -> None:
        """A reply from the writer: batches committed up to a seq, or a failed commit."""
        if reply[0] == "ok":
            _, seq, outside = reply
            if outside:
                self._cache.clear()  # someone else committed: what we remember may be stale
            self._committed(seq)
        else:
            _, seq, kind, message = reply
            self._failed(_writer_error(self.backend, kind, message))
            if self._writer is not None:
                self._writer.send(("reset",))

    def _committed(self, seq: int) -> None:
        sent = self._sent
        overlay = self._overlay
        cache = self._cache
        rows = 0
        done = []
        try:
            while sent and sent[0].seq <= seq:
                batch = sent.popleft()
                done.append(batch)
                rows += len(batch.changes)
                for key, row in batch.changes.items():
                    cache.put(key, row)
            if sent:  # keep the changes of batches still in flight
                for batch in done:
                    for key in batch.changes:
                        hit = overlay.get(key)
                        if hit is not None and hit[0] == batch.seq:
                            del overlay[key]
            else:
                overlay.clear()  # every change sent is committed
                self._note_own_commits()
            self._checkpointer.written(rows)
        finally:  # they are committed: answer them whatever the bookkeeping above did
            for batch in done:
                batch.durable.resolve()

    def _note_own_commits(self) -> None:
        """Take the reader's ``data_version`` after our own commits as the new baseline (an
        outside commit in the moment between theirs and this is caught by the writer, at its
        next transaction)."""
        self._version = self._reader_version()

    def _reader_version(self) -> int | None:
        """The reader's ``PRAGMA data_version``; None, with the cache emptied, if it cannot be
        read (the reads that follow then go to the file and answer its error)."""
        if self._reader is None:
            return None
        try:
            version: int = self._reader.execute("PRAGMA data_version").fetchone()[0]
        except sqlite3.Error:
            self._cache.clear()
            return None
        return version

    def _failed(self, error: BaseException) -> None:
        """Every batch not yet committed fails: the later ones were computed on top of the
        first. Forget what they changed, and what the cache holds (the outcome is unknown)."""
        failed, self._sent = self._sent, deque()
        self._epoch += 1
        self._overlay.clear()
        self._cache.clear()
        for batch in failed:
            batch.durable.resolve(error)

    def _on_lost(self) -> None:
        """The writer process died: fail what it had not acknowledged, start a new one."""
        self._failed(StoreError("sqlite writer process exited; restarting it"))
        if self._writer is not None and self._restarting is None:
            self._restarting = asyncio.get_running_loop().create_task(self._restart())

    async def _restart(self) -> None:
        dead = self._writer
        try:
            if dead is not None:  # its output is closed: release its pipes and process
                with contextlib.suppress(Exception):
                    await dead.close()
            while self._writer is not None:
                link = self._process_link()
                try:
                    self._check_file()  # a new writer must not adopt a file put in its place
                    await link.start()
                    if not link.running:
                        raise StoreError("sqlite writer process exited as it started")
                except Exception as exc:
                    reason = exc.message if isinstance(exc, StoreError) else type(exc).__name__
                    log.error("sqlite writer process could not start: %s", reason)
                    await asyncio.sleep(self.timeout)  # try again later; writes fail meanwhile
                    continue
                self._writer = link
                return
        finally:
            self._restarting = None

    def _cache_fresh(self) -> None:
        """Once per turn of the loop while nothing is in flight, look for commits made by
        another process (a row tampered with, a repair by hand): ``PRAGMA data_version`` on the
        reader changes with any other connection's commit, and ours are all acknowledged. While
        batches are in flight the writer looks, under its lock, at each commit."""
        if self._version_checked or self._reader is None or self._sent:
            return
        self._version_checked = True
        asyncio.get_running_loop().call_soon(self._version_unchecked)
        version = self._reader_version()
        if version != self._version:  # from None too: what was cached since may be stale
            self._cache.clear()
            self._version = version

    def _version_unchecked(self) -> None:
        self._version_checked = False

    def _abandon(self, error: StoreError) -> None:
        self._failed(error)

    def _cached(self, keys: tuple[Key, ...]) -> dict[Key, Row] | None:
        if self._flushing:
            return None
        self._cache_fresh()
        rows, missing, uncommitted = self._remembered(keys)
        return None if missing or uncommitted else rows

    def _remembered(self, keys: Iterable[Key]) -> tuple[dict[Key, Row], list[Key], bool]:
        """The rows of ``keys`` known in memory, the overlay's uncommitted changes first, then
        the cache: those rows (a key known to be absent has none), the keys known nowhere,
        and whether any came from the overlay."""
        overlay = self._overlay
        cache = self._cache
        rows: dict[Key, Row] = {}
        missing: list[Key] = []
        uncommitted = False
        for key in keys:
            hit = overlay.get(key)
            if hit is not None:
                uncommitted = True
                row: Row | object | None = hit[1]
            else:
                row = cache.get(key)
                if row is MISSING:
                    missing.append(key)
                    continue
            if row is not None:
                rows[key] = row  # type: ignore[assignment]
        return rows, missing, uncommitted

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
        self._last_flush = job
        await asyncio.shield(job)

    def _flushed(self, _: object) -> None:
        # When the job is through, not when its caller stops waiting (a timeout).
        self._flushing -= 1
        self._committed_outside_writer()

    def _committed_outside_writer(self) -> None:
        """After a commit of ours on the thread's connection (a flush, a sweep that deleted
        rows): start the cache afresh. Taking the new ``data_version`` as the baseline without
        emptying it would hide a commit another process made before ours."""
        self._cache.clear()
        self._note_own_commits()

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
                "WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT ?) "
                "AND expires_at IS NOT NULL AND expires_at <= ?",
                (now, limit, now),
            )
            conn.commit()
            return cur.rowcount

        removed: int = await self._in_thread(sweep)
        if removed:  # a sweep that deleted nothing committed nothing
            self._committed_outside_writer()
        return removed

    async def _ping(self) -> None:
        """Ready: the file is ours, the writer runs and is not stuck on its oldest batch (for
        twice the store timeout), and the file reads. Read on the loop's own connection: the
        worker thread may be busy with a sweep waiting for another process's write lock, while
        reads and writes go on."""
        self._check_file()
        if self._writer is None or self._restarting is not None:
            raise StoreError("sqlite writer process is restarting")
        # Twice the timeout: a writer waiting out a busy lock answers (an error) at about one.
        stuck = 2 * self.timeout
        if self._sent and time.monotonic() - self._sent[0].sent_at > stuck:
            raise StoreError(f"sqlite writer has committed nothing for {stuck:g}s")
        reader = self._reader
        if reader is None:  # in memory: the one connection is the worker thread's
            await self._in_thread(lambda conn: conn.execute("SELECT 1").fetchone())
        else:
            reader.execute("SELECT count(*) FROM dumbkv_schema").fetchone()

    def _check_file(self) -> None:
        """Not ready once the database file was deleted or replaced under us (the writer
        refuses writes then, with the same message)."""
        if self._identity is not None and file_identity(self.path) != self._identity:
            raise StoreError(FILE_GONE)

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


def _writer_error(backend: str, kind: str, message: str) -> StoreError:
    if kind == "FileGone":  # our own message: it says what to do
        return StoreError(message)
    return backend_error(backend, kind)


def _retrieve(job: asyncio.Future[Any]) -> None:
    """Mark a worker job's outcome as seen: a caller that timed out will never look at it."""
    if not job.cancelled():
        job.exception()


