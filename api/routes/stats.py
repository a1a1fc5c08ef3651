"""Read-only figures for people who look rather than read: bay occupancy and idle time per day, and the
about data (version, plate detector, OCR backend, measured accuracy)."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlmodel import Session, select

from api import stats
from api.deps import Ctx, DbSession, Viewer
from enforcement.config import site_rules
from models.settings import Settings
from models.tables import BayRow, VisitRow

router = APIRouter(prefix="/api/v1", tags=["stats"])

METRICS_FILE = Path(__file__).resolve().parents[2] / "anpr" / "weights" / "metrics.json"


class BayDayOut(BaseModel):
    date: str
    span_min: float
    occupied_min: float
    idle_min: float
    occupancy_pct: float
    idle_pct: float
    visits: int


class BayStatsOut(BaseModel):
    bay_id: str
    occupied_min: float
    idle_min: float
    days: list[BayDayOut]


class StatsOut(BaseModel):
    timezone: str
    generated_at: datetime
    days: int
    bays: list[BayStatsOut]


def site_timezone(db: Session, settings: Settings) -> str:
    """The schedule zone of the site rules new visits get (operators' edits included)."""
    return site_rules(db, settings.enforcement).schedule.timezone


def _known_bays(db: Session, settings: Settings) -> set[str]:
    """Charging bays that exist even without visits (gates are not bays to occupy)."""
    bays = {b.bay_id for b in settings.enforcement.bays if b.kind == "bay"}
    bays |= {b.bay_id for b in db.exec(select(BayRow).where(BayRow.kind == "bay"))}
    return bays


def bay_ids(db: Session, settings: Settings) -> list[str]:
    """Every bay with a chart: the known ones and those with visits."""
    seen = set(db.exec(select(VisitRow.bay_id).distinct()))
    return sorted(_known_bays(db, settings) | seen)


def compute_bay_stats(db: Session, settings: Settings, now: datetime, days: int,
                      bay_id: str | None = None) -> StatsOut:
    """Occupancy and idle minutes per bay per local day for the last `days` days (today included)."""
    zone_name = site_timezone(db, settings)
    tz = ZoneInfo(zone_name)
    first = stats.local_days(now, tz, days)[0]
    window_start = stats.day_bounds(first, tz)[0]
    q = select(VisitRow).where(VisitRow.arrived_at <= now).where(
        (VisitRow.departed_at == None) | (VisitRow.departed_at > window_start)  # type: ignore[operator]  # noqa: E711
    )
    bays = _known_bays(db, settings)
    if bay_id:
        q = q.where(VisitRow.bay_id == bay_id)
        bays = {bay_id}
    spans = [stats.VisitSpan.from_row(v) for v in db.exec(q)]
    per_bay = stats.bay_days(spans, now=now, tz=tz, days=days, bays=bays)
    out = []
    for bay, rows in per_bay.items():
        out.append(BayStatsOut(bay_id=bay, occupied_min=round(sum(r.occupied_min for r in rows), 1),
                               idle_min=round(sum(r.idle_min for r in rows), 1),
                               days=[BayDayOut(**{k: v for k, v in r.as_dict().items() if k != "bay_id"})
                                     for r in rows]))
    return StatsOut(timezone=zone_name, generated_at=now, days=days, bays=out)


@router.get("/stats/bays", response_model=StatsOut)
def bay_stats(db: DbSession, ctx: Ctx, _: Viewer, days: int = Query(7, ge=1, le=90),
              bay_id: str | None = Query(None, max_length=64)) -> StatsOut:
    """Per bay and local day (site time zone): occupied and idle minutes and their share of the day."""
    return compute_bay_stats(db, ctx.settings, ctx.clock(), days, bay_id or None)


# --- about ---------------------------------------------------------------------------------------

_DIGESTS: dict[tuple[str, int, int], str] = {}  # (path, size, mtime): sha256, so a page view hashes once


def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    key = (str(path), size, mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _DIGESTS[key] = h.hexdigest()
    return _DIGESTS[key]


def detector_info(settings: Settings) -> dict[str, Any]:
    """Backend and model file of the plate detector; the path is not shown (only its name)."""
    from anpr.detector import default_model_path

    path = settings.anpr.detector_path or default_model_path()
    info: dict[str, Any] = {"backend": settings.anpr.detector, "file": path.name, "present": False,
                            "size_bytes": None, "sha256": None}
    try:
        st = path.stat()
        info.update(present=True, size_bytes=st.st_size, sha256=_sha256(path, st.st_size, st.st_mtime_ns))
    except OSError:
        pass  # a missing model is shown as missing, not as an error page
    return info


def load_metrics(path: Path = METRICS_FILE) -> dict[str, Any] | None:
    """The measured accuracy figures (anpr/weights/metrics.json), or None when absent or unreadable."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def about_data(settings: Settings, site_name: str | None = None) -> dict[str, Any]:
    from models.version import VERSION  # here, not at import: api.app imports this module

    a = settings.anpr
    return {"version": VERSION, "site_name": site_name or settings.site_name, "detector": detector_info(settings),
            "ocr": a.ocr, "region": a.region, "formats": a.formats, "det_conf": a.det_conf,
            "text_proposals": a.text_proposals,
            "metrics": load_metrics()}


@router.get("/about")
def about(ctx: Ctx, _: Viewer) -> dict[str, Any]:
    """Version, plate detector model (name, size, SHA-256), OCR backend and the measured accuracy."""
    from service.runtime_settings import site_name

    return about_data(ctx.settings, site_name(ctx))
