"""Rows the dashboard tests need: penalties, alerts and visits with their timeline, presence and evidence."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlmodel import Session

from models.db import make_engine
from models.settings import Settings
from models.tables import Alert, Penalty, PlateReadRow, Presence, Transaction, VisitRow

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


def db_session(settings: Settings) -> Session:
    return Session(make_engine(settings.db_url), expire_on_commit=False)


def seed_visit(settings: Settings, visit_id: str, bay: str, plate: str | None, arrived: datetime,
               departed: datetime | None = None, timeline: list[tuple[datetime, str, str]] | None = None,
               **data: Any) -> None:
    entries = timeline or [(arrived, "arrived", f"plate {plate} (0.95) from camera")]
    with db_session(settings) as db:
        db.add(VisitRow(visit_id=visit_id, bay_id=bay, plate=plate, plate_confidence=0.95, arrived_at=arrived,
                        departed_at=departed, updated_at=arrived,
                        data={"timeline": [{"at": at.isoformat(), "what": w, "detail": d} for at, w, d in entries],
                              **data}))
        db.commit()


def seed_rich_visit(settings: Settings, now: datetime) -> str:
    """A finished visit: parked 10 min, charging 30, idle 20 (violation for the last 10), parked 10."""
    t0 = now - timedelta(minutes=70)
    rel = {"crop": "cam1/2026-11-02/crop9.jpg", "frame": "cam1/2026-11-02/frame9.jpg"}
    for path in rel.values():
        file = Path(settings.evidence_dir) / path
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(tiny_jpeg())
    m = lambda n: t0 + timedelta(minutes=n)  # noqa: E731
    seed_visit(settings, "B1/p9", "B1", "EV123AB", t0, departed=m(70), timeline=[
        (m(0), "arrived", "plate EV123AB (0.95) from arrival"),
        (m(10), "linked", "transaction CP1/T42 started"),
        (m(10), "charging", ""),
        (m(40), "idle", "SuspendedEV"),
        (m(50), "violation", "idle"),
        (m(60), "idle_end", "unplugged; 10 idle min billed so far"),
        (m(60), "unplugged", "transaction ended: EVDisconnected"),
        (m(70), "departed", "departure"),
    ], presence_id="p9", presence_ids=["p9"], violations=[
        {"violation_id": "B1/p9/idle", "kind": "idle", "started_at": m(50).isoformat(),
         "ended_at": m(60).isoformat(), "needs_review": False}])
    with db_session(settings) as db:
        db.add(Presence(id="p9", camera="cam1", bay_id="B1", plate="EV123AB", confidence=0.95, first_seen=t0,
                        last_seen=m(70), departed_at=m(70), crop_path=rel["crop"], frame_path=rel["frame"]))
        row = db.get(VisitRow, "B1/p9")
        row.charge_point_id, row.transaction_id, row.close_reason = "CP1", "T42", "departure"
        db.add(row)
        db.add(Transaction(charge_point_id="CP1", transaction_id="T42", connector_id=1, started_at=m(10),
                           ended_at=m(60), charging_state="EVConnected", energy_wh=12345.0,
                           end_reason="EVDisconnected", updated_at=m(60)))
        db.add(Penalty(violation_id="B1/p9/idle", visit_id="B1/p9", bay_id="B1", kind="idle", plate="EV123AB",
                       started_at=m(50), ended_at=m(60), minutes=10, amount="5.00", state="violation",
                       created_at=m(50), updated_at=m(60)))
        db.commit()
    return "B1/p9"
