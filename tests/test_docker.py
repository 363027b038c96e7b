"""The container image (Dockerfile). No Docker engine runs here, so the Dockerfile is parsed
and its parts are run for real: its pip commands in clean venvs (the stand-ins for the base
image's Python), its CMD with its ENV, and its HEALTHCHECK against that server.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from deploy import (
    DOCKERFILE,
    REPO,
    Stage,
    exec_form,
    http_get,
    image_uid,
    mount_options,
    parse_dockerfile,
    runtime_stage,
    serving,
    setting_envs,
)
from postgres import free_port

from dumbkv.config import SETTINGS, Config

BASE_IMAGE = "python:3.11-slim"
PIP_TIMEOUT = 600
DEFAULTS = Config()


def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())


def serve_help() -> str:
    return subprocess.run([sys.executable, "-m", "dumbkv", "serve", "--help"],
                          capture_output=True, text=True, check=True, timeout=60).stdout


def duration(text: str) -> float:
    """A Docker duration (30s, 1m30s, 500ms) in seconds."""
    parts = re.findall(r"([0-9.]+)(ms|s|m|h)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    scale = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    return sum(float(n) * scale[u] for n, u in parts)


# --------------------------------------------------------------------------- .dockerignore
def ignored(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents wins."""
    parents = [str(Path(*Path(path).parts[:i])) for i in range(1, len(Path(path).parts) + 1)]
    result = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        variants = {pattern, pattern.removeprefix("**/")}
        if any(fnmatch.fnmatchcase(p, v) for p in parents for v in variants):
            result = not negate
    return result


def dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def context_files(source: str) -> list[Path]:
    """The files of the build context under ``source`` that .dockerignore lets through."""
    patterns = dockerignore()
    top = REPO / source
    candidates = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
    return [p for p in candidates if not ignored(str(p.relative_to(REPO)), patterns)]


def test_dockerignore_keeps_the_build_inputs_and_drops_the_rest() -> None:
    patterns = dockerignore()
    for stage in stages():
        for copy in stage.all("COPY"):
            if "from" in copy.flags:
                continue
            for source in copy.args.split()[:-1]:
                assert context_files(source), f"COPY {source}: nothing left in the context"
    for path in (".venv/bin/python", ".git/HEAD", "dumbkv-data/dumbkv.db", "tests/conftest.py",
                 "src/dumbkv/__pycache__/cli.cpython-311.pyc", "k8s/base/kustomization.yaml",
                 "src/dumbkv/server.cpython-311-x86_64-linux-gnu.so", "build/temp/server.o"):
        assert ignored(path, patterns), path
    assert not ignored("src/dumbkv/cli.py", patterns)


# --------------------------------------------------------------------------- structure
def test_stages_build_on_python_slim_and_run_as_a_numeric_non_root_user() -> None:
    all_stages = stages()
    assert len(all_stages) >= 2  # a build stage and a runtime stage
    assert {s.base for s in all_stages} == {BASE_IMAGE}
    assert image_uid() > 0
    runtime = runtime_stage()
    assert runtime.all("COPY") == [] or all("from" in c.flags for c in runtime.all("COPY"))


def test_ports_volume_and_environment() -> None:
    runtime = runtime_stage()
    exposed = {int(p.split("/")[0]) for e in runtime.all("EXPOSE") for p in e.args.split()}
    env = runtime.env()
    port = int(env.get("DUMBKV_PORT", DEFAULTS.port))
    admin = int(env.get("DUMBKV_ADMIN_PORT", DEFAULTS.admin_port))
    assert exposed == {port, admin} == {7379, 7380}
    volumes = {v for i in runtime.all("VOLUME") for v in exec_form(i.args)}
    assert volumes == {"/data"}
    assert env["DUMBKV_DATA_DIR"] == "/data"
    assert env["DUMBKV_STORE"] == "sqlite:////data/dumbkv.db"
    assert env["DUMBKV_HOST"] == env["DUMBKV_ADMIN_HOST"] == "0.0.0.0"
    types = {s.env: s for s in SETTINGS}
    for var, value in env.items():
        if var.startswith("DUMBKV_"):
            assert var in setting_envs(), f"{var} is not a DumbKV setting"
            types[var].type(value)  # raises for a value DumbKV refuses


def test_cmd_and_healthcheck_use_real_flags() -> None:
    runtime = runtime_stage()
    cmd_instruction = runtime.last("CMD")
    assert cmd_instruction is not None
    cmd = exec_form(cmd_instruction.args)
    assert cmd[:2] == ["dumbkv", "serve"]
    help_text = serve_help()
    for flag in (arg.split("=")[0] for arg in cmd[2:] if arg.startswith("--")):
        assert re.search(rf"(^|\s){re.escape(flag)}\b", help_text), flag
    health = runtime.last("HEALTHCHECK")
    assert health is not None
    assert set(health.flags) <= {"interval", "timeout", "start-period", "start-interval",
                                 "retries"}
    assert duration(health.flags["start-period"]) >= DEFAULTS.startup_exclusion
    assert duration(health.flags["timeout"]) < duration(health.flags["interval"])
    kind, _, rest = health.args.partition(" ")
    assert kind == "CMD"
    check = exec_form(rest)
    assert check[:2] == ["python", "-c"]  # nothing beyond the base image's Python
    assert "/health" in check[2]


# --------------------------------------------------------------------------- for real
class Sandbox:
    """The image's file system under ``root``: paths the Dockerfile names (WORKDIR, VOLUME,
    COPY destinations, RUN mounts) are rewritten to ``root``-relative ones in commands and ENV."""

    def __init__(self, root: Path, all_stages: list[Stage]) -> None:
        self.root = root
        tops = set()
        for stage in all_stages:
            for instruction in stage.instructions:
                paths: list[str] = []
                if instruction.keyword == "WORKDIR":
                    paths = [instruction.args]
                elif instruction.keyword == "VOLUME":
                    paths = exec_form(instruction.args)
                elif instruction.keyword == "COPY":
                    paths = [instruction.args.split()[-1]]
                elif "mount" in instruction.flags:
                    mount = mount_options(instruction.flags["mount"])
                    assert mount.get("source", "/") == mount.get("target"), mount
                    paths = [mount["target"]]
                tops |= {p.split("/")[1] for p in paths if p.startswith("/")}
        self.pattern = re.compile(r"(?<![\w.-])(/(?:" + "|".join(map(re.escape, tops))
                                  + r"))(?=/|\s|$)")

    def path(self, text: str) -> str:
        return self.pattern.sub(lambda m: str(self.root) + m.group(1), text)

    def copy(self, instruction_args: str, workdir: str) -> None:
        *sources, dest = instruction_args.split()
        target = Path(self.path(os.path.join(workdir, dest)))
        for source in sources:
            for file in context_files(source):
                rel = file.relative_to(REPO / source) if (REPO / source).is_dir() else file.name
                into = target / rel if dest.endswith("/") or (REPO / source).is_dir() else target
                into.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(file, into)


def clean_venv(path: Path) -> Path:
    subprocess.run([sys.executable, "-m", "venv", str(path)], check=True, timeout=300)
    return path / "bin"


def base_env(stage: Stage, sandbox: Sandbox, bindir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("DUMBKV_", "PIP_", "VIRTUAL_ENV", "PYTHON"))}
    env.update({k: sandbox.path(v) for k, v in stage.env().items()})
    env["PATH"] = f"{bindir}{os.pathsep}{os.environ['PATH']}"
    return env


def build(stage: Stage, sandbox: Sandbox, bindir: Path) -> None:
    """Run the stage's COPY and pip commands (the others create users and directories)."""
    env = base_env(stage, sandbox, bindir)
    workdir = "/"
    pip_runs = 0
    for instruction in stage.instructions:
        if instruction.keyword == "WORKDIR":
            workdir = os.path.join(workdir, instruction.args)
            Path(sandbox.path(workdir)).mkdir(parents=True, exist_ok=True)
        elif instruction.keyword == "COPY":
            assert "from" not in instruction.flags, "COPY --from: not known to this test"
            sandbox.copy(instruction.args, workdir)
        elif instruction.keyword == "RUN" and re.search(r"\bpip\b", instruction.args):
            pip_runs += 1
            cwd = Path(sandbox.path(workdir))
            cwd.mkdir(parents=True, exist_ok=True)
            result = subprocess.run(["bash", "-euo", "pipefail", "-c",
                                     sandbox.path(instruction.args)], cwd=cwd, env=env,
                                    capture_output=True, text=True, timeout=PIP_TIMEOUT)
            assert result.returncode == 0, f"{instruction.args}\n{result.stdout}{result.stderr}"
    assert pip_runs, "a stage without a pip command"


def test_the_images_recipe_builds_a_server_that_serves(tmp_path: Path) -> None:
    """The Dockerfile's pip commands in clean venvs, then its CMD with its ENV (on loopback
    and free ports) serves; its HEALTHCHECK passes while it runs and fails once it stopped."""
    all_stages = stages()
    sandbox = Sandbox(tmp_path / "root", all_stages)
    for i, stage in enumerate(all_stages):
        bindir = clean_venv(tmp_path / f"python-{i}")
        build(stage, sandbox, bindir)
    runtime = all_stages[-1]
    bindir = tmp_path / f"python-{len(all_stages) - 1}" / "bin"
    # The installed command line knows every flag the CMD passes.
    help_result = subprocess.run([str(bindir / "dumbkv"), "serve", "--help"],
                                 capture_output=True, text=True, timeout=60)
    assert help_result.returncode == 0, help_result.stderr
    assert help_result.stdout == serve_help()
    # The build stage installs a C compiler (that RUN line is not run here: this machine has
    # one), so the wheel carries the compiled request path.
    assert any(re.search(r"apt-get install .*\bgcc\b", i.args)
               for i in all_stages[0].all("RUN")), "the build stage installs no gcc"
    origin = subprocess.run(
        [str(bindir / "python"), "-c", "import dumbkv.server; print(dumbkv.server.__file__)"],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert origin.returncode == 0, origin.stderr
    assert origin.stdout.strip().endswith(".so"), origin.stdout
    for volume in (v for i in runtime.all("VOLUME") for v in exec_form(i.args)):
        Path(sandbox.path(volume)).mkdir(parents=True, exist_ok=True)
    env = base_env(runtime, sandbox, bindir)
    admin = free_port()
    env.update(DUMBKV_HOST="127.0.0.1", DUMBKV_ADMIN_HOST="127.0.0.1",
               DUMBKV_PORT=str(free_port()), DUMBKV_ADMIN_PORT=str(admin))
    cmd_instruction, health = runtime.last("CMD"), runtime.last("HEALTHCHECK")
    assert cmd_instruction is not None and health is not None
    cmd = exec_form(cmd_instruction.args)
    cmd[0] = str(bindir / cmd[0])
    check = exec_form(health.args.partition(" ")[2])
    check[0] = str(bindir / check[0])
    data = Path(sandbox.path("/data"))
    cwd = Path(sandbox.path(runtime.workdir()))
    with serving(cmd, env, cwd, admin, tmp_path / "serve.log") as proc:
        assert http_get(f"http://127.0.0.1:{admin}/ready")[0] == 200
        assert subprocess.run(check, env=env, timeout=30).returncode == 0
        assert (data / "dumbkv.db").exists() and (data / "availability.log").exists()
        proc.terminate()
        assert proc.wait(60) == 0
    failed = subprocess.run(check, env=env, capture_output=True, timeout=30)
    assert failed.returncode != 0


@pytest.mark.parametrize("text, expected", [("30s", 30.0), ("1m30s", 90.0), ("500ms", 0.5)])
def test_duration_parser(text: str, expected: float) -> None:
    assert duration(text) == expected
