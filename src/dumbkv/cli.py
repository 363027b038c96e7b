"""The ``dumbkv`` command line."""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.parse
from typing import Any

from . import __version__
from .config import add_arguments, from_args
from .crosscheck import add_arguments as add_crosscheck_arguments
from .errors import DumbKVError
from .httpclient import admin_token, http_request
from .logs import setup_logging
from .shell.options import add_arguments as add_shell_arguments
from .slo import add_arguments as add_slo_arguments

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dumbkv", description=__doc__)
    parser.add_argument("--version", action="version", version=f"dumbkv {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server",
                           description="Run the DumbKV server (flags > DUMBKV_* env > defaults).")
    add_arguments(serve)
    crosscheck = sub.add_parser(
        "crosscheck", help="compare two stores or servers on one seeded workload",
        description="Run one seeded random workload against two targets and compare the "
                    "replies one by one. Exit code 0: at least 99 % identical and failure "
                    "rates within 2 points; 1: not; 2: the run could not start.",
    )
    add_crosscheck_arguments(crosscheck)
    slo = sub.add_parser(
        "slo", help="the SLO table of a running server",
        description="Print each SLO of the sheet for a running server: target, measured value, "
                    "met / not met and error budget left, from its admin port (since the "
                    "process started) or from Prometheus (--prometheus, over --window). "
                    "Exit code 0: every objective with data met; 1: one is not; 2: the source "
                    "cannot be read.",
    )
    add_slo_arguments(slo)
    maintenance = sub.add_parser(
        "maintenance", help="open, close or show a maintenance window of a running server",
        description="Open (start), close (stop) or show (status) the maintenance window of a "
                    "running server through its admin port. While a window is open /ready "
                    "answers 503 and the time is left out of availability. Exit code 0: done; "
                    "1: the server could not be reached or refused.",
    )
    _add_maintenance_arguments(maintenance)
    shell = sub.add_parser(
        "cli", help="an interactive shell like redis-cli", add_help=False,
        description="Talk to a running server like redis-cli: an interactive shell with "
                    "history, one command (dumbkv cli SET a b), or one command per line from "
                    "stdin. Exit code 0; 1: the server could not be reached, or (-e) an error "
                    "reply.",
    )
    add_shell_arguments(shell)
    return parser


# --------------------------------------------------------------------------- maintenance
DEFAULT_ADMIN = "http://127.0.0.1:7380"
_MAINTENANCE = {"start": ("POST", "/maintenance/start"), "stop": ("POST", "/maintenance/stop"),
                "status": ("GET", "/maintenance")}


def _add_maintenance_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=tuple(_MAINTENANCE),
                        help="start: open a window; stop: close it; status: show it")
    parser.add_argument("--admin", default=DEFAULT_ADMIN, metavar="URL",
                        help=f"the server's admin port (default {DEFAULT_ADMIN})")
    parser.add_argument("--token", default=None,
                        help="the server's --admin-token (default: $DUMBKV_ADMIN_TOKEN)")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                        help="HTTP timeout (default 10)")
    parser.add_argument("--json", action="store_true", help="print the server's JSON answer")


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000))


def _maintenance(args: argparse.Namespace) -> int:
    method, path = _MAINTENANCE[args.action]
    base = args.admin.rstrip("/")
    if urllib.parse.urlsplit(base).scheme not in ("http", "https"):
        print(f"dumbkv maintenance: not an http(s) URL: {args.admin!r}", file=sys.stderr)
        return 1
    token = admin_token(args.token)
    try:
        status, body = http_request(method, base + path, timeout=args.timeout, token=token)
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        print(f"dumbkv maintenance: cannot reach {base}: {reason}", file=sys.stderr)
        return 1
    try:
        answer: Any = json.loads(body)
    except ValueError:
        answer = None
    if status == 401:
        print(f"dumbkv maintenance: {base} wants the admin token (--token or "
              "DUMBKV_ADMIN_TOKEN)" + (": the one given was refused" if token else ""),
              file=sys.stderr)
        return 1
    if status not in (200, 202) or not isinstance(answer, dict) or "maintenance" not in answer:
        print(f"dumbkv maintenance: {method} {base + path} answered HTTP {status}: "
              f"{body[:200].decode('utf-8', 'replace')}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(answer))
        return 0
    since = answer.get("since")
    if answer["maintenance"] and isinstance(since, int):
        line = f"maintenance window open since {_when(since)}"
    elif answer["maintenance"]:
        line = "maintenance window open"
    else:
        line = "no maintenance window open"
    if args.action == "start":
        line += " (opened now)" if answer.get("changed") else " (it was open already)"
    elif args.action == "stop":
        line += " (closed now)" if answer.get("changed") else " (none was open)"
    print(line)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "crosscheck":
        from .crosscheck import main as crosscheck

        return crosscheck(args)
    if args.command == "slo":
        from .slo import main as slo

        return slo(args)
    if args.command == "maintenance":
        return _maintenance(args)
    if args.command == "cli":
        from .shell.main import main as shell

        return shell(args)
    if args.command == "serve":
        from .app import run

        config = from_args(args)
        setup_logging(config.log_level, config.log_format)
        try:
            run(config)
        except KeyboardInterrupt:
            pass
        except (OSError, ValueError, DumbKVError) as exc:
            print(f"dumbkv: {exc}", file=sys.stderr)
            return 1
    return 0
