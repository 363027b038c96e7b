"""``dumbkv cli``: its flags (redis-cli's) and its three modes.

- one-shot: ``dumbkv cli SET a b`` runs the command and exits;
- pipe: with stdin not a terminal and no command, one command per input line (like
  ``redis-cli < file``), no prompt;
- interactive: otherwise (see ``repl``).

Replies are printed as redis-cli prints them: the pretty form on a terminal, the raw form when
stdout is not a terminal; ``--raw`` / ``--no-raw`` choose. Exit codes: 0; 1 when the server
cannot be reached or a command's connection broke, or (with ``-e``, one-shot) on an error reply.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import IO

from ..client import Client, parse_url
from .options import AUTH_ENV
from .repl import interactive
from .session import Session

__all__ = ["main"]

_WARNING = ("Warning: Using a password with '-a' or '-u' option on the command line interface "
            "may not be safe.")


def _client(args: argparse.Namespace, err: IO[str]) -> Client | None:
    """The client the flags describe, or None (after a message) for a malformed URL.

    As redis-cli: ``-a`` beats the URL's password, and the environment's password is used only
    when neither gives one."""
    try:
        address = parse_url(args.url) if args.url is not None else None
    except ValueError as exc:
        err.write(f"Invalid URL: {exc}\n")
        return None
    given = args.password
    if given is None and address is not None:
        given = address.password
    if given is not None and not args.no_auth_warning:
        err.write(_WARNING + "\n")
    password = given if given is not None else os.environ.get(AUTH_ENV)
    if address is None:
        return Client(args.host, args.port, db=args.db or 0, password=password)
    db = address.db if args.db is None else args.db
    return Client(address.host, address.port, db=db, password=password)


def main(args: argparse.Namespace) -> int:
    """Run ``dumbkv cli`` with parsed arguments; returns the exit code."""
    out, err = sys.stdout.buffer, sys.stderr
    client = _client(args, err)
    if client is None:
        return 1
    raw = args.raw if args.raw is not None else not sys.stdout.isatty()
    session = Session(client, raw=raw, out=out, err=err)
    command = [arg.encode("utf-8", "surrogateescape") for arg in args.argv]
    if not command and sys.stdin.isatty():
        return interactive(session)
    try:
        if not session.connect():
            return 1
        if command:
            outcome = session.run(command, errors_to_stderr=args.exit_on_error)
            return 1 if outcome == "failed" or (outcome == "error" and args.exit_on_error) else 0
        return _pipe(session, sys.stdin.buffer)
    finally:
        session.close()


def _pipe(session: Session, lines: IO[bytes]) -> int:
    """One command per line until ``quit``/``exit`` or the end; 1 if any could not be sent."""
    failed = False
    for line in lines:
        outcome = session.line(line.rstrip(b"\r\n"))
        if outcome == "quit":
            break
        failed = failed or outcome == "failed"
    return 1 if failed else 0
