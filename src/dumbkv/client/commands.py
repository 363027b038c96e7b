"""Every command as a typed method, written once for the sync client, the asyncio client and
both pipelines.

A method builds the argument list and names the converter of its reply, then hands both to
``_execute``, which each class implements: the sync client returns the value, the asyncio
client returns an awaitable of it, a pipeline queues the command and returns itself. Python
cannot say "``T`` here, ``Awaitable[T]`` there" without higher-kinded types, so each method is
typed ``Result[T]`` (that union) and its docstring names ``T``: narrow with ``await`` on the
asyncio client.
"""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Mapping
from typing import Any, TypeAlias, TypeVar, Union

from . import convert
from .convert import Converter

__all__ = ["Commands", "Key", "Result", "Value"]

T = TypeVar("T")
#: What a command method returns: ``T`` (sync client), ``Awaitable[T]`` (asyncio client) or
#: the pipeline itself (queued).
Result: TypeAlias = Union[T, Awaitable[T], "Commands"]
Key: TypeAlias = bytes | str
Value: TypeAlias = bytes | str | int | float
Seconds: TypeAlias = int | datetime.timedelta


def _seconds(amount: Seconds) -> int:
    if isinstance(amount, datetime.timedelta):
        return int(amount.total_seconds())
    return amount


def _millis(amount: Seconds) -> int:
    if isinstance(amount, datetime.timedelta):
        return int(amount.total_seconds() * 1000)
    return amount


def _expire_options(nx: bool, xx: bool, gt: bool, lt: bool) -> list[str]:
    return [name for name, on in (("NX", nx), ("XX", xx), ("GT", gt), ("LT", lt)) if on]


class Commands:
    """The command methods. Subclasses implement ``_execute``; bulk replies are ``bytes``, or
    ``str`` when the client was made with ``decode_responses=True``."""

    def _execute(self, converter: Converter, *args: Value) -> Result[Any]:
        """Run (or queue) one command; its reply goes through ``converter``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ connection
    def ping(self) -> Result[bool]:
        """``PING``: ``True`` (the server answered ``PONG``)."""
        return self._execute(convert.pong, "PING")

    def echo(self, message: Value) -> Result[bytes | str]:
        """``ECHO``: the message back."""
        return self._execute(convert.value, "ECHO", message)

    def select(self, db: int) -> Result[bool]:
        """``SELECT``: ``True``; the client stays in ``db`` (also after a reconnect)."""
        return self._execute(convert.ok, "SELECT", db)

    def auth(self, password: str, username: str | None = None) -> Result[bool]:
        """``AUTH``: ``True``; the client re-sends the password after a reconnect."""
        args: list[Value] = ["AUTH", password] if username is None else [
            "AUTH", username, password]
        return self._execute(convert.ok, *args)

    def client_setname(self, name: str) -> Result[bool]:
        """``CLIENT SETNAME``: ``True`` (an empty name removes it). Applies to the one
        connection it ran on."""
        return self._execute(convert.ok, "CLIENT", "SETNAME", name)

    def client_getname(self) -> Result[bytes | str | None]:
        """``CLIENT GETNAME``: the connection's name, or ``None``."""
        return self._execute(convert.value, "CLIENT", "GETNAME")

    def client_id(self) -> Result[int]:
        """``CLIENT ID``: the connection's id (unique for the server's lifetime)."""
        return self._execute(convert.integer, "CLIENT", "ID")

    # ------------------------------------------------------------------ server
    def dbsize(self) -> Result[int]:
        """``DBSIZE``: the number of live keys in the current database."""
        return self._execute(convert.integer, "DBSIZE")

    def flushdb(self) -> Result[bool]:
        """``FLUSHDB``: ``True`` once every key of the current database is deleted."""
        return self._execute(convert.ok, "FLUSHDB")

    def flushall(self) -> Result[bool]:
        """``FLUSHALL``: ``True`` once every key of every database is deleted."""
        return self._execute(convert.ok, "FLUSHALL")

    def time(self) -> Result[tuple[int, int]]:
        """``TIME``: (Unix seconds, microseconds) on the server."""
        return self._execute(convert.time_pair, "TIME")

    def info(self, *sections: str) -> Result[dict[str, Any]]:
        """``INFO``: a flat dict of every field (int, float or str values; keyspace lines
        ``db0`` as dicts ``{"keys": n, ...}``)."""
        return self._execute(convert.info, "INFO", *sections)

    def config_get(self, pattern: str = "*") -> Result[dict[bytes | str, bytes | str | None]]:
        """``CONFIG GET``: the matching parameters and their values."""
        return self._execute(convert.config_map, "CONFIG", "GET", pattern)

    def command_count(self) -> Result[int]:
        """``COMMAND COUNT``: how many commands the server has."""
        return self._execute(convert.integer, "COMMAND", "COUNT")

    # ------------------------------------------------------------------ strings
    def get(self, key: Key) -> Result[bytes | str | None]:
        """``GET``: the value, or ``None`` when the key is missing or expired."""
        return self._execute(convert.value, "GET", key)

    def set(
        self,
        key: Key,
        value: Value,
        *,
        ex: Seconds | None = None,
        px: Seconds | None = None,
        exat: int | None = None,
        pxat: int | None = None,
        keepttl: bool = False,
        nx: bool = False,
        xx: bool = False,
        get: bool = False,
    ) -> Result[bool | bytes | str | None]:
        """``SET`` with every option: ``True`` when written, ``None`` when ``nx``/``xx`` was
        not met; with ``get=True`` the old value (or ``None``) instead. ``ex``/``px`` take a
        number or a ``timedelta``. Conflicting options are the server's ``CommandError``."""
        args: list[Value] = ["SET", key, value]
        args += ["NX"] if nx else []
        args += ["XX"] if xx else []
        args += ["GET"] if get else []
        for name, amount in (("EX", ex), ("PX", px), ("EXAT", exat), ("PXAT", pxat)):
            if amount is not None:
                args += [name, _millis(amount) if name == "PX" else _seconds(amount)]
        args += ["KEEPTTL"] if keepttl else []
        return self._execute(convert.value if get else convert.set_reply, *args)

    def getdel(self, key: Key) -> Result[bytes | str | None]:
        """``GETDEL``: the value (now deleted), or ``None``."""
        return self._execute(convert.value, "GETDEL", key)

    def delete(self, *keys: Key) -> Result[int]:
        """``DEL``: how many of the keys were deleted."""
        return self._execute(convert.integer, "DEL", *keys)

    def exists(self, *keys: Key) -> Result[int]:
        """``EXISTS``: how many of the keys exist (a key named twice counts twice)."""
        return self._execute(convert.integer, "EXISTS", *keys)

    def mget(self, *keys: Key) -> Result[list[bytes | str | None]]:
        """``MGET``: one value (or ``None``) per key, in order."""
        return self._execute(convert.values, "MGET", *keys)

    def mset(self, mapping: Mapping[Key, Value]) -> Result[bool]:
        """``MSET``: ``True`` once every pair is set (all or nothing)."""
        args: list[Value] = ["MSET"]
        for key, item in mapping.items():
            args += [key, item]
        return self._execute(convert.ok, *args)

    def incr(self, key: Key) -> Result[int]:
        """``INCR``: the new value."""
        return self._execute(convert.integer, "INCR", key)

    def decr(self, key: Key) -> Result[int]:
        """``DECR``: the new value."""
        return self._execute(convert.integer, "DECR", key)

    def incrby(self, key: Key, amount: int) -> Result[int]:
        """``INCRBY``: the new value."""
        return self._execute(convert.integer, "INCRBY", key, amount)

    def decrby(self, key: Key, amount: int) -> Result[int]:
        """``DECRBY``: the new value."""
        return self._execute(convert.integer, "DECRBY", key, amount)

    def append(self, key: Key, value: Value) -> Result[int]:
        """``APPEND``: the value's new length."""
        return self._execute(convert.integer, "APPEND", key, value)

    def strlen(self, key: Key) -> Result[int]:
        """``STRLEN``: the value's length in bytes (0 when missing)."""
        return self._execute(convert.integer, "STRLEN", key)

    # ------------------------------------------------------------------ expiry
    def expire(self, key: Key, seconds: Seconds, *, nx: bool = False, xx: bool = False,
               gt: bool = False, lt: bool = False) -> Result[bool]:
        """``EXPIRE``: ``True`` when the expiry was set (or the key deleted by a time <= 0)."""
        return self._execute(convert.boolean, "EXPIRE", key, _seconds(seconds),
                             *_expire_options(nx, xx, gt, lt))

    def pexpire(self, key: Key, millis: Seconds, *, nx: bool = False, xx: bool = False,
                gt: bool = False, lt: bool = False) -> Result[bool]:
        """``PEXPIRE``: as ``expire``, in milliseconds."""
        return self._execute(convert.boolean, "PEXPIRE", key, _millis(millis),
                             *_expire_options(nx, xx, gt, lt))

    def ttl(self, key: Key) -> Result[int]:
        """``TTL``: seconds to live; -1 without expiry, -2 when missing."""
        return self._execute(convert.integer, "TTL", key)

    def pttl(self, key: Key) -> Result[int]:
        """``PTTL``: milliseconds to live; -1 without expiry, -2 when missing."""
        return self._execute(convert.integer, "PTTL", key)

    def persist(self, key: Key) -> Result[bool]:
        """``PERSIST``: ``True`` when an expiry was removed."""
        return self._execute(convert.boolean, "PERSIST", key)
