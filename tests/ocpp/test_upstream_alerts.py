"""A CSMS the relay cannot reach raises one operator alert, live on open dashboards within 2 s; when it
answers again the alert is closed by the system and an info alert says so. Real app, real relay, real
SSE, a real websockets CSMS on the port that was closed."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from websockets.asyncio.server import serve

from models.tables import Role
from tests.foundation.helpers import LiveServer, add_user, client_for, free_port, listen_alerts, login, make_settings
from tests.ocpp.test_ocpp_relay import http_status


@pytest.fixture
def env(tmp_path: Any, db_url: str) -> Any:
    csms_port = free_port()
    settings = make_settings(
        tmp_path, db_url, port=free_port(),
        components={"api": True, "scheduler": False, "cameras": False, "enforcement": False, "relay": True},
        # Credentials in the upstream URL must never reach the alert.
        relay={"port": free_port(), "upstreams": [{"pattern": "*", "url": f"ws://csms:s3cret@127.0.0.1:{csms_port}/ocpp"}]},
    )
    client_for(settings)  # migrates
    add_user(settings, "vic", Role.viewer)
    server = LiveServer(settings, components=None).start()
    yield server, settings, csms_port
    server.stop()


def open_alerts(url: str) -> list[dict]:
    with httpx.Client(base_url=url, timeout=10) as viewer:
        login(viewer, "vic")
        return viewer.get("/api/v1/alerts", params={"open_only": True}).json()


def test_upstream_down_alerts_once_then_clears_when_it_answers(env: Any) -> None:
    server, settings, csms_port = env
    relay_port = settings.relay.port
    got: list[dict] = []
    ready = threading.Event()
    t = threading.Thread(target=listen_alerts, args=(server.url, 1, got, ready), daemon=True)
    t.start()
    assert ready.wait(10)

    started = datetime.now(UTC)
    assert asyncio.run(http_status(relay_port, "/ocpp/CP-1")) == 502  # nothing listens on the CSMS port
    t.join(10)
    assert (datetime.now(UTC) - started).total_seconds() < 2  # the product promise: within 2 s
    (alert,) = got
    assert alert["kind"] == "relay_upstream_down" and alert["severity"] == "critical"
    assert alert["subject"] == f"ws://***@127.0.0.1:{csms_port}/ocpp" and "s3cret" not in json.dumps(alert)

    # More chargers failing against the same upstream: still one alert.
    for cp in ("CP-2", "CP-3"):
        assert asyncio.run(http_status(relay_port, f"/ocpp/{cp}")) == 502
    time.sleep(1.0)
    assert [a["kind"] for a in open_alerts(server.url)] == ["relay_upstream_down"]

    # The CSMS comes up on that port: the next charger gets through and the alert closes itself.
    async def csms_up() -> int:
        async def handler(ws: Any) -> None:
            await ws.wait_closed()

        async with serve(handler, "127.0.0.1", csms_port, subprotocols=["ocpp1.6"]):  # type: ignore[list-item]
            return await http_status(relay_port, "/ocpp/CP-1")

    assert asyncio.run(csms_up()) == 101
    deadline = time.monotonic() + 10
    while open_alerts(server.url) and time.monotonic() < deadline:
        time.sleep(0.2)
    with httpx.Client(base_url=server.url, timeout=10) as viewer:
        login(viewer, "vic")
        rows = viewer.get("/api/v1/alerts").json()
    kinds = {a["kind"]: a for a in rows}
    assert set(kinds) == {"relay_upstream_down", "relay_upstream_up"}
    assert kinds["relay_upstream_down"]["acknowledged_by"] == "system"
    assert kinds["relay_upstream_up"]["severity"] == "info"
