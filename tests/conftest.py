"""Shared fixtures: real DumbKV server processes on free loopback ports, and tool checks."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

REQUIRE_ALL = os.environ.get("DUMBKV_REQUIRE_ALL") == "1"
_LISTENING = re.compile(r"listening on (\S+):(\d+)")


def require_tool(name: str, install_hint: str) -> str:
    """Path of ``name``; skip (or fail under DUMBKV_REQUIRE_ALL=1) when it is missing."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not found; install it: {install_hint}"
        if REQUIRE_ALL:
            pytest.fail(message + " (DUMBKV_REQUIRE_ALL=1 forbids skipping)")
        pytest.skip(message)
    return path


class ServerProcess:
    """``python -m dumbkv serve`` as a child process; the port is read from its log line."""

    def __init__(self, data_dir: Path, *extra: str, store: str | None = None) -> None:
        self.data_dir = data_dir
        self.store = store or f"sqlite:///{data_dir / 'dumbkv.db'}"
        self.extra = list(extra)
        self.proc: subprocess.Popen[str] | None = None
        self.host = "127.0.0.1"
        self.port = 0
        self.log_lines: list[str] = []
        self._reader: threading.Thread | None = None

    def start(self, timeout: float = 20.0) -> ServerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DUMBKV_")}
        cmd = [sys.executable, "-m", "dumbkv", "serve", "--host", self.host, "--port", "0",
               "--store", self.store, *self.extra]
        self.proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     text=True, env=env)
        found = threading.Event()

        def read() -> None:
            assert self.proc is not None and self.proc.stderr is not None
            for line in self.proc.stderr:
                self.log_lines.append(line)
                match = _LISTENING.search(line)
                if match and not found.is_set():
                    self.port = int(match.group(2))
                    found.set()
            found.set()

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        if not found.wait(timeout) or not self.port:
            self.kill()
            raise RuntimeError("server did not start:\n" + "".join(self.log_lines))
        return self

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

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
def server_factory(tmp_path: Path) -> Iterator[type[ServerProcess]]:
    """Start servers with ``server_factory(data_dir, *flags).start()``; all are stopped after."""
    started: list[ServerProcess] = []

    class Tracked(ServerProcess):
        def start(self, timeout: float = 20.0) -> ServerProcess:
            started.append(self)
            return super().start(timeout)

    yield Tracked
    for server in started:
        if server.proc is not None and server.proc.poll() is None:
            server.stop()
        else:
            server._finish()  # exited on its own (a test signalled it): close the log pipe


@pytest.fixture
def server(server_factory: type[ServerProcess], tmp_path: Path) -> ServerProcess:
    """A running server with a fresh SQLite store."""
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

