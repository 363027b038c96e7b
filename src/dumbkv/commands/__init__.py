"""Command lookup and dispatch: argv in, a reply or a store operation out."""

from __future__ import annotations

from ..errors import AuthError, CommandError
from ..session import Session
from . import connection, server, strings  # noqa: F401  (modules register their commands)
from .table import TABLE, Command, Result, unknown_subcommand

__all__ = ["TABLE", "Command", "Result", "dispatch", "lookup"]


def _unknown(argv: list[bytes]) -> CommandError:
    args = ""
    for arg in argv[1:]:
        if len(args) >= 128:
            break
        args += "'" + arg[: 128 - len(args)].decode("utf-8", "replace") + "' "
    name = argv[0][:128].decode("utf-8", "replace")
    return CommandError(f"unknown command '{name}', with args beginning with: {args}")


def lookup(argv: list[bytes]) -> Command:
    """The command for ``argv``; raises for an unknown command."""
    cmd = TABLE.get(argv[0].lower())
    if cmd is None:
        raise _unknown(argv)
    return cmd


def dispatch(session: Session, cmd: Command, argv: list[bytes]) -> Result:
    """Check arity (the subcommand's too) and authentication, then run ``cmd``'s handler."""
    if not cmd.min_argc <= len(argv) <= cmd.max_argc:
        raise CommandError(f"wrong number of arguments for '{cmd.name}' command")
    if cmd.subcommands is not None:
        bounds = cmd.subcommands.get(argv[1].upper())
        if bounds is None:
            raise unknown_subcommand(argv[1], cmd.name)
        if not bounds[0] <= len(argv) <= bounds[1]:
            sub = argv[1].decode("ascii").lower()  # a known subcommand: plain ASCII
            raise CommandError(f"wrong number of arguments for '{cmd.name}|{sub}' command")
    if not session.authenticated and not cmd.noauth:
        raise AuthError("Authentication required.", prefix="NOAUTH")
    return cmd.handler(session, argv)
