"""SQLite I/O faults: a full disk answers server errors, keeps serving, and loses nothing."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REQUIRE_ALL, RawClient, ServerProcess


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
