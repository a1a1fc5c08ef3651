"""Cameras: configuration (operators edit, viewers read) and run-time start/stop of their workers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field, ValidationError, field_validator
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from api.deps import Ctx, DbSession, Operator, Viewer, client_ip
from models import audit
from models.logsetup import redact
from models.settings import BayZone, CameraSettings
from models.tables import Camera, CameraBase

router = APIRouter(prefix="/api/v1/cameras", tags=["cameras"])


def _check_zones(zones: list[dict[str, Any]]) -> list[dict[str, Any]]:
    try:
        return [BayZone.model_validate(z).model_dump(mode="json") for z in zones]
    except ValidationError as exc:
        raise ValueError(f"zones: {exc.errors()[0]['msg']} at {exc.errors()[0]['loc']}") from None


class CameraCreate(CameraBase):
    @field_validator("zones")
    @classmethod
    def _zones(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return _check_zones(v)


class CameraUpdate(BaseModel):
    url: str | None = Field(default=None, min_length=8, max_length=1000, pattern=r"^(rtsps?|https?|file)://")
    sub_url: str | None = Field(default=None, max_length=1000, pattern=r"^(rtsps?|https?|file)://")
    enabled: bool | None = None
    fps: float | None = Field(default=None, gt=0, le=30)
    zones: list[dict[str, Any]] | None = None

    @field_validator("zones")
    @classmethod
    def _zones(cls, v: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        return None if v is None else _check_zones(v)


class CameraPublic(BaseModel):
    id: str
    name: str
    url: str = Field(description="Credentials masked.")
    sub_url: str | None
    enabled: bool
    fps: float
    zones: list[dict[str, Any]]
    source: str
    status: dict[str, Any] | None = Field(None, description="Live worker state when the supervisor runs.")


def public(cam: Camera, status: dict[str, Any] | None = None) -> CameraPublic:
    return CameraPublic(
        id=cam.id, name=cam.name, url=redact(cam.url), sub_url=redact(cam.sub_url) if cam.sub_url else None,
        enabled=cam.enabled, fps=cam.fps, zones=cam.zones, source=cam.source, status=status,
    )


def to_settings(cam: Camera) -> CameraSettings:
    return CameraSettings(
        name=cam.name, url=cam.url, sub_url=cam.sub_url, enabled=cam.enabled, fps=cam.fps,
        zones=[BayZone.model_validate(z) for z in cam.zones],
    )


def sync_config_cameras(db: Session, cameras: list[CameraSettings], now: Any) -> None:
    """Make the `source=config` rows equal the YAML file's cameras (the file is their source of truth)."""
    existing = {c.name: c for c in db.exec(select(Camera))}
    wanted = {c.name for c in cameras}
    for cfg in cameras:
        row = existing.get(cfg.name) or Camera(name=cfg.name, url=cfg.url, created_at=now)
        row.url, row.sub_url, row.enabled, row.fps = cfg.url, cfg.sub_url, cfg.enabled, cfg.fps
        row.zones = [z.model_dump(mode="json") for z in cfg.zones]
        row.source, row.updated_at = "config", now
        db.add(row)
    for name, row in existing.items():
        if row.source == "config" and name not in wanted:
            db.delete(row)
    db.commit()


def _get(db: Session, name: str) -> Camera:
    cam = db.exec(select(Camera).where(Camera.name == name)).first()
    if cam is None:
        raise HTTPException(404, f"no camera named {name!r}")
    return cam


def _statuses(ctx: Any) -> dict[str, dict[str, Any]]:
    control = ctx.cameras
    return {s["name"]: s for s in control.status()} if control is not None else {}


def _control(ctx: Any) -> Any:
    if ctx.cameras is None:
        raise HTTPException(409, "camera recognition is switched off in the configuration (components.cameras)")
    return ctx.cameras


async def _reload(ctx: Any) -> None:
    """Workers pick up URL/zone edits; the engine learns which bays a camera watches."""
    if ctx.cameras is not None:
        await ctx.cameras.reload()
    if ctx.enforcement is not None:
        await ctx.enforcement.reload()


def _snap(cam: Camera) -> dict[str, Any]:
    return public(cam).model_dump(mode="json", exclude={"status"})


@router.get("", response_model=list[CameraPublic])
def list_cameras(ctx: Ctx, db: DbSession, _: Viewer) -> list[CameraPublic]:
    status = _statuses(ctx)
    return [public(c, status.get(c.name)) for c in db.exec(select(Camera).order_by(Camera.name))]


@router.get("/{name}", response_model=CameraPublic)
def get_camera(name: str, ctx: Ctx, db: DbSession, _: Viewer) -> CameraPublic:
    return public(_get(db, name), _statuses(ctx).get(name))


@router.post("", response_model=CameraPublic, status_code=201)
async def add_camera(body: CameraCreate, request: Request, ctx: Ctx, db: DbSession, op: Operator) -> CameraPublic:
    cam = Camera.model_validate(body, update={"created_at": ctx.clock(), "updated_at": ctx.clock()})
    db.add(cam)
    try:
        db.flush()
    except IntegrityError:
        db.rollback()
        raise HTTPException(409, f"a camera named {body.name!r} already exists") from None
    audit.record(db, actor=op.name, action="create", entity="camera", entity_id=cam.name, after=_snap(cam),
                 ip=client_ip(request), at=ctx.clock())
    db.commit()
    await _reload(ctx)
    return public(cam)


@router.patch("/{name}", response_model=CameraPublic)
async def update_camera(
    name: str, body: CameraUpdate, request: Request, ctx: Ctx, db: DbSession, op: Operator
) -> CameraPublic:
    cam = _get(db, name)
    if cam.source == "config":
        raise HTTPException(409, f"camera {name!r} is defined in the config file; change it there")
    before = _snap(cam)
    for key, value in body.model_dump(exclude_unset=True).items():
        setattr(cam, key, value)
    cam.updated_at = ctx.clock()
    db.add(cam)
    audit.record(db, actor=op.name, action="update", entity="camera", entity_id=name, before=before,
                 after=_snap(cam), ip=client_ip(request), at=ctx.clock())
    db.commit()
    await _reload(ctx)
    return public(cam)


@router.delete("/{name}", status_code=204)
async def delete_camera(name: str, request: Request, ctx: Ctx, db: DbSession, op: Operator) -> None:
    cam = _get(db, name)
    if cam.source == "config":
        raise HTTPException(409, f"camera {name!r} is defined in the config file; remove it there")
    audit.record(db, actor=op.name, action="delete", entity="camera", entity_id=name, before=_snap(cam),
                 ip=client_ip(request), at=ctx.clock())
    db.delete(cam)
    db.commit()
    await _reload(ctx)


@router.post("/{name}/{action}", response_model=CameraPublic)
async def control_camera(
    name: str, action: str, request: Request, ctx: Ctx, db: DbSession, op: Operator
) -> CameraPublic:
    """`start` or `stop` one camera's worker now (the `enabled` setting is what applies at the next start)."""
    if action not in {"start", "stop"}:
        raise HTTPException(404, "action must be start or stop")
    control = _control(ctx)
    cam = _get(db, name)
    try:
        await (control.start_camera(name) if action == "start" else control.stop_camera(name))
    except KeyError:
        raise HTTPException(409, f"camera {name!r} is not known to the supervisor (is it enabled?)") from None
    audit.record(db, actor=op.name, action=action, entity="camera", entity_id=name, ip=client_ip(request),
                 at=ctx.clock())
    db.commit()
    return public(cam, _statuses(ctx).get(name))


recognition = APIRouter(prefix="/api/v1/recognition", tags=["cameras"])


@recognition.post("/{action}", response_model=list[CameraPublic])
async def control_all(action: str, request: Request, ctx: Ctx, db: DbSession, op: Operator) -> list[CameraPublic]:
    """`start` or `stop` every camera (stop = shut down recognition, the parts keep running)."""
    if action not in {"start", "stop"}:
        raise HTTPException(404, "action must be start or stop")
    control = _control(ctx)
    await (control.start_all() if action == "start" else control.stop_all())
    audit.record(db, actor=op.name, action=f"{action}_all", entity="camera", ip=client_ip(request), at=ctx.clock())
    db.commit()
    return list_cameras(ctx, db, op)
