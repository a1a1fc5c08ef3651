"""The splicing relay with hand-written peers on raw sockets, where a test needs to see or send exact
bytes: the upgrade as forwarded, a 101 and a frame in one TCP segment, masks kept, pings and pongs,
back-pressure, sides that vanish. Also a few runs on uvloop, which the service and bench use."""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import uvloop
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidStatus

from ocpp_link.decoder import OcppDecoder
from ocpp_link.handshake import Head, accept_value, parse_head
from ocpp_link.relay import OcppRelay, RelayConfig, Upstream
from ocpp_link.wire import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONT,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameSplicer,
    close_payload,
    encode_frame,
    parse_close,
)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
STATUS = b'[2,"s1","StatusNotification",{"connectorId":1,"errorCode":"NoError","status":"Available"}]'


def run_on(loop: str, main: Callable[[], Awaitable[Any]], timeout: float = 60.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(main(), timeout)

    return uvloop.run(bounded()) if loop == "uvloop" else asyncio.run(bounded())


LOOPS = pytest.mark.parametrize("loop", ["asyncio", "uvloop"])


async def until(pred: Callable[[], bool], timeout: float = 10.0) -> None:
    async def poll() -> None:
        while not pred():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


def make_relay(url: str, events: list[Any] | None = None, **kw: Any) -> OcppRelay:
    kw.setdefault("connect_timeout", 5.0)
    config = RelayConfig(upstreams=[Upstream("*", url)], host="127.0.0.1", port=0, **kw)
    return OcppRelay(config, OcppDecoder(), events.extend if events is not None else None)


class Scan(FrameSplicer):
    """Reads one peer's incoming frames (nothing forwarded)."""

    def __init__(self, masked: bool) -> None:
        super().__init__(lambda _: None, masked=masked, max_message=1 << 30)
        self.messages: list[tuple[int, bytes]] = []
        self.controls: list[tuple[int, bytes]] = []
        self.violations: list[str] = []

    def _wants(self, opcode: int) -> bool:
        return True

    def _on_message(self, opcode: int, payload: bytes | None, size: int) -> None:
        assert payload is not None
        self.messages.append((opcode, payload))

    def _on_control(self, opcode: int, payload: bytes) -> bool:
        self.controls.append((opcode, payload))
        return True

    def _on_violation(self, why: str) -> None:
        self.violations.append(why)

    def of(self, opcode: int) -> list[bytes]:
        return [p for op, p in self.controls if op == opcode]


class RawEnd:
    """One end of a WebSocket connection spoken by hand: every byte read is kept and scanned."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: bool) -> None:
        self.reader, self.writer, self.client = reader, writer, client
        self.scan = Scan(masked=not client)  # a client reads unmasked frames, a server masked ones
        self.raw = bytearray()
        self.auto_pong = True
        self.auto_close = True
        self.reading = asyncio.Event()
        self.reading.set()
        self.eof = asyncio.Event()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        while True:
            await self.reading.wait()
            try:
                data = await self.reader.read(1 << 16)
            except ConnectionError:
                data = b""
            if not data:
                self.eof.set()
                return
            self.raw += data
            n = len(self.scan.controls)
            self.scan.feed(data)
            for op, payload in self.scan.controls[n:]:
                if op == OP_PING and self.auto_pong:
                    self.send(OP_PONG, payload)
                elif op == OP_CLOSE and self.auto_close and not self.writer.is_closing():
                    self.send(OP_CLOSE, payload[:2])  # echo the code, as endpoints do
                    if not self.client:
                        self.writer.close()  # the server closes TCP first

    def send(self, opcode: int, payload: bytes = b"", fin: bool = True) -> bytes:
        data = encode_frame(opcode, payload, mask=self.client, fin=fin)
        self.writer.write(data)
        return data

    async def close(self) -> None:
        self.writer.close()
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


def switching(head: Head, protocol: str | None = "ocpp1.6", extra: tuple[str, ...] = ()) -> bytes:
    key = head.get("sec-websocket-key")
    assert key is not None
    lines = [
        "HTTP/1.1 101 Switching Protocols",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Accept: {accept_value(key).decode()}",
        *([f"Sec-WebSocket-Protocol: {protocol}"] if protocol else []),
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


class RawCsms:
    """A CSMS written by hand: `respond(request head)` gives the exact bytes of its first write."""

    def __init__(self, respond: Callable[[Head], bytes] | None = None, rcvbuf: int | None = None) -> None:
        self.respond = respond or switching
        self.rcvbuf = rcvbuf
        self.requests: list[Head] = []
        self.responses: list[bytes] = []
        self.ends: list[RawEnd] = []
        self.server: asyncio.Server | None = None

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = parse_head(await reader.readuntil(b"\r\n\r\n"))
        self.requests.append(head)
        response = self.respond(head)
        self.responses.append(response)
        writer.write(response)  # one write: a 101 and any frames after it share a segment
        if response.startswith(b"HTTP/1.1 101"):
            self.ends.append(RawEnd(reader, writer, client=False))
        else:
            writer.close()

    async def __aenter__(self) -> RawCsms:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if self.rcvbuf:  # inherited by accepted sockets: back-pressure shows up with little data
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.rcvbuf)
        sock.bind(("127.0.0.1", 0))
        self.server = await asyncio.start_server(self._client, sock=sock)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for end in self.ends:
            await end.close()
        assert self.server is not None
        self.server.close()

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    def url(self, path: str = "/csms") -> str:
        return f"ws://127.0.0.1:{self.port}{path}"


def upgrade_request(path: str, *extra: str, key: str = KEY) -> bytes:
    lines = [
        f"GET {path} HTTP/1.1",
        "Host: relay.example",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
        *extra,
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def raw_charger(port: int, path: str, *extra: str, rcvbuf: int | None = None) -> tuple[RawEnd, bytes]:
    """Connect by hand; returns the end and the exact response head the relay sent."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:  # small kernel buffers (no autotuning): back-pressure shows up with little data
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(upgrade_request(path, *extra))
    head = await reader.readuntil(b"\r\n\r\n")
    return RawEnd(reader, writer, client=True), head


# --- the upgrade ---------------------------------------------------------------------------------


@LOOPS
def test_upgrade_forwarded_101_verbatim_frame_in_same_segment_and_masks_kept(loop: str) -> None:
    async def main() -> None:
        first = encode_frame(OP_TEXT, b'[2,"c1","TriggerMessage",{"requestedMessage":"Heartbeat"}]')

        def respond(head: Head) -> bytes:
            return switching(head, "ocpp1.6", ("X-Csms: hello", "Server: the-csms")) + first

        async with RawCsms(respond) as csms, make_relay(csms.url()) as relay:
            cp, head = await raw_charger(
                relay.port,
                "/ocpp/CP-RAW?x=1",
                "Sec-WebSocket-Protocol: ocpp2.0.1, ocpp1.6",
                "Sec-WebSocket-Extensions: x-webkit-deflate-frame",
                "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits",
                "Authorization: Basic Q1AtUkFXOnB3",
                "User-Agent: charger/1.0",
                "Origin: http://elsewhere",
            )
            assert head + first == csms.responses[0][: len(head) + len(first)]  # byte for byte
            await until(lambda: cp.scan.messages != [])
            assert cp.raw == first

            (req,) = csms.requests
            assert req.start == "GET /csms/CP-RAW?x=1 HTTP/1.1"
            assert req.text("host") == f"127.0.0.1:{csms.port}"
            assert req.get("sec-websocket-key") == KEY.encode()  # so the CSMS's accept fits the charger
            assert req.get_all("sec-websocket-protocol") == [b"ocpp2.0.1, ocpp1.6"]
            assert req.get_all("sec-websocket-extensions") == [b"permessage-deflate; client_max_window_bits"]
            assert req.text("authorization") == "Basic Q1AtUkFXOnB3"
            assert req.text("user-agent") == "charger/1.0"
            assert req.get("origin") is None

            sent = cp.send(OP_TEXT, STATUS)  # masked by the charger...
            await until(lambda: len(csms.ends) == 1 and bytes(csms.ends[0].raw) == sent)  # ...and as it was
            back = csms.ends[0].send(OP_TEXT, b'[3,"s1",{}]')
            await until(lambda: bytes(cp.raw) == first + back)
            assert relay.counters.frames_cs_to_csms == 1 and relay.counters.frames_csms_to_cs == 2
            await cp.close()

    run_on(loop, main)


@pytest.mark.parametrize(
    "respond",
    [
        lambda h: switching(h).replace(b"Accept: ", b"Accept: x"),
        lambda h: switching(h, "ocpp2.0.1"),  # not offered
        lambda h: switching(h, "ocpp1.6", ("Sec-WebSocket-Extensions: permessage-deflate",)),  # not offered
        lambda h: switching(h, "ocpp1.6", ("Sec-WebSocket-Extensions: x-custom",)),
        lambda h: switching(h).replace(b"Upgrade: websocket\r\n", b""),
        lambda h: b"HTTP/1.1 banana\r\n\r\n",
    ],
    ids=["accept", "subprotocol", "deflate-not-offered", "other-extension", "no-upgrade", "garbage"],
)
def test_a_101_the_charger_could_not_trust_is_502(arun: Any, respond: Callable[[Head], bytes]) -> None:
    async def main() -> None:
        async with RawCsms(respond) as csms, make_relay(csms.url()) as relay:
            with pytest.raises(InvalidStatus) as refused:
                await connect(f"ws://127.0.0.1:{relay.port}/ocpp/CP1", subprotocols=["ocpp1.6"], compression=None)  # type: ignore[list-item]
            assert refused.value.response.status_code == 502
            assert relay.counters.upstream_failed == 1 and relay.counters.connections_total == 0

    arun(main())


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (upgrade_request("/ocpp/CP1").replace(b"Upgrade: websocket\r\n", b""), 426),
        (upgrade_request("/ocpp/CP1").replace(b"Connection: Upgrade", b"Connection: keep-alive"), 426),
        (upgrade_request("/ocpp/CP1", key="short"), 400),
        (upgrade_request("/ocpp/CP1").replace(b"Version: 13", b"Version: 8"), 426),
        (upgrade_request("/ocpp/CP1").replace(b"GET", b"POST"), 400),
        (upgrade_request("/ocpp/CP1").replace(b"HTTP/1.1", b"HTTP/1.0"), 400),
        (upgrade_request("/ocpp/CP1", "Authorization: Basic a\nInjected: yes"), 400),
        (upgrade_request("/ocpp/CP1", " folded"), 400),
        (b"\xff\xfe\r\n\r\n", 400),
    ],
    ids=["no-upgrade", "no-connection", "bad-key", "version", "post", "http10", "bare-lf", "folded", "garbage"],
)
def test_bad_upgrade_requests_answered_without_touching_the_csms(arun: Any, request_bytes: bytes, status: int) -> None:
    async def main() -> None:
        async with RawCsms() as csms, make_relay(csms.url()) as relay:
            reader, writer = await asyncio.open_connection("127.0.0.1", relay.port)
            writer.write(request_bytes)
            response = parse_head(await reader.readuntil(b"\r\n\r\n"))
            writer.close()
            assert int(response.start.split()[1]) == status
            if status == 426 and b"Version: 8" in request_bytes:
                assert response.text("sec-websocket-version") == "13"
            assert csms.requests == []

    arun(main())


def test_redirect_followed_without_credentials_to_another_origin(arun: Any) -> None:
    async def main() -> None:
        async with RawCsms() as target:

            def moved(head: Head) -> bytes:
                return (
                    f"HTTP/1.1 302 Found\r\nLocation: {target.url('/moved/CP7')}\r\nContent-Length: 0\r\n\r\n".encode()
                )

            async with RawCsms(moved) as first, make_relay(first.url()) as relay:
                async with connect(
                    f"ws://127.0.0.1:{relay.port}/ocpp/CP7",
                    subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                    additional_headers={"Authorization": "Basic eDp5"},
                ) as ws:
                    assert ws.subprotocol == "ocpp1.6"
                assert first.requests[0].text("authorization") == "Basic eDp5"
                assert target.requests[0].start == "GET /moved/CP7 HTTP/1.1"
                assert target.requests[0].get("authorization") is None

    arun(main())


def test_refusal_with_chunked_body(arun: Any) -> None:
    def refuse(head: Head) -> bytes:
        return (
            b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\nContent-Type: text/plain\r\n"
            b"Retry-After: 30\r\nX-Internal: no\r\n\r\n4\r\nnot \r\n5\r\ntoday\r\n0\r\n\r\n"
        )

    async def main() -> None:
        async with RawCsms(refuse) as csms, make_relay(csms.url()) as relay:
            with pytest.raises(InvalidStatus) as refused:
                await connect(f"ws://127.0.0.1:{relay.port}/ocpp/CP1")
            r = refused.value.response
            assert (r.status_code, r.body, r.headers["Retry-After"]) == (403, b"not today", "30")
            assert "X-Internal" not in r.headers and relay.counters.upstream_refused == 1

    arun(main())


# --- flow control --------------------------------------------------------------------------------


@LOOPS
def test_back_pressure_both_ways_bounds_relay_buffers_and_loses_nothing(loop: str) -> None:
    chunk = bytes(range(256)) * 256  # 64 KiB frames
    count = 64  # 4 MiB each way

    async def main() -> None:
        async with RawCsms(rcvbuf=32 * 1024) as csms, make_relay(csms.url(), ping_interval=None) as relay:
            cp, _ = await raw_charger(relay.port, "/ocpp/CP-BP", "Sec-WebSocket-Protocol: ocpp1.6", rcvbuf=32 * 1024)
            cp.writer.transport.set_write_buffer_limits(high=1 << 16)
            await until(lambda: len(csms.ends) == 1)
            up = csms.ends[0]
            (link,) = relay._links
            limit = relay.config.write_buffer_limit + (256 << 10)  # the limit plus one read

            for sender, receiver, source in ((cp, up, link.cs), (up, cp, link.csms)):
                receiver.reading.clear()  # stops reading: its socket buffer fills, then the relay's
                out = source.peer.transport  # the relay's socket toward the receiver
                # Bound the kernel's send buffer: with send-buffer autotuning (tcp_wmem up to 4 MiB on
                # some hosts) the kernel alone could swallow all 4 MiB and the relay would never see
                # back-pressure to show that it bounds its own buffer.
                out.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 64 * 1024)
                peak = 0

                async def send_all(sender: RawEnd = sender) -> None:
                    for _ in range(count):
                        sender.send(OP_BINARY, chunk)
                        await sender.writer.drain()

                sending = asyncio.create_task(send_all())
                while not source.paused:
                    peak = max(peak, out.get_write_buffer_size())
                    await asyncio.sleep(0.005)
                for _ in range(30):  # while the receiver reads nothing, the relay holds, not hoards
                    await asyncio.sleep(0.01)
                    peak = max(peak, out.get_write_buffer_size())
                    assert source.paused
                assert peak <= limit, (peak, limit)  # the rest waits in kernel buffers or at the sender
                receiver.reading.set()
                await asyncio.wait_for(sending, 30)

                def all_arrived(msgs: list[tuple[int, bytes]] = receiver.scan.messages) -> bool:
                    return len(msgs) == count

                await until(all_arrived, 30)
                assert all(m == (OP_BINARY, chunk) for m in receiver.scan.messages)
                assert not source.paused
            await cp.close()

    run_on(loop, main, timeout=120)


# --- pings ---------------------------------------------------------------------------------------


@LOOPS
def test_pings_are_answered_per_hop_and_not_passed_on(loop: str) -> None:
    async def main() -> None:
        async with RawCsms() as csms, make_relay(csms.url()) as relay:
            cp, _ = await raw_charger(relay.port, "/ocpp/CP-HOP", "Sec-WebSocket-Protocol: ocpp1.6")
            cp.auto_pong = False
            await until(lambda: len(csms.ends) == 1)
            up = csms.ends[0]
            up.auto_pong = False
            cp.send(OP_PING, b"cp-ping")
            await until(lambda: cp.scan.of(OP_PONG) == [b"cp-ping"])  # the relay's answer, same payload
            up.send(OP_PING, b"csms-ping")
            await until(lambda: up.scan.of(OP_PONG) == [b"csms-ping"])
            cp.send(OP_PONG, b"heartbeat")  # unsolicited: for this hop only
            sent = cp.send(OP_TEXT, STATUS)
            await until(lambda: up.scan.messages == [(OP_TEXT, STATUS)])
            # Each side got only the relay's answer to its own ping; the call went on unchanged.
            assert up.scan.controls == [(OP_PONG, b"csms-ping")] and bytes(up.raw).endswith(sent)
            assert cp.scan.controls == [(OP_PONG, b"cp-ping")]
            assert cp.scan.violations == [] and up.scan.violations == []  # the pong to the CSMS was masked
            assert relay.counters.pings_sent == 0

            # A ping that comes while the other direction is in the middle of a frame is answered
            # after that frame, never inside it.
            frame = encode_frame(OP_TEXT, b'[3,"s1",{}]' * 50)
            before = len(cp.raw)
            up.writer.write(frame[:40])
            await until(lambda: len(cp.raw) == before + 40)
            cp.send(OP_PING, b"mid-frame")
            await asyncio.sleep(0.1)
            assert cp.scan.of(OP_PONG) == [b"cp-ping"]  # held back
            up.writer.write(frame[40:])
            await until(lambda: cp.scan.of(OP_PONG) == [b"cp-ping", b"mid-frame"])
            assert bytes(cp.raw[before:]) == frame + encode_frame(OP_PONG, b"mid-frame")
            await cp.close()

    run_on(loop, main)


def test_relay_refuses_an_unknown_ping_mode() -> None:
    with pytest.raises(ValueError, match="ping_mode"):
        make_relay("ws://127.0.0.1:9/csms", ping_mode="sometimes")


def test_end_to_end_pings_pass_through_and_are_not_answered_by_the_relay(arun: Any) -> None:
    async def main() -> None:
        async with RawCsms() as csms, make_relay(csms.url(), ping_mode="end_to_end") as relay:
            async with connect(f"ws://127.0.0.1:{relay.port}/ocpp/CP-P", subprotocols=["ocpp1.6"]) as ws:  # type: ignore[list-item]
                await until(lambda: len(csms.ends) == 1)
                csms.ends[0].auto_pong = False
                pong = asyncio.ensure_future(await ws.ping(b"e2e"))  # a future: not answered yet
                await until(lambda: csms.ends[0].scan.of(OP_PING) == [b"e2e"])
                await asyncio.sleep(0.2)
                assert not pong.done()  # the relay did not answer it
                csms.ends[0].send(OP_PONG, b"e2e")
                await asyncio.wait_for(pong, 5)  # the CSMS's own pong reached the charger
                csms.ends[0].send(OP_PING, b"from-csms")
                await until(lambda: csms.ends[0].scan.of(OP_PONG) == [b"from-csms"])  # the charger's answer
            assert relay.counters.pings_sent == 0

    arun(main())


@LOOPS
def test_relay_pings_silent_sides_and_cuts_their_pongs(loop: str) -> None:
    async def main() -> None:
        async with RawCsms() as csms, make_relay(csms.url(), ping_interval=0.1, ping_timeout=2.0) as relay:
            cp, _ = await raw_charger(relay.port, "/ocpp/CP-Q", "Sec-WebSocket-Protocol: ocpp1.6")
            await until(lambda: len(csms.ends) == 1)
            up = csms.ends[0]
            await until(lambda: len(cp.scan.of(OP_PING)) >= 3 and len(up.scan.of(OP_PING)) >= 3)
            token = relay.ping_token
            assert set(cp.scan.of(OP_PING)) == {token} and set(up.scan.of(OP_PING)) == {token}
            assert cp.scan.of(OP_PONG) == [] and up.scan.of(OP_PONG) == []  # both pongs were cut
            assert cp.scan.violations == [] and up.scan.violations == []  # masked to the CSMS only
            sent = cp.send(OP_TEXT, STATUS)
            await until(lambda: up.scan.messages == [(OP_TEXT, STATUS)])
            assert bytes(up.raw).endswith(sent) and relay.counters.connections_active == 1
            assert relay.counters.liveness_timeouts == 0
            await cp.close()

    run_on(loop, main)


def test_side_that_stops_answering_is_closed_1011_other_side_gets_1001(arun: Any) -> None:
    async def main() -> None:
        events: list[Any] = []
        async with (
            RawCsms() as csms,
            make_relay(csms.url(), events, ping_interval=0.1, ping_timeout=0.3, close_timeout=1.0) as relay,
        ):
            cp, _ = await raw_charger(relay.port, "/ocpp/CP-DEAD", "Sec-WebSocket-Protocol: ocpp1.6")
            cp.auto_pong = False
            cp.reading.clear()  # reads nothing, answers nothing: as good as dead
            await until(lambda: len(csms.ends) == 1)
            up = csms.ends[0]
            await until(lambda: up.scan.of(OP_CLOSE) != [], 5)
            assert parse_close(up.scan.of(OP_CLOSE)[0])[0] == 1001
            await until(lambda: relay.counters.connections_active == 0, 5)
            cp.reading.set()
            await until(lambda: cp.eof.is_set())
            assert [parse_close(p)[0] for p in cp.scan.of(OP_CLOSE)] == [1011]
            assert relay.counters.liveness_timeouts == 1
            await until(lambda: len(events) == 2)
            assert [e.connected for e in events] == [True, False]
            await cp.close()

    arun(main())


def test_other_ends_unanswered_ping_is_the_probe(arun: Any) -> None:
    """End to end, a peer may answer only the latest ping: the relay adds none while the CSMS's is pending."""

    async def main() -> None:
        async with (
            RawCsms() as csms,
            make_relay(csms.url(), ping_interval=0.1, ping_timeout=0.5, ping_mode="end_to_end") as relay,
        ):
            cp, _ = await raw_charger(relay.port, "/ocpp/CP-PP", "Sec-WebSocket-Protocol: ocpp1.6")
            cp.auto_pong = False
            await until(lambda: len(csms.ends) == 1)
            csms.ends[0].send(OP_PING, b"csms-ping")
            await until(lambda: cp.eof.is_set(), 5)
            assert cp.scan.of(OP_PING) == [b"csms-ping"]
            assert relay.counters.liveness_timeouts == 1
            await cp.close()

    arun(main())


# --- sides that vanish, fragments ----------------------------------------------------------------


@pytest.mark.parametrize("mid_frame", [False, True])
def test_charger_vanishing_reaches_the_csms(arun: Any, mid_frame: bool) -> None:
    async def main() -> None:
        async with RawCsms() as csms, make_relay(csms.url()) as relay:
            cp, _ = await raw_charger(relay.port, "/ocpp/CP-GONE", "Sec-WebSocket-Protocol: ocpp1.6")
            await until(lambda: len(csms.ends) == 1)
            up = csms.ends[0]
            partial = encode_frame(OP_TEXT, STATUS, mask=True)[:20] if mid_frame else b""
            cp.writer.write(partial)
            await asyncio.sleep(0.1)
            cp.writer.transport.abort()
            await until(lambda: up.eof.is_set(), 5)
            if mid_frame:  # the partial frame went on; no close frame can follow it, only EOF
                assert bytes(up.raw) == partial and up.scan.controls == []
            else:
                assert [parse_close(p)[0] for p in up.scan.of(OP_CLOSE)] == [1001]
                assert encode_frame(OP_CLOSE, close_payload(1001))[2:] not in bytes(up.raw)  # it was masked
            await until(lambda: relay.counters.connections_active == 0)
            await cp.close()

    arun(main())


@pytest.mark.parametrize("ping_mode", ["per_hop", "end_to_end"])
def test_fragmented_call_with_ping_inside_is_decoded_and_forwarded_unchanged(arun: Any, ping_mode: str) -> None:
    async def main() -> None:
        events: list[Any] = []
        async with RawCsms() as csms, make_relay(csms.url(), events, ping_mode=ping_mode) as relay:
            cp, _ = await raw_charger(relay.port, "/ocpp/CP-FRAG", "Sec-WebSocket-Protocol: ocpp1.6")
            await until(lambda: len(csms.ends) == 1)
            up = csms.ends[0]
            first = cp.send(OP_TEXT, STATUS[:10], fin=False)
            ping = cp.send(OP_PING, b"mid-message")
            rest = cp.send(OP_CONT, STATUS[10:50], fin=False) + cp.send(OP_CONT, STATUS[50:])
            await until(lambda: up.scan.messages == [(OP_TEXT, STATUS)])
            if ping_mode == "end_to_end":
                assert bytes(up.raw) == first + ping + rest
            else:
                assert bytes(up.raw) == first + rest  # the data frames unchanged, the ping answered by the relay
            await until(lambda: cp.scan.of(OP_PONG) == [b"mid-message"])  # from the CSMS or the relay
            await until(lambda: any(e.kind == "connector_available" for e in events))
            assert relay.counters.frames_cs_to_csms == 1
            await cp.close()

    arun(main())


# --- real clients on uvloop, TLS both sides, permessage-deflate ----------------------------------


def test_tls_both_hops_deflate_on_uvloop(tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=cert)
    events: list[Any] = []

    async def echo(ws: ServerConnection) -> None:
        async for msg in ws:
            await ws.send(msg)

    async def main() -> None:
        async with serve(echo, "127.0.0.1", 0, ssl=server_ctx, subprotocols=["ocpp1.6"]) as up:  # type: ignore[list-item]
            url = f"wss://127.0.0.1:{up.sockets[0].getsockname()[1]}/csms"
            relay = make_relay(url, events, tls_cert=cert, tls_key=key, upstream_ssl=client_ctx)
            async with relay:
                async with connect(
                    f"wss://127.0.0.1:{relay.port}/ocpp/TLS-UV",
                    ssl=client_ctx,
                    subprotocols=["ocpp1.6"],  # type: ignore[list-item]
                ) as ws:
                    assert [e.name for e in ws.protocol.extensions] == ["permessage-deflate"]
                    for _ in range(3):  # compressed with context takeover: each needs the one before
                        await ws.send(STATUS.decode())
                        assert await ws.recv() == STATUS.decode()
                    big = "x" * 200_000
                    await ws.send(big)
                    assert await ws.recv() == big
                    with pytest.raises(ConnectionClosed):
                        await ws.send("y" * ((1 << 20) + 1))  # over max_frame_bytes once inflated
                        await asyncio.wait_for(ws.recv(), 5)
                    await until(lambda: ws.protocol.close_rcvd is not None)
                    assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 1009
                await until(lambda: relay.counters.connections_active == 0)
                assert relay.counters.undecoded == 0
                assert sum(e.kind == "connector_available" for e in events) == 3

    run_on("uvloop", main)


def test_ocpp_rpc_session_on_uvloop(node_peers: Any) -> None:
    async def main() -> None:
        csms, port = await node_peers.csms({"callAfterBoot": True})
        events: list[Any] = []
        async with make_relay(f"ws://127.0.0.1:{port}/ocpp", events) as relay:
            cps = await node_peers.start(
                "cp.js",
                {"endpoint": f"ws://127.0.0.1:{relay.port}/ocpp", "ids": ["UV-1", "UV-2"], "closeCode": 4003},
            )
            await cps.finished()
            await until(lambda: relay.counters.connections_active == 0)
        await csms.stop()
        assert not cps.events("error") and not csms.events("strict")
        for cp in ("UV-1", "UV-2"):
            assert cps.frames(cp, "out") == csms.frames(cp, "in") and cps.frames(cp, "in") == csms.frames(cp, "out")
            assert csms.events("close", cp)[0]["code"] == 4003
        assert [e.kind for e in events].count("transaction_ended") == 2

    run_on("uvloop", main)


def test_csms_that_says_everything_and_hangs_up_with_its_101(arun: Any) -> None:
    """101, a call and a close frame in one segment, then FIN: all of it reaches the charger."""
    call = encode_frame(OP_TEXT, b'[2,"x","Reset",{"type":"Hard"}]')
    close = encode_frame(OP_CLOSE, close_payload(4010, "bye"))

    class HangUp(RawCsms):
        async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = parse_head(await reader.readuntil(b"\r\n\r\n"))
            writer.write(switching(head) + call + close)
            writer.close()

    async def main() -> None:
        async with HangUp() as csms, make_relay(csms.url()) as relay:
            async with connect(f"ws://127.0.0.1:{relay.port}/ocpp/CP-H", subprotocols=["ocpp1.6"]) as ws:  # type: ignore[list-item]
                assert await asyncio.wait_for(ws.recv(), 5) == '[2,"x","Reset",{"type":"Hard"}]'
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(ws.recv(), 5)
                assert ws.protocol.close_rcvd is not None
                assert (ws.protocol.close_rcvd.code, ws.protocol.close_rcvd.reason) == (4010, "bye")
            await until(lambda: relay.counters.connections_active == 0)

    arun(main())


def test_stop_waits_for_the_frame_in_flight_before_its_close(arun: Any) -> None:
    async def main() -> None:
        async with RawCsms() as csms:
            relay = make_relay(csms.url(), close_timeout=3.0)
            await relay.start()
            cp, _ = await raw_charger(relay.port, "/ocpp/CP-S", "Sec-WebSocket-Protocol: ocpp1.6")
            cp.auto_close = False  # its close must not land inside its own half-sent frame
            await until(lambda: len(csms.ends) == 1)
            up = csms.ends[0]
            whole = encode_frame(OP_TEXT, STATUS, mask=True)
            cp.writer.write(whole[:30])
            await until(lambda: len(up.raw) == 30)
            stopping = asyncio.create_task(relay.stop())
            await until(lambda: cp.scan.of(OP_CLOSE) != [])  # the charger's stream was between frames
            assert up.scan.controls == []  # the CSMS's was not: its close waits for the frame
            cp.writer.write(whole[30:])
            await until(lambda: up.scan.of(OP_CLOSE) != [])
            assert up.scan.messages == [(OP_TEXT, STATUS)] and parse_close(up.scan.of(OP_CLOSE)[0])[0] == 1001
            cp.send(OP_CLOSE, close_payload(1001))
            await asyncio.wait_for(stopping, 5)
            assert relay.counters.connections_active == 0
            await cp.close()

    arun(main())
