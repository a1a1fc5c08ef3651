"""The HTTP/1.1 side of the splicing relay: the WebSocket upgrade on both hops.

The relay forwards the charger's upgrade request to the CSMS with the same ``Sec-WebSocket-Key``,
so the CSMS's ``Sec-WebSocket-Accept`` is valid for the charger too, and with the same
subprotocol and permessage-deflate offers, so whatever the CSMS answers both ends agree on. The
CSMS's 101 response goes to the charger byte for byte. Only ``Host`` (and the path prefix) change.

`HeadReader` is the asyncio protocol of a socket while its HTTP head is read; once the relay
splices, it hands over whatever came after the head (a CSMS may put its first frames in the same
TCP segment as its 101).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import http
import re
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import formatdate

MAX_HEAD = 32 * 1024  # request or response line plus headers
MAX_BODY = 1 << 20  # body of a refusal; websockets' default limit
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_TOKEN_RE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Header values are forwarded as they came, so nothing that could end a line may be in them.
_BAD_VALUE_RE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
_DEFLATE = "permessage-deflate"


class BadHead(ValueError):
    """An HTTP head that cannot be used."""


@dataclass
class Head:
    """Start line and headers (lower-case name, raw value) in order."""

    start: str
    headers: list[tuple[str, bytes]]

    def get_all(self, name: str) -> list[bytes]:
        return [v for k, v in self.headers if k == name]

    def get(self, name: str) -> bytes | None:
        return next((v for k, v in self.headers if k == name), None)

    def text(self, name: str) -> str | None:
        v = self.get(name)
        return None if v is None else v.decode("latin-1")

    def tokens(self, name: str) -> list[str]:
        """Comma-separated header values, lower-cased (Connection, Upgrade)."""
        return [t.strip().lower() for v in self.get_all(name) for t in v.decode("latin-1").split(",") if t.strip()]


def parse_head(raw: bytes) -> Head:
    """Parse a head ending in CRLF CRLF; raises BadHead."""
    lines = raw[:-4].split(b"\r\n") if raw.endswith(b"\r\n\r\n") else raw.split(b"\r\n")
    try:
        start = lines[0].decode("ascii")
    except UnicodeDecodeError:
        raise BadHead("non-ASCII start line") from None
    headers: list[tuple[str, bytes]] = []
    for line in lines[1:]:
        name, sep, value = line.partition(b":")
        if not sep or not _TOKEN_RE.fullmatch(name):  # also refuses obsolete line folding
            raise BadHead(f"bad header line {line[:40]!r}")
        value = value.strip(b" \t")
        if _BAD_VALUE_RE.search(value):
            raise BadHead(f"control character in header {name.decode()}")
        headers.append((name.decode().lower(), value))
    if len(headers) > 128:
        raise BadHead("too many headers")
    return Head(start, headers)


def request_target(head: Head) -> str:
    """The target of a ``GET ... HTTP/1.1`` request line; raises BadHead."""
    parts = head.start.split(" ")
    if len(parts) != 3 or parts[2] != "HTTP/1.1" or not parts[1]:
        raise BadHead("not an HTTP/1.1 request line")
    if parts[0] != "GET":
        raise BadHead(f"method {parts[0]} is not GET")
    return parts[1]


def response_status(head: Head) -> int:
    parts = head.start.split(" ", 2)
    if len(parts) < 2 or parts[0] not in ("HTTP/1.1", "HTTP/1.0") or not re.fullmatch(r"[1-5]\d\d", parts[1]):
        raise BadHead(f"bad status line {head.start[:60]!r}")
    return int(parts[1])


def accept_value(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + _GUID).digest())


def valid_key(key: bytes | None) -> bool:
    if key is None:
        return False
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except ValueError:
        return False


def split_header_list(value: str) -> list[str]:
    """Split a comma-separated header value, leaving commas inside quoted strings alone."""
    items: list[str] = []
    cur: list[str] = []
    quoted = False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            items.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    items.append("".join(cur).strip())
    return [i for i in items if i]


def subprotocols(values: list[bytes]) -> list[str]:
    return [p for v in values for p in split_header_list(v.decode("latin-1"))]


def deflate_offer(values: list[bytes]) -> bytes | None:
    """The charger's permessage-deflate offers, verbatim; other extensions are not passed on
    (the relay could not follow their framing)."""
    items = [
        item
        for v in values
        for item in split_header_list(v.decode("latin-1"))
        if item.split(";", 1)[0].strip().lower() == _DEFLATE
    ]
    return ", ".join(items).encode("latin-1") if items else None


@dataclass(frozen=True)
class Deflate:
    """permessage-deflate parameters as the CSMS accepted them (RFC 7692 7.1)."""

    client_max_window_bits: int = 15
    server_max_window_bits: int = 15
    client_no_context_takeover: bool = False
    server_no_context_takeover: bool = False


def negotiated_deflate(values: list[bytes], offered: bool) -> Deflate | None:
    """What the CSMS's 101 says about extensions; raises BadHead for anything the relay did not
    offer or cannot follow."""
    items = [i for v in values for i in split_header_list(v.decode("latin-1"))]
    if not items:
        return None
    if len(items) > 1 or not offered:
        raise BadHead(f"unexpected extensions {items}")
    name, *params = (p.strip() for p in items[0].split(";"))
    if name.lower() != _DEFLATE:
        raise BadHead(f"unexpected extension {name}")
    found: dict[str, int | bool] = {}
    for param in params:
        key, _, raw = param.partition("=")
        key, raw = key.strip().lower(), raw.strip().strip('"')
        if key in found:
            raise BadHead(f"duplicate {key}")
        if key in ("client_no_context_takeover", "server_no_context_takeover") and not raw:
            found[key] = True
        elif key in ("client_max_window_bits", "server_max_window_bits") and raw.isdigit() and 8 <= int(raw) <= 15:
            found[key] = int(raw)
        else:
            raise BadHead(f"bad permessage-deflate parameter {param!r}")
    return Deflate(**found)  # type: ignore[arg-type]


def _status(code: int) -> http.HTTPStatus:
    try:
        return http.HTTPStatus(code)
    except ValueError:
        return http.HTTPStatus.BAD_GATEWAY


def http_response(code: int, body: bytes, headers: Sequence[tuple[str, str]] = ()) -> bytes:
    """A complete ``Connection: close`` response; `headers` replace the defaults of the same name."""
    status = _status(code)
    fields = {
        "Date": formatdate(usegmt=True),
        "Connection": "close",
        "Content-Length": str(len(body)),
        "Content-Type": "text/plain; charset=utf-8",
    }
    extra: list[tuple[str, str]] = []
    for k, v in headers:
        if k in fields:
            fields[k] = v
        else:
            extra.append((k, v))
    lines = [f"HTTP/1.1 {status.value} {status.phrase}", *(f"{k}: {v}" for k, v in (*fields.items(), *extra))]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def upgrade_request(target: str, host: str, headers: Sequence[tuple[str, bytes]]) -> bytes:
    """The upgrade request for the CSMS: `headers` carry the key and what the charger offered."""
    out = [f"GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n".encode()]
    out += [name.encode("ascii") + b": " + value + b"\r\n" for name, value in headers]
    out.append(b"Sec-WebSocket-Version: 13\r\n\r\n")
    return b"".join(out)


class HeadReader(asyncio.Protocol):
    """A socket's protocol while its HTTP head (and a refusal's body) is read by a coroutine."""

    def __init__(self, max_buffer: int = MAX_HEAD + MAX_BODY) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.eof = False
        self.lost = False
        self.max_buffer = max_buffer
        self._waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if len(self.buf) > self.max_buffer and self.transport is not None:
            self.transport.pause_reading()  # a peer that talks too much before the upgrade waits
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = self.eof = True
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    async def _wait(self) -> None:
        if self.eof:
            raise ConnectionError("connection closed during the handshake")
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    async def read_head(self) -> bytes:
        while True:
            i = self.buf.find(b"\r\n\r\n")
            if i + 4 > MAX_HEAD:  # also when the whole oversized head came in one read
                raise BadHead("HTTP head too large")
            if i >= 0:
                head = bytes(self.buf[: i + 4])
                del self.buf[: i + 4]
                return head
            if len(self.buf) > MAX_HEAD:
                raise BadHead("HTTP head too large")
            await self._wait()

    async def read_exact(self, n: int) -> bytes:
        while len(self.buf) < n:
            await self._wait()
        data = bytes(self.buf[:n])
        del self.buf[:n]
        return data

    async def read_line(self) -> bytes:
        while (i := self.buf.find(b"\r\n")) < 0:
            if len(self.buf) > 8192:
                raise BadHead("line too long")
            await self._wait()
        return await self.read_exact(i + 2)

    async def read_body(self, head: Head, status: int) -> bytes:
        """A response body by Content-Length, chunked coding or connection close (capped)."""
        if status < 200 or status in (204, 304):
            return b""
        te = head.tokens("transfer-encoding")
        if te:
            if te != ["chunked"]:
                raise BadHead(f"unsupported transfer coding {te}")
            body = bytearray()
            while True:
                size_line = (await self.read_line()).split(b";", 1)[0].strip()
                try:
                    size = int(size_line, 16)
                except ValueError:
                    raise BadHead("bad chunk size") from None
                if len(body) + size > MAX_BODY:
                    raise BadHead("body too large")
                if size == 0:
                    while await self.read_line() != b"\r\n":  # trailers
                        pass
                    return bytes(body)
                body += await self.read_exact(size)
                if await self.read_exact(2) != b"\r\n":
                    raise BadHead("bad chunk")
        length = head.text("content-length")
        if length is not None:
            if not length.isdigit() or int(length) > MAX_BODY:
                raise BadHead("bad or too large Content-Length")
            return await self.read_exact(int(length))
        while not self.eof:
            if len(self.buf) > MAX_BODY:
                raise BadHead("body too large")
            try:
                await self._wait()
            except ConnectionError:
                break
        return bytes(self.buf[:MAX_BODY])
