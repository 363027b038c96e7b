"""Real PostgreSQL for the tests: a throwaway cluster, or the one ``DUMBKV_TEST_POSTGRES_DSN``
names, with one fresh database per test.

* ``find_bindir()``: the directory of ``initdb``, ``pg_ctl`` and ``postgres`` (PATH,
  ``pg_config --bindir``, or the highest ``/usr/lib/postgresql/*/bin``).
* ``Cluster``: ``initdb`` in a temp dir, ``pg_ctl start -w`` on a free 127.0.0.1 port with its
  unix socket inside that dir, ``stop()``/``start()`` (a test may take it down and bring it back
  on the same port), ``destroy()``. initdb refuses to run as root, so as root every server
  command runs as the ``postgres`` system user (``runuser -u postgres --``).
* ``Postgres``: an admin DSN that creates and drops the per-test databases.
* ``PgConn``: a synchronous asyncpg connection (its own loop in a thread), so a test can hold a
  transaction or a lock open while it talks to the server.

The throwaway cluster runs with ``fsync=off``: nothing here survives an OS crash, and nothing
needs to. ``synchronous_commit`` stays on, so a commit is in the WAL (the OS's page cache) before
it returns and survives ``pg_ctl stop -m immediate``, which the fault tests use.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

__all__ = [
    "INSTALL_HINT",
    "Cluster",
    "ClusterError",
    "PgConn",
    "Postgres",
    "find_bindir",
    "free_port",
    "with_database",
]

T = TypeVar("T")
INSTALL_HINT = "apt-get install postgresql"
SERVER_BINARIES = ("initdb", "pg_ctl", "postgres")
COMMAND_TIMEOUT = 120.0


class ClusterError(RuntimeError):
    """A cluster command failed; the message carries its output and the server log."""


def _has_binaries(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in SERVER_BINARIES)


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", path.parent.name)) or (0,)


def find_bindir() -> Path | None:
    """Where PostgreSQL's server binaries are, or None."""
    initdb = shutil.which("initdb")
    if initdb and all(shutil.which(name) for name in SERVER_BINARIES):
        # A symlink on PATH (e.g. /usr/local/bin/initdb): use the real directory, where the
        # binaries of one version sit together.
        bindir = Path(os.path.realpath(initdb)).parent
        if _has_binaries(bindir):
            return bindir
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                 timeout=30, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            out = ""
        if out and _has_binaries(Path(out)):
            return Path(out)
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key)
    for bindir in reversed(candidates):
        if _has_binaries(bindir):
            return bindir
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run_async(coro: Coroutine[Any, Any, T], timeout: float = COMMAND_TIMEOUT) -> T:
    """Run ``coro`` to completion on a private loop in a worker thread (so it also works
    while the calling thread runs an event loop, as an async test does)."""
    result: list[T] = []
    error: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(asyncio.wait_for(coro, timeout)))
        except BaseException as exc:
            error.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout + 10)
    if thread.is_alive():
        raise TimeoutError(f"database call did not finish within {timeout:g}s")
    if error:
        raise error[0]
    return result[0]


def with_database(dsn: str, dbname: str) -> str:
    """``dsn`` pointing at database ``dbname`` instead."""
    return urlunsplit(urlsplit(dsn)._replace(path="/" + dbname))


class Cluster:
    """A throwaway PostgreSQL cluster in a temp dir, on a free port of 127.0.0.1."""

    def __init__(self, bindir: Path) -> None:
        self.bindir = bindir
        self.as_root = os.geteuid() == 0
        self.root = Path(tempfile.mkdtemp(prefix="dumbkv-pg-"))
        self.datadir = self.root / "data"
        self.sockdir = self.root / "sock"
        self.logfile = self.root / "server.log"
        self.port = 0
        self.running = False
        self.frozen: list[int] = []
        self._owner: tuple[int, int] | None = None

    # ----------------------------------------------------------------- commands
    def _command(self, name: str, *args: str) -> list[str]:
        cmd = [str(self.bindir / name), *args]
        if self.as_root:
            runuser = shutil.which("runuser") or "runuser"
            cmd = [runuser, "-u", "postgres", "--", *cmd]
        return cmd

    def _run(self, name: str, *args: str, timeout: float = COMMAND_TIMEOUT) -> str:
        # Output to a file, never a pipe: pg_ctl start leaves the server running, and a server
        # that inherited our pipe would keep it open forever.
        out_path = self.root / f"{name}.out"
        with open(out_path, "w") as out:
            try:
                done = subprocess.run(
                    self._command(name, *args), stdin=subprocess.DEVNULL, stdout=out,
                    stderr=subprocess.STDOUT, cwd=self.root, timeout=timeout, check=False,
                )
            except subprocess.TimeoutExpired:
                raise ClusterError(f"{name} {' '.join(args)} took over {timeout:g}s\n"
                                   + self.log_tail()) from None
        output = out_path.read_text(errors="replace")
        if done.returncode != 0:
            raise ClusterError(
                f"{name} {' '.join(args)} exited {done.returncode}:\n{output}\n{self.log_tail()}"
            )
        return output

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.logfile.read_text(errors="replace")
        except OSError:
            return "(no server log)"
        return "server log:\n" + "\n".join(text.splitlines()[-lines:])

    # ----------------------------------------------------------------- lifecycle
    def init(self) -> Cluster:
        if self.as_root:
            try:
                user = pwd.getpwnam("postgres")
            except KeyError:
                raise ClusterError(
                    "running as root, and initdb refuses root, but there is no 'postgres' "
                    f"system user to run it as ({INSTALL_HINT} creates one)"
                ) from None
            self._owner = (user.pw_uid, user.pw_gid)
            os.chown(self.root, *self._owner)
        self.sockdir.mkdir()
        if self._owner is not None:
            os.chown(self.sockdir, *self._owner)
        self._run("initdb", "-D", str(self.datadir), "-A", "trust", "-U", "postgres",
                  "-E", "UTF8", "--locale=C", "--no-sync")
        return self

    def _configure(self, port: int) -> None:
        settings = {
            "port": str(port),
            "listen_addresses": "'127.0.0.1'",
            "unix_socket_directories": f"'{self.sockdir}'",
            "max_connections": "200",
            "fsync": "off",
            "full_page_writes": "off",
        }
        # postgresql.auto.conf is read last and overrides postgresql.conf; rewriting it keeps
        # one setting per name (a retry on another port replaces the port).
        auto = self.datadir / "postgresql.auto.conf"
        auto.write_text("".join(f"{k} = {v}\n" for k, v in settings.items()))
        if self._owner is not None:
            os.chown(auto, *self._owner)

    def start(self, timeout: float = 60.0) -> Cluster:
        """Start (or restart, on the same port) and wait until it accepts connections."""
        if self.running:
            return self
        attempts = 1 if self.port else 3  # a restart must keep its port: clients know it
        for attempt in range(attempts):
            if not self.port or attempt:
                self.port = free_port()
                self._configure(self.port)
            try:
                self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile),
                          "-w", "-t", f"{timeout:g}", "start", timeout=timeout + 30)
            except ClusterError:
                if attempt == attempts - 1:
                    raise
                continue  # someone took the port between free_port() and the bind
            self.running = True
            return self
        raise AssertionError("unreachable")

    def stop(self, mode: str = "fast", timeout: float = 60.0) -> None:
        """``pg_ctl stop -m mode``: ``fast`` (clean) or ``immediate`` (like a crash)."""
        if not self.running:
            return
        self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "-t", f"{timeout:g}",
                  "stop", timeout=timeout + 30)
        self.running = False

    def pids(self) -> list[int]:
        """The postmaster and every process it started."""
        try:
            postmaster = int((self.datadir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        pids = [postmaster]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue  # exited meanwhile
            if int(fields[1]) == postmaster:  # fields: state, ppid, ...
                pids.append(int(stat.parent.name))
        return pids

    def freeze(self) -> None:
        """SIGSTOP every server process: PostgreSQL hangs (accepts TCP, never answers)."""
        self.frozen = self.pids()
        assert self.frozen, "no server processes to freeze"
        for pid in self.frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self.frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self.frozen = []

    def destroy(self) -> None:
        try:
            self.thaw()
            if self.running:
                try:
                    self.stop("fast")
                except ClusterError:
                    self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"


class PgConn:
    """A synchronous asyncpg connection: its own event loop runs in a daemon thread."""

    def __init__(self, dsn: str, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        try:
            self._conn = self._run(asyncpg.connect(dsn, timeout=timeout))
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(self.timeout + 5)

    def execute(self, sql: str, *args: object) -> str:
        status: str = self._run(self._conn.execute(sql, *args, timeout=self.timeout))
        return status

    def fetch(self, sql: str, *args: object) -> list[tuple[Any, ...]]:
        rows = self._run(self._conn.fetch(sql, *args, timeout=self.timeout))
        return [tuple(row) for row in rows]

    def fetchval(self, sql: str, *args: object) -> Any:
        return self._run(self._conn.fetchval(sql, *args, timeout=self.timeout))

    def close(self) -> None:
        try:
            self._run(self._conn.close(timeout=self.timeout))
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> PgConn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Postgres:
    """The tests' PostgreSQL: creates and drops one database per test.

    CREATE DATABASE takes a noticeable fraction of a second, so the next test's database is
    made in the background while the current test runs."""

    def __init__(self, admin_dsn: str, cluster: Cluster | None = None) -> None:
        self.admin_dsn = admin_dsn
        self.cluster = cluster
        self._file_copy = True  # CREATE DATABASE ... STRATEGY FILE_COPY (PostgreSQL 15+)
        self._maker = ThreadPoolExecutor(1, thread_name_prefix="create-database")
        self._next: Future[str] | None = None

    def url(self, dbname: str) -> str:
        return with_database(self.admin_dsn, dbname)

    def create_database(self) -> str:
        """A new empty database (made ahead of time); returns its URL."""
        ready = self._next or self._maker.submit(self._create)
        self._next = self._maker.submit(self._create)
        return ready.result(COMMAND_TIMEOUT)

    def close(self) -> None:
        """Drop the database made ahead that no test took."""
        if self._next is not None:
            with contextlib.suppress(Exception):
                self.drop_database(self._next.result(COMMAND_TIMEOUT))
            self._next = None
        self._maker.shutdown()

    def _create(self) -> str:
        name = f"t_{secrets.token_hex(6)}"
        with PgConn(self.admin_dsn, timeout=60) as conn:
            if self._file_copy:
                # Copying template1's files is several times faster than WAL-logging it.
                try:
                    conn.execute(f"CREATE DATABASE {name} STRATEGY FILE_COPY")
                    return self.url(name)
                except asyncpg.PostgresSyntaxError:
                    self._file_copy = False
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        assert re.fullmatch(r"t_[0-9a-f]+", name), name  # only ever what create_database made
        with PgConn(self.admin_dsn, timeout=60) as conn:
            try:
                conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            except asyncpg.PostgresSyntaxError:  # before PostgreSQL 13
                conn.execute(f"DROP DATABASE IF EXISTS {name}")

    @contextmanager
    def database(self) -> Iterator[str]:
        url = self.create_database()
        try:
            yield url
        finally:
            self.drop_database(url)
