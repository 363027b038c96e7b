"""The command table: one ``Command`` per name, registered with ``@command``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

from ..errors import NOT_INTEGER, CommandError
from ..resp import Reply, strict_int
from ..session import Session
from ..store import Op

__all__ = ["TABLE", "Command", "Handler", "Result", "command", "int_arg", "unknown_subcommand"]

#: A handler answers at once (a reply) or hands the store an operation.
Result: TypeAlias = Reply | Op
Handler = Callable[[Session, list[bytes]], Result]


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    handler: Handler
    #: Redis convention: n > 0 means exactly n words (name included), -n means at least n.
    arity: int
    #: "write", "readonly", "noauth" (allowed before AUTH), "admin", "connection".
    flags: frozenset[str]
    syntax: str
    summary: str
    #: Fewest and most words allowed (from ``arity``), and whether it runs before AUTH:
    #: worked out once, at registration, for the dispatch of every command.
    min_argc: int = 0
    max_argc: float = 0
    noauth: bool = False
    #: For a command with subcommands: each one's (fewest, most) words, checked before AUTH
    #: as Redis does, so a handler only sees a known subcommand with a valid word count.
    subcommands: dict[bytes, tuple[int, float]] | None = None


TABLE: dict[bytes, Command] = {}


def _bounds(arity: int) -> tuple[int, float]:
    return abs(arity), arity if arity > 0 else float("inf")


def command(
    name: str, arity: int, *flags: str, syntax: str, summary: str,
    subcommands: dict[str, int] | None = None,
) -> Callable[[Handler], Handler]:
    """Register the decorated handler under ``name``; ``subcommands`` maps each subcommand to
    its arity, counted like ``arity`` (``CLIENT SETNAME name`` is 3)."""

    def register(handler: Handler) -> Handler:
        key = name.lower().encode()
        if key in TABLE:
            raise RuntimeError(f"command {name} registered twice")
        min_argc, max_argc = _bounds(arity)
        TABLE[key] = Command(
            name.lower(), handler, arity, frozenset(flags), syntax, summary,
            min_argc=min_argc, max_argc=max_argc, noauth="noauth" in flags,
            subcommands=None if subcommands is None else {
                sub.upper().encode(): _bounds(n) for sub, n in subcommands.items()
            },
        )
        return handler

    return register


def int_arg(raw: bytes) -> int:
    """A signed 64-bit integer argument, or the Redis error for one that is not."""
    value = strict_int(raw)
    if value is None:
        raise CommandError(NOT_INTEGER)
    return value


def unknown_subcommand(sub: bytes, parent: str) -> CommandError:
    text = sub[:128].decode("utf-8", "replace")
    return CommandError(f"unknown subcommand '{text}'. Try {parent.upper()} HELP.")
