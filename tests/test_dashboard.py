"""The Grafana dashboard k8s/base/dashboards/dumbkv.json, read as a file: its shape, its data
source, and that every name its queries select exists (a DumbKV metric documented in the
README, a recording rule of k8s/base/prometheusrule.yaml, or a documented container metric).
tests/test_monitoring.py runs every query against a real Prometheus.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from dashboard import ROOT, RULES, label_values, load, metric_names, panels, queries

Panel = dict[str, Any]
PROMETHEUS_OWN = {"up"}  # written by Prometheus for every scrape target


def readme_section(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## )", text, re.S | re.M)
    assert match is not None, heading
    return match.group(1)


def documented_dumbkv_metrics() -> set[str]:
    """The README metrics table, with the series names a histogram exports."""
    names: set[str] = set()
    for name, kind in re.findall(r"^\| `(\w+)` \| (\w+) \|", readme_section(
            "Admin port and metrics"), re.M):
        names.add(name)
        if kind == "histogram":
            names |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return names


def documented_container_metrics() -> set[str]:
    """The container-level metrics the README's dashboard section lists."""
    return set(re.findall(r"`((?:container|kube|kubelet)_\w+)`",
                          readme_section("Grafana dashboard")))


def recording_rules() -> set[str]:
    """Every ``record:`` name of the PrometheusRule (none when the file is missing)."""
    if not RULES.exists():
        return set()
    spec = yaml.safe_load(RULES.read_text()).get("spec") or {}
    return {rule["record"] for group in spec.get("groups") or []
            for rule in group.get("rules") or [] if "record" in rule}


def exprs(panel: Panel) -> list[str]:
    return [target.get("expr", "") for target in panel.get("targets", [])]


def query_panels() -> list[Panel]:
    return [p for p in panels(load()) if p.get("type") != "row"]


def uses(panel: Panel, *fragments: str) -> bool:
    """True when one query of the panel holds every fragment (spaces ignored)."""
    return any(all(re.sub(r"\s", "", f) in re.sub(r"\s", "", e) for f in fragments)
               for e in exprs(panel))


def threshold_values(panel: Panel) -> set[float]:
    steps = panel["fieldConfig"]["defaults"].get("thresholds", {}).get("steps", [])
    return {float(s["value"]) for s in steps if s.get("value") is not None}


# ---------------------------------------------------------------------------- shape
def test_dashboard_is_grafana_json_with_unique_panel_ids() -> None:
    dashboard = load()
    assert dashboard["title"] and dashboard["uid"] == "dumbkv"
    assert 36 <= dashboard["schemaVersion"] <= 41
    ids = [p["id"] for p in panels(dashboard)]
    assert all(isinstance(i, int) for i in ids)
    assert len(ids) == len(set(ids)), sorted(i for i in ids if ids.count(i) > 1)


def test_every_panel_has_a_title_and_queries() -> None:
    found = query_panels()
    assert len(found) >= 20
    for panel in found:
        assert panel.get("title"), panel["id"]
        assert panel.get("targets"), panel["title"]
        for target in panel["targets"]:
            assert target.get("expr", "").strip(), (panel["title"], target)
            assert target.get("refId"), panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]


def test_panels_do_not_overlap_on_the_grid() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in panels(load()):
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in cells, (panel["title"], cells[(x, y)])
                cells[(x, y)] = panel["title"]


def test_the_data_source_is_a_prometheus_variable() -> None:
    dashboard = load()
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    source = variables["datasource"]
    assert source["type"] == "datasource" and source["query"] == "prometheus"
    for panel in query_panels():
        for owner in (panel, *panel["targets"]):
            assert owner["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, (
                panel["title"])
    for name in ("instance", "namespace", "pod"):
        variable = variables[name]
        assert variable["type"] == "query" and variable["datasource"]["uid"] == "${datasource}"
        selector, label = label_values(variable["query"]["query"])
        assert label == name and 'job="dumbkv"' in selector


def test_every_selected_name_exists() -> None:
    documented = documented_dumbkv_metrics()
    assert {"dumbkv_commands_total", "dumbkv_command_duration_seconds_bucket",
            "dumbkv_maintenance", "process_start_time_seconds"} <= documented
    containers = documented_container_metrics()
    assert {"container_cpu_usage_seconds_total", "kube_pod_container_resource_limits",
            "kubelet_volume_stats_used_bytes"} <= containers
    known = documented | containers | recording_rules() | PROMETHEUS_OWN
    for title, expr in queries(load()):
        names = metric_names(expr)
        assert names, (title, expr)
        assert names <= known, (title, sorted(names - known))


def test_every_dumbkv_query_selects_the_dumbkv_job() -> None:
    """Metrics by the instances chosen; recording rules (aggregated by namespace and job) by
    namespace."""
    for title, expr in queries(load()):
        for selector in re.findall(r"\b(?:dumbkv_\w+|process_\w+|up)\{[^}]*\}", expr):
            assert 'job="dumbkv"' in selector and 'instance=~"$instance"' in selector, (
                title, selector)
        rules = re.findall(r"\bdumbkv:\w+:\w+(\{[^}]*\})?", expr)
        assert all(selector == '{job="dumbkv", namespace=~"$namespace"}' for selector in rules), (
            title, rules)


def test_container_usage_is_read_from_cadvisor_only() -> None:
    """The kubelet's /metrics/resource exports the same usage names without an ``image`` label;
    a Prometheus that scrapes both would double the CPU and memory lines without image!=""."""
    selectors = [selector for _title, expr in queries(load()) for selector in re.findall(
        r"\b(?:container_cpu_usage_seconds_total|container_memory_working_set_bytes)\{[^}]*\}",
        expr)]
    assert len(selectors) >= 4, selectors
    for selector in selectors:
        assert 'image!=""' in selector and 'container="dumbkv"' in selector, selector


def test_name_extraction_sees_through_promql() -> None:
    expr = ('sum by (status, le) (rate(a_total{x="b_c", y=~"$d"}[5m] offset 1h)) / '
            'on(instance) group_left(pod) max without (z) (b:rule:ratio) or vector(0) '
            '> bool 1e3 and c')
    assert metric_names(expr) == {"a_total", "b:rule:ratio", "c"}


# ---------------------------------------------------------------------------- content
def latency_panel() -> Panel:
    found = [p for p in query_panels() if p["type"] == "timeseries"
             and uses(p, "histogram_quantile(0.9,", "dumbkv_command_duration_seconds_bucket")]
    assert len(found) == 1, [p["title"] for p in found]
    return found[0]


def test_latency_panel_draws_the_slo_and_alert_lines() -> None:
    panel = latency_panel()
    defaults = panel["fieldConfig"]["defaults"]
    assert defaults["unit"] == "s"
    assert {1.0, 2.0} <= threshold_values(panel)
    assert defaults["custom"]["thresholdsStyle"]["mode"] in ("line", "line+area", "dashed")
    for quantile in ("0.5", "0.9", "0.99"):
        assert uses(panel, f"histogram_quantile({quantile},", "command"), quantile


SECTIONS: dict[str, Callable[[Panel], bool]] = {
    "availability (7 d SLO 95 %)": lambda p: uses(p, "dumbkv:availability:ratio_7d")
    and 0.95 in threshold_values(p),
    "availability alert line (2 h, 90 %)": lambda p: uses(p, "dumbkv:availability:ratio_2h")
    and 0.9 in threshold_values(p),
    "availability error budget": lambda p: "budget" in p["title"].lower()
    and "availab" in p["title"].lower(),
    "server-error budget": lambda p: "budget" in p["title"].lower()
    and "error" in p["title"].lower(),
    "latency P50/P90/P99 by command": lambda p: uses(p, "histogram_quantile(0.99,", "command")
    and uses(p, "histogram_quantile(0.5,", "command"),
    "ops/s by status class": lambda p: uses(p, "by(status)", "dumbkv_commands_total"),
    "server-error rate": lambda p: uses(p, "dumbkv:sli_errors:ratio_rate5m")
    and uses(p, 'status="client_error"') and {0.05, 0.1} <= threshold_values(p),
    "budget burn rates": lambda p: uses(p, "dumbkv:sli_errors:ratio_rate1h")
    and uses(p, "dumbkv:sli_latency_over_1s:ratio_rate") and 13.44 in threshold_values(p),
    "connections": lambda p: uses(p, "dumbkv_connections_active"),
    "DB query time by backend": lambda p: uses(p, "dumbkv_store_query_duration_seconds_bucket",
                                               "backend"),
    "CPU vs limit": lambda p: uses(p, "container_cpu_usage_seconds_total")
    and uses(p, "kube_pod_container_resource_limits", 'resource="cpu"')
    and uses(p, "process_cpu_seconds_total"),
    "memory vs limit": lambda p: uses(p, "container_memory_working_set_bytes")
    and uses(p, "kube_pod_container_resource_limits", 'resource="memory"')
    and uses(p, "process_resident_memory_bytes"),
    "storage vs capacity": lambda p: uses(p, "kubelet_volume_stats_used_bytes")
    and uses(p, "kubelet_volume_stats_capacity_bytes"),
    "cross-check ratio": lambda p: uses(p, "dumbkv_crosscheck", "identical_ratio"),
    "maintenance": lambda p: uses(p, "dumbkv_maintenance"),
}


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_required_section_is_present(section: str) -> None:
    assert any(SECTIONS[section](p) for p in query_panels()), section
