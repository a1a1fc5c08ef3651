"""Real servers on 127.0.0.1 for the notification tests: SMTP (aiosmtpd) and a scripted HTTP endpoint."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage, Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from baywarden.demo import free_port


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        return message_from_bytes(self.data, policy=policy.default)  # type: ignore[return-value]


class RecordingHandler:
    """Keeps every accepted message. By the recipient's local part: `bounce*` is refused with 550 at RCPT,
    `grey*` with 450 (greylisting), `spam*` is refused with 554 after DATA."""

    def __init__(self) -> None:
        self.messages: list[Received] = []
        self._lock = threading.Lock()

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any) -> str:
        local = address.split("@", 1)[0]
        if local.startswith("bounce"):
            return f"550 5.1.1 <{address}>: Recipient address rejected: User unknown"
        if local.startswith("grey"):
            return "450 4.2.0 Greylisted, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if any(r.startswith("spam") for r in envelope.rcpt_tos):
            return "554 5.7.1 Message rejected as spam"
        with self._lock:
            self.messages.append(Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content)))
            n = len(self.messages)
        return f"250 2.0.0 Ok: queued as Q{n:04d}"


class SmtpServer:
    """An aiosmtpd server that can be stopped and started again on the same port (its handler survives)."""

    def __init__(self, handler: RecordingHandler | None = None, **smtp_kwargs: Any):
        self.handler = handler or RecordingHandler()
        self.port = free_port()  # aiosmtpd's Controller cannot take port 0 (its ready check connects to it)
        self.smtp_kwargs = smtp_kwargs
        self._controller: Controller | None = None

    def start(self) -> SmtpServer:
        self._controller = Controller(self.handler, hostname="127.0.0.1", port=self.port, **self.smtp_kwargs)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    @property
    def messages(self) -> list[Received]:
        return self.handler.messages


def password_authenticator(login: str, password: str) -> Callable[..., AuthResult]:
    def authenticate(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == login
            and auth_data.password.decode() == password
        )
        return AuthResult(success=ok, handled=False)

    return authenticate


def server_tls_context(cert: str, key: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    return ctx


# --- HTTP ----------------------------------------------------------------------------------


@dataclass
class HttpReply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay_s: float = 0.0


@dataclass
class HttpRequest:
    path: str
    headers: Message  # case-insensitive, as HTTP header names are
    body: bytes
    at: float


class ScriptedHttpServer:
    """Answers POSTs from a script of replies (the last one repeats) and records every request."""

    def __init__(self, replies: list[HttpReply] | None = None):
        self.replies = list(replies or [HttpReply(200)])
        self.requests: list[HttpRequest] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                outer.requests.append(HttpRequest(self.path, self.headers, body, time.monotonic()))
                reply = outer.replies.pop(0) if len(outer.replies) > 1 else outer.replies[0]
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                try:
                    self.send_response(reply.status)
                    for k, v in reply.headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Length", str(len(reply.body)))
                    self.end_headers()
                    self.wfile.write(reply.body)
                except OSError:
                    pass  # the client timed out and went away

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> ScriptedHttpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
