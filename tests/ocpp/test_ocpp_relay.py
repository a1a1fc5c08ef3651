"""The relay with real peers: ocpp-rpc (strict mode) CSMS and charge points, Python websockets peers
where a test needs to send what ocpp-rpc would refuse to (invalid JSON, oversize frames)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import ssl
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.http11 import Request, Response

from ocpp_link.decoder import OcppDecoder
from ocpp_link.relay import OcppRelay, RelayConfig, Upstream, validate_charge_point_id
from ocpp_link.tap import FrameTap, Prefilter, RelayCounters

Run = Callable[..., Any]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


async def until(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    async def poll() -> None:
        while not pred():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), timeout)


def make_relay(upstreams: list[Upstream] | int, events: list[Any] | None = None, **kw: Any) -> OcppRelay:
    if isinstance(upstreams, int):
        upstreams = [Upstream("*", f"ws://127.0.0.1:{upstreams}/ocpp")]
    decoder = kw.pop("decoder", None) or OcppDecoder()
    kw.setdefault("connect_timeout", 5.0)
    config = RelayConfig(upstreams=upstreams, host="127.0.0.1", port=0, **kw)
    return OcppRelay(config, decoder, events.extend if events is not None else None)


class EchoUpstream:
    """A Python websockets 'CSMS' that echoes frames as they came and records handshakes."""

    def __init__(self, ssl_ctx: ssl.SSLContext | None = None, compression: str | None = "deflate") -> None:
        self.ssl_ctx, self.compression = ssl_ctx, compression
        self.requests: list[Request] = []
        self.closes: list[tuple[int | None, str | None]] = []
        self.server: Server | None = None

    async def _handler(self, ws: ServerConnection) -> None:
        try:
            async for msg in ws:
                if msg == "close-me":
                    await ws.close(4005, "asked to")
                    break
                await ws.send(msg)
        finally:
            await ws.wait_closed()
            rc = ws.protocol.close_rcvd
            self.closes.append((rc.code, rc.reason) if rc else (None, None))

    def _process_request(self, conn: ServerConnection, req: Request) -> Response | None:
        self.requests.append(req)
        if "/DENY" in req.path:  # a CSMS refusing with a challenge
            response = conn.respond(HTTPStatus.UNAUTHORIZED, "who are you?\n")
            response.headers["WWW-Authenticate"] = 'Basic realm="csms"'
            return response
        return None

    async def __aenter__(self) -> EchoUpstream:
        self.server = await serve(
            self._handler,
            "127.0.0.1",
            0,
            ssl=self.ssl_ctx,
            subprotocols=["ocpp2.0.1", "ocpp1.6"],  # type: ignore[list-item]
            process_request=self._process_request,
            compression=self.compression,
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    def url(self, path: str = "/csms") -> str:
        assert self.server is not None
        scheme = "wss" if self.ssl_ctx else "ws"
        return f"{scheme}://127.0.0.1:{self.server.sockets[0].getsockname()[1]}{path}"


async def http_status(port: int, path: str) -> int:
    """Status line of a raw upgrade request: paths no client library would send."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: ocpp1.6\r\n\r\n"
        ).encode()
    )
    line = await reader.readline()
    writer.close()
    return int(line.split()[1])


EXPECTED = {
    "ocpp1.6": [
        ("connector_available", None),
        ("transaction_started", None),
        ("transaction_updated", "Charging"),
        ("transaction_updated", "Charging"),
        ("transaction_updated", "Charging"),
        ("charging_idle", "SuspendedEV"),
        ("transaction_ended", "EVDisconnected"),
        ("charging_idle", "Finishing"),
        ("connector_available", None),
    ],
    "ocpp2.0.1": [
        ("connector_available", None),
        ("transaction_started", None),
        ("transaction_updated", "EVConnected"),
        ("transaction_updated", "Charging"),
        ("transaction_updated", "Charging"),
        ("transaction_updated", "Charging"),
        ("charging_idle", "SuspendedEV"),
        ("transaction_ended", "EVDisconnected"),
        ("connector_available", None),
    ],
}


def summary(events: list[Any]) -> list[tuple[str, str | None]]:
    return [(e.kind, getattr(e, "reason", None) or getattr(e, "charging_state", None)) for e in events]


@pytest.mark.parametrize("protocol", ["ocpp1.6", "ocpp2.0.1"])
def test_session_frames_identical_events_and_close_mirrored(node_peers: Any, arun: Run, protocol: str) -> None:
    cp_ids = ["CP-A", "CP-B:2"]  # ':' travels percent-encoded in the path

    async def main() -> None:
        csms, port = await node_peers.csms({"callAfterBoot": True})
        events: list[Any] = []
        async with make_relay(port, events) as relay:
            cps = await node_peers.start(
                "cp.js",
                {
                    "endpoint": f"ws://127.0.0.1:{relay.port}/ocpp",
                    "ids": cp_ids,
                    "protocol": protocol,
                    "closeCode": 4001,
                    "closeReason": "bye",
                    "password": "s3cret",
                },
            )
            await cps.finished()
            for cp in cp_ids:
                await csms.wait_for(lambda x, cp=cp: x.get("ev") == "close" and x["id"] == cp)
            await until(lambda: relay.counters.connections_active == 0)
            counters = relay.counters
        await csms.stop()

        assert not cps.events("error") and not csms.events("strict") and not csms.events("bad")
        for cp in cp_ids:
            sent, received = cps.frames(cp, "out"), csms.frames(cp, "in")
            assert sent and sent == received, f"charger->CSMS frames differ for {cp}"
            answers, got = csms.frames(cp, "out"), cps.frames(cp, "in")
            assert answers and answers == got, f"CSMS->charger frames differ for {cp}"
            assert csms.events("callResult", cp), "the CSMS-initiated call came back"
            (conn,) = csms.events("connect", cp)
            assert conn["protocol"] == protocol
            assert conn["authorization"] == "Basic " + base64.b64encode(f"{cp}:s3cret".encode()).decode()
            (closed,) = csms.events("close", cp)
            assert (closed["code"], closed["reason"]) == (4001, "bye")
            mine = [e for e in events if e.charge_point_id == cp]
            first, *mine, last = mine
            assert (first.kind, first.connected, first.protocol) == ("charger_connection", True, protocol)
            assert (last.kind, last.connected) == ("charger_connection", False)
            assert summary(mine) == EXPECTED[protocol]
            tx = {e.transaction_id for e in mine if hasattr(e, "transaction_id")}
            assert len(tx) == 1
            started = next(e for e in mine if e.kind == "transaction_started")
            assert started.id_token_hash == sha("RFID-0042")
        assert counters.undecoded == 0 and counters.frames_tapped > 0
        assert counters.frames_cs_to_csms == sum(len(cps.frames(c, "out")) for c in cp_ids)

    arun(main())


def test_csms_close_code_reaches_charger(node_peers: Any, arun: Run) -> None:
    async def main() -> None:
        csms, port = await node_peers.csms()
        async with make_relay(port) as relay:
            cps = await node_peers.start(
                "cp.js",
                {
                    "endpoint": f"ws://127.0.0.1:{relay.port}/ocpp",
                    "ids": ["CP9"],
                    "holdOpen": True,
                    "meter": 0,
                },
            )
            await cps.wait_for(lambda x: x.get("ev") == "done")
            await csms.send({"cmd": "close", "id": "CP9", "code": 4002, "reason": "csms-bye"})
            closed = await cps.wait_for(lambda x: x.get("ev") == "close")
            assert (closed["code"], closed["reason"]) == (4002, "csms-bye")
            await cps.stop()
        await csms.stop()

    arun(main())


def test_fail_open_when_decoder_raises_on_every_frame(node_peers: Any, arun: Run) -> None:
    class Boom(OcppDecoder):
        def decode(self, *args: Any, **kwargs: Any) -> list[Any]:
            raise RuntimeError("decoder bug")

    async def main() -> None:
        csms, port = await node_peers.csms()
        events: list[Any] = []
        async with make_relay(port, events, decoder=Boom()) as relay:
            cps = await node_peers.start(
                "cp.js",
                {
                    "endpoint": f"ws://127.0.0.1:{relay.port}/ocpp",
                    "ids": ["CP-X"],
                    "protocol": "ocpp1.6",
                },
            )
            await cps.finished()
            await until(lambda: relay.counters.connections_active == 0)
            c = relay.counters
            assert relay.metrics()["baywarden_ocpp_relay_decoder_errors_total"] == c.decoder_errors
        await csms.stop()
        assert cps.events("done") and not cps.events("error")
        assert cps.frames("CP-X", "out") == csms.frames("CP-X", "in")
        assert cps.frames("CP-X", "in") == csms.frames("CP-X", "out")
        assert [e.kind for e in events] == ["charger_connection", "charger_connection"]
        assert c.frames_tapped > 0 and c.decoder_errors == c.undecoded == c.frames_tapped

    arun(main())


def test_csms_refusal_reaches_charger_as_same_status(node_peers: Any, arun: Run) -> None:
    async def main() -> None:
        csms, port = await node_peers.csms({"deny": ["DENY*"]})
        async with make_relay(port) as relay:
            with pytest.raises(InvalidStatus) as refused:
                await connect(f"ws://127.0.0.1:{relay.port}/ocpp/DENY-1", subprotocols=["ocpp1.6"])  # type: ignore[list-item]
            assert refused.value.response.status_code == 401
            cps = await node_peers.start("cp.js", {"endpoint": f"ws://127.0.0.1:{relay.port}/ocpp", "ids": ["DENY-2"]})
            await cps.finished()
            assert cps.events("error")[0]["code"] == 401
            assert relay.counters.upstream_refused == 2 and relay.counters.connections_total == 0
        await csms.stop()

    arun(main())


def test_refusal_status_body_and_challenge_header_pass_through(arun: Run) -> None:
    async def main() -> None:
        async with EchoUpstream() as up, make_relay([Upstream("*", up.url())]) as relay:
            with pytest.raises(InvalidStatus) as refused:
                await connect(f"ws://127.0.0.1:{relay.port}/ocpp/DENY-3")
            r = refused.value.response
            assert (r.status_code, r.body) == (401, b"who are you?\n")
            assert r.headers["WWW-Authenticate"] == 'Basic realm="csms"'

    arun(main())


BAD_PATHS = [
    ("/ocpp/..", 400),
    ("/ocpp/%2e%2e", 400),
    ("/ocpp/a..b", 400),
    ("/ocpp/a/b", 400),
    ("/ocpp/a%2Fb", 400),
    ("/ocpp/a%2fb", 400),
    ("/ocpp/a%5Cb", 400),
    ("/ocpp/a%00b", 400),
    ("/ocpp/" + "x" * 49, 400),
    ("/ocpp/", 400),
    ("/ocpp/%zz", 400),
    ("/ocpp/%C3%A9", 400),
    ("/other/CP1", 404),
    ("/ocpp", 404),
    ("/ocpp/CP-1?x=/../y", 101),
]


def test_bad_charger_ids_refused_before_upstream(arun: Run) -> None:
    async def main() -> None:
        async with EchoUpstream() as up, make_relay([Upstream("*", up.url())]) as relay:
            for path, status in BAD_PATHS:
                assert await http_status(relay.port, path) == status, path
            await until(lambda: len(up.requests) == 1)
            assert [r.path for r in up.requests] == ["/csms/CP-1?x=/../y"]
            assert relay.counters.rejected_bad_id == len(BAD_PATHS) - 1

    arun(main())


@pytest.mark.parametrize(
    ("segment", "expected"),
    [
        ("CP-1", "CP-1"),
        ("CP%3A1", "CP:1"),
        ("a|b@c=d+e*f.g_h", "a|b@c=d+e*f.g_h"),
        ("x" * 48, "x" * 48),
        ("x" * 49, None),
        ("..", None),
        (".", None),
        ("a%2Fb", None),
        ("a b", None),
        ("", None),
    ],
)
def test_validate_charge_point_id(segment: str, expected: str | None) -> None:
    assert validate_charge_point_id(segment) == expected


def test_upstream_timeout_and_unreachable(arun: Run) -> None:
    async def main() -> None:
        silent: list[asyncio.StreamWriter] = []

        async def never_answer(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            silent.append(writer)  # accept TCP, never speak HTTP

        black_hole = await asyncio.start_server(never_answer, "127.0.0.1", 0)
        bh_port = black_hole.sockets[0].getsockname()[1]
        probe = await asyncio.start_server(never_answer, "127.0.0.1", 0)
        closed_port = probe.sockets[0].getsockname()[1]
        probe.close()
        await probe.wait_closed()
        upstreams = [
            Upstream("SLOW-*", f"ws://127.0.0.1:{bh_port}/ocpp"),
            Upstream("DOWN-*", f"ws://127.0.0.1:{closed_port}/ocpp"),
        ]
        async with make_relay(upstreams, connect_timeout=0.5) as relay:
            statuses = await asyncio.gather(
                http_status(relay.port, "/ocpp/SLOW-1"),
                http_status(relay.port, "/ocpp/DOWN-1"),
                http_status(relay.port, "/ocpp/NOMATCH"),
            )
            assert statuses == [504, 502, 404]
            c = relay.counters
            assert (c.upstream_timeout, c.upstream_failed, c.rejected_no_upstream) == (1, 1, 1)
        for w in silent:
            w.close()
        black_hole.close()
        await black_hole.wait_closed()

    arun(main())


def test_invalid_json_and_oversize_frame_do_not_touch_other_chargers(node_peers: Any, arun: Run) -> None:
    async def main() -> None:
        csms, port = await node_peers.csms()
        async with make_relay(port, max_frame_bytes=4096) as relay:
            url = f"ws://127.0.0.1:{relay.port}/ocpp"
            other = await node_peers.start("cp.js", {"endpoint": url, "ids": ["GOOD"], "stepMs": 20, "meter": 5})
            async with connect(f"{url}/BAD", subprotocols=["ocpp1.6"]) as bad:  # type: ignore[list-item]
                broken = '[2,"m1","StatusNotification",{"connectorId":1,'
                await bad.send(broken)
                answer = json.loads(await asyncio.wait_for(bad.recv(), 5))
                assert answer[0] == 4 and answer[2] == "RpcFrameworkError"  # the CSMS's answer, relayed
                assert csms.frames("BAD", "in") == [sha(broken)]
                await bad.send('[2,"m2","Heartbeat",{"pad":"' + "x" * 5000 + '"}]')
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(bad.recv(), 5)
                assert bad.protocol.close_sent is not None and bad.protocol.close_rcvd is not None
                assert bad.protocol.close_rcvd.code == 1009  # message too big, from the relay
            closed = await csms.wait_for(lambda x: x.get("ev") == "close" and x["id"] == "BAD")
            assert closed["code"] == 1001  # the CSMS only learns the charger went away
            await other.finished()
            assert other.events("done") and not other.events("error")
            assert other.frames("GOOD", "out") == csms.frames("GOOD", "in")
            assert other.frames("GOOD", "in") == csms.frames("GOOD", "out")
            assert relay.decoder.stats.malformed == 1  # type: ignore[union-attr]
            assert relay.metrics()["baywarden_ocpp_decoder_malformed_total"] == 1
        await csms.stop()

    arun(main())


def test_frame_sent_right_after_handshake_is_not_lost(node_peers: Any, arun: Run) -> None:
    async def main() -> None:
        csms, port = await node_peers.csms({"authDelayMs": 300})  # a slow CSMS handshake
        relay = make_relay(port)
        await relay.start()
        # The client offers permessage-deflate; ocpp-rpc does not take it, so neither does the relay.
        async with connect(f"ws://127.0.0.1:{relay.port}/ocpp/FAST", subprotocols=["ocpp1.6"]) as ws:  # type: ignore[list-item]
            await ws.send('[2,"1","BootNotification",{"chargePointVendor":"V","chargePointModel":"M"}]')
            answer = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert answer[:2] == [3, "1"] and answer[2]["status"] == "Accepted"
            assert ws.subprotocol == "ocpp1.6" and ws.protocol.extensions == []
        await relay.stop()
        await csms.stop()

    arun(main())


def test_tls_listening_wss_upstream_types_compression_and_close(arun: Run, tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=cert)

    async def main() -> None:
        async with (
            EchoUpstream(server_ctx) as up,
            make_relay([Upstream("*", up.url())], tls_cert=cert, tls_key=key, upstream_ssl=client_ctx) as relay,
        ):
            url = f"wss://127.0.0.1:{relay.port}/ocpp/TLS-1"
            async with connect(url, ssl=client_ctx, subprotocols=["ocpp1.6", "ocpp2.0.1"]) as ws:  # type: ignore[list-item]
                assert ws.subprotocol == "ocpp2.0.1"  # the upstream's choice, not the relay's
                assert [e.name for e in ws.protocol.extensions] == ["permessage-deflate"]  # both ends took it
                await ws.send('[2,"1","Heartbeat",{}]')
                assert await ws.recv() == '[2,"1","Heartbeat",{}]'
                await ws.send(b"\x00\xffbinary")
                assert await ws.recv() == b"\x00\xffbinary"  # binary stays binary
                await ws.send("close-me")
                with pytest.raises(ConnectionClosed):
                    await ws.recv()
                assert ws.protocol.close_rcvd is not None
                assert (ws.protocol.close_rcvd.code, ws.protocol.close_rcvd.reason) == (4005, "asked to")
            async with connect(url, ssl=client_ctx, subprotocols=["ocpp1.6"], compression=None) as ws:  # type: ignore[list-item]
                assert ws.protocol.extensions == [] and ws.subprotocol == "ocpp1.6"
            assert "permessage-deflate" not in up.requests[-1].headers.get("Sec-WebSocket-Extensions", "")
            assert up.requests[-1].path == "/csms/TLS-1"

    arun(main())


def test_upstream_chosen_by_first_matching_pattern_and_shutdown_mirrored(arun: Run) -> None:
    async def main() -> None:
        async with EchoUpstream() as eu, EchoUpstream() as rest:
            relay = make_relay([Upstream("EU-*", eu.url("/eu")), Upstream("*", rest.url("/all"))])
            await relay.start()
            a = await connect(f"ws://127.0.0.1:{relay.port}/ocpp/EU-7", subprotocols=["ocpp1.6"])  # type: ignore[list-item]
            b = await connect(f"ws://127.0.0.1:{relay.port}/ocpp/US-7", subprotocols=["ocpp1.6"])  # type: ignore[list-item]
            assert [r.path for r in eu.requests] == ["/eu/EU-7"] and [r.path for r in rest.requests] == ["/all/US-7"]
            await relay.stop()  # chargers and CSMS both hear "going away"
            for ws in (a, b):
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 5)
                assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1001
            await until(lambda: len(eu.closes) == 1 and len(rest.closes) == 1)
            assert eu.closes[0][0] == rest.closes[0][0] == 1001

    arun(main())


# --- tap internals --------------------------------------------------------------------------------


def test_prefilter_actions_and_pending_ids() -> None:
    pf = Prefilter()
    assert not pf.from_cs('[2,"1","BootNotification",{}]')
    assert not pf.from_cs('[2,"2","Heartbeat",{}]')
    assert pf.from_cs('[2,"3","MeterValues",{"connectorId":1}]')
    assert not pf.from_csms('[2,"9","RemoteStartTransaction",{"idTag":"x"}]')
    assert pf.from_cs(b'[2,"4","StartTransaction",{"connectorId":1}]')
    assert pf.pending == {b"4"}
    assert not pf.from_csms(b'[3,"5",{}]')
    assert pf.from_csms(b'[3,"4",{"transactionId":1}]') and not pf.pending
    assert pf.from_cs('[2,"6","StartTransaction",{}]') and pf.from_csms('[4,"6","InternalError","",{}]')


def test_tap_queue_full_counts_and_drains_on_stop(arun: Run) -> None:
    seen: list[str] = []

    class Recorder(OcppDecoder):
        def decode(self, cp: str, direction: Any, raw: Any, at: Any) -> list[Any]:
            seen.append(raw)
            return []

    async def main() -> RelayCounters:
        counters = RelayCounters()
        tap = FrameTap("CP1", Recorder(), None, counters, queue_size=2)
        tap.start("ocpp1.6")
        for i in range(5):  # no await in between: the decoder task cannot run
            tap.offer("cs", f'[2,"{i}","StatusNotification",{{}}]')
        tap.offer("cs", '[2,"x","Heartbeat",{}]')  # not interesting: not even queued
        await tap.stop()
        return counters

    c = arun(main())
    assert len(seen) == 2 and (c.frames_tapped, c.dropped_queue_full, c.undecoded) == (2, 3, 3)


def test_counters_prometheus_samples() -> None:
    c = RelayCounters(frames_cs_to_csms=3, connections_active=2, undecoded=1)
    samples = c.prometheus_samples()
    assert samples['baywarden_ocpp_relay_frames_forwarded_total{direction="cs_to_csms"}'] == 3
    assert samples["baywarden_ocpp_relay_connections_active"] == 2
    assert samples["baywarden_ocpp_relay_undecoded_total"] == 1
    assert len(samples) == len(c.as_dict())


def test_config_from_settings() -> None:
    from models.settings import RelaySettings, UpstreamSettings

    s = RelaySettings(port=9100, max_frame_bytes=4096, upstreams=[UpstreamSettings(pattern="EU-*", url="wss://c/ocpp")])
    c = RelayConfig.from_settings(s)
    assert (c.port, c.max_frame_bytes, list(c.upstreams)) == (9100, 4096, [Upstream("EU-*", "wss://c/ocpp")])
    assert (c.ping_mode, c.ping_interval, c.ping_timeout) == ("per_hop", 20.0, 20.0)

    s = RelaySettings(ping_mode="end_to_end", ping_interval_s=None, ping_timeout_s=5)
    c = RelayConfig.from_settings(s)
    assert (c.ping_mode, c.ping_interval, c.ping_timeout) == ("end_to_end", None, 5)


@pytest.mark.parametrize(
    ("field", "value"), [("ping_mode", "sometimes"), ("ping_interval_s", 0), ("ping_timeout_s", -1)]
)
def test_ping_settings_are_validated(field: str, value: object) -> None:
    from pydantic import ValidationError

    from models.settings import RelaySettings

    with pytest.raises(ValidationError, match=field):
        RelaySettings(**{field: value})


@pytest.mark.parametrize("size", [40_000, 100_000])
def test_oversized_upgrade_head_in_one_write_is_refused(arun: Run, size: int) -> None:
    """Finding 10: the 32 KiB head limit was only checked while waiting for more bytes, so a whole
    40 KB or 100 KB head that arrived in one read was accepted and forwarded."""

    async def main() -> None:
        async with EchoUpstream() as up, make_relay([Upstream("*", up.url())]) as relay:
            reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
            head = (
                "GET /ocpp/CP-1 HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                f"X-Pad: {'a' * size}\r\n\r\n"
            ).encode()
            writer.write(head)
            await writer.drain()
            line = await reader.readline()
            writer.close()
            assert int(line.split()[1]) == 400
            assert up.requests == []

    arun(main())
