"""DumbKV scraped by a real Prometheus that loads the rules of k8s/base/prometheusrule.yaml
(through k8s/tools/extract_rules.py): known traffic from redis-py, then the recording rules
and every query of the Grafana dashboard checked through Prometheus's HTTP API.

Waits are bounded polls of Prometheus: nothing sleeps to synchronise.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import ServerProcess, poll_until
from dashboard import RULES, label_values, load, metric_names, queries, substitute
from prometheus import Prometheus, extract_rules, http, running_prometheus

Factory = type[ServerProcess]
CONTAINER_METRIC = re.compile(r"^(container|kube|kubelet)_")
WAIT = 90.0  # the rules leave out the first 30 s after a start
OK_SENT = 40
CLIENT_ERRORS_SENT = 12
SLO_COMMANDS = 'dumbkv_commands_total{job="dumbkv"}'


def plain_rules_file(directory: Path) -> Path:
    """The PrometheusRule's groups as a plain rules file, written by extract_rules.py."""
    path = directory / "dumbkv-rules.yaml"
    path.write_text(extract_rules.plain_rules(RULES))
    return path


def wait(what: str, probe: Any) -> Any:
    return poll_until(what, probe, WAIT, 0.2)


def status_counts(prom: Prometheus) -> dict[str, float]:
    return prom.query(f"sum by (status) ({SLO_COMMANDS})")


def server_counts(server: ServerProcess) -> dict[str, float]:
    """The server's own dumbkv_commands_total by status, read from its /metrics."""
    _, body = http("GET", server.admin_url + "/metrics")
    counts: dict[str, float] = {}
    for status, value in re.findall(
            r'^dumbkv_commands_total\{[^}]*status="(\w+)"[^}]*\} (\S+)$', body.decode(), re.M):
        counts[status] = counts.get(status, 0.0) + float(value)
    return counts


def rule(prom: Prometheus, name: str) -> float | None:
    """The value of a recording rule (one series, aggregated by job), None before its first."""
    found = prom.query(f'{name}{{job="dumbkv"}} + 0')  # "+ 0" drops __name__, not the labels
    assert set(found) <= {"dumbkv"}, (name, found)
    return found.get("dumbkv")


def samples(prom: Prometheus, selector: str, window: str = "10m") -> list[tuple[float, float]]:
    """(timestamp, value) of every stored sample of one series over the last ``window``."""
    answer = prom.api("query", query=f"{selector}[{window}]")
    assert answer["status"] == "success", answer
    series = answer["data"]["result"]
    assert len(series) <= 1, series
    return [(float(t), float(v)) for t, v in series[0]["values"]] if series else []


def rules_health(prom: Prometheus) -> dict[str, str]:
    """name -> health of every loaded rule; an evaluation error fails at once."""
    answer = prom.api("rules")
    assert answer["status"] == "success", answer
    health: dict[str, str] = {}
    for group in answer["data"]["groups"]:
        for rule in group["rules"]:
            assert rule["health"] != "err", (rule["name"], rule.get("lastError"))
            health[rule["name"]] = rule["health"]
    return health



@pytest.fixture
def scraped(prometheus_binary: str, server_factory: Factory,
            tmp_path: Path) -> Iterator[tuple[ServerProcess, Prometheus]]:
    """A DumbKV server and a Prometheus that scrapes it as job dumbkv with DumbKV's rules."""
    server = server_factory(tmp_path / "data").start()
    rules = plain_rules_file(tmp_path)
    with running_prometheus(prometheus_binary, tmp_path, f"127.0.0.1:{server.admin_port}",
                            [rules]) as prom:
        yield server, prom


@pytest.mark.slow
@pytest.mark.backends("sqlite")
def test_rules_and_dashboard_against_real_prometheus(
    scraped: tuple[ServerProcess, Prometheus],
) -> None:
    server, prom = scraped
    target = f"127.0.0.1:{server.admin_port}"
    wait("the target to be up",
         lambda: prom.query('max by (instance) (up{job="dumbkv"})') == {target: 1.0})
    health = wait("every rule to be evaluated", lambda: (
        (h := rules_health(prom)) and all(v == "ok" for v in h.values()) and h))
    assert health, "the rules file holds no rules"

    client = redis.Redis(*server.address, socket_timeout=5)
    try:
        # The connection's handshake and one reply of each status first: each series is in
        # Prometheus before the measured traffic.
        assert client.set("warm", "1") is True
        with pytest.raises(redis.ResponseError, match="unknown command"):
            client.execute_command("NOSUCHCOMMAND")
        before = server_counts(server)
        assert set(before) == {"ok", "client_error"}, before
        wait("the first samples", lambda: status_counts(prom) == before)

        for i in range(OK_SENT):
            assert client.set(f"key:{i}", str(i)) is True
        for i in range(CLIENT_ERRORS_SENT):
            with pytest.raises(redis.ResponseError, match="unknown command"):
                client.execute_command(f"NOSUCHCOMMAND{i}", "arg")
    finally:
        client.close()
    expected = {"ok": before["ok"] + OK_SENT,
                "client_error": before["client_error"] + CLIENT_ERRORS_SENT}
    wait("the request totals", lambda: status_counts(prom) == expected)
    assert server_counts(server) == expected
    sent = time.time()

    check_recording_rules(prom, sent)

    status, body = http("POST", server.admin_url + "/crosscheck", {
        "identical_ratio": 0.995, "failure_rate_a": 0.12, "failure_rate_b": 0.13,
        "failure_rate_difference": 0.01,
    })
    assert status == 200, body
    wait("the cross-check figures", lambda: prom.query('dumbkv_crosscheck{job="dumbkv"}'))

    check_dashboard_queries(prom, target)


def check_recording_rules(prom: Prometheus, sent: float) -> None:
    """The SLI rules, evaluated after the traffic, say what it was."""
    wait("an evaluation of the SLI rules after the traffic", lambda: prom.query(
        f'timestamp(dumbkv:sli_errors:ratio_rate5m{{job="dumbkv"}}) > {sent}'))
    # ok replies and client errors only: no server error, whatever the window.
    for window in ("5m", "30m", "1h", "7d"):
        assert rule(prom, f"dumbkv:sli_errors:ratio_rate{window}") == 0.0, window
    # Every command well under 1 s: nothing over 1 s or 2 s, and P90 under 1 s.
    assert rule(prom, "dumbkv:sli_latency_over_1s:ratio_rate5m") == 0.0
    assert rule(prom, "dumbkv:sli_latency_over_1s:ratio_rate7d") == 0.0
    assert rule(prom, "dumbkv:sli_latency_over_2s:ratio_rate5m") == 0.0
    p90 = rule(prom, "dumbkv:command_latency_seconds:p90_5m")
    assert p90 is not None and 0.0 < p90 < 1.0, p90
    assert rule(prom, "dumbkv:maintenance:active") == 0.0

    # Availability: Prometheus's view counts only from 30 s after the start on, then all up.
    wait("availability counted", lambda: rule(prom, "dumbkv:sli_availability:ratio_rate5m"))
    started = prom.query('process_start_time_seconds{job="dumbkv"}')
    assert len(started) == 1, started
    counted = samples(prom, 'dumbkv:up:counted{job="dumbkv"}')
    assert counted and all(value == 1.0 for _, value in counted), counted
    assert min(t for t, _ in counted) > next(iter(started.values())) + 30, counted
    assert rule(prom, "dumbkv:sli_availability:ratio_rate5m") == 1.0
    # The 7-day and 2-hour figures are the server's ledger while it answers.
    for window in ("7d", "2h"):
        ledger = prom.query(f'dumbkv_availability_ratio{{job="dumbkv", window="{window}"}}')
        figure = rule(prom, f"dumbkv:availability:ratio_{window}")
        assert len(ledger) == 1 and figure is not None, (ledger, figure)
        assert figure == pytest.approx(next(iter(ledger.values())), abs=0.01)
        assert 0.95 <= figure <= 1.0, (window, figure)


def check_dashboard_queries(prom: Prometheus, target: str) -> None:
    """Every query of the dashboard runs; those on DumbKV's own metrics return data."""
    dashboard = load()
    values = {"datasource": "prometheus", "namespace": ".*", "pod": ".*",
              "instance": target}
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    selector, label = label_values(variables["instance"]["query"]["query"])
    found = prom.query(f"count by ({label}) ({substitute(selector, values)})")
    assert list(found) == [target], found

    ran = 0
    for title, expr in queries(dashboard):
        promql = substitute(expr, values)
        answer = prom.api("query", query=promql)
        assert answer["status"] == "success", (title, promql, answer)
        ran += 1
        if any(CONTAINER_METRIC.match(name) for name in metric_names(expr)):
            continue  # only on Kubernetes: an empty answer is right here
        wait(f"data for {title!r}: {promql}",
             lambda q=promql: prom.api("query", query=q)["data"]["result"])
    assert ran >= 40
