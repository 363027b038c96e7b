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
    __slots__ = ("_largest", "_rows", "_values", "budget")

    def __init__(self, budget: int) -> None:
        #: Bytes the entries may take; 0 turns the cache off.
        self.budget = budget
        #: Largest value kept: one huge value must not push everything else out.
        self._largest = budget // 8 - ENTRY_OVERHEAD
        self._rows: dict[Key, Row | None] = {}
        self._values = 0  # bytes of the values held

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def size(self) -> int:
        """Bytes the entries are counted as."""
        return self._values + ENTRY_OVERHEAD * len(self._rows)

    def get(self, key: Key) -> Row | object | None:
        """The committed row at ``key``, None if known absent, or ``MISSING``."""
        return self._rows.get(key, MISSING)

    def put(self, key: Key, row: Row | None) -> None:
        """Record the committed state of ``key``."""
        rows = self._rows
        old = rows.pop(key, None)
        if old is not None:
            self._values -= len(old.value)
        if row is not None:
            size = len(row.value)
            if size > self._largest:
                return
            self._values += size
        elif not self.budget:
            return
        rows[key] = row
        if self._values + ENTRY_OVERHEAD * len(rows) > self.budget:
            self._evict()

    def _evict(self) -> None:
        rows = self._rows
        while rows and self._values + ENTRY_OVERHEAD * len(rows) > self.budget:
            oldest = rows.pop(next(iter(rows)))
            if oldest is not None:
                self._values -= len(oldest.value)

    def discard(self, key: Key) -> None:
        old = self._rows.pop(key, None)
        if old is not None:
            self._values -= len(old.value)

    def clear(self) -> None:
        self._rows.clear()
        self._values = 0
