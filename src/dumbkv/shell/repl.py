"""The interactive loop: a prompt, line editing and a history file (GNU readline).

The history file is ``$DUMBKV_CLI_HISTFILE``, else ``~/.dumbkv_history``; ``/dev/null`` or an
empty value turns it off. It is read at start and written after every line (so it survives a
crash) and on exit, readable by its owner only. Lines that carry a password (``AUTH``,
``HELLO ... AUTH``, ``MIGRATE ... AUTH``, ``ACL SETUSER``, ``CONFIG SET requirepass``) are not
kept, however the command name is quoted.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from types import ModuleType

from ..errors import ProtocolError
from ..resp import split_inline
from .options import HISTORY_ENV
from .session import Session

__all__ = ["history_path", "interactive", "is_sensitive"]

_SLOW = 0.5  # seconds: redis-cli shows the time a command took from here on
# CONFIG SET parameters whose value is a secret (redis-cli keeps them out of its history).
_SECRET_PARAMETERS = frozenset({"requirepass", "masterauth", "masteruser",
                                "tls-key-file-pass", "tls-client-key-file-pass"})


def history_path() -> Path | None:
    """Where the history lives, or None when it is turned off."""
    value = os.environ.get(HISTORY_ENV)
    if value is None:
        return Path.home() / ".dumbkv_history"
    if not value or value == os.devnull:
        return None
    return Path(value).expanduser()


def is_sensitive(line: str) -> bool:
    """True for a line that carries a password and must stay out of the history: its words
    are read with the server's quoting (``"auth" pw`` is ``AUTH pw``), as redis-cli does;
    a line with unbalanced quotes is read as words between spaces and quote marks."""
    data = line.encode("utf-8", "surrogateescape")
    try:
        argv = split_inline(data)
    except ProtocolError:
        argv = data.replace(b'"', b" ").replace(b"'", b" ").split()
    words = [arg.decode("utf-8", "replace").lower() for arg in argv]
    if not words:
        return False
    if words[0] == "auth" or words[:2] == ["acl", "setuser"]:
        return True
    if words[:2] == ["config", "set"]:
        return bool(_SECRET_PARAMETERS & set(words[2::2]))
    return words[0] in ("hello", "migrate") and bool({"auth", "auth2"} & set(words[1:]))


class _History:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.readline: ModuleType | None = None
        try:
            import readline
        except ImportError:  # no line editing on this platform: plain input()
            return
        self.readline = readline
        readline.set_auto_history(False)
        if path is not None:
            with contextlib.suppress(OSError):
                readline.read_history_file(path)

    def add(self, line: str) -> None:
        if self.readline is None or not line.strip() or is_sensitive(line):
            return
        self.readline.add_history(line)
        self.save()

    def save(self) -> None:
        if self.readline is None or self.path is None:
            return
        with contextlib.suppress(OSError):
            self.path.touch(mode=0o600)
            self.readline.write_history_file(self.path)


def interactive(session: Session) -> int:
    """Prompt, run, print, until ``quit``, ``exit``, end of input or Ctrl-C. Returns 0."""
    history = _History(history_path())
    session.connect()
    try:
        while True:
            line = input(session.prompt())
            history.add(line)
            start = time.monotonic()
            outcome = session.line(line.encode("utf-8", "surrogateescape"))
            if outcome == "quit":
                return 0
            elapsed = time.monotonic() - start
            if outcome in ("ok", "error") and elapsed >= _SLOW and not session.raw:
                session.out.write(b"(%.2fs)\n" % elapsed)
                session.out.flush()
    except (EOFError, KeyboardInterrupt):  # Ctrl-D or Ctrl-C: leave like quit
        session.out.write(b"\n")
        session.out.flush()
        return 0
    finally:
        history.save()
        session.close()
