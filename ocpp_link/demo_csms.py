"""A minimal CSMS for demos and end-to-end tests: accepts every charger and answers OCPP-J 1.6 and
2.0.1 calls with valid, permissive responses (it is the far end of the relay, not a product)."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from datetime import UTC, datetime
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve

log = logging.getLogger(__name__)
_tx_ids = itertools.count(1001)


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def answer(protocol: str | None, action: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The response payload for one call (accept everything, hand out transaction ids)."""
    accepted = {"idTagInfo": {"status": "Accepted"}}
    if protocol == "ocpp2.0.1":
        table: dict[str, Any] = {
            "BootNotification": {"currentTime": _now(), "interval": 300, "status": "Accepted"},
            "Heartbeat": {"currentTime": _now()},
            "Authorize": {"idTokenInfo": {"status": "Accepted"}},
            "TransactionEvent": {"idTokenInfo": {"status": "Accepted"}} if payload.get("idToken") else {},
        }
    else:
        table = {
            "BootNotification": {"currentTime": _now(), "interval": 300, "status": "Accepted"},
            "Heartbeat": {"currentTime": _now()},
            "Authorize": accepted,
            "StartTransaction": {"transactionId": next(_tx_ids), **accepted},
            "StopTransaction": accepted,
        }
    return table.get(action, {})


class DemoCsms:
    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.host, self.port = host, port
        self.server: Server | None = None
        self.frames = 0

    async def _handle(self, conn: ServerConnection) -> None:
        protocol = conn.subprotocol
        async for raw in conn:
            self.frames += 1
            try:
                msg = json.loads(raw)
            except ValueError:
                continue
            if isinstance(msg, list) and len(msg) == 4 and msg[0] == 2:
                await conn.send(json.dumps([3, msg[1], answer(protocol, msg[2], msg[3])]))

    async def start(self) -> int:
        self.server = await serve(
            self._handle, self.host, self.port, subprotocols=["ocpp2.0.1", "ocpp1.6"], compression=None
        )  # type: ignore[list-item]
        self.port = self.server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


if __name__ == "__main__":  # python -m ocpp_link.demo_csms PORT
    import sys

    async def _main() -> None:
        csms = DemoCsms(port=int(sys.argv[1]) if len(sys.argv) > 1 else 9100)
        print(f"demo CSMS on ws://127.0.0.1:{await csms.start()}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(_main())
