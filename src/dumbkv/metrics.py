"""Every Prometheus metric DumbKV exports, defined once, here.

One ``Metrics`` per server, each with its own registry (several servers can live in one process:
``dumbkv crosscheck`` runs two). Names follow Prometheus conventions: the ``dumbkv_`` prefix,
base units (seconds, bytes), ``_total`` on counters. Label values are bounded: a command label is
a known command name or ``unknown``; never a key or a value.

The latency buckets include 1.0 and 2.0 exactly, the SLO thresholds (P90 < 1 s, alert > 2 s),
so the SLO is read off real bucket edges, not interpolated.

What is counted per reply, per read or write and per store call (commands, latencies, network
bytes, store calls) is kept as plain Python numbers, with no lock: only the event-loop thread
writes them. They become Prometheus families at scrape time (``_AtScrape``), from a snapshot,
with the names, help texts, labels and bucket edges of prometheus-client's own metrics.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Metric,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client import metrics as _client
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from .errors import Status

__all__ = ["LATENCY_BUCKETS", "Latency", "Metrics", "Replies"]

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0,
)


_go_float: Callable[[float], str] = floatToGoString  # untyped in prometheus-client
#: The ``le`` label of each bucket, as prometheus-client writes it ("1.0", ..., "+Inf").
_LE = (*(_go_float(bound) for bound in LATENCY_BUCKETS), "+Inf")


class Latency:
    """One latency histogram series as plain numbers (one writer: the event-loop thread).

    ``buckets[i]`` counts the observations that fell in bucket ``i`` alone (not cumulative):
    the first bound they do not exceed (``le``: value <= bound); the last one is +Inf.
    """

    __slots__ = ("buckets", "created", "sum")

    def __init__(self) -> None:
        self.buckets = [0] * (len(LATENCY_BUCKETS) + 1)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, seconds: float) -> None:
        """Count one observation (the hot path: one bisect, no lock)."""
        self.sum += seconds
        self.buckets[bisect_left(LATENCY_BUCKETS, seconds)] += 1

    def cumulative(self) -> list[tuple[str, float]]:
        """The ``(le, count)`` pairs of the series, cumulative, +Inf last."""
        total = 0.0
        pairs = []
        for le, n in zip(_LE, list(self.buckets), strict=True):
            total += n
            pairs.append((le, total))
        return pairs


class Replies:
    """The replies of one (command, status): their count, and the latency histogram of the
    command (one per command, shared by ``ok`` and ``server_error``; client errors have their
    own, not exported). Written by the event-loop thread only."""

    __slots__ = ("count", "created", "latency")

    def __init__(self, latency: Latency) -> None:
        self.count = 0
        self.latency = latency
        self.created = time.time()


class _AtScrape(Collector):
    """Families computed when Prometheus scrapes."""

    def __init__(self, collect: Callable[[], list[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> list[Metric]:
        return self._collect()


def _gauge(name: str, doc: str, labels: list[str],
           values: dict[tuple[str, ...], float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for label_values, value in values.items():
        family.add_metric(list(label_values), value)
    return family


def _histogram(name: str, doc: str, labels: list[str],
               series: Iterable[tuple[list[str], Latency]]) -> HistogramMetricFamily:
    """A histogram family sample for sample as prometheus-client's ``Histogram`` writes it."""
    family = HistogramMetricFamily(name, doc, labels=labels)
    created = _client._use_created
    for label_values, latency in series:
        family.add_metric(label_values, latency.cumulative(), latency.sum)
        if created:
            family.samples.append(Sample(name + "_created", dict(zip(labels, label_values,
                                                                       strict=True)),
                                         latency.created, None, None))
    return family


def _counter(name: str, doc: str, labels: list[str],
             series: Iterable[tuple[list[str], float, float]]) -> CounterMetricFamily:
    """A counter family from (label values, value, creation time) triples."""
    family = CounterMetricFamily(name, doc, labels=labels)
    created = _client._use_created
    for label_values, value, since in series:
        family.add_metric(label_values, float(value), since if created else None)
    return family


class Metrics:
    """The metrics of one server, in their own registry.

    ``replies`` ((command, status) -> ``Replies``), ``bytes_in``, ``bytes_out`` and the store
    call histograms are plain numbers written by the event-loop thread only (no lock); they
    are also what INFO reports, so INFO and /metrics never disagree.
    """

    def __init__(self, backend: str, version: str) -> None:
        self.backend = backend
        #: Replies by (command, status); ``Stats.record`` counts into them.
        self.replies: dict[tuple[str, Status], Replies] = {}
        #: One latency histogram per command, in the order commands were first seen.
        self.command_latency: dict[str, Latency] = {}
        #: One latency histogram per store operation.
        self.store_latency: dict[str, Latency] = {}
        #: Bytes received and sent on the RESP port.
        self.bytes_in = 0
        self.bytes_out = 0
        self._started = time.time()
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        r.register(_AtScrape(self._command_families))
        r.register(_AtScrape(self._store_families))
        self.connections_active = Gauge(
            "dumbkv_connections_active", "Open client connections.", registry=r
        )
        self.connections = Counter(
            "dumbkv_connections", "Client connections accepted.", registry=r
        )
        r.register(_AtScrape(self._network_families))
        self.protocol_errors = Counter(
            "dumbkv_protocol_errors",
            "Malformed requests (the connection was closed after the error).", registry=r,
        )
        self.admin_requests = Counter(
            "dumbkv_admin_http_requests", "Admin HTTP requests by path and status code.",
            ["path", "code"], registry=r,
        )
        self.admin_duration = Histogram(
            "dumbkv_admin_http_request_duration_seconds", "Admin HTTP request time by path.",
            ["path"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.crosscheck = Gauge(
            "dumbkv_crosscheck",
            "Figures of the last cross-check pushed to this server (identical_ratio, "
            "failure_rate_a, failure_rate_b, failure_rate_difference).",
            ["figure"], registry=r,
        )
        #: When the last cross-check was pushed (Unix seconds), None before any push.
        self.crosscheck_pushed_at: float | None = None
        self.add_gauge(
            "dumbkv_crosscheck_last_push_timestamp_seconds",
            "When the figures of dumbkv_crosscheck were pushed (Unix time); absent until then.",
            [], lambda: {} if self.crosscheck_pushed_at is None else
            {(): self.crosscheck_pushed_at},
        )
        self.up = Gauge("dumbkv_up", "1 while the server runs.", registry=r)
        self.up.set(1)
        Gauge("dumbkv_build_info", "Version and store backend; always 1.",
              ["version", "backend"], registry=r).labels(version, backend).set(1)

    def add_gauge(self, name: str, doc: str, labels: list[str],
                  read: Callable[[], dict[tuple[str, ...], float]]) -> None:
        """Register a gauge computed at scrape time."""
        self.registry.register(_AtScrape(lambda: [_gauge(name, doc, labels, read())]))

    def replies_of(self, command: str, status: Status) -> Replies:
        """The record of (command, status), created on first use."""
        replies = self.replies.get((command, status))
        if replies is None:
            if status == "client_error":
                # Left out of the latency SLI, as out of every SLO: a flood of fast refusals
                # must not hide slow real commands. Observed into a histogram nobody exports.
                latency = Latency()
            else:
                latency = self.command_latency.setdefault(command, Latency())
            replies = self.replies[(command, status)] = Replies(latency)
        return replies

    def store_call(self, operation: str, seconds: float, ok: bool) -> None:
        """Observe one call to the store backend (failed calls too)."""
        latency = self.store_latency.get(operation)
        if latency is None:
            latency = self.store_latency[operation] = Latency()
        latency.observe(seconds)

    # ----------------------------------------------------------------- scrape time
    def _command_families(self) -> list[Metric]:
        backend = self.backend
        return [
            _histogram(
                "dumbkv_command_duration_seconds",
                "Time from a command's arrival to its reply, by command; client errors are "
                "not observed.",
                ["command", "backend"],
                [([command, backend], latency)
                 for command, latency in list(self.command_latency.items())],
            ),
            _counter(
                "dumbkv_commands",
                "Replies by command and status: ok, client_error (the client's fault, excluded "
                "from the error SLO) or server_error.",
                ["command", "backend", "status"],
                [([command, backend, status], replies.count, replies.created)
                 for (command, status), replies in list(self.replies.items())],
            ),
        ]

    def _store_families(self) -> list[Metric]:
        backend = self.backend
        return [_histogram(
            "dumbkv_store_query_duration_seconds",
            "Time of one call to the storage backend (a batch, a count, a sweep...).",
            ["backend", "operation"],
            [([backend, operation], latency)
             for operation, latency in list(self.store_latency.items())],
        )]

    def _network_families(self) -> list[Metric]:
        return [_counter(
            "dumbkv_network_bytes", "Bytes received (in) and sent (out) on the RESP port.",
            ["direction"],
            [(["in"], self.bytes_in, self._started), (["out"], self.bytes_out, self._started)],
        )]
