"""The recording rules and alerts of k8s/base/prometheusrule.yaml, checked by the real promtool
and by reading them.

promtool reads a plain rules file, which k8s/tools/extract_rules.py makes from the
PrometheusRule (its .spec). Each test writes that file into its tmp_path as
``dumbkv-rules.yaml``, next to copies of the unit-test files tests/rules/*.yaml that name it.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import require_tool
from prometheus import EXTRACT_RULES, RULE_SOURCE, extract_rules

ROOT = Path(__file__).resolve().parent.parent
UNIT_TESTS = sorted((ROOT / "tests" / "rules").glob("*.yaml"))
RULES_FILE = "dumbkv-rules.yaml"
RUNBOOKS = "https://github.com/dumbkv/dumbkv/blob/main/docs/runbooks/"
ALERTS = {
    "DumbKVDown", "DumbKVAvailabilityLow", "DumbKVLatencyHigh", "DumbKVErrorRateHigh",
    "DumbKVCPUNearLimit", "DumbKVMemoryNearLimit", "DumbKVStorageNearFull",
    "DumbKVBackendsInconsistent", "DumbKVAvailabilityBudgetBurn", "DumbKVErrorBudgetBurn",
    "DumbKVLatencyBudgetBurn", "DumbKVNotReady", "DumbKVMaintenanceWindowLong",
}
SEVERITIES = {"critical", "warning", "page", "ticket"}
PROMTOOL_TIMEOUT = 300


def spec() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(RULE_SOURCE.read_text())
    return dict(document["spec"])


def rules() -> list[dict[str, Any]]:
    return [rule for group in spec()["groups"] for rule in group["rules"]]


def alerts() -> list[dict[str, Any]]:
    return [rule for rule in rules() if "alert" in rule]


def promtool() -> str:
    return require_tool("promtool", "apt-get install prometheus")


def write_suite(directory: Path, edit: Callable[[str], str] = lambda text: text) -> list[Path]:
    """The extracted rules file (through ``edit``) and copies of the unit tests, in one dir."""
    text = extract_rules.plain_rules(RULE_SOURCE)
    (directory / RULES_FILE).write_text(edit(text))
    copies = []
    for path in UNIT_TESTS:
        copies.append(Path(shutil.copy(path, directory / path.name)))
    return copies


def run_promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=PROMTOOL_TIMEOUT, check=False)


# =========================================================================== promtool
def test_promtool_check_rules(tmp_path: Path) -> None:
    write_suite(tmp_path)
    result = run_promtool("check", "rules", RULES_FILE, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout, result.stdout
    assert len(rules()) == 46


def test_promtool_unit_tests_pass(tmp_path: Path) -> None:
    copies = write_suite(tmp_path)
    assert {p.name for p in copies} >= {"availability.yaml", "errors.yaml", "latency.yaml"}
    result = run_promtool("test", "rules", *[p.name for p in copies], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(copies), result.stdout


_GATE = re.compile(r'(process_start_time_seconds\{job="dumbkv"\}\)) > 30( \+ \d+)?\)')
MUTANTS: dict[str, Callable[[str], str]] = {
    # Client errors counted as errors: the "only client errors" cases must catch it.
    "client errors count": lambda text: text.replace(
        'status="server_error"', 'status=~"server_error|client_error"'),
    # No startup exclusion: the "spike in the first 30 s" cases must catch it.
    "no startup exclusion": lambda text: _GATE.sub(r"\1 > -1)", text),
    # No maintenance exclusion: the maintenance-window cases must catch it.
    "no maintenance exclusion": lambda text: text.replace(
        "dumbkv:maintenance:active == 1", "dumbkv:maintenance:active == 42"),
    # Thresholds a little too strict: the "must not fire" cases at the limits must catch it.
    "looser inconsistency limit": lambda text: text.replace("< 0.99", "<= 0.99"),
    # One SLO for every namespace: a deployment that is up masks another that is down.
    "aggregated by job alone": lambda text: text.replace("namespace, job", "job"),
    # Usage counted from cAdvisor and the kubelet's /metrics/resource at once.
    "container usage counted twice": lambda text: text.replace(',image!=""', ""),
}


@pytest.mark.parametrize("mutant", sorted(MUTANTS))
def test_unit_tests_catch_a_broken_rule(tmp_path: Path, mutant: str) -> None:
    """The unit tests fail when an exclusion or a limit is broken (they test something)."""
    edit = MUTANTS[mutant]
    original = extract_rules.plain_rules(RULE_SOURCE)
    assert edit(original) != original, f"mutant {mutant!r} changes nothing"
    copies = write_suite(tmp_path, edit)
    result = run_promtool("test", "rules", *[p.name for p in copies], cwd=tmp_path)
    assert result.returncode != 0, f"the unit tests did not notice: {mutant}"
    assert "FAILED" in result.stdout + result.stderr


# =========================================================================== single source
def test_extracted_file_is_the_spec() -> None:
    assert yaml.safe_load(extract_rules.plain_rules(RULE_SOURCE)) == spec()


def test_extract_rules_command_line(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(EXTRACT_RULES), str(RULE_SOURCE)],
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == extract_rules.plain_rules(RULE_SOURCE)
    default = subprocess.run([sys.executable, str(EXTRACT_RULES)], capture_output=True, text=True,
                             timeout=60, check=False)
    assert default.stdout == result.stdout

    other = tmp_path / "deployment.yaml"
    other.write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n")
    refused = subprocess.run([sys.executable, str(EXTRACT_RULES), str(other)], capture_output=True,
                             text=True, timeout=60, check=False)
    assert refused.returncode == 1 and "not a PrometheusRule" in refused.stderr
    assert refused.stdout == ""
    with pytest.raises(ValueError, match="not a PrometheusRule"):
        extract_rules.plain_rules(other)


def test_prometheusrule_resource() -> None:
    document = yaml.safe_load(RULE_SOURCE.read_text())
    assert document["apiVersion"] == "monitoring.coreos.com/v1"
    assert document["kind"] == "PrometheusRule"
    assert document["metadata"]["name"] == "dumbkv"
    assert document["metadata"]["labels"]["app.kubernetes.io/name"] == "dumbkv"


# =========================================================================== the rules
def test_every_alert_is_complete() -> None:
    names = set()
    for rule in alerts():
        name = rule["alert"]
        names.add(name)
        assert rule["labels"]["severity"] in SEVERITIES, name
        annotations = rule["annotations"]
        assert annotations["summary"].strip() and annotations["description"].strip(), name
        assert annotations["runbook_url"] == f"{RUNBOOKS}{name}.md", name
        assert annotations["runbook_url"].endswith(f"docs/runbooks/{name}.md")
    assert names == ALERTS


def test_burn_rate_alerts_have_a_page_and_a_ticket() -> None:
    for name in ("DumbKVAvailabilityBudgetBurn", "DumbKVErrorBudgetBurn",
                 "DumbKVLatencyBudgetBurn"):
        severities = sorted(r["labels"]["severity"] for r in alerts() if r["alert"] == name)
        assert severities == ["page", "ticket"], name


def test_burn_factors_are_budget_share_times_168h_over_the_long_window() -> None:
    """page 8 % in 1 h and 12.5 % in 6 h, ticket 20 % in 1 d and 42 % in 3 d, of 7 d."""
    expected = {(short, long_): round(share * 168 / hours, 2) for short, long_, share, hours in
                (("5m", "1h", 0.08, 1), ("30m", "6h", 0.125, 6), ("2h", "1d", 0.20, 24),
                 ("6h", "3d", 0.42, 72))}
    assert expected == {("5m", "1h"): 13.44, ("30m", "6h"): 3.5, ("2h", "1d"): 1.4,
                        ("6h", "3d"): 0.98}
    budgets = {"DumbKVAvailabilityBudgetBurn": 0.05, "DumbKVErrorBudgetBurn": 0.05,
               "DumbKVLatencyBudgetBurn": 0.10}
    pair = re.compile(r"ratio_rate(\w+)\)? > \(([\d.]+) \* ([\d.]+)\) and .*?ratio_rate(\w+)\)?"
                      r" > \(([\d.]+) \* ([\d.]+)\)")
    for rule in alerts():
        if rule["alert"] not in budgets:
            continue
        found = pair.findall(rule["expr"])
        assert found, rule["alert"]
        for short, f1, b1, long_, f2, b2 in found:
            assert float(f1) == float(f2) == expected[(short, long_)], (rule["alert"], short)
            assert float(b1) == float(b2) == budgets[rule["alert"]], rule["alert"]


def test_le_matchers_are_written_as_the_client_writes_them() -> None:
    matchers = [m for r in rules() for m in re.findall(r'\ble\s*=~?\s*"([^"]*)"', r["expr"])]
    assert set(matchers) == {"1.0", "2.0"}
    assert all(re.fullmatch(r"\d+\.\d+|\+Inf", m) for m in matchers)


def test_no_rule_counts_client_errors_as_errors() -> None:
    selectors = [s for r in rules() for s in re.findall(r"dumbkv_commands_total\{([^}]*)\}",
                                                        r["expr"])]
    assert selectors
    for selector in selectors:
        assert "client_error" not in selector
        status = re.search(r'status\s*(=~?)\s*"([^"]*)"', selector)
        assert status, f"a selector of dumbkv_commands_total without status: {selector}"
        assert set(status.group(2).split("|")) <= {"ok", "server_error"}, selector
    assert not any("client_error" in r["expr"] for r in rules())


def test_container_usage_is_read_from_cadvisor_only() -> None:
    """image!="" drops the kubelet's /metrics/resource copies (no image label) of the usage."""
    text = extract_rules.plain_rules(RULE_SOURCE)
    selectors = re.findall(
        r"\b(?:container_cpu_usage_seconds_total|container_memory_working_set_bytes)\{[^}]*\}",
        text)
    assert len(selectors) == 2, selectors
    assert all('image!=""' in selector for selector in selectors), selectors


def test_every_dumbkv_selector_is_scoped_to_the_job() -> None:
    own = re.compile(r"\b(dumbkv_\w+|up|process_start_time_seconds)\{([^}]*)\}")
    for rule in rules():
        for metric, matchers in own.findall(rule["expr"]):
            assert 'job="dumbkv"' in matchers, (rule.get("alert") or rule.get("record"), metric)


def test_every_aggregation_keeps_the_namespace() -> None:
    """by/on lists name the namespace with the job: two deployments keep two SLOs."""
    for rule in rules():
        for labels in re.findall(r"\b(?:by|on)\s*\(([^)]*)\)", rule["expr"]):
            names = {name.strip() for name in labels.split(",")}
            if "job" in names:
                assert "namespace" in names, (rule.get("alert") or rule.get("record"), labels)


def test_startup_and_maintenance_exclusions_are_in_the_expressions() -> None:
    gate = ('and on(namespace, job) (min by (namespace, job) (time() - '
            'process_start_time_seconds{job="dumbkv"}) > 30')
    maintenance = "unless on(namespace, job) (dumbkv:maintenance:active == 1)"
    by_name: dict[str, list[str]] = {}
    for rule in alerts():
        by_name.setdefault(rule["alert"], []).append(rule["expr"])
    for name in ("DumbKVErrorRateHigh", "DumbKVLatencyHigh", "DumbKVErrorBudgetBurn",
                 "DumbKVLatencyBudgetBurn"):
        assert all(gate in e and maintenance in e for e in by_name[name]), name
    assert maintenance in by_name["DumbKVDown"][0]
    assert 'absent_over_time(up{job="dumbkv"}[7d])' in by_name["DumbKVDown"][0]
    counted = next(r["expr"] for r in rules() if r.get("record") == "dumbkv:up:counted")
    assert maintenance in counted and "<= 30" in counted


# =========================================================================== the unit tests
def _cases() -> dict[str, dict[str, int]]:
    """Per alert name: how many promtool cases expect it firing and how many expect silence."""
    counts: dict[str, dict[str, int]] = {}
    for path in UNIT_TESTS:
        document = yaml.safe_load(path.read_text())
        assert document["rule_files"] == [RULES_FILE], path
        for test in document["tests"]:
            for case in test.get("alert_rule_test", []):
                kind = "firing" if case.get("exp_alerts") else "silent"
                entry = counts.setdefault(case["alertname"], {"firing": 0, "silent": 0})
                entry[kind] += 1
    return counts


def test_every_alert_has_firing_and_silent_cases() -> None:
    counts = _cases()
    assert set(counts) == ALERTS, set(counts) ^ ALERTS
    for name, entry in counts.items():
        assert entry["firing"] >= 1 and entry["silent"] >= 1, (name, entry)


def test_firing_cases_expect_the_alerts_labels() -> None:
    severities: dict[str, set[str]] = {}
    for rule in alerts():
        severities.setdefault(rule["alert"], set()).add(rule["labels"]["severity"])
    for path in UNIT_TESTS:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                for expected in case.get("exp_alerts") or []:
                    labels = expected["exp_labels"]
                    assert labels["severity"] in severities[case["alertname"]], (path, case)
                    annotations = expected["exp_annotations"]
                    assert annotations["runbook_url"].endswith(f"/{case['alertname']}.md")
