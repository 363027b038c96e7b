"""The store contract: one ABC whose public methods hold the shared logic.

Commands never talk SQL. They hand the store *operations*:

* ``KeyOp``: the rows it needs (``keys``) and a pure function ``apply(view)`` that reads and
  changes those rows through a ``View`` and returns the reply.
* ``DbOp``: a whole-database step (``FLUSHDB``, ``DBSIZE``) run as one call, after every batch
  before it has committed.

Operations are queued and take effect strictly in arrival order. Consecutive ``KeyOp``\\s run
as one batch: one query loads every row they need, the functions run in order over the loaded
rows (so a later command sees an earlier one's write: pipelines keep read-your-writes), and all
changes are written in one transaction (group commit). A backend *stages* a batch: once its
place in the order is fixed, the next batch may be staged, while the first one's commit is
still on its way (``Durable``). Replies are released only after the commit, so an acknowledged
write is durable. The slower the disk, the larger the group that shares one commit.

A read whose rows the backend holds in memory, with nothing before it that could change them,
is answered at once (``read_now``). The expiry sweep runs outside the queue: it commutes with
every command.

A backend implements the primitives ``_stage``, ``_flush``, ``_count``, ``_sweep``,
``_ping``, ``_open`` and ``_close`` (and may offer ``_cached`` and ``_abandon``); timing,
timeouts and error wrapping live here once.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, ClassVar, NamedTuple

from mypy_extensions import mypyc_attr

from ..errors import DumbKVError, ServerError, StoreError
from ..resp import Reply

__all__ = [
    "NOT_NOW",
    "DbOp",
    "Durable",
    "Key",
    "KeyCount",
    "KeyOp",
    "Op",
    "Row",
    "Store",
    "View",
    "backend_error",
    "now_ms",
    "split_changes",
]

log = logging.getLogger("dumbkv.store")

#: What ``Store.read_now`` returns when the operation has to wait for its turn.
NOT_NOW = object()

#: A row's address: (database number, key id).
Key = tuple[int, bytes]


class Row(NamedTuple):
    value: bytes
    #: Absolute expiry in Unix milliseconds, or None for no expiry.
    expires_at: int | None


class KeyCount(NamedTuple):
    keys: int
    #: How many of them have an expiry.
    expires: int


Changes = dict[Key, Row | None]  # None means delete
Done = Callable[[Reply], None]


def split_changes(
    changes: Changes,
) -> tuple[list[tuple[int, bytes, bytes, int | None]], list[tuple[int, bytes]]]:
    """A batch's changes as the rows to upsert (db, id, value, expires_at) and to delete."""
    upserts = []
    deletes = []
    for (db, kid), row in changes.items():
        if row is None:
            deletes.append((db, kid))
        else:
            upserts.append((db, kid, row.value, row.expires_at))
    return upserts, deletes


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class View:
    """The rows of one batch as the commands see them; records every change."""

    __slots__ = ("_rows", "changes", "now")

    def __init__(self, rows: dict[Key, Row], now: int) -> None:
        self._rows = rows
        self.changes: Changes = {}
        self.now = now

    def get(self, key: Key) -> Row | None:
        """The live row at ``key``; expired rows read as missing."""
        row = self._rows.get(key)
        if row is None or (row.expires_at is not None and row.expires_at <= self.now):
            return None
        return row

    def put(self, key: Key, row: Row) -> None:
        self._rows[key] = row
        self.changes[key] = row

    def delete(self, key: Key) -> bool:
        """Delete ``key``; return whether a live row was there."""
        existed = self.get(key) is not None
        if key in self._rows:
            del self._rows[key]
            self.changes[key] = None
        return existed


@dataclass(slots=True)
class KeyOp:
    """A command over individual rows. ``keys`` lists every row ``apply`` will read."""

    keys: tuple[Key, ...]
    apply: Callable[[View], Reply]
    name: str = "key"
    #: Whether ``apply`` may change rows: a backend shared by several processes locks the
    #: rows of a batch that writes.
    writes: bool = True


@dataclass(slots=True)
class DbOp:
    """A whole-database step, run alone in queue order."""

    run: Callable[[Store], Awaitable[Reply]]
    name: str = "db"


Op = KeyOp | DbOp


@mypyc_attr(allow_interpreted_subclasses=True)  # compiled (setup.py); backends need not be
class Store(ABC):
    """An async key-value store of encrypted rows, addressed by (db, key id)."""

    #: Backend name, used in INFO and metric labels.
    backend: ClassVar[str]
    #: Most operations in one batch: bounds how long one batch holds the event loop and the
    #: transaction (a pipeline of a million commands becomes many batches, in order).
    max_batch: ClassVar[int] = 1024
    #: Most batches staged but not yet durable (a backend that stages without waiting for
    #: the commit lets later batches run ahead of the disk, up to this many).
    max_inflight: ClassVar[int] = 64

    def __init__(self, url: str, *, timeout: float = 5.0) -> None:
        self.url = url
        self.timeout = timeout
        self._queue: deque[tuple[Op, Done]] = deque()
        self._runner: asyncio.Task[None] | None = None
        #: Batches staged and not yet answered, at most ``max_inflight``.
        self._inflight = 0
        #: Operations submitted whose effect is not yet decided (not staged, or not run).
        self._unapplied = 0
        self._slot_free: asyncio.Future[None] | None = None
        #: Set once ``settle`` gave up on the batches in flight (shutdown): a batch staged
        #: after that is answered with this error at once instead of waiting for its commit.
        self._abandoned: StoreError | None = None
        self._idle = asyncio.Event()
        self._idle.set()
        #: Called after every store call with (operation, seconds, ok); metrics hook.
        self.observe: Callable[[str, float, bool], None] = lambda op, seconds, ok: None

    # ----------------------------------------------------------------- lifecycle
    async def open(self) -> None:
        """Open the backend; on failure (an error, or no answer within the timeout) release
        what was opened, so no worker is left behind, and raise ``StoreError``."""
        try:
            await self._call("open", self._open())
        except BaseException:
            try:
                await self._close()
            except Exception as exc:  # the first failure is the one to report
                log.warning("%s backend: closing after a failed open: %s", self.backend,
                            type(exc).__name__)
            raise

    async def close(self) -> None:
        """Finish queued operations, then close the backend."""
        await self.drain()
        await self._close()

    async def drain(self) -> None:
        """Wait until every queued operation has run."""
        await self._idle.wait()

    def abort(self, reason: str) -> None:
        """Answer every operation not yet started with a server error; the batches already
        staged still commit and get their real replies (``settle``)."""
        self._answer_queued(StoreError(reason))

    def _answer_queued(self, error: StoreError) -> None:
        queued = list(self._queue)
        self._queue.clear()
        self._unapplied -= len(queued)
        for _, done in queued:
            done(error)

    async def settle(self, timeout: float, reason: str) -> None:
        """Wait up to ``timeout`` for the batches in flight to commit; then stop waiting for
        them and answer them with a server error (their outcome is unknown: they may land)."""
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
        except TimeoutError:
            self._abandoned = StoreError(reason)
            self._abandon(self._abandoned)
            await self._idle.wait()

    def _abandon(self, error: StoreError) -> None:
        """Resolve every ``Durable`` still pending with ``error``. A backend whose staged
        batches outlive ``_stage`` overrides it."""
        return None

    # ----------------------------------------------------------------- the queue
    def submit(self, op: Op, done: Done) -> None:
        """Queue ``op``; ``done(reply)`` is called once it has run (and committed)."""
        self._queue.append((op, done))
        self._unapplied += 1
        if self._runner is None:
            self._idle.clear()
            self._runner = asyncio.get_running_loop().create_task(self._run())

    def read_now(self, op: KeyOp) -> Reply | object:
        """Answer a read-only ``op`` at once, or return ``NOT_NOW``.

        Only when nothing is queued or being staged before it, and the backend has the
        committed rows of all its keys in memory with no change to them in flight: the read
        then sees exactly what a batch would have, without waiting for one.
        """
        if op.writes or self._unapplied:
            return NOT_NOW
        rows = self._cached(op.keys)
        if rows is None:
            return NOT_NOW
        return _apply(op, View(rows, now_ms()))

    def _cached(self, keys: tuple[Key, ...]) -> dict[Key, Row] | None:
        """The committed rows of ``keys`` if all are known in memory and none has a change in
        flight, else None. Without a cache (the default), always None."""
        return None

    async def execute(self, op: Op) -> Reply:
        """Queue ``op`` and wait for its reply (errors come back as values, not raised)."""
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        def done(reply: Reply) -> None:
            if not future.done():  # the waiter may have been cancelled (shutdown)
                future.set_result(reply)

        self.submit(op, done)
        return await future

    async def _run(self) -> None:
        # Stages batches in queue order and returns as soon as the queue is empty: a batch
        # waiting for its commit does not hold up the staging of the next one.
        queue = self._queue
        try:
            while queue:
                if not await self._room_for_a_batch() or not queue:
                    continue  # the queue was answered meanwhile (a stalled backend, shutdown)
                if isinstance(queue[0][0], DbOp):
                    await self._settle_then_run(queue.popleft())
                    continue
                items: list[tuple[Op, Done]] = []
                while queue and len(items) < self.max_batch and isinstance(queue[0][0], KeyOp):
                    items.append(queue.popleft())
                await self._start_batch(items)
        finally:
            self._runner = None
            self._settle_idle()

    async def _run_dbop(self, item: tuple[Op, Done]) -> None:
        op, done = item
        assert isinstance(op, DbOp)
        try:
            reply = await self._call(op.name, op.run(self))
        except DumbKVError as exc:
            reply = exc
        finally:
            self._unapplied -= 1
        done(reply)

    async def _settle_then_run(self, item: tuple[Op, Done]) -> None:
        """Run a whole-database step once every batch before it has committed (a batch that
        timed out too: its commit may still land, and must land first); if they do not within
        the timeout, answer it with the timeout error."""
        if not await self._inflight_below_in_time(1):
            self._unapplied -= 1
            item[1](self._timed_out())
            return
        await self._run_dbop(item)

    async def _start_batch(self, items: list[tuple[Op, Done]]) -> None:
        """Stage one batch (its rows read and its changes handed to the backend, which fixes
        its place in the order) and return; the replies go out once it is durable."""
        keys: set[Key] = set()
        writes = False
        for op, _ in items:
            keys.update(op.keys)  # type: ignore[union-attr]
            writes = writes or op.writes  # type: ignore[union-attr]
        batch = _Batch(self, items)
        self._inflight += 1
        try:
            durable = await self._call("stage", self._stage(sorted(keys), batch.compute, writes),
                                       observe=False)
        except DumbKVError as exc:
            durable = None
            batch.finish(exc)  # nothing of this batch took effect
        finally:
            self._unapplied -= len(items)
        if durable is None:
            batch.finish(None)
        else:
            batch.wait_for(durable)
            if self._abandoned is not None:  # staged after settle gave up: no waiting now
                self._abandon(self._abandoned)

    async def _room_for_a_batch(self) -> bool:
        """Wait while ``max_inflight`` batches wait for their commit. If none commits within
        the timeout (a stalled backend: they hold their slots until it answers), answer what
        is queued with the timeout error, which nothing would answer otherwise, and return
        False."""
        if await self._inflight_below_in_time(self.max_inflight):
            return True
        self._answer_queued(self._timed_out())
        return False

    def _batch_finished(self) -> None:
        self._inflight -= 1
        slot_free = self._slot_free
        if slot_free is not None and not slot_free.done():
            slot_free.set_result(None)
        self._settle_idle()

    async def _inflight_below_in_time(self, limit: int) -> bool:
        """``_inflight_below(limit)`` within the store's timeout; False if it ran out."""
        if self._inflight < limit:
            return True
        try:
            async with asyncio.timeout(self.timeout):
                await self._inflight_below(limit)
        except TimeoutError:
            return False
        return True

    async def _inflight_below(self, limit: int) -> None:
        """Wait until fewer than ``limit`` staged batches are still waiting for their commit
        (1: none, every batch before is durable or failed)."""
        while self._inflight >= limit:
            self._slot_free = asyncio.get_running_loop().create_future()
            await self._slot_free

    def _settle_idle(self) -> None:
        if self._runner is None and not self._inflight:
            self._idle.set()

    async def _call(self, operation: str, awaitable: Awaitable[Any], observe: bool = True) -> Any:
        """Run one backend call with the timeout, timing and error wrapping all share."""
        started = time.perf_counter()
        ok = False
        try:
            async with asyncio.timeout(self.timeout):
                result = await awaitable
            ok = True
            return result
        except TimeoutError:
            raise self._timed_out() from None
        except DumbKVError:
            raise
        except Exception as exc:
            raise backend_error(self.backend, type(exc).__name__, operation) from exc
        finally:
            if observe:
                self.observe(operation, time.perf_counter() - started, ok)

    def _timed_out(self) -> StoreError:
        return StoreError(f"{self.backend} backend did not answer within {self.timeout:g}s")

    # ----------------------------------------------------------------- whole-db steps
    def flush_op(self, db: int | None) -> DbOp:
        """Delete every row of ``db`` (or of every database when None)."""

        async def run(store: Store) -> Reply:
            await store._flush(db)
            return "OK"

        return DbOp(run, "flush")

    def count_op(self, db: int) -> DbOp:
        """Count the live rows of ``db``."""

        async def run(store: Store) -> Reply:
            return (await store._count(now_ms())).get(db, KeyCount(0, 0)).keys

        return DbOp(run, "count")

    def keyspace_op(self, render: Callable[[dict[int, KeyCount]], Reply]) -> DbOp:
        """Reply ``render(counts)`` with the live rows of every non-empty database."""

        async def run(store: Store) -> Reply:
            return render(await store._count(now_ms()))

        return DbOp(run, "count")

    async def sweep(self, limit: int = 1000) -> int:
        """Delete up to ``limit`` expired rows; return how many went.

        Outside the queue: it commutes with every command (an expired row already reads as
        missing, and a write of a new row or expiry replaces it), so it neither waits for the
        batches in flight nor holds up the reads and writes behind it. A backend's ``_sweep``
        must check the expiry again on the row it deletes (a write may have replaced it
        between the choice and the delete)."""
        removed: int = await self._call("sweep", self._sweep(now_ms(), limit))
        return removed

    async def size_bytes(self) -> int:
        """Bytes the store takes on disk (SQLite: file + WAL; PostgreSQL: the table)."""
        size: int = await self._call("size", self._size_bytes())
        return size

    async def ping(self) -> None:
        """Raise ``StoreError`` unless the backend answers a trivial query in time."""
        await self._call("ping", self._ping())

    # ----------------------------------------------------------------- primitives
    @abstractmethod
    async def _open(self) -> None:
        """Connect and create or migrate the schema."""

    @abstractmethod
    async def _close(self) -> None:
        """Release every connection."""

    @abstractmethod
    async def _stage(
        self, keys: list[Key], compute: Callable[[dict[Key, Row], int], Changes], writes: bool
    ) -> Durable | None:
        """Load ``keys`` (locked against other writers when ``writes``), call
        ``compute(rows, now_ms)`` and hand the returned changes to the backend.

        Return once the batch's place in the order is fixed: ``None`` if its changes are
        already committed, or a ``Durable`` the backend resolves when they are (with an error
        if they never will be). Batches staged later must see this one's changes. ``compute``
        is pure: a backend may call it again to retry a transaction."""

    @abstractmethod
    async def _flush(self, db: int | None) -> None:
        """Delete every row of ``db``, or of all databases."""

    @abstractmethod
    async def _count(self, now: int) -> dict[int, KeyCount]:
        """Live (unexpired) rows per database."""

    @abstractmethod
    async def _sweep(self, now: int, limit: int) -> int:
        """Delete up to ``limit`` rows that expired before ``now``."""

    @abstractmethod
    async def _ping(self) -> None:
        """Run a trivial query."""

    @abstractmethod
    async def _size_bytes(self) -> int:
        """Bytes on disk."""


class Durable:
    """The commit of a staged batch, as a backend reports it. Unlike an asyncio future it calls
    back at once, not on the loop's next turn: the replies go out in the turn that learns of
    the commit."""

    __slots__ = ("_callbacks", "done", "error")

    def __init__(self) -> None:
        self._callbacks: list[Callable[[BaseException | None], None]] = []
        self.done = False
        self.error: BaseException | None = None

    def add_callback(self, callback: Callable[[BaseException | None], None]) -> None:
        """Call ``callback(error)`` when it resolves, or at once if it already has."""
        if self.done:
            callback(self.error)
        else:
            self._callbacks.append(callback)

    def resolve(self, error: BaseException | None = None) -> None:
        """The batch committed (``error`` None) or never will; the first word counts."""
        if self.done:
            return
        self.done = True
        self.error = error
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback(error)


class _Batch:
    """One batch's operations and replies, from staging to the last ``done``."""

    __slots__ = ("finished", "items", "replies", "settled", "started", "store", "timer")

    def __init__(self, store: Store, items: list[tuple[Op, Done]]) -> None:
        self.store = store
        self.items = items
        self.replies: list[Reply] = []
        self.started = time.perf_counter()
        self.timer: asyncio.TimerHandle | None = None
        self.finished = False  # answered
        self.settled = False  # its commit is known (done or failed): it holds no slot

    def compute(self, rows: dict[Key, Row], now: int) -> Changes:
        # May run more than once (a backend retries a transaction that lost a conflict): only
        # the last run's replies count.
        replies = self.replies
        replies.clear()
        view = View(rows, now)
        for op, _ in self.items:
            replies.append(_apply(op, view))  # type: ignore[arg-type]
        return view.changes

    def wait_for(self, durable: Durable) -> None:
        """Answer when ``durable`` resolves, or with a timeout error when the store's timeout
        (counted from staging) runs out first."""
        left = self.store.timeout - (time.perf_counter() - self.started)
        self.timer = asyncio.get_running_loop().call_later(max(left, 0), self._timed_out)
        durable.add_callback(self.finish)

    def _timed_out(self) -> None:
        # Answered now; it keeps its slot until the backend knows the commit's outcome.
        self.timer = None
        self.answer(self.store._timed_out())

    def finish(self, error: BaseException | None) -> None:
        """Answer and release the batch: its commit is known (or it never reached one)."""
        self.answer(error)
        self.settle()

    def settle(self) -> None:
        if not self.settled:
            self.settled = True
            self.store._batch_finished()

    def answer(self, error: BaseException | None) -> None:
        """Send every reply (``error`` in place of each when the batch failed); once."""
        if self.finished:
            return
        self.finished = True
        if self.timer is not None:
            self.timer.cancel()
        store = self.store
        if error is not None:
            if not isinstance(error, DumbKVError):
                error = backend_error(store.backend, type(error).__name__)
            self.replies[:] = [error] * len(self.items)
        store.observe("batch", time.perf_counter() - self.started, error is None)
        for (_, done), reply in zip(self.items, self.replies, strict=True):
            done(reply)


def backend_error(backend: str, kind: str, operation: str = "batch") -> StoreError:
    """The server error for a backend exception of class ``kind`` (its message is not used:
    a driver's message may quote data); logged once here."""
    log.warning("%s backend error during %s: %s", backend, operation, kind)
    return StoreError(f"{backend} backend error ({kind})")


def _apply(op: KeyOp, view: View) -> Reply:
    try:
        return op.apply(view)
    except DumbKVError as exc:
        return exc
    except Exception as exc:  # a bug must not take the batch down with it
        # The traceback's frames, never the exception's message: it may quote a value.
        log.error("internal error in %s: %s\n%s", op.name, type(exc).__name__,
                  "".join(traceback.format_tb(exc.__traceback__)))
        return ServerError("internal error")
