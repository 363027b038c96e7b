"""DumbKV: a Redis-compatible key-value server for SRE training, and its Python client.

``dumbkv.Client`` (blocking) and ``dumbkv.AsyncClient`` (asyncio, pooled) talk to the server;
every exception they raise is a ``dumbkv.DumbKVError`` (tree in ``dumbkv.errors``).
"""

from __future__ import annotations

from . import _compiled  # noqa: F401  (first: a stale compiled module fails the import)
from .client import AsyncClient, AsyncPipeline, Client, Pipeline
from .errors import (
    AuthError,
    ClientError,
    CommandError,
    ConnectionError,
    DumbKVError,
    InvalidReplyError,
    ServerError,
    TimeoutError,
)

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "AsyncPipeline",
    "AuthError",
    "Client",
    "ClientError",
    "CommandError",
    "ConnectionError",
    "DumbKVError",
    "InvalidReplyError",
    "Pipeline",
    "ServerError",
    "TimeoutError",
    "__version__",
]
