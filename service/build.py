"""Wiring: the context and the parts `baywarden run` starts, from the settings (`create_app` serves them)."""

from __future__ import annotations

import logging
from typing import Any

from models.base import Clock, IdFactory, new_id, utcnow
from models.db import make_engine
from models.settings import Settings
from service.context import AppContext, Component
from service.runtime_settings import sources_at_start
from service.scheduler import SchedulerComponent

log = logging.getLogger(__name__)


# Instances of a fleet started together would each read "no such bay yet" and insert it, and all but
# one fail on the primary key: the mirroring is one transaction at a time across the fleet.
SYNC_LOCK_KEY = 0x42617953  # pg_advisory_xact_lock key ("BayS"); nothing else here takes advisory locks


def _one_at_a_time(db: Any) -> None:
    if db.get_bind().dialect.name == "postgresql":
        from sqlalchemy import text

        db.connection().execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SYNC_LOCK_KEY})


def sync_config(ctx: AppContext) -> None:
    """Mirror the config file's cameras and bays into their tables (the file is their source of truth)."""
    from sqlalchemy.exc import OperationalError, SQLAlchemyError

    from enforcement.config import sync_config_bays
    from service.camera_config import sync_config_cameras

    try:
        with ctx.session() as db:
            _one_at_a_time(db)  # held until the commit at the end of each sync
            sync_config_cameras(db, ctx.settings.cameras, ctx.clock())
            _one_at_a_time(db)
            sync_config_bays(db, ctx.settings.enforcement, ctx.clock())
    except OperationalError as exc:  # the app still starts, /readyz reports the database
        log.warning("config cameras/bays not synced, database unavailable: %s", str(exc).splitlines()[0])
    except SQLAlchemyError as exc:
        log.error("config cameras/bays not synced: %s", str(exc).splitlines()[0])


def build_context(
    settings: Settings,
    *,
    clock: Clock = utcnow,
    ids: IdFactory = new_id,
    components: list[Component] | None = None,
    recognizer: Any = None,
) -> AppContext:
    ctx = AppContext(settings=settings, engine=make_engine(settings.db_url), clock=clock, ids=ids)
    from service.notify import Notifier, OutboxDispatcher

    ctx.notify = Notifier(ctx)
    if components is None:
        components = []
        from service.fleet import MQTT_INTAKE_LEASE, RETENTION_LEASE, LeaseKeeper

        singletons = []
        if settings.components.scheduler:
            singletons.append(RETENTION_LEASE)
        if settings.mqtt is not None:
            singletons.append(MQTT_INTAKE_LEASE)
        leads = settings.components.enforcement or settings.components.cameras or singletons
        if ctx.engine.dialect.name == "postgresql" and leads:
            roles = [name for name, on in settings.components.model_dump().items() if on]
            # First: the shards and jobs this instance leads are known before the parts that do them start.
            components.append(LeaseKeeper(
                ctx, settings.ha.shards if settings.components.enforcement else 0, singletons=singletons, roles=roles,
            ))
        scheduler = SchedulerComponent(ctx) if settings.components.scheduler else None
        if scheduler is not None:
            components.append(scheduler)
        if settings.components.enforcement:
            from service.enforcement_control import EnforcementComponent

            engine_part = EnforcementComponent(ctx, notify=ctx.notify)
            ctx.enforcement = engine_part
            components.append(engine_part)
            if scheduler is not None:
                scheduler.add_job("enforcement-sweep", engine_part.request_sweep, settings.enforcement.sweep_every_s)
        if scheduler is not None:
            scheduler.add_job("outbox", OutboxDispatcher(ctx), settings.notifications.dispatch_every_s)
            # Always: sources may be added in the dashboard at run time (an empty sweep is one query).
            scheduler.add_job("source-presences", lambda: sweep_sources(ctx), 5)
        if settings.components.cameras:
            from anpr.factory import RecognizerSpec
            from service.camera_control import CameraComponent

            cameras = CameraComponent(ctx, recognizer or RecognizerSpec.from_settings(settings.anpr))
            components.append(cameras)
            if scheduler is not None:
                scheduler.add_job("camera-health", cameras.check_health, 5)
        if settings.mqtt is not None:
            from service.mqtt import MqttComponent

            components.append(MqttComponent(ctx))
        if settings.ftp is not None:
            # Logins are checked against the sources in use at each login, so ftp sources added or
            # changed in the dashboard work without a restart; `ftp:` alone says the port is wanted.
            from service.ftp_intake import FtpIntakeComponent

            components.append(FtpIntakeComponent(ctx))
        if any(s.kind == "dahua" and s.enabled for s in sources_at_start(ctx)):
            from service.dahua import DahuaComponent

            components.append(DahuaComponent(ctx))
        if settings.components.relay:
            from service.relay_control import RelayComponent

            components.append(RelayComponent(ctx))
    ctx.components = components
    return ctx


def sweep_sources(ctx: AppContext) -> int:
    """Departures of cars outside sources reported once: cable out, or silent past the source's timeout."""
    from enforcement.config import effective
    from service.runtime_settings import effective_sources
    from service.sources import sweep_presences

    with ctx.session() as db:
        bays = {b.bay_id: b for b in effective(db, ctx.settings.enforcement).bays}
        sources = effective_sources(ctx, db)
    envelopes = sweep_presences(ctx.engine, sources, bays, ctx.clock())
    ctx.publish_from_thread(envelopes)
    return len(envelopes)
