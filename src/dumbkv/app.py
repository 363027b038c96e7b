"""The server process: open the store, serve, sweep expired keys, shut down in order.

Shutdown order on SIGINT/SIGTERM: stop accepting and stop reading from open connections, let
the commands already read finish (bounded by ``shutdown_timeout``: their writes commit; any not
started by then are answered with a server error), close the connections, close the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal

from .config import Config
from .crypto import Crypto
from .errors import DumbKVError
from .server import Server
from .session import ServerState
from .store import create_store

__all__ = ["run", "serve"]

log = logging.getLogger("dumbkv")


async def _sweep_forever(state: ServerState) -> None:
    while True:
        await asyncio.sleep(state.config.sweep_interval)
        try:
            removed = await state.store.sweep()
        except DumbKVError as exc:
            log.warning("expiry sweep failed: %s", exc.message)
            continue
        if removed:
            log.debug("expiry sweep removed %d keys", removed)


def _tune_gc() -> None:
    """Every command allocates a few short-lived objects that reference counting frees; at the
    default threshold (700 allocations) the cycle collector would run thousands of times a
    second under load and rescan every queued command. Collect less often, and never rescan
    what start-up built."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


async def serve(config: Config, stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set or SIGINT/SIGTERM arrives."""
    stop = stop or asyncio.Event()
    store = create_store(config.store, timeout=config.store_timeout)
    await store.open()
    secret = config.secret.encode() if config.secret else None
    state = ServerState(config=config, store=store, crypto=Crypto(secret))
    server = Server(state)
    await server.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    _tune_gc()
    sweeper = asyncio.create_task(_sweep_forever(state))
    log.info("dumbkv %s listening on %s (store %s)", state.version,
             ", ".join(server.addresses), store.backend)
    try:
        await stop.wait()
    finally:
        log.info("shutting down: no new connections")
        server.stop_accepting()
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        if not await server.drain(config.shutdown_timeout):
            log.warning("in-flight commands did not finish within %gs; the rest were refused",
                        config.shutdown_timeout)
        server.close_connections()
        await server.wait_closed()
        await store.close()
        log.info("stopped")


def run(config: Config) -> None:
    """Run ``serve`` on uvloop when it is installed, else on the default asyncio loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(config))
    else:
        uvloop.run(serve(config))
