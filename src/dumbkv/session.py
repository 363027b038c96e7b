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
from .metrics import Metrics
from .store import Store

__all__ = ["Disconnect", "ServerState", "Session", "Stats"]


class Disconnect(Exception):
    """Raised by a command to close its connection at once, with no reply."""


class Stats:
    """What the server counts, once: INFO reads the same numbers Prometheus scrapes.

    Replies and network bytes are plain numbers kept in ``Metrics`` (``replies``, ``bytes_in``,
    ``bytes_out``), with no lock: the event-loop thread is their only writer. ``commands`` and
    ``statuses`` are totals computed from them when asked (INFO).
    """

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._replies = metrics.replies
        self.connections_total = 0
        self.connections_active = 0
        self.protocol_errors = 0

    def record(self, command: str, status: Status, seconds: float) -> None:
        """Count one reply. ``command`` is a known command name, ``unknown`` or ``protocol``."""
        replies = self._replies.get((command, status)) or self.metrics.replies_of(command, status)
        replies.count += 1
        replies.latency.observe(seconds)

    @property
    def commands(self) -> Counter[str]:
        """Replies by command name."""
        return self._totals(0)

    @property
    def statuses(self) -> Counter[str]:
        """Replies by status (``ok``, ``client_error``, ``server_error``)."""
        return self._totals(1)

    def _totals(self, part: int) -> Counter[str]:
        """Reply counts summed by one part of their (command, status) key."""
        totals: Counter[str] = Counter()
        for key, replies in list(self._replies.items()):
            totals[key[part]] += replies.count
        return totals

    @property
    def bytes_in(self) -> int:
        """Bytes received on the RESP port (``dumbkv_network_bytes_total{direction="in"}``)."""
        return self.metrics.bytes_in

    @property
    def bytes_out(self) -> int:
        """Bytes sent on the RESP port (``dumbkv_network_bytes_total{direction="out"}``)."""
        return self.metrics.bytes_out

    def connection_opened(self) -> None:
        self.connections_total += 1
        self.connections_active += 1
        self.metrics.connections.inc()
        self.metrics.connections_active.inc()

    def connection_closed(self) -> None:
        self.connections_active -= 1
        self.metrics.connections_active.dec()

    def received(self, n: int) -> None:
        self.metrics.bytes_in += n

    def sent(self, n: int) -> None:
        self.metrics.bytes_out += n

    def protocol_error(self) -> None:
        self.protocol_errors += 1
        self.metrics.protocol_errors.inc()


@dataclass
class ServerState:
    config: Config
    store: Store
    crypto: Crypto
    metrics: Metrics
    stats: Stats = field(init=False)
    #: ``time.monotonic()`` at the start: uptimes do not move when the wall clock is stepped.
    started: float = field(default_factory=time.monotonic)
    version: str = __version__
    port: int = 0
    #: Set at shutdown, before anything else: readiness turns 503.
    draining: bool = False
    #: Set while a declared maintenance window is open: readiness turns 503.
    maintenance: bool = False
    #: Why the server is not serving yet, at start (the store cannot be opened: the server
    #: tries again; the RESP port is not listening yet); /ready answers 503 with it. None once
    #: the RESP port listens.
    starting: str | None = None
    #: The store's size on disk, refreshed by the sweeper (None until first measured).
    store_size: int | None = None
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self.stats = Stats(self.metrics)
        self.store.observe = self.metrics.store_call
        backend = self.store.backend
        self.metrics.add_gauge(
            "dumbkv_store_size_bytes", "Bytes the store takes on disk.", ["backend"],
            lambda: {} if self.store_size is None else {(backend,): self.store_size},
        )
        self.metrics.add_gauge(
            "dumbkv_maintenance", "1 while a declared maintenance window is open, else 0.", [],
            lambda: {(): 1.0 if self.maintenance else 0.0},
        )

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
