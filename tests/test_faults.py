"""Store faults: a full disk answers server errors, keeps serving, and loses nothing; a store
that cannot be opened at start keeps the process up, live but not ready, until it opens."""

from __future__ import annotations

import json
import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REQUIRE_ALL, RawClient, ServerProcess, StoreSQL, call, poll_until
from deploy import http_get
from test_sqlite_writer import writers


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


def _ready(server: ServerProcess) -> tuple[int, dict[str, object]]:
    status, body = http_get(server.admin_url + "/ready")
    return status, json.loads(body)


def _health(server: ServerProcess) -> int:
    return http_get(server.admin_url + "/health")[0]


def _unready_because(server: ServerProcess, text: str) -> str:
    """The reason /ready gives once it names ``text`` (the first open attempt may still run)."""
    def reason() -> str | None:
        status, body = _ready(server)
        reasons = body.get("reasons") or []
        assert status == 503 and isinstance(reasons, list), body
        return next((r for r in reasons if text in r), None)

    return poll_until(f"/ready to say {text!r}", reason, 30)


@pytest.mark.backends("sqlite")
def test_a_store_locked_at_start_is_waited_for_unready(
    server_factory: type[ServerProcess], tmp_path: Path
) -> None:
    """Another program holds the database's lock as the server starts: the process stays up
    (no restart loop), live but not ready, says why once in its log, and serves as soon as
    the lock goes."""
    server = server_factory(tmp_path).start()  # creates the database and its schema
    assert server.stop() == 0
    with StoreSQL(server.store) as other, other.write_lock():
        waiting = server_factory(tmp_path, "--store-timeout", "1", "--heartbeat-interval",
                                 "0.2").start(admin_only=True)
        # The busy timeout or the open's own timeout, whichever ends first: both are 1 s.
        reason = _unready_because(waiting, "cannot open the store sqlite:")
        assert "did not answer within 1s" in reason or "(OperationalError)" in reason
        assert _health(waiting) == 200
        # Live meanwhile (/health answers): the availability ledger beats.
        poll_until("heartbeats while the store is waited for", lambda: (
            (tmp_path / "availability.log").read_text().count("\nbeat ") >= 2 or None), 30)
        assert not waiting.resp_listening.is_set()
    assert waiting.resp_listening.wait(30), waiting.log
    poll_until("/ready to be 200", lambda: _ready(waiting)[0] == 200 or None, 30)
    assert len(writers(waiting)) == 1  # the failed attempts left no writer process behind
    raw = RawClient(waiting.address)
    try:
        assert call(raw, "SET", "k", "v") == "OK"
    finally:
        raw.close()
    assert "Traceback" not in waiting.log
    assert waiting.log.count("cannot open the store") == 1  # said once, not at every attempt
    assert "store opened after all" in waiting.log
    assert waiting.stop() == 0


def test_an_unreachable_database_at_start_is_waited_for_unready(
    server_factory: type[ServerProcess], tmp_path: Path
) -> None:
    """PostgreSQL down as the server starts: live, not ready with the reason (the password
    redacted), and a SIGTERM ends the wait cleanly."""
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = f"postgresql://trainee:s3cret-pw@127.0.0.1:{port}/kv"
    waiting = server_factory(tmp_path, "--store-timeout", "2", store=store).start(
        admin_only=True)
    reason = _unready_because(waiting, "cannot open the store")
    assert reason == (f"store: cannot open the store postgresql://trainee:***@127.0.0.1:{port}/kv:"
                      " postgres backend error (ConnectionRefusedError)")
    assert _health(waiting) == 200
    assert waiting.stop() == 0
    assert "s3cret-pw" not in waiting.log  # the password is redacted
    assert "Traceback" not in waiting.log
    assert waiting.log.rstrip().endswith("stopped")
