"""The crosscheck workload: a pure function of the seed.

``FLUSHALL``, then random operations over ``KEY_NAMES`` key names in ``DATABASES`` databases,
covering every data command with its options and its errors, binary keys and values, wrong
arity and unknown commands. Expiry times are chosen so that no key expires during a run and no
``GT``/``LT`` comparison depends on timing.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = ["DATABASES", "EXCLUDED_COMMANDS", "KEY_NAMES", "Op", "show_bytes", "workload"]

DATABASES = 4
KEY_NAMES = 50

#: Commands of the table the workload leaves out, and why.
EXCLUDED_COMMANDS: dict[str, str] = {
    "quit": "closes the connection",
    "post": "closes the connection (HTTP sent to the RESP port)",
    "host:": "closes the connection (HTTP sent to the RESP port)",
    "auth": "depends on the server's --requirepass",
    "hello": "switches the protocol; its reply carries the connection id",
    "client": "connection ids and names differ per server",
    "info": "uptime, counters and store URL differ per server",
    "time": "the clock",
    "config": "the port differs per server",
    "command": "not a data command; COMMAND COUNT says nothing about the store",
}

_INT64_MAX = 2**63 - 1
_FAR_FUTURE_S = 4_000_000_000  # 2096: beyond any relative expiry the workload sets


@dataclass(frozen=True, slots=True)
class Op:
    """One operation: its position in the run, the database the generator expects it to run
    in, and the request."""

    index: int
    db: int
    argv: tuple[bytes, ...]

    @property
    def name(self) -> str:
        return self.argv[0].decode("latin-1").upper() if self.argv else ""

    def describe(self, width: int = 32) -> str:
        """The request for people: plain words as they are, anything else quoted with
        escapes and cut to ``width`` bytes (with its full length)."""
        return " ".join(show_bytes(arg, width) for arg in self.argv)


_PLAIN = re.compile(rb"[A-Za-z0-9_.:+\-*]+")


_ESCAPES = {9: "\\t", 10: "\\n", 13: "\\r", 34: '\\"', 92: "\\\\"}


def show_bytes(data: bytes, width: int = 32) -> str:
    """``data`` for people: a plain word as it is, anything else quoted as redis-cli does
    (``\\r``, ``\\n``, ``\\xHH``, ...), cut after ``width`` bytes with its full length."""
    if _PLAIN.fullmatch(data) and len(data) <= width:
        return data.decode()
    text = '"' + "".join(
        _ESCAPES.get(c) or (chr(c) if 32 <= c < 127 else f"\\x{c:02x}") for c in data[:width]
    ) + '"'
    return text if len(data) <= width else f"{text}...({len(data)} bytes)"


class _Generator:
    """The random operations; every choice comes from one ``random.Random(seed)``."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.db = 0
        binary = [b"", b"nul\x00key", b"crlf\r\nkey", b"sp ace", b"\xff\xfe\x00\x01"]
        self.keys = [b"k%d" % i for i in range(KEY_NAMES - len(binary))] + binary
        weighted: list[tuple[float, Callable[[int], list[bytes]]]] = [
            (16, self._set), (9, self._get), (3, self._getdel), (4, self._del),
            (4, self._exists), (4, self._mget), (4, self._mset), (12, self._incr),
            (5, self._append), (4, self._strlen), (6, self._expire), (6, self._ttl),
            (3, self._persist), (2, self._dbsize), (0.2, self._flushdb), (3, self._select),
            (2, self._wrong_arity), (1.5, self._unknown), (0.5, self._refused),
            (1, self._ping_echo),
        ]
        self._weights = [w for w, _ in weighted]
        self._makers = [m for _, m in weighted]

    def ops(self, n: int) -> Iterator[Op]:
        if n >= 1:
            yield Op(0, 0, (b"FLUSHALL",))
        for index in range(1, n):
            db = self.db  # the database the operation runs in (a SELECT switches after)
            maker = self.rng.choices(self._makers, self._weights)[0]
            yield Op(index, db, tuple(maker(index)))

    # ------------------------------------------------------------------ pieces
    def _cmd(self, name: bytes) -> bytes:
        """The command name, in random letter case one time in ten."""
        if self.rng.random() < 0.1:
            return bytes(c ^ 32 if 97 <= c | 32 <= 122 and self.rng.random() < 0.5 else c
                         for c in name)
        return name

    def _key(self) -> bytes:
        return self.rng.choice(self.keys)

    def _value(self) -> bytes:
        rng = self.rng
        kind = rng.random()
        if kind < 0.3:
            return self._int_text()
        if kind < 0.55:
            return "".join(rng.choices(string.ascii_letters, k=rng.randrange(1, 16))).encode()
        if kind < 0.9:  # binary, with the bytes a protocol could trip over
            data = bytearray(rng.randbytes(rng.randrange(0, 48)))
            for special in (b"\r\n", b"\x00", b"$-1\r\n", b"*2\r\n"):
                if rng.random() < 0.3:
                    data[rng.randrange(len(data) + 1):0] = special
            return bytes(data)
        if kind < 0.97:
            return b""
        return rng.randbytes(rng.randrange(1_000, 20_000))

    def _int_text(self) -> bytes:
        rng = self.rng
        kind = rng.random()
        if kind < 0.7:
            return b"%d" % rng.randrange(-1000, 1000)
        if kind < 0.85:  # close to the limits: INCR/INCRBY overflow
            return b"%d" % rng.choice(
                [_INT64_MAX, _INT64_MAX - rng.randrange(10), -_INT64_MAX - 1,
                 -_INT64_MAX + rng.randrange(10)]
            )
        return rng.choice([b"007", b"+5", b" 5", b"1.5", b"-0", b"1e3", b"9223372036854775808"])

    def _amount(self) -> bytes:
        """An INCRBY/DECRBY argument, sometimes huge or not an integer."""
        rng = self.rng
        kind = rng.random()
        if kind < 0.75:
            return b"%d" % rng.randrange(-100, 100)
        if kind < 0.9:
            return b"%d" % rng.choice([_INT64_MAX, -_INT64_MAX - 1, 2**62, -(2**62)])
        return rng.choice([b"abc", b"1.5", b"", b"+1", b"01", b"9223372036854775808"])

    def _relative_seconds(self, index: int) -> int:
        """A relative expiry that never lapses during a run and is never equal to another
        operation's: k * 10^7 + index seconds, so whether one is later than another does not
        depend on when they ran (GT/LT give the same answer on both targets)."""
        return self.rng.randrange(1, 100) * 10**7 + index % 10**7

    def _absolute_seconds(self) -> int:
        if self.rng.random() < 0.8:
            return _FAR_FUTURE_S + self.rng.randrange(10**8)
        return self.rng.randrange(1, 10**9)  # in the past: set, and expired at once

    # ------------------------------------------------------------------ commands
    def _set(self, index: int) -> list[bytes]:
        rng = self.rng
        groups: list[list[bytes]] = []
        cond = rng.random()
        if cond < 0.15:
            groups.append([b"NX"])
        elif cond < 0.3:
            groups.append([b"XX"])
        elif cond < 0.32:
            groups += [[b"NX"], [b"XX"]]  # syntax error
        if rng.random() < 0.2:
            groups.append([b"GET"])
        exp = rng.random()
        if exp < 0.1:
            groups.append([b"EX", b"%d" % self._relative_seconds(index)])
        elif exp < 0.2:
            ms = self._relative_seconds(index) * 1000 + rng.randrange(1000)
            groups.append([b"PX", b"%d" % ms])
        elif exp < 0.26:
            groups.append([b"EXAT", b"%d" % self._absolute_seconds()])
        elif exp < 0.3:
            ms = self._absolute_seconds() * 1000 + rng.randrange(1000)
            groups.append([b"PXAT", b"%d" % ms])
        elif exp < 0.38:
            groups.append([b"KEEPTTL"])
        elif exp < 0.42:
            groups.append(rng.choice([
                [b"EX", b"0"], [b"PX", b"-5"], [b"EX", b"abc"], [b"EX", b"%d" % _INT64_MAX],
                [b"KEEPTTL"], [b"EX", b"1000", b"PX", b"1000"], [b"BOGUS"],
            ]))
            if groups[-1] == [b"KEEPTTL"]:
                groups.append([b"EX", b"1000"])  # KEEPTTL with EX: syntax error
        rng.shuffle(groups)
        argv = [self._cmd(b"SET"), self._key(), self._value()]
        for group in groups:
            argv += group
        if rng.random() < 0.01:
            argv.append(b"EX")  # EX without its value: syntax error
        return argv

    def _get(self, index: int) -> list[bytes]:
        return [self._cmd(b"GET"), self._key()]

    def _getdel(self, index: int) -> list[bytes]:
        return [self._cmd(b"GETDEL"), self._key()]

    def _keys(self, most: int) -> list[bytes]:
        return [self._key() for _ in range(self.rng.randrange(1, most + 1))]

    def _del(self, index: int) -> list[bytes]:
        return [self._cmd(b"DEL"), *self._keys(3)]

    def _exists(self, index: int) -> list[bytes]:
        return [self._cmd(b"EXISTS"), *self._keys(4)]

    def _mget(self, index: int) -> list[bytes]:
        return [self._cmd(b"MGET"), *self._keys(5)]

    def _mset(self, index: int) -> list[bytes]:
        argv = [self._cmd(b"MSET")]
        for key in self._keys(3):
            argv += [key, self._value()]
        if self.rng.random() < 0.05:
            argv.append(self._key())  # a key without its value: wrong arity
        return argv

    def _incr(self, index: int) -> list[bytes]:
        rng = self.rng
        kind = rng.random()
        if kind < 0.35:
            return [self._cmd(b"INCR"), self._key()]
        if kind < 0.55:
            return [self._cmd(b"DECR"), self._key()]
        if kind < 0.8:
            return [self._cmd(b"INCRBY"), self._key(), self._amount()]
        if rng.random() < 0.05:
            return [self._cmd(b"DECRBY"), self._key(), b"-9223372036854775808"]
        return [self._cmd(b"DECRBY"), self._key(), self._amount()]

    def _append(self, index: int) -> list[bytes]:
        return [self._cmd(b"APPEND"), self._key(), self._value()]

    def _strlen(self, index: int) -> list[bytes]:
        return [self._cmd(b"STRLEN"), self._key()]

    def _expire(self, index: int) -> list[bytes]:
        rng = self.rng
        pexpire = rng.random() < 0.5
        kind = rng.random()
        if kind < 0.65:
            seconds = self._relative_seconds(index)
            amount = b"%d" % (seconds * 1000 + rng.randrange(1000) if pexpire else seconds)
        elif kind < 0.85:
            amount = b"%d" % -rng.randrange(0, 10**6)  # zero or negative: deletes the key
        else:
            amount = rng.choice([b"abc", b"1.5", b"%d" % _INT64_MAX, b"9223372036854775",
                                 b"-9223372036854775808"])
        argv = [self._cmd(b"PEXPIRE" if pexpire else b"EXPIRE"), self._key(), amount]
        opts = rng.random()
        if opts < 0.4:
            argv.append(rng.choice([b"NX", b"XX", b"GT", b"LT"]))
        elif opts < 0.5:
            argv += rng.sample([b"NX", b"XX", b"GT", b"LT", b"nx", b"BOGUS"], 2)
        return argv

    def _ttl(self, index: int) -> list[bytes]:
        return [self._cmd(self.rng.choice([b"TTL", b"PTTL"])), self._key()]

    def _persist(self, index: int) -> list[bytes]:
        return [self._cmd(b"PERSIST"), self._key()]

    def _dbsize(self, index: int) -> list[bytes]:
        return [self._cmd(b"DBSIZE")]

    def _flushdb(self, index: int) -> list[bytes]:
        return [self._cmd(b"FLUSHDB"), *self.rng.choice([[], [b"SYNC"], [b"ASYNC"]])]

    def _select(self, index: int) -> list[bytes]:
        rng = self.rng
        if rng.random() < 0.85:
            self.db = rng.randrange(DATABASES)
            return [self._cmd(b"SELECT"), b"%d" % self.db]
        return [self._cmd(b"SELECT"), rng.choice([b"16", b"99", b"-1", b"abc", b"2147483648"])]

    def _wrong_arity(self, index: int) -> list[bytes]:
        k, v = self._key(), self._value()
        return self.rng.choice([
            [b"GET"], [b"GET", k, k], [b"SET", k], [b"MSET", k], [b"INCR"], [b"INCR", k, v],
            [b"INCRBY", k], [b"DECRBY", k], [b"EXPIRE", k], [b"PEXPIRE", k], [b"TTL"],
            [b"PTTL", k, k], [b"STRLEN", k, k], [b"APPEND", k], [b"GETDEL"], [b"PERSIST"],
            [b"DEL"], [b"EXISTS"], [b"MGET"], [b"SELECT"], [b"DBSIZE", k], [b"ECHO"],
            [b"FLUSHDB", b"SYNC", k], [b"FLUSHDB", k], [b"DECR"],
        ])

    def _unknown(self, index: int) -> list[bytes]:
        rng = self.rng
        name = rng.choice([b"HSET", b"LPUSH", b"SADD", b"GETEX", b"SETEX", b"X" + "".join(
            rng.choices(string.ascii_uppercase, k=7)).encode()])
        return [name, *self._keys(2)[: rng.randrange(3)]]

    def _refused(self, index: int) -> list[bytes]:
        return self.rng.choice([[b"KEYS", b"*"], [b"SCAN", b"0"], [b"SCAN", b"0", b"MATCH", b"k*"]])

    def _ping_echo(self, index: int) -> list[bytes]:
        if self.rng.random() < 0.5:
            return [self._cmd(b"PING"), *([self._value()] if self.rng.random() < 0.5 else [])]
        return [self._cmd(b"ECHO"), self._value()]


def workload(seed: int, n: int) -> Iterator[Op]:
    """The ``n`` operations of the run with ``seed``: the same seed gives the same operations
    (on one Python version). Operation 0 is ``FLUSHALL``."""
    return _Generator(seed).ops(n)
