"""Storage backends, registered by URL scheme; drivers are imported only by their backend."""

from __future__ import annotations

import importlib

from .base import NOT_NOW, DbOp, Key, KeyCount, KeyOp, Op, Row, Store, View, now_ms

__all__ = [
    "BACKENDS",
    "NOT_NOW",
    "DbOp",
    "Key",
    "KeyCount",
    "KeyOp",
    "Op",
    "Row",
    "Store",
    "View",
    "create_store",
    "now_ms",
]

#: URL scheme -> "module:Class"
BACKENDS: dict[str, str] = {
    "sqlite": "dumbkv.store.sqlite:SQLiteStore",
    "postgresql": "dumbkv.store.postgres:PostgresStore",
    "postgres": "dumbkv.store.postgres:PostgresStore",
}


def create_store(url: str, *, timeout: float = 5.0) -> Store:
    """The (not yet opened) store for ``url``, e.g. ``sqlite:///./dumbkv-data/dumbkv.db``."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    target = BACKENDS.get(scheme)
    if target is None:
        known = ", ".join(f"{s}://" for s in sorted(BACKENDS))
        raise ValueError(f"unsupported store URL scheme {scheme!r}; use one of {known}")
    module_name, _, class_name = target.partition(":")
    cls: type[Store] = getattr(importlib.import_module(module_name), class_name)
    return cls(url, timeout=timeout)
