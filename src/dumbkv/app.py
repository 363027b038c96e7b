"""The server process: open the store, serve, sweep expired keys, keep the availability
ledger, shut down in order.

Start order: signal handlers, the ledger's ``start`` and its heartbeat, the admin port; then
the store, tried again until it opens (live but not ready meanwhile); then the RESP port.

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
import traceback
from collections.abc import Coroutine
from typing import Any, TypeVar

from . import __version__
from .admin import AdminServer
from .config import Config, redact_url
from .crypto import Crypto
from .errors import DumbKVError, StoreError
from .heartbeat import Heartbeat, stall_limit
from .ledger import START, STOP, WINDOWS, Ledger
from .metrics import Metrics
from .server import Server
from .session import ServerState
from .store import create_store

__all__ = ["run", "run_loop", "serve", "start_server", "stop_server"]

log = logging.getLogger("dumbkv")

T = TypeVar("T")


async def _sweep_forever(state: ServerState) -> None:
    """Delete expired keys now and then; measure the store's size on the way."""
    while True:
        await asyncio.sleep(state.config.sweep_interval)
        try:
            state.store_size = await state.store.size_bytes()
            removed = await state.store.sweep()
        except DumbKVError as exc:
            log.warning("expiry sweep failed: %s", exc.message)
            continue
        except Exception as exc:  # a bug: the sweeper must not die, nor fail the shutdown
            # Frames only: the exception's message could quote a key or a value.
            log.error("expiry sweep failed: %s\n%s", type(exc).__name__,
                      "".join(traceback.format_tb(exc.__traceback__)))
            continue
        if removed:
            log.debug("expiry sweep removed %d keys", removed)


def open_ledger(config: Config) -> Ledger:
    """The data directory's availability ledger, read (and repaired if need be)."""
    return Ledger(config.data_dir, startup_ms=round(config.startup_exclusion * 1000),
                  max_gap_ms=round(stall_limit(config) * 1000)).open()


async def _close_ledger(admin: AdminServer, heartbeat: Heartbeat, ledger: Ledger,
                        timeout: float) -> None:
    """The end of a run: no more beats, the ``stop`` record, then the admin port (so /health
    answered up to the stop record)."""
    await heartbeat.stop(timeout)
    await asyncio.to_thread(ledger.record, STOP)
    ledger.close()
    await admin.close()


def _tune_gc() -> None:
    """Every command allocates a few short-lived objects that reference counting frees; at the
    default threshold (700 allocations) the cycle collector would run thousands of times a
    second under load and rescan every queued command. Collect less often, and never rescan
    what start-up built."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def _new_state(config: Config) -> ServerState:
    """The server's state around a store not yet opened (a malformed store URL raises)."""
    store = create_store(config.store, timeout=config.store_timeout)
    secret = config.secret.encode() if config.secret else None
    metrics = Metrics(store.backend, __version__)
    return ServerState(config=config, store=store, crypto=Crypto(secret), metrics=metrics)


async def _open_store(state: ServerState) -> None:
    try:
        await state.store.open()
    except DumbKVError as exc:
        raise StoreError(f"cannot open the store {redact_url(state.config.store)}: "
                         f"{exc.message}") from None


async def _listen(state: ServerState) -> Server:
    """Start listening on the RESP port over the opened store (closed again on failure)."""
    server = Server(state)
    try:
        await server.start()
    except BaseException:
        await state.store.close()
        raise
    return server


async def start_server(config: Config) -> Server:
    """Open the store for ``config`` and start listening: a running server without the
    process's extras (signals, the expiry sweeper). ``crosscheck`` runs its targets so."""
    state = _new_state(config)
    await _open_store(state)
    return await _listen(state)


async def _open_store_until(state: ServerState, stop: asyncio.Event) -> bool:
    """Open the store, trying again every store timeout while it cannot be opened (a database
    that is down, a file locked by another process): the process stays up, /health answers
    and /ready says why it is not ready, instead of exiting into a restart loop. False if
    ``stop`` came first."""
    failed = False
    while not stop.is_set():
        try:
            await _open_store(state)
        except StoreError as exc:
            if not failed:
                log.error("%s; trying again every %gs", exc.message, state.config.store_timeout)
            failed = True
            state.starting = f"store: {exc.message}"
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), state.config.store_timeout)
            continue
        if failed:
            log.info("store opened after all")
        return True
    return False


async def stop_server(server: Server) -> None:
    """The ordered shutdown: stop accepting and reading, let the commands already read finish
    (bounded by ``shutdown_timeout``), close the connections, close the store."""
    config = server.state.config
    server.stop_accepting()
    if not await server.drain(config.shutdown_timeout):
        log.warning("in-flight commands did not finish within %gs; the rest were refused",
                    config.shutdown_timeout)
    server.close_connections()
    await server.wait_closed()
    await server.state.store.close()


async def serve(config: Config, stop: asyncio.Event | None = None) -> None:
    """Serve until ``stop`` is set or SIGINT/SIGTERM arrives.

    The admin port comes up first; then the store is opened (tried again until it opens, see
    ``_open_store_until``) and the RESP port listens."""
    stop = stop or asyncio.Event()
    hurry = asyncio.Event()  # a second signal: no --shutdown-delay

    def on_signal() -> None:
        (hurry if stop.is_set() else stop).set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal)
    state = _new_state(config)
    state.starting = "starting: the store is being opened"
    ledger = await asyncio.to_thread(open_ledger, config)
    await asyncio.to_thread(ledger.record, START)
    state.maintenance = ledger.maintenance
    state.metrics.add_gauge(
        "dumbkv_availability_ratio",
        "Share of the window the server was up (the availability ledger: the first seconds "
        "after each start and maintenance windows excluded), by window: 2h, 7d. No sample "
        "while nothing in the window is counted.",
        ["window"],
        lambda: {(label,): ratio for label, ms in WINDOWS.items()
                 if (ratio := ledger.availability(ms)) is not None},
    )
    # Up from here on (/health answers), also while the store is being opened: beat.
    heartbeat = Heartbeat(ledger, config.heartbeat_interval, stall_limit(config))
    heartbeat.start()
    admin = AdminServer(state, ledger=ledger)
    try:
        await admin.start(config.admin_host, config.admin_port)
        log.info("admin listening on %s", ", ".join(admin.addresses))
        server = await _listen(state) if await _open_store_until(state, stop) else None
    except BaseException:
        await _close_ledger(admin, heartbeat, ledger, config.shutdown_timeout)
        raise
    if server is None:  # stopped before the store opened
        await _close_ledger(admin, heartbeat, ledger, config.shutdown_timeout)
        log.info("stopped")
        return
    state.starting = None  # the RESP port listens: ready
    _tune_gc()
    sweeper = asyncio.create_task(_sweep_forever(state))
    if state.maintenance:
        log.warning("a maintenance window is open (from before this start): /ready answers "
                    "503 until it is closed (dumbkv maintenance stop)")
    log.info("dumbkv %s listening on %s (store %s)", state.version,
             ", ".join(server.addresses), state.store.backend)
    try:
        await stop.wait()
    finally:
        # Readiness first, so the load balancer stops sending; then the data port; the admin
        # port last, so probes and metrics stay answerable until the very end.
        state.draining = True
        if config.shutdown_delay:
            # Load balancers see the 503 before the port closes (podinfo's pattern); a second
            # SIGTERM or Ctrl-C cuts it short.
            log.info("shutting down: unready; the RESP port closes in %gs",
                     config.shutdown_delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(hurry.wait(), config.shutdown_delay)
        log.info("shutting down: unready, no new connections")
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        try:
            await stop_server(server)
        finally:
            # Up until here: /health answered (and the heartbeat beat) throughout.
            await _close_ledger(admin, heartbeat, ledger, config.shutdown_timeout)
        log.info("stopped")


def run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run ``main`` on uvloop when it is installed, else on the default asyncio loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    result: T = uvloop.run(main)
    return result


def run(config: Config) -> None:
    """Run ``serve`` (on uvloop when it is installed)."""
    run_loop(serve(config))
