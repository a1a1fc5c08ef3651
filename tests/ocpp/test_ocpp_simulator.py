"""The `ocpp`-package simulator against a strict ocpp-rpc CSMS, through the relay."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from ocpp_link.decoder import OcppDecoder
from ocpp_link.relay import OcppRelay, RelayConfig, Upstream
from ocpp_link.simulator import run_scenario

EXPECTED = {
    "1.6": [
        "connector_available",
        "transaction_started",
        "transaction_updated",
        "transaction_updated",
        "transaction_updated",
        "charging_idle",
        "transaction_ended",
        "charging_idle",
        "connector_available",
    ],
    "2.0.1": [
        "connector_available",
        "transaction_started",
        "transaction_updated",
        "transaction_updated",
        "transaction_updated",
        "transaction_updated",
        "charging_idle",
        "transaction_ended",
        "connector_available",
    ],
}


@pytest.mark.parametrize("version", ["1.6", "2.0.1"])
def test_plug_charge_idle_leave_through_relay(node_peers: Any, arun: Callable[..., Any], version: str) -> None:
    async def main() -> None:
        csms, port = await node_peers.csms({"callAfterBoot": True})
        events: list[Any] = []
        config = RelayConfig(upstreams=[Upstream("*", f"ws://127.0.0.1:{port}/ocpp")], port=0)
        async with OcppRelay(config, OcppDecoder(), events.extend) as relay:
            res = await run_scenario(
                f"ws://127.0.0.1:{relay.port}/ocpp",
                f"SIM-{version}",
                version,
                step_delay=0,
                meter_steps=2,
                password="pw",
            )
            await csms.wait_for(lambda x: x.get("ev") == "close")
            await csms.wait_for(lambda x: x.get("ev") == "callResult")
        await csms.stop()
        assert not csms.events("strict") and not csms.events("bad"), "the simulator broke the schema"
        assert res.transaction_id and res.steps[0] == "BootNotification"
        assert [e.kind for e in events] == ["charger_connection", *EXPECTED[version], "charger_connection"]
        assert {e.transaction_id for e in events if hasattr(e, "transaction_id")} == {res.transaction_id}

    arun(main())


def test_rejects_unknown_version_and_scenario(arun: Callable[..., Any]) -> None:
    with pytest.raises(ValueError):
        arun(run_scenario("ws://127.0.0.1:1/ocpp", "X", "1.5"))
    with pytest.raises(ValueError):
        arun(run_scenario("ws://127.0.0.1:1/ocpp", "X", "1.6", scenario="nope"))
