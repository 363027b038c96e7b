"""Shared fixtures: real DumbKV server processes on free loopback ports, real PostgreSQL, and
tool checks.

Every test that uses ``server``, ``raw``, ``server_factory`` or ``store_url`` runs once per store
backend (ids ``[sqlite]`` and ``[postgres]``): the contract suite. A test that only makes sense
for some backends says so with ``@pytest.mark.backends("sqlite")``; it is then generated only
for those (not skipped for the others).

PostgreSQL comes from ``DUMBKV_TEST_POSTGRES_DSN`` when set (a role that may create databases),
else from a throwaway cluster started for the session (see tests/postgres.py). Each test gets
its own fresh database. Without either, PostgreSQL tests skip with an install hint, and fail
under ``DUMBKV_REQUIRE_ALL=1``.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest
from postgres import INSTALL_HINT, Cluster, PgConn, Postgres, find_bindir

REQUIRE_ALL = os.environ.get("DUMBKV_REQUIRE_ALL") == "1"
_LISTENING = re.compile(r"dumbkv \S+ listening on (\S+):(\d+)")
_ADMIN_LISTENING = re.compile(r"admin listening on (\S+):(\d+)")
BACKENDS = ("sqlite", "postgres")


def unavailable(message: str) -> NoReturn:
    """Skip the test, or fail it under DUMBKV_REQUIRE_ALL=1 (as CI runs)."""
    if REQUIRE_ALL:
        pytest.fail(message + " (DUMBKV_REQUIRE_ALL=1 forbids skipping)")
    pytest.skip(message)


def environ_without_settings() -> dict[str, str]:
    """This process's environment without any ``DUMBKV_*`` variable: a child ``dumbkv`` reads
    only the settings its test gives it."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DUMBKV_")}


def require_tool(name: str, install_hint: str) -> str:
    """Path of ``name``; skip (or fail under DUMBKV_REQUIRE_ALL=1) when it is missing."""
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} not found; install it: {install_hint}")
    return path


@pytest.fixture(scope="session")
def prometheus_binary() -> str:
    """The real Prometheus server (Debian's package ``prometheus``)."""
    return require_tool("prometheus", "apt-get install prometheus")


def require_pg_bindir() -> Path:
    """PostgreSQL's server binaries; skip (or fail under DUMBKV_REQUIRE_ALL=1) without them."""
    bindir = find_bindir()
    if bindir is None:
        unavailable(
            "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found on PATH, via "
            f"pg_config --bindir or in /usr/lib/postgresql/*/bin; install them: {INSTALL_HINT}"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            unavailable("running as root, where initdb refuses to run, and there is no "
                        f"'postgres' system user to run it as; {INSTALL_HINT} creates it")
    return bindir


def sqlite_url(data_dir: Path) -> str:
    return f"sqlite:///{data_dir / 'dumbkv.db'}"


# --------------------------------------------------------------------------- backends
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """One test per backend for every test whose fixtures reach ``backend``."""
    if "backend" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("backends")
    names = tuple(marker.args) if marker is not None else BACKENDS
    unknown = set(names) - set(BACKENDS)
    if not names or unknown:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: backends{names!r}: "
                                f"choose from {BACKENDS}")
    metafunc.parametrize("backend", names, indirect=True, ids=str)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """The session's PostgreSQL: the DSN's server, or a throwaway cluster."""
    dsn = os.environ.get("DUMBKV_TEST_POSTGRES_DSN")
    if dsn:
        pg = Postgres(dsn)
        try:
            yield pg
        finally:
            pg.close()
        return
    cluster = Cluster(require_pg_bindir())
    try:
        cluster.init().start()
        pg = Postgres(cluster.dsn(), cluster)
        try:
            yield pg
        finally:
            pg.close()
    finally:
        cluster.destroy()


@pytest.fixture
def pg_cluster() -> Iterator[Cluster]:
    """A cluster of the test's own, which it may stop and start (fault tests)."""
    cluster = Cluster(require_pg_bindir())
    try:
        cluster.init().start()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The store backend under test: ``sqlite`` or ``postgres`` (see pytest_generate_tests)."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def store_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """The test's store: a SQLite file in tmp_path, or a fresh PostgreSQL database."""
    if backend == "sqlite":
        yield sqlite_url(tmp_path)
        return
    pg: Postgres = request.getfixturevalue("postgres")
    with pg.database() as url:
        yield url


class StoreSQL:
    """SQL straight into a store's database, from outside the server: ``?`` placeholders,
    bytes for BLOB/bytea, autocommit. For tampering and for checking what is at rest."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.sqlite: sqlite3.Connection | None = None
        self.pg: PgConn | None = None
        if url.startswith("sqlite:"):
            path = url.split("://", 1)[1]
            self.sqlite = sqlite3.connect(path[1:] if path.startswith("/") else path,
                                          timeout=10, isolation_level=None)
        else:
            self.pg = PgConn(url)

    def _pg_sql(self, sql: str) -> str:
        count = 0

        def number(_: re.Match[str]) -> str:
            nonlocal count
            count += 1
            return f"${count}"

        return re.sub(r"\?", number, sql)

    def fetch(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        if self.sqlite is not None:
            return [tuple(bytes(v) if isinstance(v, memoryview) else v for v in row)
                    for row in self.sqlite.execute(sql, params)]
        assert self.pg is not None
        return self.pg.fetch(self._pg_sql(sql), *params)

    def fetchval(self, sql: str, *params: object) -> Any:
        rows = self.fetch(sql, *params)
        return rows[0][0] if rows else None

    def execute(self, sql: str, *params: object) -> None:
        if self.sqlite is not None:
            self.sqlite.execute(sql, params)
        else:
            assert self.pg is not None
            self.pg.execute(self._pg_sql(sql), *params)

    def rows(self) -> list[tuple[int, bytes, bytes, int | None]]:
        """Every stored row as (db, id, value, expires_at), in key order."""
        return self.fetch("SELECT db, id, value, expires_at FROM kv ORDER BY db, id")

    @contextlib.contextmanager
    def write_lock(self) -> Iterator[None]:
        """Hold the store's write lock (readers go on) until the block ends: another program
        in the way of every write."""
        if self.sqlite is not None:
            self.sqlite.execute("BEGIN EXCLUSIVE")
        else:
            self.execute("BEGIN")
            self.execute("LOCK TABLE kv IN EXCLUSIVE MODE")
        try:
            yield
        finally:
            self.execute("ROLLBACK")

    def close(self) -> None:
        if self.sqlite is not None:
            self.sqlite.close()
        if self.pg is not None:
            self.pg.close()

    def __enter__(self) -> StoreSQL:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def store_rows(url: str) -> list[tuple[int, bytes, bytes, int | None]]:
    """Every row at rest in the store at ``url``, as (db, id, value, expires_at)."""
    with StoreSQL(url) as sql:
        return sql.rows()


T = TypeVar("T")


def poll_until(what: str, probe: Callable[[], T | None], timeout: float,
               interval: float = 0.02) -> T:
    """Poll ``probe`` until it returns something truthy, and return that; bounded. For
    conditions that no event announces (a heartbeat on disk, a scrape in Prometheus)."""
    deadline = time.monotonic() + timeout
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)  # a polling interval, not a synchronisation


class ServerProcess:
    """``python -m dumbkv serve`` as a child process; the port is read from its log line. Its
    ``--data-dir`` (the availability ledger) is ``data_dir``, never the working directory."""

    def __init__(self, data_dir: Path, *extra: str, store: str | None = None) -> None:
        self.data_dir = data_dir
        self.store = store or sqlite_url(data_dir)
        self.extra = list(extra)
        self.proc: subprocess.Popen[str] | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self.admin_port = 0
        self.log_lines: list[str] = []
        self._reader: threading.Thread | None = None
        self.resp_listening = threading.Event()

    def start(self, timeout: float = 20.0, *, admin_only: bool = False) -> ServerProcess:
        """Start and wait until the RESP port listens (``admin_only``: the admin port; the
        RESP port then comes once the store opens, ``resp_listening``)."""
        env = environ_without_settings()
        cmd = [sys.executable, "-m", "dumbkv", "serve", "--host", self.host, "--port", "0",
               "--admin-host", self.host, "--admin-port", "0", "--store", self.store,
               "--data-dir", str(self.data_dir), *self.extra]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     text=True, env=env)
        found = self.resp_listening = threading.Event()
        admin_found = threading.Event()

        def read() -> None:
            assert self.proc is not None and self.proc.stderr is not None
            for line in self.proc.stderr:
                self.log_lines.append(line)
                admin = _ADMIN_LISTENING.search(line)
                if admin:
                    self.admin_port = int(admin.group(2))
                    admin_found.set()
                match = _LISTENING.search(line)
                if match and not found.is_set():
                    self.port = int(match.group(2))
                    found.set()
            found.set()
            admin_found.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        if admin_only:
            if not admin_found.wait(timeout) or not self.admin_port:
                self.kill()
                raise RuntimeError("admin port did not start:\n" + "".join(self.log_lines))
            return self
        if not found.wait(timeout) or not self.port:
            self.kill()
            raise RuntimeError("server did not start:\n" + "".join(self.log_lines))
        return self

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def admin_url(self) -> str:
        """Base URL of the admin HTTP port, e.g. ``http://127.0.0.1:41234``."""
        return f"http://{self.host}:{self.admin_port}"

    @property
    def log(self) -> str:
        return "".join(self.log_lines)

    def stop(self, timeout: float = 20.0) -> int:
        """SIGTERM and wait; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self._finish()
        return code

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._finish()

    def _finish(self) -> None:
        if self._reader is not None:
            self._reader.join(5)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()


@pytest.fixture
def server_factory(
    tmp_path: Path, backend: str, store_url: str, request: pytest.FixtureRequest
) -> Iterator[type[ServerProcess]]:
    """Start servers with ``server_factory(data_dir, *flags).start()``; all are stopped after.

    Without ``store=``, a server's store follows its data dir and the test's backend: one data
    dir is one store, so a restart on the same dir reopens the same data. ``tmp_path`` is
    ``store_url``; another dir gets a SQLite file there, or a fresh PostgreSQL database."""
    started: list[ServerProcess] = []
    stores: dict[Path, str] = {tmp_path.resolve(): store_url}
    databases: list[str] = []

    def store_for(data_dir: Path) -> str:
        key = Path(data_dir).resolve()
        if key not in stores:
            if backend == "sqlite":
                stores[key] = sqlite_url(data_dir)
            else:
                pg: Postgres = request.getfixturevalue("postgres")
                stores[key] = pg.create_database()
                databases.append(stores[key])
        return stores[key]

    class Tracked(ServerProcess):
        def __init__(self, data_dir: Path, *extra: str, store: str | None = None) -> None:
            super().__init__(data_dir, *extra, store=store or store_for(data_dir))

        def start(self, timeout: float = 20.0, *, admin_only: bool = False) -> ServerProcess:
            started.append(self)
            return super().start(timeout, admin_only=admin_only)

    yield Tracked
    for server in started:
        if server.proc is not None and server.proc.poll() is None:
            server.stop()
        else:
            server._finish()  # exited on its own (a test signalled it): close the log pipe
    if databases:
        pg = request.getfixturevalue("postgres")
        for url in databases:
            pg.drop_database(url)


@pytest.fixture
def server(server_factory: type[ServerProcess], tmp_path: Path) -> ServerProcess:
    """A running server on the test's fresh store (each backend in turn)."""
    return server_factory(tmp_path).start()


class RawClient:
    """A raw socket, as telnet or netcat would use: bytes in, bytes out."""

    def __init__(self, address: tuple[str, int], timeout: float = 5.0) -> None:
        self.sock = socket.create_connection(address, timeout=timeout)
        self.buf = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        self.buf += chunk

    def read_line(self) -> bytes:
        while b"\r\n" not in self.buf:
            self._fill()
        line, _, self.buf = self.buf.partition(b"\r\n")
        return line

    def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            self._fill()
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def read_reply(self) -> object:
        """One RESP2/RESP3 reply as Python: str (+), bytes ($), int (:), None, list, dict,
        or ``('error', text)`` for an error reply."""
        line = self.read_line()
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return ("error", rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"_":
            return None
        if kind == b"$":
            size = int(rest)
            if size < 0:
                return None
            data = self.read_exact(size + 2)
            return data[:-2]
        if kind == b"*":
            count = int(rest)
            return None if count < 0 else [self.read_reply() for _ in range(count)]
        if kind == b"%":
            items = [self.read_reply() for _ in range(2 * int(rest))]
            return dict(zip(items[::2], items[1::2], strict=True))
        raise AssertionError(f"unexpected reply line {line!r}")

    def is_closed(self, timeout: float = 5.0) -> bool:
        """True when the server closes the connection (EOF) within ``timeout``."""
        self.sock.settimeout(timeout)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buf += chunk
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True

    def close(self) -> None:
        self.sock.close()


def enc(*args: bytes | str | int) -> bytes:
    """A request as a RESP array, written out by hand (independent of dumbkv.resp)."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


def call(raw: RawClient, *args: bytes | str | int) -> object:
    raw.send(enc(*args))
    return raw.read_reply()


@pytest.fixture
def raw(server: ServerProcess) -> Iterator[RawClient]:
    client = RawClient(server.address)
    yield client
    client.close()

