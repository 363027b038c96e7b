"""Whether an idle connection is still usable, checked before a command is sent."""

from __future__ import annotations

import select
from typing import Protocol

__all__ = ["peer_spoke"]


class _HasFileno(Protocol):
    def fileno(self) -> int: ...


def peer_spoke(sock: _HasFileno) -> bool:
    """True when an idle socket is readable: the server closed or reset it, or sent bytes
    nobody asked for. Either way it cannot carry a command; nothing was sent on it yet, so
    reconnecting is safe. ``poll``, not ``select``: a descriptor above 1023 (a process with many
    files open) must not look readable."""
    try:
        fd = sock.fileno()
        if not hasattr(select, "poll"):  # pragma: no cover - Windows
            readable, _, _ = select.select([fd], [], [], 0)
            return bool(readable)
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True
