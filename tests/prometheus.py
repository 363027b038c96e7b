"""A real Prometheus in a temporary directory, scraping one DumbKV admin port every second,
the small HTTP helper the tests use to talk to it and to the admin port, and
k8s/tools/extract_rules.py (``extract_rules``), which turns the PrometheusRule into the plain
rules file Prometheus and promtool read.

``running_prometheus(binary, root, target, rule_files)`` starts one (retrying when another
program takes its free port first), waits until it is ready and stops it by PID when the block
ends, also when the test fails. The scrape job is ``dumbkv``, as in Kubernetes, and rules are
evaluated every second.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from conftest import poll_until
from postgres import free_port

from dumbkv.httpclient import http_request

HTTP_TIMEOUT = 10.0
READY_TIMEOUT = 60.0
ROOT = Path(__file__).resolve().parent.parent
RULE_SOURCE = ROOT / "k8s" / "base" / "prometheusrule.yaml"
EXTRACT_RULES = ROOT / "k8s" / "tools" / "extract_rules.py"


def _load_extract_rules() -> ModuleType:
    """k8s/tools/extract_rules.py as a module (a script beside the manifests, not a package)."""
    spec = importlib.util.spec_from_file_location("extract_rules", EXTRACT_RULES)
    assert spec is not None and spec.loader is not None, f"{EXTRACT_RULES} is missing"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


extract_rules = _load_extract_rules()


def http(method: str, url: str, body: Any = None) -> tuple[int, bytes]:
    """One HTTP request (a JSON body when given); (status, body) also for 4xx/5xx answers."""
    data = json.dumps(body).encode() if body is not None else None
    return http_request(method, url, timeout=HTTP_TIMEOUT, data=data)


class Prometheus:
    """One Prometheus process: ``--config.file`` and ``--storage.tsdb.path`` in ``root``."""

    def __init__(self, binary: str, root: Path, target: str,
                 rule_files: Sequence[Path] = ()) -> None:
        self.root = root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = root / "prometheus.yml"
        rules = "".join(f"  - '{path}'\n" for path in rule_files)
        config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            + (f"rule_files:\n{rules}" if rules else "")
            + "scrape_configs:\n  - job_name: dumbkv\n    scrape_interval: 1s\n"
            f"    scrape_timeout: 1s\n    static_configs:\n      - targets: ['{target}']\n"
        )
        self.log = (root / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={root / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT, cwd=root,
        )

    def wait_ready(self) -> bool:
        """True once ready; False when it exited because its port was taken meanwhile."""

        def ready() -> str | None:
            if self.proc.poll() is not None:
                if "address already in use" in self.output():
                    return "port taken"
                raise AssertionError("Prometheus exited:\n" + self.output())
            try:
                return "ready" if http("GET", self.url + "/-/ready")[0] == 200 else None
            except OSError:
                return None

        return poll_until("Prometheus to be ready", ready, READY_TIMEOUT, 0.1) == "ready"

    def api(self, path: str, **params: str) -> dict[str, Any]:
        """The decoded answer of ``GET /api/v1/<path>``, whatever its status (errors too)."""
        query = "?" + urllib.parse.urlencode(params) if params else ""
        _, body = http("GET", f"{self.url}/api/v1/{path}{query}")
        answer: dict[str, Any] = json.loads(body)
        return answer

    def query(self, promql: str) -> dict[str, float]:
        """An instant query that must succeed: {label values joined by ',': value}."""
        answer = self.api("query", query=promql)
        assert answer["status"] == "success", (promql, answer)
        return {",".join(r["metric"].values()): float(r["value"][1])
                for r in answer["data"]["result"]}

    def output(self) -> str:
        """The last 3000 characters of its log."""
        self.log.flush()
        return (self.root / "prometheus.log").read_text(errors="replace")[-3000:]

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 20 s; closes the log."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@contextlib.contextmanager
def running_prometheus(binary: str, root: Path, target: str,
                       rule_files: Sequence[Path] = (), attempts: int = 3
                       ) -> Iterator[Prometheus]:
    """A ready Prometheus scraping ``target`` (host:port) as job ``dumbkv``; stopped after.

    Another program may take the free port before Prometheus binds it: then it tries again on
    another port, ``attempts`` times in all."""
    for attempt in range(attempts):
        prom_dir = root / f"prometheus-{attempt}"
        prom_dir.mkdir(parents=True)
        prom = Prometheus(binary, prom_dir, target, rule_files)
        try:
            if prom.wait_ready():
                break
        except BaseException:
            prom.stop()
            raise
        prom.stop()
    else:
        raise AssertionError(f"Prometheus found no free port in {attempts} attempts")
    try:
        yield prom
    finally:
        prom.stop()
