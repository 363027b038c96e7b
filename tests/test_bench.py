"""bench/latency.py's verdict: a keyspace filled before the clock, and a server that breaks
under the load fails the run (it used to pass on the replies it gave before it broke).
bench/compare.py runs end to end, and says how the DumbKV it measured was built."""

from __future__ import annotations

import json
import socket
import socketserver
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import require_tool

from dumbkv._compiled import request_path_compiled
from dumbkv.resp import Parser

LATENCY = Path(__file__).resolve().parents[1] / "bench" / "latency.py"
COMPARE = LATENCY.with_name("compare.py")
TIMEOUT = 120


class _BreakingServer(socketserver.ThreadingTCPServer):
    """Answers PING, MSET, SET and GET (nil) as a server would, until it has answered
    ``budget`` SETs and GETs; then it closes every connection it gets data on."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, budget: int) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.budget = budget
        self.lock = threading.Lock()
        self.msets = 0
        self.hang_on_mset = False

    def take(self) -> bool:
        with self.lock:
            self.budget -= 1
            return self.budget >= 0


class _Handler(socketserver.BaseRequestHandler):
    server: _BreakingServer

    def handle(self) -> None:
        parser = Parser()
        sock: socket.socket = self.request
        while data := sock.recv(65536):
            replies = []
            for argv in parser.feed(data):
                name = argv[0].upper()
                if name == b"PING":
                    replies.append(b"+PONG\r\n")
                elif name == b"MSET":
                    if self.server.hang_on_mset:
                        sock.recv(1)  # until the client gives up and closes
                        return
                    with self.server.lock:
                        self.server.msets += 1
                    replies.append(b"+OK\r\n")
                elif not self.server.take():
                    return  # broken: the connection closes with commands unanswered
                else:
                    replies.append(b"+OK\r\n" if name == b"SET" else b"$-1\r\n")
            sock.sendall(b"".join(replies))


@pytest.fixture
def breaking_server() -> Iterator[_BreakingServer]:
    server = _BreakingServer(budget=300)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(TIMEOUT)


def latency(*args: str) -> tuple[int, dict[str, Any]]:
    done = subprocess.run([sys.executable, str(LATENCY), "--json", *args],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def test_a_server_that_breaks_under_load_fails_the_verdict(
    breaking_server: _BreakingServer,
) -> None:
    port = breaking_server.server_address[1]
    code, report = latency("--address", f"127.0.0.1:{port}", "-c", "4", "-r", "2500",
                           "--seconds", "60")
    assert code == 1
    assert report["slo"]["pass"] is False
    assert sum(report["connection_errors"].values()) == 4  # every connection broke
    assert report["lost"] >= 1  # the commands in flight when it broke
    assert report["commands"] == 300  # only those answered
    assert report["latency_ms"]["p90"] < 1000  # fast replies: the breakage alone fails it
    # The keyspace was filled first: 2,500 keys in MSETs of 1,000.
    assert report["filled"] is True and breaking_server.msets == 3


def test_no_fill_sends_no_mset(breaking_server: _BreakingServer) -> None:
    port = breaking_server.server_address[1]
    code, report = latency("--address", f"127.0.0.1:{port}", "-c", "2", "-r", "2500",
                           "--seconds", "60", "--no-fill", "--no-fail")
    assert code == 0 and report["slo"]["pass"] is False  # --no-fail: exit 0 all the same
    assert report["filled"] is False and breaking_server.msets == 0


def test_a_healthy_server_passes_after_the_fill() -> None:
    code, report = latency("--reference", "-c", "4", "-r", "3000", "--seconds", "1")
    assert code == 0, report
    assert report["slo"]["pass"] is True and report["filled"] is True
    assert report["commands"] > 0 and report["lost"] == 0 and not report["connection_errors"]


def test_a_server_that_never_answers_the_fill_cannot_run(
    breaking_server: _BreakingServer,
) -> None:
    """MSET answered never (the server hangs): the run ends after --timeout with exit 2."""
    breaking_server.hang_on_mset = True
    port = breaking_server.server_address[1]
    done = subprocess.run([sys.executable, str(LATENCY), "--address", f"127.0.0.1:{port}",
                           "-c", "2", "-r", "10", "--seconds", "1", "--timeout", "1"],
                          capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "filling the keyspace took more than --timeout 1 s" in done.stderr


def test_compare_measures_both_servers_and_says_how_dumbkv_was_built() -> None:
    require_tool("redis-benchmark", "apt-get install redis-tools")
    result = subprocess.run([sys.executable, str(COMPARE), "-n", "2000", "--no-fail"],
                            capture_output=True, text=True, timeout=TIMEOUT * 3)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    build = "compiled request path" if request_path_compiled() else "plain Python request path"
    assert build in next(line for line in lines if line.startswith("dumbkv:"))
    for test in ("SET", "GET"):
        for pipeline in ("1", "16"):
            row = next(line.split() for line in lines
                       if line.split()[:3] == [test, "-P", pipeline])
            ref, dkv, ratio = (float(x.replace(",", "")) for x in row[3:6])
            assert ref > 0 and dkv > 0 and ratio == pytest.approx(dkv / ref, abs=0.006)
    assert lines[-1].startswith("verdict: ")
