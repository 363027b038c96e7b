"""Latency load generator: C connections send GET/SET over random keys; reports the SLO.

First every key of the keyspace is SET (MSET, before the clock starts; --no-fill skips it), so
GETs find values. Each connection (a dumbkv.AsyncClient with one connection) sends a batch of
-P commands as one pipeline (P=1: one at a time), waits for all replies, and
records the batch's send-to-last-reply time for each command in it. Runs for --seconds or until
-n commands, whichever comes first; commands still unanswered --timeout seconds after that count
as timeouts, with the time they waited as their (lower-bound) latency; so do the commands of a
connection that broke (lost), and a broken connection fails the verdict. Prints ops/s,
p50/p90/p99/max, error replies and the verdict "P90 < 1000 ms: PASS/FAIL" (exit code 0/1,
2 if it could not run; --no-fail turns FAIL into 0).

    .venv/bin/python bench/latency.py [--address HOST:PORT | --store URL | --reference]
        [-c 50] [-P 1] [--ratio-set 0.5] [-r 100000] [--seconds 10 | -n COUNT] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from _servers import (
    Endpoint,
    Server,
    ServerError,
    dumbkv_server,
    exit_on_sigterm,
    reference_server,
)

import dumbkv

EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2
CONNECT_TIMEOUT_S = 10.0
COUNT_MODE_MAX_SECONDS = 300.0


# --- workload --------------------------------------------------------------------------------


@dataclass
class Plan:
    """What to send and until when; hands out batches to the connections."""

    pipeline: int
    ratio_set: float
    keyspace: int
    value: bytes
    stop_at: float  # loop time after which no new batch starts
    remaining: int | None  # commands left to hand out, None = no count limit

    def next_batch(self, rng: random.Random, now: float) -> int:
        """How many commands the next batch holds (0: the plan is done)."""
        if now >= self.stop_at:
            return 0
        size = self.pipeline if self.remaining is None else min(self.pipeline, self.remaining)
        if self.remaining is not None:
            self.remaining -= size
        return size

    def queue(self, pipeline: dumbkv.AsyncPipeline, rng: random.Random) -> None:
        """Queue one random GET or SET."""
        key = b"key:%012d" % rng.randrange(self.keyspace)
        if rng.random() < self.ratio_set:
            pipeline.set(key, self.value)
        else:
            pipeline.get(key)


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)  # seconds, one per command
    error_replies: Counter[str] = field(default_factory=Counter)  # by first word, e.g. "ERR"
    timeouts: int = 0
    lost: int = 0  # sent on a connection that broke before their reply
    connection_errors: Counter[str] = field(default_factory=Counter)

    def record_batch(self, seconds: float, count: int, errors: list[str]) -> None:
        self.latencies.extend([seconds] * count)
        self.error_replies.update(e.split(" ", 1)[0] for e in errors)


async def run_connection(
    client: dumbkv.AsyncClient, plan: Plan, stats: Stats, rng: random.Random,
    hard_deadline: float,
) -> None:
    """Send batches (one pipeline each, on the client's one connection) until the plan runs
    out; stop at hard_deadline whatever happens."""
    loop = asyncio.get_running_loop()
    in_flight, sent_at = 0, 0.0
    try:
        async with asyncio.timeout_at(hard_deadline):
            while size := plan.next_batch(rng, loop.time()):
                async with client.pipeline() as batch:
                    for _ in range(size):
                        plan.queue(batch, rng)
                    in_flight, sent_at = size, time.perf_counter()
                    results = await batch.execute()
                errors = [r for r in results if isinstance(r, dumbkv.DumbKVError)]
                stats.record_batch(time.perf_counter() - sent_at, size,
                                   [f"{e.prefix} {e}" for e in errors])
                in_flight = 0
    except TimeoutError:
        stats.timeouts += in_flight
        stats.latencies.extend([time.perf_counter() - sent_at] * in_flight)
    except dumbkv.ConnectionError as exc:
        # The commands in flight got no reply: lost, with the time they waited. The
        # connection stops here, and the verdict fails (the server broke under the load).
        stats.connection_errors[type(exc).__name__] += 1
        stats.lost += in_flight
        stats.latencies.extend([time.perf_counter() - sent_at] * in_flight)
    finally:
        await client.close()


async def open_connections(endpoint: Endpoint, count: int, stats: Stats
                           ) -> list[dumbkv.AsyncClient]:
    """One client with one connection per simulated user, connected before the clock starts."""
    clients = [dumbkv.AsyncClient(endpoint.host, endpoint.port, max_connections=1,
                                  connect_timeout=CONNECT_TIMEOUT_S) for _ in range(count)]
    results = await asyncio.gather(*(client.connect() for client in clients),
                                   return_exceptions=True)
    connected = []
    for client, result in zip(clients, results, strict=True):
        if isinstance(result, BaseException):
            stats.connection_errors[type(result).__name__] += 1
            await client.close()
        else:
            connected.append(client)
    return connected


async def fill(client: dumbkv.AsyncClient, keyspace: int, value: bytes) -> None:
    """SET every key of the keyspace before the clock starts, so GETs find values (and the
    server decrypts them) instead of measuring misses."""
    chunk = 1000
    for first in range(0, keyspace, chunk):
        args: list[bytes] = []
        for i in range(first, min(first + chunk, keyspace)):
            args += [b"key:%012d" % i, value]
        reply = await client.execute_raw("MSET", *args)
        if reply != "OK":
            raise ServerError(f"filling the keyspace: MSET answered {reply!r}")


async def load(args: argparse.Namespace, endpoint: Endpoint) -> tuple[Stats, float]:
    """Run the workload; return the stats and the elapsed wall time in seconds."""
    stats = Stats()
    clients = await open_connections(endpoint, args.connections, stats)
    if not clients:
        raise ServerError(f"could not open any connection to {endpoint}")
    value = b"x" * args.data_size
    if args.fill and args.ratio_set < 1:
        try:
            async with asyncio.timeout(args.timeout):
                await fill(clients[0], args.keyspace, value)
        except TimeoutError:
            await asyncio.gather(*(client.close() for client in clients))
            raise ServerError(f"filling the keyspace took more than --timeout "
                              f"{args.timeout:g} s") from None
    loop = asyncio.get_running_loop()
    started = time.perf_counter()
    stop_at = loop.time() + args.seconds
    plan = Plan(args.pipeline, args.ratio_set, args.keyspace, value, stop_at, args.requests)
    seed = random.Random(args.seed)
    await asyncio.gather(*(
        run_connection(client, plan, stats, random.Random(seed.random()), stop_at + args.timeout)
        for client in clients
    ))
    return stats, time.perf_counter() - started


# --- report ----------------------------------------------------------------------------------


def percentile_ms(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (0 < q <= 1) of ascending seconds, in ms; None if empty."""
    if not sorted_values:
        return None
    return round(sorted_values[max(math.ceil(q * len(sorted_values)) - 1, 0)] * 1000, 3)


def summarize(args: argparse.Namespace, server: Server, stats: Stats, elapsed: float
              ) -> dict[str, Any]:
    values = sorted(stats.latencies)
    completed = len(values) - stats.timeouts - stats.lost
    latency_ms = {name: percentile_ms(values, q)
                  for name, q in (("p50", 0.50), ("p90", 0.90), ("p99", 0.99), ("max", 1.0))}
    p90 = latency_ms["p90"]
    connection_errors = sum(stats.connection_errors.values())
    passed = p90 is not None and p90 < args.slo_p90_ms and not connection_errors
    return {
        "target": str(server.endpoint), "server": server.description,
        "connections": args.connections, "pipeline": args.pipeline,
        "ratio_set": args.ratio_set, "keyspace": args.keyspace, "data_size": args.data_size,
        "filled": bool(args.fill and args.ratio_set < 1),
        "elapsed_s": round(elapsed, 3), "commands": completed,
        "ops_per_s": round(completed / elapsed, 1) if elapsed > 0 else 0.0,
        "latency_ms": latency_ms,
        "error_replies": sum(stats.error_replies.values()),
        "error_replies_by_prefix": dict(stats.error_replies),
        "timeouts": stats.timeouts,
        "lost": stats.lost,
        "connection_errors": dict(stats.connection_errors),
        "slo": {"p90_below_ms": args.slo_p90_ms, "pass": passed},
    }


def render(report: dict[str, Any]) -> Iterator[str]:
    lat = report["latency_ms"]
    by_prefix = ", ".join(f"{k} {v}" for k, v in report["error_replies_by_prefix"].items())
    conn_errors = sum(report["connection_errors"].values())
    yield f"target       {report['target']} ({report['server']})"
    yield (f"workload     {report['connections']} connections, pipeline {report['pipeline']}, "
           f"{report['ratio_set']:.0%} SET, keyspace {report['keyspace']}, "
           f"{report['data_size']}-byte values, {report['elapsed_s']:.1f} s"
           f"{', keyspace filled first' if report['filled'] else ''}")
    yield f"throughput   {report['ops_per_s']:,.0f} ops/s ({report['commands']} commands)"
    yield "latency ms   " + "  ".join(f"{name} {_ms(value)}" for name, value in lat.items())
    yield (f"errors       {report['error_replies']} error replies"
           f"{f' ({by_prefix})' if by_prefix else ''}, {report['timeouts']} timeouts, "
           f"{conn_errors} connection errors ({report['lost']} commands lost)")
    slo = report["slo"]
    why = " (connections broke)" if conn_errors and not slo["pass"] else ""
    yield (f"SLO          P90 < {slo['p90_below_ms']:g} ms: "
           f"{'PASS' if slo['pass'] else 'FAIL'}{why}")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


# --- command line ----------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="GET/SET latency load generator with SLO check.")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--address", help="load an already running server at HOST:PORT")
    target.add_argument("--store", help="store URL for the DumbKV we start (default: temp SQLite)")
    target.add_argument("--reference", action="store_true",
                        help="start and load bench/inmem_server.py instead of DumbKV")
    parser.add_argument("-c", "--connections", type=int, default=50)
    parser.add_argument("-P", "--pipeline", type=int, default=1, help="commands per batch")
    parser.add_argument("--ratio-set", type=float, default=0.5, help="fraction of SETs, 0..1")
    parser.add_argument("-r", "--keyspace", type=int, default=100_000)
    parser.add_argument("-d", "--data-size", type=int, default=3, help="SET value size, bytes")
    parser.add_argument("--seconds", type=float, default=None,
                        help=f"duration (default 10; with -n, at most {COUNT_MODE_MAX_SECONDS:g})")
    parser.add_argument("-n", "--requests", type=int, default=None, help="stop after N commands")
    parser.add_argument("--timeout", type=float, default=10.0,
                        help="seconds unanswered commands may take after the end")
    parser.add_argument("--slo-p90-ms", type=float, default=1000.0)
    parser.add_argument("--no-fill", dest="fill", action="store_false",
                        help="do not SET every key of the keyspace before the clock starts "
                             "(GETs then mostly miss)")
    parser.add_argument("--seed", type=int, default=None, help="seed for reproducible keys")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--no-fail", action="store_true", help="exit 0 even if the SLO fails")
    args = parser.parse_args(argv)
    if args.seconds is None:
        args.seconds = 10.0 if args.requests is None else COUNT_MODE_MAX_SECONDS
    if not 0.0 <= args.ratio_set <= 1.0 or min(args.connections, args.pipeline) < 1:
        parser.error("--ratio-set must be in 0..1, -c and -P at least 1")
    return args


@contextmanager
def target_server(args: argparse.Namespace) -> Iterator[Server]:
    if args.reference:
        with reference_server() as server:
            yield server
    else:
        with dumbkv_server(args.address, args.store) as server:
            yield server


def run_async(coro: Coroutine[Any, Any, tuple[Stats, float]]) -> tuple[Stats, float]:
    """Run on uvloop when it is installed, else on the default asyncio loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    try:
        with target_server(args) as server:
            stats, elapsed = run_async(load(args, server.endpoint))
    except (ServerError, OSError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        return 130
    report = summarize(args, server, stats, elapsed)
    print(json.dumps(report, indent=2) if args.json else "\n".join(render(report)))
    return EXIT_PASS if report["slo"]["pass"] or args.no_fail else EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
