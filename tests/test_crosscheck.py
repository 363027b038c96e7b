"""``dumbkv crosscheck``: real servers on real sockets, the CLI as a subprocess, the workload,
the comparison rules, and failures of one target (dropped connections, timeouts)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ServerProcess, environ_without_settings
from postgres import Postgres, free_port

import dumbkv
from dumbkv.app import start_server, stop_server
from dumbkv.commands import TABLE
from dumbkv.config import Config
from dumbkv.crosscheck import (
    EXCLUDED_COMMANDS,
    NoReply,
    Op,
    RefusedError,
    Target,
    crosscheck,
    parse_target,
    same_result,
    workload,
)
from dumbkv.resp import ErrorReply, Parser

FIELDS = {
    "seed", "operations", "seconds", "identical", "differing", "identical_ratio",
    "failure_rate_difference", "thresholds", "passed", "exit_code", "targets",
    "first_differences",
}
TARGET_FIELDS = {
    "target", "where", "ok", "client_errors", "server_errors", "no_reply", "reconnects",
    "failure_rate",
}


def run_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = environ_without_settings()
    return subprocess.run(
        [sys.executable, "-m", "dumbkv", "crosscheck", *args],
        capture_output=True, text=True, timeout=120, cwd=cwd, env=env,
    )


def sqlite(path: Path) -> str:
    return f"sqlite:///{path}"


def first(ops: list[Op], test: Any, after: int = 0) -> int:
    return next(op.index for op in ops if op.index > after and test(op))


# --------------------------------------------------------------------------- the CLI
def test_two_sqlite_stores_agree(tmp_path: Path) -> None:
    result = run_cli(sqlite(tmp_path / "a.db"), sqlite(tmp_path / "b.db"), "-n", "1500",
                     "--seed", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "1500 operations, seed 1" in out
    assert "identical results           1500 / 1500 = 100.00 %" in out
    for figure in ("failure rate (server, none)", "client errors", "server errors",
                   "no reply", "reconnects"):
        assert figure in out
    assert "failure-rate difference     0.00 points  (at most 2 points)  ok" in out
    assert str(tmp_path / "a.db") in out and str(tmp_path / "b.db") in out
    assert out.rstrip().endswith("PASS")
    # Each store got the workload (the files exist), and was left empty after it.
    assert (tmp_path / "a.db").exists() and (tmp_path / "b.db").exists()
    for name in ("a.db", "b.db"):
        with contextlib.closing(sqlite3.connect(tmp_path / name)) as db:
            assert db.execute("SELECT count(*) FROM kv").fetchone() == (0,)


def test_json_output_has_every_figure(tmp_path: Path) -> None:
    """One target: the other is a temporary SQLite store, which is gone afterwards."""
    result = run_cli(sqlite(tmp_path / "b.db"), "-n", "800", "--seed", "2", "--json",
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert set(report) == FIELDS
    assert report["operations"] == 800 and report["seed"] == 2
    assert report["identical"] == 800 and report["identical_ratio"] == 1.0
    assert report["differing"] == 0 and report["first_differences"] == []
    assert report["failure_rate_difference"] == 0.0
    assert report["passed"] is True and report["exit_code"] == 0
    assert report["thresholds"] == {"min_identical_ratio": 0.99,
                                    "max_failure_rate_difference": 0.02}
    a, b = report["targets"]["a"], report["targets"]["b"]
    assert set(a) == set(b) == TARGET_FIELDS
    assert a["where"].startswith("temporary, in-process on 127.0.0.1:")
    assert not Path(a["target"].removeprefix("sqlite:///").split("?")[0]).exists()
    assert b["target"] == sqlite(tmp_path / "b.db")
    for t in (a, b):
        assert t["ok"] + t["client_errors"] + t["server_errors"] + t["no_reply"] == 800
        assert t["server_errors"] == t["no_reply"] == 0
        assert t["client_errors"] > 0  # the workload includes errors on purpose
        assert t["failure_rate"] == 0.0  # client errors are the workload's, not failures
    assert a["client_errors"] == b["client_errors"]


def test_detects_a_planted_difference(server_factory: type[ServerProcess],
                                      tmp_path: Path) -> None:
    """Two running servers, one with only 2 databases: the workload's first SELECT of
    database 2 or 3 is the first difference, and what follows runs in other databases."""
    seed, n = 1, 400
    a = server_factory(tmp_path / "a").start()
    b = server_factory(tmp_path / "b", "--databases", "2").start()
    ops = list(workload(seed, n))
    planted = first(ops, lambda op: op.name == "SELECT" and op.argv[1] in (b"2", b"3"))
    assert planted < n // 4

    result = run_cli(f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}", "-n", str(n), "--seed",
                     str(seed), "--allow-flush", "--json", "--show", "3", cwd=tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["identical"] < n and report["identical_ratio"] < 0.99
    assert report["passed"] is False and report["exit_code"] == 1
    assert len(report["first_differences"]) == 3
    diff = report["first_differences"][0]
    assert diff["index"] == planted
    assert diff["command"] == ops[planted].describe()
    assert diff["a"] == "OK"
    assert diff["b"] == "(error) ERR DB index is out of range"
    ta, tb = report["targets"]["a"], report["targets"]["b"]
    assert tb["client_errors"] > ta["client_errors"]
    assert report["failure_rate_difference"] == 0.0  # client errors are not failures
    # Every difference before the first shown one would have been shown: none.
    assert all(d["index"] >= planted for d in report["first_differences"])

    table = run_cli(f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}", "-n", str(n), "--seed",
                    str(seed), "--allow-flush", cwd=tmp_path)
    assert table.returncode == 1
    assert f"#{planted} (db " in table.stdout
    assert "B: (error) ERR DB index is out of range" in table.stdout
    assert table.stdout.rstrip().endswith("FAIL")


def test_address_targets_need_allow_flush(tmp_path: Path) -> None:
    result = run_cli("127.0.0.1:7379", cwd=tmp_path)  # refused before any connection
    assert result.returncode == 2
    assert "FLUSHALL" in result.stderr and "--allow-flush" in result.stderr
    assert result.stdout == ""


def test_store_passwords_are_never_printed(tmp_path: Path) -> None:
    url = f"postgresql://u:in-netloc@127.0.0.1:{free_port()}/x?password=in-query&sslmode=disable"
    result = run_cli(url, "--timeout", "1", cwd=tmp_path)  # nothing listens there
    assert result.returncode == 2
    assert "u:***@127.0.0.1" in result.stdout + result.stderr
    assert "password=***&sslmode=disable" in result.stdout + result.stderr
    assert "in-netloc" not in result.stdout + result.stderr
    assert "in-query" not in result.stdout + result.stderr


@pytest.mark.parametrize("args, message", [
    pytest.param((), "give one or two targets (got no target)", id="none"),
    pytest.param(("sqlite:///a.db", "sqlite:///b.db", "sqlite:///c.db"), "(got 3 targets)",
                 id="three"),
    pytest.param(("10.1.2.3:7379", "--allow-flush"), "not on a loopback address",
                 id="remote-ip"),
    pytest.param(("example.com:7379", "--allow-flush"), "not on a loopback address",
                 id="remote-name"),
    pytest.param(("redis://127.0.0.1:6379",), "unsupported store URL scheme 'redis'",
                 id="scheme"),
    pytest.param(("localhost",), "neither a store URL", id="no-port"),
    pytest.param(("127.0.0.1:0", "--allow-flush"), "neither a store URL", id="port-0"),
])
def test_usage_errors_exit_2(tmp_path: Path, args: tuple[str, ...], message: str) -> None:
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr


async def test_a_store_that_holds_keys_needs_allow_flush(tmp_path: Path) -> None:
    url = parse_target(sqlite(tmp_path / "used.db"))
    report = await crosscheck(url, n=300, seed=4)
    assert report.passed
    again = await crosscheck(url, n=300, seed=4)  # the run left the store empty
    assert again.passed
    async with (in_process_server(url.text) as (host, port),
                dumbkv.AsyncClient(host, port) as client):
        assert await client.set("somebody's", "data") is True
    with pytest.raises(RefusedError, match=r"holds 1 keys .* FLUSHALL"):
        await crosscheck(url, n=300, seed=4)
    forced = await crosscheck(url, n=300, seed=4, allow_flush=True)
    assert forced.identical == 300


def test_targets_that_refuse_flushall_are_refused(server_factory: type[ServerProcess],
                                                  tmp_path: Path) -> None:
    """Servers with a password answer every operation -NOAUTH alike: that is no pass."""
    a = server_factory(tmp_path / "a", "--requirepass", "pw").start()
    b = server_factory(tmp_path / "b", "--requirepass", "pw").start()
    result = run_cli(f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}", "-n", "100",
                     "--allow-flush", cwd=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "refused FLUSHALL: (error) NOAUTH" in result.stderr
    assert "PASS" not in result.stdout


# --------------------------------------------------------------------------- the workload
def test_the_same_seed_gives_the_same_workload() -> None:
    ops = list(workload(5, 3000))
    assert ops == list(workload(5, 3000))
    assert ops[:100] == list(workload(5, 100))  # N only cuts the sequence
    assert ops != list(workload(6, 3000))
    assert ops[0] == Op(0, 0, (b"FLUSHALL",))
    assert [op.index for op in ops] == list(range(3000))
    assert list(workload(5, 0)) == []


async def test_the_same_seed_gives_the_same_results(tmp_path: Path) -> None:
    def figures(report: Any) -> dict[str, Any]:
        d = report.as_dict()
        for t in d["targets"].values():
            del t["target"], t["where"]
        del d["seconds"]
        return dict(d)

    one = await crosscheck(parse_target(sqlite(tmp_path / "1.db")), n=600, seed=9)
    two = await crosscheck(parse_target(sqlite(tmp_path / "2.db")), n=600, seed=9)
    assert figures(one) == figures(two)


def test_the_workload_covers_every_data_command() -> None:
    ops = list(workload(3, 5000))
    names = {op.name.lower() for op in ops}
    supported = {name.decode() for name in TABLE}
    assert supported - set(EXCLUDED_COMMANDS) <= names, "a new command? add it to the workload"
    assert set(EXCLUDED_COMMANDS) <= supported  # nothing excluded that does not exist
    assert names - supported  # unknown commands too
    args = [arg for op in ops for arg in op.argv[1:]]
    assert any(b"\r\n" in a for a in args) and any(b"\x00" in a for a in args)
    assert any(len(a) > 1000 for a in args)
    assert {op.db for op in ops} == {0, 1, 2, 3}
    for option in (b"NX", b"XX", b"GET", b"KEEPTTL", b"EX", b"PX", b"EXAT", b"PXAT"):
        assert any(op.name == "SET" and option in op.argv[3:] for op in ops), option
    for option in (b"NX", b"XX", b"GT", b"LT"):
        assert any(op.name == "EXPIRE" and option in op.argv[3:] for op in ops), option
    assert any(op.name == "EXPIRE" and op.argv[2].startswith(b"-") for op in ops)
    assert any(op.argv[0] != op.argv[0].upper() for op in ops)  # command names in any case


def test_op_description_escapes_and_cuts_binary() -> None:
    op = Op(7, 1, (b"SET", b"k1", b"a\r\n\x00\"\\" + b"x" * 100, b"EX", b"100"))
    text = op.describe()
    assert text.startswith('SET k1 "a\\r\\n\\x00\\"\\\\xxx')
    assert text.endswith('xx"...(106 bytes) EX 100')
    assert "\r" not in text and "\n" not in text and "\x00" not in text


# --------------------------------------------------------------------------- comparing
def test_same_result_rules() -> None:
    get, ttl, pttl = Op(1, 0, (b"GET", b"k")), Op(2, 0, (b"ttl", b"k")), Op(3, 0, (b"PTTL",))
    assert same_result(get, b"1", b"1")
    assert not same_result(get, b"1", 1)  # a bulk string is not an integer
    assert not same_result(get, "OK", ErrorReply("OK"))  # a status is not an error
    assert not same_result(get, ErrorReply("ERR x"), ErrorReply("ERR y"))
    assert same_result(get, [b"a", None], [b"a", None])
    assert not same_result(get, [b"a", None], [b"a", b""])
    assert not same_result(get, NoReply("timeout"), NoReply("timeout"))
    assert not same_result(get, 5, 6)  # only TTL/PTTL are fuzzed
    assert same_result(ttl, 100_000, 100_001) and not same_result(ttl, 100_000, 100_002)
    assert same_result(pttl, 100_000, 100_999) and not same_result(pttl, 100_000, 101_001)
    assert not same_result(ttl, -1, 5) and not same_result(ttl, -2, -1)
    assert not same_result(ttl, 5, ErrorReply("ERR 5"))
    # Two backends failing alike have not given the same result.
    failed = ErrorReply("SERVERERR sqlite backend error (OperationalError)")
    assert not same_result(get, failed, failed)
    assert same_result(get, ErrorReply("ERR syntax error"), ErrorReply("ERR syntax error"))


# --------------------------------------------------------------------------- failing targets
class Proxy:
    """A TCP proxy in front of a server that breaks request number ``at`` (0-based, counted
    over all connections): ``drop`` closes the client's connection instead of forwarding it,
    ``stall`` holds it without an answer."""

    def __init__(self, upstream: tuple[str, int], at: int, mode: str) -> None:
        self.upstream, self.at, self.mode = upstream, at, mode
        self.requests = 0
        self.connections = 0
        self.server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port: int = self.server.sockets[0].getsockname()[1]
        return port

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        back = asyncio.create_task(self._pipe(up_reader, writer))
        self._tasks.add(back)
        parser = Parser()
        try:
            while data := await reader.read(65536):
                for _ in parser.feed(data):  # the client sends one request at a time
                    self.requests += 1
                    if self.requests - 1 == self.at:
                        if self.mode == "drop":
                            return
                        await reader.read()  # stall until the client gives up
                        return
                up_writer.write(data)
                await up_writer.drain()
        finally:
            back.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await back
            for w in (writer, up_writer):
                w.close()
                with contextlib.suppress(OSError):
                    await w.wait_closed()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()


@contextlib.asynccontextmanager
async def in_process_server(url: str) -> AsyncIterator[tuple[str, int]]:
    server = await start_server(Config(host="127.0.0.1", port=0, store=url))
    try:
        yield "127.0.0.1", server.state.port
    finally:
        await stop_server(server)


@pytest.mark.parametrize("mode", ["drop", "stall"])
async def test_a_dropped_or_stalled_request_is_one_failure_then_reconnect(
    tmp_path: Path, mode: str
) -> None:
    """The broken request is a GET in a database other than 0: it counts as a failure with no
    reply, the client reconnects and re-selects its database, and everything else agrees."""
    seed, n = 1, 300
    ops = list(workload(seed, n))
    at = first(ops, lambda op: op.name == "GET" and op.db != 0)
    async with in_process_server(sqlite(tmp_path / "a.db")) as upstream:
        proxy = Proxy(upstream, at, mode)
        port = await proxy.start()
        try:
            report = await crosscheck(
                parse_target(f"127.0.0.1:{port}"), parse_target(sqlite(tmp_path / "b.db")),
                n=n, seed=seed, allow_flush=True, timeout=1.0,
            )
        finally:
            await proxy.close()
    assert report.a.no_reply == 1 and report.b.no_reply == 0
    assert report.a.reconnects == 1 and proxy.connections == 2
    assert report.differing == 1 and report.identical == n - 1
    diff = report.first_differences[0]
    assert diff.op.index == at
    assert isinstance(diff.a, NoReply)
    assert ("within 1s" in diff.a.reason) if mode == "stall" else ("closed" in diff.a.reason)
    assert report.a.failures == report.b.failures + 1
    assert report.a.failure_rate == 1 / n and report.b.failure_rate == 0.0
    assert report.passed  # one failure in 300 is within both limits


async def test_an_unreachable_target_fails_every_operation(tmp_path: Path) -> None:
    """Nothing listens: every operation is a failure, not a crash, and the check fails."""
    async with in_process_server(sqlite(tmp_path / "gone.db")) as (host, port):
        pass  # a port that was just in use and is now closed
    report = await crosscheck(Target("address", f"{host}:{port}", host, port),
                              parse_target(sqlite(tmp_path / "b.db")), n=50, seed=1,
                              allow_flush=True, timeout=1.0)
    assert report.a.no_reply == 50 and report.a.failure_rate == 1.0
    assert report.b.no_reply == 0
    assert report.identical == 0 and report.exit_code == 1


# --------------------------------------------------------------------------- PostgreSQL
def test_sqlite_and_postgres_agree(postgres: Postgres, tmp_path: Path) -> None:
    """The issue's check: a temporary SQLite store against PostgreSQL, >= 99 % identical."""
    with postgres.database() as url:
        result = run_cli(url, "-n", "3000", "--seed", "3", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["identical_ratio"] >= 0.99
    assert report["failure_rate_difference"] <= 0.02
    assert report["targets"]["a"]["where"].startswith("temporary")
    assert report["targets"]["b"]["target"].startswith("postgresql://")
    assert report["targets"]["b"]["server_errors"] == 0
