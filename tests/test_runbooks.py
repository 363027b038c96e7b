"""The runbooks in docs/runbooks against the product they describe.

* Every alert of k8s/base/prometheusrule.yaml has docs/runbooks/<alert>.md with the four fixed
  headings in order, its ``runbook_url`` points to that file, every runbook belongs to an alert
  and the index (docs/runbooks/README.md) lists each alert with the severities of its rules.
* Every ``dumbkv <subcommand> --flag`` written in a runbook (code blocks and inline code) is
  accepted by the real command line: ``dumbkv <subcommand> --help`` runs and names the flag.
* Every admin path a runbook mentions answers on a real server (not 404, and not 405 for the
  method the runbook uses), so a drift between the runbooks and the product fails here.
"""

from __future__ import annotations

import functools
import re
import shlex
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ServerProcess
from prometheus import http

ROOT = Path(__file__).resolve().parent.parent
RUNBOOKS = ROOT / "docs" / "runbooks"
INDEX = RUNBOOKS / "README.md"
RULES = ROOT / "k8s" / "base" / "prometheusrule.yaml"
URL_PREFIX = "https://github.com/dumbkv/dumbkv/blob/main/docs/runbooks/"
HEADINGS = ("What it means", "How to confirm", "How to mitigate",
            "How to trigger it for a drill")
CLI_TIMEOUT = 30.0

Factory = type[ServerProcess]


# =========================================================================== the rule file
def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of the PrometheusRule (a name may appear once per severity)."""
    document = yaml.safe_load(RULES.read_text())
    groups = (document.get("spec") or {}).get("groups") or []
    return [rule for group in groups for rule in group.get("rules") or [] if "alert" in rule]


def severities_by_alert() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for rule in alert_rules():
        found.setdefault(rule["alert"], set()).add(str(rule.get("labels", {}).get("severity")))
    return found


def runbook_files() -> list[Path]:
    return sorted(p for p in RUNBOOKS.glob("*.md") if p != INDEX)


def all_markdown() -> list[Path]:
    return sorted(RUNBOOKS.glob("*.md"))


# =========================================================================== alerts <-> files
def test_every_alert_has_its_runbook_and_runbook_url() -> None:
    rules = alert_rules()
    assert rules, f"{RULES.relative_to(ROOT)} defines no alert"
    problems = []
    for rule in rules:
        name = rule["alert"]
        if not (RUNBOOKS / f"{name}.md").is_file():
            problems.append(f"{name}: no docs/runbooks/{name}.md")
        url = rule.get("annotations", {}).get("runbook_url")
        if url != f"{URL_PREFIX}{name}.md":
            problems.append(f"{name}: runbook_url is {url!r}")
        if not rule.get("labels", {}).get("severity"):
            problems.append(f"{name}: no severity label")
    assert not problems, "\n".join(problems)


def test_every_runbook_belongs_to_an_alert() -> None:
    alerts = set(severities_by_alert())
    orphans = [p.name for p in runbook_files() if p.stem not in alerts]
    assert runbook_files(), "docs/runbooks has no runbook"
    assert not orphans, f"runbooks without an alert in the rule file: {orphans}"


@pytest.mark.parametrize("path", runbook_files(), ids=lambda p: p.stem)
def test_runbook_has_the_four_headings_in_order(path: Path) -> None:
    text = path.read_text()
    assert text.startswith(f"# {path.stem}\n"), "the title must be the alert's name"
    headings = tuple(re.findall(r"^## (.+?)\s*$", text, re.M))
    assert headings == HEADINGS
    for heading in HEADINGS:
        assert section(text, heading), f"section {heading!r} is empty"


def index_rows() -> dict[str, tuple[set[str], str]]:
    """The index table: alert -> (severities, link target)."""
    rows = {}
    for line in INDEX.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not re.fullmatch(r"DumbKV\w+", cells[0]):
            continue
        link = re.fullmatch(r"\[[^\]]+\]\(([^)]+)\)", cells[3])
        rows[cells[0]] = ({s.strip() for s in cells[1].split(",")}, link[1] if link else "")
    return rows


def test_index_lists_every_alert_with_its_severities_and_link() -> None:
    expected = severities_by_alert()
    rows = index_rows()
    assert set(rows) == set(expected), "the index and the rule file name different alerts"
    for name, (severities, link) in rows.items():
        assert severities == expected[name], f"{name}: index says {severities}"
        assert link == f"{name}.md" and (RUNBOOKS / link).is_file(), f"{name}: link {link!r}"


@pytest.mark.parametrize("path", runbook_files(), ids=lambda p: p.stem)
def test_runbook_states_the_severity_of_its_rules(path: Path) -> None:
    expected = severities_by_alert().get(path.stem)
    assert expected, f"{path.stem} is not an alert of the rule file"
    line = re.search(r"^Severit(?:y|ies) (.+?)\.", path.read_text(), re.M)
    assert line, "the runbook must say its severity on a line 'Severity **...**.'"
    assert set(re.findall(r"\*\*(\w+)\*\*", line[1])) == expected


def section(text: str, heading: str) -> str:
    """One section's text with its whitespace collapsed (prose wraps anywhere)."""
    body = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return " ".join(body.split())


def test_what_it_means_states_each_rules_for_duration() -> None:
    problems = []
    for rule in alert_rules():
        name, duration = rule["alert"], rule.get("for")
        text = section((RUNBOOKS / f"{name}.md").read_text(), HEADINGS[0])
        if duration is None:
            if "no `for`" not in text:
                problems.append(f"{name}: has no `for`, and the runbook should say so")
            continue
        minutes = re.fullmatch(r"(\d+)m", str(duration))
        assert minutes, f"{name}: for: {duration} is not in minutes"
        if f"{minutes[1]} minutes" not in text and f"| {duration} |" not in text:
            problems.append(f"{name}: 'What it means' does not state for: {duration}")
    assert not problems, "\n".join(problems)


# =========================================================================== dumbkv commands
@dataclass(frozen=True)
class Invocation:
    """One ``dumbkv`` command line found in a runbook."""

    where: str
    subcommand: str
    args: tuple[str, ...]

    @property
    def flags(self) -> set[str]:
        return {a.split("=", 1)[0] for a in self.args
                if re.fullmatch(r"--?[A-Za-z][\w-]*(=.*)?", a)}


_SEPARATORS = {"|", "||", "&", "&&", ";", "(", ")", "$", "--", "do", "then", "else"}
_PREFIXES = {"time", "sudo", "exec", "nohup", "!"}


def code_snippets(text: str) -> Iterator[str]:
    """Fenced code blocks, then the inline code spans of the prose around them."""
    fenced = re.compile(r"^```[^\n]*\n(.*?)^```", re.M | re.S)
    yield from (m[1] for m in fenced.finditer(text))
    prose = fenced.sub("", text)
    yield from (m[1].replace("\n", " ") for m in re.finditer(r"`([^`]+)`", prose))


def _tokens(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars="();|&")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        return list(lexer)
    except ValueError:  # a line of a heredoc, say: unbalanced quotes are not a command
        return line.split()


def invocations(text: str, where: str) -> list[Invocation]:
    """Every ``dumbkv <sub> ...`` that starts a shell command in ``text``'s code."""
    found = []
    for snippet in code_snippets(text):
        for line in snippet.replace("\\\n", " ").splitlines():
            tokens = _tokens(line)
            start = True
            i = 0
            while i < len(tokens):
                token = tokens[i]
                if token in _SEPARATORS:
                    start = True
                elif start and (token in _PREFIXES or re.fullmatch(r"\w+=\S*", token)):
                    pass  # still at the start of the command
                elif start and token == "timeout" and i + 1 < len(tokens):
                    i += 1  # its duration
                elif start and (token == "dumbkv" or token.endswith("bin/dumbkv")):
                    end = next((j for j in range(i + 1, len(tokens))
                                if tokens[j] in _SEPARATORS - {"--"}), len(tokens))
                    rest = tokens[i + 1:end]
                    if rest:  # a bare `dumbkv` names the container or the service
                        found.append(Invocation(where, rest[0], tuple(rest[1:])))
                    start = False
                    i = end
                    continue
                else:
                    start = False
                i += 1
    return found


def _cli() -> list[str]:
    script = Path(sys.executable).parent / "dumbkv"
    return [str(script)] if script.exists() else [sys.executable, "-m", "dumbkv"]


@functools.cache
def cli_help(subcommand: str) -> str | None:
    """``dumbkv <subcommand> --help`` of the real command line; None when it is refused."""
    result = subprocess.run([*_cli(), subcommand, "--help"], capture_output=True, text=True,
                            timeout=CLI_TIMEOUT, check=False)
    return result.stdout if result.returncode == 0 else None


def positional_choices(help_text: str) -> list[set[str]]:
    """The choices of each positional argument in the usage lines (not an option's values)."""
    usage = help_text.split("\n\n", 1)[0]
    return [set(m[1].split(",")) for m in re.finditer(r"\{([\w,-]+)\}", usage)
            if not re.search(r"-[\w-]+\s+$", usage[:m.start()])]


def cli_problems(calls: Iterable[Invocation]) -> list[str]:
    """What the real command line would refuse in ``calls``."""
    problems = []
    for call in calls:
        help_text = cli_help(call.subcommand) if call.subcommand else None
        if help_text is None:
            problems.append(f"{call.where}: 'dumbkv {call.subcommand}' is not a subcommand")
            continue
        for flag in sorted(call.flags):
            if not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text):
                problems.append(f"{call.where}: 'dumbkv {call.subcommand}' has no {flag}")
        for choices in positional_choices(help_text):
            if not choices & set(call.args):
                problems.append(f"{call.where}: 'dumbkv {call.subcommand}' needs one of "
                                f"{{{','.join(sorted(choices))}}}: {' '.join(call.args)}")
    return problems


def runbook_invocations() -> list[Invocation]:
    return [call for path in all_markdown() for call in invocations(path.read_text(), path.name)]


def test_every_dumbkv_command_in_the_runbooks_is_accepted_by_the_cli() -> None:
    calls = runbook_invocations()
    # The runbooks use these; finding none would mean the extraction is broken.
    assert {"serve", "slo", "maintenance", "crosscheck"} <= {c.subcommand for c in calls}
    problems = cli_problems(calls)
    assert not problems, "\n".join(problems)


def test_the_cli_check_catches_drift() -> None:
    text = ("```sh\nNS=x timeout 5 dumbkv slo --no-such-flag &\n"
            "kubectl -n \"$NS\" exec deploy/dumbkv -c dumbkv -- dumbkv maintenance --admin u\n"
            "```\nand inline: `dumbkv nosuchcommand --json`, `dumbkv slo --json`.\n")
    calls = invocations(text, "sample")
    assert [(c.subcommand, c.flags) for c in calls] == [
        ("slo", {"--no-such-flag"}), ("maintenance", {"--admin"}),
        ("nosuchcommand", {"--json"}), ("slo", {"--json"})]
    problems = cli_problems(calls)
    assert len(problems) == 3, problems
    assert "has no --no-such-flag" in problems[0]
    assert "needs one of {start,status,stop}" in problems[1]
    assert "'dumbkv nosuchcommand' is not a subcommand" in problems[2]


# =========================================================================== admin paths
_KNOWN = r"/(?:health|ready|metrics|availability|crosscheck|maintenance(?:/[\w-]+)?)(?![\w/-])"
_AFTER_ADMIN = r"\$\{?ADMIN\}?(/[\w/-]*)"


def admin_paths(text: str) -> set[tuple[str, str]]:
    """(method, path) of every admin path mentioned: POST when the line says so, else GET."""
    found = set()
    for line in text.splitlines():
        paths = set(re.findall(_KNOWN, line)) | set(re.findall(_AFTER_ADMIN, line))
        for path in paths:
            post = re.search(rf"POST\s+(?:\S*?){re.escape(path)}(?![\w/-])", line) or (
                "-X POST" in line)
            found.add(("POST" if post else "GET", path))
    return found


def path_problems(admin_url: str, paths: Iterable[tuple[str, str]]) -> list[str]:
    """Paths the real admin port does not serve with that method. POST goes without a body and
    without the admin token, so it changes nothing (400 or 401)."""
    problems = []
    for method, path in sorted(paths):
        status, _ = http(method, admin_url + path)
        if status in (404, 405):
            problems.append(f"{method} {path}: HTTP {status}")
    return problems


def runbook_paths() -> set[tuple[str, str]]:
    return {p for path in all_markdown() for p in admin_paths(path.read_text())}


@pytest.mark.backends("sqlite")
def test_every_admin_path_in_the_runbooks_exists(server_factory: Factory,
                                                 tmp_path: Path) -> None:
    paths = runbook_paths()
    assert {p for _, p in paths} >= {"/health", "/ready", "/metrics", "/availability"}
    server = server_factory(tmp_path, "--admin-token", "runbook-test").start()
    problems = path_problems(server.admin_url, paths)
    assert not problems, "\n".join(problems)
    status, body = http("GET", server.admin_url + "/maintenance")
    assert status == 401, "the POST checks rely on the token keeping them harmless"
    status, body = http("GET", server.admin_url + "/metrics")
    assert status == 200
    assert b'dumbkv_crosscheck{' not in body, "a POST /crosscheck check stored figures"


@pytest.mark.backends("sqlite")
def test_the_path_check_catches_drift(server_factory: Factory, tmp_path: Path) -> None:
    text = ('curl -s "$ADMIN/healthz"\ncurl -s -X POST "$ADMIN/maintenance/start"\n'
            "GET /maintenance/start and /ready, POST /metrics\n")
    paths = admin_paths(text)
    assert paths == {("GET", "/healthz"), ("POST", "/maintenance/start"),
                     ("GET", "/maintenance/start"), ("GET", "/ready"), ("POST", "/metrics")}
    server = server_factory(tmp_path, "--admin-token", "runbook-test").start()
    assert path_problems(server.admin_url, paths) == [
        "GET /healthz: HTTP 404", "GET /maintenance/start: HTTP 405", "POST /metrics: HTTP 405"]
