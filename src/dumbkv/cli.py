"""The ``dumbkv`` command line."""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .config import add_arguments, from_args
from .crosscheck import add_arguments as add_crosscheck_arguments
from .logs import setup_logging

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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "crosscheck":
        from .crosscheck import main as crosscheck

        return crosscheck(args)
    if args.command == "serve":
        from .app import run

        config = from_args(args)
        setup_logging(config.log_level, config.log_format)
        try:
            run(config)
        except KeyboardInterrupt:
            pass
        except (OSError, ValueError) as exc:
            print(f"dumbkv: {exc}", file=sys.stderr)
            return 1
    return 0
