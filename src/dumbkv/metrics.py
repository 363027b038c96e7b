"""Every Prometheus metric DumbKV exports, defined once, here.

One ``Metrics`` per server, each with its own registry (several servers can live in one process:
``dumbkv crosscheck`` runs two). Names follow Prometheus conventions: the ``dumbkv_`` prefix,
base units (seconds, bytes), ``_total`` on counters. Label values are bounded: a command label is
a known command name or ``unknown``; never a key or a value.

The latency buckets include 1.0 and 2.0 exactly, the SLO thresholds (P90 < 1 s, alert > 2 s),
so the SLO is read off real bucket edges, not interpolated.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from .errors import Status

__all__ = ["LATENCY_BUCKETS", "Metrics"]

LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0,
)


class _Callback(Collector):
    """A gauge whose value is read when Prometheus scrapes (store size, availability)."""

    def __init__(self, name: str, doc: str, labels: list[str],
                 read: Callable[[], dict[tuple[str, ...], float]]) -> None:
        self._name, self._doc, self._labels, self._read = name, doc, labels, read

    def collect(self) -> list[GaugeMetricFamily]:
        family = GaugeMetricFamily(self._name, self._doc, labels=self._labels)
        for labels, value in self._read().items():
            family.add_metric(list(labels), value)
        return [family]


class Metrics:
    def __init__(self, backend: str, version: str) -> None:
        self.backend = backend
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        self.command_duration = Histogram(
            "dumbkv_command_duration_seconds",
            "Time from a command's arrival to its reply, by command.",
            ["command", "backend"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.commands = Counter(
            "dumbkv_commands",
            "Replies by command and status: ok, client_error (the client's fault, excluded "
            "from the error SLO) or server_error.",
            ["command", "backend", "status"], registry=r,
        )
        self.store_query_duration = Histogram(
            "dumbkv_store_query_duration_seconds",
            "Time of one call to the storage backend (a batch, a count, a sweep...).",
            ["backend", "operation"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.connections_active = Gauge(
            "dumbkv_connections_active", "Open client connections.", registry=r
        )
        self.connections = Counter(
            "dumbkv_connections", "Client connections accepted.", registry=r
        )
        self.network_bytes = Counter(
            "dumbkv_network_bytes", "Bytes received (in) and sent (out) on the RESP port.",
            ["direction"], registry=r,
        )
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
        self.up = Gauge("dumbkv_up", "1 while the server runs.", registry=r)
        self.up.set(1)
        Gauge("dumbkv_build_info", "Version and store backend; always 1.",
              ["version", "backend"], registry=r).labels(version, backend).set(1)
        self._children: dict[tuple[str, str], tuple[Callable[[float], None],
                                                    Callable[[], None]]] = {}
        self._bytes_in = self.network_bytes.labels("in")
        self._bytes_out = self.network_bytes.labels("out")

    def add_gauge(self, name: str, doc: str, labels: list[str],
                  read: Callable[[], dict[tuple[str, ...], float]]) -> None:
        """Register a gauge computed at scrape time."""
        self.registry.register(_Callback(name, doc, labels, read))

    def command(self, command: str, status: Status, seconds: float) -> None:
        """Count one reply (the hot path: label children are looked up once)."""
        children = self._children.get((command, status))
        if children is None:
            children = (
                self.command_duration.labels(command, self.backend).observe,
                self.commands.labels(command, self.backend, status).inc,
            )
            self._children[(command, status)] = children
        children[0](seconds)
        children[1]()

    def store_call(self, operation: str, seconds: float, ok: bool) -> None:
        self.store_query_duration.labels(self.backend, operation).observe(seconds)

    def bytes_in(self, n: int) -> None:
        self._bytes_in.inc(n)

    def bytes_out(self, n: int) -> None:
        self._bytes_out.inc(n)
