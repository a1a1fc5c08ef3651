"""One picture from a camera URL, for "test connection" and snapshots: the workers' open, one frame, a reason.

`grab_frame` opens the stream exactly as a worker does (`anpr.capture._open_cv`: OpenCV's FFmpeg
backend, RTSP over TCP, open and read timeouts) and returns the first decodable frame. OpenCV only
says "not opened", so when that happens `explain_failure` looks for the reason itself with a few
plain requests: the host name resolves, the port accepts a connection, the server speaks RTSP/HTTP
and takes the credentials (Basic or Digest, as real cameras ask). The answer is a `GrabError` with a
`kind` a person can act on (`unreachable`, `auth`, `not_video`, `timeout`, `error`) and a message in
which every URL is redacted. Nothing from the far end but a decoded frame (and a status code) ever
reaches the caller.

`grab_frame` blocks (up to about `timeout_s`; a stuck FFmpeg call may overrun it): callers on an
event loop run it on a thread of its own and stop waiting at their own hard deadline.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import os
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

import numpy as np

from anpr.capture import CaptureOptions, _open_cv, _valid
from models.logsetup import redact, redact_url

GrabErrorKind = Literal["unreachable", "auth", "not_video", "timeout", "error", "busy"]
_DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}


class GrabError(Exception):
    def __init__(self, kind: GrabErrorKind, message: str) -> None:
        super().__init__(redact(message))
        self.kind = kind
        self.message = redact(message)


def grab_frame(url: str, timeout_s: float = 8.0, *, opener: Any = _open_cv, probe: bool = True) -> np.ndarray:
    """The first decodable frame of `url` (BGR), or `GrabError`. `probe`: explain a failed open."""
    safe = redact_url(url)
    start = time.monotonic()
    deadline = start + timeout_s
    opts = CaptureOptions(open_timeout_s=timeout_s, read_timeout_s=timeout_s, transport="tcp")
    cap = None
    try:
        try:
            cap = opener(url, opts)
        except Exception as exc:  # cv2.error on some garbage
            raise GrabError("error", f"cannot open {safe}: {str(exc)[:200]}") from None
        if cap is None or not cap.isOpened():
            took = time.monotonic() - start
            if took >= timeout_s * 0.9:
                raise GrabError("timeout", f"{safe} did not answer within {timeout_s:.0f} s")
            if probe:
                raise explain_failure(url, max(1.0, deadline - time.monotonic()))
            raise GrabError("error", f"cannot open {safe}")
        while True:
            ok, image = cap.read()
            if ok and _valid(image):
                return np.ascontiguousarray(image)
            if not ok:
                raise GrabError("not_video", f"{safe} opened, but no picture could be decoded from it")
            if time.monotonic() > deadline:
                raise GrabError("timeout", f"no decodable picture from {safe} within {timeout_s:.0f} s")
    finally:
        if cap is not None:
            with contextlib.suppress(Exception):
                cap.release()


def explain_failure(url: str, timeout_s: float = 5.0) -> GrabError:
    """Why `url` gives no video: a few plain requests, each bounded by `timeout_s`."""
    safe = redact_url(url)
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "file":
        path = url[len("file://"):]
        if not os.path.exists(path):
            return GrabError("unreachable", f"no such file: {safe}")
        return GrabError("not_video", f"{safe} is not a video or picture that can be decoded")
    if scheme not in _DEFAULT_PORTS:
        return GrabError("error", f"unsupported scheme in {safe}")
    try:
        host, port = parts.hostname, parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        return GrabError("error", f"bad port in {safe}")
    if not host:
        return GrabError("error", f"no host in {safe}")
    where = f"{host}:{port}"
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except socket.gaierror:
        return GrabError("unreachable", f"cannot resolve the host name {host!r}")
    except TimeoutError:
        return GrabError("timeout", f"{where} did not answer within {timeout_s:.0f} s (wrong address or firewall?)")
    except ConnectionRefusedError:
        return GrabError("unreachable", f"{where} refused the connection (nothing listens on that port)")
    except OSError as exc:
        return GrabError("unreachable", f"cannot connect to {where}: {exc.strerror or exc}")
    sock.close()
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else ""
    try:
        if scheme.startswith("rtsp"):
            return _explain_rtsp(parts, host, port, user, password, timeout_s, safe)
        return _explain_http(parts, host, port, user, password, timeout_s, safe)
    except TimeoutError:
        return GrabError("timeout", f"{where} accepted the connection but did not answer within {timeout_s:.0f} s")
    except ssl.SSLError as exc:
        return GrabError("error", f"TLS with {where} failed: {exc.reason or exc}")
    except (OSError, http.client.HTTPException) as exc:
        return GrabError("error", f"{where}: {type(exc).__name__}: {str(exc)[:200]}")


@dataclass
class _Reply:
    status: int
    reason: str
    headers: list[tuple[str, str]]

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


def _digest(challenge: str, method: str, uri: str, user: str, password: str) -> str:
    """RFC 2617 Digest (MD5; qop=auth when offered), what IP cameras ask for."""
    fields: dict[str, str] = {}
    for item in _split_params(challenge[len("digest"):]):
        key, _, value = item.partition("=")
        fields[key.strip().lower()] = value.strip().strip('"')
    realm, nonce = fields.get("realm", ""), fields.get("nonce", "")

    def md5(text: str) -> str:
        return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()

    ha1, ha2 = md5(f"{user}:{realm}:{password}"), md5(f"{method}:{uri}")
    out = f'Digest username="{user}", realm="{realm}", nonce="{nonce}", uri="{uri}"'
    if "auth" in [q.strip() for q in fields.get("qop", "").split(",")]:
        cnonce = os.urandom(8).hex()
        response = md5(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}")
        out += f', qop=auth, nc=00000001, cnonce="{cnonce}"'
    else:
        response = md5(f"{ha1}:{nonce}:{ha2}")
    if "opaque" in fields:
        out += f', opaque="{fields["opaque"]}"'
    return out + f', response="{response}"'


def _split_params(text: str) -> list[str]:
    """`a="x, y", b=z` -> ['a="x, y"', 'b=z'] (commas inside quotes kept)."""
    out, cur, quoted = [], "", False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == "," and not quoted:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    return [p.strip() for p in out if p.strip()]


def _authorization(challenges: list[str], method: str, uri: str, user: str, password: str) -> str | None:
    digest = next((c for c in challenges if c.lower().startswith("digest")), None)
    if digest is not None:
        return _digest(digest, method, uri, user, password)
    if any(c.lower().startswith("basic") for c in challenges):
        return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    return None


def _rtsp_request(host: str, port: int, tls: bool, uri: str, auth: str | None, timeout_s: float) -> _Reply:
    raw = socket.create_connection((host, port), timeout=timeout_s)
    sock: socket.socket = raw
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # cameras have self-signed certificates
        sock = ctx.wrap_socket(raw, server_hostname=host)
    with sock:
        lines = [f"DESCRIBE {uri} RTSP/1.0", "CSeq: 1", "Accept: application/sdp", "User-Agent: Baywarden"]
        if auth:
            lines.append(f"Authorization: {auth}")
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 16384:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    first, *rest = head.split("\r\n") if head else [""]
    bits = first.split(" ", 2)
    if len(bits) < 2 or not bits[0].startswith("RTSP/") or not bits[1].isdigit():
        return _Reply(0, first[:80], [])
    headers = [(k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in rest) if k.strip()]
    return _Reply(int(bits[1]), bits[2] if len(bits) > 2 else "", headers)


def _explain_rtsp(parts: Any, host: str, port: int, user: str | None, password: str, timeout_s: float,
                  safe: str) -> GrabError:
    tls = parts.scheme.lower() == "rtsps"
    netloc = host if parts.port is None else f"{host}:{parts.port}"
    uri = f"{parts.scheme}://{netloc}{parts.path or '/'}" + (f"?{parts.query}" if parts.query else "")
    reply = _rtsp_request(host, port, tls, uri, None, timeout_s)
    if reply.status == 401 and user is not None:
        auth = _authorization(reply.header("WWW-Authenticate"), "DESCRIBE", uri, user, password)
        if auth is not None:
            reply = _rtsp_request(host, port, tls, uri, auth, timeout_s)
            if reply.status in (401, 403):
                return GrabError("auth", f"{safe}: the camera refused the user name or password")
    return _verdict(reply.status, reply.reason, "", user, safe, "RTSP")


def _explain_http(parts: Any, host: str, port: int, user: str | None, password: str, timeout_s: float,
                  safe: str) -> GrabError:
    if parts.scheme.lower() == "https":
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
        conn: http.client.HTTPConnection = http.client.HTTPSConnection(host, port, timeout=timeout_s, context=ctx)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    def get(auth: str | None) -> tuple[int, str, list[tuple[str, str]]]:
        headers = {"User-Agent": "Baywarden"}
        if auth:
            headers["Authorization"] = auth
        conn.request("GET", path, headers=headers)
        resp = conn.getresponse()
        out = (resp.status, resp.reason, resp.getheaders())
        conn.close()  # never read the body: only the status and the type matter here
        return out

    try:
        status, reason, headers = get(None)
        if status == 401 and user is not None:
            challenges = [v for k, v in headers if k.lower() == "www-authenticate"]
            auth = _authorization(challenges, "GET", path, user, password)
            if auth is not None:
                status, reason, headers = get(auth)
                if status in (401, 403):
                    return GrabError("auth", f"{safe}: the camera refused the user name or password")
    finally:
        conn.close()
    ctype = next((v for k, v in headers if k.lower() == "content-type"), "")
    return _verdict(status, reason, ctype, user, safe, "HTTP")


def _verdict(status: int, reason: str, ctype: str, user: str | None, safe: str, proto: str) -> GrabError:
    if status == 0:
        return GrabError("not_video", f"{safe}: the server does not speak {proto}")
    if status in (401, 403):
        if user is None:
            return GrabError("auth", f"{safe}: the camera needs a user name and password ({status})")
        return GrabError("auth", f"{safe}: the camera refused the user name or password ({status})")
    if status == 404:
        return GrabError("not_video", f"{safe}: the server has no stream at that path (404)")
    if 200 <= status < 300:
        if ctype and ctype.split(";")[0].strip().lower().startswith(("text/", "application/json", "application/xml")):
            return GrabError("not_video", f"{safe} answers with {ctype.split(';')[0]}, not a video stream")
        return GrabError("not_video", f"{safe} answered, but no picture could be decoded (codec not supported?)")
    return GrabError("error", f"{safe}: the server answered {status} {reason}".strip())
