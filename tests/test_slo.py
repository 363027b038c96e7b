"""``dumbkv slo``: the SLO table of a running server, from its admin port or from a real
Prometheus that scrapes it.

The CLI runs as a subprocess against real server processes over real HTTP; store failures come
from another program holding the store's write lock (as in tests/test_durability.py). The
ledger contract (``GET /availability``, else the ``dumbkv_availability_ratio`` gauge) is also
checked against a small HTTP stand-in on 127.0.0.1, so both fallbacks are covered whatever the
server has. Nothing sleeps to synchronise: waits are bounded polls of something observable.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import RawClient, ServerProcess, StoreSQL, call, environ_without_settings, poll_until
from postgres import free_port
from prometheus import http, running_prometheus
from prometheus_client import CollectorRegistry, Gauge, generate_latest

from dumbkv.slo import budget_at_least, budget_below, histogram_quantile

Factory = type[ServerProcess]
T = TypeVar("T")

CLI_TIMEOUT = 60.0


# =========================================================================== helpers
class Slo:
    """One run of ``dumbkv slo ... --json``."""

    def __init__(self, *args: str) -> None:
        env = environ_without_settings()
        done = subprocess.run([sys.executable, "-m", "dumbkv", "slo", *args],
                              capture_output=True, text=True, timeout=CLI_TIMEOUT, env=env)
        self.code = done.returncode
        self.stdout = done.stdout
        self.stderr = done.stderr
        self.report: dict[str, Any] = {}
        if "--json" in args and self.code in (0, 1):
            self.report = json.loads(done.stdout)

    def row(self, objective_id: str) -> dict[str, Any]:
        rows = [r for r in self.report["objectives"] if r["id"] == objective_id]
        assert len(rows) == 1, (objective_id, self.report)
        return rows[0]

    def check_exit_code(self) -> None:
        """Exit 1 exactly when an objective with data is not met; the alert line never counts."""
        not_met = [r["id"] for r in self.report["objectives"]
                   if r["kind"] == "objective" and r["met"] is False]
        assert self.report["not_met"] == not_met
        assert self.code == self.report["exit_code"] == (1 if not_met else 0), self.stdout


def admin_slo(server: ServerProcess, *args: str) -> Slo:
    result = Slo("--admin", server.admin_url, "--json", *args)
    assert result.code in (0, 1), result.stdout + result.stderr
    result.check_exit_code()
    return result


def wait_for(what: str, probe: Callable[[], T | None], timeout: float = 60.0) -> T:
    return poll_until(what, probe, timeout, 0.1)


def ledger_availability(server: ServerProcess) -> dict[str, float | None] | None:
    """What the server itself says about availability: /availability, else the
    dumbkv_availability_ratio gauge, else None (a server without the ledger)."""
    status, body = http("GET", server.admin_url + "/availability")
    if status == 200:
        answer = json.loads(body)
        return {w: answer.get(w) for w in ("7d", "2h")}
    assert status == 404, (status, body)
    _, metrics = http("GET", server.admin_url + "/metrics")
    found = dict(re.findall(r'^dumbkv_availability_ratio\{window="(\w+)"\} (\S+)$',
                            metrics.decode(), re.M))
    return {w: float(found[w]) if w in found else None for w in ("7d", "2h")} if found else None


def check_availability_rows(result: Slo, server: ServerProcess) -> None:
    """Without a ledger the availability rows say "no data" (not a failure); with one, they
    carry its figures (which move with time, so only their shape is checked here)."""
    seven, two = result.row("availability_7d"), result.row("availability_2h_alert")
    assert two["kind"] == "alert" and two["met"] is None
    if ledger_availability(server) is None:
        for row in (seven, two):
            assert row["measured"] is None and row["status"] == "no data"
            assert row["budget_left"] is None
        assert seven["met"] is None and "availability_7d" not in result.report["not_met"]
        return
    assert seven["source"] in ("/availability", "dumbkv_availability_ratio")
    if seven["measured"] is not None:
        assert 0.0 <= seven["measured"] <= 1.0
        assert seven["met"] is (seven["measured"] >= 0.95)


def histogram_buckets(server: ServerProcess) -> dict[float, float]:
    """le -> cumulative count of dumbkv_command_duration_seconds, all commands, read with a
    regular expression (not with the parser dumbkv slo uses)."""
    _, body = http("GET", server.admin_url + "/metrics")
    buckets: dict[float, float] = {}
    for le, value in re.findall(
        r'^dumbkv_command_duration_seconds_bucket\{[^}]*le="([^"]+)"[^}]*\} (\S+)$',
        body.decode(), re.M,
    ):
        buckets[float(le)] = buckets.get(float(le), 0.0) + float(value)
    return buckets


def server_errors_under_lock(server: ServerProcess, raw: RawClient, n: int) -> list[float]:
    """``n`` SETs while another program holds the store's write lock: each answers
    -SERVERERR after the store timeout. Returns how long each took, seen from the client."""
    took = []
    with StoreSQL(server.store) as locker, locker.write_lock():
        for i in range(n):
            started = time.monotonic()
            reply = call(raw, "SET", f"locked:{i}", "x")
            took.append(time.monotonic() - started)
            assert isinstance(reply, tuple) and reply[1].startswith("SERVERERR"), reply
    return took


def ok_commands(raw: RawClient, n: int, prefix: str = "k") -> None:
    for i in range(n):
        assert call(raw, "SET", f"{prefix}:{i}", i) == "OK"


def client_errors(raw: RawClient, n: int) -> None:
    for i in range(n):
        reply = call(raw, f"NOSUCHCOMMAND{i}", "arg")
        assert isinstance(reply, tuple) and reply[1].startswith("ERR unknown command"), reply


# =========================================================================== arithmetic
def test_histogram_quantile_interpolates_like_promql() -> None:
    inf = math.inf
    # Both observations in (1, 2]: rank 1.8 of 2 -> 1 + 1.8 / 2.
    assert histogram_quantile(0.9, {0.5: 0, 1.0: 0, 2.0: 2, inf: 2}) == pytest.approx(1.9)
    # rank 9 of 10; 5 at or under 1 s, 5 in (1, 2]: 1 + (9 - 5) / 5.
    assert histogram_quantile(0.9, {1.0: 5, 2.0: 10, inf: 10}) == pytest.approx(1.8)
    # The first bucket starts at 0.
    assert histogram_quantile(0.5, {0.001: 4, 1.0: 4, inf: 4}) == pytest.approx(0.0005)
    # In the +Inf bucket: the largest finite edge.
    assert histogram_quantile(0.9, {1.0: 1, 2.0: 1, inf: 10}) == 2.0
    # No observations, or no +Inf bucket: no estimate.
    assert histogram_quantile(0.9, {1.0: 0, inf: 0}) is None
    assert histogram_quantile(0.9, {1.0: 3}) is None


def test_error_budget_left() -> None:
    assert budget_at_least(0.97, 0.95) == pytest.approx(0.4)  # 2 of 5 points left
    assert budget_at_least(1.0, 0.95) == 1.0
    assert budget_at_least(0.90, 0.95) == 0.0  # overspent: clipped at 0
    assert budget_below(0.01, 0.05) == pytest.approx(0.8)
    assert budget_below(0.0, 0.05) == 1.0
    assert budget_below(0.2, 0.05) == 0.0


# =========================================================================== admin port
def test_scripted_session_gives_exact_figures(server_factory: Factory, tmp_path: Path) -> None:
    server = server_factory(tmp_path, "--store-timeout", "0.5").start()
    fresh = admin_slo(server)
    # Nothing sent yet: latency and errors have no data, which is not a failure.
    for objective in ("latency_p90", "server_error_rate"):
        row = fresh.row(objective)
        assert row["measured"] is None and row["status"] == "no data" and row["met"] is None
    assert fresh.report["source"] == "admin" and fresh.report["window"] == "since start"

    raw = RawClient(server.address)
    try:
        ok_commands(raw, 10)
        took = server_errors_under_lock(server, raw, 1)
        client_errors(raw, 5)
        result = admin_slo(server)
        errors = result.row("server_error_rate")
        assert (errors["ok"], errors["server_error"], errors["client_error"]) == (10, 1, 5)
        assert errors["measured"] == 1 / 11
        assert errors["met"] is False and errors["status"] == "not met"
        assert errors["budget_left"] == 0.0
        assert "server_error_rate" in result.report["not_met"] and result.code == 1

        latency = result.row("latency_p90")
        # The latency SLI leaves the 5 client errors out: 10 ok and 1 server error.
        assert (latency["commands"], latency["commands_le_1s"]) == (11, 11)
        assert latency["measured"] == 1.0 and latency["met"] is True
        assert latency["budget_left"] == 1.0
        # The P90 estimate lies in the bucket that holds the 90th percentile.
        assert took[0] < 1.0
        buckets = histogram_buckets(server)
        edges = sorted(buckets)
        upper = next(le for le in edges if buckets[le] >= 0.9 * buckets[math.inf])
        lower = max([0.0, *(le for le in edges if le < upper)])
        assert lower < latency["p90_seconds"] <= upper
        check_availability_rows(result, server)

        # Client errors do not count: more unknown commands leave the rate as it was.
        client_errors(raw, 7)
        again = admin_slo(server).row("server_error_rate")
        assert again["client_error"] == 12
        assert again["measured"] == 1 / 11

        # 30 more successes: 1 of 41 is under 5 %, with 1 - (1/41) / 0.05 of the budget left.
        ok_commands(raw, 30, prefix="more")
        after = admin_slo(server)
        errors = after.row("server_error_rate")
        assert (errors["ok"], errors["server_error"]) == (40, 1)
        assert errors["measured"] == 1 / 41 and errors["met"] is True
        assert errors["budget_left"] == pytest.approx(1 - (1 / 41) / 0.05)
        assert "server_error_rate" not in after.report["not_met"]
        check_availability_rows(after, server)
    finally:
        raw.close()

    text = Slo("--admin", server.admin_url)
    assert text.code == after.code
    assert re.search(r"server-error rate\s+< 5 %\s+since start\s+2\.44 % \(1 of 41\)\s+met\s+"
                     r"51\.2 %", text.stdout), text.stdout
    assert "since the process started" in text.stdout


@pytest.mark.backends("postgres")
def test_slow_failing_store_fails_latency_and_errors(
    server_factory: Factory, tmp_path: Path
) -> None:
    """Another program holds the write lock: a SET waits the store timeout (1.1 s, past the
    1 s bucket edge) and answers -SERVERERR. Both objectives are not met; exit code 1.
    (PostgreSQL: SQLite's store answers a held lock at once instead of waiting.)"""
    server = server_factory(tmp_path, "--store-timeout", "1.1").start()
    raw = RawClient(server.address)
    try:
        took = server_errors_under_lock(server, raw, 1)
    finally:
        raw.close()
    assert 1.1 <= took[0] < 2.0, took  # so the server saw it in (1.0, 2.0]
    result = admin_slo(server)
    latency = result.row("latency_p90")
    assert (latency["commands"], latency["commands_le_1s"]) == (1, 0)
    assert latency["measured"] == 0.0 and latency["met"] is False
    assert latency["p90_seconds"] == pytest.approx(1.9)  # rank 0.9 of 1 in (1, 2]
    assert latency["budget_left"] == 0.0
    errors = result.row("server_error_rate")
    assert errors["measured"] == 1.0 and errors["met"] is False
    assert {"latency_p90", "server_error_rate"} <= set(result.report["not_met"])
    assert result.code == 1

    text = Slo("--admin", server.admin_url)
    assert text.code == 1
    assert re.search(r"P90 latency\s+< 1000 ms\s+since start\s+P90 ~ 1900\.0 ms; 0\.00 % <= 1 s"
                     r"\s+not met\s+0\.0 %", text.stdout), text.stdout
    last = text.stdout.rstrip().splitlines()[-1]
    assert last.startswith("NOT MET: ") and "latency_p90" in last and "server_error_rate" in last


@pytest.mark.backends("sqlite")
def test_crosscheck_figures_appear_once_pushed(server_factory: Factory, tmp_path: Path) -> None:
    server = server_factory(tmp_path).start()
    before = admin_slo(server)
    for objective in ("crosscheck_identical", "crosscheck_failure_rate_difference"):
        row = before.row(objective)
        assert row["status"] == "no data" and row["met"] is None
        assert objective not in before.report["not_met"]

    # A real cross-check pushes its figures to the admin port.
    env = environ_without_settings()
    done = subprocess.run(
        [sys.executable, "-m", "dumbkv", "crosscheck", f"sqlite:///{tmp_path / 'a.db'}",
         f"sqlite:///{tmp_path / 'b.db'}", "-n", "300", "--seed", "5", "--json",
         "--push", server.admin_url],
        capture_output=True, text=True, timeout=CLI_TIMEOUT, env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    pushed = json.loads(done.stdout)
    result = admin_slo(server)
    identical = result.row("crosscheck_identical")
    assert identical["measured"] == pushed["identical_ratio"] == 1.0
    assert identical["met"] is True and identical["budget_left"] == 1.0
    diff = result.row("crosscheck_failure_rate_difference")
    assert diff["measured"] == pushed["failure_rate_difference"] == 0.0
    assert diff["failure_rate_a"] == pushed["targets"]["a"]["failure_rate"]
    assert diff["met"] is True and diff["budget_left"] == 1.0

    # Figures that miss both limits: not met, no budget left, exit code 1.
    status, body = http("POST", server.admin_url + "/crosscheck", {
        "identical_ratio": 0.98, "failure_rate_a": 0.10, "failure_rate_b": 0.13,
        "failure_rate_difference": 0.03,
    })
    assert status == 200, body
    failing = admin_slo(server)
    assert failing.row("crosscheck_identical")["measured"] == 0.98
    assert failing.row("crosscheck_failure_rate_difference")["measured"] == 0.03
    assert {"crosscheck_identical", "crosscheck_failure_rate_difference"} <= set(
        failing.report["not_met"])
    assert failing.code == 1

    # Exactly on the limits is met: 99 % identical, 2 points apart, with no budget left.
    status, body = http("POST", server.admin_url + "/crosscheck", {
        "identical_ratio": 0.99, "failure_rate_a": 0.10, "failure_rate_b": 0.12,
        "failure_rate_difference": 0.12 - 0.10,
    })
    assert status == 200, body
    edge = admin_slo(server)
    for objective in ("crosscheck_identical", "crosscheck_failure_rate_difference"):
        assert edge.row(objective)["met"] is True
        assert edge.row(objective)["budget_left"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.backends("sqlite")
def test_maintenance_window_is_reported(server_factory: Factory, tmp_path: Path) -> None:
    server = server_factory(tmp_path).start()
    assert admin_slo(server).report["maintenance"] is False
    status, body = http("POST", server.admin_url + "/maintenance/start")
    assert status == 202, body
    during = admin_slo(server)
    assert during.report["maintenance"] is True
    assert during.row("availability_7d")["source"] == "/availability"
    assert "maintenance window in progress: yes" in Slo("--admin", server.admin_url).stdout
    status, body = http("POST", server.admin_url + "/maintenance/stop")
    assert status == 200, body
    assert admin_slo(server).report["maintenance"] is False


def test_unreachable_sources_exit_2() -> None:
    port = free_port()  # nothing listens there
    for args in (["--admin", f"http://127.0.0.1:{port}"],
                 ["--admin", f"http://127.0.0.1:{port}", "--json"],
                 ["--prometheus", f"http://127.0.0.1:{port}", "--window", "5m"]):
        result = Slo(*args)
        assert result.code == 2, (args, result.stdout, result.stderr)
        assert result.stdout == ""
        assert "cannot reach" in result.stderr, result.stderr
    bad = Slo("--prometheus", f"http://127.0.0.1:{port}", "--window", "a week")
    assert bad.code == 2 and "not a PromQL duration" in bad.stderr
    scheme = Slo("--admin", "ftp://127.0.0.1/")
    assert scheme.code == 2 and "not an http(s) URL" in scheme.stderr


# =========================================================================== ledger contract
Route = tuple[int, str, bytes]


@contextlib.contextmanager
def stand_in(routes: dict[str, Route]) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 answering fixed ``routes`` (path -> status, type, body);
    404 elsewhere. Yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, content_type, body = routes.get(self.path, (404, "text/plain", b"no"))
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)


def metrics_text(up: bool = True, availability: dict[str, float] | None = None) -> Route:
    registry = CollectorRegistry()
    if up:
        Gauge("dumbkv_up", "1 while the server runs.", registry=registry).set(1)
    if availability:
        gauge = Gauge("dumbkv_availability_ratio", "ledger", ["window"], registry=registry)
        for window, ratio in availability.items():
            gauge.labels(window).set(ratio)
    return 200, "text/plain; version=0.0.4", generate_latest(registry)


def as_json(body: dict[str, Any]) -> Route:
    return 200, "application/json", json.dumps(body).encode()


def test_availability_from_the_ledger_endpoint() -> None:
    routes = {
        "/metrics": metrics_text(availability={"7d": 0.5, "2h": 0.5}),  # /availability wins
        "/availability": as_json({"2h": 0.85, "7d": 0.97, "maintenance": True}),
    }
    with stand_in(routes) as url:
        result = Slo("--admin", url, "--json")
        text = Slo("--admin", url)
    result.check_exit_code()
    seven = result.row("availability_7d")
    assert seven["measured"] == 0.97 and seven["met"] is True
    assert seven["budget_left"] == pytest.approx(0.4)
    assert seven["source"] == "/availability"
    alert = result.row("availability_2h_alert")
    assert alert["measured"] == 0.85 and alert["firing"] is True and alert["status"] == "firing"
    assert result.report["maintenance"] is True
    # The alert line fires, but it is not an objective: every objective with data is met.
    assert result.code == 0 and result.report["not_met"] == []
    assert text.code == 0
    assert "maintenance window in progress: yes" in text.stdout
    assert re.search(r"availability \(alert line\)\s+alert < 90 %\s+2h\s+85\.00 %\s+firing",
                     text.stdout), text.stdout


def test_availability_falls_back_to_the_gauge_then_to_no_data() -> None:
    gauge_only = {"/metrics": metrics_text(availability={"7d": 0.9, "2h": 0.99})}
    with stand_in(gauge_only) as url:
        result = Slo("--admin", url, "--json")
    result.check_exit_code()
    seven = result.row("availability_7d")
    assert seven["measured"] == 0.9 and seven["met"] is False and seven["budget_left"] == 0.0
    assert seven["source"] == "dumbkv_availability_ratio"
    assert result.row("availability_2h_alert")["firing"] is False
    assert result.report["not_met"] == ["availability_7d"] and result.code == 1
    assert result.report["maintenance"] is None

    with stand_in({"/metrics": metrics_text()}) as url:
        nothing = Slo("--admin", url, "--json")
    nothing.check_exit_code()
    assert nothing.row("availability_7d")["status"] == "no data"
    assert nothing.code == 0
    assert any("no availability ledger" in note for note in nothing.report["notes"])

    # An HTTP server that is not DumbKV's admin port: the source is unusable.
    with stand_in({"/metrics": metrics_text(up=False)}) as url:
        stranger = Slo("--admin", url, "--json")
    assert stranger.code == 2 and "not a DumbKV admin port" in stranger.stderr


# =========================================================================== Prometheus

@pytest.mark.slow
@pytest.mark.backends("sqlite")
def test_prometheus_mode_matches_the_traffic(
    prometheus_binary: str, server_factory: Factory, tmp_path: Path
) -> None:
    server = server_factory(tmp_path, "--store-timeout", "0.5").start()
    target = f"127.0.0.1:{server.admin_port}"
    with running_prometheus(prometheus_binary, tmp_path, target) as prom:
        counts = "sum by (status) (dumbkv_commands_total)"
        raw = RawClient(server.address)
        try:
            # One reply of each status first, so each series is in Prometheus before the
            # measured traffic (a counter's increase is seen only from its first scrape on).
            ok_commands(raw, 1, prefix="warm")
            client_errors(raw, 1)
            server_errors_under_lock(server, raw, 1)
            wait_for("the first samples",
                     lambda: prom.query(counts) == {"ok": 1, "client_error": 1,
                                                    "server_error": 1})
            # The measured traffic: 20 ok, 5 server errors (20 %), 25 client errors.
            ok_commands(raw, 20)
            server_errors_under_lock(server, raw, 5)
            client_errors(raw, 25)
        finally:
            raw.close()
        status, body = http("POST", server.admin_url + "/crosscheck", {
            "identical_ratio": 0.995, "failure_rate_a": 0.12, "failure_rate_b": 0.13,
            "failure_rate_difference": 0.01,
        })
        assert status == 200, body
        wait_for("the final counts and the pushed figures", lambda: (
            prom.query(counts) == {"ok": 21, "client_error": 26, "server_error": 6}
            and prom.query("dumbkv_crosscheck")
        ))
        # Enough samples after the first ones that increase()'s extrapolation stays small.
        wait_for("12 samples of each series", lambda: prom.query(
            'min(count_over_time(dumbkv_commands_total[5m])) >= 12'))

        result = Slo("--prometheus", prom.url, "--window", "5m", "--json")
        assert result.code in (0, 1), result.stdout + result.stderr
        result.check_exit_code()
        report = result.report
        assert report["source"] == "prometheus" and report["window"] == "5m"

        errors = result.row("server_error_rate")
        # 5 of 25, client errors left out (with them: 5 of 50, or 30 of 50 as errors).
        assert errors["measured"] == pytest.approx(0.2, abs=0.03), errors
        for status_name, sent in (("ok", 20), ("server_error", 5), ("client_error", 25)):
            assert abs(errors[status_name] - sent) <= 0.2 * sent + 1, (status_name, errors)
        assert errors["met"] is False and errors["window"] == "5m"
        assert "server_error_rate" in report["not_met"] and result.code == 1

        latency = result.row("latency_p90")
        # increase() extrapolates each bucket series on its own: a ratio near, not at, 1.
        assert latency["measured"] == pytest.approx(1.0, abs=0.1) and latency["met"] is True
        assert 0 < latency["p90_seconds"] < 1.0
        assert abs(latency["commands"] - 25) <= 6, latency  # client errors left out

        identical = result.row("crosscheck_identical")
        assert identical["measured"] == 0.995 and identical["met"] is True
        assert identical["budget_left"] == pytest.approx(0.5)
        diff = result.row("crosscheck_failure_rate_difference")
        assert diff["measured"] == 0.01 and diff["budget_left"] == pytest.approx(0.5)

        seven = result.row("availability_7d")
        if seven["source"] == "up (scrapes)":  # no ledger gauge: every scrape succeeded
            assert seven["measured"] == 1.0 and seven["window"] == "5m"
        else:
            assert seven["source"] == "dumbkv_availability_ratio"
            assert 0.0 <= seven["measured"] <= 1.0

        # A selector that matches nothing: Prometheus has no DumbKV there, which is exit 2.
        none = Slo("--prometheus", prom.url, "--window", "5m", "--selector", 'job="other"')
        assert none.code == 2 and "is it scraping" in none.stderr, none.stderr
