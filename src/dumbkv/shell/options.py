"""``dumbkv cli``'s flags: redis-cli's (``-h`` is the host; help is ``--help``)."""

from __future__ import annotations

import argparse

__all__ = ["AUTH_ENV", "HISTORY_ENV", "add_arguments"]

#: The password, when not given with ``-a`` (which shows it in the process list).
AUTH_ENV = "DUMBKV_CLI_AUTH"
#: The interactive history file (default ``~/.dumbkv_history``; ``/dev/null``: none).
HISTORY_ENV = "DUMBKV_CLI_HISTFILE"


def _port(text: str) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text} is not a port (0-65535)")
    return port


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """redis-cli's flags (the parser must be made with ``add_help=False``: ``-h`` is the host)."""
    parser.add_argument("--help", action="help", help="show this help and exit")
    parser.add_argument("-h", dest="host", default="127.0.0.1", metavar="HOST",
                        help="server host (default 127.0.0.1)")
    parser.add_argument("-p", dest="port", type=_port, default=7379, metavar="PORT",
                        help="server port (default 7379)")
    parser.add_argument("-a", "--pass", dest="password", default=None, metavar="PASSWORD",
                        help=f"password (safer: the {AUTH_ENV} environment variable)")
    parser.add_argument("-n", dest="db", type=int, default=None, metavar="DB",
                        help="database number (default 0)")
    parser.add_argument("-u", dest="url", default=None, metavar="URL",
                        help="dumbkv://[:password@]host[:port][/db]; -h and -p are then "
                             "ignored, -n and -a still apply")
    parser.add_argument("--raw", dest="raw", action="store_true", default=None,
                        help="print replies raw (the default when stdout is not a terminal)")
    parser.add_argument("--no-raw", dest="raw", action="store_false",
                        help="print replies formatted even when stdout is not a terminal")
    parser.add_argument("-e", dest="exit_on_error", action="store_true",
                        help="one-shot mode: exit with code 1 on an error reply")
    parser.add_argument("--no-auth-warning", action="store_true",
                        help="no warning for a password given on the command line")
    parser.add_argument("argv", nargs=argparse.REMAINDER, metavar="COMMAND ...",
                        help="run this one command and exit; without it, read commands from "
                             "stdin when it is not a terminal, else start the interactive "
                             f"shell (history in ~/.dumbkv_history or ${HISTORY_ENV})")


