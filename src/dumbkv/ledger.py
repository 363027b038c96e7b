"""The availability ledger: the server's own record of when it was up, kept on the data volume.

The file ``<data dir>/availability.log`` holds one record a line, appended, flushed and fsynced::

    start 1767225600000 1c3d5e7f
    beat 1767225605000 0a1b2c3d

``kind unix_ms crc32`` (the CRC-32 of ``kind unix_ms``, 8 hex digits). The kinds:

``start``        the server began to serve
``beat``         a heartbeat, every ``--heartbeat-interval`` seconds
``resume``       a heartbeat after a stall: the event loop woke up too late (SIGSTOP, a frozen
                 loop; the server's limit is three intervals, at least 5 s): the time since
                 the run's previous record is down
``stop``         a clean shutdown
``maint_start``  a maintenance window opened (``POST /maintenance/start``)
``maint_stop``   it closed
``origin``       written by compaction only: the ledger's history begins here (the first
                 ``start`` it has ever seen), so that dropping old runs changes nothing

**Up and down.** A run is up from its ``start`` to its last ``beat`` or its ``stop``; the
current run is up until now. Whatever no run covers is down: after a SIGKILL and a restart the
gap since the last heartbeat is downtime. So is the time before a ``resume``, back to the
run's previous record: the heartbeat did not run, the process was stalled and its probes went
unanswered. The running process asking is up until now only if its last record is at most
``max_gap_ms`` old (the server's stall limit); else up to that record.
Time before the ledger's first record is not counted at all (a new install is not 0 %
available). Left out of both the up-time and the time counted: the first
``startup_exclusion`` seconds after each ``start`` (30 s by default; only while the run lasts,
so a crash loop's downtime counts) and maintenance windows (``maint_start`` to
``maint_stop``, or to now while open; a restart does not close a window).
``availability = up / counted``, and None (no data) when nothing is counted.

**Crash safety.** Records are appended with one ``write`` and an ``fsync``. On open, a line
with a wrong checksum, binary junk or a truncated last line (a crash mid-write) is dropped with
a warning and the file is rewritten with the records that are left (temporary file, fsync,
atomic rename). A file that cannot be read, or holds no valid record at all, is moved aside to
``availability.log.corrupt-<unix_ms>`` and a new ledger begins, with a warning. When the data
directory cannot be written, or another process holds the ledger (``availability.log.lock``),
the ledger is kept in memory only, with a warning: the server still serves.

**Bounded size.** When the file passes ``max_lines`` lines it is compacted: rewritten as the
few records that describe the last ``keep`` (8 days: the 7-day window and a day of margin) of
runs and maintenance windows, two records a run and two a window. The availability of every
window up to 7 days is unchanged by a compaction. Should even that pass ``max_lines / 2``
records (more than about a thousand restarts in 8 days), the oldest runs and windows are
dropped too, with a warning: the availability of that crash loop is then slightly understated.

The computation (``timeline``, ``availability``, ``compact``) is pure: records and a ``now``
in, numbers out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO

__all__ = [
    "BEAT",
    "DAY_MS",
    "FILE_NAME",
    "KEEP_MS",
    "KINDS",
    "MAINT_START",
    "MAINT_STOP",
    "MAX_LINES",
    "ORIGIN",
    "RESUME",
    "START",
    "STARTUP_EXCLUSION_MS",
    "STOP",
    "WINDOWS",
    "Ledger",
    "Record",
    "Timeline",
    "availability",
    "compact",
    "decode",
    "encode",
    "steady_wall_ms",
    "timeline",
    "wall_ms",
]

log = logging.getLogger("dumbkv.ledger")

START, BEAT, RESUME, STOP = "start", "beat", "resume", "stop"
MAINT_START, MAINT_STOP = "maint_start", "maint_stop"
ORIGIN = "origin"
KINDS = frozenset({START, BEAT, RESUME, STOP, MAINT_START, MAINT_STOP, ORIGIN})

FILE_NAME = "availability.log"
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
#: The windows the server reports: label -> length in milliseconds.
WINDOWS: dict[str, int] = {"2h": 2 * HOUR_MS, "7d": 7 * DAY_MS}
STARTUP_EXCLUSION_MS = 30_000
#: Compaction keeps this much history: the longest window and a day of margin.
KEEP_MS = 8 * DAY_MS
MAX_LINES = 4096
#: A ledger file bigger than this is not a ledger (a bounded one is a few hundred KiB).
MAX_FILE_BYTES = 16 * 1024 * 1024


def wall_ms() -> int:
    """Now, in Unix milliseconds."""
    return time.time_ns() // 1_000_000


def steady_wall_ms() -> Callable[[], int]:
    """The ledger's clock: Unix milliseconds read once, then advanced by the monotonic clock.
    Records must survive restarts (so: Unix time), but a clock stepped during a run (NTP, a
    trainee's ``date -s``) must not move the run's records back or forth."""
    anchor_wall, anchor_mono = time.time_ns(), time.monotonic_ns()
    return lambda: (anchor_wall + time.monotonic_ns() - anchor_mono) // 1_000_000


# --------------------------------------------------------------------------- records
@dataclass(frozen=True, slots=True)
class Record:
    kind: str
    ms: int


def _crc(body: str) -> str:
    return f"{zlib.crc32(body.encode('ascii')):08x}"


def encode(record: Record) -> bytes:
    """One line: ``kind unix_ms crc32\\n``."""
    body = f"{record.kind} {record.ms}"
    return f"{body} {_crc(body)}\n".encode("ascii")


def decode(line: bytes) -> Record | None:
    """The record of one line (without its newline), or None when it is not a valid one."""
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        return None
    parts = text.split(" ")
    if len(parts) != 3:
        return None
    kind, ms, crc = parts
    if kind not in KINDS or not ms.isdigit() or len(ms) > 18 or _crc(f"{kind} {ms}") != crc:
        return None
    return Record(kind, int(ms))


# --------------------------------------------------------------------------- computation
Interval = tuple[int, int]


@dataclass(frozen=True)
class Run:
    start: int
    #: The last beat or the stop (``start`` when there was neither).
    end: int
    stopped: bool
    #: From a record to the ``resume`` after it: the process was stalled (SIGSTOP, a frozen
    #: event loop), not up.
    gaps: tuple[Interval, ...] = ()


@dataclass(frozen=True)
class Timeline:
    """What a list of records says: runs, maintenance windows, where history begins."""

    runs: tuple[Run, ...]
    #: (opened, closed); closed is None while the window is open.
    windows: tuple[tuple[int, int | None], ...]
    #: The first ``start`` (or the ``origin`` compaction left); None for an empty ledger.
    origin: int | None

    @property
    def maintenance_since(self) -> int | None:
        """When the open maintenance window opened; None when none is open."""
        if self.windows and self.windows[-1][1] is None:
            return self.windows[-1][0]
        return None


def timeline(records: Iterable[Record]) -> Timeline:
    """Read records in file order (not sorted: a clock stepped back must not reorder runs)."""
    runs: list[Run] = []
    windows: list[tuple[int, int | None]] = []
    origin: int | None = None
    current: tuple[int, int] | None = None  # (start, end) of the run being read
    gaps: list[Interval] = []
    opened: int | None = None
    for r in records:
        if r.kind == START:
            if current is not None:
                runs.append(Run(current[0], current[1], stopped=False, gaps=tuple(gaps)))
            current = (r.ms, r.ms)
            gaps = []
            origin = r.ms if origin is None else min(origin, r.ms)
        elif r.kind in (BEAT, RESUME):
            if current is not None:
                if r.kind == RESUME and r.ms > current[1]:
                    gaps.append((current[1], r.ms))
                current = (current[0], max(current[1], r.ms))
        elif r.kind == STOP:
            if current is not None:
                runs.append(Run(current[0], max(current[1], r.ms), stopped=True,
                                gaps=tuple(gaps)))
                current = None
        elif r.kind == MAINT_START:
            if opened is None:
                opened = r.ms
        elif r.kind == MAINT_STOP:
            if opened is not None:
                windows.append((opened, r.ms))
                opened = None
        elif r.kind == ORIGIN:
            origin = r.ms if origin is None else min(origin, r.ms)
    if current is not None:
        runs.append(Run(current[0], current[1], stopped=False, gaps=tuple(gaps)))
    if opened is not None:
        windows.append((opened, None))
    return Timeline(tuple(runs), tuple(windows), origin)


def _merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, non-overlapping, non-empty."""
    out: list[Interval] = []
    for a, b in sorted(i for i in intervals if i[1] > i[0]):
        if out and a <= out[-1][1]:
            if b > out[-1][1]:
                out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


def _subtract(base: list[Interval], cuts: list[Interval]) -> list[Interval]:
    """``base`` minus ``cuts`` (both merged)."""
    out: list[Interval] = []
    j = 0
    for a, b in base:
        while j < len(cuts) and cuts[j][1] <= a:
            j += 1
        k = j
        while a < b and k < len(cuts) and cuts[k][0] < b:
            if cuts[k][0] > a:
                out.append((a, cuts[k][0]))
            a = max(a, cuts[k][1])
            k += 1
        if a < b:
            out.append((a, b))
    return out


def _intersect(x: list[Interval], y: list[Interval]) -> list[Interval]:
    """``x`` and ``y`` (both merged)."""
    out: list[Interval] = []
    i = j = 0
    while i < len(x) and j < len(y):
        a, b = max(x[i][0], y[j][0]), min(x[i][1], y[j][1])
        if a < b:
            out.append((a, b))
        if x[i][1] < y[j][1]:
            i += 1
        else:
            j += 1
    return out


def _length(intervals: Iterable[Interval]) -> int:
    return sum(b - a for a, b in intervals)


def availability(records: Sequence[Record] | Timeline, now_ms: int, window_ms: int, *,
                 startup_ms: int = STARTUP_EXCLUSION_MS, running: bool = True,
                 max_gap_ms: int | None = None) -> float | None:
    """Up-time over the ``window_ms`` ending at ``now_ms``, as a ratio 0..1; None when nothing
    in the window is counted (a new install's first seconds, a maintenance window covering it
    all): no data, which is neither up nor down.

    ``running``: the last run, when it has no ``stop``, is the process asking, so it is up until
    now (unless its last record is more than ``max_gap_ms`` old: a stall that just ended, whose
    ``resume`` is not written yet). Otherwise (reading the ledger of a stopped server) runs end
    at their last record. A run's stalls (before each ``resume``) are down.
    """
    tl = records if isinstance(records, Timeline) else timeline(records)
    if tl.origin is None:
        return None
    lo, hi = max(now_ms - window_ms, tl.origin), now_ms
    if hi <= lo:
        return None
    lives: list[Interval] = []
    gaps: list[Interval] = []
    for index, run in enumerate(tl.runs):
        end = run.end
        current = index == len(tl.runs) - 1 and running and not run.stopped
        if current and (max_gap_ms is None or now_ms - run.end <= max_gap_ms):
            end = now_ms
        lives.append((run.start, end))
        gaps += run.gaps
    # A run's start-up is left out only while it lasts: the downtime after a run that ended
    # within its first seconds (a crash loop) is counted.
    excluded = _merge([(start, min(start + startup_ms, end)) for start, end in lives]
                      + [(a, now_ms if b is None else b) for a, b in tl.windows])
    counted = _subtract([(lo, hi)], excluded)
    total = _length(counted)
    if total <= 0:
        return None
    up = _subtract(_merge(lives), _merge(gaps))
    return min(1.0, _length(_intersect(up, counted)) / total)


def _run_cost(run: Run) -> int:
    return (1 if run.end == run.start and not run.stopped else 2) + 2 * len(run.gaps)


def _window_cost(window: tuple[int, int | None]) -> int:
    return 1 if window[1] is None else 2


def compact(records: Sequence[Record], now_ms: int, keep_ms: int = KEEP_MS,
            limit: int | None = None) -> tuple[list[Record], int]:
    """The few records that describe the same history from ``now_ms - keep_ms`` on: ``origin``,
    then ``start``, a ``beat`` and a ``resume`` around each stall, and the last ``beat`` (or
    ``stop``) for each run, then ``maint_start`` (+ ``maint_stop``) for each window. Runs and
    windows that ended before the horizon go; an open window and the current run (the last,
    unless stopped) stay, whatever their age. With
    ``limit``, the oldest runs and windows also go until at most ``limit`` records are left.
    Returns (records, how many runs and windows the limit dropped)."""
    tl = timeline(records)
    horizon = now_ms - keep_ms
    last = len(tl.runs) - 1
    # The last run, unless stopped, is the current one (up until now): it always stays. Stalls
    # that ended before the horizon go (no window reaches back to them).
    runs = [replace(r, gaps=tuple(g for g in r.gaps if g[1] >= horizon))
            for i, r in enumerate(tl.runs)
            if max(r.start, r.end) >= horizon or (i == last and not r.stopped)]
    windows = [w for w in tl.windows if w[1] is None or max(w[0], w[1]) >= horizon]
    dropped = 0
    if limit is not None:
        size = 1 + sum(map(_run_cost, runs)) + sum(map(_window_cost, windows))
        # The oldest go first, runs and closed windows alike; the current run (the last) and an
        # open window stay.
        candidates = sorted([(r.start, 0, i) for i, r in enumerate(runs[:-1])]
                            + [(w[0], 1, i) for i, w in enumerate(windows) if w[1] is not None])
        gone: set[tuple[int, int]] = set()
        for _, which, i in candidates:
            if size <= limit:
                break
            size -= _run_cost(runs[i]) if which == 0 else _window_cost(windows[i])
            gone.add((which, i))
        runs = [r for i, r in enumerate(runs) if (0, i) not in gone]
        windows = [w for i, w in enumerate(windows) if (1, i) not in gone]
        dropped = len(gone)
    out: list[Record] = []
    if tl.origin is not None:
        out.append(Record(ORIGIN, tl.origin))
    for run in runs:
        out.append(Record(START, run.start))
        for a, b in run.gaps:
            out += [Record(BEAT, a), Record(RESUME, b)]
        if run.stopped:
            out.append(Record(STOP, run.end))
        elif run.end != (run.gaps[-1][1] if run.gaps else run.start):
            out.append(Record(BEAT, run.end))
    for opened, closed in windows:
        out.append(Record(MAINT_START, opened))
        if closed is not None:
            out.append(Record(MAINT_STOP, closed))
    return out, dropped


# --------------------------------------------------------------------------- the file
class Ledger:
    """The ledger file of one data directory, and its records in memory. Thread-safe: the
    server appends from a worker thread (``asyncio.to_thread``) so an fsync never blocks the
    event loop."""

    def __init__(self, directory: str | os.PathLike[str], *,
                 clock: Callable[[], int] | None = None,
                 startup_ms: int = STARTUP_EXCLUSION_MS,
                 max_lines: int = MAX_LINES, keep_ms: int = KEEP_MS,
                 max_gap_ms: int | None = None) -> None:
        if max_lines < 16:
            raise ValueError("max_lines must be at least 16")
        self.directory = Path(directory)
        self.path = self.directory / FILE_NAME
        #: Unix milliseconds; by default steady within this process (``steady_wall_ms``).
        self.clock = clock if clock is not None else steady_wall_ms()
        self.startup_ms = startup_ms
        self.max_lines = max_lines
        self.keep_ms = keep_ms
        #: The running process is up until now only while its last record is at most this
        #: old (else it was stalled since; its ``resume`` comes with the next heartbeat).
        #: None: always up until now.
        self.max_gap_ms = max_gap_ms
        #: False when the ledger lives in memory only (directory not writable, or locked).
        self.persistent = False
        self._records: list[Record] = []
        #: What readers see, replaced (never changed) under the lock: the event loop reads it
        #: without waiting for a worker thread's fsync.
        self._view: tuple[Record, ...] = ()
        self._lines = 0  # lines in the file
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._lock_file: IO[bytes] | None = None
        self._rewrite = False  # the file may end with a partial line: rewrite, not append
        self._failing = False
        self._opened = False

    # ----------------------------------------------------------------- open / close
    def open(self) -> Ledger:
        """Read the ledger, repairing or moving aside what is broken; never raises for a bad
        file or directory (the ledger then lives in memory, with a warning)."""
        with self._lock:
            if self._opened:
                return self
            self._opened = True
            try:
                self.directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                log.warning("availability ledger: cannot create %s (%s); keeping it in memory "
                            "only, downtime before this start is unknown", self.directory,
                            exc.strerror or exc)
                return self
            if not self._take_lock():
                return self
            self._records = self._read()
            self._view = tuple(self._records)
            try:
                if self._rewrite or not self.path.exists():
                    self._write_all(self._records)
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            except OSError as exc:
                log.warning("availability ledger: cannot write %s (%s); keeping it in memory "
                            "only", self.path, exc.strerror or exc)
                self._release_lock()
                return self
            self.persistent = True
            if len(self._records) > self.max_lines:
                self._compact(self.clock())
        return self

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._fd)
                self._fd = None
            self._release_lock()
            self.persistent = False

    def __enter__(self) -> Ledger:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _take_lock(self) -> bool:
        """One process per ledger: an exclusive lock on ``availability.log.lock``."""
        lock_path = self.directory / (FILE_NAME + ".lock")
        try:
            lock_file = open(lock_path, "ab")  # noqa: SIM115 (held until close())
        except OSError as exc:
            log.warning("availability ledger: cannot open %s (%s); keeping it in memory only",
                        lock_path, exc.strerror or exc)
            return False
        if sys.platform != "win32":
            import fcntl

            try:
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                lock_file.close()
                log.warning("availability ledger: %s is in use by another process; this "
                            "process keeps its availability in memory only", self.path)
                return False
        self._lock_file = lock_file
        return True

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # closing the file releases the lock
            self._lock_file = None

    def _move_aside(self, why: str) -> None:
        aside = self.path.with_name(f"{FILE_NAME}.corrupt-{wall_ms()}")
        try:
            os.replace(self.path, aside)
        except OSError as exc:
            log.warning("availability ledger: %s is %s and cannot be moved aside (%s); "
                        "starting a new ledger over it", self.path, why, exc.strerror or exc)
        else:
            log.warning("availability ledger: %s is %s; moved it to %s and started a new "
                        "ledger (downtime before this start is unknown)", self.path, why,
                        aside.name)
        self._rewrite = True

    def _read(self) -> list[Record]:
        """The valid records of the file; sets ``_rewrite`` when the file must be rewritten."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            return []
        except OSError as exc:
            self._move_aside(f"unreadable ({exc.strerror or exc})")
            return []
        if size > MAX_FILE_BYTES:
            self._move_aside(f"{size} bytes, too big to be a ledger")
            return []
        try:
            with open(self.path, "rb") as f:
                data = f.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            self._move_aside(f"unreadable ({exc.strerror or exc})")
            return []
        lines = data.split(b"\n")
        partial = lines.pop()  # b"" when the file ends with a newline
        records = [r for r in map(decode, lines) if r is not None]
        bad = len(lines) - len(records)
        if not records and (bad or partial):
            self._move_aside("corrupt (no valid record)")
            return []
        if bad or partial:
            what = []
            if bad:
                what.append(f"{bad} corrupt line{'s' if bad != 1 else ''}")
            if partial:
                what.append("a truncated last line")
            log.warning("availability ledger: dropped %s from %s; kept %d valid records",
                        " and ".join(what), self.path, len(records))
            self._rewrite = True
        self._lines = len(records)
        return records

    def _write_all(self, records: Sequence[Record]) -> None:
        """Replace the file by ``records``: a temporary file, fsync, atomic rename, fsync of
        the directory. Reopens the append descriptor."""
        tmp = self.path.with_name(FILE_NAME + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, b"".join(map(encode, records)))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        self._fsync_directory()
        if self._fd is not None:
            os.close(self._fd)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
        self._lines = len(records)
        self._rewrite = False

    def _fsync_directory(self) -> None:
        if sys.platform == "win32":
            return
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    # ----------------------------------------------------------------- appending
    def record(self, kind: str) -> Record:
        """Append one record stamped now (flushed and fsynced). A failing disk does not raise:
        the record is kept in memory and the failure logged once until the disk recovers."""
        if kind not in KINDS or kind == ORIGIN:
            raise ValueError(f"not a record kind: {kind!r}")
        with self._lock:
            return self._append(kind)

    def _append(self, kind: str) -> Record:
        rec = Record(kind, self.clock())
        self._records.append(rec)
        self._view = (*self._view, rec)
        if self._fd is None:
            if len(self._records) > self.max_lines:
                self._compact(rec.ms)
            return rec
        try:
            if self._rewrite:
                self._write_all(self._records)
            else:
                line = encode(rec)
                if os.write(self._fd, line) != len(line):
                    raise OSError("short write")
                os.fsync(self._fd)
                self._lines += 1
        except OSError as exc:
            self._rewrite = True  # the file may now end with part of a line
            if not self._failing:
                log.warning("availability ledger: cannot write %s (%s); records are kept in "
                            "memory until it can", self.path, exc.strerror or exc)
            self._failing = True
            return rec
        if self._failing:
            log.info("availability ledger: %s is writable again", self.path)
            self._failing = False
        if len(self._records) > self.max_lines:
            self._compact(rec.ms)
        return rec

    def _compact(self, now_ms: int) -> None:
        before = self._lines
        records, dropped = compact(self._records, now_ms, self.keep_ms, self.max_lines // 2)
        if dropped:
            log.warning("availability ledger: more runs and maintenance windows in %d days "
                        "than %d lines hold; dropped the %d oldest", self.keep_ms // DAY_MS,
                        self.max_lines, dropped)
        self._records = records
        self._view = tuple(records)
        if self._fd is None:
            return
        try:
            self._write_all(records)
        except OSError as exc:
            self._rewrite = True
            log.warning("availability ledger: compaction of %s failed (%s); will retry",
                        self.path, exc.strerror or exc)
            return
        log.info("availability ledger: compacted %s from %d to %d lines", self.path, before,
                 len(records))

    def begin_maintenance(self) -> bool:
        """Open a maintenance window; False (and nothing written) when one is open already."""
        with self._lock:
            if timeline(self._records).maintenance_since is not None:
                return False
            self._append(MAINT_START)
            return True

    def end_maintenance(self) -> bool:
        """Close the open maintenance window; False (and nothing written) when none is open."""
        with self._lock:
            if timeline(self._records).maintenance_since is None:
                return False
            self._append(MAINT_STOP)
            return True

    # ----------------------------------------------------------------- reading
    @property
    def records(self) -> list[Record]:
        """A copy of the records (after compaction: the compacted ones)."""
        return list(self._view)

    @property
    def lines(self) -> int:
        """Lines in the file now."""
        with self._lock:
            return self._lines

    def timeline(self) -> Timeline:
        return timeline(self._view)

    @property
    def maintenance_since(self) -> int | None:
        return self.timeline().maintenance_since

    @property
    def maintenance(self) -> bool:
        return self.maintenance_since is not None

    def availability(self, window_ms: int, now_ms: int | None = None) -> float | None:
        """The availability over ``window_ms`` ending now (this process is the current run)."""
        now = self.clock() if now_ms is None else now_ms
        return availability(self.timeline(), now, window_ms, startup_ms=self.startup_ms,
                            max_gap_ms=self.max_gap_ms)

    def report(self, now_ms: int | None = None) -> dict[str, float | int | bool | None]:
        """What ``GET /availability`` answers."""
        now = self.clock() if now_ms is None else now_ms
        tl = self.timeline()
        out: dict[str, float | int | bool | None] = {
            label: availability(tl, now, ms, startup_ms=self.startup_ms,
                                max_gap_ms=self.max_gap_ms)
            for label, ms in WINDOWS.items()
        }
        out.update({
            "maintenance": tl.maintenance_since is not None,
            "maintenance_since": tl.maintenance_since,
            "since": tl.origin,
            "now": now,
            "startup_exclusion_seconds": self.startup_ms / 1000,
            "persistent": self.persistent,
        })
        return out
