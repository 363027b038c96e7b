"""The admin HTTP port (aiohttp, on the server's event loop): health, readiness, metrics.

* ``GET /health``: liveness. 200 while the event loop answers; it never touches the store, so
  a dead database does not get the process restarted.
* ``GET /ready``: readiness. 200 when the store answers a trivial query within
  ``READY_TIMEOUT`` and the server is neither draining nor in a maintenance window; otherwise
  503 with the reasons.
* ``GET /metrics``: Prometheus text format.
* ``GET /``: the list of endpoints.
* ``GET /availability``: the availability ledger's figures (2 h and 7 d ratios, maintenance).
* ``POST /maintenance/start`` (202), ``POST /maintenance/stop`` (200), ``GET /maintenance``:
  declare a maintenance window (readiness turns 503; the time is left out of availability).
  Idempotent. With ``--admin-token``, they require ``Authorization: Bearer <token>`` (else 401).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .errors import DumbKVError
from .ledger import Ledger
from .session import ServerState

__all__ = ["READY_TIMEOUT", "AdminServer", "make_app"]

READY_TIMEOUT = 1.0
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_STATE = web.AppKey("state", ServerState)
_LEDGER = web.AppKey("ledger", Ledger)
log = logging.getLogger("dumbkv.admin")

ENDPOINTS = {
    "/health": "liveness: 200 while the event loop answers (never checks the store)",
    "/ready": "readiness: 200 when the store answers and the server is not draining",
    "/metrics": "Prometheus metrics",
    "POST /crosscheck": "store the figures of `dumbkv crosscheck --push` for /metrics",
}
LEDGER_ENDPOINTS = {
    "/availability": "the availability ledger: 2h and 7d ratios, maintenance, since (ms)",
    "/maintenance": "the maintenance window's state (token when --admin-token is set)",
    "POST /maintenance/start": "open a maintenance window: /ready answers 503, the time is "
                               "left out of availability (token when --admin-token is set)",
    "POST /maintenance/stop": "close the maintenance window (token when --admin-token is set)",
}


def _json(body: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(text=json.dumps(body), status=status, content_type="application/json")


@web.middleware
async def _observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count every admin request by path (known routes only) and status code."""
    started = time.perf_counter()
    route = request.match_info.route.resource
    path = route.canonical if route is not None else "other"
    code = 500
    try:
        response = await handler(request)
        code = response.status
        return response
    except web.HTTPException as exc:
        code = exc.status
        raise
    finally:
        metrics = request.app[_STATE].metrics
        metrics.admin_requests.labels(path, str(code)).inc()
        metrics.admin_duration.labels(path).observe(time.perf_counter() - started)


async def _index(request: web.Request) -> web.Response:
    endpoints = dict(ENDPOINTS)
    if _LEDGER in request.app:
        endpoints.update(LEDGER_ENDPOINTS)
    return _json({"service": "dumbkv", "endpoints": endpoints})


async def _health(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    return _json({
        "status": "ok",
        "version": state.version,
        "backend": state.store.backend,
        "uptime_seconds": round(time.monotonic() - state.started, 3),
    })


async def _ready(request: web.Request) -> web.Response:
    state = request.app[_STATE]
    reasons = []
    if state.starting is not None:
        reasons.append(state.starting)
    else:
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                await state.store.ping()
        except TimeoutError:
            reasons.append(f"store did not answer within {READY_TIMEOUT:g}s")
        except DumbKVError as exc:
            reasons.append(f"store: {exc.message}")
    # Checked after the ping: a shutdown that began while it waited must show.
    if state.draining:
        reasons.insert(0, "draining: the server is shutting down")
    if state.maintenance:
        reasons.insert(0, "maintenance window in progress")
    if reasons:
        return _json({"status": "unready", "reasons": reasons}, status=503)
    return _json({"status": "ready"})


_FIGURES = ("identical_ratio", "failure_rate_a", "failure_rate_b", "failure_rate_difference")


async def _crosscheck(request: web.Request) -> web.Response:
    """``dumbkv crosscheck --push`` sends its figures here; /metrics exports the last ones."""
    if not _authorized(request):
        return _unauthorized()
    try:
        body = await request.json()
        figures = {name: float(body[name]) for name in _FIGURES}
    except (ValueError, KeyError, TypeError):
        figures = {}
    if len(figures) != len(_FIGURES) or not all(0.0 <= v <= 1.0 for v in figures.values()):
        return _json({"error": f"expected a JSON object with numbers from 0 to 1 "
                               f"{list(_FIGURES)}"}, 400)
    metrics = request.app[_STATE].metrics
    for name, value in figures.items():
        metrics.crosscheck.labels(name).set(value)
    metrics.crosscheck_pushed_at = time.time()
    return _json({"status": "stored", "figures": figures})


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[_STATE].metrics.registry)
    # The content type goes in the headers: aiohttp refuses a charset in content_type=.
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


# ----------------------------------------------------------------- ledger and maintenance
def _authorized(request: web.Request) -> bool:
    """No ``--admin-token``: anyone on the admin port. Else ``Authorization: Bearer <token>``."""
    token = request.app[_STATE].config.admin_token
    if not token:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(),
                                                              token.encode())


def _unauthorized() -> web.Response:
    response = _json({"error": "this endpoint needs the admin token: send the header "
                               "'Authorization: Bearer <token>' (--admin-token)"}, 401)
    response.headers["WWW-Authenticate"] = 'Bearer realm="dumbkv-admin"'
    return response


def _maintenance_state(ledger: Ledger, changed: bool | None = None) -> dict[str, Any]:
    since = ledger.maintenance_since
    body: dict[str, Any] = {"maintenance": since is not None, "since": since}
    if changed is not None:
        body["changed"] = changed
    return body


async def _maintenance(request: web.Request) -> web.Response:
    if not _authorized(request):
        return _unauthorized()
    return _json(_maintenance_state(request.app[_LEDGER]))


async def _maintenance_start(request: web.Request) -> web.Response:
    if not _authorized(request):
        return _unauthorized()
    ledger, state = request.app[_LEDGER], request.app[_STATE]
    changed = await asyncio.to_thread(ledger.begin_maintenance)
    state.maintenance = ledger.maintenance
    if changed:
        log.warning("maintenance window opened: /ready answers 503, availability excludes it")
    return _json(_maintenance_state(ledger, changed), status=202)


async def _maintenance_stop(request: web.Request) -> web.Response:
    if not _authorized(request):
        return _unauthorized()
    ledger, state = request.app[_LEDGER], request.app[_STATE]
    changed = await asyncio.to_thread(ledger.end_maintenance)
    state.maintenance = ledger.maintenance
    if changed:
        log.warning("maintenance window closed")
    return _json(_maintenance_state(ledger, changed))


async def _availability(request: web.Request) -> web.Response:
    return _json(request.app[_LEDGER].report())


def make_app(state: ServerState, ledger: Ledger | None = None) -> web.Application:
    """The admin app; with ``ledger``, also /availability and the maintenance endpoints."""
    app = web.Application(middlewares=[_observe])
    app[_STATE] = state
    app.router.add_get("/", _index)
    app.router.add_get("/health", _health)
    app.router.add_get("/ready", _ready)
    app.router.add_get("/metrics", _metrics)
    app.router.add_post("/crosscheck", _crosscheck)
    if ledger is not None:
        app[_LEDGER] = ledger
        app.router.add_get("/availability", _availability)
        app.router.add_get("/maintenance", _maintenance)
        app.router.add_post("/maintenance/start", _maintenance_start)
        app.router.add_post("/maintenance/stop", _maintenance_stop)
    return app


class AdminServer:
    """The admin app on its own port (``--admin-host``/``--admin-port``; port 0 picks one)."""

    def __init__(self, state: ServerState, app: web.Application | None = None,
                 ledger: Ledger | None = None) -> None:
        self.state = state
        self._runner = web.AppRunner(app or make_app(state, ledger), access_log=None)
        self.addresses: list[str] = []

    async def start(self, host: str, port: int) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        self.addresses = [f"{a[0]}:{a[1]}" for a in self._runner.addresses]

    async def close(self) -> None:
        await self._runner.cleanup()
