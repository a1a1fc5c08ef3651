"""Several instances on one PostgreSQL: the lease keeper, the start-up check that instances agree, and
the fleet's status (`baywarden status`). See models.leases for leases and fencing."""

from __future__ import annotations

import asyncio
import logging
import math
import os
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, update
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, select

from models.leases import database_clock_skew
from models.tables import ConsumerCursor, FleetInstance, Lease, StoredEvent
from service.context import AppContext

log = logging.getLogger(__name__)
RETENTION_LEASE = "job.retention"
# The Frigate (MQTT) intake: one instance of a fleet subscribes, so each message is stored once and the
# messages of one tracked object are handled in the order Frigate sent them.
MQTT_INTAKE_LEASE = "intake.mqtt"


def engine_lease(shard: int) -> str:
    return f"engine.{shard}"


def shared_settings(settings: Any) -> dict[str, Any]:
    """The settings every instance on one database must agree on (compared at start)."""
    return {
        "ha.shards": settings.ha.shards,
        "enforcement.rules": settings.enforcement.rules,
        "enforcement.bays": [b.model_dump(mode="json") for b in settings.enforcement.bays],
        "cameras": sorted(c.name for c in settings.cameras),
        "retention": settings.retention.model_dump(mode="json"),
        "anpr.region": settings.anpr.region,
    }


def first_difference(a: Any, b: Any, path: str = "") -> str | None:
    """The first path where two JSON values differ (`enforcement.bays[2].site`), None if equal."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            sub = f"{path}.{key}" if path else str(key)
            if key not in a or key not in b:
                return sub
            found = first_difference(a[key], b[key], sub)
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            found = first_difference(x, y, f"{path}[{i}]")
            if found:
                return found
        return f"{path} (length {len(a)} here, {len(b)} there)" if len(a) != len(b) else None
    return None if a == b else path


def check_fleet_agrees(engine: Engine, settings: Any, ttl_s: float) -> str | None:
    """A live instance on this database configured differently: the difference, in one line."""
    mine = shared_settings(settings)
    since = datetime.now(UTC) - timedelta(seconds=ttl_s * 2)
    with Session(engine) as db:
        others = list(db.exec(select(FleetInstance).where(FleetInstance.heartbeat_at >= since)))
    for other in others:
        diff = first_difference(mine, other.shared_settings)
        if diff:
            return (f"instance {other.id} on this database is configured differently at {diff}; every "
                    f"instance must share these settings (change all of them, or stop the other first)")
    return None


def fair_share(ctx: AppContext, prefix: str, units: int, role: str, ttl_s: float) -> tuple[int, bool]:
    """How leased work (names starting with `prefix`: engine shards, cameras) spreads over the live
    instances that run `role`: (ceil(units / those instances), whether one other than this holds fewer
    such leases than that). Live: a heartbeat in the last 0.75 lease lifetimes (they beat every third),
    so an instance that died stops counting before its leases expire, and nothing is handed to it."""
    now = datetime.now(UTC)
    try:
        with ctx.session() as db:
            # Columns only: the row also holds the shared settings (every bay), not wanted here.
            live = {i for i, roles in db.exec(select(FleetInstance.id, FleetInstance.roles).where(
                FleetInstance.heartbeat_at >= now - timedelta(seconds=0.75 * ttl_s))) if role in roles}
            owners = list(db.exec(select(Lease.owner).where(Lease.name.startswith(prefix))  # type: ignore[attr-defined]
                                  .where(Lease.expires_at > now)))
    except SQLAlchemyError:
        return max(1, units), False
    me = ctx.leases.owner
    live.add(me)
    share = max(1, math.ceil(units / len(live)))
    return share, any(owners.count(i) < share for i in live if i != me)


class LeaseKeeper:
    """Takes and renews this instance's leases (engine shards and singleton jobs), records its heartbeat
    and refuses leadership while its clock is off from the database's.

    Fair share: an instance takes any free shard (so a dead owner's work moves at once) but hands one
    back per round while it holds more than ceil(shards / live instances), so a fleet that grows spreads
    its work; a shard handed back is not taken again for two lease lifetimes."""

    name = "leases"

    def __init__(self, ctx: AppContext, shards: int, singletons: Iterable[str] = (),
                 roles: Iterable[str] = ()) -> None:
        self.ctx = ctx
        self.leases = ctx.leases
        self.shards = shards
        self.singletons = tuple(singletons)
        self.roles = list(roles)
        self.ttl_s = float(getattr(self.leases, "ttl_s", ctx.settings.ha.takeover_s * 0.6))
        self.every_s = self.ttl_s / 3
        self.skew_s = 0.0
        self.clock_ok = True
        self._backoff: dict[str, float] = {}
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None

    async def start(self) -> None:
        await asyncio.to_thread(self.round)
        self._halt.clear()
        self._thread = threading.Thread(target=self._loop, name="lease-keeper", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._halt.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10)
        await asyncio.to_thread(self.leases.release_all)
        await asyncio.to_thread(self.forget)

    def _loop(self) -> None:
        while not self._halt.wait(self.every_s):
            try:
                self.round()
            except Exception:
                log.exception("lease round failed")

    def round(self) -> None:
        try:
            self.skew_s = database_clock_skew(self.ctx.engine)
        except Exception as exc:  # the database is away: held leases lapse at their deadlines
            log.debug("clock not compared: %s", exc)
        limit = self.ctx.settings.ha.max_clock_skew_s
        ok = abs(self.skew_s) <= limit
        if ok != self.clock_ok:
            if not ok:
                log.error("this machine's clock is %.1f s off the database's (ha.max_clock_skew_s is %.1f): "
                          "refusing leadership until it is fixed", self.skew_s, limit)
            else:
                log.info("clock back within %.1f s of the database's; taking leadership again", self.skew_s)
            self.clock_ok = ok
        self.heartbeat()
        if not ok:
            self.leases.release_all()
            return
        mono = time.monotonic()
        for name in [engine_lease(k) for k in range(self.shards)] + list(self.singletons):
            if self.leases.holds(name) is None and self._backoff.get(name, 0.0) > mono:
                continue
            self.leases.acquire(name)
        held = [engine_lease(k) for k in range(self.shards) if self.leases.holds(engine_lease(k)) is not None]
        if len(held) > 1 and self._should_hand_back(len(held)):
            give = held[-1]
            log.info("handing %s back to a less busy instance (%d shards held)", give, len(held))
            self.leases.release(give)
            self._backoff[give] = mono + 2 * self.ttl_s

    def _should_hand_back(self, held: int) -> bool:
        share, someone_has_less = fair_share(self.ctx, "engine.", self.shards, "enforcement", self.ttl_s)
        return held > share and someone_has_less

    def heartbeat(self) -> None:
        """Move this instance's heartbeat: one UPDATE of two columns (the row's shared settings list every
        bay: with thousands of bays, loading it each beat cost the engine a tenth of its time); the row
        is written whole only when it is missing."""
        try:
            with self.ctx.session() as db:
                now = datetime.now(UTC)
                t = FleetInstance.__table__  # type: ignore[attr-defined]
                moved = db.execute(update(t).where(t.c.id == self.leases.owner)
                                   .values(heartbeat_at=now, clock_skew_s=round(self.skew_s, 3))).rowcount
                if not moved:
                    db.add(FleetInstance(
                        id=self.leases.owner, node=self.ctx.settings.ha.node or self.leases.owner.split(":")[0],
                        pid=os.getpid(), roles=self.roles, started_at=now, heartbeat_at=now,
                        clock_skew_s=round(self.skew_s, 3), shared_settings=shared_settings(self.ctx.settings)))
                db.commit()
        except SQLAlchemyError as exc:
            log.debug("heartbeat not recorded: %s", exc)

    def forget(self) -> None:
        try:
            with self.ctx.session() as db:
                row = db.get(FleetInstance, self.leases.owner)
                if row is not None:
                    db.delete(row)
                    db.commit()
        except SQLAlchemyError:
            pass


def fleet_status(engine: Engine) -> dict[str, Any]:
    """Instances, leases (owner, token, seconds left) and the lag of each engine shard's cursor."""
    now = datetime.now(UTC)
    with Session(engine) as db:
        f = FleetInstance
        instances = [
            {"id": i.id, "node": i.node, "pid": i.pid, "roles": i.roles,
             "heartbeat_s_ago": round((now - i.heartbeat_at).total_seconds(), 1), "clock_skew_s": i.clock_skew_s,
             "started_at": i.started_at.isoformat()}
            for i in db.exec(select(f.id, f.node, f.pid, f.roles, f.heartbeat_at, f.clock_skew_s, f.started_at)
                             .order_by(f.id))
        ]
        leases = [
            {"name": le.name, "owner": le.owner, "token": le.token,
             "expires_in_s": round((le.expires_at - now).total_seconds(), 1),
             "held": le.expires_at > now}
            for le in db.exec(select(Lease).order_by(Lease.name))
        ]
        head = db.exec(select(func.max(StoredEvent.seq))).one() or 0
        cursors = [
            {"name": c.name, "seq": c.seq, "lag": max(0, head - c.seq), "updated_at": c.updated_at.isoformat()}
            for c in db.exec(select(ConsumerCursor).order_by(ConsumerCursor.name))
        ]
    return {"instances": instances, "leases": leases, "event_head": head, "cursors": cursors}


def lease_owners(engine: Engine, prefix: str) -> dict[str, str]:
    """Live leases whose name starts with `prefix`: the rest of the name -> owner (e.g. cameras)."""
    now = datetime.now(UTC)
    try:
        with Session(engine) as db:
            rows = db.exec(select(Lease).where(Lease.name.startswith(prefix)).where(Lease.expires_at > now))  # type: ignore[attr-defined]
            return {le.name[len(prefix):]: le.owner for le in rows}
    except SQLAlchemyError:
        return {}
