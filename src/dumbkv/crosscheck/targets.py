"""What to check: a store URL (served in-process) or ``HOST:PORT`` of a running server on a
loopback address."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from ..config import redact_url

__all__ = ["Target", "parse_target"]


@dataclass(frozen=True, slots=True)
class Target:
    """What to check: a store URL (served in-process) or the address of a running server."""

    kind: Literal["store", "address"]
    text: str
    host: str = ""
    port: int = 0
    temporary: bool = False

    @property
    def label(self) -> str:
        return redact_url(self.text) if self.kind == "store" else self.text


def parse_target(text: str) -> Target:
    """``sqlite:///...`` / ``postgresql://...`` (a store) or ``HOST:PORT`` on loopback."""
    if "://" in text:
        from ..store import BACKENDS

        scheme = text.split("://", 1)[0].lower()
        if scheme not in BACKENDS:
            known = ", ".join(f"{s}://" for s in sorted(BACKENDS))
            raise ValueError(f"unsupported store URL scheme {scheme!r}; use one of {known}")
        return Target("store", text)
    host, sep, port_text = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"target {text!r} is neither a store URL (sqlite:///..., "
                         "postgresql://...) nor HOST:PORT")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise ValueError(f"target {text!r} is not on a loopback address: crosscheck starts "
                         "with FLUSHALL, so it only runs against servers on this machine "
                         "(127.0.0.1, ::1, localhost)")
    return Target("address", text, host, int(port_text))
