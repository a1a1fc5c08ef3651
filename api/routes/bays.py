"""Bays and site rules: operators edit them here or in the dashboard; the engine reloads on every change.

Bays from the config file are listed but read-only (the file is their source of truth). Site rules are
the file's rules overlaid by the fields operators changed (enforcement/config.py). Visits already in
progress keep the rules they started with.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field, ValidationError
from sqlmodel import Session, func, select

from api.deps import Ctx, DbSession, Operator, Viewer, client_ip
from enforcement.config import (
    SITE_RULES_KEY,
    bay_settings,
    canonical_overrides,
    changed_fields,
    fill_row,
    rules_overlay,
    site_rules,
)
from enforcement.rules import Rules, resolve_rules
from models import audit
from models.settings import AccessOutput, BaySettings
from models.tables import BayRow, BayStateRow, Camera, RuntimeSetting, VisitRow

router = APIRouter(prefix="/api/v1", tags=["bays and rules"])


class BayIn(BaySettings):
    """A bay to create (same fields and checks as in the config file)."""


class BayUpdate(BaseModel):
    """Fields to change; absent fields keep their value, `null` clears an optional one."""

    model_config = {"extra": "forbid"}
    kind: Literal["bay", "access"] | None = None
    charge_point_id: str | None = Field(None, max_length=64)
    evse_id: int | None = Field(None, ge=0, le=2**31 - 1)
    connector_id: int | None = Field(None, ge=0, le=2**31 - 1)
    rules: dict[str, Any] | None = None
    output: AccessOutput | None = None


class BayLive(BaseModel):
    plate: str | None = None
    visit_id: str | None = None
    arrived_at: datetime | None = None
    charging: str = Field("none", description="none | plugged | charging | idle")
    transaction_id: str | None = None


class BayOut(BaySettings):
    source: str = Field(description="config: defined in the config file (read-only here); api: operators'.")
    cameras: list[str] = Field(description="Cameras with a zone for this bay.")
    effective_rules: dict[str, Any] = Field(description="Site rules with this bay's overrides (new visits).")
    live: BayLive
    updated_at: datetime


class RulesOut(BaseModel):
    effective: dict[str, Any] = Field(description="What new visits get.")
    from_file: dict[str, Any] = Field(description="The config file's site rules (with defaults).")
    overrides: dict[str, Any] = Field(description="Fields operators changed (stored in the database).")
    updated_at: datetime | None = None
    updated_by: str | None = None


# --- helpers -----------------------------------------------------------------------------------


def _cameras_by_bay(db: Session) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for cam in db.exec(select(Camera)):
        for zone in cam.zones:
            out.setdefault(zone.get("bay_id", ""), []).append(cam.name)
    return out


def _live(state: dict[str, Any] | None) -> BayLive:
    if not state:
        return BayLive()
    visit, tx = state.get("visit") or {}, state.get("tx") or {}
    charging = "none"
    if tx and not tx.get("ended_at"):
        charging = "idle" if tx.get("idle_since") else "charging" if tx.get("charging") else "plugged"
    return BayLive(plate=visit.get("plate"), visit_id=visit.get("visit_id"), arrived_at=visit.get("arrived_at"),
                   charging=charging, transaction_id=tx.get("transaction_id") if charging != "none" else None)


def bay_out(db: Session, row: BayRow, site: Rules, cams: dict[str, list[str]]) -> BayOut:
    bay = bay_settings(row)
    state = db.get(BayStateRow, row.bay_id)
    try:
        eff = resolve_rules(site, bay.rules).model_dump(mode="json")
    except (ValidationError, ValueError):
        eff = {}
    return BayOut(**bay.model_dump(), source=row.source, cameras=sorted(cams.get(row.bay_id, [])),
                  effective_rules=eff, live=_live(state.state if state else None), updated_at=row.updated_at)


def _site(ctx: Any, db: Session) -> Rules:
    return site_rules(db, ctx.settings.enforcement)


def _get(db: Session, bay_id: str) -> BayRow:
    row = db.get(BayRow, bay_id)
    if row is None:
        raise HTTPException(404, f"no bay {bay_id!r}")
    return row


def _editable(row: BayRow) -> None:
    if row.source == "config":
        raise HTTPException(409, f"bay {row.bay_id!r} is defined in the config file; change it there")


def check_bay(db: Session, bay: BaySettings, site: Rules) -> None:
    """What a bay must satisfy beyond its own fields: its overrides fit the site rules (and are stored in
    canonical form), and no other bay already owns the same charger outlet (charger events would go to both)."""
    try:
        bay.rules = canonical_overrides(site, bay.rules)
    except (ValidationError, ValueError) as exc:
        raise HTTPException(422, f"rules: {_first_error(exc)}") from None
    if bay.charge_point_id:
        for other in db.exec(select(BayRow).where(BayRow.charge_point_id == bay.charge_point_id)):
            if other.bay_id == bay.bay_id:
                continue
            same_evse = other.evse_id is None or bay.evse_id is None or other.evse_id == bay.evse_id
            same_conn = (other.connector_id is None or bay.connector_id is None
                         or other.connector_id == bay.connector_id)
            if same_evse and same_conn:
                raise HTTPException(409, f"charger {bay.charge_point_id} outlet (EVSE {bay.evse_id}, connector "
                                         f"{bay.connector_id}) is already bay {other.bay_id!r}'s")


def _first_error(exc: Exception) -> str:
    if isinstance(exc, ValidationError):
        e = exc.errors()[0]
        where = ".".join(str(p) for p in e["loc"])
        return f"{where}: {e['msg']}" if where else str(e["msg"])
    return str(exc).splitlines()[0]


async def _reload(ctx: Any) -> None:
    if ctx.enforcement is not None:
        await ctx.enforcement.reload()


# --- bays --------------------------------------------------------------------------------------


@router.get("/bays", response_model=list[BayOut])
def list_bays(ctx: Ctx, db: DbSession, _: Viewer) -> list[BayOut]:
    site, cams = _site(ctx, db), _cameras_by_bay(db)
    return [bay_out(db, row, site, cams) for row in db.exec(select(BayRow).order_by(BayRow.bay_id))]  # type: ignore[arg-type]


@router.get("/bays/{bay_id}", response_model=BayOut)
def get_bay(bay_id: str, ctx: Ctx, db: DbSession, _: Viewer) -> BayOut:
    return bay_out(db, _get(db, bay_id), _site(ctx, db), _cameras_by_bay(db))


@router.post("/bays", response_model=BayOut, status_code=201)
async def add_bay(body: BayIn, request: Request, ctx: Ctx, db: DbSession, op: Operator) -> BayOut:
    if db.get(BayRow, body.bay_id) is not None:
        raise HTTPException(409, f"a bay {body.bay_id!r} already exists")
    bay = BaySettings.model_validate(body.model_dump())
    site = _site(ctx, db)
    check_bay(db, bay, site)
    row = fill_row(BayRow(bay_id=bay.bay_id, source="api", updated_at=ctx.clock()), bay)
    db.add(row)
    audit.record(db, actor=op.name, action="create", entity="bay", entity_id=bay.bay_id,
                 after=bay.model_dump(mode="json"), ip=client_ip(request), at=ctx.clock())
    db.commit()
    await _reload(ctx)
    return bay_out(db, row, site, _cameras_by_bay(db))


@router.patch("/bays/{bay_id}", response_model=BayOut)
async def update_bay(bay_id: str, body: BayUpdate, request: Request, ctx: Ctx, db: DbSession,
                     op: Operator) -> BayOut:
    row = _get(db, bay_id)
    _editable(row)
    before = bay_settings(row)
    try:
        bay = BaySettings.model_validate({**before.model_dump(), **body.model_dump(exclude_unset=True)})
    except ValidationError as exc:
        raise HTTPException(422, _first_error(exc)) from None
    site = _site(ctx, db)
    check_bay(db, bay, site)
    fill_row(row, bay).updated_at = ctx.clock()
    db.add(row)
    audit.record(db, actor=op.name, action="update", entity="bay", entity_id=bay_id,
                 before=before.model_dump(mode="json"), after=bay.model_dump(mode="json"),
                 ip=client_ip(request), at=ctx.clock())
    db.commit()
    await _reload(ctx)
    return bay_out(db, row, site, _cameras_by_bay(db))


@router.delete("/bays/{bay_id}", status_code=204)
async def delete_bay(bay_id: str, request: Request, ctx: Ctx, db: DbSession, op: Operator) -> None:
    row = _get(db, bay_id)
    _editable(row)
    open_visits = db.exec(select(func.count()).select_from(VisitRow).where(VisitRow.bay_id == bay_id)
                          .where(VisitRow.departed_at == None)).one()  # noqa: E711
    if open_visits:
        raise HTTPException(409, f"bay {bay_id!r} has a visit in progress; delete it after the car has left")
    audit.record(db, actor=op.name, action="delete", entity="bay", entity_id=bay_id,
                 before=bay_settings(row).model_dump(mode="json"), ip=client_ip(request), at=ctx.clock())
    db.delete(row)
    db.commit()
    await _reload(ctx)


# --- site rules --------------------------------------------------------------------------------


def rules_out(ctx: Any, db: Session) -> RulesOut:
    stored = db.get(RuntimeSetting, SITE_RULES_KEY)
    return RulesOut(
        effective=_site(ctx, db).model_dump(mode="json"),
        from_file=Rules.model_validate(ctx.settings.enforcement.rules).model_dump(mode="json"),
        overrides=rules_overlay(db),
        updated_at=stored.updated_at if stored else None,
        updated_by=stored.updated_by if stored else None,
    )


@router.get("/rules", response_model=RulesOut)
def get_rules(ctx: Ctx, db: DbSession, _: Viewer) -> RulesOut:
    """The site rules: effective, as in the file, and the operators' overrides."""
    return rules_out(ctx, db)


@router.put("/rules", response_model=RulesOut)
async def put_rules(body: Rules, request: Request, ctx: Ctx, db: DbSession, op: Operator) -> RulesOut:
    """Replace the site rules. Only fields that differ from the file are stored, so later edits of the file
    still apply to every field no operator changed. Refused when a bay's overrides would no longer fit."""
    for row in db.exec(select(BayRow)):
        try:
            resolve_rules(body, row.rules or {})
        except (ValidationError, ValueError) as exc:
            raise HTTPException(422, f"bay {row.bay_id!r} overrides would be invalid: {_first_error(exc)}") from None
    base = Rules.model_validate(ctx.settings.enforcement.rules)
    before = rules_overlay(db)
    overlay = changed_fields(base, body)
    stored = db.get(RuntimeSetting, SITE_RULES_KEY)
    if overlay:
        stored = stored or RuntimeSetting(key=SITE_RULES_KEY, value={})
        stored.value, stored.updated_at, stored.updated_by = overlay, ctx.clock(), op.name
        db.add(stored)
    elif stored is not None:
        db.delete(stored)
    audit.record(db, actor=op.name, action="update", entity="rules", entity_id="site", before=before, after=overlay,
                 ip=client_ip(request), at=ctx.clock())
    db.commit()
    await _reload(ctx)
    return rules_out(ctx, db)


@router.delete("/rules/overrides", response_model=RulesOut)
async def reset_rules(request: Request, ctx: Ctx, db: DbSession, op: Operator) -> RulesOut:
    """Back to the file's site rules (for new visits)."""
    stored = db.get(RuntimeSetting, SITE_RULES_KEY)
    if stored is not None:
        for row in db.exec(select(BayRow)):
            try:
                resolve_rules(Rules.model_validate(ctx.settings.enforcement.rules), row.rules or {})
            except (ValidationError, ValueError) as exc:
                raise HTTPException(422, f"bay {row.bay_id!r} overrides would be invalid: "
                                         f"{_first_error(exc)}") from None
        audit.record(db, actor=op.name, action="reset", entity="rules", entity_id="site", before=stored.value,
                     after={}, ip=client_ip(request), at=ctx.clock())
        db.delete(stored)
        db.commit()
        await _reload(ctx)
    return rules_out(ctx, db)
