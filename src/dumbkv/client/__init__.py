"""The bundled DumbKV client: ``Client`` (blocking) and ``AsyncClient`` (asyncio, pooled).

Both share the command methods (``commands.Commands``), the reply conversion (``convert``),
the error table (``errormap``), the URL form (``url``) and the connection logic that is not
I/O (``core``); only the socket code differs (``sync``, ``aio``, ``pool``).
"""

from __future__ import annotations

from .aio import AsyncClient, AsyncPipeline
from .errormap import ERROR_CLASSES
from .pool import ConnectionPool
from .sync import Client, Pipeline
from .url import Address, parse_url

__all__ = ["ERROR_CLASSES", "Address", "AsyncClient", "AsyncPipeline", "Client",
           "ConnectionPool", "Pipeline", "parse_url"]
