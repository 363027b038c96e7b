"""``dumbkv_maintenance`` on /metrics: 1 while a maintenance window is open, else 0.

The alerts silence what a declared window explains with ``unless on(instance)
dumbkv_maintenance == 1``, so the gauge must follow the window exactly: opened and closed over
the admin port, and still open after a restart inside the window (the ledger keeps it).
Real server processes, real HTTP, prometheus-client's own parser.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ServerProcess
from test_admin import Scrape, http

Factory = type[ServerProcess]
sqlite_only = pytest.mark.backends("sqlite")


def maintenance(server: ServerProcess) -> float:
    """The one ``dumbkv_maintenance`` sample of a fresh scrape (it has no labels)."""
    scrape = Scrape(server)
    assert scrape.families["dumbkv_maintenance"].type == "gauge"
    return scrape.value("dumbkv_maintenance")


@sqlite_only
def test_gauge_follows_the_maintenance_window(server: ServerProcess) -> None:
    assert maintenance(server) == 0.0

    status, _, _ = http("POST", server.admin_url + "/maintenance/start", b"")
    assert status == 202
    assert maintenance(server) == 1.0
    assert http("GET", server.admin_url + "/ready")[0] == 503  # the same window

    status, _, _ = http("POST", server.admin_url + "/maintenance/stop", b"")
    assert status == 200
    assert maintenance(server) == 0.0
    assert http("GET", server.admin_url + "/ready")[0] == 200


@sqlite_only
def test_gauge_stays_1_across_a_restart_inside_the_window(
    server_factory: Factory, tmp_path: Path
) -> None:
    first = server_factory(tmp_path).start()
    assert http("POST", first.admin_url + "/maintenance/start", b"")[0] == 202
    assert maintenance(first) == 1.0
    first.kill()  # no clean stop: the window is only in the ledger on disk

    second = server_factory(tmp_path).start()
    assert maintenance(second) == 1.0
    assert http("POST", second.admin_url + "/maintenance/stop", b"")[0] == 200
    assert maintenance(second) == 0.0


@sqlite_only
def test_refused_start_leaves_the_gauge_at_0(server_factory: Factory, tmp_path: Path) -> None:
    srv = server_factory(tmp_path, "--admin-token", "s3cret-token").start()
    assert http("POST", srv.admin_url + "/maintenance/start", b"")[0] == 401
    assert maintenance(srv) == 0.0
