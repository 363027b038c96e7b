"""What the container image and Kubernetes tests share: a small Dockerfile parser, the list of
real ``DUMBKV_*`` settings, and a ``dumbkv serve`` started with a given environment (as a
container or a pod would start it) on loopback, stopped by PID when the block ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from conftest import poll_until

from dumbkv.config import SETTINGS
from dumbkv.httpclient import http_request

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "Dockerfile"
START_TIMEOUT = 30.0


def setting_envs() -> set[str]:
    """Every environment variable ``dumbkv serve`` reads (one per setting)."""
    return {s.env for s in SETTINGS}


def http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET ``url``: (status, body), also for 4xx/5xx answers."""
    return http_request("GET", url, timeout=timeout)


# --------------------------------------------------------------------------- Dockerfile
@dataclass
class Instruction:
    keyword: str  # upper case: FROM, RUN, ENV...
    flags: dict[str, str]  # leading --name=value options (RUN --mount, HEALTHCHECK --interval)
    args: str  # the rest of the line, continuation lines joined


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def env(self) -> dict[str, str]:
        """The stage's ENV, in order (``ENV A=1 B=2`` and the legacy ``ENV A 1``)."""
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            words = shlex.split(instruction.args)
            if words and "=" not in words[0]:
                values[words[0]] = instruction.args.split(None, 1)[1]
                continue
            for word in words:
                key, _, value = word.partition("=")
                values[key] = value
        return values

    def workdir(self) -> str:
        """The stage's working directory (WORKDIR, ``/`` when none)."""
        path = "/"
        for instruction in self.all("WORKDIR"):
            path = os.path.join(path, instruction.args.strip())
        return path


def exec_form(args: str) -> list[str]:
    """A JSON exec form (``["dumbkv", "serve"]``); shell forms are refused."""
    value = json.loads(args)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"not an exec form: {args!r}")
    return value


def _logical_lines(text: str) -> Iterator[str]:
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and current):
            continue  # comments (and parser directives), also inside continued lines
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        line = (current + stripped).strip()
        current = ""
        if line:
            yield line
    if current.strip():
        yield current.strip()


def parse_dockerfile(text: str) -> list[Stage]:
    """The stages of a Dockerfile, each with its instructions."""
    stages: list[Stage] = []
    for line in _logical_lines(text):
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        flags: dict[str, str] = {}
        rest = rest.strip()
        while rest.startswith("--"):
            flag, _, rest = rest.partition(" ")
            name, _, value = flag[2:].partition("=")
            flags[name] = value
            rest = rest.strip()
        if keyword == "FROM":
            words = rest.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
            continue
        if not stages:
            if keyword == "ARG":
                continue
            raise ValueError(f"{keyword} before FROM")
        stages[-1].instructions.append(Instruction(keyword, flags, rest))
    return stages


def mount_options(value: str) -> dict[str, str]:
    """``type=bind,from=build,source=/wheels,target=/wheels`` as a dict."""
    return dict(part.split("=", 1) for part in value.split(",") if "=" in part)


def runtime_stage() -> Stage:
    """The image's final stage."""
    return parse_dockerfile(DOCKERFILE.read_text())[-1]


def image_uid() -> int:
    """The numeric UID the image runs as (USER uid or uid:gid); fails for a user name."""
    user = runtime_stage().last("USER")
    if user is None:
        raise AssertionError("the image has no USER: it would run as root")
    return int(user.args.split(":", 1)[0])


# --------------------------------------------------------------------------- a real server
@contextlib.contextmanager
def serving(argv: Sequence[str], env: Mapping[str, str], cwd: Path, admin_port: int,
            log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``argv`` (a ``dumbkv serve`` command line) with exactly ``env``; wait until
    ``/ready`` on ``admin_port`` answers 200 (the store is open and the RESP port listens);
    SIGTERM it (SIGKILL if it hangs) at the end."""
    with log.open("wb") as out:
        proc = subprocess.Popen(list(argv), env=dict(env), cwd=cwd, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"{argv} exited with {proc.returncode}:\n"
                                     + log.read_text(errors="replace"))
            try:
                return http_get(f"http://127.0.0.1:{admin_port}/ready")[0] == 200
            except OSError:
                return False

        poll_until(f"/ready of {' '.join(argv)}", ready, START_TIMEOUT, 0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(START_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
