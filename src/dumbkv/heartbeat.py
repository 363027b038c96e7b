"""The availability ledger's heartbeat: a ``beat`` record every ``--heartbeat-interval``
seconds while the process lives, or a ``resume`` after a stall.

A stall is the event loop waking up more than ``stall_limit`` after its previous wake-up: the
process was stopped (SIGSTOP) or its loop frozen, and /health went unanswered meanwhile. Only
the loop's own timer is measured: records are written in a worker thread, in the background,
so a slow disk is no stall (a beat that finds the previous write still going is skipped, and a
``resume`` that is due waits for the next write).
"""

from __future__ import annotations

import asyncio
import logging

from .config import Config
from .ledger import BEAT, RESUME, Ledger

__all__ = ["Heartbeat", "stall_limit"]

log = logging.getLogger("dumbkv")


def stall_limit(config: Config) -> float:
    """Seconds between two wake-ups of the heartbeat beyond which the time counts as down:
    three intervals, and at least 5 s (a loaded machine's hiccup is no outage; /health probes
    time out after a few seconds)."""
    return max(3 * config.heartbeat_interval, 5.0)


class Heartbeat:
    """Started once the ledger has its ``start``; stopped (and its last write awaited) before
    the ``stop`` record, so no beat lands after it."""

    def __init__(self, ledger: Ledger, interval: float, limit: float) -> None:
        self.ledger = ledger
        self.interval = interval
        #: Seconds between two wake-ups beyond which the time between was a stall.
        self.limit = limit
        self._done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self, timeout: float) -> None:
        """Stop beating; wait up to ``timeout`` for the write in progress (a hung disk)."""
        self._done.set()
        if self._task is not None:
            await asyncio.wait([self._task], timeout=timeout)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        woke = loop.time()
        resume_due = False
        writing: asyncio.Task[None] | None = None
        while True:
            try:
                await asyncio.wait_for(self._done.wait(), self.interval)
                break
            except TimeoutError:
                pass
            now = loop.time()
            resume_due = resume_due or now - woke > self.limit
            woke = now
            if writing is not None and not writing.done():
                continue  # the disk is slow: no pile-up of writes
            writing = loop.create_task(self._write(RESUME if resume_due else BEAT))
            resume_due = False
        if writing is not None:
            await writing

    async def _write(self, kind: str) -> None:
        try:
            await asyncio.to_thread(self.ledger.record, kind)
        except Exception:  # the ledger handles I/O errors; this is a bug: keep beating
            log.exception("availability ledger heartbeat failed")
