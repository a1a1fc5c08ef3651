"""Charging: linking transactions to visits, charging, idle time and the idle fee, unplug."""

from __future__ import annotations

from datetime import datetime, timedelta

from enforcement.decide.model import (
    _UNPLUG_END_REASONS,
    ChargerTx,
    LinkTransaction,
    SendWarning,
    TxRef,
    _remember,
    _stamp,
)
from enforcement.rules import whole_minutes
from models.events import (
    ChargingIdle,
    ChargingSuspended,
    ConnectorAvailable,
    TransactionEnded,
    TransactionStarted,
    TransactionUpdated,
)


class ChargingRules:
    """Charging: linking transactions to visits, charging, idle time and the idle fee, unplug."""

    # Attributes and helpers of _Run (enforcement.decide.run) are used through self.
    def on_tx(
        self,
        ev: TransactionStarted | TransactionUpdated | ChargingSuspended | ChargingIdle | TransactionEnded,
        t: datetime,
    ) -> None:
        s = self.state
        key = f"{ev.charge_point_id}/{ev.transaction_id}"
        tx = s.tx
        mine = tx is not None and tx.key == key
        if not mine and not s.owns_evse(ev.charge_point_id, ev.evse_id, ev.connector_id):
            return
        if key in s.closed_txs:
            ended = s.closed_tx_ends.get(key)
            if not (isinstance(ev, TransactionStarted) and ended is not None and t > ended):
                return  # a duplicate or late message of a finished transaction
            # The id was used again after its transaction ended: a new transaction, the old one untouched
            # (its end stays remembered, so a late message of the old run is told apart).
            self._set(closed_txs=tuple(k for k in s.closed_txs if k != key))
            s = self.state
        if not mine and tx is not None and t < tx.started_at:
            return  # older than the transaction the outlet has now: never let it supersede a newer one
        if isinstance(ev, TransactionStarted):
            if tx is not None and mine:
                earlier_run = s.closed_tx_ends.get(key)
                if earlier_run is not None and t <= earlier_run:
                    return  # the start of the earlier transaction that used this id, arriving late
                if t < tx.started_at:  # the start came after a later event: keep its own, earlier time
                    self._set(tx=tx.model_copy(update={"started_at": t}))
                return
            self._new_tx(ev.charge_point_id, ev.transaction_id, t)
            return
        if tx is None or not mine:
            if isinstance(ev, TransactionEnded):
                self._set(closed_txs=_remember(s.closed_txs, key))  # never seen running: nothing to undo
                return
            self._new_tx(ev.charge_point_id, ev.transaction_id, t)  # we missed its start
        elif t < tx.last_at and not isinstance(ev, TransactionEnded):
            return  # stale: never rewrite newer charger state
        tx = self.state.tx
        assert tx is not None
        if isinstance(ev, TransactionEnded):
            t = max(t, tx.started_at)
        self.advance(t, t)
        if isinstance(ev, TransactionUpdated):
            if ev.charging_state == "Charging":
                self._tx_charging(t)
        elif isinstance(ev, ChargingIdle):
            self._tx_idle(t, ev.reason or "idle")
        elif isinstance(ev, ChargingSuspended):
            self._tx_suspended(t, ev.reason or "suspended")
        else:
            self._tx_ended(t, ev.reason)
        tx = self.state.tx
        if tx is not None and tx.key == key and t > tx.last_at:
            self._set(tx=tx.model_copy(update={"last_at": t}))
        self.advance(t, t)

    def _new_tx(self, cp: str, tx_id: str, t: datetime) -> None:
        self.advance(t, t)
        if self.state.tx is not None:
            self._tx_unplug(t, "superseded by a new transaction on the same outlet", keep=False, no_charging=False)
        self._set(tx=ChargerTx(charge_point_id=cp, transaction_id=tx_id, started_at=t, last_at=t))
        self._try_link(t)

    def _try_link(self, at: datetime) -> None:
        v, tx, s = self.visit, self.state.tx, self.state
        if v is None or tx is None or v.plugged:
            return
        if tx.visit_id is not None or tx.ended_at is not None or not tx.plugged:
            return  # belongs to an earlier car, or no longer a live session
        if s.last_departed_at is not None and tx.started_at < s.last_departed_at:
            return  # began while the previous car was still here
        self._set(tx=tx.model_copy(update={"visit_id": v.visit_id}))
        ref = TxRef(charge_point_id=tx.charge_point_id, transaction_id=tx.transaction_id)
        self._visit_update(tx=ref, plugged=True, charging=tx.charging, plugged_at=tx.started_at, unplugged_at=None)
        self.out.append(
            LinkTransaction(
                visit_id=v.visit_id, charge_point_id=tx.charge_point_id, transaction_id=tx.transaction_id, at=at
            )
        )
        self.note(at, "linked", f"transaction {tx.key} started {_stamp(tx.started_at)}")
        self._cancel({"no_charging"})
        self._end_violation("no_charging", at, "charging session started")
        if tx.idle_since is not None:
            self._visit_idle(tx.idle_since, "charger was already idle")

    def _tx_charging(self, t: datetime) -> None:
        tx = self.state.tx
        assert tx is not None
        if tx.charging or tx.ended_at is not None or not tx.plugged:
            return
        self._set(tx=tx.model_copy(update={"charging": True, "suspended": False, "idle_since": None}))
        if self._linked() is not None:
            self._end_idle(t, "charging resumed")
            self._visit_update(charging=True)
            self.note(t, "charging")

    def _tx_idle(self, t: datetime, reason: str) -> None:
        if reason == "Idle":  # 2.0.1: no EV connected while the transaction stays open
            self._tx_unplug(t, "charger reports no EV connected", keep=True)
            return
        tx = self.state.tx
        assert tx is not None
        if tx.idle_since is not None or not tx.plugged:
            return
        self._set(tx=tx.model_copy(update={"charging": False, "suspended": False, "idle_since": t}))
        if self._linked() is not None:
            self._visit_idle(t, reason)

    def _visit_idle(self, at: datetime, reason: str) -> None:
        v = self._open_visit()
        if v.idle_since is not None:
            return
        self._visit_update(idle_since=at, charging=False, charging_complete_at=v.charging_complete_at or at)
        self.note(at, "idle", reason)
        if v.exempt:
            return
        r = v.rules
        due = at + timedelta(minutes=r.idle_grace_min)
        self._schedule("idle", due)
        starts = r.schedule.next_start(due)
        if r.warn_before_idle and v.warned_idle_since != at and starts is not None and starts > self.t:
            self._visit_update(warned_idle_since=at)
            self.out.append(
                SendWarning(
                    visit_id=v.visit_id,
                    fee_starts_at=starts,
                    fee_per_min=r.idle_fee_per_min,
                    fee_cap=r.idle_fee_cap,
                    currency=r.currency,
                    plate=v.plate,
                    tx=v.tx,
                )
            )
            self.note(at, "warning", f"idle fee {r.idle_fee_per_min} {r.currency}/min from {_stamp(starts)}")

    def _end_idle(self, at: datetime, why: str) -> None:
        v = self.visit
        if v is None or v.idle_since is None:
            return
        billed = v.idle_billed_min + (whole_minutes(v.idle_fee_from, at) if v.idle_fee_from else 0)
        self._visit_update(idle_since=None, idle_fee_from=None, idle_billed_min=billed)
        self._cancel({"idle"})
        self.note(at, "idle_end", f"{why}; {billed} idle min billed so far")

    def _tx_suspended(self, t: datetime, reason: str) -> None:
        tx = self.state.tx
        assert tx is not None
        if not tx.charging:
            return
        self._set(tx=tx.model_copy(update={"charging": False, "suspended": True}))
        if self._linked() is not None:
            self._visit_update(charging=False)
            self.note(t, "suspended", f"{reason}: paused by the station, not the car; no idle fee")

    def _tx_ended(self, t: datetime, reason: str) -> None:
        tx = self.state.tx
        assert tx is not None
        if tx.ended_at is not None:
            return
        self._set(tx=tx.model_copy(update={"ended_at": t}))
        if self._linked() is not None:
            self.note(t, "transaction_ended", reason)
        if reason in _UNPLUG_END_REASONS:
            self._tx_unplug(t, f"transaction ended: {reason}", keep=False)
        elif tx.idle_since is None:
            self._tx_idle(t, "transaction ended, cable still in")

    def _tx_unplug(self, t: datetime, why: str, keep: bool, no_charging: bool = True) -> None:
        tx = self.state.tx
        assert tx is not None
        if tx.plugged:
            linked = self._linked()
            self._set(tx=tx.model_copy(update={"plugged": False, "charging": False, "idle_since": None}))
            if linked is not None and linked.plugged:
                self._end_idle(t, "unplugged")
                self._visit_update(plugged=False, charging=False, unplugged_at=t)
                self.note(t, "unplugged", why)
                if no_charging:  # still in the bay with no session: parked-without-charging rules apply
                    self._schedule_no_charging(t)
                v = self._open_visit()
                if v.outage_since is not None and not self.state.unobserved:
                    # the cable was the only proof of presence since the outage: look for the car again
                    self._schedule("presence_check", t + timedelta(minutes=v.rules.camera_recover_min))
        if not keep:
            closed = _remember(self.state.closed_txs, tx.key)
            ends = dict(list(self.state.closed_tx_ends.items())[-32:])  # bounded like closed_txs
            self._set(tx=None, closed_txs=closed, closed_tx_ends={**ends, tx.key: t})

    def on_available(self, ev: ConnectorAvailable, t: datetime) -> None:
        s = self.state
        if not s.owns_evse(ev.charge_point_id, ev.evse_id, ev.connector_id) or s.tx is None:
            return
        if t < s.tx.started_at:
            return  # describes the outlet before this transaction
        self.advance(t, t)
        self._tx_unplug(t, "connector available", keep=False)
        self.advance(t, t)
