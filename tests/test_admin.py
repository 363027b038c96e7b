"""The admin port (health, readiness, metrics, crosscheck push), structured logs and graceful
shutdown, checked from outside real server processes over real sockets and real HTTP.

Every test that starts a server runs on SQLite and on PostgreSQL (ids ``[sqlite]`` and
``[postgres]``) unless it is marked for one backend. Nothing sleeps to synchronise: waits are
bounded polls of something observable (an HTTP answer, a metric, a log line).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import secrets
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from email.message import Message
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import RawClient, ServerProcess, StoreSQL, enc, poll_until
from postgres import Cluster, PgConn
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from dumbkv.commands import TABLE

Factory = type[ServerProcess]
T = TypeVar("T")

SOCKET_TIMEOUT = 10.0
HTTP_TIMEOUT = 10.0
KNOWN_COMMANDS = {cmd.name for cmd in TABLE.values()}
STATUSES = {"ok", "client_error", "server_error"}
README = Path(__file__).resolve().parent.parent / "README.md"

# Without a proxy, whatever the environment says: every request goes to 127.0.0.1.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# =========================================================================== helpers
def http(method: str, url: str, body: bytes | None = None,
         content_type: str = "application/json") -> tuple[int, Message, bytes]:
    """One HTTP request: (status, headers, body), for error statuses too."""
    request = urllib.request.Request(url, data=body, method=method)
    if body is not None:
        request.add_header("Content-Type", content_type)
    try:
        with _OPENER.open(request, timeout=HTTP_TIMEOUT) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        with contextlib.closing(exc):
            return exc.code, exc.headers, exc.read()


def get_json(url: str) -> tuple[int, Any]:
    status, headers, body = http("GET", url)
    assert headers.get_content_type() == "application/json", (url, headers)
    return status, json.loads(body)


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 30.0) -> T:
    return poll_until(what, probe, timeout, 0.02)


class Scrape:
    """One /metrics answer, parsed with prometheus-client's own parser."""

    def __init__(self, server: ServerProcess) -> None:
        status, headers, body = http("GET", server.admin_url + "/metrics")
        assert status == 200, body
        self.content_type = headers["Content-Type"]
        self.body = body
        self.text = body.decode("utf-8")
        self.families = {f.name: f for f in text_string_to_metric_families(self.text)}
        self.samples: list[Sample] = [s for f in self.families.values() for s in f.samples]

    def matching(self, name: str, **labels: str) -> list[Sample]:
        return [s for s in self.samples
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]

    def total(self, name: str, **labels: str) -> float:
        """Sum of every sample of ``name`` whose labels include ``labels`` (0 when none)."""
        return sum(s.value for s in self.matching(name, **labels))

    def value(self, name: str, **labels: str) -> float:
        """The one sample of ``name`` with exactly ``labels``."""
        found = [s for s in self.samples if s.name == name and s.labels == labels]
        assert len(found) == 1, (name, labels, found)
        return found[0].value

    def label_values(self, name: str, label: str) -> set[str]:
        return {s.labels[label] for s in self.samples if s.name == name and label in s.labels}


class Tally:
    """Bytes and connections a test sent to and got from the RESP port."""

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0
        self.connections = 0


class Client(RawClient):
    """A raw RESP connection that adds every byte each way to a ``Tally``."""

    def __init__(self, server: ServerProcess, tally: Tally) -> None:
        super().__init__(server.address, timeout=SOCKET_TIMEOUT)
        self.tally = tally
        tally.connections += 1

    def send(self, data: bytes) -> None:
        self.tally.sent += len(data)
        super().send(data)

    def _fill(self) -> None:
        before = len(self.buf)
        try:
            super()._fill()
        finally:
            self.tally.received += len(self.buf) - before

    def is_closed(self, timeout: float = 5.0) -> bool:
        before = len(self.buf)
        try:
            return super().is_closed(timeout)
        finally:
            self.tally.received += len(self.buf) - before

    def call(self, *args: bytes | str | int) -> object:
        self.send(enc(*args))
        return self.read_reply()


def admin_paths(server: ServerProcess) -> set[str]:
    """The path label values the admin port may use: its routes (as / lists them) and
    ``other``."""
    status, index = get_json(server.admin_url + "/")
    assert status == 200
    return {"/", "other"} | {name.split()[-1] for name in index["endpoints"]}


def is_error(reply: object, prefix: str) -> bool:
    return isinstance(reply, tuple) and reply[0] == "error" and reply[1].startswith(prefix)


def info_stats(client: Client) -> dict[str, int]:
    reply = client.call("INFO", "stats")
    assert isinstance(reply, bytes), reply
    fields = dict(line.split(":", 1) for line in reply.decode().split("\r\n") if ":" in line)
    return {k: int(v) for k, v in fields.items()}


def tamper(store_url: str, key: bytes) -> None:
    """Flip one bit of ``key``'s authentication tag, from outside the server (either backend);
    the server then answers -SERVERERR for that key."""
    kid = hashlib.sha256(key).digest()  # the key id without a server secret
    with StoreSQL(store_url) as sql:
        value = bytearray(sql.fetchval("SELECT value FROM kv WHERE db = 0 AND id = ?", kid))
        value[-1] ^= 0x01
        sql.execute("UPDATE kv SET value = ? WHERE db = 0 AND id = ?", bytes(value), kid)


def token(kind: str) -> str:
    """A distinctive string that must never show up in metrics or logs."""
    return f"{kind}-{secrets.token_hex(8)}"


# =========================================================================== endpoints
def test_health_index_and_unknown_paths(server: ServerProcess, backend: str) -> None:
    status, body = get_json(server.admin_url + "/health")
    assert status == 200
    assert body["status"] == "ok"
    assert body["backend"] == backend
    assert isinstance(body["version"], str) and body["version"]
    assert body["uptime_seconds"] >= 0

    status, index = get_json(server.admin_url + "/")
    assert status == 200
    endpoints = index["endpoints"]
    for path in ("/health", "/ready", "/metrics"):
        assert path in endpoints, index
    assert any("/crosscheck" in name for name in endpoints), index

    status, ready = get_json(server.admin_url + "/ready")
    assert (status, ready["status"]) == (200, "ready"), ready

    before = Scrape(server)
    secret_paths = [f"/{token('path')}", f"/keys/{token('path')}?q={token('query')}",
                    f"/health/{token('path')}"]
    for path in secret_paths:
        status, _, _ = http("GET", server.admin_url + path)
        assert status == 404, path
    status, _, _ = http("POST", server.admin_url + "/health", b"{}")  # known path, wrong method
    assert status == 405
    after = Scrape(server)

    # Every unknown path is counted under one bounded label, never under the raw path.
    assert after.total("dumbkv_admin_http_requests_total", path="other", code="404") - \
        before.total("dumbkv_admin_http_requests_total", path="other", code="404") == 3
    assert after.total("dumbkv_admin_http_requests_total", code="405") - \
        before.total("dumbkv_admin_http_requests_total", code="405") == 1
    paths = admin_paths(server)
    assert {"/", "/health", "/ready", "/metrics", "/crosscheck", "other"} <= paths
    assert after.label_values("dumbkv_admin_http_requests_total", "path") <= paths
    assert after.label_values("dumbkv_admin_http_request_duration_seconds_count", "path") \
        <= paths
    for path in secret_paths:
        for part in re.split(r"[/?=]", path):
            if part.startswith(("path-", "query-")):
                assert part not in after.text


def test_admin_requests_are_counted_exactly(server: ServerProcess) -> None:
    first = Scrape(server)
    health = 7
    for _ in range(health):
        assert http("GET", server.admin_url + "/health")[0] == 200
    second = Scrape(server)
    key = {"path": "/health", "code": "200"}
    assert second.total("dumbkv_admin_http_requests_total", **key) - \
        first.total("dumbkv_admin_http_requests_total", **key) == health
    assert second.total("dumbkv_admin_http_request_duration_seconds_count", path="/health") - \
        first.total("dumbkv_admin_http_request_duration_seconds_count", path="/health") == health
    # A scrape is counted once it has answered: the next scrape sees exactly one more.
    scrapes = {"path": "/metrics", "code": "200"}
    assert second.total("dumbkv_admin_http_requests_total", **scrapes) == \
        first.total("dumbkv_admin_http_requests_total", **scrapes) + 1
    # /ready is counted too, under its own path and code.
    assert http("GET", server.admin_url + "/ready")[0] == 200
    third = Scrape(server)
    assert third.total("dumbkv_admin_http_requests_total", path="/ready", code="200") == \
        second.total("dumbkv_admin_http_requests_total", path="/ready", code="200") + 1


def test_metrics_format_and_fixed_series(
    server_factory: Factory, tmp_path: Path, backend: str
) -> None:
    srv = server_factory(tmp_path, "--sweep-interval", "0.1").start()
    tally = Tally()
    client = Client(srv, tally)
    try:
        assert client.call("SET", "k", "v") == "OK"
    finally:
        client.close()
    assert http("GET", srv.admin_url + "/health")[0] == 200

    scrape = Scrape(srv)
    assert scrape.content_type == CONTENT_TYPE_LATEST
    assert re.fullmatch(r"text/plain; version=[0-9.]+; charset=utf-8", scrape.content_type)

    families = scrape.families
    assert families["dumbkv_command_duration_seconds"].type == "histogram"
    assert families["dumbkv_store_query_duration_seconds"].type == "histogram"
    assert families["dumbkv_admin_http_request_duration_seconds"].type == "histogram"
    assert families["dumbkv_commands"].type == "counter"
    for name in ("dumbkv_command_duration_seconds_bucket",
                 "dumbkv_store_query_duration_seconds_bucket",
                 "dumbkv_admin_http_request_duration_seconds_bucket"):
        edges = scrape.label_values(name, "le")
        # The SLO thresholds are real bucket edges, written exactly so.
        assert {"1.0", "2.0", "0.001", "0.5", "5.0", "+Inf"} <= edges, (name, edges)
    set_buckets = scrape.matching("dumbkv_command_duration_seconds_bucket", command="set")
    assert {s.labels["backend"] for s in set_buckets} == {backend}

    assert scrape.value("dumbkv_build_info", version=srv_version(srv), backend=backend) == 1
    assert scrape.value("dumbkv_up") == 1
    assert scrape.value("process_cpu_seconds_total") > 0
    assert scrape.value("process_resident_memory_bytes") > 1_000_000
    assert families["process_cpu_seconds"].type == "counter"

    # The store's size is measured by the sweeper (every 0.1 s here).
    def size() -> float | None:
        found = Scrape(srv).matching("dumbkv_store_size_bytes", backend=backend)
        return found[0].value if found else None

    assert wait_for("dumbkv_store_size_bytes", size, 20) > 0


def srv_version(server: ServerProcess) -> str:
    status, body = get_json(server.admin_url + "/health")
    assert status == 200
    return str(body["version"])


# =========================================================================== counters
def test_scripted_session_moves_every_counter_exactly(
    server: ServerProcess, backend: str
) -> None:
    key, value = token("key"), token("value")
    victim, victim_value = token("victim"), token("victimvalue")
    counter = token("counter")
    unknown_a, unknown_b = token("frobnicate"), token("xyzzy")
    needles = [key, value, victim, victim_value, counter, unknown_a, unknown_b]

    tally = Tally()
    before = Scrape(server)
    a = Client(server, tally)
    try:
        # --------------------------------------------------- ok (N)
        oks = [
            (("SET", key, value), "OK"),
            (("GET", key), value.encode()),
            (("INCR", counter), 1),
            (("INCR", counter), 2),
            (("GET", token("missing")), None),
            (("SET", victim, victim_value), "OK"),
        ]
        for args, expected in oks:
            assert a.call(*args) == expected, args
        mid = Scrape(server)
        assert mid.value("dumbkv_connections_active") == before.value(
            "dumbkv_connections_active") + 1

        # --------------------------------------------------- client errors (M)
        client_errors = [
            (unknown_a, key, value),       # unknown command, with a key and value as args
            (unknown_b,),                  # another unknown name: the same label
            ("GET",),                      # wrong arity
            ("SET", key, value, "BOGUS"),  # syntax
            ("INCR", key),                 # not an integer
        ]
        for args in client_errors:
            assert is_error(a.call(*args), "ERR "), args

        # --------------------------------------------------- server errors (K)
        tamper(server.store, victim.encode())
        server_errors = [("GET", victim), ("GET", victim), ("INCR", victim)]
        for args in server_errors:
            assert is_error(a.call(*args), "SERVERERR "), args

        # --------------------------------------------------- protocol error: closes
        b = Client(server, tally)
        try:
            b.send(b"*abc\r\n")
            assert b.read_line() == b"-ERR Protocol error: invalid multibulk length"
            assert b.is_closed()
        finally:
            b.close()

        c = Client(server, tally)
        try:
            info = info_stats(c)
        finally:
            c.close()
    finally:
        a.close()

    n, m, k = len(oks), len(client_errors), len(server_errors)
    # INFO's figures are taken before INFO itself is counted.
    assert info["replies_ok"] == n
    assert info["replies_client_error"] == m + 1  # + the protocol error
    assert info["replies_server_error"] == k
    assert info["protocol_errors"] == 1
    assert info["total_commands_processed"] == n + m + k + 1
    assert info["total_connections_received"] == tally.connections == 3
    assert info["total_net_input_bytes"] == tally.sent

    # The connections are closed by the clients: the gauge comes back down.
    wait_for("connections_active back to its start",
             lambda: Scrape(server).value("dumbkv_connections_active")
             == before.value("dumbkv_connections_active"), 10)
    after = Scrape(server)

    def delta(name: str, **labels: str) -> float:
        return after.total(name, **labels) - before.total(name, **labels)

    # By status: the session, plus the INFO call (ok) and the protocol error (client_error).
    assert delta("dumbkv_commands_total", status="ok") == n + 1
    assert delta("dumbkv_commands_total", status="client_error") == m + 1
    assert delta("dumbkv_commands_total", status="server_error") == k
    # ... which is what INFO said, plus INFO itself.
    assert after.total("dumbkv_commands_total", status="ok") == info["replies_ok"] + 1
    assert after.total("dumbkv_commands_total", status="client_error") == \
        info["replies_client_error"]
    assert after.total("dumbkv_commands_total", status="server_error") == \
        info["replies_server_error"]
    # By command, where the label is not in question.
    expect = {
        ("set", "ok"): 2, ("get", "ok"): 2, ("incr", "ok"): 2, ("info", "ok"): 1,
        ("set", "client_error"): 1, ("incr", "client_error"): 1,
        ("get", "server_error"): 2, ("incr", "server_error"): 1,
        ("protocol", "client_error"): 1,
    }
    for (command, status), count in expect.items():
        assert delta("dumbkv_commands_total", command=command, status=status,
                     backend=backend) == count, (command, status)
    # Two different unknown names share one label value; no label value is client-chosen.
    assert delta("dumbkv_commands_total", command="unknown", status="client_error") >= 2
    assert after.label_values("dumbkv_commands_total", "command") <= \
        KNOWN_COMMANDS | {"unknown", "protocol"}
    assert after.label_values("dumbkv_commands_total", "status") <= STATUSES
    assert after.label_values("dumbkv_commands_total", "backend") == {backend}
    for needle in needles:
        assert needle.encode() not in after.body, needle
        assert needle.lower().encode() not in after.body.lower(), needle

    # One duration observation per reply, except client errors (left out of the latency SLI).
    commands = n + m + k + 2
    assert delta("dumbkv_commands_total") == commands
    observed = commands - delta("dumbkv_commands_total", status="client_error")
    assert observed < commands
    assert delta("dumbkv_command_duration_seconds_count") == observed
    assert delta("dumbkv_command_duration_seconds_bucket", le="+Inf") == observed

    assert delta("dumbkv_protocol_errors_total") == 1
    assert delta("dumbkv_connections_total") == 3
    assert after.value("dumbkv_connections_active") == before.value("dumbkv_connections_active")
    assert delta("dumbkv_network_bytes_total", direction="in") == tally.sent
    assert delta("dumbkv_network_bytes_total", direction="out") == tally.received
    assert delta("dumbkv_store_query_duration_seconds_count",
                 backend=backend, operation="batch") >= 1
    assert after.label_values("dumbkv_store_query_duration_seconds_count", "backend") == {backend}


def test_wrong_arity_is_counted_under_its_command(server: ServerProcess, backend: str) -> None:
    tally = Tally()
    before = Scrape(server)
    client = Client(server, tally)
    try:
        assert is_error(client.call("GET"), "ERR wrong number of arguments for 'get'")
        assert is_error(client.call("INCR", "a", "b"), "ERR wrong number of arguments")
        assert is_error(client.call(token("nosuchcommand")), "ERR unknown command")
    finally:
        client.close()
    after = Scrape(server)

    def delta(command: str) -> float:
        labels = {"command": command, "status": "client_error", "backend": backend}
        return after.total("dumbkv_commands_total", **labels) - \
            before.total("dumbkv_commands_total", **labels)

    assert (delta("get"), delta("incr"), delta("unknown")) == (1, 1, 1)


# =========================================================================== readiness
@pytest.mark.backends("postgres")
def test_ready_follows_postgres_while_health_stays_up(
    pg_cluster: Cluster, server_factory: Factory, tmp_path: Path
) -> None:
    with PgConn(pg_cluster.dsn()) as admin:
        admin.execute("CREATE DATABASE ready")
    srv = server_factory(tmp_path, "--store-timeout", "2", store=pg_cluster.dsn("ready")).start()
    assert get_json(srv.admin_url + "/ready")[0] == 200
    tally = Tally()

    try:
        pg_cluster.stop("fast")

        def unready() -> Any:
            status, body = get_json(srv.admin_url + "/ready")
            return body if status == 503 else None

        body = wait_for("/ready to answer 503 with PostgreSQL down", unready, 30)
        assert body["status"] == "unready"
        assert body["reasons"] and all(isinstance(r, str) and r for r in body["reasons"])
        assert any("store" in r for r in body["reasons"]), body
        assert not any("draining" in r for r in body["reasons"]), body
        # Liveness never depends on the database.
        for _ in range(3):
            status, health = get_json(srv.admin_url + "/health")
            assert (status, health["status"]) == (200, "ok")
        # The data port is alive too: PING needs no store.
        client = Client(srv, tally)
        try:
            assert client.call("PING") == "PONG"
        finally:
            client.close()
        scrape = Scrape(srv)
        assert scrape.total("dumbkv_admin_http_requests_total", path="/ready", code="503") >= 1
        assert scrape.value("dumbkv_up") == 1
    finally:
        pg_cluster.start()

    wait_for("/ready back to 200 after PostgreSQL restarted",
             lambda: get_json(srv.admin_url + "/ready")[0] == 200, 30)
    client = Client(srv, tally)
    try:
        assert client.call("SET", "k", "after") == "OK"
    finally:
        client.close()
    assert srv.proc is not None and srv.proc.poll() is None


@pytest.mark.backends("sqlite")
def test_ready_fails_when_the_sqlite_file_is_deleted(
    server_factory: Factory, tmp_path: Path
) -> None:
    srv = server_factory(tmp_path).start()
    assert get_json(srv.admin_url + "/ready")[0] == 200
    for name in ("dumbkv.db", "dumbkv.db-wal", "dumbkv.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    status, body = get_json(srv.admin_url + "/ready")
    assert status == 503, body
    assert body["status"] == "unready"
    assert any("sqlite database file" in r for r in body["reasons"]), body
    status, health = get_json(srv.admin_url + "/health")
    assert (status, health["status"]) == (200, "ok")


# =========================================================================== crosscheck
def test_crosscheck_push_sets_the_gauges(server: ServerProcess) -> None:
    figures = {"identical_ratio": 0.995, "failure_rate_a": 0.0125,
               "failure_rate_b": 0.03, "failure_rate_difference": 0.0175}
    pushed = "dumbkv_crosscheck_last_push_timestamp_seconds"
    assert not Scrape(server).matching(pushed)  # absent until a push
    before = time.time()
    status, _, body = http("POST", server.admin_url + "/crosscheck",
                           json.dumps(figures).encode())
    after = time.time()
    assert status == 200, body
    assert json.loads(body)["status"] == "stored"
    scrape = Scrape(server)
    for name, value in figures.items():
        assert scrape.value("dumbkv_crosscheck", figure=name) == value
    assert before <= scrape.value(pushed) <= after

    bad_bodies = [
        b"{not json",
        b"",
        b"[0.5, 0.1, 0.1, 0.0]",
        json.dumps({"identical_ratio": 0.5}).encode(),  # missing figures
        json.dumps({**figures, "identical_ratio": 0.1, "failure_rate_b": "lots"}).encode(),
        # Not a ratio: NaN would keep the alert's comparisons false for ever.
        json.dumps({**figures, "identical_ratio": "nan"}).encode(),
        json.dumps({**figures, "failure_rate_difference": "-inf"}).encode(),
        json.dumps({**figures, "failure_rate_a": 1.5}).encode(),
        json.dumps({**figures, "failure_rate_b": -0.1}).encode(),
    ]
    for bad in bad_bodies:
        status, headers, body = http("POST", server.admin_url + "/crosscheck", bad)
        assert status == 400, (bad, body)
        assert headers.get_content_type() == "application/json"
        assert "error" in json.loads(body)
    # A refused push changes nothing, not even the figures it did get right.
    scrape = Scrape(server)
    for name, value in figures.items():
        assert scrape.value("dumbkv_crosscheck", figure=name) == value
    assert scrape.total("dumbkv_admin_http_requests_total", path="/crosscheck", code="400") \
        == len(bad_bodies)
    assert scrape.label_values("dumbkv_crosscheck", "figure") == set(figures)


# =========================================================================== shutdown
class Writer(threading.Thread):
    """One connection writing INCR counter / SET w<n>:<i> in turn, one command at a time,
    recording what was acknowledged; it stops when the server closes the connection."""

    def __init__(self, server: ServerProcess, n: int, gate: threading.Event | None = None) -> None:
        super().__init__(daemon=True)
        self.n = n
        self.client = RawClient(server.address, timeout=120)
        #: While cleared, the writer parks before its next command (every reply received).
        self.gate = gate
        self.lock = threading.Lock()
        self.parked = False
        self.sent = 0
        self.waiting = False
        self.incrs = 0
        self.sets: dict[bytes, bytes] = {}
        self.unexpected: list[object] = []
        self.ack_times: list[float] = []

    def run(self) -> None:
        i = 0
        try:
            while True:
                if i % 2 == 0:
                    request = enc("INCR", "counter")
                else:
                    key, value = b"w%d:%d" % (self.n, i), b"value-%d-%d" % (self.n, i)
                    request = enc("SET", key, value)
                if self.gate is not None and not self.gate.is_set():
                    with self.lock:
                        self.parked = True
                    self.gate.wait()
                    with self.lock:
                        self.parked = False
                with self.lock:
                    self.sent += len(request)
                    self.waiting = True
                self.client.send(request)
                reply = self.client.read_reply()
                with self.lock:
                    self.waiting = False
                    if i % 2 == 0 and isinstance(reply, int):
                        self.incrs += 1
                    elif i % 2 == 1 and reply == "OK":
                        self.sets[key] = value
                    else:
                        self.unexpected.append(reply)
                    self.ack_times.append(time.monotonic())
                i += 1
        except OSError:  # EOF or reset: the server stopped
            pass
        finally:
            self.client.close()

    def state(self) -> tuple[int, bool, int]:
        """(bytes sent, waiting for a reply, writes acknowledged)."""
        with self.lock:
            return self.sent, self.waiting, self.incrs + len(self.sets)

    def is_parked(self) -> bool:
        with self.lock:
            return self.parked


class Piper(threading.Thread):
    """One connection sending an endless INCR pipeline (another thread reads the replies): it
    gives the drain real work. Counts the increments acknowledged, in order."""

    def __init__(self, server: ServerProcess) -> None:
        super().__init__(daemon=True)
        self.client = RawClient(server.address, timeout=120)
        self.acked = 0
        self.unexpected: list[object] = []
        self.sender = threading.Thread(target=self._send, daemon=True)

    def _send(self) -> None:
        chunk = b"*2\r\n$4\r\nINCR\r\n$5\r\npiped\r\n" * 10_000
        with contextlib.suppress(OSError):  # until the server stops reading and closes
            while True:
                self.client.sock.sendall(chunk)

    def run(self) -> None:
        self.sender.start()
        try:
            while True:
                reply = self.client.read_reply()
                if reply == self.acked + 1:
                    self.acked += 1
                else:
                    self.unexpected.append(reply)
        except OSError:
            pass
        finally:
            self.sender.join(60)
            self.client.close()


class Prober(threading.Thread):
    """Asks /ready and /health over and over; notes for each answer whether the server had
    already logged that it was shutting down when the request was sent. It stops asking
    /ready once one answer said draining: a /ready still running when a PostgreSQL store
    closes hangs the shutdown (see test_ready_during_store_close_does_not_hang_shutdown)."""

    def __init__(self, server: ServerProcess) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.done = threading.Event()
        self.answers: list[tuple[str, bool, int, Any]] = []
        self.seen_draining = False

    def run(self) -> None:
        while not self.done.is_set():
            for path in ("/ready", "/health"):
                if path == "/ready" and self.seen_draining:
                    continue
                draining = "shutting down" in self.server.log
                try:
                    status, _, body = http("GET", self.server.admin_url + path)
                except OSError:  # refused or cut off: the admin port closes last
                    continue
                answer = json.loads(body)
                self.answers.append((path, draining, status, answer))
                if path == "/ready" and any("draining" in r
                                            for r in answer.get("reasons", ())):
                    self.seen_draining = True


def _restart_and_check(factory: Factory, data_dir: Path, counters: dict[str, int],
                       sets: dict[bytes, bytes]) -> None:
    again = factory(data_dir).start()
    check = RawClient(again.address, timeout=SOCKET_TIMEOUT)
    try:
        for name, expected in counters.items():
            check.send(enc("GET", name))
            got = check.read_reply()
            assert got == (str(expected).encode() if expected else None), (name, got, expected)
        keys = sorted(sets)
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            check.send(enc("MGET", *chunk))
            assert check.read_reply() == [sets[k] for k in chunk]
    finally:
        check.close()


def test_shutdown_delay_serves_while_unready(server_factory: Factory, tmp_path: Path) -> None:
    """--shutdown-delay: after SIGTERM the server answers /ready 503 at once, and still takes
    new RESP connections and commands for the delay; then it stops as usual."""
    srv = server_factory(tmp_path, "--shutdown-delay", "3").start()
    assert srv.proc is not None
    srv.proc.send_signal(signal.SIGTERM)
    wait_for("the delay to begin", lambda: "the RESP port closes in 3s" in srv.log, 10)
    status, body = get_json(srv.admin_url + "/ready")
    assert status == 503 and body["reasons"][0] == "draining: the server is shutting down"
    with socket.create_connection(srv.address, timeout=5) as late:  # still accepted
        late.sendall(b"SET after-sigterm 1\r\nGET after-sigterm\r\n")
        reply = b""
        while reply.count(b"\r\n") < 3:
            chunk = late.recv(1024)
            assert chunk, reply
            reply += chunk
    assert reply == b"+OK\r\n$1\r\n1\r\n"
    assert srv.proc.wait(30) == 0
    lines = srv.log
    assert lines.index("the RESP port closes in 3s") < lines.index("no new connections")


def test_a_second_signal_cuts_the_shutdown_delay_short(
    server_factory: Factory, tmp_path: Path
) -> None:
    srv = server_factory(tmp_path, "--shutdown-delay", "600").start()
    assert srv.proc is not None
    srv.proc.send_signal(signal.SIGTERM)
    wait_for("the delay to begin", lambda: "the RESP port closes in 600s" in srv.log, 10)
    srv.proc.send_signal(signal.SIGINT)  # Ctrl-C: do not wait out the ten minutes
    assert srv.proc.wait(30) == 0
    assert "no new connections" in srv.log and srv.log.rstrip().endswith("stopped")


def test_graceful_shutdown_under_load_loses_no_acknowledged_write(
    server_factory: Factory, tmp_path: Path
) -> None:
    """Writers and a long pipeline keep the server busy; SIGTERM: the process exits 0, and a
    restart on the same data holds exactly what was acknowledged (each counter equals its
    acknowledged INCRs). Every /ready asked after the server logged "shutting down" that got
    an answer said 503 (draining); /health answered 200 until the admin port closed."""
    srv = server_factory(tmp_path, "--shutdown-timeout", "30").start()
    assert srv.proc is not None
    writers = [Writer(srv, n) for n in range(6)]
    piper = Piper(srv)
    prober = Prober(srv)
    for thread in (*writers, piper, prober):
        thread.start()
    try:
        wait_for("writes under way",
                 lambda: sum(w.state()[2] for w in writers) >= 100 and piper.acked >= 1000, 60)
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(60) == 0
    finally:
        prober.done.set()
        for thread in (*writers, piper, prober):
            thread.join(60)
    assert not any(t.is_alive() for t in (*writers, piper, prober))
    srv.stop()  # collects the log
    assert "did not finish" not in srv.log, srv.log
    assert "stopped" in srv.log
    for w in writers:
        assert not w.unexpected, (w.n, w.unexpected[:3])
    assert not piper.unexpected, piper.unexpected[:3]

    ready = [(draining, status, body) for path, draining, status, body in prober.answers
             if path == "/ready"]
    assert ready, "no /ready answer at all"
    for draining, status, body in ready:
        if draining:
            assert status == 503 and any("draining" in r for r in body["reasons"]), body
    health = [status for path, _, status, _ in prober.answers if path == "/health"]
    assert health and set(health) == {200}

    sets: dict[bytes, bytes] = {}
    for w in writers:
        sets.update(w.sets)
    _restart_and_check(server_factory, tmp_path,
                       {"counter": sum(w.incrs for w in writers), "piped": piper.acked}, sets)


def _fail_fast_if_refused(writers: list[Writer]) -> None:
    for w in writers:
        with w.lock:
            if w.unexpected:
                raise AssertionError(
                    "a write under another program's lock was refused instead of waiting "
                    f"for it within --store-timeout: {w.unexpected[0]!r}"
                )


def test_drain_is_observable_while_writes_are_held(
    server_factory: Factory, tmp_path: Path
) -> None:
    """Writers keep writing; another program's lock on the store holds their latest writes in
    flight, so the drain is long enough to look at: SIGTERM turns /ready 503 (draining) while
    /health and /metrics answer and the RESP port refuses new connections; once the lock goes,
    the in-flight writes commit and are acknowledged, the process exits 0, and a restart holds
    exactly the acknowledged writes."""
    # Generous timeouts: the held writes wait, never fail. The sweeper stays out of the way
    # (see test_commands_queued_behind_the_sweeper_are_answered_at_shutdown).
    srv = server_factory(tmp_path, "--store-timeout", "60", "--shutdown-timeout", "60",
                         "--sweep-interval", "3600").start()
    assert srv.proc is not None
    gate = threading.Event()
    gate.set()
    writers = [Writer(srv, n, gate) for n in range(6)]
    for w in writers:
        w.start()
    try:
        wait_for("writes under way", lambda: sum(w.state()[2] for w in writers) >= 300, 60)
        # Park every writer with all its replies in hand, take the lock, then let each send
        # one more write: every write in flight from here on waits for the lock.
        gate.clear()
        wait_for("every writer parked", lambda: all(w.is_parked() for w in writers), 30)
        with StoreSQL(srv.store) as locker, locker.write_lock():
            gate.set()

            # Every writer's write has reached the server, which waits for the lock to
            # commit it: every writer waits, and the server has read every byte sent.
            def stuck() -> bool:
                _fail_fast_if_refused(writers)
                states = [w.state() for w in writers]
                if not all(waiting for _, waiting, _ in states):
                    return False
                sent = sum(s for s, _, _ in states)
                return Scrape(srv).value("dumbkv_network_bytes_total", direction="in") == sent

            wait_for("every writer blocked on the locked store", stuck, 30)
            acked_before = sum(w.state()[2] for w in writers)
            terminated_at = time.monotonic()
            srv.proc.send_signal(signal.SIGTERM)

            def draining() -> Any:
                status, body = get_json(srv.admin_url + "/ready")
                if status == 503 and any("draining" in r for r in body["reasons"]):
                    return body
                return None

            body = wait_for("/ready to answer 503 (draining)", draining, 20)
            assert body["status"] == "unready"
            status, health = get_json(srv.admin_url + "/health")
            assert (status, health["status"]) == (200, "ok")
            assert Scrape(srv).value("dumbkv_up") == 1

            def refused() -> bool:
                try:
                    socket.create_connection(srv.address, timeout=2).close()
                except ConnectionRefusedError:
                    return True
                return False

            wait_for("the RESP port to refuse new connections", refused, 20)
            # Nothing was acknowledged while the writes were held, and the drain waits.
            assert sum(w.state()[2] for w in writers) == acked_before
            assert srv.proc.poll() is None
        assert srv.proc.wait(90) == 0, srv.log
    finally:
        for w in writers:
            w.join(30)
    assert not any(w.is_alive() for w in writers)
    srv.stop()  # collects the log
    assert "did not finish" not in srv.log, srv.log
    for w in writers:
        assert not w.unexpected, (w.n, w.unexpected[:3])
    # The drain finished the write each writer had in flight, acknowledged after the SIGTERM;
    # the server read nothing after it stopped accepting.
    for w in writers:
        assert [t for t in w.ack_times if t > terminated_at] != [], w.n
    sets: dict[bytes, bytes] = {}
    for w in writers:
        sets.update(w.sets)
    incrs = sum(w.incrs for w in writers)
    assert incrs + len(sets) == acked_before + len(writers)
    _restart_and_check(server_factory, tmp_path, {"counter": incrs}, sets)


@pytest.mark.backends("postgres")
def test_commands_queued_behind_the_sweeper_are_answered_at_shutdown(
    pg_cluster: Cluster, server_factory: Factory, tmp_path: Path
) -> None:
    with PgConn(pg_cluster.dsn()) as admin:
        admin.execute("CREATE DATABASE sweeper")
    url = pg_cluster.dsn("sweeper")
    srv = server_factory(tmp_path, "--sweep-interval", "0.1", "--store-timeout", "60",
                         "--shutdown-timeout", "60", store=url).start()
    assert srv.proc is not None
    tally = Tally()
    first, second = Client(srv, tally), Client(srv, tally)
    try:
        assert first.call("SET", "before", "1") == "OK"
        with StoreSQL(url) as locker, locker.write_lock():
            first.send(enc("SET", "a", "1"))  # waits for the lock
            # The sweeper measures the size, then queues its sweep behind that write.
            sizes = Scrape(srv).total("dumbkv_store_query_duration_seconds_count",
                                      operation="size")
            wait_for("the sweeper to queue a sweep",
                     lambda: Scrape(srv).total("dumbkv_store_query_duration_seconds_count",
                                               operation="size") > sizes, 20)
            second.send(enc("SET", "b", "2"))  # queued behind the sweep
            wait_for("the server to read the second SET",
                     lambda: Scrape(srv).value("dumbkv_network_bytes_total", direction="in")
                     == tally.sent, 20)
            srv.proc.send_signal(signal.SIGTERM)
            wait_for("/ready to answer 503 (draining)",
                     lambda: get_json(srv.admin_url + "/ready")[0] == 503, 20)
        assert first.read_reply() == "OK"
        # Read before the SIGTERM, so in flight: it must be run and answered.
        try:
            reply: object = second.read_reply()
        except ConnectionError as exc:
            reply = exc
        assert srv.proc.wait(60) == 0
    finally:
        first.close()
        second.close()
    srv.stop()
    assert reply == "OK", (reply, srv.log)
    assert "Traceback" not in srv.log, srv.log


def _pg_has_unread_request(port: int) -> bool:
    """True when some connection to the PostgreSQL listening on ``port`` has bytes the server
    has not read yet (a frozen PostgreSQL, a query waiting): the kernel's view, /proc/net/tcp."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port = int(fields[1].split(":")[1], 16)
        rx_queue = int(fields[4].split(":")[1], 16)
        if local_port == port and rx_queue > 0:
            return True
    return False


@pytest.mark.backends("postgres")
def test_ready_during_store_close_does_not_hang_shutdown(
    pg_cluster: Cluster, server_factory: Factory, tmp_path: Path
) -> None:
    """A readiness probe that is answering while the store closes (the admin port answers to
    the end, by design) must not keep the process from exiting."""
    with PgConn(pg_cluster.dsn()) as admin:
        admin.execute("CREATE DATABASE closing")
    srv = server_factory(tmp_path, "--sweep-interval", "3600",
                         store=pg_cluster.dsn("closing")).start()
    assert srv.proc is not None
    assert get_json(srv.admin_url + "/ready")[0] == 200
    answers: list[tuple[int, Any]] = []
    probe = threading.Thread(target=lambda: answers.append(get_json(srv.admin_url + "/ready")),
                             daemon=True)
    try:
        pg_cluster.freeze()
        probe.start()  # its ping now waits for the frozen PostgreSQL (READY_TIMEOUT is 1 s)
        wait_for("the probe's query to reach PostgreSQL",
                 lambda: _pg_has_unread_request(pg_cluster.port), 0.8)
        srv.proc.send_signal(signal.SIGTERM)
        wait_for("the shutdown to start", lambda: "shutting down" in srv.log, 0.8)
        # Unready from the start of the shutdown, whatever the store (closed by now, or its
        # ping still waiting for the frozen PostgreSQL on a loaded machine) says.
        status, body = get_json(srv.admin_url + "/ready")
        assert status == 503 and body["reasons"][0] == "draining: the server is shutting down"
        assert len(body["reasons"]) == 2 and body["reasons"][1].startswith("store"), body
    finally:
        pg_cluster.thaw()  # the probe's ping completes now, after the store closed
    probe.join(10)
    assert answers and answers[0][0] == 503, answers
    try:
        code = srv.proc.wait(15)
    except subprocess.TimeoutExpired:
        srv.kill()
        raise
    assert code == 0, srv.log


# =========================================================================== admin port 0
def test_admin_port_zero_picks_a_free_port_and_logs_it(
    server_factory: Factory, tmp_path: Path
) -> None:
    # ServerProcess passes --admin-port 0 and --port 0; two servers at once get two ports.
    one = server_factory(tmp_path / "one").start()
    two = server_factory(tmp_path / "two").start()
    ports = []
    for srv in (one, two):
        match = re.search(r"admin listening on 127\.0\.0\.1:(\d+)", srv.log)
        assert match, srv.log
        port = int(match.group(1))
        assert port not in (0, srv.port)
        assert port == srv.admin_port
        status, body = get_json(f"http://127.0.0.1:{port}/health")
        assert (status, body["status"]) == (200, "ok")
        ports.append(port)
    assert ports[0] != ports[1]


# =========================================================================== logs
def assert_json_lines(lines: list[str]) -> list[dict[str, Any]]:
    entries = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            raise AssertionError(f"stderr line is not JSON: {line!r}") from None
        assert isinstance(entry, dict), line
        assert {"ts", "level", "logger", "msg"} <= set(entry), line
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", entry["ts"]), line
        assert entry["level"] in {"debug", "info", "warning", "error", "critical"}, line
        assert isinstance(entry["logger"], str) and entry["logger"], line
        assert isinstance(entry["msg"], str), line
        entries.append(entry)
    return entries


def test_json_logs_never_show_a_key_or_value(
    server_factory: Factory, tmp_path: Path
) -> None:
    # The default sweep interval: the sweeper's debug line shows that debug level is on.
    srv = server_factory(tmp_path, "--log-format", "json", "--log-level", "debug").start()
    key, value = token("logkey"), token("logvalue")
    expiring, victim = token("expiring"), token("victim")
    tally = Tally()
    client = Client(srv, tally)
    try:
        assert client.call("SET", key, value) == "OK"
        assert client.call("GET", key) == value.encode()
        assert client.call("SET", expiring, value, "PX", "1") == "OK"
        assert is_error(client.call(token("cmd"), key, value), "ERR unknown command")
        assert is_error(client.call("SET", key, value, "NOPE"), "ERR syntax")
        assert is_error(client.call("INCR", key), "ERR ")
        assert client.call("SET", victim, value) == "OK"
        tamper(srv.store, victim.encode())
        assert is_error(client.call("GET", victim), "SERVERERR ")
        bad = Client(srv, tally)
        try:
            bad.send(b"*1\r\n$" + key.encode() + b"\r\n")
            assert bad.read_line().startswith(b"-ERR Protocol error")
            assert bad.is_closed()
        finally:
            bad.close()
    finally:
        client.close()
    assert http("GET", srv.admin_url + f"/{key}")[0] == 404
    assert http("POST", srv.admin_url + "/crosscheck", value.encode())[0] == 400
    # Debug level is in force: the sweeper logs what it removed.
    wait_for("the sweeper's debug line",
             lambda: any("expiry sweep removed" in line for line in list(srv.log_lines)), 20)
    assert srv.stop() == 0

    entries = assert_json_lines(srv.log_lines)
    messages = [e["msg"] for e in entries]
    assert any(m.startswith("admin listening on 127.0.0.1:") for m in messages), messages
    assert any(" listening on 127.0.0.1:" in m and m.startswith("dumbkv ") for m in messages)
    assert any(e["level"] == "debug" for e in entries)
    assert "stopped" in messages
    for needle in (key, value, expiring, victim):
        assert needle not in srv.log, needle


def test_malformed_admin_request_keeps_the_log_json(
    server_factory: Factory, tmp_path: Path
) -> None:
    srv = server_factory(tmp_path, "--log-format", "json").start()
    with socket.create_connection(("127.0.0.1", srv.admin_port), timeout=SOCKET_TIMEOUT) as s:
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.0 400 ")
    assert get_json(srv.admin_url + "/health")[0] == 200
    assert srv.stop() == 0
    assert_json_lines(srv.log_lines)


# =========================================================================== README
def _readme_metrics() -> dict[str, str]:
    """The metric table of the README's "Admin port and metrics" section: name -> type."""
    text = README.read_text()
    match = re.search(r"^## Admin port and metrics\n(.*?)(?=^## )", text, re.M | re.S)
    assert match, "README has no '## Admin port and metrics' section"
    table: dict[str, str] = {}
    for line in match.group(1).splitlines():
        row = re.match(r"\|\s*`([a-z_]+)`\s*\|\s*(counter|gauge|histogram)\s*\|", line)
        if row:
            table[row.group(1)] = row.group(2)
    return table


def test_readme_documents_every_exported_metric(
    server: ServerProcess, backend: str
) -> None:
    tally = Tally()
    client = Client(server, tally)
    try:
        assert client.call("SET", "k", "v") == "OK"
    finally:
        client.close()
    figures = {"identical_ratio": 1.0, "failure_rate_a": 0.0, "failure_rate_b": 0.0,
               "failure_rate_difference": 0.0}
    assert http("POST", server.admin_url + "/crosscheck", json.dumps(figures).encode())[0] == 200
    wait_for("the store size", lambda: Scrape(server).matching("dumbkv_store_size_bytes"), 20)

    documented = _readme_metrics()
    exported = {name: family.type for name, family in Scrape(server).families.items()
                if not name.endswith("_created")}  # prometheus-client's per-series timestamps
    missing = []
    for name, kind in exported.items():
        listed = name + "_total" if kind == "counter" else name
        if listed not in documented:
            missing.append(listed)
        else:
            assert documented[listed] == kind, (listed, documented[listed], kind)
    assert not missing, f"metrics on /metrics but not in the README table: {missing}"
