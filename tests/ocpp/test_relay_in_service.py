"""The relay as a part of the running service: a simulated charger through it to a strict ocpp-rpc
CSMS; the decoded transaction becomes persisted charger state that the API shows and that survives
a restart."""

import asyncio
import time

import httpx
import pytest

from models.tables import Role
from ocpp_link.simulator import run_scenario
from tests.foundation.helpers import LiveServer, add_user, client_for, login, relay_settings


def wait_json(client: httpx.Client, path: str, pred, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(path).json()
        if pred(body):
            return body
        assert time.monotonic() < deadline, f"timed out waiting on {path}: {body}"
        time.sleep(0.2)


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_transaction_state_through_relay_survives_restart(tmp_path, sqlite_url, node_peers, arun, version):
    async def scenario() -> None:
        csms, csms_port = await node_peers.csms({"strict": True})
        settings = relay_settings(tmp_path, sqlite_url, f"ws://127.0.0.1:{csms_port}")
        client_for(settings)
        add_user(settings, "vic", Role.viewer)
        server = await asyncio.to_thread(LiveServer(settings, components=None).start)
        try:
            await run_scenario(f"ws://127.0.0.1:{settings.relay.port}/ocpp", "CP-SVC", version, step_delay=0)
            with httpx.Client(base_url=server.url) as c:
                login(c, "vic")
                chargers = await asyncio.to_thread(
                    wait_json, c, "/api/v1/chargers",
                    lambda b: b and not b[0]["connected"] and b[0]["connectors"]
                    and any(x["status"] == "Available" for x in b[0]["connectors"]),
                )
                txs = c.get("/api/v1/transactions", params={"charge_point_id": "CP-SVC"}).json()
                metrics = c.get("/metrics").text
        finally:
            await asyncio.to_thread(server.stop)
            await csms.stop()
        assert chargers[0]["id"] == "CP-SVC" and chargers[0]["protocol"] == f"ocpp{version}"
        assert chargers[0]["active_transactions"] == []
        (tx,) = txs
        assert tx["ended_at"] is not None and tx["energy_wh"] and tx["idle_since"] is not None
        # Labelled samples stay labels (not folded into the name), and every decoded event was stored.
        samples = {
            line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("baywarden_ocpp")
        }
        assert samples['baywarden_ocpp_relay_frames_forwarded_total{direction="cs_to_csms"}'] >= 10
        assert samples['baywarden_ocpp_relay_frames_forwarded_total{direction="csms_to_cs"}'] >= 10
        assert samples["baywarden_ocpp_events_stored_total"] == samples["baywarden_ocpp_relay_events_emitted_total"] > 0
        assert samples["baywarden_ocpp_events_lost_total"] == 0
        # A new service process on the same database still knows all of it.
        again = await asyncio.to_thread(LiveServer(settings).start)
        try:
            with httpx.Client(base_url=again.url) as c:
                login(c, "vic")
                assert c.get("/api/v1/transactions", params={"charge_point_id": "CP-SVC"}).json() == txs
        finally:
            await asyncio.to_thread(again.stop)

    arun(scenario(), timeout=90)
