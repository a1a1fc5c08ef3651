"""One log format for every process, with personal data redacted before it is written."""

from __future__ import annotations

import logging
import logging.handlers
import multiprocessing
import re
import sys

FORMAT = "%(asctime)s %(levelname)-7s [%(processName)s] %(name)s: %(message)s"

_EMAIL = re.compile(r"\b([A-Za-z0-9._%+-])[A-Za-z0-9._%+-]*@([A-Za-z0-9.-]+\.[A-Za-z]{2,})\b")
# OCPP id tokens: 1.6 "idTag": "...", 2.0.1 "idToken": {"idToken": "..."}; also key=value forms.
_ID_TOKEN = re.compile(
    r'("?(?:idTag|idToken|id_token|parentIdTag)"?\s*[:=]\s*"?)([^",{}\[\]\s]+)', re.IGNORECASE
)
_URL_CREDS = re.compile(r"(\b[a-z][a-z0-9+.-]*://)([^/@\s:]+):([^/@\s]*)@", re.IGNORECASE)


def redact(text: str) -> str:
    """Mask e-mail addresses, id tokens and URL passwords."""
    text = _URL_CREDS.sub(r"\1\2:***@", text)
    text = _ID_TOKEN.sub(lambda m: m.group(1) + "***", text)
    return _EMAIL.sub(r"\1***@\2", text)


class RedactingFilter(logging.Filter):
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
