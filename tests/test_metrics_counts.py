"""The per-reply, per-byte and per-store-call counts: plain numbers turned into Prometheus
families at scrape time. In process against prometheus-client's own ``Histogram`` and
``Counter`` (the families must be sample for sample what they would write), then against a
real server: INFO and /metrics report the same totals after real traffic.
"""

from __future__ import annotations

import math
import random
import sys
import threading
import urllib.request
from collections import Counter as Tally
from collections.abc import Iterable

import pytest
from conftest import RawClient, ServerProcess, enc
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from dumbkv.errors import Status
from dumbkv.metrics import LATENCY_BUCKETS, Metrics
from dumbkv.session import Stats

DURATION = "dumbkv_command_duration_seconds"
COMMANDS = "dumbkv_commands_total"
STORE = "dumbkv_store_query_duration_seconds"
BYTES = "dumbkv_network_bytes_total"


def samples(registry: CollectorRegistry) -> list[Sample]:
    """Every sample of the registry, as a scrape would parse them (text format)."""
    text = generate_latest(registry).decode()
    return [s for f in text_string_to_metric_families(text) for s in f.samples]


def value(found: Iterable[Sample], name: str, **labels: str) -> float:
    """The one sample of ``name`` with exactly ``labels``."""
    hits = [s.value for s in found if s.name == name and s.labels == labels]
    assert len(hits) == 1, (name, labels, hits)
    return hits[0]


def without_created(found: Iterable[Sample], prefixes: tuple[str, ...]) -> list[Sample]:
    """The samples of the families named by ``prefixes``, each ``_created`` value replaced by
    0 (a creation time differs between two registries; that the sample is there does not)."""
    return [s._replace(value=0.0, timestamp=None) if s.name.endswith("_created") else s
            for s in found if s.name.startswith(prefixes)]


def fresh() -> tuple[Metrics, Stats]:
    metrics = Metrics("sqlite", "0.0.0")
    return metrics, Stats(metrics)


# --------------------------------------------------------------------------- in process
def test_bucket_edges_are_inclusive_and_cumulative() -> None:
    metrics, stats = fresh()
    observed = [1.0, 2.0, math.nextafter(1.0, 2.0), math.nextafter(2.0, 0.0), 0.0005, 0.0,
                10.0, 10.5, 1e9]
    for seconds in observed:
        stats.record("get", "ok", seconds)
    found = samples(metrics.registry)

    def bucket(le: str) -> float:
        return value(found, DURATION + "_bucket", command="get", backend="sqlite", le=le)

    assert bucket("0.0005") == 2  # 0.0 and 0.0005 itself
    assert bucket("0.5") == 2
    assert bucket("1.0") == 3  # 1.0 exactly, not the value just above it
    assert bucket("2.0") == 6  # just above 1.0, just below 2.0, 2.0 exactly
    assert bucket("5.0") == 6
    assert bucket("10.0") == 7
    assert bucket("+Inf") == len(observed)
    edges = [bucket(le) for le in (*(str(b) for b in LATENCY_BUCKETS), "+Inf")]
    assert edges == sorted(edges)
    assert value(found, DURATION + "_count", command="get", backend="sqlite") == len(observed)
    assert value(found, DURATION + "_sum", command="get", backend="sqlite") == sum(observed)


def test_count_is_the_sum_of_the_status_counts() -> None:
    metrics, stats = fresh()
    statuses: list[Status] = ["ok"] * 5 + ["client_error"] * 3 + ["server_error"] * 2
    for i, status in enumerate(statuses):
        stats.record("set", status, i / 100)
    stats.record("get", "ok", 0.001)
    found = samples(metrics.registry)
    per_status = {s: value(found, COMMANDS, command="set", backend="sqlite", status=s)
                  for s in ("ok", "client_error", "server_error")}
    assert per_status == {"ok": 5, "client_error": 3, "server_error": 2}
    # The duration histogram leaves client errors out (as every SLO does): 5 ok + 2 errors.
    assert value(found, DURATION + "_count", command="set", backend="sqlite") == 7
    assert value(found, DURATION + "_count", command="get", backend="sqlite") == 1
    assert stats.commands == Tally({"set": 10, "get": 1})
    assert stats.statuses == Tally({"ok": 6, "client_error": 3, "server_error": 2})
    assert stats.statuses["never_seen"] == 0


def test_families_are_those_prometheus_client_writes() -> None:
    """Same names, help, types, labels, bucket edges, values and series order as
    prometheus-client's own metrics fed the same observations."""
    metrics, stats = fresh()
    reference = CollectorRegistry()
    duration = Histogram(DURATION, "Time from a command's arrival to its reply, by command; "
                         "client errors are not observed.",
                         ["command", "backend"], buckets=LATENCY_BUCKETS, registry=reference)
    commands = Counter(
        "dumbkv_commands",
        "Replies by command and status: ok, client_error (the client's fault, excluded "
        "from the error SLO) or server_error.",
        ["command", "backend", "status"], registry=reference)
    store = Histogram(STORE,
                      "Time of one call to the storage backend (a batch, a count, a sweep...).",
                      ["backend", "operation"], buckets=LATENCY_BUCKETS, registry=reference)
    network = Counter("dumbkv_network_bytes",
                      "Bytes received (in) and sent (out) on the RESP port.", ["direction"],
                      registry=reference)
    network.labels("in")
    network.labels("out")

    rnd = random.Random(7)
    statuses: list[Status] = ["ok", "client_error", "server_error"]
    for i in range(3000):
        command, status = rnd.choice(["set", "get", "unknown", "protocol"]), rnd.choice(statuses)
        seconds = rnd.choice(LATENCY_BUCKETS) if i % 5 == 0 else rnd.expovariate(40)
        stats.record(command, status, seconds)
        if status != "client_error":
            duration.labels(command, "sqlite").observe(seconds)
        commands.labels(command, "sqlite", status).inc()
        operation, seconds = rnd.choice(["batch", "count", "sweep"]), rnd.expovariate(90)
        metrics.store_call(operation, seconds, True)
        store.labels("sqlite", operation).observe(seconds)
        n = rnd.randrange(300)
        stats.received(n)
        network.labels("in").inc(n)
        stats.sent(n + 5)
        network.labels("out").inc(n + 5)

    prefixes = (DURATION, "dumbkv_commands", STORE, "dumbkv_network_bytes")
    ours = generate_latest(metrics.registry).decode()
    theirs = generate_latest(reference).decode()
    ours_families = {f.name: (f.type, f.documentation)
                     for f in text_string_to_metric_families(ours) if f.name.startswith(prefixes)}
    assert ours_families == {f.name: (f.type, f.documentation)
                             for f in text_string_to_metric_families(theirs)}
    assert without_created(samples(metrics.registry), prefixes) == \
        without_created(samples(reference), prefixes)
    assert stats.bytes_in == value(samples(metrics.registry), BYTES, direction="in")


def test_a_scrape_while_new_series_appear_does_not_fail() -> None:
    metrics, stats = fresh()
    stop = threading.Event()

    def write() -> None:
        i = 0
        while not stop.is_set() and i < 50_000:
            stats.record(f"c{i % 800}", "ok", 0.001)
            metrics.store_call(f"op{i % 800}", 0.001, True)
            i += 1

    writer = threading.Thread(target=write)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often, in the middle of a scrape too
    writer.start()
    try:
        for _ in range(10):
            assert b"dumbkv_commands_total" in generate_latest(metrics.registry)
            assert stats.commands.total() >= 0  # INFO's totals read the records too
    finally:
        stop.set()
        writer.join()
        sys.setswitchinterval(interval)
    found = samples(metrics.registry)
    assert sum(s.value for s in found if s.name == COMMANDS) == stats.commands.total()


# --------------------------------------------------------------------------- real server
def scrape(server: ServerProcess) -> list[Sample]:
    with urllib.request.urlopen(server.admin_url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    return [s for f in text_string_to_metric_families(text) for s in f.samples]


@pytest.mark.backends("sqlite")
def test_info_and_metrics_report_the_same_totals(server: ServerProcess) -> None:
    client = RawClient(server.address)
    sent = 0

    def call(*args: str) -> object:
        nonlocal sent
        request = enc(*args)
        sent += len(request)
        client.send(request)
        return client.read_reply()

    try:
        for i in range(7):
            assert call("SET", f"k{i}", "v") == "OK"
        for i in range(4):
            assert call("GET", f"k{i}") == b"v"
        assert call("GET")[0] == "error"  # type: ignore[index]  # wrong arity: client_error
        for _ in range(3):
            assert call("NOSUCHCOMMAND")[0] == "error"  # type: ignore[index]
        reply = call("INFO", "stats")
        assert isinstance(reply, bytes)
    finally:
        client.sock.close()
    info = {k: int(v) for k, v in (line.split(":", 1) for line in reply.decode().split("\r\n")
                                   if ":" in line)}
    found = scrape(server)

    def total(name: str, **labels: str) -> float:
        return sum(s.value for s in found
                   if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))

    # INFO's own reply is counted once it is written, after INFO read the figures.
    assert total(COMMANDS, command="info", status="ok") == 1
    assert total(COMMANDS) - 1 == info["total_commands_processed"] == 7 + 4 + 1 + 3
    assert total(COMMANDS, status="ok") - 1 == info["replies_ok"] == 11
    assert total(COMMANDS, status="client_error") == info["replies_client_error"] == 4
    assert total(COMMANDS, status="server_error") == info["replies_server_error"] == 0
    assert total(COMMANDS, command="set", status="ok") == 7
    assert total(COMMANDS, command="get", status="client_error") == 1
    assert total(COMMANDS, command="unknown", status="client_error") == 3
    for command in ("set", "get", "unknown", "info"):  # client errors take no duration
        assert total(DURATION + "_count", command=command) == \
            total(COMMANDS, command=command) - total(COMMANDS, command=command,
                                                     status="client_error")
    assert not any(s.name.startswith(DURATION) and s.labels.get("command") == "unknown"
                   for s in found)  # only client errors: no series at all
    assert total(BYTES, direction="in") == info["total_net_input_bytes"] == sent
    reply_bytes = len(b"$%d\r\n" % len(reply)) + len(reply) + 2
    assert total(BYTES, direction="out") == info["total_net_output_bytes"] + reply_bytes
    assert total(STORE + "_count", operation="batch") >= 1
