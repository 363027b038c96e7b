"""The small HTTP client the command line uses to talk to an admin port or Prometheus."""

from __future__ import annotations

import http.client
import ipaddress
import os
import urllib.error
import urllib.parse
import urllib.request

__all__ = ["ADMIN_TOKEN_ENV", "admin_token", "http_request", "is_loopback"]


#: Where the command line finds the server's admin token when ``--token`` is not given.
ADMIN_TOKEN_ENV = "DUMBKV_ADMIN_TOKEN"


def admin_token(given: str | None) -> str | None:
    """``--token`` when given, else ``$DUMBKV_ADMIN_TOKEN`` (None: send no token)."""
    return given if given is not None else os.environ.get(ADMIN_TOKEN_ENV)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def http_request(method: str, url: str, *, timeout: float, token: str | None = None,
                 data: bytes | None = None) -> tuple[int, bytes]:
    """(status, body); an HTTP error status is returned, a failed connection raised
    (``OSError``/``ValueError``; ``ConnectionError`` when what answers does not speak
    HTTP). Proxy settings apply, except to loopback addresses."""
    if data is None and method == "POST":
        data = b""
    request = urllib.request.Request(url, method=method, data=data)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    host = urllib.parse.urlsplit(url).hostname or ""
    opener = (urllib.request.build_opener(urllib.request.ProxyHandler({}))
              if is_loopback(host) else urllib.request.build_opener())
    try:
        with opener.open(request, timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()
    except http.client.HTTPException as exc:  # not an HTTP server (the RESP port, say)
        raise ConnectionError(f"not an HTTP reply ({type(exc).__name__})") from None
