"""Print the plain Prometheus rules file held in DumbKV's PrometheusRule.

k8s/base/prometheusrule.yaml is the single source of every recording rule and alert. promtool
and a Prometheus without the operator cannot read a PrometheusRule resource; what they read is
its ``.spec`` (a ``groups:`` document), which this prints:

    python k8s/tools/extract_rules.py [k8s/base/prometheusrule.yaml] > dumbkv-rules.yaml

Importable: ``plain_rules(path) -> str``. Needs PyYAML only.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

__all__ = ["DEFAULT_PATH", "plain_rules"]

DEFAULT_PATH = Path(__file__).resolve().parent.parent / "base" / "prometheusrule.yaml"


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PromQL expressions) as literal blocks, as they are in the source."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def plain_rules(path: str | Path = DEFAULT_PATH) -> str:
    """The ``groups:`` rules file (YAML text) that is the PrometheusRule's ``.spec``."""
    document: Any = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    if not isinstance(document, dict) or document.get("kind") != "PrometheusRule":
        raise ValueError(f"{path}: not a PrometheusRule resource")
    spec = document.get("spec")
    if not isinstance(spec, dict) or not isinstance(spec.get("groups"), list):
        raise ValueError(f"{path}: the PrometheusRule has no spec.groups list")
    header = f"# Generated from {Path(path).name} (its .spec) by extract_rules.py; do not edit.\n"
    body: str = yaml.dump(spec, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
    return header + body


def main(argv: list[str]) -> int:
    if len(argv) > 1:
        print("usage: extract_rules.py [PROMETHEUSRULE_YAML] > rules.yaml", file=sys.stderr)
        return 2
    try:
        sys.stdout.write(plain_rules(argv[0] if argv else DEFAULT_PATH))
    except (OSError, ValueError, yaml.YAMLError) as exc:
        print(f"extract_rules.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
