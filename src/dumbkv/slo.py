"""``dumbkv slo``: the SLO sheet's table for a running server.

Two sources:

* **The admin port** (default): ``GET /metrics`` (parsed with prometheus-client's text parser)
  and ``GET /availability`` (the availability ledger). Command figures are the server's
  cumulative counters, so they cover the time **since the process started**. When
  ``/availability`` answers 404 (a server without the ledger endpoint) the
  ``dumbkv_availability_ratio{window}`` gauge of ``/metrics`` is used; without either,
  availability is "no data".
* **Prometheus** (``--prometheus URL``): instant queries against its HTTP API
  (``/api/v1/query``) over ``--window`` (default ``7d``): ``increase()`` of the command counter
  by status, of the latency histogram's buckets, ``histogram_quantile(0.9, ...)`` for the P90
  estimate, the ledger's ``dumbkv_availability_ratio`` gauge (or, without it, the share of
  successful scrapes, ``avg_over_time(up[...])``) and the last pushed ``dumbkv_crosscheck``
  figures.

Objectives (the sheet), each with its target, the measured value, met / not met / no data and
the error budget left:

====================================  ==========================================================
availability (7 d)                    >= 95 % (the ledger: /health up-time, first 30 s after each
                                      start and maintenance windows excluded)
availability (2 h) alert line         alert when < 90 %; shown, but not an objective
P90 latency                           < 1000 ms: the share of commands in the ``le="1.0"`` bucket
                                      must be >= 90 % (a real bucket edge, never interpolated);
                                      the interpolated P90 is shown beside it
server-error rate                     < 5 %: server_error / (ok + server_error); client errors
                                      excluded
cross-check identical results         >= 99 % (only when figures were pushed)
cross-check failure-rate difference   <= 2 points (only when figures were pushed)
====================================  ==========================================================

Error budget left, a fraction of the budget the objective allows (clipped to 0 .. 1):
``(measured - target) / (1 - target)`` for a share of good events that must be at least
``target`` (availability, latency, identical results), ``1 - measured / limit`` for a rate of bad
events that must stay under ``limit`` (server errors, failure-rate difference).

"No data" (no commands yet, no ledger, no cross-check pushed) is reported as such and is not a
failure. Exit code: 0 when every objective with data is met, 1 when one is not, 2 when the
source cannot be read.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Literal

from prometheus_client.parser import text_string_to_metric_families

from .httpclient import http_request

__all__ = [
    "AVAILABILITY_ALERT",
    "AVAILABILITY_TARGET",
    "DEFAULT_ADMIN",
    "IDENTICAL_TARGET",
    "LATENCY_TARGET",
    "LATENCY_THRESHOLD",
    "MAX_FAILURE_RATE_DIFF",
    "SERVER_ERROR_LIMIT",
    "Measurements",
    "Objective",
    "Report",
    "SourceError",
    "add_arguments",
    "budget_at_least",
    "budget_below",
    "evaluate",
    "histogram_quantile",
    "main",
    "read_admin",
    "read_prometheus",
]

DEFAULT_ADMIN = "http://127.0.0.1:7380"
AVAILABILITY_TARGET = 0.95
AVAILABILITY_ALERT = 0.90
LATENCY_THRESHOLD = 1.0  # seconds: a bucket edge of dumbkv_command_duration_seconds
LATENCY_TARGET = 0.90  # share of commands at or under LATENCY_THRESHOLD
SERVER_ERROR_LIMIT = 0.05
IDENTICAL_TARGET = 0.99
MAX_FAILURE_RATE_DIFF = 0.02
STARTUP_EXCLUSION = 30.0  # seconds after a start that the ledger does not count
_EPS = 1e-9  # float slack for the inclusive limits (a pushed 0.99 is 0.99)
_FIGURES = ("identical_ratio", "failure_rate_a", "failure_rate_b", "failure_rate_difference")
_DURATION = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")


class SourceError(Exception):
    """The admin port or Prometheus could not be read (exit code 2)."""


# --------------------------------------------------------------------------- the figures
@dataclass
class Measurements:
    """What a source says, before it is held against the objectives."""

    source: Literal["admin", "prometheus"]
    url: str
    window: str  # of the command figures: "since start" (of the process) or a PromQL duration
    ok: float = 0.0
    client_error: float = 0.0
    server_error: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # le -> cumulative count
    p90_seconds: float | None = None  # None: compute it from ``buckets``
    availability: dict[str, float | None] = field(default_factory=dict)  # "7d", "2h"
    availability_window: dict[str, str] = field(default_factory=dict)
    availability_source: str | None = None
    maintenance: bool | None = None
    crosscheck: dict[str, float] = field(default_factory=dict)
    server: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    approximate: bool = False  # Prometheus' increase() extrapolates


@dataclass
class Objective:
    """One row of the table."""

    id: str
    objective: str
    target: str
    window: str
    source: str
    measured: float | None
    measured_text: str
    met: bool | None  # None: no data, or the alert line
    budget_left: float | None
    kind: Literal["objective", "alert"] = "objective"
    firing: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> str:
        if self.measured is None:
            return "no data"
        if self.kind == "alert":
            return "firing" if self.firing else "quiet"
        return "met" if self.met else "not met"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "objective": self.objective,
            "kind": self.kind,
            "target": self.target,
            "window": self.window,
            "source": self.source,
            "measured": self.measured,
            "measured_text": self.measured_text,
            "status": self.status,
            "met": self.met,
            "budget_left": self.budget_left,
            **({"firing": self.firing} if self.kind == "alert" else {}),
            **self.extra,
        }


def _clip(x: float) -> float:
    return max(0.0, min(1.0, x))


def budget_at_least(measured: float, target: float) -> float:
    """Budget left of "a share of good events >= target": (measured - target) / (1 - target)."""
    return _clip((measured - target) / (1.0 - target))


def budget_below(measured: float, limit: float) -> float:
    """Budget left of "a rate of bad events under limit": 1 - measured / limit."""
    return _clip(1.0 - measured / limit)


def histogram_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """The q-quantile of cumulative ``buckets`` (upper bound -> count), interpolated linearly
    inside its bucket exactly as PromQL's ``histogram_quantile`` does; None without
    observations. A quantile in the +Inf bucket is the largest finite bound."""
    edges = sorted(buckets)
    if not edges or not math.isinf(edges[-1]) or buckets[edges[-1]] <= 0:
        return None
    counts: list[float] = []
    for edge in edges:  # cumulative counts never go down (scrapes are not atomic)
        counts.append(max(buckets[edge], counts[-1] if counts else 0.0))
    if len(edges) < 2:
        return None
    rank = q * counts[-1]
    b = next(i for i, count in enumerate(counts) if count >= rank)
    if b == len(edges) - 1:
        return edges[-2]
    if b == 0 and edges[0] <= 0:
        return edges[0]
    start = edges[b - 1] if b > 0 else 0.0
    count = counts[b] - (counts[b - 1] if b > 0 else 0.0)
    rank -= counts[b - 1] if b > 0 else 0.0
    return start + (edges[b] - start) * (rank / count)


def _pct(x: float) -> str:
    return f"{x * 100:.2f} %"


def _count(x: float, approximate: bool) -> str:
    return f"~{x:.1f}" if approximate and x != round(x) else f"{x:.0f}"


def _seconds(s: float) -> str:
    return f"{s * 1000:.1f} ms" if s < 10 else f"{s:.1f} s"


def evaluate(m: Measurements) -> list[Objective]:
    """Hold the measurements against the sheet's objectives."""
    rows: list[Objective] = []
    avail_source = m.availability_source or "-"

    seven = m.availability.get("7d")
    rows.append(Objective(
        "availability_7d", "availability", ">= 95 %", m.availability_window.get("7d", "7d"),
        avail_source, seven, _pct(seven) if seven is not None else "no data",
        None if seven is None else seven >= AVAILABILITY_TARGET - _EPS,
        None if seven is None else budget_at_least(seven, AVAILABILITY_TARGET),
    ))
    two = m.availability.get("2h")
    rows.append(Objective(
        "availability_2h_alert", "availability (alert line)", "alert < 90 %",
        m.availability_window.get("2h", "2h"), avail_source, two,
        _pct(two) if two is not None else "no data", None, None, kind="alert",
        firing=None if two is None else two < AVAILABILITY_ALERT,
    ))

    total = m.buckets.get(math.inf, 0.0)
    fast = m.buckets.get(LATENCY_THRESHOLD, 0.0)
    p90 = m.p90_seconds if m.p90_seconds is not None else histogram_quantile(0.9, m.buckets)
    share = fast / total if total > 0 and LATENCY_THRESHOLD in m.buckets else None
    latency_text = "no data" if total == 0 else 'no data (no le="1.0" bucket)'
    if share is not None:
        latency_text = f"{_pct(share)} <= 1 s"
        if p90 is not None:
            latency_text = f"P90 ~ {_seconds(p90)}; " + latency_text
    rows.append(Objective(
        "latency_p90", "P90 latency", "< 1000 ms", m.window,
        "dumbkv_command_duration_seconds", share, latency_text,
        None if share is None else share >= LATENCY_TARGET - _EPS,
        None if share is None else budget_at_least(share, LATENCY_TARGET),
        extra={"p90_seconds": p90 if share is not None else None,
               "commands": total, "commands_le_1s": fast},
    ))

    counted = m.ok + m.server_error
    rate = m.server_error / counted if counted > 0 else None
    error_text = "no data"
    if rate is not None:
        error_text = (f"{_pct(rate)} ({_count(m.server_error, m.approximate)} of "
                      f"{_count(counted, m.approximate)})")
    rows.append(Objective(
        "server_error_rate", "server-error rate", "< 5 %", m.window, "dumbkv_commands_total",
        rate, error_text, None if rate is None else rate < SERVER_ERROR_LIMIT,
        None if rate is None else budget_below(rate, SERVER_ERROR_LIMIT),
        extra={"ok": m.ok, "server_error": m.server_error, "client_error": m.client_error},
    ))

    identical = m.crosscheck.get("identical_ratio")
    rows.append(Objective(
        "crosscheck_identical", "cross-check identical", ">= 99 %", "last push",
        "dumbkv_crosscheck", identical, _pct(identical) if identical is not None else "no data",
        None if identical is None else identical >= IDENTICAL_TARGET - _EPS,
        None if identical is None else budget_at_least(identical, IDENTICAL_TARGET),
    ))
    diff = m.crosscheck.get("failure_rate_difference")
    diff_text = "no data"
    if diff is not None:
        diff_text = f"{diff * 100:.2f} points"
        a, b = m.crosscheck.get("failure_rate_a"), m.crosscheck.get("failure_rate_b")
        if a is not None and b is not None:
            diff_text += f" ({_pct(a)} vs {_pct(b)})"
    rows.append(Objective(
        "crosscheck_failure_rate_difference", "cross-check failure-rate diff",
        "<= 2 points", "last push", "dumbkv_crosscheck", diff, diff_text,
        None if diff is None else diff <= MAX_FAILURE_RATE_DIFF + _EPS,
        None if diff is None else budget_below(diff, MAX_FAILURE_RATE_DIFF),
        extra={"failure_rate_a": m.crosscheck.get("failure_rate_a"),
               "failure_rate_b": m.crosscheck.get("failure_rate_b")},
    ))
    return rows


@dataclass
class Report:
    measurements: Measurements
    objectives: list[Objective]

    @property
    def not_met(self) -> list[str]:
        return [o.id for o in self.objectives if o.kind == "objective" and o.met is False]

    @property
    def exit_code(self) -> int:
        return 1 if self.not_met else 0

    def as_dict(self) -> dict[str, Any]:
        m = self.measurements
        return {
            "source": m.source,
            "url": m.url,
            "window": m.window,
            "server": m.server,
            "maintenance": m.maintenance,
            "objectives": [o.as_dict() for o in self.objectives],
            "not_met": self.not_met,
            "exit_code": self.exit_code,
            "notes": m.notes,
        }

    def table(self) -> str:
        m = self.measurements
        where = ("admin port; command figures since the process started" if m.source == "admin"
                 else f"Prometheus; command figures over the last {m.window}")
        lines = [f"dumbkv slo: {m.url} ({where})"]
        if m.server:
            about = [f"dumbkv {m.server.get('version', '?')}", str(m.server.get("backend", "?"))]
            uptime = _number(m.server.get("uptime_seconds"))
            if uptime is not None:
                about.append(f"up {uptime:.0f} s")
            lines.append("  server: " + ", ".join(about))
        if m.maintenance is not None:
            lines.append(f"  maintenance window in progress: {'yes' if m.maintenance else 'no'}")
        head = ("objective", "target", "window", "measured", "status", "budget left")
        body = [
            (o.objective, o.target, o.window, o.measured_text, o.status,
             "-" if o.budget_left is None else f"{o.budget_left * 100:.1f} %")
            for o in self.objectives
        ]
        widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
        lines.append("")
        for r in [head, *body]:
            lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True))
                         .rstrip())
        lines.append("")
        lines.extend(f"  note: {n}" for n in m.notes)
        lines.append("NOT MET: " + ", ".join(self.not_met) if self.not_met else "MET")
        return "\n".join(lines)


# --------------------------------------------------------------------------- HTTP
def _check_url(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise SourceError(f"not an http(s) URL: {url!r}")
    return url.rstrip("/")


def _get(url: str, timeout: float) -> tuple[int, bytes]:
    """(status, body); an HTTP error status is returned, a failed connection raised."""
    try:
        return http_request("GET", url, timeout=timeout)
    except (OSError, ValueError) as exc:  # URLError, refused, timeout, bad port
        reason = getattr(exc, "reason", exc)
        raise SourceError(f"cannot reach {url}: {reason}") from None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        x = float(value)
    except ValueError:
        return None
    return None if math.isnan(x) else x


# --------------------------------------------------------------------------- admin port
def read_admin(url: str, timeout: float = 10.0) -> Measurements:
    """Everything from a running server's admin port."""
    base = _check_url(url)
    status, body = _get(base + "/metrics", timeout)
    if status != 200:
        raise SourceError(f"{base}/metrics answered HTTP {status}")
    m = Measurements("admin", base, "since start")
    gauge: dict[str, float] = {}
    seen_up = False
    try:
        for family in text_string_to_metric_families(body.decode("utf-8", "replace")):
            for s in family.samples:
                if s.name == "dumbkv_up":
                    seen_up = True
                elif s.name == "dumbkv_commands_total":
                    st = s.labels.get("status")
                    if st == "ok":
                        m.ok += s.value
                    elif st == "server_error":
                        m.server_error += s.value
                    elif st == "client_error":
                        m.client_error += s.value
                elif s.name == "dumbkv_command_duration_seconds_bucket":
                    le = float(s.labels["le"])
                    m.buckets[le] = m.buckets.get(le, 0.0) + s.value
                elif s.name == "dumbkv_crosscheck" and s.labels.get("figure") in _FIGURES:
                    m.crosscheck[s.labels["figure"]] = s.value
                elif s.name == "dumbkv_availability_ratio" and "window" in s.labels:
                    gauge[s.labels["window"]] = s.value
    except (ValueError, KeyError) as exc:
        raise SourceError(f"{base}/metrics is not Prometheus text: {exc}") from None
    if not seen_up:
        raise SourceError(f"{base}/metrics has no dumbkv_up: not a DumbKV admin port?")

    status, body = _get(base + "/availability", timeout)
    ledger: Any = None
    if status == 200:
        try:
            ledger = json.loads(body)
        except ValueError:
            m.notes.append("/availability did not answer JSON; ignored")
    elif status != 404:
        m.notes.append(f"/availability answered HTTP {status}; ignored")
    exclusion = STARTUP_EXCLUSION
    if isinstance(ledger, dict):
        exclusion = _number(ledger.get("startup_exclusion_seconds")) or exclusion
        m.availability_source = "/availability"
        m.availability = {w: _number(ledger.get(w)) for w in ("7d", "2h")}
        maintenance = ledger.get("maintenance")
        m.maintenance = maintenance if isinstance(maintenance, bool) else None
    elif gauge:
        m.availability_source = "dumbkv_availability_ratio"
        m.availability = {w: _number(gauge.get(w)) for w in ("7d", "2h")}
    else:
        m.notes.append("no availability ledger (/availability, dumbkv_availability_ratio): "
                       "availability is no data")

    status, body = _get(base + "/health", timeout)
    if status == 200:
        try:
            health = json.loads(body)
        except ValueError:
            health = None
        if isinstance(health, dict):
            m.server = {k: health[k] for k in ("version", "backend", "uptime_seconds")
                        if k in health}
            uptime = _number(health.get("uptime_seconds"))
            if uptime is not None and uptime < exclusion:
                m.notes.append(
                    f"the server started {uptime:.0f} s ago: the ledger leaves the first "
                    f"{exclusion:g} s out of availability; the command figures include them")
    m.notes.append("command figures are the server's counters since the process started "
                   "(a restart sets them to zero); client errors are not counted")
    return m


# --------------------------------------------------------------------------- Prometheus
class _Prometheus:
    def __init__(self, url: str, timeout: float) -> None:
        self.base = _check_url(url)
        self.timeout = timeout

    def query(self, promql: str) -> list[tuple[dict[str, str], float | None]]:
        """An instant query: [(labels, value)], NaN as None."""
        url = f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        status, body = _get(url, self.timeout)
        try:
            answer = json.loads(body)
        except ValueError:
            raise SourceError(f"{self.base} answered HTTP {status} without JSON: "
                              "not a Prometheus server?") from None
        if not isinstance(answer, dict) or answer.get("status") != "success":
            error = answer.get("error") if isinstance(answer, dict) else None
            raise SourceError(f"Prometheus query failed (HTTP {status}): {error}: {promql}")
        data = answer.get("data") or {}
        if data.get("resultType") == "scalar":
            return [({}, _number(data["result"][1]))]
        return [(dict(r.get("metric", {})), _number(r["value"][1]))
                for r in data.get("result", [])]

    def scalar(self, promql: str) -> float | None:
        result = self.query(promql)
        return result[0][1] if result else None


def _selector(selector: str, *matchers: str) -> str:
    parts = [p for p in (*matchers, selector.strip().strip("{}").strip()) if p]
    return "{" + ", ".join(parts) + "}"


def read_prometheus(url: str, window: str = "7d", selector: str = "",
                    timeout: float = 10.0) -> Measurements:
    """Everything from a Prometheus server that scrapes DumbKV's admin port."""
    if not _DURATION.match(window):
        raise SourceError(f"not a PromQL duration: {window!r} (e.g. 5m, 2h, 7d)")
    prom = _Prometheus(url, timeout)
    m = Measurements("prometheus", prom.base, window, approximate=True)

    def sel(*matchers: str) -> str:
        return _selector(selector, *matchers)

    if not prom.query(f"max_over_time(dumbkv_up{sel()}[{window}])"):
        raise SourceError(f"Prometheus at {prom.base} has no dumbkv_up{sel()} in the last "
                          f"{window}: is it scraping DumbKV's admin port?")
    for labels, value in prom.query(
        f"sum by (status) (increase(dumbkv_commands_total{sel()}[{window}]))"
    ):
        st = labels.get("status")
        if value is not None and st in ("ok", "client_error", "server_error"):
            setattr(m, st, value)
    for labels, value in prom.query(
        f"sum by (le) (increase(dumbkv_command_duration_seconds_bucket{sel()}[{window}]))"
    ):
        if value is not None and "le" in labels:
            le = float(labels["le"])
            m.buckets[le] = m.buckets.get(le, 0.0) + value
    m.p90_seconds = prom.scalar(
        "histogram_quantile(0.9, sum by (le) "
        f"(rate(dumbkv_command_duration_seconds_bucket{sel()}[{window}])))"
    )

    for w in ("7d", "2h"):
        matcher = 'window="' + w + '"'
        ratio = prom.scalar(f"min(dumbkv_availability_ratio{sel(matcher)})")
        if ratio is not None:
            m.availability[w] = ratio
            m.availability_source = "dumbkv_availability_ratio"
    if not m.availability:
        # No ledger gauge: the share of successful scrapes of DumbKV's admin port.
        for w, span in (("7d", window), ("2h", "2h")):
            m.availability[w] = prom.scalar(
                f"avg(avg_over_time(up{sel()}[{span}]) and on (job, instance) "
                f"max_over_time(dumbkv_up{sel()}[{span}]))"
            )
            m.availability_window[w] = span
        m.availability_source = "up (scrapes)"
        m.notes.append(
            "no dumbkv_availability_ratio in Prometheus: availability is the share of "
            "successful scrapes (up), which does not leave out the first 30 s after a start or "
            "maintenance windows")

    worst: dict[str, float] = {}
    for labels, value in prom.query(f"dumbkv_crosscheck{sel()}"):
        figure = labels.get("figure", "")
        if value is None or figure not in _FIGURES:
            continue
        if figure in worst:
            keep = min if figure == "identical_ratio" else max
            value = keep(worst[figure], value)
        worst[figure] = value
    m.crosscheck = worst
    m.notes.append(f"command figures are Prometheus increase() over the last {window}: "
                   "extrapolated to the window's edges, so counts are approximate; client "
                   "errors are not counted")
    return m


# --------------------------------------------------------------------------- command line
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--admin", default=DEFAULT_ADMIN, metavar="URL",
                        help=f"the server's admin port (default {DEFAULT_ADMIN})")
    parser.add_argument("--prometheus", metavar="URL",
                        help="read the figures from this Prometheus server's HTTP API instead "
                             "of the admin port")
    parser.add_argument("--window", default="7d", metavar="DURATION",
                        help="with --prometheus: the window of the latency and error figures "
                             "(a PromQL duration; default 7d)")
    parser.add_argument("--selector", default="", metavar="MATCHERS",
                        help='with --prometheus: label matchers added to every query, e.g. '
                             "'job=\"dumbkv\"'")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                        help="seconds each HTTP request may take (default 10)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def main(args: argparse.Namespace) -> int:
    """``dumbkv slo``: 0 when every objective with data is met, 1 when one is not, 2 when the
    source cannot be read."""
    started = time.monotonic()
    try:
        if args.prometheus:
            m = read_prometheus(args.prometheus, args.window, args.selector, args.timeout)
        else:
            m = read_admin(args.admin, args.timeout)
    except SourceError as exc:
        print(f"dumbkv slo: {exc}", file=sys.stderr)
        return 2
    report = Report(m, evaluate(m))
    if args.json:
        out = report.as_dict()
        out["seconds"] = round(time.monotonic() - started, 3)
        print(json.dumps(out, indent=2))
    else:
        print(report.table())
    return report.exit_code
