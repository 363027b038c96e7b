"""PostgreSQL backend on asyncpg: the shared engine, the path past one machine.

A batch is one round of the same idea as SQLite: its rows are read with one ``= ANY($2)``
query per database, the commands run over them in order, and every change is written in one
transaction that commits before any reply goes out.

Several DumbKV processes may share one database. A batch that writes runs in a SERIALIZABLE
transaction and reads its rows ``FOR UPDATE``: two processes that touch the same key (an
existing row, or one that both would create) cannot both commit; the loser's transaction fails
with a serialization failure and the batch is computed again on the winner's data. So INCR,
APPEND, SET NX, GETDEL and MSET stay atomic across processes without an in-process lock.

Only portable SQL is used (``ON CONFLICT`` upserts, ``bytea``, ``= ANY``, SERIALIZABLE), so the
backend also runs on PostgreSQL-wire engines such as CockroachDB or YugabyteDB.

URL: ``postgresql://user:password@host:port/dbname`` (or ``postgres://``), with the DumbKV
option ``?pool_size=N`` (default 10 connections) next to any libpq-style options asyncpg
understands.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from ..errors import StoreError
from .base import Changes, Key, KeyCount, Row, Store, now_ms, split_changes

__all__ = ["PostgresStore", "split_url"]

#: The database server's clock, in Unix milliseconds (the time of the statement, not the
#: transaction's start).
_DB_NOW_MS = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"

log = logging.getLogger("dumbkv.store")
T = TypeVar("T")

SCHEMA_VERSION = 1
_RETRIES = 20  # attempts of a batch that keeps losing serialization conflicts
_CONFLICTS = (asyncpg.SerializationError, asyncpg.DeadlockDetectedError)

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS dumbkv_schema (version INTEGER NOT NULL)",
    """CREATE TABLE IF NOT EXISTS kv (
        db INTEGER NOT NULL,
        id BYTEA NOT NULL,
        value BYTEA NOT NULL,
        expires_at BIGINT,
        PRIMARY KEY (db, id)
    )""",
    "CREATE INDEX IF NOT EXISTS kv_expires ON kv (expires_at) WHERE expires_at IS NOT NULL",
)
_SELECT = "SELECT id, value, expires_at FROM kv WHERE db = $1 AND id = ANY($2::bytea[])"
_UPSERT = (
    "INSERT INTO kv (db, id, value, expires_at) VALUES ($1, $2, $3, $4) "
    "ON CONFLICT (db, id) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at"
)
_DELETE = "DELETE FROM kv WHERE db = $1 AND id = $2"


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """Split DumbKV's own options (``pool_size``) from the DSN handed to asyncpg."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query)
    ours = {k: v for k, v in query if k == "pool_size"}
    rest = [(k, v) for k, v in query if k != "pool_size"]
    return urlunsplit(parts._replace(query=urlencode(rest))), ours


class PostgresStore(Store):
    backend = "postgres"

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        super().__init__(url, timeout=timeout)
        self.dsn, options = split_url(url)
        self.pool_size = int(options.get("pool_size", "10"))
        if self.pool_size < 1:
            raise ValueError("postgres pool_size must be at least 1")
        self._pool: asyncpg.Pool | None = None
        #: Connections being handed back to the pool (see ``_connection``).
        self._releasing: set[asyncio.Task[None]] = set()

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StoreError("postgres store is not open")
        return self._pool

    async def _open(self) -> None:
        self._pool = await asyncpg.create_pool(
            self.dsn, min_size=1, max_size=self.pool_size, timeout=self.timeout
        )
        async with self._connection() as conn:
            await _init_schema(conn)

    @contextlib.asynccontextmanager
    async def _connection(self) -> AsyncIterator[Any]:
        """A pooled connection, handed back without the caller waiting for it: work that is
        done (a batch that committed) is answered at once, never late or with an error
        because the connection's reset was slow or failed.

        If the caller leaves with an error the server did not answer (the store's timeout
        cancelling a query, a lost connection, a bug), the connection is closed instead: its
        state is unknown, and a rollback or a clean release could wait, with no limit, for a
        hung server. The server rolls back a transaction whose connection closed."""
        conn = await self.pool.acquire()
        answered = False
        try:
            yield conn
            answered = True
        except asyncpg.PostgresError:
            answered = True  # the server answered it: the connection is in a known state
            raise
        finally:
            if not answered:
                conn.terminate()
            task = asyncio.get_running_loop().create_task(self._release(conn))
            self._releasing.add(task)
            task.add_done_callback(self._releasing.discard)

    async def _release(self, conn: Any) -> None:
        pool = self._pool
        if pool is None:
            return
        try:
            await pool.release(conn, timeout=self.timeout)
        except Exception as exc:  # its reset failed or timed out: asyncpg closed it
            log.warning("postgres connection closed instead of reused: %s", type(exc).__name__)

    async def _close(self) -> None:
        if self._releasing:
            await asyncio.wait(self._releasing, timeout=self.timeout)
        if self._pool is not None:
            pool, self._pool = self._pool, None
            # Close first: a connection still held (a readiness check) is released into the
            # pool it came from, which close() is waiting for. A hung server would keep a
            # clean close waiting for ever: then the connections are just closed.
            try:
                await asyncio.wait_for(pool.close(), self.timeout)
            except TimeoutError:
                pool.terminate()

    async def _stage(
        self, keys: list[Key], compute: Callable[[dict[Key, Row], int], Changes], writes: bool
    ) -> None:
        """The whole transaction, committed before it returns: other processes may share the
        database, so a batch cannot be ordered before it commits."""
        async with self._connection() as conn:
            if not writes:
                compute(await _load(conn, keys, lock=False), now_ms())
                return

            async def batch() -> None:
                rows = await _load(conn, keys, lock=True)
                await _write(conn, compute(rows, now_ms()))

            for attempt in range(_RETRIES):
                try:
                    await _transaction(conn, batch, "serializable")
                    return
                except _CONFLICTS:
                    if attempt == _RETRIES - 1:
                        raise
                    # Another process won this key: back off a little, then compute again.
                    await asyncio.sleep(random.uniform(0, 0.002 * (attempt + 1)))

    async def _flush(self, db: int | None) -> None:
        async with self._connection() as conn:
            if db is None:
                await conn.execute("DELETE FROM kv")
            else:
                await conn.execute("DELETE FROM kv WHERE db = $1", db)

    async def _count(self, now: int) -> dict[int, KeyCount]:
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT db, count(*), count(expires_at) FROM kv "
                "WHERE expires_at IS NULL OR expires_at > $1 GROUP BY db",
                now,
            )
        return {r[0]: KeyCount(r[1], r[2]) for r in rows}

    async def _sweep(self, now: int, limit: int) -> int:
        async with self._connection() as conn:
            status: str = await conn.execute(
                # The rows are picked and locked once (a locking CTE runs once; an IN subquery
                # would run again for every row). Rows another transaction holds (a batch
                # writing them) are skipped, not waited for: the sweep never waits on a lock,
                # so it cannot deadlock with a batch, and the next sweep takes them.
                # Expired by this process's clock and by the database's: a process whose clock
                # runs ahead of the database's deletes nothing before the database's clock
                # says it expired.
                "WITH expired AS (SELECT db, id FROM kv WHERE expires_at IS NOT NULL "
                f"AND expires_at <= $1 AND expires_at <= {_DB_NOW_MS} "
                "LIMIT $2 FOR UPDATE SKIP LOCKED) "
                "DELETE FROM kv USING expired WHERE kv.db = expired.db AND kv.id = expired.id",
                now,
                limit,
            )
        return int(status.rsplit(" ", 1)[-1])  # "DELETE <n>"

    async def _size_bytes(self) -> int:
        async with self._connection() as conn:
            size: int = await conn.fetchval("SELECT pg_total_relation_size('kv')")
        return size

    async def _ping(self) -> None:
        async with self._connection() as conn:
            # The schema, not just the server: a database dropped and created again is empty.
            await conn.fetchval("SELECT version FROM dumbkv_schema LIMIT 1")


async def _init_schema(conn: Any) -> None:
    """Create or check the schema; safe when several processes start at once."""

    async def create() -> None:
        for statement in _SCHEMA:
            await conn.execute(statement)
        version = await conn.fetchval("SELECT max(version) FROM dumbkv_schema")
        if version is None:
            await conn.execute("INSERT INTO dumbkv_schema (version) VALUES ($1)", SCHEMA_VERSION)
        elif version > SCHEMA_VERSION:
            raise StoreError(
                f"database schema version {version} is newer than this DumbKV ({SCHEMA_VERSION})"
            )

    for attempt in range(5):
        try:
            await _transaction(conn, create)
            return
        except (asyncpg.UniqueViolationError, *_CONFLICTS):
            # Two processes created the same table at the same moment: look again.
            if attempt == 4:
                raise
            await asyncio.sleep(0.05 * (attempt + 1))


async def _transaction(conn: Any, body: Callable[[], Awaitable[T]],
                       isolation: str | None = None) -> T:
    """``body()`` in one transaction, committed before this returns. It is rolled back here
    only after an error the server answered (it is alive); any other way out (a cancel, a
    lost connection) leaves it to ``_connection``, which closes the connection."""
    tx = conn.transaction(isolation=isolation)
    await tx.start()
    try:
        result = await body()
    except asyncpg.PostgresError:
        await tx.rollback()
        raise
    await tx.commit()
    return result


async def _load(conn: Any, keys: list[Key], *, lock: bool) -> dict[Key, Row]:
    by_db: dict[int, list[bytes]] = {}
    for db, kid in keys:
        by_db.setdefault(db, []).append(kid)
    sql = _SELECT + (" ORDER BY id FOR UPDATE" if lock else "")
    rows: dict[Key, Row] = {}
    for db, ids in by_db.items():
        for kid, value, expires_at in await conn.fetch(sql, db, ids):
            rows[(db, kid)] = Row(value, expires_at)
    return rows


async def _write(conn: Any, changes: Changes) -> None:
    upserts, deletes = split_changes(changes)
    # In key order, as _load locks them: two processes writing the same new keys then wait
    # for each other instead of deadlocking (which PostgreSQL only breaks after a second).
    upserts.sort()
    deletes.sort()
    if deletes:
        await conn.executemany(_DELETE, deletes)
    if upserts:
        await conn.executemany(_UPSERT, upserts)
