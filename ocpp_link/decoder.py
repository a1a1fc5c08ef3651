"""Tolerant OCPP-J 1.6 / 2.0.1 decoder: raw frames seen by the relay tap -> frozen domain events.

Real chargers break the JSON schemas, so nothing here raises on bad input: a frame that cannot be
used is counted (malformed / unknown / schema violation) and logged at a limited rate, with id
tokens redacted. The decoder never validates whole payloads; it checks only the fields it reads.

State is kept per charge point id (not per connection) so that a transaction survives a reconnect.

Status mapping (documented choice, the enforcement side relies on it):

=====================  ===========================================================================
OCPP state             domain event (only while a transaction is known on that connector)
=====================  ===========================================================================
Charging               TransactionUpdated(charging_state="Charging")
SuspendedEV            ChargingIdle(reason="SuspendedEV")   the car stopped taking energy (full)
SuspendedEVSE          ChargingSuspended(reason="SuspendedEVSE")  the station paused; not the car
EVConnected (2.0.1)    TransactionUpdated(charging_state="EVConnected") before the first Charging,
                       ChargingIdle(reason="EVConnected") after it (the car sits there, not charging)
Idle (2.0.1)           ChargingIdle(reason="Idle")  (no EV connected, transaction still open)
Finishing (1.6)        ChargingIdle(reason="Finishing") for the open tx or the one just stopped
Available              ConnectorAvailable (any time; 1.6 connector 0 = whole station is ignored)
=====================  ===========================================================================

`energy_wh` is the Energy.Active.Import.Register reading in Wh (same scale as meter_start_wh),
not the energy delivered in the session: consumers subtract meter_start_wh when they need that.

Event time: the tap's receive time, except for messages the charger queued while offline, which
keep their own timestamp (2.0.1: ``offline: true``; 1.6: a timestamp older than ``max_skew``).
A charger timestamp in the future beyond ``max_skew`` is not trusted.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import ValidationError

from models import strictjson
from models.events import (
    ChargingIdle,
    ChargingSuspended,
    ConnectorAvailable,
    TransactionEnded,
    TransactionStarted,
    TransactionUpdated,
)

log = logging.getLogger(__name__)

Direction = Literal["cs", "csms"]
ChargerEvent = (
    TransactionStarted | TransactionUpdated | ChargingSuspended | ChargingIdle | TransactionEnded | ConnectorAvailable
)

CALL, CALLRESULT, CALLERROR = 2, 3, 4

# Actions from the charge point that can produce events; everything else is not even parsed
# (the relay's byte-level prefilter uses these names).
INTERESTING_CS_ACTIONS: frozenset[str] = frozenset(
    {"StartTransaction", "StopTransaction", "StatusNotification", "MeterValues", "TransactionEvent"}
)
# Calls whose CSMS answer carries data we need (1.6 transactionId): the tap pairs them by id.
PAIRED_ACTIONS: frozenset[str] = frozenset({"StartTransaction"})

ENERGY_MEASURAND = "Energy.Active.Import.Register"
_MAX_PENDING = 64  # per charger; a charger never has more than one call in flight by spec
_MAX_TX_PER_CP = 32  # forgotten oldest-first; a charger has few live transactions

_TOKEN_RE = re.compile(r'("(?:idTag|parentIdTag|idToken|groupIdToken)"\s*:\s*)"[^"]*"')


def redact(raw: str, limit: int = 200) -> str:
    """Frame text safe for logs: id tokens replaced, length capped."""
    return _TOKEN_RE.sub(r'\1"***"', raw[: limit * 2])[:limit]


def hash_id_token(token: str, key: bytes | None = None) -> str:
    """SHA-256 hex of the id token (HMAC-SHA256 when a site key is configured).

    Short RFID UIDs are guessable by brute force, so a deployment should set a key; the bare hash is
    the default because it is what `TransactionStarted.id_token_hash` documents.
    """
    if key:
        import hmac

        return hmac.new(key, token.encode(), hashlib.sha256).hexdigest()
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class DecoderStats:
    frames: int = 0
    events: int = 0
    malformed: int = 0  # not JSON, not an OCPP-J array
    unknown: int = 0  # well-formed OCPP-J we have no use for (other actions, unpaired answers)
    schema_violations: int = 0  # an action we handle with missing / wrongly typed fields
    seq_gaps: int = 0  # 2.0.1 TransactionEvent seqNo numbers skipped
    seq_out_of_order: int = 0  # 2.0.1 seqNo repeated or lower than the last one

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class _RateLimitedLog:
    """At most `burst` log lines per `period` seconds per kind; the rest are counted and summarised."""

    def __init__(self, burst: int = 10, period: float = 60.0) -> None:
        self.burst, self.period = burst, period
        self._window: dict[str, tuple[float, int, int]] = {}

    def warning(self, kind: str, msg: str, *args: object) -> None:
        self._emit(logging.WARNING, kind, msg, *args)

    def info(self, kind: str, msg: str, *args: object) -> None:
        self._emit(logging.INFO, kind, msg, *args)

    def _emit(self, level: int, kind: str, msg: str, *args: object) -> None:
        now = time.monotonic()
        start, n, suppressed = self._window.get(kind, (now, 0, 0))
        if now - start > self.period:
            if suppressed:
                log.warning("ocpp decoder: %d more %r messages suppressed", suppressed, kind)
            start, n, suppressed = now, 0, 0
        if n < self.burst:
            log.log(level, msg, *args)
            self._window[kind] = (start, n + 1, suppressed)
        else:
            self._window[kind] = (start, n, suppressed + 1)


class _SchemaError(Exception):
    pass


@dataclass
class _Tx:
    transaction_id: str
    evse_id: int | None = None
    connector_id: int | None = None
    charging_state: str | None = None
    has_charged: bool = False
    last_seq: int | None = None


@dataclass
class _ChargerState:
    protocol: str | None = None
    # message id -> (action, payload, received_at) of calls waiting for their CSMS answer
    pending: dict[str, tuple[str, dict[str, Any], datetime]] = field(default_factory=dict)
    txs: dict[str, _Tx] = field(default_factory=dict)
    # 1.6: connectorId -> open transaction id, and the one most recently stopped there
    open_by_connector: dict[int, str] = field(default_factory=dict)
    stopped_by_connector: dict[int, str] = field(default_factory=dict)


def _int(value: Any, name: str, required: bool = True) -> int | None:
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise _SchemaError(f"{name} must be an integer")
    return int(value)


def _num(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):  # 1.6 SampledValue.value is a string
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _parse_ts(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    if ts.tzinfo is None:  # OCPP says UTC; a naive stamp is read as UTC
        ts = ts.replace(tzinfo=UTC)
    return ts.astimezone(UTC)


def _energy_wh(meter_values: Any) -> float | None:
    """Last Energy.Active.Import.Register reading in Wh from a 1.6 or 2.0.1 meterValue list."""
    if not isinstance(meter_values, list):
        return None
    found: float | None = None
    for mv in meter_values:
        samples = mv.get("sampledValue") if isinstance(mv, dict) else None
        if not isinstance(samples, list):
            continue
        for sv in samples:
            if not isinstance(sv, dict):
                continue
            # The measurand defaults to the energy register when omitted (both versions).
            if sv.get("measurand", ENERGY_MEASURAND) != ENERGY_MEASURAND or sv.get("phase"):
                continue
            value = _num(sv.get("value"))
            if value is None:
                continue
            unit = sv.get("unit")
            if unit is None:
                umv = sv.get("unitOfMeasure")
                unit = umv.get("unit") if isinstance(umv, dict) else None
                mult = umv.get("multiplier", 0) if isinstance(umv, dict) else 0
                if isinstance(mult, int) and not isinstance(mult, bool) and mult:
                    value *= 10.0**mult
            if unit == "kWh":
                value *= 1000.0
            found = value
    return found


MAX_EXPORTED_PENDING = 100


class OcppDecoder:
    """Shared decoder for all chargers behind one relay; state keyed by charge point id.

    Feed it every interesting frame in order per charger; it returns the domain events the frame
    implies. It never raises for bad input.
    """

    def __init__(self, max_skew: timedelta = timedelta(seconds=60), id_token_key: bytes | None = None) -> None:
        self.max_skew = max_skew
        self.id_token_key = id_token_key
        self.stats = DecoderStats()
        self._chargers: dict[str, _ChargerState] = {}
        self._log = _RateLimitedLog()

    # --- connection lifecycle (called by the relay) ---------------------------------------------

    def connection_opened(self, charge_point_id: str, subprotocol: str | None) -> None:
        st = self._state(charge_point_id)
        st.protocol = subprotocol
        st.pending.clear()  # answers to calls of a previous connection will never come

    def connection_closed(self, charge_point_id: str) -> None:
        st = self._chargers.get(charge_point_id)
        if st is not None:
            st.pending.clear()

    # --- main entry -----------------------------------------------------------------------------

    def decode(
        self, charge_point_id: str, direction: Direction, raw_text: str | bytes, received_at: datetime
    ) -> list[ChargerEvent]:
        self.stats.frames += 1
        if received_at.tzinfo is None:
            received_at = received_at.replace(tzinfo=UTC)
        try:
            msg = strictjson.loads(raw_text)  # NaN, Infinity, deep nesting: malformed, never raised
        except (ValueError, TypeError):
            return self._bad("malformed", charge_point_id, "not JSON", raw_text)
        if not isinstance(msg, list) or len(msg) < 3 or not isinstance(msg[1], str):
            return self._bad("malformed", charge_point_id, "not an OCPP-J message", raw_text)
        st = self._state(charge_point_id)
        kind, msg_id = msg[0], msg[1]
        try:
            if kind == CALL and direction == "cs" and len(msg) >= 4:
                events = self._on_call(charge_point_id, st, msg_id, msg[2], msg[3], received_at)
            elif kind == CALLRESULT and direction == "csms":
                events = self._on_result(charge_point_id, st, msg_id, msg[2])
            elif kind == CALLERROR and direction == "csms":
                st.pending.pop(msg_id, None)
                events = []
            elif kind in (CALL, CALLRESULT, CALLERROR):
                self.stats.unknown += 1  # CSMS calls and charger answers carry nothing we use
                events = []
            else:
                return self._bad("malformed", charge_point_id, "bad message type", raw_text)
        except _SchemaError as exc:
            return self._bad("schema_violations", charge_point_id, str(exc), raw_text)
        except ValidationError as exc:  # a value our events refuse (connector 1e23, ...): never raise
            return self._bad("schema_violations", charge_point_id, str(exc.errors()[0]["msg"]), raw_text)
        self.stats.events += len(events)
        return events

    # --- state as JSON (the CSMS intake keeps it in the database, so any instance can decode) -----

    def export_state(self, charge_point_id: str) -> dict[str, Any]:
        """One charger's pairing and transaction state, JSON-ready (`import_state` reads it back)."""
        st = self._chargers.get(charge_point_id) or _ChargerState()
        return {
            "protocol": st.protocol,
            # The newest calls only: an answer that has not come after 100 later calls never will.
            "pending": {k: [a, p, at.isoformat()] for k, (a, p, at) in
                        sorted(st.pending.items(), key=lambda kv: kv[1][2])[-MAX_EXPORTED_PENDING:]},
            "txs": {k: asdict(t) for k, t in st.txs.items()},
            "open_by_connector": {str(k): v for k, v in st.open_by_connector.items()},
            "stopped_by_connector": {str(k): v for k, v in st.stopped_by_connector.items()},
        }

    def import_state(self, charge_point_id: str, data: dict[str, Any] | None) -> None:
        """Replace one charger's state with an exported one (None or garbage: a fresh state)."""
        st = _ChargerState()
        try:
            if data:
                st.protocol = data.get("protocol")
                st.pending = {k: (v[0], v[1], datetime.fromisoformat(v[2])) for k, v in data.get("pending", {}).items()}
                st.txs = {k: _Tx(**v) for k, v in data.get("txs", {}).items()}
                st.open_by_connector = {int(k): v for k, v in data.get("open_by_connector", {}).items()}
                st.stopped_by_connector = {int(k): v for k, v in data.get("stopped_by_connector", {}).items()}
        except (TypeError, ValueError, KeyError, IndexError, AttributeError):
            st = _ChargerState()
        self._chargers[charge_point_id] = st

    # --- internals ------------------------------------------------------------------------------

    def _state(self, cp: str) -> _ChargerState:
        st = self._chargers.get(cp)
        if st is None:
            st = self._chargers[cp] = _ChargerState()
        return st

    def _bad(self, counter: str, cp: str, why: str, raw: str | bytes) -> list[ChargerEvent]:
        setattr(self.stats, counter, getattr(self.stats, counter) + 1)
        text = raw if isinstance(raw, str) else raw.decode("utf-8", "replace")
        self._log.warning(counter, "ocpp %s from %s (%s): %s", counter, cp, why, redact(text))
        return []

    def _version(self, st: _ChargerState, action: str, payload: dict[str, Any]) -> str:
        proto = (st.protocol or "").lower()
        if proto.startswith("ocpp1"):
            return "1.6"
        if proto.startswith("ocpp2"):
            return "2.0.1"
        # No subprotocol known (decoder fed from recordings): tell by shape.
        if action == "TransactionEvent" or "connectorStatus" in payload or "evseId" in payload:
            return "2.0.1"
        return "1.6"

    def _at(self, ts_raw: Any, received_at: datetime, offline: bool | None) -> datetime:
        ts = _parse_ts(ts_raw)
        if ts is None or ts > received_at + self.max_skew:
            return received_at
        if offline or (offline is None and ts < received_at - self.max_skew):
            return ts
        return received_at

    def _remember_tx(self, st: _ChargerState, tx_id: str) -> _Tx:
        tx = st.txs.get(tx_id)
        if tx is None:
            if len(st.txs) >= _MAX_TX_PER_CP:
                st.txs.pop(next(iter(st.txs)))
            tx = st.txs[tx_id] = _Tx(tx_id)
        return tx

    def _on_call(
        self, cp: str, st: _ChargerState, msg_id: str, action: Any, payload: Any, received_at: datetime
    ) -> list[ChargerEvent]:
        if not isinstance(action, str) or not isinstance(payload, dict):
            raise _SchemaError("action must be a string and payload an object")
        if action not in INTERESTING_CS_ACTIONS:
            self.stats.unknown += 1
            self._log.info("unknown", "ocpp action %r from %s not used", action, cp)
            return []
        version = self._version(st, action, payload)
        if action in PAIRED_ACTIONS:
            if len(st.pending) >= _MAX_PENDING:
                st.pending.pop(next(iter(st.pending)))
            st.pending[msg_id] = (action, payload, received_at)
            return []
        if action == "StatusNotification":
            return self._status(cp, st, version, payload, received_at)
        if action == "MeterValues":
            return self._meter_values_16(cp, st, payload, received_at) if version == "1.6" else []
        if action == "StopTransaction":
            return self._stop_16(cp, st, payload, received_at)
        if action == "TransactionEvent":
            return self._transaction_event(cp, st, payload, received_at)
        return []

    def _on_result(self, cp: str, st: _ChargerState, msg_id: str, payload: Any) -> list[ChargerEvent]:
        pending = st.pending.pop(msg_id, None)
        if pending is None:
            self.stats.unknown += 1  # an answer to a call we did not need (normal in replays)
            return []
        action, req, received_at = pending
        if action != "StartTransaction" or not isinstance(payload, dict):
            return []
        tx_raw = payload.get("transactionId")
        _int(tx_raw, "transactionId")
        connector = _int(req.get("connectorId"), "connectorId")
        assert connector is not None
        tx_id = str(int(tx_raw))
        tx = self._remember_tx(st, tx_id)
        tx.connector_id = connector
        st.open_by_connector[connector] = tx_id
        tag = req.get("idTag")
        meter = _num(req.get("meterStart"))
        return [
            TransactionStarted(
                at=self._at(req.get("timestamp"), received_at, None),
                charge_point_id=cp,
                transaction_id=tx_id,
                connector_id=connector,
                id_token_hash=hash_id_token(tag, self.id_token_key) if isinstance(tag, str) else None,
                meter_start_wh=meter,
            )
        ]

    # 1.6 -----------------------------------------------------------------------------------------

    def _status(
        self, cp: str, st: _ChargerState, version: str, p: dict[str, Any], received_at: datetime
    ) -> list[ChargerEvent]:
        if version == "2.0.1":
            status = p.get("connectorStatus")
            evse = _int(p.get("evseId"), "evseId")
            connector = _int(p.get("connectorId"), "connectorId")
            if not isinstance(status, str):
                raise _SchemaError("connectorStatus must be a string")
            at = self._at(p.get("timestamp"), received_at, False)
            if status == "Available":
                return [ConnectorAvailable(at=at, charge_point_id=cp, evse_id=evse, connector_id=connector)]
            return []  # 2.0.1 charging states come from TransactionEvent, not from here
        status = p.get("status")
        connector = _int(p.get("connectorId"), "connectorId")
        assert connector is not None
        if not isinstance(status, str):
            raise _SchemaError("status must be a string")
        at = self._at(p.get("timestamp"), received_at, None)
        if connector == 0:
            return []  # connector 0 is the charge point as a whole, not a bay
        if status == "Available":
            st.open_by_connector.pop(connector, None)
            st.stopped_by_connector.pop(connector, None)
            return [ConnectorAvailable(at=at, charge_point_id=cp, connector_id=connector)]
        tx_id = st.open_by_connector.get(connector)
        if status == "Finishing":
            tx_id = tx_id or st.stopped_by_connector.get(connector)
            if tx_id is None:
                return []
            return [
                ChargingIdle(
                    at=at,
                    charge_point_id=cp,
                    transaction_id=tx_id,
                    connector_id=connector,
                    reason="Finishing",
                )
            ]
        if tx_id is None:
            return []
        tx = self._remember_tx(st, tx_id)
        return self._charging_state(cp, tx, status, at, None)

    def _meter_values_16(
        self, cp: str, st: _ChargerState, p: dict[str, Any], received_at: datetime
    ) -> list[ChargerEvent]:
        connector = _int(p.get("connectorId"), "connectorId")
        tx_raw = _int(p.get("transactionId"), "transactionId", required=False)
        if tx_raw is None:
            return []  # clock-aligned readings outside a transaction
        energy = _energy_wh(p.get("meterValue"))
        if energy is None:
            return []
        values = p.get("meterValue")
        ts_raw = values[-1].get("timestamp") if values and isinstance(values[-1], dict) else None
        tx = self._remember_tx(st, str(tx_raw))
        tx.connector_id = tx.connector_id if tx.connector_id is not None else connector
        return [
            TransactionUpdated(
                at=self._at(ts_raw, received_at, None),
                charge_point_id=cp,
                transaction_id=tx.transaction_id,
                connector_id=tx.connector_id,
                charging_state=tx.charging_state,
                energy_wh=energy,
            )
        ]

    def _stop_16(self, cp: str, st: _ChargerState, p: dict[str, Any], received_at: datetime) -> list[ChargerEvent]:
        tx_raw = _int(p.get("transactionId"), "transactionId")
        tx_id = str(tx_raw)
        tx = st.txs.pop(tx_id, None) or _Tx(tx_id)
        connector = tx.connector_id
        if connector is None:
            connector = next((c for c, t in st.open_by_connector.items() if t == tx_id), None)
        if connector is not None:
            if st.open_by_connector.get(connector) == tx_id:
                del st.open_by_connector[connector]
            st.stopped_by_connector[connector] = tx_id
        reason = p.get("reason")
        return [
            TransactionEnded(
                at=self._at(p.get("timestamp"), received_at, None),
                charge_point_id=cp,
                transaction_id=tx_id,
                connector_id=connector,
                reason=reason if isinstance(reason, str) else "Local",  # 1.6 default when omitted
                energy_wh=_num(p.get("meterStop")),
            )
        ]

    # shared --------------------------------------------------------------------------------------

    def _charging_state(self, cp: str, tx: _Tx, state: str, at: datetime, energy: float | None) -> list[ChargerEvent]:
        """Events for a (possibly unchanged) charging state; energy rides along when present."""
        changed = state != tx.charging_state
        tx.charging_state = state
        common: dict[str, Any] = {
            "at": at,
            "charge_point_id": cp,
            "transaction_id": tx.transaction_id,
            "evse_id": tx.evse_id,
            "connector_id": tx.connector_id,
        }
        out: list[ChargerEvent] = []
        if state == "Charging":
            tx.has_charged = True
            if changed or energy is not None:
                out.append(TransactionUpdated(**common, charging_state=state, energy_wh=energy))
            return out
        if changed:
            if state == "SuspendedEVSE":
                out.append(ChargingSuspended(**common, reason=state))
            elif state == "SuspendedEV" or state == "Idle" or (state == "EVConnected" and tx.has_charged):
                out.append(ChargingIdle(**common, reason=state))
            elif state == "EVConnected":
                out.append(TransactionUpdated(**common, charging_state=state, energy_wh=energy))
                energy = None
        if energy is not None:
            out.append(TransactionUpdated(**common, charging_state=state, energy_wh=energy))
        return out

    # 2.0.1 ---------------------------------------------------------------------------------------

    def _transaction_event(
        self, cp: str, st: _ChargerState, p: dict[str, Any], received_at: datetime
    ) -> list[ChargerEvent]:
        event_type = p.get("eventType")
        info = p.get("transactionInfo")
        if event_type not in ("Started", "Updated", "Ended"):
            raise _SchemaError("eventType must be Started, Updated or Ended")
        if not isinstance(info, dict) or not isinstance(info.get("transactionId"), str):
            raise _SchemaError("transactionInfo.transactionId must be a string")
        seq = _int(p.get("seqNo"), "seqNo")
        assert seq is not None
        tx_id: str = info["transactionId"]
        is_new = tx_id not in st.txs
        tx = self._remember_tx(st, tx_id)
        evse = p.get("evse")
        if isinstance(evse, dict):
            # Only the first event that names the EVSE has to; later ones may omit it.
            if tx.evse_id is None:
                tx.evse_id = _int(evse.get("id"), "evse.id")
            if tx.connector_id is None:
                tx.connector_id = _int(evse.get("connectorId"), "evse.connectorId", required=False)
        if tx.last_seq is not None and not is_new:
            if seq > tx.last_seq + 1:
                self.stats.seq_gaps += seq - tx.last_seq - 1
                self._log.warning("seq_gap", "ocpp seqNo gap from %s tx %s: %d -> %d", cp, tx_id, tx.last_seq, seq)
            elif seq <= tx.last_seq:
                self.stats.seq_out_of_order += 1
        tx.last_seq = max(seq, tx.last_seq) if tx.last_seq is not None else seq
        offline = p.get("offline") is True
        at = self._at(p.get("timestamp"), received_at, offline)
        energy = _energy_wh(p.get("meterValue"))
        common: dict[str, Any] = {
            "at": at,
            "charge_point_id": cp,
            "transaction_id": tx_id,
            "evse_id": tx.evse_id,
            "connector_id": tx.connector_id,
        }
        out: list[ChargerEvent] = []
        if event_type == "Started":
            token = p.get("idToken")
            raw_token = token.get("idToken") if isinstance(token, dict) else None
            out.append(
                TransactionStarted(
                    **common,
                    id_token_hash=hash_id_token(raw_token, self.id_token_key) if isinstance(raw_token, str) else None,
                    meter_start_wh=energy,
                )
            )
            energy = None  # the start reading is meter_start_wh, not an update
        if event_type == "Ended":
            st.txs.pop(tx_id, None)
            reason = info.get("stoppedReason")
            out.append(
                TransactionEnded(**common, reason=reason if isinstance(reason, str) else "Local", energy_wh=energy)
            )
            return out
        state = info.get("chargingState")
        if isinstance(state, str):
            out.extend(self._charging_state(cp, tx, state, at, energy))
        elif energy is not None:
            out.append(TransactionUpdated(**common, charging_state=tx.charging_state, energy_wh=energy))
        return out


def decode_all(decoder: OcppDecoder, frames: Iterable[tuple[str, Direction, str, datetime]]) -> list[ChargerEvent]:
    """Replay recorded frames through a decoder (tests, offline analysis)."""
    out: list[ChargerEvent] = []
    for cp, direction, raw, at in frames:
        out.extend(decoder.decode(cp, direction, raw, at))
    return out
