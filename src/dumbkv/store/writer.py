"""The SQLite writer process: applies and commits batches of row changes, off the server's core.

The server computes every batch on its event loop (reads, the commands' logic, encryption)
and sends only the resulting row changes here, over a pipe. This process writes them with its
own connection and commits; the server answers the batch's commands when the commit is
acknowledged. Writes and ``fsync`` then run on the machine's other core, and never contend
with the event loop for Python's GIL.

Group commit: every batch already waiting in the pipe when a transaction starts goes into that
transaction, one commit for all. Acknowledgements carry the sequence number of the newest batch
committed; a failed transaction is reported with the error's class and SQLite's own message
(which never quotes data). After a failure, batches are dropped unread until the server sends
``reset``: they were computed on top of changes that never committed.

The process ends when its input closes (the server stopped, or was killed).

Wire format, both ways: a 4-byte little-endian length, then a ``marshal`` payload:

* server -> writer: ``("w", seq, upserts, deletes)``, ``("reset",)``
* writer -> server: ``("ready",)``, ``("ok", seq, outside)`` (``outside``: another connection
  committed since the previous transaction), ``("err", seq, error class, message)``
"""

from __future__ import annotations

import marshal
import os
import signal
import sqlite3
import struct
import sys
from typing import Any

__all__ = [
    "DELETE",
    "FILE_GONE",
    "UPSERT",
    "FileGone",
    "FrameReader",
    "Writer",
    "file_identity",
    "frame",
    "main",
]

UPSERT = (
    "INSERT INTO kv (db, id, value, expires_at) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (db, id) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at"
)
DELETE = "DELETE FROM kv WHERE db = ? AND id = ?"
#: Pages are read through a memory map (address space only; the OS pages the file in and out).
MMAP_BYTES = 1 << 30
#: The writer's page cache, in KiB: the pages it changed lately, whose newest copies are in the
#: WAL (not in the memory-mapped file), stay in memory instead of being read back.
CACHE_KIB = 32768
#: A commit checkpoints by itself only past this many WAL pages: the server's background
#: checkpointer normally runs long before.
AUTOCHECKPOINT_PAGES = 32768
_LEN = struct.Struct("<I")
_READ = 1 << 20


def frame(message: Any) -> bytes:
    """One message as it travels on the pipe."""
    payload = marshal.dumps(message)
    return _LEN.pack(len(payload)) + payload


class FrameReader:
    """Splits a byte stream into messages; keeps an incomplete tail for the next ``feed``.

    The tail grows in place, so a frame of any size that arrives in many reads costs time
    linear in its size."""

    __slots__ = ("_buf",)

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        buf = self._buf
        buf += data
        messages = []
        pos = 0
        end = len(buf)
        with memoryview(buf) as view:
            while end - pos >= 4:
                (size,) = _LEN.unpack_from(view, pos)
                if end - pos - 4 < size:
                    break
                messages.append(marshal.loads(view[pos + 4 : pos + 4 + size]))
                pos += 4 + size
        if pos:
            del buf[:pos]
        return messages


#: Why a write is refused once the file was deleted or replaced: it would go to a file nobody
#: can open again, and be lost at the next start.
FILE_GONE = (
    "sqlite database file was removed or replaced while in use; "
    "restart the server to open it again"
)


def file_identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of the file at ``path``, None if there is none (or it is in memory)."""
    if path == ":memory:":
        return None
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


class FileGone(Exception):
    """The database file was deleted or replaced while the server uses it."""


class Writer:
    """Applies write messages on one connection (in autocommit mode)."""

    def __init__(self, conn: sqlite3.Connection, path: str,
                 identity: tuple[int, int] | None = None) -> None:
        self.conn = conn
        self.path = path
        #: The file commits must go to: the server's (given), else the one at ``path`` now.
        self.identity = identity if identity is not None else file_identity(path)
        self.failed = False
        self.version = conn.execute("PRAGMA data_version").fetchone()[0]

    def run(self, fd_in: int, fd_out: int) -> None:
        reader = FrameReader()
        os.write(fd_out, frame(("ready",)))
        while True:
            data = os.read(fd_in, _READ)
            if not data:
                return  # the server is gone
            messages = reader.feed(data)
            replies = self.apply(messages)
            if replies:
                os.write(fd_out, b"".join(frame(r) for r in replies))

    def apply(self, messages: list[Any]) -> list[Any]:
        """Commit every write among ``messages`` in one transaction; the replies to send."""
        writes: list[Any] = []
        for message in messages:
            if message[0] == "reset":
                self.failed = False
                writes.clear()  # dropped already: they came before the reset
            elif not self.failed:
                writes.append(message)
        if not writes:
            return []
        try:
            outside = self.commit(writes)
        except Exception as exc:
            return self.failure(writes, exc)
        return [("ok", writes[-1][1], outside)]

    def failure(self, writes: list[Any], exc: Exception) -> list[Any]:
        """``writes`` failed with ``exc``: the reply to send. Writes that come next are dropped
        until the server's ``reset`` (if there were none, there is nothing to reset)."""
        self.failed = bool(writes)
        return [("err", writes[0][1], type(exc).__name__, str(exc))] if writes else []

    def commit(self, writes: list[Any]) -> bool:
        """One transaction for ``writes``; whether another connection committed since the
        last one (``PRAGMA data_version``, read under the write lock)."""
        if self.identity is not None and file_identity(self.path) != self.identity:
            raise FileGone(FILE_GONE)
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            version: int = conn.execute("PRAGMA data_version").fetchone()[0]
            outside = bool(version != self.version)
            self.version = version
            for _, _, upserts, deletes in writes:
                if deletes:
                    conn.executemany(DELETE, deletes)
                if upserts:
                    conn.executemany(UPSERT, upserts)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        return outside


def main(argv: list[str]) -> None:
    """``python -m dumbkv.store.writer PATH SYNCHRONOUS BUSY_MS DEV:INO``, started by the
    server (``-`` for DEV:INO: the file at PATH when it starts)."""
    # Ctrl-C, or a SIGTERM sent to the whole process group, stops the server, which then
    # closes our input: we end after the last commit, not in the middle of its shutdown.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    path, synchronous, busy_ms = argv[0], argv[1], int(argv[2])
    identity = None
    if len(argv) > 3 and argv[3] != "-":
        device, inode = argv[3].split(":")
        identity = int(device), int(inode)
    conn = sqlite3.connect(path, isolation_level=None, timeout=busy_ms / 1000)
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
    conn.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
    conn.execute(f"PRAGMA wal_autocheckpoint={AUTOCHECKPOINT_PAGES}")
    Writer(conn, path, identity).run(sys.stdin.fileno(), sys.stdout.fileno())


if __name__ == "__main__":
    main(sys.argv[1:])
