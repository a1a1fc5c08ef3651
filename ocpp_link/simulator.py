"""Charge point simulator on the `ocpp` package (1.6 and 2.0.1), for demos and end-to-end tests.

`run_scenario(url, cp_id, version, scenario, step_delay)` connects to ``{url}/{cp_id}``, plays a
scenario and closes. Pitfalls of `ocpp` 2.1.0 this module avoids: no ``await self.call()`` inside
an ``@on`` handler (it deadlocks the receive loop), and no handler named ``start`` (it would shadow
``ChargePoint.start``, the receive loop itself).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from base64 import b64encode
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from ocpp.routing import on
from ocpp.v16 import ChargePoint as ChargePoint16
from ocpp.v16 import call as call16
from ocpp.v16 import call_result as result16
from ocpp.v16 import datatypes as dt16
from ocpp.v201 import ChargePoint as ChargePoint201
from ocpp.v201 import call as call201
from ocpp.v201 import call_result as result201
from ocpp.v201 import datatypes as dt201
from websockets.asyncio.client import connect

log = logging.getLogger(__name__)

SCENARIOS = ("plug-charge-idle-leave",)
Version = Literal["1.6", "2.0.1"]
_SUBPROTOCOL = {"1.6": "ocpp1.6", "2.0.1": "ocpp2.0.1"}
ENERGY = "Energy.Active.Import.Register"


async def _call(cp: ChargePoint16 | ChargePoint201, payload: Any) -> Any:
    # suppress=False: a CALLERROR from the CSMS raises instead of returning None.
    return await cp.call(payload, suppress=False)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class ScenarioResult:
    charge_point_id: str
    version: str
    transaction_id: str | None = None
    steps: list[str] = field(default_factory=list)


class _Sim16(ChargePoint16):
    @on("GetConfiguration")
    def on_get_configuration(self, key: list[str] | None = None, **_: Any) -> result16.GetConfiguration:
        return result16.GetConfiguration(
            configuration_key=[{"key": "HeartbeatInterval", "readonly": False, "value": "300"}]
        )


class _Sim201(ChargePoint201):
    @on("GetVariables")
    def on_get_variables(self, get_variable_data: list[dict[str, Any]], **_: Any) -> result201.GetVariables:
        return result201.GetVariables(
            get_variable_result=[
                {
                    "attribute_status": "Accepted",
                    "component": d["component"],
                    "variable": d["variable"],
                    "attribute_value": "300",
                }
                for d in get_variable_data
            ]
        )


async def _plug_charge_idle_leave_16(
    cp: _Sim16, res: ScenarioResult, step: Callable[[str], Awaitable[None]], id_tag: str, meter_steps: int
) -> None:
    async def status(s: str) -> None:
        await _call(cp, call16.StatusNotification(connector_id=1, error_code="NoError", status=s, timestamp=_now()))
        await step(f"StatusNotification {s}")

    await _call(cp, call16.BootNotification(charge_point_model="baywarden-sim", charge_point_vendor="Baywarden"))
    await step("BootNotification")
    await status("Available")
    await status("Preparing")
    started = await _call(cp, call16.StartTransaction(connector_id=1, id_tag=id_tag, meter_start=0, timestamp=_now()))
    tx = started.transaction_id
    res.transaction_id = str(tx)
    await step("StartTransaction")
    await status("Charging")
    for i in range(1, meter_steps + 1):
        mv = dt16.MeterValue(
            timestamp=_now(),
            sampled_value=[dt16.SampledValue(value=str(i * 1000), measurand=ENERGY, unit="Wh")],
        )
        await _call(cp, call16.MeterValues(connector_id=1, transaction_id=tx, meter_value=[mv]))
        await step("MeterValues")
    await status("SuspendedEV")
    await _call(
        cp,
        call16.StopTransaction(
            meter_stop=meter_steps * 1000, timestamp=_now(), transaction_id=tx, reason="EVDisconnected"
        ),
    )
    await step("StopTransaction")
    await status("Finishing")
    await status("Available")


async def _plug_charge_idle_leave_201(
    cp: _Sim201, res: ScenarioResult, step: Callable[[str], Awaitable[None]], id_tag: str, meter_steps: int
) -> None:
    tx_id = f"{cp.id}-{int(datetime.now(UTC).timestamp() * 1000)}"
    seq = 0

    def energy(wh: float, context: str) -> list[dt201.MeterValueType]:
        sv = dt201.SampledValueType(
            value=wh, context=context, measurand=ENERGY, unit_of_measure=dt201.UnitOfMeasureType(unit="Wh")
        )
        return [dt201.MeterValueType(timestamp=_now(), sampled_value=[sv])]

    async def tx_event(event_type: str, trigger: str, state: str | None, **extra: Any) -> None:
        nonlocal seq
        info = dt201.TransactionType(transaction_id=tx_id, charging_state=state, **extra.pop("info", {}))
        await _call(
            cp,
            call201.TransactionEvent(
                event_type=event_type,
                timestamp=_now(),
                trigger_reason=trigger,
                seq_no=seq,
                transaction_info=info,
                **extra,
            ),
        )
        seq += 1
        await step(f"TransactionEvent {event_type} {state or trigger}")

    async def status(s: str) -> None:
        await _call(cp, call201.StatusNotification(timestamp=_now(), connector_status=s, evse_id=1, connector_id=1))
        await step(f"StatusNotification {s}")

    await _call(
        cp,
        call201.BootNotification(
            charging_station=dt201.ChargingStationType(vendor_name="Baywarden", model="baywarden-sim"),
            reason="PowerUp",
        ),
    )
    await step("BootNotification")
    await status("Available")
    await status("Occupied")  # 2.0.1 has no Preparing: the cable is in
    res.transaction_id = tx_id
    await tx_event(
        "Started",
        "CablePluggedIn",
        "EVConnected",
        evse=dt201.EVSEType(id=1, connector_id=1),
        id_token=dt201.IdTokenType(id_token=id_tag, type="ISO14443"),
        meter_value=energy(0, "Transaction.Begin"),
    )
    await tx_event("Updated", "ChargingStateChanged", "Charging")
    for i in range(1, meter_steps + 1):
        await tx_event("Updated", "MeterValuePeriodic", None, meter_value=energy(i * 1000, "Sample.Periodic"))
    await tx_event("Updated", "ChargingStateChanged", "SuspendedEV")
    await tx_event(
        "Ended",
        "EVDeparted",
        "Idle",
        info={"stopped_reason": "EVDisconnected"},
        meter_value=energy(meter_steps * 1000, "Transaction.End"),
    )
    await status("Available")


async def run_scenario(
    url: str,
    cp_id: str,
    version: str,
    scenario: str = "plug-charge-idle-leave",
    step_delay: float = 1.0,
    *,
    id_tag: str = "SIM-0001",
    meter_steps: int = 3,
    password: str | None = None,
    open_timeout: float = 10.0,
    delays: dict[str, float] | None = None,
) -> ScenarioResult:
    """Connect as `cp_id` to `{url}/{cp_id}`, play `scenario`, close normally.

    `step_delay` seconds pass between steps (0 for tests); `delays` overrides the pause after named
    steps (e.g. {"StatusNotification SuspendedEV": 90} for a long idle). Raises on connection failure or when
    the CSMS rejects a step.
    """
    if version not in _SUBPROTOCOL:
        raise ValueError(f"version must be one of {sorted(_SUBPROTOCOL)}")
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {SCENARIOS}")
    endpoint = url.rstrip("/")
    if not endpoint.endswith("/" + cp_id):
        endpoint = f"{endpoint}/{cp_id}"
    headers = []
    if password is not None:  # OCPP security profile 1: basic auth with the charger id as user
        headers.append(("Authorization", "Basic " + b64encode(f"{cp_id}:{password}".encode()).decode()))
    res = ScenarioResult(cp_id, version)

    async def step(name: str) -> None:
        res.steps.append(name)
        log.info("sim %s: %s", cp_id, name)
        pause = (delays or {}).get(name, step_delay)
        if pause > 0:
            await asyncio.sleep(pause)

    async with connect(
        endpoint,
        subprotocols=[_SUBPROTOCOL[version]],  # type: ignore[list-item]
        additional_headers=headers,
        open_timeout=open_timeout,
        compression=None,
    ) as ws:
        if ws.subprotocol != _SUBPROTOCOL[version]:
            raise RuntimeError(f"CSMS chose subprotocol {ws.subprotocol!r}, wanted {_SUBPROTOCOL[version]}")
        cp: _Sim16 | _Sim201 = _Sim16(cp_id, ws) if version == "1.6" else _Sim201(cp_id, ws)
        receiver = asyncio.create_task(cp.start())
        try:
            if isinstance(cp, _Sim16):
                await _plug_charge_idle_leave_16(cp, res, step, id_tag, meter_steps)
            else:
                await _plug_charge_idle_leave_201(cp, res, step, id_tag, meter_steps)
        finally:
            receiver.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await receiver
    return res
