"""The enforcement service: routes events to bays, runs `decide`, applies the actions in ONE database
transaction together with the new bay state. A crash anywhere leaves either all of it or none, and
since `decide` is deterministic and idempotent, re-delivering the event afterwards is harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine
from sqlalchemy import select as sa_select
from sqlmodel import Session, func, select

from enforcement.decide import (
    AccessDecision,
    BayState,
    CloseVisit,
    DecideContext,
    FinalisePenalty,
    OpenVisit,
    Overstay,
    RaiseAlert,
    RaiseViolation,
    SendWarning,
    TimerDue,
    Visit,
    decide,
    unknown_bay_alert,
)
from enforcement.lists import BlacklistEntry, WhitelistEntry
from enforcement.rules import Rules, resolve_rules
from models.base import Clock
from models.db import insert_rows, update_rows
from models.events import (
    CameraStateChanged,
    ChargingIdle,
    ChargingSuspended,
    ConnectorAvailable,
    TransactionEnded,
    TransactionStarted,
    TransactionUpdated,
    VehicleArrived,
    VehicleDeparted,
    VehicleStillPresent,
)
from models.leases import LeaseLost
from models.settings import BaySettings, EnforcementSettings
from models.tables import AccessLog, Alert, BayStateRow, ListEntry, ListsVersion, Penalty, TimerRow, Vehicle, VisitRow

log = logging.getLogger(__name__)

CAMERA_EVENTS = (VehicleArrived, VehicleStillPresent, VehicleDeparted)
CHARGER_EVENTS = (
    TransactionStarted,
    TransactionUpdated,
    ChargingSuspended,
    ChargingIdle,
    TransactionEnded,
    ConnectorAvailable,
)
_CAMERA_KINDS = frozenset(c.model_fields["kind"].default for c in CAMERA_EVENTS)
_CHARGER_KINDS = frozenset(c.model_fields["kind"].default for c in CHARGER_EVENTS)
_NEVER_ROUTED = frozenset({"plate_read", "charger_connection", "relay_upstream"})  # read models only
_WIRING = ("kind", "charge_point_id", "evse_id", "connector_id", "cameras")
ALERT_SEVERITY = {"blacklist": "critical", "return_ban": "warning", "camera_down": "warning", "unknown_bay": "info"}

_IN_CHUNK = 500  # ids per IN (...) list


BAN_KINDS = ("idle", "overstay")  # penalties a return ban starts from


@dataclass
class _Batch:
    """What one transaction has read and what it still has to write (see `handle_many`).

    Bay states are read (and locked) for the whole batch at once; visit and timer rows, which only
    mirror the bay state for queries, are written once per batch from each one's last value, so a
    bay that sees several events in a batch costs one write of each, not one per event."""

    # bay -> (its state now, its version: events applied), read and locked once per batch
    bays: dict[str, tuple[BayState | None, int]] = field(default_factory=dict)
    stored: set[str] = field(default_factory=set)  # bays that have a row
    dirty: dict[str, datetime] = field(default_factory=dict)  # bays whose state this batch changed, when
    visits: dict[str, tuple[Visit, datetime]] = field(default_factory=dict)  # latest value wins
    timers: dict[str, tuple[BayState, datetime]] = field(default_factory=dict)  # bay -> last state
    bans: tuple[datetime, list[Penalty]] | None = None  # (since, penalties ended since then)
    # violation id -> its penalty row (None: none), for every penalty of the visits read with the bays
    # (`penalty_visits`) and those this batch added: a departure finalises its penalties without a
    # SELECT (and the autoflush before it) per event.
    penalties: dict[str, Penalty | None] = field(default_factory=dict)
    penalty_visits: set[str] = field(default_factory=set)


def _chunks(ids: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(ids), _IN_CHUNK):
        yield ids[i : i + _IN_CHUNK]


# Called inside the transaction for what must reach people: (db, kind, payload). The notification
# outbox hooks in here, so a message is enqueued exactly when its penalty or alert is stored.
Notifier = Callable[[Session, str, dict[str, Any]], None]


def check_rules(cfg: EnforcementSettings) -> list[str]:
    """Problems in the configured site and bay rules, one line each (for `config validate` and start)."""
    from pydantic import ValidationError

    problems = []
    try:
        site = Rules.model_validate(cfg.rules)
    except ValidationError as exc:
        return [f"enforcement.rules.{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]
    seen = set()
    for i, bay in enumerate(cfg.bays):
        if bay.bay_id in seen:
            problems.append(f"enforcement.bays.{i}.bay_id: {bay.bay_id!r} is configured twice")
        seen.add(bay.bay_id)
        try:
            resolve_rules(site, bay.rules)
        except (ValidationError, ValueError) as exc:
            problems.append(f"enforcement.bays.{i}.rules: {exc}".splitlines()[0])
    return problems


Lists = tuple[tuple[WhitelistEntry, ...], tuple[BlacklistEntry, ...], tuple[str, ...]]


class EnforcementService:
    def __init__(
        self,
        engine: Engine,
        cfg: EnforcementSettings,
        camera_zones: dict[str, list[str]],
        clock: Clock,
        notify: Notifier | None = None,
    ):
        self.engine = engine
        self.cfg = cfg
        self.site_rules = Rules.model_validate(cfg.rules)
        self.bays: dict[str, BaySettings] = {b.bay_id: b for b in cfg.bays}
        self.rules = {b.bay_id: resolve_rules(self.site_rules, b.rules) for b in cfg.bays}
        # camera name -> bays it watches (from the cameras' zones)
        self.camera_bays = camera_zones
        self.clock = clock
        self.notify = notify
        self.handled = 0
        # Precomputed once: a charger event is routed by its charge point id, not by scanning every bay.
        self._initial_states = {b: self._make_initial(b) for b in self.bays}
        self._by_charger: dict[str, list[str]] = {}
        for b in self.bays.values():
            if b.charge_point_id:
                self._by_charger.setdefault(b.charge_point_id, []).append(b.bay_id)
        self._after_commit: list[tuple[int, BaySettings, AccessDecision]] = []
        self._max_ban_h = max((r.return_ban_hours for r in self.rules.values()), default=0)
        # (lists version, lists) last read; `lists_loaded` counts the reads (tests, diagnostics)
        self._lists_cache: tuple[int, Lists] | None = None
        self.lists_loaded = 0

    # --- routing ----------------------------------------------------------------------------

    def _initial(self, bay_id: str) -> BayState:
        return self._initial_states[bay_id]

    def _make_initial(self, bay_id: str) -> BayState:
        bay = self.bays[bay_id]
        cams = tuple(sorted(c for c, bays in self.camera_bays.items() if bay_id in bays))
        return BayState(
            bay_id=bay_id,
            kind=bay.kind,
            charge_point_id=bay.charge_point_id,
            evse_id=bay.evse_id,
            connector_id=bay.connector_id,
            cameras=cams,
        )

    def _targets(self, db: Session, event: Any) -> list[str]:
        if isinstance(event, CAMERA_EVENTS):
            return [event.bay_id]
        if isinstance(event, CameraStateChanged):
            return sorted(b for b in self.camera_bays.get(event.camera, []) if b in self.bays)
        if isinstance(event, CHARGER_EVENTS):
            return [  # only the bays of that charger (a scan of every bay cost 0.75 ms per event at 1,000 bays)
                b
                for b in self._by_charger.get(event.charge_point_id, ())
                if self._initial(b).owns_evse(event.charge_point_id, event.evse_id, event.connector_id)
            ]
        if isinstance(event, TimerDue):
            row = db.get(TimerRow, event.timer_id)
            return [row.bay_id] if row is not None else []
        return []

    def may_concern(self, kind: str, payload: dict[str, Any], only: Collection[str] | None = None,
                    unknown_bays: bool = True) -> bool:
        """A look at a stored event's kind and ids before it is parsed: False only where `concerns`
        would say False (a shard skips the other shards' events without validating them)."""
        if kind in _CAMERA_KINDS:
            bay = payload.get("bay_id")
            if bay not in self.bays:
                return unknown_bays
            return only is None or bay in only
        if kind in _CHARGER_KINDS:
            bays = self._by_charger.get(str(payload.get("charge_point_id")), ())
            return any(only is None or b in only for b in bays)
        return kind not in _NEVER_ROUTED

    def concerns(self, event: Any, only: Collection[str] | None = None, unknown_bays: bool = True) -> bool:
        """Whether `handle(event, only=..., unknown_bays=...)` would touch anything (no database read)."""
        if isinstance(event, CAMERA_EVENTS) and event.bay_id not in self.bays:
            return unknown_bays
        if isinstance(event, TimerDue):
            return True
        targets = self._targets(None, event)  # type: ignore[arg-type]  # only timers read the database
        return bool(targets) if only is None else any(b in only for b in targets)

    # --- the one transaction ----------------------------------------------------------------

    def handle(
        self,
        event: Any,
        now: datetime | None = None,
        *,
        only: Collection[str] | None = None,
        unknown_bays: bool = True,
        before_commit: Callable[[Session], None] | None = None,
    ) -> int:
        """Apply one event to every bay it concerns; return how many actions were applied.

        A sharded engine passes the bays of its shard (`only`), whether this shard reports events for
        bays nobody configured (`unknown_bays`), and `before_commit`, which runs inside the transaction
        just before it commits: the shard's cursor moves there, and its lease is checked (fencing; it
        raises when the lease was lost, and nothing of this event is stored)."""
        return self.handle_many([(event, now)], only=only, unknown_bays=unknown_bays, before_commit=before_commit)

    def handle_many(
        self,
        events: Sequence[tuple[Any, datetime | None]],
        *,
        only: Collection[str] | None = None,
        unknown_bays: bool = True,
        before_commit: Callable[[Session], None] | None = None,
    ) -> int:
        """Apply several events, in order, in ONE transaction (see `handle`; `now` None: the clock).

        A shard's engine applies its backlog this way: one commit, one lease check and one cursor
        move per batch instead of per event, the batch's bay states read and locked in one query
        (in bay order, so two transactions never wait on each other in a cycle) and visit and timer
        rows written once per batch. If any event raises, nothing of the batch is stored."""
        applied = 0
        self._after_commit.clear()
        try:
            with Session(self.engine, expire_on_commit=False) as db:
                self._lock_bays(db, events, only)
                for event, now in events:
                    applied += self._apply_one(db, event, now or self.clock(), only, unknown_bays)
                self._sync_pending(db)
                if before_commit is not None:
                    before_commit(db)
                db.commit()
        except BaseException:
            self._after_commit.clear()  # nothing was stored: nothing to send
            raise
        self.handled += len(events)
        for log_id, bay, decision in self._after_commit:
            self._trigger_output(log_id, bay, decision)  # only after the decision is safely stored
        self._after_commit.clear()
        return applied

    def _apply_one(
        self, db: Session, event: Any, now: datetime, only: Collection[str] | None, unknown_bays: bool
    ) -> int:
        if isinstance(event, CAMERA_EVENTS) and event.bay_id not in self.bays:
            if not unknown_bays:
                return 0
            self._unknown_bay(db, event, now)
            return 1
        targets = self._targets(db, event)
        if only is not None:
            targets = [b for b in targets if b in only]
        return sum(self._decide_one(db, bay_id, event, now) for bay_id in targets)

    @staticmethod
    def _batch(db: Session) -> _Batch:
        batch = db.info.get("baywarden.batch")
        if batch is None:
            batch = db.info["baywarden.batch"] = _Batch()
        return batch

    def _lock_bays(self, db: Session, events: Sequence[tuple[Any, datetime | None]],
                   only: Collection[str] | None) -> None:
        """Read and lock the bay states of every bay the batch concerns, in one query per 500 bays."""
        wanted: set[str] = set()
        for event, _ in events:
            if isinstance(event, CAMERA_EVENTS) and event.bay_id not in self.bays:
                continue
            wanted.update(b for b in self._targets(db, event) if only is None or b in only)
        self._read_bays(db, sorted(wanted - self._batch(db).bays.keys()))

    def _read_bays(self, db: Session, ids: Sequence[str]) -> None:
        """Read and lock these bays' stored states (columns only: no ORM objects to build or flush)."""
        batch = self._batch(db)
        t = BayStateRow.__table__  # type: ignore[attr-defined]
        for chunk in _chunks(ids):
            q = sa_select(t.c.bay_id, t.c.state, t.c.version).where(t.c.bay_id.in_(chunk)).order_by(t.c.bay_id)
            for bay_id, state, version in db.execute(q.with_for_update()):
                stored = BayState.model_validate(state)
                init = self._initial(bay_id) if bay_id in self.bays else None
                # the bay's wiring may have been edited; the visit keeps its rules
                if init is not None and any(getattr(stored, k) != getattr(init, k) for k in _WIRING):
                    stored = stored.model_copy(update={k: getattr(init, k) for k in _WIRING})
                batch.bays[bay_id] = (stored, version)
                batch.stored.add(bay_id)
        for b in ids:
            batch.bays.setdefault(b, (None, 0))
        # Only the engine writes penalties, each in the transaction that adds its violation to the visit:
        # a visit with no violation has no penalty row, so only the others' are read (most batches then
        # read none) and a violation raised later in the batch looks nothing up.
        visits = [s.visit for b in ids if (s := batch.bays[b][0]) and s.visit]
        self._read_penalties(db, [v.visit_id for v in visits if v.violations])
        batch.penalty_visits.update(v.visit_id for v in visits if not v.violations)

    def _read_penalties(self, db: Session, visit_ids: Sequence[str]) -> None:
        """Load these visits' penalty rows into the batch (one query per 500 visits, after the bays'
        locks: only the engine holding a bay's lock raises or finalises its visit's penalties)."""
        batch = self._batch(db)
        for chunk in _chunks(sorted(set(visit_ids) - batch.penalty_visits)):
            for p in db.exec(select(Penalty).where(Penalty.visit_id.in_(chunk))):  # type: ignore[attr-defined]
                batch.penalties[p.violation_id] = p
            batch.penalty_visits.update(chunk)

    def _penalty(self, db: Session, violation_id: str, visit_id: str) -> Penalty | None:
        """The stored (or added this batch) penalty of this violation, if any."""
        batch = self._batch(db)
        if violation_id in batch.penalties:
            return batch.penalties[violation_id]
        if visit_id in batch.penalty_visits:
            return None  # its visit's penalties were read: there is none
        p = batch.penalties[violation_id] = db.get(Penalty, violation_id)
        return p

    def _decide_one(self, db: Session, bay_id: str, event: Any, now: datetime) -> int:
        batch = self._batch(db)
        if bay_id not in batch.bays:
            self._read_bays(db, [bay_id])
        stored, version = batch.bays[bay_id]
        state = stored if stored is not None else self._initial(bay_id)
        decision = decide(state, event, now, self._context(db, bay_id, now))
        for action in decision.actions:
            self._apply(db, bay_id, action, now)
        new = decision.new_state
        self._sync_visit(db, new.visit, now)
        batch.timers[bay_id] = (new, now)
        batch.bays[bay_id] = (new, version + 1)  # written by `_sync_pending`
        batch.dirty[bay_id] = now
        return len(decision.actions)

    def _lists(self, db: Session) -> Lists:
        """White list, black list and known plates, fixed for the transaction: the engine never writes
        them, so every event of a batch sees what the transaction's first look saw. They are read
        again only when `lists_version` moved (triggers bump it on any change to either table, by any
        writer); reading 10,000 vehicles and 2,000 list entries took ~80 ms, per batch."""
        memo = db.info.get("baywarden.lists")
        if memo is not None:
            return memo
        # The version is read before the lists: lists read after it are at least as new as it says.
        lv = ListsVersion.__table__.c  # type: ignore[attr-defined]  # Core: no ORM execution per transaction
        version = db.execute(sa_select(lv.version).where(lv.name == "lists")).scalar_one_or_none()
        cached = self._lists_cache
        if version is not None and cached is not None and cached[0] == version:
            memo = cached[1]
        else:
            memo = self._read_lists(db)
            self.lists_loaded += 1
            self._lists_cache = (version, memo) if version is not None else None
        db.info["baywarden.lists"] = memo
        return memo

    @staticmethod
    def _read_lists(db: Session) -> Lists:
        c = ListEntry.__table__.c  # type: ignore[attr-defined]
        white, black = [], []
        for kind, plate, owner, reason, priority, valid_from, valid_until in db.execute(
            sa_select(c.list, c.plate, c.owner, c.reason, c.priority, c.valid_from, c.valid_until).order_by(c.id)
        ):
            if kind == "white":
                white.append(WhitelistEntry(plate=plate, owner=owner, reason=reason,
                                            valid_from=valid_from, valid_until=valid_until))
            else:
                black.append(BlacklistEntry(plate=plate, reason=reason, priority=priority,
                                            valid_from=valid_from, valid_until=valid_until))
        known = tuple(db.execute(sa_select(Vehicle.plate)).scalars())  # type: ignore[call-overload]
        return tuple(white), tuple(black), known

    def _context(self, db: Session, bay_id: str, now: datetime) -> DecideContext:
        rules = self.rules[bay_id]
        white, black, known = self._lists(db)
        occupancy = None  # read only where a rule gates on it: one query per event saved everywhere else
        if rules.min_occupancy_pct is not None and self.bays:
            self._sync_pending(db)  # the visits this batch opened or closed count
            open_visits = db.exec(select(func.count()).select_from(VisitRow).where(VisitRow.departed_at == None)).one()  # noqa: E711
            occupancy = 100.0 * open_visits / len(self.bays)
        ban_h = self._max_ban_h
        overstays: list[Overstay] = []
        if ban_h:
            since = now - timedelta(hours=ban_h)
            for p in self._recent_penalties(db, since):
                if p.plate and p.ended_at and p.ended_at >= since and p.state not in ("waived", "voided"):
                    until = p.ended_at + timedelta(hours=self.rules.get(p.bay_id, rules).return_ban_hours)
                    overstays.append(
                        Overstay(
                            plate=p.plate,
                            visit_id=p.visit_id,
                            bay_id=p.bay_id,
                            ended_at=p.ended_at,
                            until=until,
                            needs_review=p.needs_review,
                        )
                    )
        return DecideContext(
            rules=rules,
            whitelist=white,
            blacklist=black,
            known_plates=known,
            occupancy_pct=min(occupancy, 100.0) if occupancy is not None else None,
            recent_overstays=tuple(overstays),
        )

    def _recent_penalties(self, db: Session, since: datetime) -> list[Penalty]:
        """Idle and overstay penalties ended since `since`: read once per batch (the caller filters
        by its own `since`), again only for an earlier `since`; those the batch ends join it (`_finalise`)."""
        batch = self._batch(db)
        if batch.bans is None or since < batch.bans[0]:
            q = select(Penalty).where(Penalty.kind.in_(BAN_KINDS)).where(Penalty.ended_at >= since)  # type: ignore[attr-defined]
            batch.bans = (since, list(db.exec(q)))
        return batch.bans[1]

    def _notify(self, db: Session, kind: str, payload: dict[str, Any]) -> None:
        if self.notify:
            self._sync_pending(db)  # a notice looks up its visit's evidence
            self.notify(db, kind, payload)

    # --- applying actions -------------------------------------------------------------------

    def _apply(self, db: Session, bay_id: str, action: Any, now: datetime) -> None:
        if isinstance(action, OpenVisit | CloseVisit):
            self._sync_visit(db, action.visit, now)
        elif isinstance(action, RaiseAlert):
            self._alert(db, action)
        elif isinstance(action, SendWarning):
            self._notify(db, "penalty_warning", {"bay_id": bay_id, **action.model_dump(mode="json")})
        elif isinstance(action, RaiseViolation):
            p = self._penalty(db, action.violation_id, action.visit_id)
            if p is None:
                p = Penalty(
                    violation_id=action.violation_id,
                    visit_id=action.visit_id,
                    bay_id=bay_id,
                    kind=action.kind,
                    plate=action.plate,
                    started_at=action.started_at,
                    amount=str(action.amount_so_far),
                    currency=action.currency,
                    needs_review=action.needs_review,
                    review_reason=action.review_reason,
                    created_at=now,
                    updated_at=now,
                )
                db.add(p)
                self._batch(db).penalties[p.violation_id] = p  # not ended: no return ban from it yet
        elif isinstance(action, FinalisePenalty):
            self._finalise(db, bay_id, action, now)
        elif isinstance(action, AccessDecision):
            row = AccessLog(at=action.at, bay_id=bay_id, presence_id=action.presence_id, plate=action.plate,
                            accepted=action.accepted, reason=action.reason[:300])
            db.add(row)
            db.flush()
            bay = self.bays[bay_id]
            if action.accepted and bay.output is not None and row.id is not None:
                self._after_commit.append((row.id, bay, action))
        # LinkTransaction, AppendTimeline, Schedule/CancelTimer are carried by the state sync below.

    def _finalise(self, db: Session, bay_id: str, a: FinalisePenalty, now: datetime) -> None:
        p = self._penalty(db, a.violation_id, a.visit_id) or Penalty(
            violation_id=a.violation_id,
            visit_id=a.visit_id,
            bay_id=bay_id,
            kind=a.kind,
            plate=a.plate,
            started_at=a.started_at,
            created_at=now,
            updated_at=now,
        )
        if p.state not in ("violation",):
            return  # already finalised (a replay): never doubled
        p.ended_at, p.minutes, p.amount, p.currency = a.ended_at, a.minutes, str(a.amount), a.currency
        p.needs_review, p.review_reason, p.updated_at = a.needs_review, a.review_reason, now
        rules = self.rules[bay_id]
        if a.voided:
            p.state = "voided"
        elif a.amount <= Decimal(0):
            p.state = "no_charge"
        elif a.needs_review or rules.require_review or a.plate is None:
            p.state = "pending_review"
        else:
            p.state = "notice_issued"
        db.add(p)
        batch = self._batch(db)
        batch.penalties[p.violation_id] = p
        # A return ban may start from this one: the batch's list of ended penalties gains it (read
        # again per event, that list made every departure of a batch cost a query). It cannot be in the
        # list already: only a penalty not yet ended (state "violation") gets here.
        if batch.bans is not None and p.kind in BAN_KINDS and p.ended_at >= batch.bans[0]:
            batch.bans[1].append(p)
        if p.state == "notice_issued":
            self._notify(db, "penalty_notice", {"bay_id": bay_id, **a.model_dump(mode="json")})

    def _alert(self, db: Session, a: RaiseAlert) -> None:
        title = {
            "blacklist": f"Blacklisted vehicle {a.plate or '?'} at bay {a.bay_id}",
            "return_ban": f"{a.plate or '?'} returned to bay {a.bay_id} during a return ban",
            "camera_down": f"Bay {a.bay_id} is not watched: camera down",
            "unknown_bay": f"Camera reports unknown bay {a.bay_id}",
        }.get(a.kind, f"{a.kind} at bay {a.bay_id}")
        alert = Alert(
            at=a.at,
            kind=a.kind,
            severity=ALERT_SEVERITY.get(a.kind, "warning"),
            title=title,
            detail=a.detail[:2000],
            subject=a.plate or a.bay_id or "",
        )
        db.add(alert)
        self._notify(db, "operator_alert", {"title": title, **a.model_dump(mode="json")})

    def _unknown_bay(self, db: Session, event: Any, now: datetime) -> None:
        # One alert per unknown bay and hour, not one per heartbeat.
        recent = db.exec(
            select(Alert)
            .where(Alert.kind == "unknown_bay")
            .where(Alert.subject == event.bay_id)
            .where(Alert.at >= now - timedelta(hours=1))
        ).first()
        if recent is None:
            a = unknown_bay_alert(event)
            db.add(
                Alert(
                    at=a.at,
                    kind="unknown_bay",
                    severity="info",
                    title=f"Camera reports unknown bay {a.bay_id}",
                    detail=a.detail,
                    subject=event.bay_id,
                )
            )

    def _sync_visit(self, db: Session, visit: Visit | None, now: datetime) -> None:
        if visit is not None:  # written by `_sync_pending`, once per batch, from its last value
            self._batch(db).visits[visit.visit_id] = (visit, now)

    def _sync_pending(self, db: Session) -> None:
        """Write the bay states, visits and timers this batch changed: a few multi-row statements,
        whatever the batch's size (SQLAlchemy Core: no ORM object per row)."""
        batch = self._batch(db)
        db.flush()  # the ORM rows of this batch (penalties, alerts, ...) go first
        dirty, batch.dirty = batch.dirty, {}
        updates, inserts = [], []
        for bay_id, now in dirty.items():
            state, version = batch.bays[bay_id]
            assert state is not None
            row = {"bay_id": bay_id, "state": state.model_dump(mode="json"), "version": version, "updated_at": now}
            (updates if bay_id in batch.stored else inserts).append(row)
            batch.stored.add(bay_id)
        bays = BayStateRow.__table__  # type: ignore[attr-defined]
        # One statement per table on PostgreSQL whatever the count (models.db.insert_rows / update_rows).
        update_rows(db, bays, updates, "bay_id")
        insert_rows(db, bays, inserts)
        visits, batch.visits = batch.visits, {}
        if visits:
            rows = [self._visit_row(visit, now) for visit, now in visits.values()]
            insert_rows(db, VisitRow.__table__, rows, ["visit_id"], [c for c in rows[0] if c != "visit_id"])
        states, batch.timers = batch.timers, {}
        if not states:
            return
        wanted = {t.timer_id: (bay_id, t) for bay_id, (state, _) in states.items() for t in state.timers}
        timers = TimerRow.__table__  # type: ignore[attr-defined]
        for chunk in _chunks(sorted(states)):
            # Fired or cancelled inside decide: no longer in its bay's state.
            db.execute(timers.update().where(timers.c.bay_id.in_(chunk), timers.c.state == "pending",
                                             timers.c.timer_id.not_in(sorted(wanted))).values(state="done"))
        if wanted:
            rows = [{"timer_id": t.timer_id, "bay_id": bay_id, "visit_id": t.visit_id, "kind": t.kind,
                     "due_at": t.due_at, "state": "pending"} for bay_id, t in wanted.values()]
            insert_rows(db, timers, rows, ["timer_id"], ["state"], only_if_changed="state")

    @staticmethod
    def _visit_row(visit: Visit, now: datetime) -> dict[str, Any]:
        return {
            "visit_id": visit.visit_id, "bay_id": visit.bay_id, "plate": visit.plate,
            "plate_confidence": visit.plate_confidence, "arrived_at": visit.arrived_at,
            "departed_at": visit.departed_at, "close_reason": visit.close_reason,
            "charge_point_id": visit.tx.charge_point_id if visit.tx else None,
            "transaction_id": visit.tx.transaction_id if visit.tx else None,
            "exempt": visit.exempt, "blacklisted": visit.blacklisted,
            "data": visit.model_dump(mode="json"), "updated_at": now,
        }

    # --- access outputs ---------------------------------------------------------------------

    def _trigger_output(self, log_id: int, bay: BaySettings, d: AccessDecision) -> None:
        """Open the barrier: an HTTP call with timeout and bounded retries; the result goes to the log."""
        import time

        import httpx

        out = bay.output
        assert out is not None
        fill = {"plate": d.plate or "", "bay_id": d.bay_id, "at": d.at.isoformat()}
        try:
            body = out.body.format(**fill) if out.body else None
        except (KeyError, IndexError, ValueError) as exc:
            self._record_output(log_id, "failed", f"body template: {exc}")
            return
        status, error = "failed", ""
        for attempt in range(out.retries + 1):
            try:
                r = httpx.request(out.method, out.url, content=body, headers=out.headers, timeout=out.timeout_s)
                if r.status_code < 500:
                    status, error = str(r.status_code), "" if r.is_success else r.text[:300]
                    break
                error = f"HTTP {r.status_code}"
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"[:300]
            time.sleep(min(0.2 * 2**attempt, 2.0))
        self._record_output(log_id, status, error or None)

    def _record_output(self, log_id: int, status: str, error: str | None) -> None:
        with Session(self.engine) as db:
            row = db.get(AccessLog, log_id)
            if row is not None:
                row.output_status, row.output_error = status, error
                db.add(row)
                db.commit()
        if status == "failed":
            log.warning("access output for log %d failed: %s", log_id, error)

    # --- the sweep --------------------------------------------------------------------------

    def due_timers(self, now: datetime, limit: int = 500, only: Collection[str] | None = None) -> list[TimerDue]:
        with Session(self.engine) as db:
            q = (
                select(TimerRow)
                .where(TimerRow.state == "pending")
                .where(TimerRow.due_at <= now)
                .order_by(TimerRow.due_at)
                .limit(limit)
            )
            if only is not None:
                q = q.where(TimerRow.bay_id.in_(sorted(only)))  # type: ignore[attr-defined]
            return [
                TimerDue(timer_id=r.timer_id, kind=r.kind, visit_id=r.visit_id, due_at=r.due_at)  # type: ignore[arg-type]
                for r in db.exec(q)
            ]

    def sweep(
        self,
        now: datetime | None = None,
        *,
        only: Collection[str] | None = None,
        before_commit: Callable[[Session], None] | None = None,
    ) -> int:
        """Feed every due timer back into the core (timers that fell due while we were down, too); a
        shard feeds its own bays' timers (`only`) under its lease (`before_commit`, see `handle`)."""
        now = now or self.clock()
        fed = 0
        for due in self.due_timers(now, only=only):
            try:
                self.handle(due, now, only=only, before_commit=before_commit)
                fed += 1
            except LeaseLost:
                raise
            except Exception:
                log.exception("timer %s failed", due.timer_id)
        return fed


def camera_zones(cameras: Iterable[Any]) -> dict[str, list[str]]:
    """camera name -> the bay ids of its zones (cameras as settings or DB rows)."""
    out: dict[str, list[str]] = {}
    for cam in cameras:
        zones = cam.zones
        out[cam.name] = [z["bay_id"] if isinstance(z, dict) else z.bay_id for z in zones]
    return out

