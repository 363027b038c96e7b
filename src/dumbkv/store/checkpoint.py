"""Background WAL checkpoints for the SQLite backend.

In WAL mode every commit appends the pages it changed to the ``-wal`` file, and a checkpoint
copies them back into the database file. Left to SQLite, the checkpoint runs inside the commit
that crosses the threshold: that commit, and every write waiting behind it, waits for thousands
of page writes and two fsyncs. Here a checkpoint runs on a connection of its own in a thread,
next to the writer (a ``PASSIVE`` checkpoint never blocks it), once enough rows were written
since the last one. The writer's own autocheckpoint stays on at a larger size, as a bound.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from typing import Any

__all__ = ["Checkpointer"]

log = logging.getLogger("dumbkv.store")


class Checkpointer:
    #: Rows written between two checkpoints (each row dirties about one page; a page changed
    #: several times in between is copied once).
    every_rows = 8000

    def __init__(self, path: str) -> None:
        self.path = path
        self._conn: sqlite3.Connection | None = None
        self._rows = 0
        self._running: asyncio.Future[Any] | None = None

    def written(self, rows: int) -> None:
        """Count committed rows; start a checkpoint when enough were written and none runs."""
        if self.path == ":memory:":
            return
        self._rows += rows
        if self._rows < self.every_rows or (self._running is not None and not self._running.done()):
            return
        self._rows = 0
        self._running = asyncio.get_running_loop().run_in_executor(None, self._checkpoint)
        self._running.add_done_callback(_report)

    def _checkpoint(self) -> None:
        if self._conn is None:
            self._conn = sqlite3.connect(
                self.path, timeout=0, isolation_level=None, check_same_thread=False
            )
        self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    async def close(self) -> None:
        """Wait for a running checkpoint, then close the connection."""
        if self._running is not None and not self._running.done():
            await asyncio.wait([self._running])
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _report(job: asyncio.Future[Any]) -> None:
    # A failed checkpoint loses nothing (the pages stay in the WAL); the next one retries.
    if not job.cancelled() and job.exception() is not None:
        log.warning("sqlite background checkpoint failed: %s", type(job.exception()).__name__)
