"""String and key commands. Each builds a ``KeyOp``: the rows it needs and a pure ``apply``.

``apply`` runs inside the store's batch, after every earlier command's ``apply``: it sees their
writes, and nothing it does is acknowledged before the batch commits. It must check everything
before it changes a row, so that an error leaves the row untouched.
"""

from __future__ import annotations

from ..errors import NOT_INTEGER, OVERFLOW, SYNTAX, CommandError
from ..resp import Reply, strict_int
from ..session import Session
from ..store import Key, KeyOp, Row, View
from .table import Result, command, int_arg

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class _Values:
    """Seal and open one user key's values inside the session's database."""

    __slots__ = ("addr", "crypto", "key")

    def __init__(self, s: Session, key: bytes) -> None:
        self.key = key
        self.crypto = s.state.crypto
        self.addr: Key = (s.db, self.crypto.key_id(key))

    def seal(self, value: bytes) -> bytes:
        return self.crypto.seal(self.key, self.addr[0], self.addr[1], value)

    def read(self, view: View) -> bytes | None:
        row = view.get(self.addr)
        if row is None:
            return None
        return self.crypto.open(self.key, self.addr[0], self.addr[1], row.value)


def _invalid_expire(name: str) -> CommandError:
    return CommandError(f"invalid expire time in '{name}' command")


def _absolute_ms(unit: bytes, amount: int, now: int, name: str) -> int:
    """Turn EX/PX/EXAT/PXAT ``amount`` into Unix milliseconds, as Redis validates it."""
    ms = amount * 1000 if unit in (b"EX", b"EXAT") else amount
    when = now + ms if unit in (b"EX", b"PX") else ms
    if not _INT64_MIN <= ms <= _INT64_MAX or not _INT64_MIN <= when <= _INT64_MAX:
        raise _invalid_expire(name)
    return when


# --------------------------------------------------------------------------- reads
@command("get", 2, "readonly", syntax="GET key", summary="the value of key, or nil")
def get(s: Session, argv: list[bytes]) -> Result:
    v = _Values(s, argv[1])
    return KeyOp((v.addr,), v.read, "get", writes=False)


@command("mget", -2, "readonly", syntax="MGET key [key ...]", summary="the values of keys")
def mget(s: Session, argv: list[bytes]) -> Result:
    values = [_Values(s, key) for key in argv[1:]]

    def apply(view: View) -> Reply:
        return [v.read(view) for v in values]

    return KeyOp(tuple(v.addr for v in values), apply, "mget", writes=False)


@command("strlen", 2, "readonly", syntax="STRLEN key", summary="length of the value, 0 if none")
def strlen(s: Session, argv: list[bytes]) -> Result:
    v = _Values(s, argv[1])

    def apply(view: View) -> Reply:
        value = v.read(view)
        return 0 if value is None else len(value)

    return KeyOp((v.addr,), apply, "strlen", writes=False)


@command("exists", -2, "readonly", syntax="EXISTS key [key ...]",
         summary="how many of the keys exist (repeats count again)")
def exists(s: Session, argv: list[bytes]) -> Result:
    addrs = tuple(_Values(s, key).addr for key in argv[1:])

    def apply(view: View) -> Reply:
        return sum(1 for addr in addrs if view.get(addr) is not None)

    return KeyOp(addrs, apply, "exists", writes=False)


def _ttl(s: Session, argv: list[bytes], divisor: int, name: str) -> Result:
    addr = _Values(s, argv[1]).addr

    def apply(view: View) -> Reply:
        row = view.get(addr)
        if row is None:
            return -2
        if row.expires_at is None:
            return -1
        left = max(row.expires_at - view.now, 0)
        return (left + divisor // 2) // divisor

    return KeyOp((addr,), apply, name, writes=False)


@command("ttl", 2, "readonly", syntax="TTL key",
         summary="seconds to live; -1 without expiry, -2 if missing")
def ttl(s: Session, argv: list[bytes]) -> Result:
    return _ttl(s, argv, 1000, "ttl")


@command("pttl", 2, "readonly", syntax="PTTL key",
         summary="milliseconds to live; -1 without expiry, -2 if missing")
def pttl(s: Session, argv: list[bytes]) -> Result:
    return _ttl(s, argv, 1, "pttl")


# --------------------------------------------------------------------------- writes
_SET_SYNTAX = "SET key value [NX | XX] [GET] [EX seconds | PX ms | EXAT ts | PXAT ms-ts | KEEPTTL]"


@command("set", -3, "write", syntax=_SET_SYNTAX,
         summary="store value at key; OK, or nil when NX/XX did not apply")
def set_(s: Session, argv: list[bytes]) -> Result:
    v = _Values(s, argv[1])
    value = argv[2]
    nx = xx = want_old = keepttl = False
    expire: tuple[bytes, bytes] | None = None
    i = 3
    while i < len(argv):
        opt = argv[i].upper()
        if opt == b"NX" and not xx:
            nx = True
        elif opt == b"XX" and not nx:
            xx = True
        elif opt == b"GET":
            want_old = True
        elif opt == b"KEEPTTL" and expire is None:
            keepttl = True
        elif opt in (b"EX", b"PX", b"EXAT", b"PXAT") and not keepttl and (
            expire is None or expire[0] == opt  # the same unit may repeat: the last one wins
        ) and i + 1 < len(argv):
            expire = (opt, argv[i + 1])
            i += 1
        else:
            raise CommandError(SYNTAX)
        i += 1
    amount = 0
    if expire is not None:
        amount = int_arg(expire[1])  # checked after the syntax, as Redis does
        if amount <= 0:
            raise _invalid_expire("set")
    reads = nx or xx or want_old or keepttl
    sealed = v.seal(value)

    def apply(view: View) -> Reply:
        # The expiry first, as Redis: a bad one is an error whatever NX or XX decide.
        expires_at = None if expire is None else _absolute_ms(expire[0], amount, view.now, "set")
        old = v.read(view) if want_old else None
        row = view.get(v.addr) if reads else None
        if (nx and row is not None) or (xx and row is None):
            return old
        if keepttl and row is not None:
            expires_at = row.expires_at
        view.put(v.addr, Row(sealed, expires_at))
        return old if want_old else "OK"

    return KeyOp((v.addr,) if reads else (), apply, "set")


@command("mset", -3, "write", syntax="MSET key value [key value ...]",
         summary="set several keys at once, atomically")
def mset(s: Session, argv: list[bytes]) -> Result:
    if len(argv) % 2 == 0:
        raise CommandError("wrong number of arguments for 'mset' command")
    rows: list[tuple[Key, Row]] = []
    for key, value in zip(argv[1::2], argv[2::2], strict=True):
        v = _Values(s, key)
        rows.append((v.addr, Row(v.seal(value), None)))

    def apply(view: View) -> Reply:
        for addr, row in rows:
            view.put(addr, row)
        return "OK"

    return KeyOp((), apply, "mset")


@command("del", -2, "write", syntax="DEL key [key ...]", summary="delete keys; how many existed")
def del_(s: Session, argv: list[bytes]) -> Result:
    addrs = tuple(_Values(s, key).addr for key in argv[1:])

    def apply(view: View) -> Reply:
        return sum(1 for addr in addrs if view.delete(addr))

    return KeyOp(addrs, apply, "del")


@command("getdel", 2, "write", syntax="GETDEL key", summary="the value of key, then delete it")
def getdel(s: Session, argv: list[bytes]) -> Result:
    v = _Values(s, argv[1])

    def apply(view: View) -> Reply:
        value = v.read(view)
        view.delete(v.addr)
        return value

    return KeyOp((v.addr,), apply, "getdel")


@command("append", 3, "write", syntax="APPEND key value",
         summary="append to the value (creating it); the new length")
def append(s: Session, argv: list[bytes]) -> Result:
    v = _Values(s, argv[1])
    suffix = argv[2]

    def apply(view: View) -> Reply:
        row = view.get(v.addr)
        old = v.read(view) or b""
        value = old + suffix
        view.put(v.addr, Row(v.seal(value), row.expires_at if row else None))
        return len(value)

    return KeyOp((v.addr,), apply, "append")


def _incr(s: Session, key: bytes, delta: int, name: str) -> Result:
    v = _Values(s, key)

    def apply(view: View) -> Reply:
        row = view.get(v.addr)
        current = 0 if row is None else strict_int(v.read(view) or b"")
        if current is None:
            raise CommandError(NOT_INTEGER)
        result = current + delta
        if not _INT64_MIN <= result <= _INT64_MAX:
            raise CommandError(OVERFLOW)
        view.put(v.addr, Row(v.seal(b"%d" % result), row.expires_at if row else None))
        return result

    return KeyOp((v.addr,), apply, name)


@command("incr", 2, "write", syntax="INCR key", summary="add 1 to the integer value")
def incr(s: Session, argv: list[bytes]) -> Result:
    return _incr(s, argv[1], 1, "incr")


@command("decr", 2, "write", syntax="DECR key", summary="subtract 1 from the integer value")
def decr(s: Session, argv: list[bytes]) -> Result:
    return _incr(s, argv[1], -1, "decr")


@command("incrby", 3, "write", syntax="INCRBY key increment", summary="add to the integer value")
def incrby(s: Session, argv: list[bytes]) -> Result:
    return _incr(s, argv[1], int_arg(argv[2]), "incrby")


@command("decrby", 3, "write", syntax="DECRBY key decrement",
         summary="subtract from the integer value")
def decrby(s: Session, argv: list[bytes]) -> Result:
    amount = int_arg(argv[2])
    if amount == _INT64_MIN:
        raise CommandError("decrement would overflow")
    return _incr(s, argv[1], -amount, "decrby")


# --------------------------------------------------------------------------- expiry
def _expire(s: Session, argv: list[bytes], unit: bytes, name: str) -> Result:
    addr = _Values(s, argv[1]).addr
    flags = {opt.upper() for opt in argv[3:]}
    if not flags <= {b"NX", b"XX", b"GT", b"LT"}:
        bad = next(opt for opt in argv[3:] if opt.upper() not in {b"NX", b"XX", b"GT", b"LT"})
        raise CommandError(f"Unsupported option {bad[:128].decode('utf-8', 'replace')}")
    if b"NX" in flags and len(flags) > 1:
        raise CommandError("NX and XX, GT or LT options at the same time are not compatible")
    if {b"GT", b"LT"} <= flags:
        raise CommandError("GT and LT options at the same time are not compatible")
    amount = int_arg(argv[2])  # after the options, as Redis checks them

    def apply(view: View) -> Reply:
        when = _absolute_ms(unit, amount, view.now, name)
        row = view.get(addr)
        if row is None:
            return 0
        current = row.expires_at
        if (
            (b"NX" in flags and current is not None)
            or (b"XX" in flags and current is None)
            or (b"GT" in flags and (current is None or when <= current))
            or (b"LT" in flags and current is not None and when >= current)
        ):
            return 0
        if when <= view.now:
            view.delete(addr)
        else:
            view.put(addr, Row(row.value, when))
        return 1

    return KeyOp((addr,), apply, name)


_EXPIRE_OPTS = "[NX | XX | GT | LT]"


@command("expire", -3, "write", syntax=f"EXPIRE key seconds {_EXPIRE_OPTS}",
         summary="set a timeout in seconds; 1 if set, 0 if not")
def expire(s: Session, argv: list[bytes]) -> Result:
    return _expire(s, argv, b"EX", "expire")


@command("pexpire", -3, "write", syntax=f"PEXPIRE key milliseconds {_EXPIRE_OPTS}",
         summary="set a timeout in milliseconds; 1 if set, 0 if not")
def pexpire(s: Session, argv: list[bytes]) -> Result:
    return _expire(s, argv, b"PX", "pexpire")


@command("persist", 2, "write", syntax="PERSIST key",
         summary="remove the timeout; 1 if there was one")
def persist(s: Session, argv: list[bytes]) -> Result:
    addr = _Values(s, argv[1]).addr

    def apply(view: View) -> Reply:
        row = view.get(addr)
        if row is None or row.expires_at is None:
            return 0
        view.put(addr, Row(row.value, None))
        return 1

    return KeyOp((addr,), apply, "persist")


# --------------------------------------------------------------------------- refused by design
def _cannot_list(name: str) -> CommandError:
    return CommandError(
        f"{name} is not supported: DumbKV stores keys only as one-way hashes "
        "(SHA-256, or HMAC-SHA-256 with a server secret), so it cannot list them"
    )


@command("keys", 2, "readonly", syntax="KEYS pattern", summary="refused: keys cannot be listed")
def keys(s: Session, argv: list[bytes]) -> Result:
    raise _cannot_list("KEYS")


@command("scan", -2, "readonly", syntax="SCAN cursor [MATCH pattern] [COUNT n]",
         summary="refused: keys cannot be listed")
def scan(s: Session, argv: list[bytes]) -> Result:
    raise _cannot_list("SCAN")
