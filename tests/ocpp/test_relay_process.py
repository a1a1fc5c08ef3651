"""The relay in its own process, as the service runs it: it keeps forwarding when the service stops
reading its events, the service starts it again when it dies, and a taken port fails the start with
a clear error."""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import signal
import socket
import time
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from api.app import create_app
from models.settings import RelaySettings
from models.tables import Role
from ocpp_link.relay_process import read_message, relay_main
from ocpp_link.simulator import run_scenario
from tests.foundation.helpers import LiveServer, add_user, client_for, free_port, login, relay_settings


async def answering_csms(ws: ServerConnection) -> None:
    """Answers every call with an empty CALLRESULT (StartTransaction with a transaction id)."""
    async for raw in ws:
        msg = json.loads(raw)
        body = {"transactionId": 7, "idTagInfo": {"status": "Accepted"}} if msg[2] == "StartTransaction" else {}
        await ws.send(json.dumps([3, msg[1], body]))


def meter_values(i: int) -> str:
    return json.dumps([2, f"m{i}", "MeterValues", {"connectorId": 1, "transactionId": 7, "meterValue": [
        {"timestamp": "2026-12-04T10:00:00Z", "sampledValue": [{"value": str(1000 + i)}]}]}])


def test_relay_process_keeps_forwarding_when_nobody_reads_its_events(arun: Any) -> None:
    """Fail-open across the process boundary: the parent never reads the event pipe, so after a small
    backlog the relay drops and counts events, and every call still gets its answer."""

    async def scenario() -> None:
        async with serve(answering_csms, "127.0.0.1", 0, subprotocols=["ocpp1.6"]) as csms:
            csms_port = csms.sockets[0].getsockname()[1]
            settings = RelaySettings(port=free_port(), upstreams=[{"pattern": "*", "url": f"ws://127.0.0.1:{csms_port}"}])
            ctx = mp.get_context("spawn")
            events_r, events_w = ctx.Pipe(duplex=False)
            control, control_child = ctx.Pipe()
            proc = ctx.Process(target=relay_main, args=(settings, "WARNING", events_w, control_child, 16 * 1024))
            proc.start()
            events_w.close()
            stream = os.fdopen(os.dup(events_r.fileno()), "rb")
            events_r.close()
            try:
                assert (await asyncio.to_thread(read_message, stream)) == ("ready", settings.port)
                # From here on nobody reads `stream`.
                url = f"ws://127.0.0.1:{settings.port}/ocpp/CP-BACKLOG"
                async with connect(url, subprotocols=["ocpp1.6"]) as ws:
                    for i in range(600):
                        await ws.send(meter_values(i))
                        answer = json.loads(await asyncio.wait_for(ws.recv(), 5))
                        assert answer[:2] == [3, f"m{i}"]
                # The charger's disconnect is one more event, emitted a moment after the socket closes:
                # take the counts once they stand still, so the end's count can be compared exactly.
                samples: dict = {}
                for _ in range(50):
                    control.send("metrics")
                    assert await asyncio.to_thread(control.poll, 10)
                    now = control.recv()
                    if now == samples:
                        break
                    samples = now
                    await asyncio.sleep(0.2)
                assert samples['baywarden_ocpp_relay_frames_forwarded_total{direction="cs_to_csms"}'] == 600
                emitted = samples["baywarden_ocpp_relay_events_emitted_total"]  # + connection events
                assert emitted >= 600
                dropped = samples["baywarden_ocpp_relay_events_dropped_total"]
                assert 0 < dropped < emitted  # the first ones went into the backlog, the rest were counted
                # Caught up at last: the backlog, then the end, which repeats the count.
                control.send("stop")
                messages = []
                while (message := await asyncio.to_thread(read_message, stream)) is not None:
                    messages.append(message)
                assert messages[-1] == ("stopped", dropped)
                stored = sum(len(m[1]) for m in messages if m[0] == "events")
                assert stored + dropped == emitted
            finally:
                with contextlib.suppress(OSError):  # gone already when it stopped above
                    control.send("stop")
                await asyncio.to_thread(proc.join, 15)
                stream.close()
            assert proc.exitcode == 0

    arun(scenario(), timeout=90)


def test_service_restarts_a_dead_relay_process(tmp_path: Any, sqlite_url: str, node_peers: Any, arun: Any) -> None:
    async def scenario() -> None:
        csms, csms_port = await node_peers.csms({"strict": True})
        try:
            settings = relay_settings(tmp_path, sqlite_url, f"ws://127.0.0.1:{csms_port}")
            client_for(settings)
            add_user(settings, "vic", Role.viewer)
            server = await asyncio.to_thread(LiveServer(settings, components=None).start)
            try:
                (relay,) = [c for c in server.server.config.app.state.ctx.started if c.name == "ocpp-relay"]
                first = relay._process.pid
                os.kill(first, signal.SIGKILL)
                deadline = time.monotonic() + 20
                while relay.restarts < 1:
                    assert time.monotonic() < deadline, "the relay process was not started again"
                    await asyncio.sleep(0.1)
                assert relay._process.pid != first
                # The new process relays and its events are stored.
                await run_scenario(f"ws://127.0.0.1:{settings.relay.port}/ocpp", "CP-AGAIN", "1.6", step_delay=0)
                with httpx.Client(base_url=server.url) as c:
                    login(c, "vic")
                    deadline = time.monotonic() + 20
                    while not c.get("/api/v1/transactions", params={"charge_point_id": "CP-AGAIN"}).json():
                        assert time.monotonic() < deadline, "no transaction stored after the restart"
                        await asyncio.sleep(0.2)
            finally:
                await asyncio.to_thread(server.stop)
        finally:
            await csms.stop()

    arun(scenario(), timeout=120)


def test_taken_relay_port_fails_the_start_clearly(tmp_path: Any, sqlite_url: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        settings = relay_settings(tmp_path, sqlite_url, "ws://127.0.0.1:1", port=port)
        client_for(settings)  # migrates
        client = TestClient(create_app(settings))  # the configured parts: the relay
        with pytest.raises(RuntimeError, match=f"relay did not start on 127.0.0.1:{port}: OSError"), client:
            pass
