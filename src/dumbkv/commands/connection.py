"""Connection commands: PING, ECHO, QUIT, SELECT, AUTH, HELLO, CLIENT."""

from __future__ import annotations

import hmac
import logging
import time

from ..errors import AuthError, CommandError
from ..resp import Reply
from ..session import Disconnect, Session
from .table import Result, command, int_arg

_WRONGPASS = "invalid username-password pair or user is disabled."


@command("ping", -1, syntax="PING [message]", summary="PONG, or the message")
def ping(s: Session, argv: list[bytes]) -> Result:
    if len(argv) > 2:
        raise CommandError("wrong number of arguments for 'ping' command")
    return argv[1] if len(argv) == 2 else "PONG"


@command("echo", 2, syntax="ECHO message", summary="the message")
def echo(s: Session, argv: list[bytes]) -> Result:
    return argv[1]


@command("quit", -1, "noauth", syntax="QUIT", summary="OK, then the server closes the connection")
def quit_(s: Session, argv: list[bytes]) -> Result:
    s.closing = True
    return "OK"


@command("select", 2, syntax="SELECT index", summary="switch to database index")
def select(s: Session, argv: list[bytes]) -> Result:
    index = int_arg(argv[1])
    if not -(2**31) <= index < 2**31:
        raise CommandError("value is out of range, value must between -2147483648 and 2147483647")
    if not 0 <= index < s.state.config.databases:
        raise CommandError("DB index is out of range")
    s.db = index
    return "OK"


def _check_password(s: Session, username: bytes | None, password: bytes) -> None:
    """Authenticate ``s``; ``username`` is None for the one-argument ``AUTH password`` form."""
    required = s.state.config.requirepass
    if required is None and username is None:
        raise CommandError(
            "AUTH <password> called without any password configured for the default user. "
            "Are you sure your configuration is correct?"
        )
    if username not in (None, b"default") or (
        required is not None and not hmac.compare_digest(password, required.encode())
    ):
        raise AuthError(_WRONGPASS, prefix="WRONGPASS")
    # Without requirepass the default user has no password: any password is accepted.
    s.authenticated = True


@command("auth", -2, "noauth", syntax="AUTH [username] password", summary="authenticate")
def auth(s: Session, argv: list[bytes]) -> Result:
    if len(argv) > 3:
        raise CommandError("syntax error")
    _check_password(s, argv[1] if len(argv) == 3 else None, argv[-1])
    return "OK"


@command("hello", -1, "noauth", syntax="HELLO [protover [AUTH username password] [SETNAME name]]",
         summary="switch protocol (2 or 3), optionally authenticate; server facts")
def hello(s: Session, argv: list[bytes]) -> Result:
    version = 2 if not s.resp3 else 3
    if len(argv) >= 2:
        try:
            version = int_arg(argv[1])
        except CommandError:
            raise CommandError("Protocol version is not an integer or out of range") from None
        if version not in (2, 3):
            raise CommandError("unsupported protocol version", prefix="NOPROTO")
    name: bytes | None = None
    credentials: tuple[bytes, bytes] | None = None
    i = 2
    while i < len(argv):
        opt = argv[i].upper()
        if opt == b"AUTH" and i + 2 < len(argv):
            credentials = argv[i + 1], argv[i + 2]  # checked once every option is read
            i += 3
        elif opt == b"SETNAME" and i + 1 < len(argv):
            name = _valid_name(argv[i + 1])
            i += 2
        else:
            sent = argv[i][:128].decode("utf-8", "replace")
            raise CommandError(f"Syntax error in HELLO option '{sent}'")
    if credentials is not None:
        _check_password(s, *credentials)
    if not s.authenticated:
        raise AuthError(
            "HELLO must be called with the client already authenticated, otherwise the HELLO "
            "<proto> AUTH <user> <pass> option can be used to authenticate the client and "
            "select the RESP protocol version at the same time",
            prefix="NOAUTH",
        )
    if name is not None:
        s.name = name or None
    s.resp3 = version == 3
    reply: dict[str, Reply] = {
        "server": b"dumbkv",
        "version": s.state.version.encode(),
        "proto": version,
        "id": s.id,
        "mode": b"standalone",
        "role": b"master",
        "modules": [],
    }
    return reply


def _valid_name(name: bytes) -> bytes:
    if any(c <= 32 or c >= 127 for c in name):
        raise CommandError(
            "Client names cannot contain spaces, newlines or special characters."
        )
    return name


log = logging.getLogger("dumbkv.server")
_last_http_warning = [0.0]


@command("post", -1, "noauth", syntax="POST ...",
         summary="closes the connection with no reply: HTTP sent to the RESP port")
@command("host:", -1, "noauth", syntax="Host: ...",
         summary="closes the connection with no reply: HTTP sent to the RESP port")
def http_request(s: Session, argv: list[bytes]) -> Result:
    """A browser tricked into POSTing to the RESP port (cross-protocol scripting) would have
    the request's body run as commands. Like Redis, close before reading any further."""
    now = time.monotonic()
    if now - _last_http_warning[0] > 60:  # at most once a minute
        _last_http_warning[0] = now
        log.warning("HTTP request (POST or Host:) on the RESP port: connection closed with "
                    "no reply, nothing after it was run (possible cross-protocol attack)")
    raise Disconnect


_CLIENT_HELP: list[Reply] = [
    "CLIENT <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "GETNAME",
    "    Return the name of the current connection.",
    "ID",
    "    Return the ID of the current connection.",
    "SETINFO <option> <value>",
    "    Accepted and ignored for LIB-NAME and LIB-VER.",
    "SETNAME <name>",
    "    Assign the name <name> to the current connection.",
    "HELP",
    "    Print this help.",
]


@command("client", -2, syntax="CLIENT SETNAME name | GETNAME | ID | SETINFO attr value | HELP",
         summary="connection name and id; SETINFO is accepted and ignored",
         subcommands={"SETNAME": 3, "GETNAME": 2, "ID": 2, "SETINFO": 4, "HELP": 2})
def client(s: Session, argv: list[bytes]) -> Result:
    sub = argv[1].upper()
    if sub == b"HELP":
        return _CLIENT_HELP
    if sub == b"SETNAME":
        s.name = _valid_name(argv[2]) or None
        return "OK"
    if sub == b"GETNAME":
        return s.name
    if sub == b"ID":
        return s.id
    if argv[2].upper() not in (b"LIB-NAME", b"LIB-VER"):  # SETINFO
        raise CommandError(f"Unrecognized option '{argv[2][:128].decode('utf-8', 'replace')}'")
    return "OK"
