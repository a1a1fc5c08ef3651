"""Transparent, fail-open OCPP-J WebSocket relay between charge points and one or more CSMS.

Per charger connection, in this order:

1. validate the path ``{prefix}{charge_point_id}`` (400/404 before anything else happens);
2. connect upstream with the same path suffix, the same offered subprotocols, the charger's
   ``Authorization`` header, and permessage-deflate only if the charger offered it;
3. only then accept the charger, with the subprotocol (and compression) the CSMS chose. A CSMS
   refusal is answered to the charger with the same HTTP status; no answer in time -> 504;
   any other failure to connect -> 502.

Connecting upstream first means nothing the charger says right after its handshake can be lost:
its frames wait in the socket until the forwarding loops start.

Frames are forwarded unchanged (text stays text, binary stays binary), in order, one loop per
direction; when one side closes, the other is closed with the same code and reason. The tap
(`ocpp_link.tap`) sees each frame without ever being awaited by the forwarding loops.
The event sink also gets a `ChargerConnection` when a charger's link opens and after it closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import re
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import unquote

from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.headers import parse_subprotocol
from websockets.http11 import Request, Response
from websockets.protocol import State

from models.events import ChargerConnection
from ocpp_link.tap import EventSink, FrameDecoder, FrameTap, RelayCounters

if TYPE_CHECKING:
    from models.settings import RelaySettings

log = logging.getLogger(__name__)

# OCPP identifierString characters (2.0.1 part 4 uses them for the identity; 1.6 chargers in
# the field stay within them too). Anything else, '..' and encoded separators are refused.
_ID_RE = re.compile(r"[A-Za-z0-9*\-_=:+|@.]+")
_RAW_SEGMENT_RE = re.compile(r"[A-Za-z0-9*\-_=:+|@.%]+")
# Reserved close codes that must not be sent on the wire (RFC 6455 7.4.1).
_UNSENDABLE = {1005, 1006, 1015}
# Headers of a CSMS refusal worth passing to the charger.
_REFUSAL_HEADERS = ("WWW-Authenticate", "Retry-After", "Content-Type")


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
    max_frame_bytes: int = 1 << 20
    max_id_length: int = 48
    connect_timeout: float = 10.0
    ping_interval: float | None = 20.0  # per hop, websockets keepalive
    ping_timeout: float | None = 20.0
    close_timeout: float = 5.0
    tap_queue_size: int = 1024
    # Off by default: reading proxy settings from the environment costs a scan of os.environ per
    # charger connection, and a relay next to its CSMS rarely needs one.
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


def _status(code: int) -> http.HTTPStatus:
    try:
        return http.HTTPStatus(code)
    except ValueError:
        return http.HTTPStatus.BAD_GATEWAY


class OcppRelay:
    """One listening socket, any number of charger connections, each with its own upstream."""

    def __init__(self, config: RelayConfig, decoder: FrameDecoder | None = None, sink: EventSink | None = None) -> None:
        self.config = config
        self.decoder = decoder
        self.sink = sink
        self.counters = RelayCounters()
        self._server: Server | None = None
        self._handoff: dict[ServerConnection, ClientConnection] = {}
        self._background: set[asyncio.Task[Any]] = set()

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
        self._server = await serve(
            self._handle,
            c.host,
            c.port,
            ssl=ssl_ctx,
            process_request=self._process_request,
            select_subprotocol=self._select_subprotocol,
            # Enabled here, then removed per connection unless the CSMS accepted it too.
            compression="deflate",
            max_size=c.max_frame_bytes,
            ping_interval=c.ping_interval,
            ping_timeout=c.ping_timeout,
            close_timeout=c.close_timeout,
            open_timeout=c.connect_timeout + 10,
            server_header=None,  # transparent: the charger talks to "the CSMS"
        )
        log.info("ocpp relay listening on %s:%d", c.host, self.port)

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close(close_connections=True)  # chargers get 1001, mirrored upstream
        await self._server.wait_closed()
        for upstream in list(self._handoff.values()):
            await upstream.close(1001)
        self._handoff.clear()
        self._server = None

    async def serve_forever(self) -> None:
        await self.start()
        assert self._server is not None
        try:
            await self._server.serve_forever()
        finally:
            await self.stop()

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

    async def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        c = self.config
        path, _, query = request.path.partition("?")
        if not path.startswith(c.path_prefix):
            self.counters.rejected_bad_id += 1
            return connection.respond(http.HTTPStatus.NOT_FOUND, "Not Found\n")
        segment = path[len(c.path_prefix) :]
        try:
            cp_id = validate_charge_point_id(segment, c.max_id_length)
        except UnicodeDecodeError:
            cp_id = None
        if cp_id is None:
            self.counters.rejected_bad_id += 1
            return connection.respond(http.HTTPStatus.BAD_REQUEST, "Bad charge point id\n")
        upstream_cfg = self._upstream_for(cp_id)
        if upstream_cfg is None:
            self.counters.rejected_no_upstream += 1
            return connection.respond(http.HTTPStatus.NOT_FOUND, "Unknown charge point\n")

        url = upstream_cfg.url.rstrip("/") + "/" + segment + (f"?{query}" if query else "")
        headers = request.headers
        subprotocols = [p for v in headers.get_all("Sec-WebSocket-Protocol") for p in parse_subprotocol(v)]
        offered_deflate = any("permessage-deflate" in v for v in headers.get_all("Sec-WebSocket-Extensions"))
        extra = [("Authorization", v) for v in headers.get_all("Authorization")]
        try:
            upstream = await connect(
                url,
                subprotocols=subprotocols or None,  # type: ignore[arg-type]
                additional_headers=extra,
                user_agent_header=headers.get("User-Agent"),
                compression="deflate" if offered_deflate else None,
                open_timeout=c.connect_timeout,
                max_size=c.max_frame_bytes,
                ping_interval=c.ping_interval,
                ping_timeout=c.ping_timeout,
                close_timeout=c.close_timeout,
                ssl=c.upstream_ssl if url.startswith("wss://") else None,
                proxy=True if c.use_env_proxy else None,
            )
        except InvalidStatus as exc:
            self.counters.upstream_refused += 1
            r = exc.response
            log.info("CSMS refused %s: HTTP %d", cp_id, r.status_code)
            response = connection.respond(_status(r.status_code), r.body.decode("utf-8", "replace"))
            for name in _REFUSAL_HEADERS:
                if name in r.headers:
                    if name in response.headers:
                        del response.headers[name]
                    response.headers[name] = r.headers[name]
            return response
        except TimeoutError:
            self.counters.upstream_timeout += 1
            log.warning("CSMS did not answer in %.1fs for %s", c.connect_timeout, cp_id)
            return connection.respond(http.HTTPStatus.GATEWAY_TIMEOUT, "Upstream timeout\n")
        except (OSError, InvalidHandshake, InvalidURI) as exc:
            self.counters.upstream_failed += 1
            log.warning("cannot reach CSMS for %s: %s", cp_id, exc)
            return connection.respond(http.HTTPStatus.BAD_GATEWAY, "Upstream unavailable\n")

        if connection.transport.is_closing():  # the charger gave up while we waited
            await upstream.close(1001)
            return connection.respond(http.HTTPStatus.BAD_GATEWAY, "Gone\n")
        if not any(e.name == "permessage-deflate" for e in upstream.protocol.extensions):
            connection.protocol.available_extensions = []  # type: ignore[attr-defined]
        self._handoff[connection] = upstream
        # If the handshake never reaches the handler, do not leak the upstream socket.
        asyncio.get_running_loop().call_later(c.connect_timeout + 10, self._reap, connection)
        connection.cp_id = cp_id  # type: ignore[attr-defined]
        return None

    def _select_subprotocol(self, connection: ServerConnection, offered: Sequence[str]) -> str | None:
        upstream = self._handoff.get(connection)
        return upstream.subprotocol if upstream is not None else None

    def _reap(self, connection: ServerConnection) -> None:
        upstream = self._handoff.pop(connection, None)
        if upstream is not None:
            task = asyncio.ensure_future(upstream.close(1001))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    # --- forwarding -----------------------------------------------------------------------------

    async def _handle(self, charger: ServerConnection) -> None:
        upstream = self._handoff.pop(charger, None)
        if upstream is None:
            await charger.close(1011, "relay: no upstream")
            return
        cp_id: str = charger.cp_id  # type: ignore[attr-defined]
        counters = self.counters
        counters.connections_total += 1
        counters.connections_active += 1
        tap = FrameTap(cp_id, self.decoder, self.sink, counters, self.config.tap_queue_size)
        self._emit_connection(cp_id, True, upstream.subprotocol)
        tap.start(upstream.subprotocol)
        log.info("relay open %s subprotocol=%s", cp_id, upstream.subprotocol)
        up = asyncio.create_task(self._pump(charger, upstream, "cs", tap))
        down = asyncio.create_task(self._pump(upstream, charger, "csms", tap))
        try:
            done, _ = await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
            first = done.pop()
            src, dst = (charger, upstream) if first is up else (upstream, charger)
            ended = src if first.result() == "src" else dst
            other = dst if ended is src else src
            await self._mirror_close(ended, other)
            await asyncio.wait({up, down}, timeout=self.config.close_timeout)
        finally:
            for t in (up, down):
                t.cancel()
            for conn in (charger, upstream):
                if conn.state is not State.CLOSED:  # only on an unexpected error or cancellation
                    with contextlib.suppress(Exception):
                        await conn.close(1011, "relay error")
            counters.connections_active -= 1
            await tap.stop()  # the session's last decoded events go out before "disconnected"
            self._emit_connection(cp_id, False, upstream.subprotocol)
            log.info("relay closed %s: charger %s, csms %s", cp_id, _close_text(charger), _close_text(upstream))

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

    async def _pump(
        self,
        src: ServerConnection | ClientConnection,
        dst: ServerConnection | ClientConnection,
        direction: Literal["cs", "csms"],
        tap: FrameTap,
    ) -> Literal["src", "dst"]:
        """Forward frames src -> dst until one side closes; says which one did."""
        recv, send, offer, counters = src.recv, dst.send, tap.offer, self.counters
        up = direction == "cs"
        while True:
            try:
                frame = await recv()
            except ConnectionClosed:
                return "src"
            # Offer before sending: the prefilter must record a call's id before its answer
            # can come back on the other loop.
            offer(direction, frame)
            try:
                await send(frame)
            except ConnectionClosed:
                return "dst"
            if up:
                counters.frames_cs_to_csms += 1
                counters.bytes_cs_to_csms += len(frame)
            else:
                counters.frames_csms_to_cs += 1
                counters.bytes_csms_to_cs += len(frame)

    @staticmethod
    async def _mirror_close(
        ended: ServerConnection | ClientConnection, other: ServerConnection | ClientConnection
    ) -> None:
        rcvd = ended.protocol.close_rcvd
        code: int | None
        if rcvd is not None and rcvd.code == 1005:
            code, reason = None, ""  # empty close frame: the other end also sees "no status"
        elif rcvd is not None and rcvd.code not in _UNSENDABLE:
            code, reason = rcvd.code, rcvd.reason
        else:
            # Nothing to mirror: the side died (1006) or the relay closed it (oversize frame,
            # invalid UTF-8, ping timeout). The other side only learns its peer went away.
            code, reason = 1001, ""
        with contextlib.suppress(Exception):
            await other.close(code, reason)  # type: ignore[arg-type]


def _close_text(conn: ServerConnection | ClientConnection) -> str:
    r, s = conn.protocol.close_rcvd, conn.protocol.close_sent
    return f"rcvd={r.code if r else None} sent={s.code if s else None}"


def run_relay(config: RelayConfig, decoder: FrameDecoder | None = None, sink: EventSink | None = None) -> None:
    """Blocking entry point: serve until interrupted, on uvloop when it is installed."""
    relay = OcppRelay(config, decoder, sink)
    try:
        import uvloop
    except ImportError:
        asyncio.run(relay.serve_forever())
    else:
        uvloop.run(relay.serve_forever())
