"""Transparent, fail-open OCPP-J WebSocket relay between charge points and one or more CSMS.

Per charger connection, in this order:

1. validate the path ``{prefix}{charge_point_id}`` (400/404 before anything else happens), then
   the upgrade request itself (426/400);
2. send the charger's upgrade request to the CSMS chosen for it, with the same path suffix, the
   same ``Sec-WebSocket-Key``, the same subprotocol and permessage-deflate offers, ``Authorization``
   and ``User-Agent``; only ``Host`` changes. Redirects are followed like websockets' client does;
3. a CSMS refusal reaches the charger with the same status, body and challenge headers; no answer
   in time -> 504; any other failure to connect, or a 101 the charger could not trust -> 502;
4. a 101 goes to the charger byte for byte: its accept value is right for the charger's key, and
   both ends now agree on subprotocol and compression without the relay choosing anything.

Then the relay splices: each side's bytes are written to the other as they were read
(`ocpp_link.wire.FrameSplicer`). A charger's frames are masked, as they must be on the relay's
client hop; the CSMS's are unmasked, as they must be on the relay's server hop; compressed frames
stay compressed. Nothing is parsed into messages on the forwarding path: frame headers are read to
find boundaries, and the tap (`ocpp_link.tap`) gets copies of the messages it wants. Flow control
is end to end: a peer that does not read pauses reading from the other one.

Closing: close frames pass through, so codes mirror by construction. When a side goes away
without one, the other gets 1001 (if its stream is between frames; otherwise its TCP connection
just closes). The relay itself closes a side with 1009 for a message over ``max_frame_bytes``, 1002
for a broken frame, 1011 when a side stops answering; the other side then gets 1001.

Pings are answered per hop (``ping_mode="per_hop"``, the default): the relay is the WebSocket peer of
each side, so it answers a side's ping itself with the same payload (after the frame it is writing to
that side, if any) and passes neither pings nor unsolicited pongs on. A hung CSMS is still noticed:
a side that has sent nothing for ``ping_interval`` gets a ping of the relay's own (between two
complete frames), its pong is cut out of the stream, and a side silent ``ping_timeout`` longer is
closed with 1011, which closes the other side too (1001), so a charger whose CSMS stopped answering
reconnects. ``ping_mode="end_to_end"`` passes pings and pongs through instead, for a CSMS that marks
chargers online from their own pongs: then the relay adds no ping of its own while one from the other
end is still unanswered there, since a peer may answer only the latest ping.

The event sink also gets a `ChargerConnection` when a charger's link opens and after it closed, and a
`RelayUpstreamChanged` when an upstream CSMS becomes unreachable (connect failure or timeout) or
reachable again (the stored event raises, then closes, an operator alert).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import re
import socket
import ssl
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Literal
from urllib.parse import unquote, urljoin, urlsplit

from models.events import ChargerConnection, RelayUpstreamChanged
from models.logsetup import redact, redact_url
from ocpp_link.handshake import (
    BadHead,
    Deflate,
    Head,
    HeadReader,
    accept_value,
    deflate_offer,
    http_response,
    negotiated_deflate,
    parse_head,
    request_target,
    response_status,
    subprotocols,
    upgrade_request,
    valid_key,
)
from ocpp_link.tap import EventSink, FrameDecoder, FrameTap, RelayCounters
from ocpp_link.wire import OP_CLOSE, OP_PING, OP_PONG, FrameSplicer, close_payload, encode_frame, parse_close

if TYPE_CHECKING:
    from models.settings import RelaySettings

log = logging.getLogger(__name__)

# OCPP identifierString characters (2.0.1 part 4 uses them for the identity; 1.6 chargers in
# the field stay within them too). Anything else, '..' and encoded separators are refused.
_ID_RE = re.compile(r"[A-Za-z0-9*\-_=:+|@.]+")
_RAW_SEGMENT_RE = re.compile(r"[A-Za-z0-9*\-_=:+|@.%]+")
# Headers of a CSMS refusal worth passing to the charger.
_REFUSAL_HEADERS = ("WWW-Authenticate", "Retry-After", "Content-Type")
_REDIRECTS = (300, 301, 302, 303, 307, 308)
_MAX_REDIRECTS = 10


@dataclass(frozen=True)
class Upstream:
    pattern: str  # fnmatch pattern on the charge point id, case-sensitive
    url: str  # ws:// or wss:// base; "/{charge_point_id}" is appended


@dataclass
class RelayConfig:
    upstreams: Sequence[Upstream]
    host: str = "127.0.0.1"
    port: int = 9000  # 0 picks a free port (see OcppRelay.port)
    path_prefix: str = "/ocpp/"
    tls_cert: Path | None = None
    tls_key: Path | None = None
    upstream_ssl: ssl.SSLContext | None = None  # for wss:// upstreams; None = system CAs
    max_frame_bytes: int = 1 << 20  # largest message, either direction
    max_id_length: int = 48
    connect_timeout: float = 10.0
    # "per_hop": the relay answers each side's pings and cuts them out; "end_to_end": they pass through.
    ping_mode: Literal["per_hop", "end_to_end"] = "per_hop"
    # Per hop: a side silent this long gets a relay ping; None = no pings, no liveness check.
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0  # then closed (1011) if still silent this much longer
    close_timeout: float = 5.0  # for a closing handshake to end before both sockets are cut
    tap_queue_size: int = 1024
    write_buffer_limit: int = 64 * 1024  # per socket; above it the other side stops being read
    # Off by default: reading proxy settings from the environment costs a scan of os.environ per
    # charger connection, and a relay next to its CSMS rarely needs one. HTTP CONNECT proxies only.
    use_env_proxy: bool = False

    @classmethod
    def from_settings(cls, s: RelaySettings) -> RelayConfig:
        return cls(
            upstreams=[Upstream(u.pattern, u.url) for u in s.upstreams],
            host=s.host,
            port=s.port,
            tls_cert=s.tls_cert,
            tls_key=s.tls_key,
            max_frame_bytes=s.max_frame_bytes,
            ping_mode=s.ping_mode,
            ping_interval=s.ping_interval_s,
            ping_timeout=s.ping_timeout_s,
        )


def validate_charge_point_id(raw_segment: str, max_length: int = 48) -> str | None:
    """The decoded charger id, or None when the path segment must be refused."""
    if not raw_segment or len(raw_segment) > max_length * 3 or not _RAW_SEGMENT_RE.fullmatch(raw_segment):
        return None
    cp_id = unquote(raw_segment, errors="strict") if "%" in raw_segment else raw_segment
    if (
        len(cp_id) > max_length
        or not _ID_RE.fullmatch(cp_id)  # also refuses decoded '/', '\\', '%', NUL, spaces
        or ".." in cp_id
        or cp_id == "."
    ):
        return None
    return cp_id


class _Refused(Exception):
    def __init__(self, status: int, head: Head, body: bytes) -> None:
        super().__init__(status)
        self.status, self.head, self.body = status, head, body


class _ChargerReader(HeadReader):
    """A new charger socket: reads the upgrade request, then hands the socket to the splice."""

    def __init__(self, relay: OcppRelay) -> None:
        # A charger has no reason to send more than its request before the 101.
        super().__init__(max_buffer=64 * 1024)
        self.relay = relay

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.relay._opening_started(self)


class _Hop(FrameSplicer, asyncio.Protocol):
    """One socket of a relayed connection; as a splicer it forwards what this socket reads."""

    __slots__ = (
        "close_rcvd",
        "counters",
        "direction",
        "got_close",
        "is_charger",
        "link",
        "lost",
        "paused",
        "peer",
        "ping_pending",
        "probe_at",
        "quiet_since",
        "tap",
        "transport",
    )

    peer: _Hop

    def __init__(
        self, link: _Link, transport: asyncio.Transport, out: asyncio.Transport, is_charger: bool, max_message: int
    ) -> None:
        # The charger is the client of its hop, so its frames are masked; the CSMS's are not.
        super().__init__(out.write, masked=is_charger, max_message=max_message)
        self.link = link
        self.transport = transport
        self.is_charger = is_charger
        self.direction: Literal["cs", "csms"] = "cs" if is_charger else "csms"
        self.tap = link.tap
        self.counters = link.relay.counters
        self.lost = False
        self.paused = False  # not read because the other side is not reading
        self.close_rcvd: tuple[int, str] | None = None  # close frame this side sent
        self.got_close = False  # a close frame was written to this side
        self.ping_pending = False  # a ping from the other end reached this side, no pong yet
        self.quiet_since = 0.0
        self.probe_at: float | None = None

    data_received = FrameSplicer.feed  # the hot path: no extra call

    def eof_received(self) -> bool:
        return False  # close our end too; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self.link.hop_lost(self)

    # Flow control, end to end: this side's socket buffer is full, so stop reading the other side.
    def pause_writing(self) -> None:
        peer = self.peer
        if not peer.transport.is_closing():  # uvloop raises on a closed handle
            peer.paused = True
            peer.transport.pause_reading()

    def resume_writing(self) -> None:
        peer = self.peer
        if not peer.transport.is_closing():
            peer.paused = False
            peer.transport.resume_reading()

    def close_frame(self, code: int) -> bytes:
        """A close frame to send to this side (masked toward the CSMS: the relay is its client)."""
        return encode_frame(OP_CLOSE, close_payload(code), mask=not self.is_charger)

    # --- splicer hooks --------------------------------------------------------------------------

    def _wants(self, opcode: int) -> bool:
        return self.tap.wants(self.direction)

    def _on_message(self, opcode: int, payload: bytes | None, size: int) -> None:
        c = self.counters
        if self.is_charger:
            c.frames_cs_to_csms += 1
            c.bytes_cs_to_csms += size
        else:
            c.frames_csms_to_cs += 1
            c.bytes_csms_to_cs += size
        if payload is not None:
            # Before these bytes are written, so a call's id is recorded before its answer can come.
            self.tap.offer(self.direction, payload)

    def _on_control(self, opcode: int, payload: bytes) -> bool:
        if opcode == OP_PONG:
            if payload == self.link.relay.ping_token:
                return False  # the answer to the relay's own ping: not the other end's business
            if self.link.relay.pings_per_hop:
                return False  # unsolicited (a heartbeat): it was for this hop
            self.ping_pending = False
        elif opcode == OP_PING:
            if self.link.relay.pings_per_hop:
                # RFC 6455 5.5.2: answered by this hop's endpoint, with the same payload, unless this
                # side has already sent its close frame. Into the stream toward this side, after the
                # frame it is in the middle of.
                if self.close_rcvd is None:
                    self.peer.inject(encode_frame(OP_PONG, payload, mask=not self.is_charger))
                return False
            self.peer.ping_pending = True
        else:
            self.close_rcvd = parse_close(payload)
            if self.discard:  # not passed on (the other side is closed or gone): settle here
                self.link.settle(self)
        return True

    def _on_close_out(self) -> None:
        self.peer.got_close = True
        self.link.settle(self.peer)
        self.link.settle(self)

    def _on_oversize(self) -> None:
        log.info("%s: message over %d bytes from the %s", self.link.cp_id, self.max_message, self.direction)
        self.link.fail(self, 1009, abort=False)

    def _on_violation(self, why: str) -> None:
        self.counters.protocol_errors += 1
        log.warning("%s: protocol error from the %s: %s", self.link.cp_id, self.direction, why)
        self.link.fail(self, 1002, abort=True)

    def _on_undecodable(self) -> None:
        self.counters.undecoded += 1
        log.warning("%s: cannot inflate a message from the %s; tap off for it", self.link.cp_id, self.direction)


class _Link:
    """A charger and its CSMS connection, spliced; owns the closing rules."""

    __slots__ = ("closing", "cp_id", "cs", "csms", "done", "relay", "subprotocol", "tap", "timer")

    cs: _Hop
    csms: _Hop

    def __init__(self, relay: OcppRelay, cp_id: str, subprotocol: str | None, tap: FrameTap) -> None:
        self.relay = relay
        self.cp_id = cp_id
        self.subprotocol = subprotocol
        self.tap = tap
        self.closing = False
        self.done = False
        self.timer: asyncio.TimerHandle | None = None

    def _arm(self) -> None:
        """Closing has begun: whatever happens, both sockets are gone after close_timeout."""
        self.closing = True
        if self.timer is None and not self.done:
            self.timer = asyncio.get_running_loop().call_later(self.relay.config.close_timeout, self._expire)

    def _expire(self) -> None:
        self.timer = None
        for hop in (self.cs, self.csms):
            if not hop.lost:
                self.disconnect(hop, abort=True)

    @staticmethod
    def disconnect(hop: _Hop, abort: bool = False) -> None:
        """Close one side's socket; nothing may be written to it any more (uvloop would raise)."""
        hop.peer.discard = True
        if abort:
            hop.transport.abort()
        else:
            hop.transport.close()  # after what was already written

    def settle(self, hop: _Hop) -> None:
        """After a close frame passed: a charger whose closing handshake is complete is disconnected
        (the relay is its server, and the server closes TCP first); the CSMS will disconnect itself."""
        self._arm()
        if not hop.lost and hop.is_charger and hop.got_close and hop.close_rcvd is not None:
            self.disconnect(hop)

    def hop_lost(self, hop: _Hop) -> None:
        hop.lost = True
        peer = hop.peer
        peer.discard = True  # peer's bytes were going to the socket that is gone
        if peer.lost:
            self._finish()
            return
        self._arm()
        if peer.got_close:
            self.settle(peer)
        elif hop.at_boundary() and not hop.dead:
            hop.inject(peer.close_frame(1001), close=True)  # "going away", as websockets said it
        else:
            self.disconnect(peer)  # mid-frame: there is no well-formed way to say goodbye

    def fail(self, hop: _Hop, code: int, abort: bool) -> None:
        """The relay ends the link because of `hop`: `code` to it, 1001 to the other side."""
        self._arm()
        peer = hop.peer
        if not peer.lost and not peer.got_close:
            if hop.at_boundary():
                hop.inject(peer.close_frame(1001), close=True)
            else:
                self.disconnect(peer)
        hop.discard = True  # nothing more from this side goes on
        if not hop.lost and not hop.got_close:
            peer.inject(hop.close_frame(code), close=True)  # after the other side's current frame
        if abort and not hop.lost:
            self.disconnect(hop)  # flushes what was written (the close frame, if it could go), then goes

    def shutdown(self) -> None:
        """Relay stopping: 1001 to both sides, each after the frame it is receiving."""
        self._arm()
        for hop in (self.cs, self.csms):
            if not hop.lost and not hop.got_close:
                hop.peer.inject(hop.close_frame(1001), close=True)

    def _finish(self) -> None:
        if self.done:
            return
        self.done = True
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        self.relay._link_finished(self)


def _close_text(hop: _Hop) -> str:
    return f"{hop.close_rcvd[0] if hop.close_rcvd else None}{'' if hop.got_close else ' (none sent to it)'}"


class OcppRelay:
    """One listening socket, any number of charger connections, each with its own upstream."""

    def __init__(self, config: RelayConfig, decoder: FrameDecoder | None = None, sink: EventSink | None = None) -> None:
        self.config = config
        self.decoder = decoder
        self.sink = sink
        self.counters = RelayCounters()
        if config.ping_mode not in ("per_hop", "end_to_end"):
            raise ValueError(f"ping_mode must be per_hop or end_to_end, not {config.ping_mode!r}")
        self.pings_per_hop = config.ping_mode == "per_hop"
        # Payload of the relay's own pings; random per relay so a peer's ping never looks like one.
        self.ping_token = b"baywarden-relay:" + os.urandom(8).hex().encode()
        self._server: asyncio.Server | None = None
        self._links: set[_Link] = set()
        self._opening: set[asyncio.Task[None]] = set()
        self._background: set[asyncio.Task[None]] = set()
        self._keepalive_task: asyncio.Task[None] | None = None
        self._default_ssl: ssl.SSLContext | None = None
        self._upstream_up: dict[str, bool] = {}  # upstream URL -> reachable at the last attempt

    # --- lifecycle ------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        assert self._server is not None, "relay not started"
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        c = self.config
        ssl_ctx = None
        if c.tls_cert is not None:
            ssl_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ssl_ctx.load_cert_chain(c.tls_cert, c.tls_key)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _ChargerReader(self),
            c.host,
            c.port,
            ssl=ssl_ctx,
            ssl_handshake_timeout=c.connect_timeout + 10 if ssl_ctx else None,
            backlog=1024,
        )
        if c.ping_interval:
            self._keepalive_task = asyncio.create_task(self._keepalive(c.ping_interval, c.ping_timeout))
        log.info("ocpp relay listening on %s:%d", c.host, self.port)

    async def stop(self) -> None:
        if self._server is None:
            return
        server, self._server = self._server, None
        server.close()
        if self._keepalive_task is not None:
            self._keepalive_task.cancel()
            self._keepalive_task = None
        for task in list(self._opening):
            task.cancel()
        await asyncio.gather(*self._opening, return_exceptions=True)
        for link in list(self._links):
            link.shutdown()  # chargers get 1001, and so does the CSMS of each
        await self._until_no_links(self.config.close_timeout + 1)
        for link in list(self._links):
            for hop in (link.cs, link.csms):
                if not hop.lost:
                    link.disconnect(hop, abort=True)
        await self._until_no_links(1.0)
        await server.wait_closed()
        while self._background:  # the last decoded events and "disconnected" go out
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def _until_no_links(self, timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._links and loop.time() < deadline:
            await asyncio.sleep(0.01)

    def metrics(self) -> dict[str, int]:
        """Relay counters and decoder statistics as Prometheus sample name -> value."""
        samples = self.counters.prometheus_samples()
        stats = getattr(self.decoder, "stats", None)
        if stats is not None and hasattr(stats, "as_dict"):
            for name, value in stats.as_dict().items():
                samples[f"baywarden_ocpp_decoder_{name}_total"] = value
        return samples

    async def __aenter__(self) -> OcppRelay:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- handshake ------------------------------------------------------------------------------

    def _upstream_for(self, cp_id: str) -> Upstream | None:
        return next((u for u in self.config.upstreams if fnmatchcase(cp_id, u.pattern)), None)

    def _opening_started(self, charger: _ChargerReader) -> None:
        task = asyncio.get_running_loop().create_task(self._open(charger))
        self._opening.add(task)
        task.add_done_callback(self._opening.discard)

    @staticmethod
    def _respond(charger: HeadReader, status: int, body: str | bytes, headers: Sequence[tuple[str, str]] = ()) -> None:
        assert charger.transport is not None
        if not charger.lost:
            data = body.encode() if isinstance(body, str) else body
            charger.transport.write(http_response(status, data, headers))
        charger.transport.close()

    async def _open(self, charger: _ChargerReader) -> None:
        c = self.config
        transport = charger.transport
        assert transport is not None
        upstream: HeadReader | None = None
        try:
            try:
                async with asyncio.timeout(c.connect_timeout + 10):
                    raw = await charger.read_head()
                head = parse_head(raw)
                target = request_target(head)
            except (TimeoutError, ConnectionError):
                transport.abort()
                return
            except BadHead as exc:
                self._respond(charger, 400, f"Failed to open a WebSocket connection: {exc}.\n")
                return

            path, _, query = target.partition("?")
            if not path.startswith(c.path_prefix):
                self.counters.rejected_bad_id += 1
                self._respond(charger, 404, "Not Found\n")
                return
            segment = path[len(c.path_prefix) :]
            try:
                cp_id = validate_charge_point_id(segment, c.max_id_length)
            except UnicodeDecodeError:
                cp_id = None
            if cp_id is None:
                self.counters.rejected_bad_id += 1
                self._respond(charger, 400, "Bad charge point id\n")
                return
            if "websocket" not in head.tokens("upgrade") or "upgrade" not in head.tokens("connection"):
                self._respond(charger, 426, "WebSocket upgrade expected\n", [("Upgrade", "websocket")])
                return
            key = head.get("sec-websocket-key")
            if len(head.get_all("sec-websocket-key")) != 1 or not valid_key(key):
                self._respond(charger, 400, "Bad Sec-WebSocket-Key\n")
                return
            if head.get_all("sec-websocket-version") != [b"13"]:
                self._respond(charger, 426, "Unsupported WebSocket version\n", [("Sec-WebSocket-Version", "13")])
                return
            upstream_cfg = self._upstream_for(cp_id)
            if upstream_cfg is None:
                self.counters.rejected_no_upstream += 1
                self._respond(charger, 404, "Unknown charge point\n")
                return
            assert key is not None

            url = upstream_cfg.url.rstrip("/") + "/" + segment + (f"?{query}" if query else "")
            forwarded: list[tuple[str, bytes]] = [("Sec-WebSocket-Key", key)]
            forwarded += [("Sec-WebSocket-Protocol", v) for v in head.get_all("sec-websocket-protocol")]
            offer = deflate_offer(head.get_all("sec-websocket-extensions"))
            if offer is not None:
                forwarded.append(("Sec-WebSocket-Extensions", offer))
            user_agent = head.get("user-agent")
            if user_agent is not None:
                forwarded.append(("User-Agent", user_agent))
            auth = [("Authorization", v) for v in head.get_all("authorization")]
            offered = subprotocols(head.get_all("sec-websocket-protocol"))

            try:
                async with asyncio.timeout(c.connect_timeout):
                    upstream, raw_101, head_101 = await self._connect_upstream(url, forwarded, auth)
                subprotocol, deflate = self._check_101(head_101, key, offered, offer is not None)
                self._upstream_seen(upstream_cfg, True, cp_id, "a charger's connection was forwarded")
            except _Refused as r:
                self._upstream_seen(upstream_cfg, True, cp_id, f"answered HTTP {r.status}")
                self.counters.upstream_refused += 1
                log.info("CSMS refused %s: HTTP %d", cp_id, r.status)
                headers = [(n, t) for n in _REFUSAL_HEADERS if (t := r.head.text(n.lower())) is not None]
                self._respond(charger, r.status, r.body, headers)  # the body byte for byte
                return
            except TimeoutError:
                self.counters.upstream_timeout += 1
                log.warning("CSMS did not answer in %.1fs for %s", c.connect_timeout, cp_id)
                self._upstream_seen(upstream_cfg, False, cp_id, f"no answer within {c.connect_timeout:g} s")
                self._respond(charger, 504, "Upstream timeout\n")
                return
            except (OSError, BadHead, ValueError) as exc:
                self.counters.upstream_failed += 1
                log.warning("cannot reach CSMS for %s: %s", cp_id, exc)
                self._upstream_seen(upstream_cfg, False, cp_id, str(exc))
                self._respond(charger, 502, "Upstream unavailable\n")
                return

            assert upstream.transport is not None
            if charger.lost:  # the charger gave up while we waited
                upstream.transport.write(encode_frame(OP_CLOSE, close_payload(1001), mask=True))
                upstream.transport.close()
                return
            self._splice(charger, upstream, raw_101, cp_id, subprotocol, deflate)
            upstream = None
        except BaseException:
            transport.abort()
            raise
        finally:
            if upstream is not None and upstream.transport is not None:
                upstream.transport.abort()

    async def _connect_upstream(
        self, url: str, forwarded: list[tuple[str, bytes]], auth: list[tuple[str, bytes]]
    ) -> tuple[HeadReader, bytes, Head]:
        """Open the CSMS hop up to its 101; raises _Refused for any other final answer."""
        for _ in range(_MAX_REDIRECTS):
            parts = urlsplit(url)
            if parts.scheme not in ("ws", "wss") or not parts.hostname:
                raise ValueError(f"not a ws:// or wss:// URL: {url}")
            secure = parts.scheme == "wss"
            host, port = parts.hostname, parts.port or (443 if secure else 80)
            host_header = f"[{host}]" if ":" in host else host
            if port != (443 if secure else 80):
                host_header += f":{port}"
            headers = list(forwarded)
            if parts.username is not None:
                userinfo = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
                headers.append(("Authorization", b"Basic " + base64.b64encode(userinfo.encode())))
            headers += auth
            upstream = await self._open_socket(host, port, secure)
            assert upstream.transport is not None
            try:
                target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
                upstream.transport.write(upgrade_request(target, host_header, headers))
                raw = await upstream.read_head()
                head = parse_head(raw)
                status = response_status(head)
                if status == 101:
                    return upstream, raw, head
                body = await upstream.read_body(head, status)
            except BaseException:
                upstream.transport.abort()
                raise
            upstream.transport.close()
            location = head.text("location")
            if status not in _REDIRECTS or location is None:
                raise _Refused(status, head, body)
            new = urljoin(url, location)
            new_parts = urlsplit(new)
            if secure and new_parts.scheme != "wss":
                raise BadHead(f"redirect to non-secure {new}")
            if (new_parts.scheme, new_parts.hostname, new_parts.port) != (parts.scheme, host, parts.port):
                auth = []  # websockets' rule: no credentials to another origin
            url = new
        raise BadHead(f"more than {_MAX_REDIRECTS} redirects")

    @staticmethod
    def _check_101(
        head: Head, key: bytes, offered: list[str], deflate_offered: bool
    ) -> tuple[str | None, Deflate | None]:
        """What websockets' client checked: the charger will trust what we pass on."""
        if "websocket" not in head.tokens("upgrade") or "upgrade" not in head.tokens("connection"):
            raise BadHead("101 without Upgrade: websocket")
        if head.get_all("sec-websocket-accept") != [accept_value(key)]:
            raise BadHead("wrong Sec-WebSocket-Accept")
        chosen = subprotocols(head.get_all("sec-websocket-protocol"))
        if len(chosen) > 1 or (chosen and chosen[0] not in offered):
            raise BadHead(f"subprotocol {chosen} was not offered")
        deflate = negotiated_deflate(head.get_all("sec-websocket-extensions"), deflate_offered)
        return (chosen[0] if chosen else None), deflate

    async def _open_socket(self, host: str, port: int, secure: bool) -> HeadReader:
        loop = asyncio.get_running_loop()
        ctx: ssl.SSLContext | None = None
        if secure:
            ctx = self.config.upstream_ssl
            if ctx is None:
                if self._default_ssl is None:  # loading the system CAs once, not per charger
                    self._default_ssl = ssl.create_default_context()
                ctx = self._default_ssl
        sock = await self._via_proxy(host, port, secure) if self.config.use_env_proxy else None
        if sock is None:
            _, reader = await loop.create_connection(
                HeadReader, host, port, ssl=ctx, server_hostname=host if ctx else None
            )
        else:
            _, reader = await loop.create_connection(
                HeadReader, sock=sock, ssl=ctx, server_hostname=host if ctx else None
            )
        return reader

    async def _via_proxy(self, host: str, port: int, secure: bool) -> socket.socket | None:
        """A socket tunnelled through the environment's HTTP proxy (CONNECT), if one applies."""
        if urllib.request.proxy_bypass(f"{host}:{port}"):  # type: ignore[attr-defined]
            return None
        proxies = urllib.request.getproxies()
        schemes = ["wss", "socks", "https"] if secure else ["ws", "socks", "https", "http"]
        proxy = next((proxies[s] for s in schemes if s in proxies), None)
        if proxy is None:
            return None
        p = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if p.scheme != "http" or not p.hostname:
            raise OSError(f"proxy {p.scheme}://{p.hostname} is not supported (HTTP CONNECT proxies only)")
        loop = asyncio.get_running_loop()
        family, kind, proto, _, addr = (await loop.getaddrinfo(p.hostname, p.port or 8080, type=socket.SOCK_STREAM))[0]
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, addr)
            authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
            request = f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n"
            if p.username is not None:
                creds = base64.b64encode(f"{unquote(p.username)}:{unquote(p.password or '')}".encode()).decode()
                request += f"Proxy-Authorization: Basic {creds}\r\n"
            await loop.sock_sendall(sock, (request + "\r\n").encode())
            buf = b""
            while b"\r\n\r\n" not in buf:
                chunk = await loop.sock_recv(sock, 4096)
                if not chunk or len(buf) > 16384:
                    raise ConnectionError("proxy closed or sent a bad answer")
                buf += chunk
            status = response_status(parse_head(buf[: buf.index(b"\r\n\r\n") + 4]))
            if status != 200:
                raise ConnectionError(f"proxy refused CONNECT: HTTP {status}")
        except BaseException:
            sock.close()
            raise
        return sock

    # --- splicing -------------------------------------------------------------------------------

    def _splice(
        self,
        charger: HeadReader,
        upstream: HeadReader,
        raw_101: bytes,
        cp_id: str,
        subprotocol: str | None,
        deflate: Deflate | None,
    ) -> None:
        c = self.config
        ch_t, up_t = charger.transport, upstream.transport
        assert ch_t is not None and up_t is not None
        tap = FrameTap(cp_id, self.decoder, self.sink, self.counters, c.tap_queue_size)
        link = _Link(self, cp_id, subprotocol, tap)
        cs = link.cs = _Hop(link, ch_t, up_t, True, c.max_frame_bytes)  # reads the charger, writes the CSMS
        csms = link.csms = _Hop(link, up_t, ch_t, False, c.max_frame_bytes)
        cs.peer, csms.peer = csms, cs
        if deflate is not None:
            tracked = self.decoder is not None
            cs.use_deflate(deflate.client_max_window_bits, deflate.client_no_context_takeover, tracked)
            csms.use_deflate(deflate.server_max_window_bits, deflate.server_no_context_takeover, tracked)
        now = asyncio.get_running_loop().time()
        cs.quiet_since = csms.quiet_since = now
        for t in (ch_t, up_t):
            t.set_write_buffer_limits(high=c.write_buffer_limit)
        ch_t.set_protocol(cs)
        up_t.set_protocol(csms)
        ch_t.write(raw_101)

        self.counters.connections_total += 1
        self.counters.connections_active += 1
        self._links.add(link)
        self._emit_connection(cp_id, True, subprotocol)
        tap.start(subprotocol)
        log.info("relay open %s subprotocol=%s", cp_id, subprotocol)

        # A reader may have paused its socket; resume before the leftovers, which may pause it again.
        for t in (ch_t, up_t):
            if not t.is_closing():
                t.resume_reading()
        # Whatever came with or after the heads (a CSMS may send a frame in the segment of its 101).
        if upstream.buf:
            csms.data_received(bytes(upstream.buf))
        if charger.buf:
            cs.data_received(bytes(charger.buf))
        if upstream.lost:  # gone before the hand-over: its connection_lost went to the reader
            csms.connection_lost(None)
        if charger.lost:
            cs.connection_lost(None)

    def _link_finished(self, link: _Link) -> None:
        self._links.discard(link)
        self.counters.connections_active -= 1
        task = asyncio.get_running_loop().create_task(self._closed(link))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _closed(self, link: _Link) -> None:
        await link.tap.stop()  # the session's last decoded events go out before "disconnected"
        self._emit_connection(link.cp_id, False, link.subprotocol)
        log.info(
            "relay closed %s: charger sent %s, csms sent %s", link.cp_id, _close_text(link.cs), _close_text(link.csms)
        )

    def _upstream_seen(self, upstream: Upstream, up: bool, cp_id: str, detail: str) -> None:
        """Tell the sink when an upstream changes between reachable and not (the first failure after a
        success, or after start; the first success after a failure), never once per charger."""
        key = upstream.url
        if self._upstream_up.get(key) == up or (up and key not in self._upstream_up):
            self._upstream_up[key] = up
            return
        self._upstream_up[key] = up
        if self.sink is None:
            return
        try:
            event = RelayUpstreamChanged(at=datetime.now(UTC), upstream=redact_url(key)[:300], up=up,
                                         detail=redact(detail)[:500], charge_point_id=cp_id)
            self.sink([event])
            self.counters.events_emitted += 1
        except Exception:
            self.counters.sink_errors += 1
            log.exception("event sink raised for upstream %s", redact_url(key))

    def _emit_connection(self, cp_id: str, connected: bool, protocol: str | None) -> None:
        if self.sink is None:
            return
        try:
            event = ChargerConnection(
                at=datetime.now(UTC), charge_point_id=cp_id, connected=connected, protocol=protocol
            )
            self.sink([event])
            self.counters.events_emitted += 1
        except Exception:
            self.counters.sink_errors += 1
            log.exception("event sink raised for %s", cp_id)

    # --- per-hop liveness -----------------------------------------------------------------------

    async def _keepalive(self, interval: float, timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        tick = max(0.05, min(interval, timeout or interval) / 4)
        counters = self.counters
        while True:
            await asyncio.sleep(tick)
            now = loop.time()
            for link in list(self._links):
                if link.closing:
                    continue
                for hop in (link.cs, link.csms):
                    if hop.rx or hop.paused:  # heard from it (or not reading it, on purpose)
                        hop.rx = False
                        hop.quiet_since = now
                        hop.probe_at = None
                    elif hop.probe_at is not None:
                        if timeout is not None and now - hop.probe_at >= timeout:
                            counters.liveness_timeouts += 1
                            log.info("%s: the %s did not answer a ping; closing", link.cp_id, hop.direction)
                            link.fail(hop, 1011, abort=True)
                            break
                    elif now - hop.quiet_since >= interval:
                        hop.probe_at = now
                        if not hop.ping_pending:  # else the other end's ping is the probe
                            hop.peer.inject(encode_frame(OP_PING, self.ping_token, mask=not hop.is_charger))
                            counters.pings_sent += 1

