"""One log format for every process, with personal data redacted before it is written."""

from __future__ import annotations

import logging
import logging.handlers
import multiprocessing
import re
import sys
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

FORMAT = "%(asctime)s %(levelname)-7s [%(processName)s] %(name)s: %(message)s"

_EMAIL = re.compile(r"\b([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})\b")
# OCPP id tokens: 1.6 "idTag": "...", 2.0.1 "idToken": {"idToken": "..."}; also key=value forms.
_ID_TOKEN = re.compile(
    r'("?(?:idTag|idToken|id_token|parentIdTag)"?\s*[:=]\s*"?)([^",{}\[\]\s]+)', re.IGNORECASE
)
# The whole user-info part of a URL goes: on camera NVRs the user name is often half the secret.
_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/@\s]+@", re.IGNORECASE)
_SECRET_QUERY_KEYS = re.compile(r"pass|pwd|secret|token|key|auth|sig|user|login", re.IGNORECASE)


def redact(text: str) -> str:
    """Mask e-mail addresses, id tokens and URL credentials in free text."""
    text = _USERINFO.sub(r"\1***@", text)
    text = _ID_TOKEN.sub(lambda m: m.group(1) + "***", text)
    return _EMAIL.sub(r"\1***@\2", text)


_PASSWORD = re.compile(r"(\b[a-z][a-z0-9+.-]*://)([^/@\s:]+):([^/@\s]*)@", re.IGNORECASE)


def mask_password(text: str) -> str:
    """`rtsp://user:pw@host` -> `rtsp://user:***@host`: for showing a stored URL to its operators, who need
    the user name to recognise it (logs use `redact`, which drops the user name too)."""
    return _PASSWORD.sub(r"\1\2:***@", text)


def redact_url(url: str) -> str:
    """`rtsp://user:pw@host/p?password=x` -> `rtsp://***@host/p?password=***`.

    Query parameters that look like credentials (Dahua/Hikvision style `?user=..&password=..`) go too."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact(url)
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_QUERY_KEYS.search(k) for k, _ in pairs):
            query = urlencode([(k, "***" if _SECRET_QUERY_KEYS.search(k) else v) for k, v in pairs], safe="*",
                              quote_via=quote)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


class RedactingFilter(logging.Filter):
    """Last line of defence: scrub personal data and credentials out of every record that passes a handler."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the record
            message = str(record.msg)
        clean = redact(message)
        if clean != message or record.args:
            record.msg, record.args = clean, None
        return True


def setup_logging(level: str = "INFO", process_name: str | None = None) -> None:
    """Configure the root logger of this process (idempotent)."""
    if process_name:
        multiprocessing.current_process().name = process_name
    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_baywarden", False):
            root.removeHandler(h)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(RedactingFilter())
    handler._baywarden = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("uvicorn.access", "apscheduler.executors.default"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def queue_logging(queue: multiprocessing.Queue, level: str, process_name: str) -> None:  # type: ignore[type-arg]
    """For a child process: send records to the parent's listener, redacted on the way."""
    multiprocessing.current_process().name = process_name
    root = logging.getLogger()
    root.handlers.clear()
    handler = logging.handlers.QueueHandler(queue)
    handler.addFilter(RedactingFilter())
    root.addHandler(handler)
    root.setLevel(level)
