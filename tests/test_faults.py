"""Store faults: a full disk answers server errors, keeps serving, and loses nothing; a store
that cannot be opened at start ends the process with one clear line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REQUIRE_ALL, RawClient, ServerProcess, StoreSQL, environ_without_settings


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs: the smallest disk a trainee could fill."""
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
        capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        message = f"cannot mount a tmpfs (needs root): {done.stderr.strip()}"
        if REQUIRE_ALL:
            pytest.fail(message + " (DUMBKV_REQUIRE_ALL=1 forbids skipping)")
        pytest.skip(message)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


@pytest.mark.backends("sqlite")
def test_full_disk_gives_server_errors_and_keeps_acknowledged_writes(
    server_factory: type[ServerProcess], small_disk: Path
) -> None:
    store = f"sqlite:///{small_disk / 'dumbkv.db'}"
    srv = server_factory(small_disk, store=store).start()
    client = RawClient(srv.address, timeout=30)
    value = os.urandom(8192).hex().encode()  # 16 KiB a value: the disk fills in ~120 SETs
    acked: list[bytes] = []
    error: object = None
    for i in range(1000):
        key = b"k%d" % i
        client.send(b"*3\r\n$3\r\nSET\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (
            len(key), key, len(value), value))
        reply = client.read_reply()
        if reply != "OK":
            error = reply
            break
        acked.append(key)
    assert isinstance(error, tuple) and error[1].startswith("SERVERERR"), error
    assert acked, "the disk was full before the first write"
    # Still serving: other commands work and every acknowledged write reads back.
    client.send(b"PING\r\n")
    assert client.read_reply() == "PONG"
    for key in acked[:: max(1, len(acked) // 10)]:
        client.send(b"GET %b\r\n" % key)
        assert client.read_reply() == value
    client.close()
    assert srv.stop() == 0
    # After a restart on the same (still full) disk, every acknowledged write is there.
    again = server_factory(small_disk, store=store).start()
    check = RawClient(again.address, timeout=30)
    check.send(b"DBSIZE\r\n")
    assert check.read_reply() == len(acked)
    check.send(b"GET %b\r\n" % acked[-1])
    assert check.read_reply() == value
    check.close()
    assert again.stop() == 0


def _serve_once(data_dir: Path, store: str, *flags: str) -> subprocess.CompletedProcess[str]:
    env = environ_without_settings()
    return subprocess.run(
        [sys.executable, "-m", "dumbkv", "serve", "--port", "0", "--admin-port", "0",
         "--store", store, "--data-dir", str(data_dir), *flags],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )


@pytest.mark.backends("sqlite")
def test_start_with_the_database_locked_fails_with_one_clear_line(
    server_factory: type[ServerProcess], tmp_path: Path
) -> None:
    server = server_factory(tmp_path).start()  # creates the database and its schema
    assert server.stop() == 0
    with StoreSQL(server.store) as other, other.write_lock():
        done = _serve_once(tmp_path, server.store, "--store-timeout", "1")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("dumbkv: cannot open the store sqlite:"), done.stderr
    assert "did not answer within 1s" in last


def test_start_with_the_database_unreachable_fails_with_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = _serve_once(tmp_path, f"postgresql://trainee:s3cret-pw@127.0.0.1:{port}/kv",
                       "--store-timeout", "2")
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert "s3cret-pw" not in done.stderr  # the password is redacted
    last = done.stderr.strip().splitlines()[-1]
    assert last == (f"dumbkv: cannot open the store postgresql://trainee:***@127.0.0.1:{port}/kv:"
                    " postgres backend error (ConnectionRefusedError)"), done.stderr
