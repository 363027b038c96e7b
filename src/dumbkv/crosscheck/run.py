"""The run: start or reach both targets, send them the workload, compare; and the command line
around it."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ..config import Config, non_negative_int, positive_int, seconds
from ..errors import DumbKVError
from ..httpclient import admin_token, http_request
from ..resp import ErrorReply
from .client import Client
from .compare import NoReply, is_ok, reply_status, same_result, show_reply
from .report import Difference, Report, TargetStats
from .targets import Target, parse_target
from .workload import workload

__all__ = ["DEFAULT_OPS", "RefusedError", "add_arguments", "crosscheck", "main"]

DEFAULT_OPS = 10_000


class RefusedError(Exception):
    """The run would not start (a target that would lose data, or could not be started)."""


async def _keys_held(client: Client) -> int:
    """How many keys the server holds over all databases (INFO keyspace)."""
    reply = await client.call((b"INFO", b"keyspace"))
    if isinstance(reply, NoReply | ErrorReply) or not isinstance(reply, bytes):
        raise RefusedError(f"could not read INFO keyspace: {show_reply(reply)}")
    return sum(int(m) for m in re.findall(rb"^db\d+:keys=(\d+)", reply, re.MULTILINE))


def _check_flushed(report: Report, *replies: object) -> None:
    """Operation 0 is FLUSHALL: a target that refuses it as a client error (a password is
    set, say) would fail every operation alike and pass; refuse to run instead. A server error
    or no reply is the target failing: that counts, as for any other operation."""
    for stats, reply in zip((report.a, report.b), replies, strict=True):
        if reply_status(reply) == "client_error":
            raise RefusedError(
                f"{stats.target} refused FLUSHALL: {show_reply(reply)}; the check needs "
                "targets that accept it (no password set)"
            )


async def crosscheck(
    a: Target,
    b: Target | None = None,
    *,
    n: int = DEFAULT_OPS,
    seed: int = 0,
    show: int = 10,
    allow_flush: bool = False,
    timeout: float = 10.0,
    progress: Callable[[int, int], None] | None = None,
) -> Report:
    """Run the workload against ``a`` and ``b`` (a temporary SQLite store when None) and
    compare. Raises ``RefusedError`` when the run cannot start."""
    from ..app import start_server, stop_server

    targets = [a, b] if b is not None else [None, a]
    for t in targets:
        if t is not None and t.kind == "address" and not allow_flush:
            raise RefusedError(
                f"{t.text} is a running server and the workload starts with FLUSHALL, which "
                "deletes every key in every database; pass --allow-flush if that is fine"
            )
    async with contextlib.AsyncExitStack() as stack:
        clients: list[Client] = []
        stats: list[TargetStats] = []
        for t in targets:
            if t is None:
                tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="dumbkv-xc-"))
                # Durability is beside the point for a throwaway file: no fsync per commit.
                url = f"sqlite:///{Path(tmp) / 'crosscheck.db'}?synchronous=normal"
                t = Target("store", url, temporary=True)
            if t.kind == "store":
                try:
                    server = await start_server(
                        Config(host="127.0.0.1", port=0, store=t.text)
                    )
                except (DumbKVError, OSError, ValueError) as exc:
                    message = exc.message if isinstance(exc, DumbKVError) else str(exc)
                    raise RefusedError(f"cannot start a server for {t.label}: {message}") from exc
                stack.push_async_callback(stop_server, server)
                host, port = "127.0.0.1", server.state.port
                where = ("temporary, " if t.temporary else "") + f"in-process on {host}:{port}"
            else:
                host, port, where = t.host, t.port, "running server"
            client = Client(host, port, timeout)
            stack.push_async_callback(client.close)
            if t.kind == "store" and not t.temporary and not allow_flush:
                held = await _keys_held(client)
                if held:
                    raise RefusedError(
                        f"{t.label} holds {held} keys and the workload starts with FLUSHALL, "
                        "which would delete them; pass --allow-flush if that is fine"
                    )
            clients.append(client)
            stats.append(TargetStats(t.label, where))

        report = Report(seed, n, stats[0], stats[1])
        started = time.perf_counter()
        ca, cb = clients
        for op in workload(seed, n):
            ra, rb = await asyncio.gather(ca.call(op.argv), cb.call(op.argv))
            if op.index == 0:
                _check_flushed(report, ra, rb)
            for client, st, reply in ((ca, report.a, ra), (cb, report.b, rb)):
                st.count(reply_status(reply))
                if op.name == "SELECT" and is_ok(reply):
                    client.db = int(op.argv[1])
            if same_result(op, ra, rb):
                report.identical += 1
            else:
                report.differing += 1
                if len(report.first_differences) < show:
                    report.first_differences.append(Difference(op, ra, rb))
            if progress is not None and (op.index + 1) % 1000 == 0:
                progress(op.index + 1, n)
        report.seconds = time.perf_counter() - started
        report.a.reconnects, report.b.reconnects = ca.reconnects, cb.reconnects
        # Leave the targets as found (empty, or given up with --allow-flush), so the next run
        # needs no --allow-flush. Best effort: the figures are already taken.
        await asyncio.gather(ca.call((b"FLUSHALL",)), cb.call((b"FLUSHALL",)))
        return report
    raise AssertionError("unreachable")  # pragma: no cover  (mypy: the stack may swallow)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "targets", nargs="*", metavar="TARGET",
        help="a store URL (sqlite:///..., postgresql://...), served in-process, or HOST:PORT "
             "of a running server on loopback; give one or two (with one, the other is a "
             "fresh temporary SQLite store)",
    )
    parser.add_argument("-n", type=positive_int, default=DEFAULT_OPS, metavar="N",
                        help=f"operations, the first being FLUSHALL (default {DEFAULT_OPS})")
    parser.add_argument("--seed", type=int, default=None,
                        help="workload seed (default: random, printed in the report)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object instead of the table")
    parser.add_argument("--show", type=non_negative_int, default=10, metavar="K",
                        help="how many of the first differing operations to show (default 10)")
    parser.add_argument("--allow-flush", action="store_true",
                        help="allow FLUSHALL on a running server given by address, or on a "
                             "store that holds keys")
    parser.add_argument("--timeout", type=seconds, default=10.0, metavar="SECONDS",
                        help="seconds an operation may take before it counts as a failure "
                             "(default 10)")
    parser.add_argument("--push", metavar="ADMIN_URL",
                        help="also send the figures to a running server's admin port "
                             "(e.g. http://127.0.0.1:7380), which exports them as "
                             "dumbkv_crosscheck{figure=...}")
    parser.add_argument("--token", default=None,
                        help="the admin token for --push, when the server has --admin-token "
                             "(default: $DUMBKV_ADMIN_TOKEN)")


_USAGE = "usage: dumbkv crosscheck [TARGET_A] [TARGET_B] [-n N] [--seed S] [--json] " \
         "[--show K] [--allow-flush] [--timeout SECONDS]"


def main(args: argparse.Namespace) -> int:
    """``dumbkv crosscheck``: 0 when the targets agree, 1 when they do not, 2 when the run
    could not start."""
    from ..app import run_loop
    from ..logs import setup_logging

    if not 1 <= len(args.targets) <= 2:
        got = "no target" if not args.targets else f"{len(args.targets)} targets"
        print(f"{_USAGE}\ndumbkv crosscheck: give one or two targets (got {got})",
              file=sys.stderr)
        return 2
    try:
        targets = [parse_target(text) for text in args.targets]
    except ValueError as exc:
        print(f"dumbkv crosscheck: {exc}", file=sys.stderr)
        return 2
    setup_logging("warning")  # what the in-process servers have to say about trouble
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    tty = sys.stderr.isatty()

    def progress(done: int, total: int) -> None:
        print(f"\r{done}/{total} operations", end="", file=sys.stderr, flush=True)

    try:
        report = run_loop(crosscheck(
            targets[0], targets[1] if len(targets) == 2 else None, n=args.n, seed=seed,
            show=args.show, allow_flush=args.allow_flush, timeout=args.timeout,
            progress=progress if tty else None,
        ))
    except RefusedError as exc:
        print(f"dumbkv crosscheck: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ndumbkv crosscheck: interrupted", file=sys.stderr)
        return 130
    if tty:
        print("\r" + " " * 40 + "\r", end="", file=sys.stderr)
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report.table())
    if args.push:
        token = admin_token(args.token)
        try:
            push_figures(args.push, report.figures(), token)
        except (OSError, ValueError) as exc:
            print(f"dumbkv crosscheck: could not push to {args.push}: {exc}", file=sys.stderr)
            return 2
    return report.exit_code


def push_figures(admin_url: str, figures: dict[str, float], token: str | None = None) -> None:
    """POST the figures to ``ADMIN_URL/crosscheck`` (the admin port keeps the last ones);
    raise ``OSError`` unless it stored them."""
    status, body = http_request("POST", admin_url.rstrip("/") + "/crosscheck", timeout=10,
                                token=token, data=json.dumps(figures).encode())
    if status != 200:
        detail = body.decode("utf-8", "replace").strip()[:200]
        raise OSError(f"HTTP {status}: {detail}")
