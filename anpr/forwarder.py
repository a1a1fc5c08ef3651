"""Edge deployment: a durable spool that forwards camera events (and their evidence) to the centre.

Events are written to a local SQLite spool first, so a centre that is down, slow or refusing only
delays them: the sender retries with capped exponential backoff and deletes a spooled event only
after the centre has stored it (the intake is idempotent by event id, so a resend is harmless).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from models.base import new_id
from models.events import EventEnvelope

log = logging.getLogger(__name__)


class Spool:
    """A tiny append/peek/delete queue in SQLite (survives restarts and power cuts)."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS spool (seq INTEGER PRIMARY KEY, body TEXT NOT NULL)")
        self._lock = threading.Lock()

    def put(self, envelope: EventEnvelope) -> None:
        with self._lock:
            self._db.execute("INSERT INTO spool (body) VALUES (?)", (envelope.model_dump_json(),))

    def peek(self, limit: int) -> list[tuple[int, EventEnvelope]]:
        with self._lock:
            rows = self._db.execute("SELECT seq, body FROM spool ORDER BY seq LIMIT ?", (limit,)).fetchall()
        return [(seq, EventEnvelope.model_validate_json(body)) for seq, body in rows]

    def delete_upto(self, seq: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM spool WHERE seq <= ?", (seq,))

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM spool").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class EventForwarder:
    """Spools events and sends them to `central_url` in batches from a background thread."""

    def __init__(
        self,
        central_url: str,
        token: str,
        spool_path: Path,
        evidence_dir: Path | None = None,
        *,
        batch: int = 100,
        max_backoff_s: float = 30.0,
        ids: Callable[[], str] = new_id,
        transport: httpx.BaseTransport | None = None,
    ):
        self.spool = Spool(spool_path)
        self.evidence_dir = evidence_dir
        self.batch = batch
        self.max_backoff_s = max_backoff_s
        self.ids = ids
        self.sent = 0
        self.failures = 0
        self.last_error = ""
        self._client = httpx.Client(
            base_url=central_url.rstrip("/"), headers={"Authorization": f"Bearer {token}"}, timeout=15,
            transport=transport,
        )
        self._wake = threading.Event()
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None

    # The supervisor's event sink.
    def __call__(self, event: Any) -> None:
        self.spool.put(EventEnvelope(event_id=self.ids(), event=event))
        self._wake.set()

    def start(self) -> None:
        self._halt.clear()
        self._thread = threading.Thread(target=self._run, name="event-forwarder", daemon=True)
        self._thread.start()

    def stop(self, drain_s: float = 5.0) -> int:
        """Try to send what is spooled for up to `drain_s`, then stop; the rest stays spooled.
        Returns how many events are left (the spool is closed afterwards)."""
        deadline = time.monotonic() + drain_s
        while len(self.spool) and time.monotonic() < deadline and self.failures == 0:
            self._wake.set()
            time.sleep(0.1)
        self._halt.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=20)
        self._client.close()
        left = len(self.spool)
        self.spool.close()
        return left

    def _run(self) -> None:
        backoff = 0.5
        while not self._halt.is_set():
            try:
                progressed = self.send_once()
            except Exception as exc:  # network down, centre refusing: keep everything and retry
                self.failures += 1
                self.last_error = str(exc)[:200]
                log.warning("cannot forward events (%s); retrying in %.1f s", self.last_error, backoff)
                self._halt.wait(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            self.failures, backoff = 0, 0.5
            if not progressed:
                self._wake.wait(1.0)
                self._wake.clear()

    def send_once(self) -> bool:
        """Send one batch; True when something was sent. Raises on any failure (nothing is dropped)."""
        items = self.spool.peek(self.batch)
        if not items:
            return False
        for _, env in items:
            self._upload_evidence(env)
        body = {"events": [json.loads(env.model_dump_json()) for _, env in items]}
        r = self._client.post("/api/v1/events", json=body)
        if r.status_code == 422:
            # The centre can never accept this batch (schema drift): keep it out of the way, loudly.
            raise RuntimeError(f"centre refused the batch as invalid: {r.text[:200]}")
        r.raise_for_status()
        self.spool.delete_upto(items[-1][0])
        self.sent += len(items)
        return True

    def _upload_evidence(self, env: EventEnvelope) -> None:
        evidence = getattr(env.event, "evidence", None)
        if evidence is None or self.evidence_dir is None:
            return
        for rel in (evidence.frame_path, evidence.crop_path):
            if not rel:
                continue
            path = self.evidence_dir / rel
            if not path.is_file():
                continue  # purged by retention before it could be sent; the event still goes
            r = self._client.put(f"/api/v1/evidence/{rel}", content=path.read_bytes(),
                                 headers={"Content-Type": "image/jpeg"})
            if r.status_code in (409, 413, 415, 422):
                # The centre will never take this file (another image already holds the path, or it is
                # not an acceptable image): retrying would block every later event behind it.
                log.warning("centre refused evidence %s (%s): %s; the event is sent without it",
                            rel, r.status_code, r.text[:200])
                continue
            r.raise_for_status()
