"""Server commands: DBSIZE, FLUSHDB, FLUSHALL, INFO, CONFIG, COMMAND, TIME."""

from __future__ import annotations

import fnmatch
import os
import time

from .._compiled import request_path_compiled
from ..config import redact_url
from ..errors import SYNTAX, CommandError
from ..resp import Reply
from ..session import ServerState, Session
from ..store import KeyCount, Store
from .table import TABLE, Result, command


@command("dbsize", 1, "readonly", syntax="DBSIZE", summary="number of live keys in this database")
def dbsize(s: Session, argv: list[bytes]) -> Result:
    return s.state.store.count_op(s.db)


def _flush_mode(argv: list[bytes]) -> None:
    if len(argv) > 2 or (len(argv) == 2 and argv[1].upper() not in (b"ASYNC", b"SYNC")):
        raise CommandError(SYNTAX)


@command("flushdb", -1, "write", syntax="FLUSHDB [ASYNC | SYNC]",
         summary="delete every key of this database")
def flushdb(s: Session, argv: list[bytes]) -> Result:
    _flush_mode(argv)
    return s.state.store.flush_op(s.db)


@command("flushall", -1, "write", syntax="FLUSHALL [ASYNC | SYNC]",
         summary="delete every key of every database")
def flushall(s: Session, argv: list[bytes]) -> Result:
    _flush_mode(argv)
    return s.state.store.flush_op(None)


@command("time", 1, syntax="TIME", summary="server time: [seconds, microseconds]")
def time_(s: Session, argv: list[bytes]) -> Result:
    micros = time.time_ns() // 1000
    return [b"%d" % (micros // 1_000_000), b"%d" % (micros % 1_000_000)]


# --------------------------------------------------------------------------- CONFIG
def _config_values(state: ServerState) -> dict[str, str]:
    c = state.config
    return {
        "bind": c.host,
        "port": str(state.port or c.port),
        "databases": str(c.databases),
        "save": "",
        "appendonly": "no",
        "timeout": "0",  # no idle timeout, as in Redis's 0
    }


@command("config", -2, syntax="CONFIG GET parameter [parameter ...] | HELP",
         summary="read settings (glob patterns allowed); CONFIG SET is not supported",
         subcommands={"GET": -3, "HELP": 2, "SET": -4, "RESETSTAT": 2, "REWRITE": 2})
def config(s: Session, argv: list[bytes]) -> Result:
    sub = argv[1].upper()
    if sub == b"HELP":
        return _CONFIG_HELP
    if sub == b"GET":
        values = _config_values(s.state)
        found: dict[str, Reply] = {}
        for raw in argv[2:]:
            pattern = raw.decode("utf-8", "replace").lower()
            for name, value in values.items():
                if fnmatch.fnmatchcase(name, pattern):
                    found[name] = value.encode()
        return found
    raise CommandError(  # SET, RESETSTAT, REWRITE
        f"CONFIG {sub.decode()} is not supported: DumbKV is configured by flags and "
        "DUMBKV_* environment variables at start"
    )


_CONFIG_HELP: list[Reply] = [
    "CONFIG <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GET <pattern>",
    "    Return parameters matching the glob-like <pattern> and their values.",
    "HELP",
    "    Print this help.",
]


# --------------------------------------------------------------------------- COMMAND
@command("command", -1, syntax="COMMAND COUNT",
         summary="number of commands; other subcommands answer an error (clients fall back)")
def command_(s: Session, argv: list[bytes]) -> Result:
    if len(argv) == 2 and argv[1].upper() == b"COUNT":
        return len(TABLE)
    what = "COMMAND " + argv[1].decode("utf-8", "replace").upper() if len(argv) > 1 else (
        "COMMAND"
    )
    raise CommandError(f"{what[:140]} is not supported by DumbKV; see protocol.md")


# --------------------------------------------------------------------------- INFO
_SECTIONS = ("server", "clients", "stats", "store", "keyspace")
#: 1 when the request path runs as C extensions (setup.py), 0 when it runs as plain Python.
_COMPILED = int(request_path_compiled())


def _info_lines(state: ServerState, section: str, keyspace: dict[int, KeyCount]) -> list[str]:
    stats = state.stats
    uptime = int(time.monotonic() - state.started)
    store: Store = state.store
    if section == "server":
        return [
            f"dumbkv_version:{state.version}",
            f"dumbkv_compiled:{_COMPILED}",
            "redis_version:7.0.0",
            "redis_mode:standalone",
            f"process_id:{os.getpid()}",
            f"tcp_port:{state.port or state.config.port}",
            f"uptime_in_seconds:{uptime}",
            f"uptime_in_days:{uptime // 86400}",
        ]
    if section == "clients":
        return [f"connected_clients:{stats.connections_active}"]
    if section == "stats":
        return [
            f"total_connections_received:{stats.connections_total}",
            f"total_commands_processed:{sum(stats.commands.values())}",
            f"total_net_input_bytes:{stats.bytes_in}",
            f"total_net_output_bytes:{stats.bytes_out}",
            f"replies_ok:{stats.statuses['ok']}",
            f"replies_client_error:{stats.statuses['client_error']}",
            f"replies_server_error:{stats.statuses['server_error']}",
            f"protocol_errors:{stats.protocol_errors}",
        ]
    if section == "store":
        return [
            f"store_backend:{store.backend}",
            f"store_url:{redact_url(store.url)}",
            f"store_timeout_seconds:{store.timeout:g}",
        ]
    return [
        f"db{db}:keys={n.keys},expires={n.expires},avg_ttl=0"
        for db, n in sorted(keyspace.items())
        if n.keys
    ]


def _render(state: ServerState, sections: list[str], keyspace: dict[int, KeyCount]) -> bytes:
    blocks = []
    for section in sections:
        lines = _info_lines(state, section, keyspace)
        blocks.append("\r\n".join([f"# {section.capitalize()}", *lines]))
    return ("\r\n\r\n".join(blocks) + "\r\n").encode() if blocks else b""


@command("info", -1, syntax="INFO [section ...]",
         summary="server, clients, stats, store and keyspace facts as text")
def info(s: Session, argv: list[bytes]) -> Result:
    asked = [a.decode("utf-8", "replace").lower() for a in argv[1:]]
    if not asked or any(a in ("all", "everything", "default") for a in asked):
        sections = list(_SECTIONS)
    else:
        sections = [sec for sec in _SECTIONS if sec in asked or (
            sec == "store" and "persistence" in asked
        )]
    state = s.state
    if "keyspace" not in sections:
        return _render(state, sections, {})

    return state.store.keyspace_op(lambda counts: _render(state, sections, counts))
