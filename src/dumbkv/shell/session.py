"""One server connection as the shell uses it: connect, run one typed line, print the reply.

The messages are redis-cli's: ``Could not connect to DumbKV at host:port: reason`` when the
server cannot be reached, ``Error: ...`` when a command's connection breaks, ``Invalid
argument(s)`` for a line with unbalanced quotes. After a failure the next command reconnects.
"""

from __future__ import annotations

from typing import IO, Literal

from ..client import Client
from ..errors import AuthError, DumbKVError, ProtocolError
from ..errors import ConnectionError as DumbKVConnectionError
from ..resp import ErrorReply, split_inline
from .format import format_reply

__all__ = ["Outcome", "Session"]

#: How a command ended: a reply, an error reply, or no reply (the connection failed).
Outcome = Literal["ok", "error", "failed"]


class Session:
    """A client, the output mode and the two streams replies and messages go to."""

    def __init__(self, client: Client, *, raw: bool, out: IO[bytes], err: IO[str]) -> None:
        self.client = client
        self.raw = raw
        self.out = out
        self.err = err
        self.connected = False

    def prompt(self) -> str:
        """``host:port> ``, ``host:port[db]> `` off database 0, ``not connected> ``."""
        if not self.connected:
            return "not connected> "
        db = f"[{self.client.db}]" if self.client.db else ""
        return f"{self.client.host}:{self.client.port}{db}> "

    def connect(self) -> bool:
        """Connect (again); on failure print redis-cli's message and return False: the server
        cannot be reached, or refused the password (``-a``) or the database (``-n``)."""
        self.client.close()
        try:
            self.client.connect()
        except DumbKVConnectionError as exc:  # a TimeoutError too
            self._message(f"Could not connect to DumbKV at {self.client.host}:"
                          f"{self.client.port}: {exc.reason}")
            self.connected = False
            return False
        except DumbKVError as exc:  # the connection's AUTH or SELECT was refused
            self._refused(exc)
            return False
        self.connected = True
        return True

    def _refused(self, exc: DumbKVError) -> None:
        error = f"{exc.prefix} {exc.message}"
        if exc.command == "AUTH" or (exc.command is None and isinstance(exc, AuthError)):
            self._message(f"AUTH failed: {error}")
        else:
            self._message(f"SELECT {self.client.db} failed: {error}")
        self.client.close()
        self.connected = False

    def run(self, argv: list[bytes], *, errors_to_stderr: bool = False) -> Outcome:
        """Send one command and print its reply. ``errors_to_stderr`` (``-e``): an error
        reply goes to stderr as its bare text instead of to stdout."""
        if not self.connected and not self.connect():
            return "failed"
        try:
            reply = self.client.execute_raw(*argv)
        except DumbKVConnectionError as exc:  # a TimeoutError too
            self._message(f"Error: {exc.reason}")
            self.client.close()
            self.connected = False
            return "failed"
        except DumbKVError as exc:  # it reconnected first, and its AUTH or SELECT was refused
            self._refused(exc)
            return "failed"
        is_error = isinstance(reply, ErrorReply)
        if is_error and errors_to_stderr:
            self._message(str(reply))
        else:
            self.out.write(format_reply(reply, self.raw))
            self.out.flush()
        return "error" if is_error else "ok"

    def line(self, line: bytes) -> Outcome | Literal["quit", "empty"]:
        """Run one typed line: split like the server's inline protocol; ``quit``/``exit``
        end the shell; a line with unbalanced quotes is refused."""
        try:
            argv = split_inline(line)
        except ProtocolError:
            self.out.write(b"Invalid argument(s)\n")
            self.out.flush()
            return "error"
        if not argv:
            return "empty"
        if argv[0].lower() in (b"quit", b"exit"):
            return "quit"
        return self.run(argv)

    def close(self) -> None:
        """Close the connection."""
        self.client.close()
        self.connected = False

    def _message(self, text: str) -> None:
        self.out.flush()
        self.err.write(text + "\n")
        self.err.flush()
