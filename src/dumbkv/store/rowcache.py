"""A bounded in-memory copy of committed rows, for a store that is the only writer of its data.

Rows are kept exactly as stored (sealed values, key ids), so the cache holds nothing the
database file does not. ``None`` records a key known to be absent. The budget counts each
row's value bytes plus a fixed overhead; past it, the oldest entries go first.
"""

from __future__ import annotations

from .base import Key, Row

__all__ = ["MISSING", "RowCache"]

#: What ``get`` returns for a key the cache knows nothing about.
MISSING = object()
#: Bytes one entry costs besides its value (dict slot, key tuple, id, row tuple).
ENTRY_OVERHEAD = 240


class RowCache:
    __slots__ = ("_bytes", "_rows", "budget")

    def __init__(self, budget: int) -> None:
        #: Bytes the entries may take; 0 turns the cache off.
        self.budget = budget
        self._rows: dict[Key, Row | None] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def size(self) -> int:
        """Bytes the entries are counted as."""
        return self._bytes

    def get(self, key: Key) -> Row | object | None:
        """The committed row at ``key``, None if known absent, or ``MISSING``."""
        return self._rows.get(key, MISSING)

    def put(self, key: Key, row: Row | None) -> None:
        """Record the committed state of ``key``."""
        if not self.budget:
            return
        cost = _cost(row)
        if cost > self.budget // 8:  # one huge value must not flush everything else
            self.discard(key)
            return
        rows = self._rows
        old = rows.pop(key, MISSING)
        if old is not MISSING:
            self._bytes -= _cost(old)  # type: ignore[arg-type]
        rows[key] = row
        self._bytes += cost
        while self._bytes > self.budget:
            oldest = next(iter(rows))
            self._bytes -= _cost(rows.pop(oldest))

    def discard(self, key: Key) -> None:
        old = self._rows.pop(key, MISSING)
        if old is not MISSING:
            self._bytes -= _cost(old)  # type: ignore[arg-type]

    def clear(self) -> None:
        self._rows.clear()
        self._bytes = 0


def _cost(row: Row | None) -> int:
    return ENTRY_OVERHEAD if row is None else ENTRY_OVERHEAD + len(row.value)
