"""DumbKV on PostgreSQL against pgbench on the same PostgreSQL, side by side.

pgbench measures what the database itself does at the same concurrency: ``-S -M prepared``
(one primary-key select per transaction) and ``-N -M prepared`` (a short write transaction per
commit). DumbKV then serves redis-benchmark GET and SET from the same database. Targets:

* GET >= 0.5 x pgbench -S TPS   (a batched ``= ANY`` read, decrypt, reply)
* SET >= 2 x pgbench -N TPS     (group commit: many SETs share one transaction)

    .venv/bin/python bench/pg_compare.py --dsn postgresql://postgres@127.0.0.1:5432/bench

The database must exist; pgbench's tables (``pgbench_*``) and DumbKV's (``kv``,
``dumbkv_schema``) are created in it. Exit code: 0 PASS, 1 FAIL, 2 could not run.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
from urllib.parse import urlsplit

from _servers import ServerError, dumbkv_server, exit_on_sigterm
from compare import BenchmarkError, run_benchmark

TARGETS = {"get": ("-S", 0.5), "set": ("-N", 2.0)}
EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="DumbKV on PostgreSQL vs pgbench.")
    parser.add_argument("--dsn", required=True, help="postgresql://user@127.0.0.1:port/db")
    parser.add_argument("-c", "--clients", type=int, default=50)
    parser.add_argument("-n", "--requests", type=int, default=100_000,
                        help="redis-benchmark requests per test")
    parser.add_argument("-r", "--keyspace", type=int, default=100_000)
    parser.add_argument("-T", "--seconds", type=int, default=10, help="pgbench duration")
    parser.add_argument("--scale", type=int, default=10, help="pgbench -i scale")
    parser.add_argument("--run-timeout", type=float, default=300.0)
    parser.add_argument("--redis-benchmark", default="redis-benchmark")
    parser.add_argument("--no-fail", action="store_true", help="exit 0 even on FAIL")
    return parser.parse_args(argv)


def pgbench_binary() -> str:
    found = shutil.which("pgbench")
    if found:
        return found
    try:
        bindir = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                                check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        bindir = ""
    candidate = f"{bindir}/pgbench" if bindir else ""
    if candidate and shutil.which(candidate):
        return candidate
    raise BenchmarkError("pgbench not found (Debian: apt-get install postgresql-contrib)")


def pgbench_args(dsn: str) -> list[str]:
    parts = urlsplit(dsn)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise BenchmarkError("benchmarks only target loopback databases")
    args = ["-h", parts.hostname, "-p", str(parts.port or 5432)]
    if parts.username:
        args += ["-U", parts.username]
    return [*args, parts.path.lstrip("/") or "postgres"]


def pgbench_tps(binary: str, dsn: str, mode: str, args: argparse.Namespace) -> float:
    command = [binary, mode, "-M", "prepared", "-c", str(args.clients), "-j", "2",
               "-T", str(args.seconds), *pgbench_args(dsn)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=args.run_timeout,
                          check=False)
    match = re.search(r"tps = ([\d.]+)", done.stdout)
    if done.returncode != 0 or match is None:
        raise BenchmarkError(f"pgbench {mode} failed: {(done.stderr or done.stdout)[-300:]}")
    return float(match.group(1))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    try:
        binary = pgbench_binary()
        if shutil.which(args.redis_benchmark) is None:
            raise BenchmarkError("redis-benchmark not found (apt-get install redis-tools)")
        subprocess.run([binary, "-i", "-q", "-s", str(args.scale), *pgbench_args(args.dsn)],
                       capture_output=True, check=True, timeout=args.run_timeout)
        rows = []
        with dumbkv_server(store=args.dsn) as server:
            for test, (mode, factor) in TARGETS.items():
                tps = pgbench_tps(binary, args.dsn, mode, args)
                if test == "get":  # fill the keyspace first, so GETs find their keys
                    run_benchmark(args, server, "set", 1)
                ops = run_benchmark(args, server, test, 1).rps
                ratio = ops / tps
                rows.append((test, mode, tps, ops, ratio, factor, ratio >= factor))
    except (BenchmarkError, ServerError, subprocess.SubprocessError, OSError) as exc:
        print(f"verdict: could not run ({exc})")
        return EXIT_ERROR
    print(f"pgbench -M prepared -c {args.clients} -j 2 -T {args.seconds}; "
          f"redis-benchmark -c {args.clients} -r {args.keyspace} -n {args.requests}")
    print(f"{'test':<6}{'pgbench':<10}{'pg TPS':>10}{'dumbkv ops/s':>14}{'ratio':>8}"
          f"{'target':>9}  result")
    for test, mode, tps, ops, ratio, factor, ok in rows:
        print(f"{test.upper():<6}{mode:<10}{tps:>10,.0f}{ops:>14,.0f}{ratio:>8.2f}"
              f"{'>= ' + format(factor, 'g'):>9}  {'PASS' if ok else 'FAIL'}")
    failed = [f"{r[0].upper()} {r[4]:.2f} < {r[5]:g}" for r in rows if not r[6]]
    print("verdict: " + ("PASS" if not failed else "FAIL (" + "; ".join(failed) + ")"))
    return EXIT_PASS if not failed or args.no_fail else EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
