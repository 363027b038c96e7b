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
    reconnecting is safe."""
    try:
        readable, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)
