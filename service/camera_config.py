"""Cameras as the engine and the supervisor see them: the table's rows as settings, and the config
file's cameras mirrored into the table at start (the file is their source of truth)."""

from __future__ import annotations

from typing import Any

from sqlmodel import Session, select

from models.settings import BayZone, CameraSettings
from models.tables import Camera


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
