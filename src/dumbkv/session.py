"""State shared by all connections (``ServerState``) and each connection's own (``Session``)."""

from __future__ import annotations

import itertools
import time
from collections import Counter
from dataclasses import dataclass, field

from . import __version__
from .config import Config
from .crypto import Crypto
from .errors import Status
from .store import Store

__all__ = ["ServerState", "Session", "Stats"]


@dataclass
class Stats:
    """Counters for INFO; the Prometheus metrics hook in at ``record``."""

    connections_total: int = 0
    connections_active: int = 0
    commands: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    protocol_errors: int = 0
    bytes_in: int = 0
    bytes_out: int = 0

    def record(self, command: str, status: Status, seconds: float) -> None:
        """Count one reply. ``command`` is a known command name or ``unknown``."""
        self.commands[command] += 1
        self.statuses[status] += 1


@dataclass
class ServerState:
    config: Config
    store: Store
    crypto: Crypto
    stats: Stats = field(default_factory=Stats)
    started: float = field(default_factory=time.time)
    version: str = __version__
    port: int = 0
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def next_client_id(self) -> int:
        return next(self._ids)


class Session:
    """One connection's protocol state."""

    __slots__ = ("authenticated", "closing", "db", "id", "name", "resp3", "state")

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.id = state.next_client_id()
        self.db = 0
        self.resp3 = False
        self.name: bytes | None = None
        self.authenticated = state.config.requirepass is None
        #: Set by QUIT: close once the replies so far are written.
        self.closing = False
