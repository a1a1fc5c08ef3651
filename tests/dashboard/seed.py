"""Rows the dashboard tests need: a pending-review penalty with its visit, presence and evidence image."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from sqlmodel import Session

from models.db import make_engine
from models.settings import Settings
from models.tables import Alert, Penalty, PlateReadRow, Presence, VisitRow

EVIDENCE = "cam1/2026-11-02/crop1.jpg"


def tiny_jpeg() -> bytes:
    """A small valid grey JPEG (Pillow is a dependency of the ANPR side)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 32), (120, 130, 140)).save(buf, "JPEG")
    return buf.getvalue()


def seed_penalty(settings: Settings, now: datetime, plate: str | None = None) -> str:
    evidence = Path(settings.evidence_dir) / EVIDENCE
    evidence.parent.mkdir(parents=True, exist_ok=True)
    evidence.write_bytes(tiny_jpeg())
    engine = make_engine(settings.db_url)
    with Session(engine) as db:
        db.add(Presence(id="p1", camera="cam1", bay_id="B1", plate=plate, first_seen=now - timedelta(minutes=40),
                        last_seen=now, crop_path=EVIDENCE))
        db.add(VisitRow(visit_id="B1/p1", bay_id="B1", plate=plate, arrived_at=now - timedelta(minutes=40),
                        updated_at=now, data={"presence_id": "p1", "presence_ids": ["p1"], "timeline": [
                            {"at": (now - timedelta(minutes=40)).isoformat(), "what": "arrival", "detail": "camera"},
                            {"at": (now - timedelta(minutes=5)).isoformat(), "what": "idle_penalty",
                             "detail": "idle for 30 minutes"}]}))
        db.add(Penalty(violation_id="B1/p1/idle", visit_id="B1/p1", bay_id="B1", kind="idle", plate=plate,
                       started_at=now - timedelta(minutes=35), ended_at=now - timedelta(minutes=5), minutes=30,
                       amount="15.00", state="pending_review", needs_review=True, review_reason="plate unreadable",
                       created_at=now, updated_at=now))
        db.add(PlateReadRow(at=now - timedelta(minutes=40), camera="cam1", bay_id="B1", plate="AB123CD",
                            confidence=0.93))
        db.commit()
    engine.dispose()
    return "B1/p1/idle"


def add_alert(settings: Settings, now: datetime, title: str, subject: str, kind: str = "blacklist",
              severity: str = "critical") -> None:
    engine = make_engine(settings.db_url)
    with Session(engine) as db:
        db.add(Alert(at=now, kind=kind, severity=severity, title=title, subject=subject,
                     detail="seen at bay B1"))
        db.commit()
    engine.dispose()
