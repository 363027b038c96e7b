"""Start, check and stop the servers the benchmarks load. Shared by compare.py and latency.py.

Every server is a child process on a free 127.0.0.1 port, in its own temporary directory (log
file, SQLite database), readiness is polled (TCP connect + PING) against a deadline, and it is
always stopped by PID on the way out (SIGTERM, wait, SIGKILL on timeout), errors and Ctrl-C
included. On Linux the kernel also sends SIGTERM to the children if this process dies first.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import dumbkv
from dumbkv.config import redact_url

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
LOOPBACK = "127.0.0.1"
STOP_TIMEOUT_S = 10.0
REFERENCE_READY_TIMEOUT_S = 10.0
DUMBKV_READY_TIMEOUT_S = 30.0
ADDRESS_READY_TIMEOUT_S = 5.0


class ServerError(RuntimeError):
    """A server did not start, did not answer, or is not on a loopback address."""


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


@dataclass
class Server:
    """A server under load: where it listens, what it is, and (if we started it) its process."""

    name: str
    endpoint: Endpoint
    description: str
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    def alive(self) -> bool:
        return self.process is None or self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()[-lines:]
        return "\n".join(f"    | {line}" for line in text)


def parse_address(text: str) -> Endpoint:
    """Parse ``host:port``; refuse anything but a loopback host (we only load 127.0.0.1)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ServerError(f"bad address {text!r}: expected host:port")
    host = host.strip("[]") or LOOPBACK
    if host != "localhost" and not _is_loopback_ip(host):
        raise ServerError(f"refusing to load {host!r}: the benchmarks only target loopback")
    return Endpoint(host, int(port))


def _is_loopback_ip(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def free_port(host: str = LOOPBACK) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def ping(endpoint: Endpoint, timeout: float) -> object:
    """Connect, send PING, return the reply (``"PONG"`` from a healthy server)."""
    with dumbkv.Client(endpoint.host, endpoint.port, connect_timeout=timeout,
                       timeout=timeout) as client:
        return client.execute_raw("PING")


def build_of(endpoint: Endpoint, timeout: float = 5.0) -> str:
    """How the DumbKV at ``endpoint`` runs its request path, from ``INFO server``."""
    with dumbkv.Client(endpoint.host, endpoint.port, connect_timeout=timeout,
                       timeout=timeout) as client:
        info = client.execute_raw("INFO", "server")
    text = info.decode() if isinstance(info, bytes) else str(info)
    flags = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {"1": "compiled request path", "0": "plain Python request path (see README: "
            "Compiled request path)"}.get(flags.get("dumbkv_compiled", "").strip(), "build unknown")


def wait_ready(server: Server, timeout: float) -> None:
    """Poll until the server answers PING with +PONG; raise ServerError at the deadline."""
    deadline = time.monotonic() + timeout
    last_error = "no attempt"
    while (remaining := deadline - time.monotonic()) > 0:
        if not server.alive():
            assert server.process is not None
            raise _failure(server, f"exited with code {server.process.returncode}")
        try:
            reply = ping(server.endpoint, timeout=min(1.0, remaining))
        except OSError as exc:
            last_error = str(exc)
            time.sleep(min(0.05, max(remaining, 0.0)))
            continue
        if reply == "PONG":
            return
        raise _failure(server, f"answered PING with {reply!r}")
    raise _failure(server, f"not ready after {timeout:.0f} s (last error: {last_error})")


def _failure(server: Server, what: str) -> ServerError:
    tail = server.log_tail()
    detail = f"\n  last log lines:\n{tail}" if tail else ""
    return ServerError(f"{server.name} at {server.endpoint} {what}{detail}")


def stop_process(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> None:
    """Stop one child by PID: SIGTERM, wait, then SIGKILL if it did not exit in time."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)


def _die_with_parent() -> None:
    """In the child (Linux): ask the kernel for SIGTERM when the parent dies (PR_SET_PDEATHSIG)."""
    with suppress(OSError, AttributeError):
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)


@contextmanager
def _child_server(
    name: str, argv: Sequence[str], endpoint: Endpoint, workdir: Path, description: str,
    ready_timeout: float, env: dict[str, str] | None = None,
) -> Iterator[Server]:
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            cwd=workdir, env=env, start_new_session=True,  # Ctrl-C reaches us; we stop it
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
    server = Server(name, endpoint, f"{description}, pid {process.pid}", process, log_path)
    try:
        wait_ready(server, ready_timeout)
        yield server
    finally:
        stop_process(process)


def python_executable() -> str:
    """The project's venv interpreter if there is one (it has uvloop, dumbkv), else ours."""
    venv_python = REPO_ROOT / ".venv" / "bin" / "python"
    return str(venv_python) if venv_python.exists() else sys.executable


@contextmanager
def reference_server(ready_timeout: float = REFERENCE_READY_TIMEOUT_S) -> Iterator[Server]:
    """Start bench/inmem_server.py on a free loopback port."""
    port = free_port()
    argv = [python_executable(), str(BENCH_DIR / "inmem_server.py"),
            "--host", LOOPBACK, "--port", str(port)]
    with tempfile.TemporaryDirectory(prefix="dumbkv-bench-ref-") as tmp, _child_server(
        "reference", argv, Endpoint(LOOPBACK, port), Path(tmp),
        "in-memory uvloop server (bench/inmem_server.py)", ready_timeout,
    ) as server:
        yield server


def sqlite_url(path: Path) -> str:
    """DumbKV's form for an absolute path: ``sqlite:////abs/path.db`` (``sqlite:///rel.db``)."""
    return f"sqlite:///{path.resolve()}"


@contextmanager
def dumbkv_server(
    address: str | None = None, store: str | None = None,
    ready_timeout: float = DUMBKV_READY_TIMEOUT_S,
) -> Iterator[Server]:
    """Use the DumbKV at ``address``, or start one (``store`` URL, default: temp SQLite)."""
    if address is not None:
        server = Server("dumbkv", parse_address(address), "already running, given by --address")
        wait_ready(server, min(ready_timeout, ADDRESS_READY_TIMEOUT_S))
        yield server
        return
    with tempfile.TemporaryDirectory(prefix="dumbkv-bench-") as tmp:
        workdir = Path(tmp)
        url = store or sqlite_url(workdir / "dumbkv.db")
        port = free_port()
        argv = [python_executable(), "-m", "dumbkv", "serve",
                "--host", LOOPBACK, "--port", str(port), "--admin-port", "0"]
        env = _dumbkv_env()
        env["DUMBKV_STORE"] = url  # not on the command line, where ps shows its password
        with _child_server(
            "dumbkv", argv, Endpoint(LOOPBACK, port), workdir,
            f"DumbKV, store {redact_url(url)}", ready_timeout, env=env,
        ) as server:
            yield server


def _dumbkv_env() -> dict[str, str]:
    """Our environment (DUMBKV_* included) with the repo's src/ importable."""
    env = dict(os.environ)
    src = str(REPO_ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return env


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so every ``finally`` runs and the servers get stopped."""
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
