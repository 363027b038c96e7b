"""``dumbkv://[:password@]host[:port][/db]``: the client's connection URL."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "Address", "parse_url"]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 7379


@dataclass(frozen=True)
class Address:
    """Where to connect and as whom: what a URL says."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    db: int = 0
    password: str | None = None


def parse_url(url: str) -> Address:
    """Parse ``dumbkv://[:password@]host[:port][/db]`` (the password percent-encoded).

    The user name, if given, must be ``default`` (the only user). Raises ``ValueError`` for any
    other form, without repeating the password."""
    try:
        parts = urlsplit(url)
        parts.hostname  # noqa: B018 (checks the host part too)
    except ValueError:  # its message would quote the password
        raise ValueError("not a valid DumbKV URL (dumbkv://[:password@]host[:port][/db])") from None
    if parts.scheme != "dumbkv":
        raise ValueError("a DumbKV URL starts with dumbkv://")
    if parts.query or parts.fragment:
        raise ValueError("a DumbKV URL has no query or fragment")
    if parts.username not in (None, "", "default"):
        raise ValueError("the only user is 'default'")
    try:
        port = parts.port
    except ValueError:
        raise ValueError("the port in a DumbKV URL must be a number from 0 to 65535") from None
    path = parts.path.removeprefix("/")
    if path and not (path.isascii() and path.isdigit()):
        raise ValueError("the database in a DumbKV URL must be a number (0-9 digits)")
    password = unquote(parts.password) if parts.password is not None else None
    return Address(
        host=parts.hostname or DEFAULT_HOST,
        port=DEFAULT_PORT if port is None else port,
        db=int(path) if path else 0,
        password=password or None,
    )
