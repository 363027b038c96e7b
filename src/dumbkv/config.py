"""One typed configuration: command-line flags > ``DUMBKV_*`` environment > defaults.

Every setting is declared once in ``SETTINGS``; the ``serve`` flags, their environment
variables and the README's configuration table all come from it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

__all__ = [
    "SETTINGS",
    "Config",
    "Setting",
    "add_arguments",
    "from_args",
    "non_negative_int",
    "non_negative_seconds",
    "positive_int",
    "redact_url",
    "seconds",
]

DEFAULT_STORE = "sqlite:///./dumbkv-data/dumbkv.db"


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    port: int = 7379
    admin_host: str = "127.0.0.1"
    admin_port: int = 7380
    store: str = DEFAULT_STORE
    databases: int = 16
    requirepass: str | None = None
    secret: str | None = None
    store_timeout: float = 5.0
    shutdown_timeout: float = 10.0
    shutdown_delay: float = 0.0
    sweep_interval: float = 1.0
    log_level: str = "info"
    log_format: str = "text"
    data_dir: str = "./dumbkv-data"
    heartbeat_interval: float = 5.0
    startup_exclusion: float = 30.0
    admin_token: str | None = None


@dataclass(frozen=True)
class Setting:
    name: str
    type: Callable[[str], Any]
    help: str
    choices: tuple[str, ...] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return "DUMBKV_" + self.name.upper()


def redact_url(url: str) -> str:
    """``url`` without its passwords (``user:***@host``, ``?password=***``, also
    ``sslpassword``), for INFO, logs and crosscheck and bench reports."""
    parts = urlsplit(url)
    if parts.password is not None:
        host = parts.netloc.rsplit("@", 1)[-1]
        url = url.replace(parts.netloc, f"{parts.username or ''}:***@{host}", 1)
    pairs = parse_qsl(parts.query, keep_blank_values=True)  # names decoded: %70assword too
    if any("password" in name.lower() for name, _ in pairs):
        query = [(name, "***" if "password" in name.lower() else value) for name, value in pairs]
        url = url.replace("?" + parts.query, "?" + urlencode(query, safe="*/"), 1)
    return url


# Argument types (argparse ``type=``): for the settings and for the crosscheck flags.
def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be 0 or more")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError("must be 0..65535 (0 picks a free port)")
    return value


def seconds(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def non_negative_seconds(text: str) -> float:
    value = float(text)
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("must be 0 or more seconds")
    return value


SETTINGS: tuple[Setting, ...] = (
    Setting("host", str, "address to listen on"),
    Setting("port", _port, "RESP port (0 picks a free one and logs it)"),
    Setting("admin_host", str, "address of the admin HTTP port (health, readiness, metrics)"),
    Setting("admin_port", _port, "admin HTTP port (0 picks a free one and logs it)"),
    Setting("store", str, "store URL: sqlite:///path/to/file.db or postgresql://user@host/db"),
    Setting("databases", positive_int, "number of databases for SELECT"),
    Setting("requirepass", str, "password clients must send with AUTH (default: none)"),
    Setting("secret", str, "server pepper: key ids become HMAC-SHA-256(secret, key)"),
    Setting("store_timeout", seconds, "seconds before a store call fails with SERVERERR"),
    Setting("shutdown_timeout", seconds, "seconds in-flight commands get to finish on stop"),
    Setting("shutdown_delay", non_negative_seconds,
            "seconds to stay up but unready on stop before closing the RESP port"),
    Setting("sweep_interval", seconds, "seconds between sweeps of expired keys"),
    Setting("log_level", str, "log level", ("debug", "info", "warning", "error")),
    Setting("log_format", str, "log line format", ("text", "json")),
    Setting("data_dir", str, "directory of the availability ledger (availability.log)"),
    Setting("heartbeat_interval", seconds, "seconds between the ledger's heartbeats"),
    Setting("startup_exclusion", non_negative_seconds,
            "seconds after each start left out of the availability figures"),
    Setting("admin_token", str, "token the admin port's maintenance endpoints and POST "
            "/crosscheck require (Authorization: Bearer <token>; default: none required)"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per setting; unset flags stay None so the environment can fill them."""
    defaults = Config()
    for s in SETTINGS:
        parser.add_argument(
            s.flag,
            type=s.type,
            choices=s.choices,
            default=None,
            help=f"{s.help} [env {s.env}, default {getattr(defaults, s.name)!r}]",
        )


def from_args(args: argparse.Namespace, environ: Mapping[str, str] | None = None) -> Config:
    """Build the Config: a flag wins over its environment variable, which wins over the default."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    by_name = {s.name: s for s in SETTINGS}
    for f in fields(Config):
        setting = by_name[f.name]
        flag_value = getattr(args, f.name, None)
        if flag_value is not None:
            values[f.name] = flag_value
        elif setting.env in env and env[setting.env] != "":
            try:
                values[f.name] = setting.type(env[setting.env])
            except (ValueError, argparse.ArgumentTypeError) as exc:
                raise SystemExit(f"dumbkv: invalid {setting.env}: {exc}") from None
            if setting.choices and values[f.name] not in setting.choices:
                raise SystemExit(f"dumbkv: {setting.env} must be one of {setting.choices}")
    return Config(**values)
