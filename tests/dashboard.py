"""The Grafana dashboard k8s/base/dashboards/dumbkv.json as the tests read it: its panels, its
queries, the metric names in a PromQL expression, and the queries with Grafana's variables
replaced so that a plain Prometheus can run them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "k8s" / "base" / "dashboards" / "dumbkv.json"
RULES = ROOT / "k8s" / "base" / "prometheusrule.yaml"

# What Grafana puts in place of its built-in variables, for a Prometheus scraping every second.
BUILTINS = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m",
            "__range_s": "300", "__interval_ms": "15000"}

_KEYWORDS = frozenset({
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
    "bool", "offset", "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk",
    "bottomk", "quantile", "count_values", "group", "inf", "nan",
})
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_MATCHERS = re.compile(r"\{[^}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_NAME = re.compile(r"(?<![\w.:])([A-Za-z_:][A-Za-z0-9_:]*+)(?!\s*\()")
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")


def load() -> dict[str, Any]:
    """The dashboard, parsed."""
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows and the panels inside collapsed rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def queries(dashboard: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, expr) of every target of every panel."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            yield panel.get("title", ""), target.get("expr", "")


def metric_names(expr: str) -> set[str]:
    """The metric and recording-rule names a PromQL expression selects."""
    text = _STRING.sub('""', expr)
    text = _LABEL_LIST.sub(" ", text)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    return {name for name in _NAME.findall(text) if name.lower() not in _KEYWORDS}


def substitute(text: str, values: Mapping[str, str]) -> str:
    """``text`` with ``$name``, ``${name}`` and ``${name:format}`` replaced: Grafana's
    built-ins by BUILTINS, the dashboard's own variables by ``values``."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name in BUILTINS:
            return BUILTINS[name]
        if name in values:
            return values[name]
        raise KeyError(f"no value for ${name} in {text!r}")

    return _VARIABLE.sub(one, text)


def label_values(query: str) -> tuple[str, str]:
    """``label_values(selector, label)`` of a template variable as (selector, label)."""
    match = re.fullmatch(r"\s*label_values\((.*),\s*(\w+)\s*\)\s*", query, re.S)
    if match is None:
        raise ValueError(f"not a label_values() query: {query!r}")
    return match.group(1), match.group(2)
