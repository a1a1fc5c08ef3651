"""The enforcement part: the engine's work, split by site into `ha.shards` shards, each applied by
one thread of the one instance that holds the shard's lease (models.leases). A shard's thread reads
the event inbox in sequence order behind its own cursor and feeds the core the events of its bays; the
scheduler's sweep feeds its bays' due timers through the same thread, so each bay sees its events
strictly one at a time and in order.

Reading the inbox by sequence (with a stored cursor) rather than trusting in-memory delivery means an
event stored while the engine was down or busy is still applied, once, after a restart or by the
instance that took the shard over. The cursor moves in the same transaction as the bay states and
penalties the event produced, and that transaction checks the shard's lease before it commits
(fencing): an instance that lost its lease, killed, hung or cut off, never commits an event that the
new owner applies too.

On SQLite there is one instance and one shard's worth of leases (`SoloLeases` holds everything).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, select

from enforcement.config import effective, sync_config_bays
from enforcement.service import EnforcementService, camera_zones
from models.events import EventEnvelope
from models.eventstore import INBOX_CHANNEL
from models.leases import LeaseLost, shard_of
from models.tables import Alert, BayRow, BayStateRow, Camera, ConsumerCursor, RuntimeSetting, StoredEvent
from service.camera_config import sync_config_cameras
from service.context import AppContext
from service.fleet import engine_lease
from service.inbox import InboxIndex

log = logging.getLogger(__name__)
CURSOR = "enforcement"
# A shard's own events applied per transaction: one commit, lease check and cursor move per batch.
APPLY_BATCH = 50
# Inbox rows a shard looks at per read: only their sequence, kind and routing ids, so this can be large.
READ_BATCH = 1000


def cursor_name(shard: int, shards: int) -> str:
    """One cursor per shard of one layout (shard count). A single engine keeps its old name, so an
    upgraded database goes on where it was."""
    return CURSOR if shards == 1 else f"{CURSOR}.{shard}of{shards}"


def _layout(name: str) -> int | None:
    if name == CURSOR:
        return 1
    _, _, tail = name.partition(".")
    _, _, n = tail.partition("of")
    return int(n) if n.isdigit() else None


def lease_name(shard: int) -> str:
    return engine_lease(shard)


class EnforcementComponent:
    name = "enforcement"

    def __init__(self, ctx: AppContext, notify: Any = None, poll_s: float = 0.5):
        self.ctx = ctx
        self.notify = notify
        self.poll_s = poll_s
        self.shards = ctx.settings.ha.shards
        self.leases = ctx.leases
        self.service: EnforcementService | None = None
        self.shard_bays: list[frozenset[str]] = [frozenset()] * self.shards
        self._wake = [threading.Event() for _ in range(self.shards)]
        self._sweep_due = [threading.Event() for _ in range(self.shards)]
        self._halt = threading.Event()
        self._threads: list[threading.Thread] = []
        self._listener: threading.Thread | None = None
        self._reload_waiters: list[tuple[threading.Event, set[int]]] = []
        self._reload_lock = threading.Lock()
        self._config_mark: tuple[Any, ...] | None = None
        self.lag = 0
        self.lag_by_shard: dict[int, int] = {}
        # The inbox walked once for all shards of this instance, and where each shard is in it under
        # the lease token it holds (its cursor is read again only when the token changed).
        self.inbox = InboxIndex()
        self._positions: dict[int, tuple[int, int]] = {}

    # --- set-up ---------------------------------------------------------------------------------

    def _build(self, sync: bool = True) -> EnforcementService:
        """The service over the effective bays and rules (file + operators' edits) and the cameras' zones."""
        with self.ctx.session() as db:
            if sync:
                sync_config_cameras(db, self.ctx.settings.cameras, self.ctx.clock())
                sync_config_bays(db, self.ctx.settings.enforcement, self.ctx.clock())
            cfg = effective(db, self.ctx.settings.enforcement)
            cams = list(db.exec(select(Camera)))
            self._config_mark = self._read_config_mark(db)
        service = EnforcementService(self.ctx.engine, cfg, camera_zones(cams), self.ctx.clock, self.notify)
        self._flag_removed_bays({b.bay_id for b in cfg.bays})
        groups: list[set[str]] = [set() for _ in range(self.shards)]
        for bay in cfg.bays:
            groups[shard_of(bay.site, self.shards)].add(bay.bay_id)
        self.shard_bays = [frozenset(g) for g in groups]
        return service

    def _flag_removed_bays(self, configured: set[str]) -> None:
        """A bay removed (from the file or by an operator) while a car was in it: its visit is kept as it
        was (its timers wait, in case the bay comes back) and operators get one alert per bay, not an
        error every sweep. The instance leading shard 0 does it, so a fleet raises it once."""
        if self.leases is not None and self.leases.holds(lease_name(0)) is None:
            return
        now = self.ctx.clock()
        with self.ctx.session() as db:
            for row in db.exec(select(BayStateRow)):
                if row.bay_id in configured or not (row.state or {}).get("visit"):
                    continue
                open_alert = db.exec(select(Alert).where(Alert.kind == "bay_removed", Alert.subject == row.bay_id)
                                     .where(Alert.acknowledged_at == None)).first()  # noqa: E711
                if open_alert is not None:
                    continue
                plate = (row.state["visit"] or {}).get("plate") or "unknown plate"
                db.add(Alert(at=now, kind="bay_removed", severity="warning", subject=row.bay_id[:128],
                             title=f"Bay {row.bay_id} was removed while a car ({plate}) was in it",
                             detail="Its visit is kept as it was and no penalty is raised for it while the bay is "
                                    "not configured; add the bay again to go on, or close the visit by hand."))
                log.warning("bay %s is no longer configured but holds an open visit; operators alerted", row.bay_id)
            db.commit()

    @staticmethod
    def _read_config_mark(db: Session) -> tuple[Any, ...]:
        """What changes when any instance edits bays, rules or camera zones (compared every poll)."""
        marks = []
        for table in (BayRow, Camera, RuntimeSetting):
            marks.append(tuple(db.exec(select(func.count(), func.max(table.updated_at))).one()))  # type: ignore[attr-defined]
        return tuple(marks)

    async def reload(self) -> None:
        """Rebuild the service after bays, rules or camera zones were edited. The swap happens between
        two events, so no event sees half of the old and half of the new set-up. Other instances see
        the edit by the change of `_read_config_mark` and reload themselves."""
        done = threading.Event()
        if not self._threads or not any(t.is_alive() for t in self._threads):
            self._apply_reload()
            return
        with self._reload_lock:
            self._reload_waiters.append((done, set()))
        for w in self._wake:
            w.set()
        await asyncio.to_thread(done.wait, 15)

    def _apply_reload(self) -> None:
        try:
            self.service = self._build(sync=False)
            log.info("enforcement reloaded: %d bays", len(self.service.bays))
        except Exception:
            log.exception("enforcement reload failed; the previous set-up stays in force")

    def _reload_point(self, shard: int) -> None:
        """Each shard thread passes here between events; the last one to arrive swaps the service."""
        with self._reload_lock:
            if not self._reload_waiters:
                return
            alive = {i for i, t in enumerate(self._threads) if t.is_alive()}
            for _, seen in self._reload_waiters:
                seen.add(shard)
            ready = [w for w in self._reload_waiters if w[1] >= alive]
            if not ready:
                return
            self._apply_reload()
            for w in ready:
                w[0].set()
                self._reload_waiters.remove(w)

    async def start(self) -> None:
        self.service = await asyncio.to_thread(self._build)
        self.ctx.listeners.append(self._on_event)
        self._halt.clear()
        self._threads = [
            threading.Thread(target=self._run, args=(k,), name=f"enforcement-{k}", daemon=True)
            for k in range(self.shards)
        ]
        for t in self._threads:
            t.start()
        if self.ctx.engine.dialect.name == "postgresql":  # not in _threads: those are the shards, by index
            self._listener = threading.Thread(target=self._listen, name="enforcement-inbox", daemon=True)
            self._listener.start()

    def _listen(self) -> None:
        """Wake the shards when any process commits inbox events (PostgreSQL NOTIFY from
        `models.eventstore`): an intake-only instance's reads are applied at once, not at the next poll.
        Polling goes on beside it, so a lost connection only costs latency until it is back."""
        import psycopg

        url = self.ctx.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        backoff = 1.0
        while not self._halt.is_set():
            try:
                with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f"LISTEN {INBOX_CHANNEL}")
                    backoff = 1.0
                    while not self._halt.is_set():
                        for _ in conn.notifies(timeout=1.0):
                            self._on_event(None)
            except psycopg.Error as exc:
                log.warning("inbox notifications unavailable (%s); polling every %.1f s meanwhile",
                            str(exc).splitlines()[0] if str(exc) else type(exc).__name__, self.poll_s)
                self._halt.wait(backoff)
                backoff = min(backoff * 2, 30.0)

    async def stop(self) -> None:
        if self._on_event in self.ctx.listeners:
            self.ctx.listeners.remove(self._on_event)
        self._halt.set()
        for w in self._wake:
            w.set()
        for t in self._threads:
            await asyncio.to_thread(t.join, 15)
        if self._listener is not None:
            await asyncio.to_thread(self._listener.join, 5)
            self._listener = None
        for k in range(self.shards):
            self.leases.release(lease_name(k))  # hand over at once instead of after the lease's time

    def _on_event(self, _event: object) -> None:
        self.inbox.wake()
        for w in self._wake:
            w.set()

    def request_sweep(self) -> None:
        """Called by the scheduler: each shard feeds its due timers on its own thread."""
        for k in range(self.shards):
            self._sweep_due[k].set()
            self._wake[k].set()
        self._check_config()

    def _check_config(self) -> None:
        """Another instance edited bays, rules or zones: rebuild here too."""
        try:
            with self.ctx.session() as db:
                mark = self._read_config_mark(db)
        except SQLAlchemyError:
            return
        if self._config_mark is not None and mark != self._config_mark and not self._reload_waiters:
            log.info("bays, rules or camera zones changed in the database; reloading")
            with self._reload_lock:
                self._reload_waiters.append((threading.Event(), set()))
            self._config_mark = mark

    # --- the shard threads ----------------------------------------------------------------------

    def _run(self, shard: int) -> None:
        name = lease_name(shard)
        while not self._halt.is_set():
            busy = False
            try:
                self._reload_point(shard)
                token = self.leases.holds(name)
                if token is not None:
                    busy = self._drain_shard(shard, token)
                    if self._sweep_due[shard].is_set():
                        self._sweep_due[shard].clear()
                        self._sweep_shard(shard, token)
            except LeaseLost as exc:
                log.warning("shard %d: %s; another instance applies its events now", shard, exc)
                busy = False
            except Exception:
                log.exception("enforcement shard %d failed; retrying", shard)
                busy = False
            if not busy:
                self._wake[shard].wait(self.poll_s)
                self._wake[shard].clear()

    def _fenced_cursor(self, shard: int, token: int, seq: int) -> Callable[[Session], None]:
        def before_commit(db: Session) -> None:
            self.leases.fence(db, lease_name(shard), token)
            now = self.ctx.clock()
            name = cursor_name(shard, self.shards)
            c = db.get(ConsumerCursor, name) or ConsumerCursor(name=name, seq=0, updated_at=now)
            if seq > c.seq:
                c.seq, c.updated_at = seq, now
                db.add(c)

        return before_commit

    def _start_seq(self, db: Session, shard: int) -> int:
        """Where a shard's cursor is. A new one (a fresh database, or a changed shard count) starts at
        the slowest cursor of the layout used last: a moved bay may see a few events again, which
        `decide` ignores, and none is skipped."""
        cur = db.get(ConsumerCursor, cursor_name(shard, self.shards))
        if cur is not None:
            return cur.seq
        layouts: dict[int, list[ConsumerCursor]] = {}
        for c in db.exec(select(ConsumerCursor).where(ConsumerCursor.name.startswith(CURSOR))):  # type: ignore[attr-defined]
            n = _layout(c.name)
            if n is not None and n != self.shards:
                layouts.setdefault(n, []).append(c)
        if not layouts:
            return 0
        last = max(layouts.values(), key=lambda cs: max(c.updated_at for c in cs))
        return min(c.seq for c in last)

    @staticmethod
    def _read_inbox(db: Session, service: EnforcementService, start: int, batch: int, bays: frozenset[str],
                    unknown_bays: bool, now: datetime, index: InboxIndex,
                    ) -> tuple[list[Any], dict[int, tuple[str, Any]], bool]:
        """The next inbox rows after `start` that may be applied now (the instance's `index` of the walk,
        `service.inbox.walk_inbox`), the payloads of those this shard applies, and whether more rows may
        follow at once. Only a shard's own events' payloads leave the database."""
        ready, more = index.rows_after(db, start, batch, now)
        wanted = [row.seq for row in ready
                  if service.may_concern(row.kind, {"bay_id": row.bay_id, "charge_point_id": row.charge_point_id},
                                         bays, unknown_bays=unknown_bays)]
        t = StoredEvent.__table__  # type: ignore[attr-defined]
        payloads: dict[int, tuple[str, Any]] = {}
        for i in range(0, len(wanted), 500):
            chunk = wanted[i:i + 500]
            for seq, event_id, payload in db.execute(
                    sa_select(t.c.seq, t.c.event_id, t.c.payload).where(t.c.seq.in_(chunk))):
                payloads[seq] = (event_id, payload)
        return ready, payloads, more

    def _drain_shard(self, shard: int, token: int, batch: int = READ_BATCH, apply_batch: int = APPLY_BATCH) -> bool:
        """Apply this shard's next stored events in sequence order, `apply_batch` of its own events per
        transaction (with the cursor, under the lease); True when there may be more."""
        service = self.service
        assert service is not None
        bays = self.shard_bays[shard]
        now = self.ctx.clock()
        known = self._positions.get(shard)
        with Session(self.ctx.engine) as db:
            start = known[1] if known is not None and known[0] == token else self._start_seq(db, shard)
            rows, payloads, more = self._read_inbox(db, service, start, batch, bays, shard == 0, now, self.inbox)
        self._positions.pop(shard, None)  # set again below once this drain's end is known
        last, stored = start, start
        pending: list[tuple[int, Any]] = []  # (seq, event) to apply in one transaction

        def flush() -> None:
            nonlocal stored
            if not pending:
                return
            batch = list(pending)
            pending.clear()
            try:
                service.handle_many([(event, None) for _, event in batch], only=bays, unknown_bays=shard == 0,
                                    before_commit=self._fenced_cursor(shard, token, batch[-1][0]))
                stored = batch[-1][0]
                return
            except (SQLAlchemyError, LeaseLost):
                raise
            except Exception:
                if len(batch) == 1:
                    # A bad event must not block every later one: log it loudly and move on.
                    seq, event = batch[0]
                    log.exception("event at %d (%s) could not be applied; skipped", seq, type(event).__name__)
                    return
            # One event of the batch failed and nothing of it was stored: apply them one by one, so
            # only the bad one is skipped.
            for item in batch:
                pending.append(item)
                flush()

        try:
            for row in rows:  # up to the first young gap (_read_inbox stops there)
                seq = row.seq or last
                own = payloads.get(seq)
                if own is None:
                    last = seq
                    continue
                event_id, payload = own
                try:
                    event = EventEnvelope.model_validate({"event_id": event_id, "event": payload}).event
                except Exception:
                    log.exception("event %s (%s) could not be read; skipped", event_id, row.kind)
                    last = seq
                    continue
                if service.concerns(event, bays, unknown_bays=shard == 0):
                    pending.append((seq, event))
                    if len(pending) >= apply_batch:
                        flush()
                last = seq  # another shard's event: the cursor moves past it with the next write
            flush()
        except SQLAlchemyError:
            log.exception("shard %d: database error at event %d; will retry", shard, last + 1)
            last = stored  # nothing after the last stored batch is applied: read it again
        finally:
            if last > stored:  # skipped events (not this shard's, or bad): move the cursor past them
                with Session(self.ctx.engine) as db:
                    self._fenced_cursor(shard, token, last)(db)
                    db.commit()
        self._positions[shard] = (token, last)  # stored: the cursor is there
        self.lag_by_shard[shard] = len(rows) - (last - start)
        self.lag = sum(self.lag_by_shard.values())
        return more

    def _sweep_shard(self, shard: int, token: int) -> int:
        assert self.service is not None
        fence = self._fenced_cursor(shard, token, 0)  # seq 0: the cursor does not move
        return self.service.sweep(only=self.shard_bays[shard], before_commit=fence)

    def drain(self, batch: int = READ_BATCH) -> bool:
        """Apply the next stored events of every shard this instance holds (tests, benchmarks)."""
        self.inbox.wake()  # whatever was stored before this call is read
        more = False
        for k in range(self.shards):
            token = self.leases.acquire(lease_name(k))
            if token is not None:
                more = self._drain_shard(k, token, batch) or more
        return more
