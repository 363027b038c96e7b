"""Compare DumbKV with the in-memory reference server under redis-benchmark, side by side.

For each pipeline depth (-P 1, then -P 16) and each test (SET first, then GET, so GETs hit keys
the SETs just wrote), redis-benchmark runs against the reference server and then DumbKV, back to
back, so both see the same machine conditions. Throughput ratios and DumbKV's p99 at -P 1 are
checked against the targets; the last line is the verdict, and the exit code says it too
(0 PASS, 1 FAIL, 2 could not run; --no-fail turns FAIL into 0).

    .venv/bin/python bench/compare.py [-n 200000] [--store URL | --address HOST:PORT]
"""

from __future__ import annotations

import argparse
import csv
import io
import shutil
import statistics
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass

from _servers import (
    Server,
    ServerError,
    build_of,
    dumbkv_server,
    exit_on_sigterm,
    reference_server,
)

TESTS = ("set", "get")  # SET first: it fills the keyspace the GET test then reads
PIPELINES = (1, 16)
RATIO_TARGETS = {("set", 1): 0.50, ("get", 1): 0.70, ("set", 16): 0.25, ("get", 16): 0.35}
P99_PIPELINE = 1
P99_TARGET_MS = 5.0
EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2


class BenchmarkError(RuntimeError):
    pass


@dataclass(frozen=True)
class Sample:
    rps: float
    p99_ms: float


Result = Sample | str  # a (median) sample, or why the benchmark failed


@dataclass(frozen=True)
class Check:
    test: str
    pipeline: int
    ref: str
    dumbkv: str
    ratio: str
    target: str
    passed: bool
    reason: str = ""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="DumbKV vs in-memory reference, redis-benchmark.")
    parser.add_argument("-n", "--requests", type=int, default=200_000, help="requests per run")
    parser.add_argument("-c", "--clients", type=int, default=50)
    parser.add_argument("-r", "--keyspace", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per server and test; the median is reported")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--store", help="store URL for the DumbKV we start (default: temp SQLite)")
    target.add_argument("--address", help="use an already running DumbKV at HOST:PORT (loopback)")
    parser.add_argument("--run-timeout", type=float, default=300.0,
                        help="seconds one redis-benchmark run may take")
    parser.add_argument("--redis-benchmark", default="redis-benchmark", help="binary to run")
    parser.add_argument("--no-fail", action="store_true", help="exit 0 even if the verdict is FAIL")
    return parser.parse_args(argv)


def benchmark_command(args: argparse.Namespace, server: Server, test: str, pipeline: int
                      ) -> list[str]:
    return [args.redis_benchmark, "-h", server.endpoint.host, "-p", str(server.endpoint.port),
            "-c", str(args.clients), "-r", str(args.keyspace), "-n", str(args.requests),
            "-t", test, "-P", str(pipeline), "--csv"]


def parse_csv(text: str, test: str) -> Sample:
    """Read one test's row from redis-benchmark --csv (Redis 7: rps, ..., p99_latency_ms)."""
    for row in csv.DictReader(io.StringIO(text)):
        if row.get("test", "").lower() == test:
            try:
                return Sample(float(row["rps"]), float(row["p99_latency_ms"]))
            except (KeyError, ValueError) as exc:
                raise BenchmarkError(f"unexpected CSV row {row}: {exc}") from exc
    raise BenchmarkError(f"no {test.upper()} row in output: {text.strip()[-300:]!r}")


def run_benchmark(args: argparse.Namespace, server: Server, test: str, pipeline: int) -> Sample:
    command = benchmark_command(args, server, test, pipeline)
    try:
        done = subprocess.run(command, capture_output=True, text=True, check=False,
                              timeout=args.run_timeout)
    except subprocess.TimeoutExpired as exc:
        raise BenchmarkError(f"timed out after {args.run_timeout:.0f} s") from exc
    if done.returncode != 0:
        lines = [line for line in (done.stderr + done.stdout).splitlines()
                 if line.strip() and "Could not fetch server CONFIG" not in line]
        detail = " | ".join(lines[-3:])[-300:] or "no output"
        raise BenchmarkError(f"redis-benchmark exited {done.returncode}: {detail}")
    return parse_csv(done.stdout, test)


def measure(args: argparse.Namespace, servers: list[Server], test: str, pipeline: int
            ) -> dict[str, Result]:
    """Run one test on every server, interleaved per repeat; median sample or an error text."""
    samples: dict[str, list[Sample]] = {s.name: [] for s in servers}
    errors: dict[str, str] = {}
    for repeat in range(args.repeat):
        order = servers if repeat % 2 == 0 else servers[::-1]
        for server in order:
            if server.name in errors:
                continue
            try:
                sample = run_benchmark(args, server, test, pipeline)
            except BenchmarkError as exc:
                errors[server.name] = _describe_failure(server, exc)
                progress(f"{test.upper():<4} -P {pipeline:<2} {server.name:<9} ERROR {exc}")
                continue
            samples[server.name].append(sample)
            progress(f"{test.upper():<4} -P {pipeline:<2} {server.name:<9} "
                     f"{sample.rps:>11,.0f} ops/s  p99 {sample.p99_ms:.3f} ms")
    return {name: errors.get(name) or _median(runs) for name, runs in samples.items()}


def _median(samples: list[Sample]) -> Sample:
    return Sample(statistics.median(s.rps for s in samples),
                  statistics.median(s.p99_ms for s in samples))


def _describe_failure(server: Server, exc: Exception) -> str:
    state = "" if server.alive() else " (server process has exited)"
    tail = server.log_tail(10)
    return f"{exc}{state}" + (f"\n  {server.name} log:\n{tail}" if tail else "")


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def throughput_check(test: str, pipeline: int, ref: Result, dkv: Result) -> Check:
    target = RATIO_TARGETS[(test, pipeline)]
    name, target_text = test.upper(), f">= {target:.2f}"
    if not isinstance(ref, Sample) or not isinstance(dkv, Sample):
        return Check(name, pipeline, _rps(ref), _rps(dkv), "-", target_text, False,
                     f"{name} -P {pipeline}: benchmark error")
    ratio = dkv.rps / ref.rps
    passed = ratio >= target
    reason = "" if passed else f"{name} -P {pipeline} ratio {ratio:.2f} < {target:.2f}"
    return Check(name, pipeline, _rps(ref), _rps(dkv), f"{ratio:.2f}", target_text, passed,
                 reason)


def p99_check(test: str, ref: Result, dkv: Result) -> Check:
    name, target_text = f"{test.upper()} p99 ms", f"<= {P99_TARGET_MS:.1f} ms"
    if not isinstance(dkv, Sample):
        return Check(name, P99_PIPELINE, _p99(ref), _p99(dkv), "-", target_text, False,
                     f"{test.upper()} p99: benchmark error")
    passed = dkv.p99_ms <= P99_TARGET_MS
    reason = "" if passed else f"{test.upper()} p99 {dkv.p99_ms:.2f} ms > {P99_TARGET_MS:.1f} ms"
    return Check(name, P99_PIPELINE, _p99(ref), _p99(dkv), "-", target_text, passed, reason)


def _rps(result: Result) -> str:
    return f"{result.rps:,.0f}" if isinstance(result, Sample) else "error"


def _p99(result: Result) -> str:
    return f"{result.p99_ms:.3f}" if isinstance(result, Sample) else "error"


def run_all(args: argparse.Namespace, ref: Server, dkv: Server) -> Iterator[Check]:
    """Run every test (pipeline-major, SET before GET) and yield the checks."""
    p99_results: dict[str, tuple[Result, Result]] = {}
    errors: list[str] = []
    for pipeline in PIPELINES:
        for test in TESTS:
            result = measure(args, [ref, dkv], test, pipeline)
            ref_sample, dkv_sample = result[ref.name], result[dkv.name]
            errors += [f"{name} {test.upper()} -P {pipeline}: {value}"
                       for name, value in result.items() if isinstance(value, str)]
            yield throughput_check(test, pipeline, ref_sample, dkv_sample)
            if pipeline == P99_PIPELINE:
                p99_results[test] = (ref_sample, dkv_sample)
    for test, (ref_sample, dkv_sample) in p99_results.items():
        yield p99_check(test, ref_sample, dkv_sample)
    for error in errors:
        progress(f"error: {error}")


def print_table(checks: list[Check]) -> None:
    header = ("test", "pipeline", "ref ops/s", "dumbkv ops/s", "ratio", "target", "result")
    rows = [(c.test, f"-P {c.pipeline}", c.ref, c.dumbkv, c.ratio, c.target,
             "PASS" if c.passed else "FAIL") for c in checks]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    print("(p99 rows: ref and dumbkv columns are p99 latency in ms at -P 1)")


def verdict(checks: list[Check]) -> tuple[str, int]:
    failed = [c.reason for c in checks if not c.passed]
    if failed:
        return f"verdict: FAIL ({'; '.join(failed)})", EXIT_FAIL
    return "verdict: PASS", EXIT_PASS


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    exit_on_sigterm()
    if shutil.which(args.redis_benchmark) is None:
        print(f"error: {args.redis_benchmark} not found; install it: apt-get install redis-tools")
        print("verdict: FAIL (redis-benchmark missing)")
        return EXIT_ERROR
    try:
        with ExitStack() as stack:
            ref = stack.enter_context(reference_server())
            dkv = stack.enter_context(dumbkv_server(args.address, args.store))
            print(f"reference: {ref.endpoint} ({ref.description})")
            print(f"dumbkv:    {dkv.endpoint} ({dkv.description}; {build_of(dkv.endpoint)})")
            print(f"redis-benchmark -c {args.clients} -r {args.keyspace} -n {args.requests}, "
                  f"repeat {args.repeat}; SET runs before GET so GETs hit existing keys")
            checks = list(run_all(args, ref, dkv))
    except ServerError as exc:
        print(f"error: {exc}")
        print("verdict: FAIL (a server could not be started or reached)")
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        return 130
    print_table(checks)
    line, code = verdict(checks)
    print(line)
    return EXIT_PASS if args.no_fail else code


if __name__ == "__main__":
    sys.exit(main())
