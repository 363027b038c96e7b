"""The availability ledger: the pure computation on hand-made records, the file (corruption,
compaction) in-process with a fake clock, and real server processes over real HTTP: SIGKILL and
restart, startup exclusion, maintenance windows, the admin token, ``dumbkv maintenance``.

The ledger does not depend on the store, so every test that starts a server runs on SQLite only.
Nothing sleeps to synchronise: waits are bounded polls of something observable (the ledger file,
an HTTP answer). Expected figures are computed here from the recorded timestamps by plain
arithmetic, independently of ``dumbkv.ledger``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import ServerProcess, environ_without_settings, poll_until, sqlite_url
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from dumbkv.config import Config, add_arguments, from_args
from dumbkv.heartbeat import Heartbeat
from dumbkv.ledger import (
    DAY_MS,
    KEEP_MS,
    Ledger,
    Record,
    availability,
    compact,
    decode,
    encode,
    timeline,
)

Factory = type[ServerProcess]
T = TypeVar("T")

S = 1000  # one second in ms
MIN = 60 * S
HOUR = 60 * MIN
H2, D7 = 2 * HOUR, 7 * DAY_MS
HTTP_TIMEOUT = 10.0
sqlite_only = pytest.mark.backends("sqlite")

# Without a proxy, whatever the environment says: every request goes to 127.0.0.1.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def R(kind: str, ms: int) -> Record:
    return Record(kind, ms)


# =========================================================================== helpers
def http(method: str, url: str, token: str | None = None) -> tuple[int, dict[str, Any]]:
    """One request; (status, JSON body), for error statuses too."""
    request = urllib.request.Request(url, method=method,
                                     data=b"" if method == "POST" else None)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with _OPENER.open(request, timeout=HTTP_TIMEOUT) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        with contextlib.closing(exc):
            status, body = exc.code, exc.read()
    return status, json.loads(body)


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 20.0) -> T:
    return poll_until(what, probe, timeout, 0.02)


def line(kind: str, ms: int) -> bytes:
    """A ledger line written by hand, to the documented format."""
    body = f"{kind} {ms}"
    return f"{body} {zlib.crc32(body.encode()):08x}\n".encode()


def read_ledger(data_dir: Path) -> list[tuple[str, int]]:
    """Every record of ``data_dir``'s ledger; each line must be valid and complete."""
    data = (data_dir / "availability.log").read_bytes()
    assert data == b"" or data.endswith(b"\n"), data[-80:]
    out = []
    for raw in data.splitlines():
        kind, ms, crc = raw.decode("ascii").split(" ")
        assert f"{zlib.crc32(f'{kind} {ms}'.encode()):08x}" == crc, raw
        out.append((kind, int(ms)))
    return out


def records_of(data_dir: Path) -> list[Record]:
    return [Record(kind, ms) for kind, ms in read_ledger(data_dir)]


def scrape_availability(server: ServerProcess) -> dict[str, float]:
    with _OPENER.open(server.admin_url + "/metrics", timeout=HTTP_TIMEOUT) as response:
        text = response.read().decode()
    return {s.labels["window"]: s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples if s.name == "dumbkv_availability_ratio"}


def starts(records: list[tuple[str, int]]) -> list[int]:
    return [ms for kind, ms in records if kind == "start"]


class FakeClock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


@pytest.fixture
def ledger_log() -> Iterator[list[str]]:
    """The ``dumbkv.ledger`` logger's messages (whatever handlers other tests installed)."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(f"{record.levelname} {record.getMessage()}")

    logger = logging.getLogger("dumbkv.ledger")
    handler, level = Collect(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = environ_without_settings()
    return subprocess.run([sys.executable, "-m", "dumbkv", *args], capture_output=True,
                          text=True, timeout=30, env={**base, **(env or {})})


# =========================================================================== record format
def test_records_round_trip_and_damaged_lines_are_rejected() -> None:
    for kind in ("start", "beat", "resume", "stop", "maint_start", "maint_stop", "origin"):
        rec = Record(kind, 1_767_225_600_123)
        data = encode(rec)
        assert data == line(kind, 1_767_225_600_123)
        assert decode(data[:-1]) == rec
    good = line("beat", 1_767_225_600_123)[:-1]
    assert decode(good.replace(b"beat", b"stop")) is None       # checksum no longer matches
    assert decode(good[:-1] + b"0" if good[-1:] != b"0" else good[:-1] + b"1") is None
    assert decode(good[:20]) is None                             # truncated
    assert decode(good + b" extra") is None
    assert decode(line("frobnicate", 5)[:-1]) is None            # unknown kind
    assert decode(b"\x00\xff\xfe junk") is None
    assert decode(b"") is None
    assert decode(line("beat", 5)[:-1].replace(b"5", b"-5", 1)) is None


# =========================================================================== computation
def test_empty_ledger_has_no_data() -> None:
    """Nothing counted is no data (None), neither up (1.0) nor down."""
    assert availability([], 10 * HOUR, H2) is None
    assert availability([], 10 * HOUR, D7) is None
    assert timeline([]).origin is None


def test_startup_exclusion() -> None:
    t0 = 100 * DAY_MS
    # During the first 30 s nothing is counted: no data, whatever happens.
    assert availability([R("start", t0)], t0 + 20 * S, H2) is None
    # A run that died 10 s after its start: all of its life was startup. Counted: the 30 s
    # after the exclusion, all down.
    crashed = [R("start", t0), R("beat", t0 + 10 * S)]
    assert availability(crashed, t0 + 60 * S, H2, running=False) == 0.0
    # Without the exclusion the same run would have been up 10 s of 60.
    assert availability(crashed, t0 + 60 * S, H2, running=False, startup_ms=0) == 10 / 60
    # Up-time inside the exclusion is left out of the numerator as well as the denominator:
    # up 100 s after a 30 s exclusion, then down 70 s (a crash, the ledger read later).
    run = [R("start", t0), R("beat", t0 + 130 * S)]
    assert availability(run, t0 + 200 * S, H2, running=False) == 100 / 170


def test_a_crash_loop_is_down_between_its_runs() -> None:
    """Runs that die within their start-up: only their own life is left out, not the downtime
    after it (Kubernetes' first restart back-offs are 10 s, 20 s, ...)."""
    t0 = 100 * DAY_MS
    records = []
    for i in range(200):  # up 10 s, then down 15 s, over and over
        records += [R("start", t0 + i * 25 * S), R("beat", t0 + i * 25 * S + 10 * S)]
    now = t0 + 200 * 25 * S
    # Every up second is inside a start-up: nothing up is counted, the 15 s gaps are.
    assert availability(records, now, H2, running=False) == 0.0
    assert availability(records, now, H2, running=False, startup_ms=0) == 10 / 25


def test_crash_gap_is_downtime_and_the_current_run_is_up_until_now() -> None:
    t0 = 100 * DAY_MS
    records = [R("start", t0), R("beat", t0 + 500 * S), R("beat", t0 + 1000 * S),
               R("start", t0 + 1100 * S)]
    now = t0 + 2000 * S
    counted = 2000 - 30 - 30            # both startup exclusions out
    up = (1000 - 30) + (2000 - 1130)    # first run to its last beat; the current run to now
    assert availability(records, now, H2) == up / counted
    # Read by a process that is not the current run (running=False), the last run ends at its
    # last record: here its start, so it had no start-up to leave out and everything after
    # 1100 s is down.
    assert availability(records, now, H2, running=False) == (1000 - 30) / (2000 - 30)
    # A clean stop is downtime too until the next start (only maintenance is excused).
    stopped = [R("start", t0), R("stop", t0 + 1000 * S), R("start", t0 + 1100 * S)]
    assert availability(stopped, now, H2) == up / counted


def test_beats_after_a_stop_or_before_any_start_do_not_make_up_time() -> None:
    t0 = 100 * DAY_MS
    records = [R("beat", t0 - 500 * S), R("start", t0), R("stop", t0 + 100 * S),
               R("beat", t0 + 900 * S), R("start", t0 + 1000 * S)]
    tl = timeline(records)
    assert tl.origin == t0
    assert [(r.start, r.end, r.stopped) for r in tl.runs] == [
        (t0, t0 + 100 * S, True), (t0 + 1000 * S, t0 + 1000 * S, False)]
    now = t0 + 1100 * S
    assert availability(records, now, H2) == ((100 - 30) + (1100 - 1030)) / (1100 - 60)


def test_maintenance_windows_are_excluded_and_survive_a_restart() -> None:
    t0 = 100 * DAY_MS
    # Up from 0; maintenance opens at 500 s; the server dies at 600 s (last beat), comes back at
    # 900 s, and the window closes at 1000 s. The crash is inside the window: excused.
    records = [R("start", t0), R("beat", t0 + 500 * S), R("maint_start", t0 + 500 * S),
               R("beat", t0 + 600 * S), R("start", t0 + 900 * S),
               R("maint_stop", t0 + 1000 * S)]
    now = t0 + 2000 * S
    assert availability(records, now, H2) == 1.0
    # Without the window, the 300 s gap would count.
    plain = [r for r in records if not r.kind.startswith("maint_")]
    assert availability(plain, now, H2) == (2000 - 60 - 300) / (2000 - 60)
    # A restart does not close an open window: still open, until now.
    still_open = records[:-1]
    tl = timeline(still_open)
    assert tl.maintenance_since == t0 + 500 * S
    assert tl.windows == ((t0 + 500 * S, None),)
    assert availability(still_open, now, H2) == 1.0
    # A second maint_start while open and a maint_stop while closed change nothing.
    noisy = [*records[:3], R("maint_start", t0 + 550 * S), *records[3:],
             R("maint_stop", t0 + 1500 * S)]
    assert timeline(noisy).windows == ((t0 + 500 * S, t0 + 1000 * S),)
    # Downtime outside the window still counts: crash at 1200 s, back at 1400 s.
    later = [*records, R("beat", t0 + 1200 * S), R("start", t0 + 1400 * S)]
    counted = 2000 - 30 - 500 - 30  # start exclusion, the window (500..1000), second restart
    assert (t0 + 900 * S) + 30 * S < t0 + 1000 * S  # the 900 s restart's exclusion is inside
    assert availability(later, now, H2) == (counted - 200) / counted


def test_maintenance_over_the_whole_window_is_no_data() -> None:
    """A window left open for hours (the pod out of its Service all along) is not reported as
    100 % available: nothing is counted, so there is no figure."""
    t0 = 100 * DAY_MS
    records = [R("start", t0), R("maint_start", t0 + 10 * S)]
    assert availability(records, t0 + 5 * HOUR, H2, running=False) is None


def test_window_boundaries() -> None:
    now = 100 * DAY_MS
    records = [R("start", now - 10 * HOUR), R("beat", now - 3 * HOUR),
               R("start", now - 1 * HOUR)]
    # 2 h: down from now-2h to now-1h, then the exclusion, then up.
    assert availability(records, now, H2) == (HOUR - 30 * S) / (H2 - 30 * S)
    # 7 d: counted only from the first start (10 h ago), not from 7 days ago.
    up = (7 * HOUR - 30 * S) + (HOUR - 30 * S)
    assert availability(records, now, D7) == up / (10 * HOUR - 60 * S)
    # An outage that ended exactly where the window begins does not count in it.
    assert availability(records, now - HOUR + H2, H2) == 1.0
    assert availability(records, now - HOUR + H2 - 1, H2) == \
        (H2 - 30 * S - 1) / (H2 - 30 * S)
    # An outage that began exactly where the window ends does not count either; one
    # millisecond later it does.
    crashed = records[:2]
    assert availability(crashed, now - 3 * HOUR, H2, running=False) == 1.0
    assert availability(crashed, now - 3 * HOUR + 1, H2, running=False) == (H2 - 1) / H2


def test_time_before_the_first_start_is_not_counted() -> None:
    now = 100 * DAY_MS
    records = [R("start", now - HOUR), R("beat", now - 30 * MIN)]
    # A new install one hour old with no outage: 1.0 over 7 days, not 1/168.
    assert availability(records, now, D7) == 1.0
    # And with an outage: it is measured against the hour, not the week.
    assert availability(records, now, D7, running=False) == \
        (30 * MIN - 30 * S) / (HOUR - 30 * S)


def test_a_clock_stepped_back_gives_a_ratio_in_range() -> None:
    now = 100 * DAY_MS
    records = [R("start", now - HOUR), R("beat", now - 2 * HOUR), R("start", now - 3 * HOUR),
               R("maint_stop", now - 4 * HOUR), R("beat", now + HOUR)]
    for window in (H2, D7):
        for running in (True, False):
            assert 0.0 <= availability(records, now, window, running=running) <= 1.0


# =========================================================================== compaction
@st.composite
def histories(draw: st.DrawFn) -> list[Record]:
    """A ledger over up to ~6 months: runs that stop or crash, beats days apart (a run can
    outlive the compaction horizon), maintenance windows."""
    t = 1_000 * DAY_MS
    out = []
    for _ in range(draw(st.integers(1, 12))):
        t += draw(st.integers(0, 3 * DAY_MS))
        out.append(R("start", t))
        for _ in range(draw(st.integers(0, 4))):
            t += draw(st.integers(0, 3 * DAY_MS))
            kind = draw(st.sampled_from(["beat", "beat", "resume", "maint_start",
                                         "maint_stop"]))
            out.append(R(kind, t))
        if draw(st.booleans()):
            t += draw(st.integers(0, HOUR))
            out.append(R("stop", t))
    return out


@settings(max_examples=300, deadline=None)
@given(histories(), st.data())
def test_compaction_never_changes_availability(records: list[Record], data: st.DataObject) \
        -> None:
    cut = data.draw(st.integers(1, len(records)))
    gap = data.draw(st.sampled_from([None, HOUR, DAY_MS]))  # the live tail's stall limit
    done, rest = records[:cut], records[cut:]
    compacted_at = done[-1].ms  # the ledger compacts on an append, stamped now
    compacted, dropped = compact(done, compacted_at, KEEP_MS)
    assert dropped == 0
    tl = timeline(done)
    assert len(compacted) <= 1 + sum(2 + 2 * len(r.gaps) for r in tl.runs) + 2 * len(tl.windows)
    last = records[-1].ms if rest else compacted_at
    for later in (0, 1, MIN, HOUR, DAY_MS):
        now = max(last, compacted_at) + later
        for window in (H2, D7):
            for running in (True, False):
                assert availability(compacted + rest, now, window, running=running,
                                    max_gap_ms=gap) == \
                    availability(records, now, window, running=running, max_gap_ms=gap), \
                    (window, running)
    assert timeline(compacted + rest).maintenance_since == timeline(records).maintenance_since
    assert timeline(compacted).origin == timeline(done).origin


def test_a_stall_before_a_resume_is_down() -> None:
    """Beats every 5 s, then none for 60 s (SIGSTOP, a frozen loop: /health unanswered), then a
    ``resume`` and beats again: the minute is down, also after compaction; a stop long after
    the last beat is no stall (the heartbeat ends as the shutdown begins)."""
    t0 = 100 * DAY_MS
    beats = [R("beat", t0 + i * 5 * S) for i in range(1, 25)]  # up to t0 + 120 s
    resumed = [R("resume", t0 + 180 * S),
               *(R("beat", t0 + 180 * S + i * 5 * S) for i in range(1, 25))]  # to 300 s
    records = [R("start", t0), *beats, *resumed]
    now = t0 + 300 * S
    counted = 300 - 30
    assert availability(records, now, H2, running=False) == (counted - 60) / counted
    assert timeline(records).runs[0].gaps == ((t0 + 120 * S, t0 + 180 * S),)
    compacted, _ = compact(records, now)
    assert compacted == [R("origin", t0), R("start", t0), R("beat", t0 + 120 * S),
                         R("resume", t0 + 180 * S), R("beat", t0 + 300 * S)]
    assert availability(compacted, now, H2, running=False) == (counted - 60) / counted
    # The running process, asked right after a stall (its resume not written yet), was not
    # up since its last beat; within the limit it is up until now.
    assert availability(records[:25], t0 + 150 * S, H2, max_gap_ms=15 * S) == \
        (120 - 30) / (150 - 30)
    assert availability(records[:25], t0 + 130 * S, H2, max_gap_ms=15 * S) == 1.0
    # A stop 40 s after the last beat (a long drain) is no stall.
    stopped = [R("start", t0), *beats, R("stop", t0 + 160 * S)]
    assert availability(stopped, t0 + 160 * S, H2, running=False) == 1.0


def test_compaction_forgets_stalls_before_the_horizon_also_in_the_current_run() -> None:
    """A long-running process with a stall every 20 days: compaction keeps only the stalls that
    end within the last 8 days, so the file stays small however long the run."""
    t0 = 1_000 * DAY_MS
    records = [R("start", t0)]
    for i in range(1, 13):
        day = t0 + i * 20 * DAY_MS
        records += [R("beat", day), R("resume", day + MIN)]
    now = records[-1].ms + HOUR
    compacted, _ = compact(records, now)
    assert compacted == [R("origin", t0), R("start", t0), R("beat", now - HOUR - MIN),
                         R("resume", now - HOUR)]
    for window in (H2, D7):
        assert availability(compacted, now, window) == availability(records, now, window)


def test_the_ledger_counts_a_stall_as_down(tmp_path: Path) -> None:
    clock = FakeClock(100 * DAY_MS)
    with Ledger(tmp_path, clock=clock, max_gap_ms=15 * S, startup_ms=0) as ledger:
        ledger.record("start")
        for _ in range(12):
            clock.now += 5 * S
            ledger.record("beat")
        clock.now += 60 * S  # no beat for a minute: down since the last one, seen live
        assert ledger.availability(H2) == 60 / 120
        ledger.record("resume")  # the heartbeat after the stall: the minute stays down
        assert ledger.availability(H2) == 60 / 120
        assert ledger.report()["2h"] == 60 / 120
    assert [k for k, _ in read_ledger(tmp_path)].count("resume") == 1


def test_compaction_keeps_the_current_run_and_an_open_window_whatever_their_age() -> None:
    t0 = 1_000 * DAY_MS
    now = t0 + 30 * DAY_MS
    records = [R("start", t0 - DAY_MS), R("stop", t0 - DAY_MS + HOUR),   # old, gone
               R("maint_start", t0 - HOUR), R("maint_stop", t0),       # old, gone
               R("start", t0), R("maint_start", t0 + 10 * S)]         # current run, open window
    compacted, dropped = compact(records, now)
    assert dropped == 0
    assert compacted == [R("origin", t0 - DAY_MS), R("start", t0), R("maint_start", t0 + 10 * S)]
    for window in (H2, D7):
        assert availability(compacted, now, window) == availability(records, now, window)
    closed = [*records, R("maint_stop", now - DAY_MS)]
    compacted, _ = compact(closed, now)
    assert availability(compacted, now, D7) == availability(closed, now, D7) == 1.0
    crashed = [*closed, R("start", now - HOUR)]  # the old run ended at its start: down since
    compacted, _ = compact(crashed, now)
    assert [r.kind for r in compacted] == ["origin", "start", "maint_start", "maint_stop"]
    # Counted: the day since the window closed, but the new start's 30 s; up: the last hour.
    assert availability(compacted, now, D7) == availability(crashed, now, D7) == \
        (HOUR - 30 * S) / (DAY_MS - 30 * S)


def test_compaction_through_the_api_keeps_the_file_bounded(
    tmp_path: Path, ledger_log: list[str]
) -> None:
    """Ten days of a server on a fake clock: heartbeats every 15 minutes, crashes and clean
    restarts, maintenance windows. The file never passes max_lines; at every step the
    availability equals that of the full, never-compacted history; a reopen reads the same."""
    rng = random.Random(4)
    clock = FakeClock(1_000 * DAY_MS)
    max_lines = 128
    full: list[Record] = []  # everything ever recorded, never compacted
    lines_seen = []

    def check(ledger: Ledger) -> None:
        lines = (tmp_path / "availability.log").read_bytes().count(b"\n")
        lines_seen.append(lines)
        assert lines <= max_lines
        assert ledger.records == [Record(k, ms) for k, ms in read_ledger(tmp_path)]
        for window in (H2, D7):
            assert ledger.availability(window) == availability(full, clock.now, window)

    end = clock.now + 10 * DAY_MS
    while clock.now < end:
        ledger = Ledger(tmp_path, clock=clock, max_lines=max_lines).open()
        assert ledger.persistent
        assert ledger.records == [Record(k, ms) for k, ms in read_ledger(tmp_path)]
        full.append(ledger.record("start"))
        check(ledger)
        for _ in range(rng.randint(1, 100)):
            clock.now += 15 * MIN
            full.append(ledger.record("beat"))
            roll = rng.random()
            if roll < 0.01:
                clock.now += rng.randint(0, HOUR)
                if ledger.begin_maintenance():
                    full.append(Record("maint_start", clock.now))
            elif roll < 0.02:
                clock.now += rng.randint(0, HOUR)
                if ledger.end_maintenance():
                    full.append(Record("maint_stop", clock.now))
            check(ledger)
        if rng.random() < 0.5:
            full.append(ledger.record("stop"))
        ledger.close()  # else a crash: no stop record
        clock.now += rng.randint(0, 6 * HOUR)  # down until the next start

    assert len(full) > 5 * max_lines  # compacted many times over
    assert max(lines_seen) >= max_lines - 1  # it did fill up before each compaction
    assert sum(k == "maint_start" for k, _ in [(r.kind, r.ms) for r in full]) >= 2
    assert any("compacted" in m for m in ledger_log)
    assert not any(m.startswith("WARNING") for m in ledger_log), ledger_log


def test_compaction_limit_drops_the_oldest_runs_of_a_crash_loop(
    tmp_path: Path, ledger_log: list[str]
) -> None:
    """More restarts in 8 days than the file may hold: the oldest go, with a warning; the file
    stays bounded and the recent history is exact."""
    clock = FakeClock(1_000 * DAY_MS)
    full: list[Record] = []
    for _ in range(200):
        with Ledger(tmp_path, clock=clock, max_lines=32) as ledger:
            full.append(ledger.record("start"))
            clock.now += MIN
            full.append(ledger.record("beat"))
            clock.now += MIN
        assert len(read_ledger(tmp_path)) <= 32
    assert any("dropped the" in m and m.startswith("WARNING") for m in ledger_log)
    with Ledger(tmp_path, clock=clock, max_lines=32) as ledger:
        full.append(ledger.record("start"))
        assert ledger.timeline().origin == full[0].ms  # history still begins where it began
        # The last 10 minutes are all kept runs (at least 7 of 2 minutes each): exact.
        assert ledger.availability(10 * MIN) == availability(full, clock.now, 10 * MIN)
        # Longer windows reach the dropped runs, now downtime: understated, never overstated.
        assert ledger.availability(H2) < availability(full, clock.now, H2)


# =========================================================================== the file
def write_ledger(data_dir: Path, data: bytes) -> None:
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "availability.log").write_bytes(data)


def test_corrupt_lines_are_dropped_and_the_file_repaired(
    tmp_path: Path, ledger_log: list[str]
) -> None:
    good = [("start", 1_000_000), ("beat", 1_005_000), ("maint_start", 1_006_000),
            ("beat", 1_010_000)]
    data = (line(*good[0]) + b"garbage line\n" + line(*good[1])
            + line("beat", 1_007_000).replace(b"beat", b"stop")  # wrong checksum
            + b"\x00\x00\x00\x00\n" + os.urandom(64).replace(b"\n", b"") + b"\n"
            + line(*good[2]) + line(*good[3]) + line("beat", 1_020_000)[:9])  # torn last line
    write_ledger(tmp_path, data)
    clock = FakeClock(2_000_000)
    with Ledger(tmp_path, clock=clock) as ledger:
        assert ledger.persistent
        assert ledger.records == [Record(k, ms) for k, ms in good]
        assert ledger.maintenance_since == 1_006_000
        assert read_ledger(tmp_path) == good  # rewritten: only valid, whole lines
        ledger.record("start")
        assert read_ledger(tmp_path) == [*good, ("start", 2_000_000)]
    warnings = [m for m in ledger_log if m.startswith("WARNING")]
    assert len(warnings) == 1, ledger_log
    assert "4 corrupt lines and a truncated last line" in warnings[0]
    assert "kept 4 valid records" in warnings[0]
    assert not list(tmp_path.glob("availability.log.corrupt-*"))


def test_a_torn_last_line_is_cut_before_the_next_append(
    tmp_path: Path, ledger_log: list[str]
) -> None:
    """A crash in the middle of an append leaves part of a line: it goes, and the next record
    starts on a line of its own (else both would be lost)."""
    write_ledger(tmp_path, line("start", 1_000) + line("beat", 2_000) + line("beat", 3_000)[:6])
    with Ledger(tmp_path, clock=FakeClock(9_000)) as ledger:
        ledger.record("start")
    with Ledger(tmp_path, clock=FakeClock(9_000)) as ledger:
        assert ledger.records == [R("start", 1_000), R("beat", 2_000), R("start", 9_000)]
    assert read_ledger(tmp_path) == [("start", 1_000), ("beat", 2_000), ("start", 9_000)]
    assert sum("truncated last line" in m for m in ledger_log) == 1, ledger_log


def test_a_failed_append_is_kept_in_memory_and_written_later(
    tmp_path: Path, ledger_log: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk in the middle of an append: no exception, the record stays in memory, the
    torn line is replaced by a clean rewrite once the disk takes writes again."""
    clock = FakeClock(1_000)
    real_write = os.write
    with Ledger(tmp_path, clock=clock) as ledger:
        ledger.record("start")

        def full_disk(fd: int, data: bytes) -> int:
            if not os.readlink(f"/proc/self/fd/{fd}").startswith(str(tmp_path)):
                return real_write(fd, data)  # anything else than the ledger's files
            real_write(fd, data[:5])  # part of the line reaches the file
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(os, "write", full_disk)
        clock.now = 2_000
        ledger.record("beat")
        clock.now = 3_000
        ledger.record("beat")
        assert ledger.records == [R("start", 1_000), R("beat", 2_000), R("beat", 3_000)]
        monkeypatch.setattr(os, "write", real_write)
        clock.now = 4_000
        ledger.record("beat")
        assert read_ledger(tmp_path) == [("start", 1_000), ("beat", 2_000), ("beat", 3_000),
                                         ("beat", 4_000)]
    warnings = [m for m in ledger_log if m.startswith("WARNING")]
    assert len(warnings) == 1 and "No space left on device" in warnings[0], ledger_log
    assert any("writable again" in m for m in ledger_log), ledger_log


@pytest.mark.parametrize("junk", [b"\x00" * 4096, os.urandom(2048).replace(b"\n", b"\r"),
                                  b"not a ledger\nat all\n", b"start 12"],
                         ids=["zeros", "random", "text", "torn"])
def test_a_file_without_a_valid_record_is_moved_aside(
    tmp_path: Path, ledger_log: list[str], junk: bytes
) -> None:
    write_ledger(tmp_path, junk)
    with Ledger(tmp_path, clock=FakeClock(5_000)) as ledger:
        assert ledger.records == []
        ledger.record("start")
    assert read_ledger(tmp_path) == [("start", 5_000)]
    aside = list(tmp_path.glob("availability.log.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == junk
    assert any(m.startswith("WARNING") and "moved it to availability.log.corrupt-" in m
               for m in ledger_log), ledger_log


def test_an_unreadable_file_is_moved_aside(tmp_path: Path, ledger_log: list[str]) -> None:
    (tmp_path / "availability.log").mkdir()  # reading it fails (EISDIR), even as root
    (tmp_path / "availability.log" / "inside").write_text("x")
    with Ledger(tmp_path, clock=FakeClock(5_000)) as ledger:
        assert ledger.persistent
        ledger.record("start")
    assert read_ledger(tmp_path) == [("start", 5_000)]
    aside = list(tmp_path.glob("availability.log.corrupt-*"))
    assert len(aside) == 1 and (aside[0] / "inside").read_text() == "x"
    assert any("unreadable" in m and m.startswith("WARNING") for m in ledger_log), ledger_log


def test_a_data_dir_that_cannot_be_created_keeps_the_ledger_in_memory(
    tmp_path: Path, ledger_log: list[str]
) -> None:
    (tmp_path / "file").write_text("a file where the directory should be")
    with Ledger(tmp_path / "file" / "data", clock=FakeClock(5_000)) as ledger:
        assert not ledger.persistent
        ledger.record("start")
        assert ledger.availability(H2, 40_000) == 1.0
        assert ledger.begin_maintenance()
        assert ledger.maintenance
    assert any("memory only" in m for m in ledger_log), ledger_log


def test_one_process_per_ledger(tmp_path: Path, ledger_log: list[str]) -> None:
    clock = FakeClock(5_000)
    with Ledger(tmp_path, clock=clock) as first:
        first.record("start")
        with Ledger(tmp_path, clock=clock) as second:
            assert first.persistent and not second.persistent
            second.record("start")
            second.record("stop")
        first.record("beat")
    assert read_ledger(tmp_path) == [("start", 5_000), ("beat", 5_000)]
    assert any("in use by another process" in m for m in ledger_log), ledger_log


def test_memory_only_ledger_stays_bounded(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    clock = FakeClock(1_000 * DAY_MS)
    with Ledger(tmp_path / "file", clock=clock, max_lines=32) as ledger:
        ledger.record("start")
        for _ in range(500):
            clock.now += 5 * S
            ledger.record("beat")
        assert len(ledger.records) <= 32
        assert ledger.timeline().runs[-1].end == clock.now


# =========================================================================== real servers
HEARTBEAT = ("--heartbeat-interval", "0.2")


def beats_after(data_dir: Path, ms: int, count: int = 1) -> list[tuple[str, int]] | None:
    """The ledger once it holds ``count`` beats stamped after ``ms`` (None before)."""
    try:
        records = read_ledger(data_dir)
    except (FileNotFoundError, AssertionError, ValueError):
        return None  # not written yet, or caught mid-append
    return records if sum(k == "beat" and t > ms for k, t in records) >= count else None


@sqlite_only
def test_fresh_server_reports_no_data_during_its_first_30_s(
    server_factory: Factory, tmp_path: Path
) -> None:
    srv = server_factory(tmp_path, *HEARTBEAT).start()
    records = wait_for("a heartbeat", lambda: beats_after(tmp_path, 0, 2))
    assert records[0][0] == "start" and starts(records) == [records[0][1]]
    status, body = http("GET", srv.admin_url + "/availability")
    assert status == 200
    assert body["now"] - body["since"] < 30_000, "the test must look inside the first 30 s"
    assert (body["2h"], body["7d"]) == (None, None)  # nothing counted yet: no data
    assert body["since"] == records[0][1]
    assert body["maintenance"] is False and body["persistent"] is True
    assert body["startup_exclusion_seconds"] == 30
    assert scrape_availability(srv) == {}  # no sample, as for Prometheus's own view


@sqlite_only
def test_sigkill_and_restart_the_gap_counts_as_downtime(
    server_factory: Factory, tmp_path: Path
) -> None:
    flags = (*HEARTBEAT, "--startup-exclusion", "0.5")
    first = server_factory(tmp_path, *flags).start()
    start_a = starts(wait_for("the start record", lambda: beats_after(tmp_path, 0, 0)))[0]
    # Beats past the startup exclusion, so the first run has counted up-time.
    wait_for("beats past the exclusion", lambda: beats_after(tmp_path, start_a + 500, 2))
    first.kill()
    before = read_ledger(tmp_path)
    assert before[0] == ("start", start_a)
    assert "stop" not in {k for k, _ in before}  # SIGKILL: no shutdown code ran
    last_a = max(ms for kind, ms in before if kind == "beat")

    second = server_factory(tmp_path, *flags).start()
    status, body = http("GET", second.admin_url + "/availability")
    assert status == 200
    after = read_ledger(tmp_path)
    assert after[:len(before)] == before  # the first run's records survived the kill
    start_b = starts(after)[1]
    assert after[len(before)] == ("start", start_b)
    now = body["now"]
    assert start_b > last_a and now >= start_b

    # By hand: up from each start's exclusion end to the last beat (the current run to now);
    # counted: everything since the first start but the two exclusions.
    excl = 500
    up = (last_a - (start_a + excl)) + max(0, now - (start_b + excl))
    counted = (now - start_a) - excl - min(excl, now - start_b)
    expected = up / counted
    assert expected < 1.0 and counted - up == start_b - last_a  # the gap, and only it, is down
    assert body["2h"] == pytest.approx(expected, abs=1e-12)
    assert body["7d"] == pytest.approx(expected, abs=1e-12)
    assert body["since"] == start_a
    # The pure function agrees on the recorded timestamps with the server's 'now'.
    recs = records_of(tmp_path)
    assert availability(recs, now, H2, startup_ms=excl) == body["2h"]
    # /metrics computes it at its own (later) now: only more up-time since.
    gauge = scrape_availability(second)
    assert body["2h"] <= gauge["2h"] < 1.0
    assert body["7d"] <= gauge["7d"] < 1.0


@sqlite_only
def test_restart_after_a_crash_long_ago_counts_the_gap_and_excludes_both_starts(
    server_factory: Factory, tmp_path: Path
) -> None:
    """A history written by hand: a run 10 minutes ago that crashed after 5 minutes. The real
    server reads it; the default 30 s exclusion applies to both starts."""
    t0 = int(time.time() * 1000) - 10 * MIN
    write_ledger(tmp_path, line("start", t0) + line("beat", t0 + 5 * MIN))
    srv = server_factory(tmp_path).start()
    status, body = http("GET", srv.admin_url + "/availability")
    assert status == 200
    start_b = starts(read_ledger(tmp_path))[1]
    now = body["now"]
    up = (5 * MIN - 30 * S) + max(0, now - (start_b + 30 * S))
    counted = (now - t0) - 30 * S - min(30 * S, now - start_b)
    assert body["2h"] == pytest.approx(up / counted, abs=1e-12)
    assert body["7d"] == pytest.approx(up / counted, abs=1e-12)
    assert 0.4 < body["2h"] < 0.6
    # Without the startup exclusion the figure would differ: the exclusion is in force.
    plain = (5 * MIN + (now - start_b)) / (now - t0)
    assert abs(body["2h"] - plain) > 1e-6
    assert body["since"] == t0


@sqlite_only
def test_a_stopped_process_counts_as_down_once_it_resumes(
    server_factory: Factory, tmp_path: Path
) -> None:
    """SIGSTOP past the stall limit (three heartbeats, at least 5 s): /health went unanswered,
    so after SIGCONT the next heartbeat is a ``resume`` and the stall is downtime."""
    srv = server_factory(tmp_path, *HEARTBEAT, "--startup-exclusion", "0").start()
    records = wait_for("two heartbeats", lambda: beats_after(tmp_path, 0, 2))
    assert srv.proc is not None
    os.kill(srv.proc.pid, signal.SIGSTOP)
    try:
        last = max(ms for kind, ms in records if kind == "beat")
        wait_for("the stall to outlast the 5 s limit",
                 lambda: time.time() * 1000 - last > 6000 or None)
    finally:
        os.kill(srv.proc.pid, signal.SIGCONT)
    after = wait_for("the resume record", lambda: next(
        (r for r in read_ledger(tmp_path) if r[0] == "resume"), None))
    stalled = after[1] - max(ms for kind, ms in read_ledger(tmp_path)
                             if kind == "beat" and ms < after[1])
    assert stalled > 5000  # the limit (a beat may have landed after the snapshot above)
    status, body = http("GET", srv.admin_url + "/availability")
    since = body["since"]
    assert status == 200
    assert body["2h"] == pytest.approx(1 - stalled / (body["now"] - since), abs=0.01)
    assert srv.stop() == 0


@sqlite_only
def test_clean_shutdown_writes_stop_last(server_factory: Factory, tmp_path: Path) -> None:
    srv = server_factory(tmp_path, *HEARTBEAT).start()
    wait_for("a heartbeat", lambda: beats_after(tmp_path, 0))
    assert srv.stop() == 0
    records = read_ledger(tmp_path)
    assert records[-1][0] == "stop"
    assert [k for k, _ in records].count("stop") == 1
    assert records[-1][1] >= max(ms for _, ms in records[:-1])


@sqlite_only
def test_maintenance_window_turns_ready_503_and_is_excluded(
    server_factory: Factory, tmp_path: Path
) -> None:
    flags = (*HEARTBEAT, "--startup-exclusion", "0")
    srv = server_factory(tmp_path, *flags).start()
    url = srv.admin_url
    assert http("GET", url + "/ready")[0] == 200
    assert http("GET", url + "/maintenance") == (200, {"maintenance": False, "since": None})

    status, opened = http("POST", url + "/maintenance/start")
    assert status == 202
    assert opened["maintenance"] is True and opened["changed"] is True
    since = opened["since"]
    status, ready = http("GET", url + "/ready")
    assert status == 503 and "maintenance window in progress" in ready["reasons"]
    # Idempotent: a second start changes nothing, writes nothing.
    assert http("POST", url + "/maintenance/start") == \
        (202, {"maintenance": True, "since": since, "changed": False})
    assert http("GET", url + "/maintenance") == (200, {"maintenance": True, "since": since})
    assert http("GET", url + "/availability")[1]["maintenance"] is True
    assert [k for k, _ in read_ledger(tmp_path)].count("maint_start") == 1

    # Killed inside the window, restarted: the window is still open, the gap excused.
    wait_for("a beat inside the window", lambda: beats_after(tmp_path, since))
    srv.kill()
    srv = server_factory(tmp_path, *flags).start()
    url = srv.admin_url
    assert http("GET", url + "/maintenance") == (200, {"maintenance": True, "since": since})
    status, ready = http("GET", url + "/ready")
    assert status == 503 and "maintenance window in progress" in ready["reasons"]
    assert "maintenance window is open" in srv.log

    status, closed = http("POST", url + "/maintenance/stop")
    assert status == 200
    assert closed == {"maintenance": False, "since": None, "changed": True}
    assert http("GET", url + "/ready")[0] == 200
    assert http("POST", url + "/maintenance/stop") == \
        (200, {"maintenance": False, "since": None, "changed": False})
    status, body = http("GET", url + "/availability")
    assert (status, body["maintenance"]) == (200, False)

    records = records_of(tmp_path)
    kinds = [r.kind for r in records]
    assert kinds.count("maint_start") == 1 and kinds.count("maint_stop") == 1
    assert kinds.count("start") == 2
    # Up before the window, excused during it (crash included), up after: 1.0.
    assert (body["2h"], body["7d"]) == (1.0, 1.0)
    # Without the window the crash gap would have counted: the exclusion did that.
    plain = [r for r in records if not r.kind.startswith("maint_")]
    assert availability(plain, body["now"], H2, startup_ms=0) < 1.0


@sqlite_only
def test_maintenance_endpoints_require_the_token_when_set(
    server_factory: Factory, tmp_path: Path
) -> None:
    token = "tok-" + os.urandom(8).hex()
    srv = server_factory(tmp_path, "--admin-token", token).start()
    url = srv.admin_url
    for method, path in (("POST", "/maintenance/start"), ("POST", "/maintenance/stop"),
                         ("GET", "/maintenance"), ("POST", "/crosscheck")):
        for offered in (None, "wrong", token + "x", ""):
            status, body = http(method, url + path, offered)
            assert status == 401, (method, path, offered)
            assert "Authorization: Bearer" in body["error"]
    # A wrong scheme is refused too.
    request = urllib.request.Request(url + "/maintenance/start", method="POST", data=b"")
    request.add_header("Authorization", f"Basic {token}")
    with pytest.raises(urllib.error.HTTPError) as refused:
        _OPENER.open(request, timeout=HTTP_TIMEOUT)
    with contextlib.closing(refused.value):
        assert refused.value.code == 401
        assert refused.value.headers["WWW-Authenticate"].startswith("Bearer")
    # Nothing was opened by the refused requests.
    assert http("GET", url + "/ready")[0] == 200
    assert "maint_start" not in {k for k, _ in read_ledger(tmp_path)}
    # The right token works; the read-only /availability needs none.
    assert http("POST", url + "/maintenance/start", token)[0] == 202
    assert http("GET", url + "/ready")[0] == 503
    assert http("GET", url + "/maintenance", token)[1]["maintenance"] is True
    assert http("GET", url + "/availability")[1]["maintenance"] is True
    assert http("POST", url + "/maintenance/stop", token)[0] == 200
    assert http("GET", url + "/ready")[0] == 200
    assert srv.stop() == 0
    assert token not in srv.log


@sqlite_only
@pytest.mark.parametrize("case", ["damaged lines", "junk file", "unreadable"])
def test_server_starts_on_a_corrupt_ledger(
    server_factory: Factory, tmp_path: Path, case: str
) -> None:
    t0 = int(time.time() * 1000) - 10 * MIN
    kept: list[tuple[str, int]] = []
    if case == "damaged lines":
        kept = [("start", t0), ("beat", t0 + MIN)]
        write_ledger(tmp_path, line(*kept[0]) + b"\xde\xad\xbe\xef garbage\n"
                     + line("beat", t0 + 30 * S).replace(b"beat", b"stop")
                     + b"\x00" * 100 + b"\n" + line(*kept[1]) + line("beat", t0 + 2 * MIN)[:7])
    elif case == "junk file":
        write_ledger(tmp_path, os.urandom(4096))
    else:
        (tmp_path / "availability.log").mkdir(parents=True)
    srv = server_factory(tmp_path, *HEARTBEAT).start()
    status, body = http("GET", srv.admin_url + "/availability")
    assert status == 200 and body["persistent"] is True
    records = read_ledger(tmp_path)  # a clean file again: every line valid
    assert records[:len(kept)] == kept
    assert records[len(kept)][0] == "start"
    assert body["since"] == (t0 if kept else records[0][1])
    assert "WARNING dumbkv.ledger: availability ledger:" in srv.log
    if kept:
        assert "dropped 3 corrupt lines and a truncated last line" in srv.log
        assert 0 < body["2h"] < 1  # the kept history (and its gap) counts
    else:
        assert "moved it to availability.log.corrupt-" in srv.log
        assert len(list(tmp_path.glob("availability.log.corrupt-*"))) == 1
        assert body["2h"] is None  # a new ledger, in its first 30 s
    # It serves and keeps beating.
    wait_for("a heartbeat", lambda: beats_after(tmp_path, records[len(kept)][1]))
    assert http("GET", srv.admin_url + "/ready")[0] == 200


@sqlite_only
def test_second_server_on_the_same_data_dir_keeps_its_ledger_in_memory(
    server_factory: Factory, tmp_path: Path
) -> None:
    first = server_factory(tmp_path).start()
    other = tmp_path / "other-store"
    other.mkdir()
    second = server_factory(tmp_path, store=sqlite_url(other)).start()
    assert "in use by another process" in second.log
    assert http("GET", second.admin_url + "/availability")[1]["persistent"] is False
    assert http("GET", first.admin_url + "/availability")[1]["persistent"] is True
    assert len(starts(read_ledger(tmp_path))) == 1  # only the first server's start
    assert second.stop() == 0
    assert "stop" not in {k for k, _ in read_ledger(tmp_path)}


# =========================================================================== CLI
@sqlite_only
def test_maintenance_cli_against_a_running_server(
    server_factory: Factory, tmp_path: Path
) -> None:
    srv = server_factory(tmp_path).start()
    admin = ("--admin", srv.admin_url)

    done = cli("maintenance", "status", *admin)
    assert (done.returncode, done.stdout.strip()) == (0, "no maintenance window open"), done

    done = cli("maintenance", "start", *admin)
    assert done.returncode == 0, done
    assert done.stdout.startswith("maintenance window open since ")
    assert done.stdout.strip().endswith("(opened now)")
    assert http("GET", srv.admin_url + "/ready")[0] == 503

    done = cli("maintenance", "start", *admin)
    assert done.returncode == 0 and "(it was open already)" in done.stdout, done

    done = cli("maintenance", "status", *admin, "--json")
    assert done.returncode == 0, done
    state = json.loads(done.stdout)
    assert state["maintenance"] is True
    assert state["since"] == http("GET", srv.admin_url + "/maintenance")[1]["since"]

    done = cli("maintenance", "stop", *admin)
    assert (done.returncode, done.stdout.strip()) == \
        (0, "no maintenance window open (closed now)"), done
    assert http("GET", srv.admin_url + "/ready")[0] == 200


@sqlite_only
def test_maintenance_cli_token_and_failures(server_factory: Factory, tmp_path: Path) -> None:
    token = "tok-" + os.urandom(8).hex()
    srv = server_factory(tmp_path, "--admin-token", token).start()
    admin = ("--admin", srv.admin_url)

    done = cli("maintenance", "start", *admin)
    assert done.returncode == 1 and "admin token" in done.stderr, done
    done = cli("maintenance", "start", *admin, "--token", "wrong")
    assert done.returncode == 1 and "refused" in done.stderr, done
    assert http("GET", srv.admin_url + "/ready")[0] == 200

    done = cli("maintenance", "start", *admin, "--token", token)
    assert done.returncode == 0 and "(opened now)" in done.stdout, done
    done = cli("maintenance", "stop", *admin, env={"DUMBKV_ADMIN_TOKEN": token})
    assert done.returncode == 0 and "(closed now)" in done.stdout, done
    assert http("GET", srv.admin_url + "/ready")[0] == 200

    # dumbkv crosscheck --push needs the token too: refused without it, stored with it.
    check = ("crosscheck", f"sqlite:///{tmp_path / 'xc.db'}", "-n", "50", "--allow-flush",
             "--push", srv.admin_url)
    done = cli(*check)
    assert done.returncode == 2 and "HTTP 401" in done.stderr, done
    done = cli(*check, env={"DUMBKV_ADMIN_TOKEN": token})
    assert done.returncode == 0 and done.stderr == "", done
    with _OPENER.open(srv.admin_url + "/metrics", timeout=HTTP_TIMEOUT) as response:
        assert b"dumbkv_crosscheck{" in response.read()

    # The RESP port given as the admin URL by mistake: a message, no traceback.
    resp_port = ("--admin", f"http://127.0.0.1:{srv.port}", "--timeout", "5")
    done = cli("maintenance", "status", *resp_port, "--token", token)
    assert done.returncode == 1 and "not an HTTP reply" in done.stderr, done
    assert "Traceback" not in done.stderr
    done = cli("slo", "--admin", f"http://127.0.0.1:{srv.port}")
    assert done.returncode == 2 and "not an HTTP reply" in done.stderr, done
    assert "Traceback" not in done.stderr

    # A server that is not there: exit 1 with a message, quickly.
    assert srv.stop() == 0
    done = cli("maintenance", "status", *admin, "--timeout", "5")
    assert done.returncode == 1 and "cannot reach" in done.stderr, done
    done = cli("maintenance", "status", "--admin", "ftp://127.0.0.1:1")
    assert done.returncode == 1 and "not an http(s) URL" in done.stderr, done


# =========================================================================== config, README
def test_settings_come_from_flags_and_environment() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert (Config().data_dir, Config().heartbeat_interval, Config().startup_exclusion,
            Config().admin_token) == ("./dumbkv-data", 5.0, 30.0, None)
    env = {"DUMBKV_DATA_DIR": "/var/lib/dumbkv", "DUMBKV_HEARTBEAT_INTERVAL": "2.5",
           "DUMBKV_STARTUP_EXCLUSION": "0", "DUMBKV_ADMIN_TOKEN": "t0ken"}
    config = from_args(parser.parse_args([]), env)
    assert (config.data_dir, config.heartbeat_interval, config.startup_exclusion,
            config.admin_token) == ("/var/lib/dumbkv", 2.5, 0.0, "t0ken")
    config = from_args(parser.parse_args(["--data-dir", "d", "--heartbeat-interval", "0.2",
                                          "--admin-token", "flag"]), env)
    assert (config.data_dir, config.heartbeat_interval, config.admin_token) == \
        ("d", 0.2, "flag")
    with pytest.raises(SystemExit):
        from_args(parser.parse_args([]), {"DUMBKV_STARTUP_EXCLUSION": "-1"})
    with pytest.raises(SystemExit):
        from_args(parser.parse_args([]), {"DUMBKV_HEARTBEAT_INTERVAL": "0"})


def test_readme_documents_the_ledger() -> None:
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    match = re.search(r"^## Availability ledger and maintenance\n(.*?)(?=^## )", text, re.M | re.S)
    assert match, "README has no '## Availability ledger and maintenance' section"
    section = match.group(1)
    examples = re.findall(
        r"^((?:start|beat|resume|stop|maint_start|maint_stop) \d+ [0-9a-f]{8})$", section, re.M)
    assert len(examples) == 6
    for example in examples:
        assert decode(example.encode()) is not None, example  # real checksums
    for flag in ("--data-dir", "--heartbeat-interval", "--startup-exclusion", "--admin-token",
                 "DUMBKV_DATA_DIR", "DUMBKV_ADMIN_TOKEN"):
        assert f"`{flag}`" in text, flag
    for endpoint in ("POST /maintenance/start", "POST /maintenance/stop", "GET /maintenance",
                     "GET /availability", "dumbkv_availability_ratio"):
        assert endpoint in section, endpoint


# =========================================================================== the heartbeat
async def _heartbeat_records(tmp_path: Path, fault: Callable[[Ledger], None]) -> list[str]:
    """The kinds a heartbeat (every 20 ms, stall limit 150 ms) writes around ``fault``."""
    ledger = Ledger(tmp_path).open()
    ledger.record("start")
    heartbeat = Heartbeat(ledger, 0.02, 0.15)
    heartbeat.start()
    try:
        async def beats(n: int) -> None:
            while sum(r.kind == "beat" for r in ledger.records) < n:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(beats(3), 10)
        fault(ledger)
        after = len(ledger.records)
        while len(ledger.records) < after + 3:
            await asyncio.sleep(0.01)
    finally:
        await heartbeat.stop(10)
        ledger.close()
    return [r.kind for r in ledger.records]


async def test_a_frozen_loop_is_a_stall(tmp_path: Path) -> None:
    def freeze(ledger: Ledger) -> None:
        time.sleep(0.4)  # the fault: the event loop blocked for 0.4 s

    kinds = await _heartbeat_records(tmp_path, freeze)
    assert kinds.count("resume") == 1, kinds


async def test_a_slow_disk_is_no_stall(tmp_path: Path) -> None:
    def slow_disk(ledger: Ledger) -> None:
        record = ledger.record

        def slow(kind: str) -> Record:
            time.sleep(0.4)  # the fault: one fsync takes 0.4 s (in the worker thread)
            ledger.record = record  # type: ignore[method-assign]
            return record(kind)

        ledger.record = slow  # type: ignore[method-assign]

    kinds = await _heartbeat_records(tmp_path, slow_disk)
    assert "resume" not in kinds, kinds


def test_a_wall_clock_stepped_during_a_run_does_not_move_its_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default clock reads Unix time once, then goes by the monotonic clock: a step of
    the wall clock (NTP, ``date -s``) an hour back or forward leaves the records in order."""
    with Ledger(tmp_path) as ledger:
        first = ledger.record("start").ms
        assert abs(first - time.time() * 1000) < 5_000
        real = time.time_ns
        for step in (-HOUR, +HOUR):
            monkeypatch.setattr(time, "time_ns", lambda step=step: real() + step * 1_000_000)
            beat = ledger.record("beat").ms
            assert 0 <= beat - first < 5_000  # not an hour off
    assert [k for k, _ in read_ledger(tmp_path)] == ["start", "beat", "beat"]
