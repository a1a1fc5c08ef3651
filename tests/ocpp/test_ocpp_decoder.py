"""Decoder on recorded OCPP-J frames, table-driven, both versions."""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from ocpp_link.decoder import DecoderStats, OcppDecoder, hash_id_token, redact

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
TAG = "04A2B3C4D5E6F7"
TAG_HASH = hashlib.sha256(TAG.encode()).hexdigest()


def feed(dec: OcppDecoder, frames: list[tuple[str, str]], cp: str = "CP1", step: float = 1.0) -> list[Any]:
    out: list[Any] = []
    for i, (direction, raw) in enumerate(frames):
        out.extend(dec.decode(cp, direction, raw, T0 + timedelta(seconds=i * step)))  # type: ignore[arg-type]
    return out


def brief(events: list[Any]) -> list[tuple[Any, ...]]:
    """(kind, transaction id, main detail) per event: what the tables compare."""
    rows = []
    for e in events:
        detail = getattr(e, "reason", None) or getattr(e, "charging_state", None)
        energy = getattr(e, "energy_wh", None)
        rows.append((e.kind, getattr(e, "transaction_id", None), detail, energy))
    return rows


def st16(mid: str, status: str, connector: int = 1) -> tuple[str, str]:
    return (
        "cs",
        f'[2,"{mid}","StatusNotification",{{"connectorId":{connector},"errorCode":"NoError","status":"{status}"}}]',
    )


def ok(mid: str, payload: str = "{}") -> tuple[str, str]:
    return ("csms", f'[3,"{mid}",{payload}]')


def mv16(mid: str, tx: int, wh: str, unit: str = "Wh") -> tuple[str, str]:
    return (
        "cs",
        f'[2,"{mid}","MeterValues",{{"connectorId":1,"transactionId":{tx},"meterValue":[{{'
        f'"timestamp":"2025-03-01T12:00:05Z","sampledValue":[{{"value":"{wh}",'
        f'"measurand":"Energy.Active.Import.Register","unit":"{unit}"}}]}}]}}]',
    )


START16 = (
    "cs",
    f'[2,"s1","StartTransaction",{{"connectorId":1,"idTag":"{TAG}","meterStart":1000,'
    f'"timestamp":"2025-03-01T12:00:02Z"}}]',
)
START16_CONF = ok("s1", '{"transactionId":77,"idTagInfo":{"status":"Accepted"}}')
STOP16 = (
    "cs",
    '[2,"e1","StopTransaction",{"transactionId":77,"meterStop":4200,'
    '"timestamp":"2025-03-01T12:00:09Z","reason":"EVDisconnected"}]',
)

SESSION16 = [
    ("cs", '[2,"b1","BootNotification",{"chargePointVendor":"V","chargePointModel":"M"}]'),
    ok("b1", '{"status":"Accepted","currentTime":"2025-03-01T12:00:00Z","interval":300}'),
    st16("a1", "Available"),
    ok("a1"),
    st16("p1", "Preparing"),
    ok("p1"),
    START16,
    START16_CONF,
    st16("c1", "Charging"),
    ok("c1"),
    mv16("m1", 77, "2500"),
    ok("m1"),
    mv16("m2", 77, "3.2", unit="kWh"),
    ok("m2"),
    st16("i1", "SuspendedEV"),
    ok("i1"),
    STOP16,
    ok("e1", '{"idTagInfo":{"status":"Accepted"}}'),
    st16("f1", "Finishing"),
    ok("f1"),
    st16("a2", "Available"),
    ok("a2"),
]


def te(
    mid: str,
    etype: str,
    seq: int,
    state: str | None = None,
    extra: str = "",
    ts: str = "2025-03-01T12:00:03Z",
    tx: str = "T-9",
) -> tuple[str, str]:
    info = f'"transactionId":"{tx}"' + (f',"chargingState":"{state}"' if state else "")
    if etype == "Ended":
        info += ',"stoppedReason":"EVDisconnected"'
    return (
        "cs",
        f'[2,"{mid}","TransactionEvent",{{"eventType":"{etype}","timestamp":"{ts}",'
        f'"triggerReason":"ChargingStateChanged","seqNo":{seq},"transactionInfo":{{{info}}}{extra}}}]',
    )


def energy201(wh: float, context: str = "Sample.Periodic", unit: str = '{"unit":"Wh"}') -> str:
    return (
        f',"meterValue":[{{"timestamp":"2025-03-01T12:00:03Z","sampledValue":[{{"value":{wh},'
        f'"measurand":"Energy.Active.Import.Register","context":"{context}","unitOfMeasure":{unit}}}]}}]'
    )


def st201(mid: str, status: str) -> tuple[str, str]:
    return (
        "cs",
        f'[2,"{mid}","StatusNotification",{{"timestamp":"2025-03-01T12:00:00Z",'
        f'"connectorStatus":"{status}","evseId":1,"connectorId":2}}]',
    )


STARTED201 = te(
    "t0",
    "Started",
    0,
    "EVConnected",
    f',"evse":{{"id":1,"connectorId":2}},"idToken":{{"idToken":"{TAG}","type":"ISO14443"}}'
    + energy201(1000, "Transaction.Begin"),
)

SESSION201 = [
    st201("a1", "Available"),
    ok("a1"),
    st201("o1", "Occupied"),
    ok("o1"),
    STARTED201,
    ok("t0", '{"idTokenInfo":{"status":"Accepted"}}'),
    te("t1", "Updated", 1, "Charging"),
    ok("t1"),
    te("t2", "Updated", 2, None, energy201(2500)),
    ok("t2"),
    te("t3", "Updated", 3, None, energy201(3.5, unit='{"unit":"kWh"}')),
    ok("t3"),
    te("t4", "Updated", 4, "SuspendedEV"),
    ok("t4"),
    te("t5", "Ended", 5, "Idle", energy201(4000, "Transaction.End")),
    ok("t5"),
    st201("a2", "Available"),
    ok("a2"),
]

CASES: list[tuple[str, list[tuple[str, str]], list[tuple[Any, ...]]]] = [
    (
        "1.6 plug-charge-idle-leave",
        SESSION16,
        [
            ("connector_available", None, None, None),
            ("transaction_started", "77", None, None),
            ("transaction_updated", "77", "Charging", None),
            ("transaction_updated", "77", "Charging", 2500.0),
            ("transaction_updated", "77", "Charging", 3200.0),
            ("charging_idle", "77", "SuspendedEV", None),
            ("transaction_ended", "77", "EVDisconnected", 4200.0),
            ("charging_idle", "77", "Finishing", None),
            ("connector_available", None, None, None),
        ],
    ),
    (
        "1.6 SuspendedEVSE is a suspension, not idling",
        [START16, START16_CONF, st16("c1", "Charging"), st16("s2", "SuspendedEVSE"), st16("c2", "Charging")],
        [
            ("transaction_started", "77", None, None),
            ("transaction_updated", "77", "Charging", None),
            ("charging_suspended", "77", "SuspendedEVSE", None),
            ("transaction_updated", "77", "Charging", None),
        ],
    ),
    (
        "1.6 conf paired by message id, other answers in between ignored",
        [START16, ok("zz", '{"transactionId":5}'), ("csms", '[4,"qq","NotImplemented","",{}]'), START16_CONF],
        [("transaction_started", "77", None, None)],
    ),
    (
        "1.6 CALLERROR for StartTransaction forgets the request",
        [START16, ("csms", '[4,"s1","InternalError","",{}]'), ok("s1", '{"transactionId":1}')],
        [],
    ),
    (
        "1.6 status outside a transaction and connector 0 give nothing but Available",
        [
            st16("x", "Charging"),
            st16("y", "SuspendedEV"),
            st16("z", "Available", connector=0),
            ("cs", '[2,"m","MeterValues",{"connectorId":1,"meterValue":[]}]'),
        ],
        [],
    ),
    (
        "1.6 MeterValues for a transaction the tap missed the start of",
        [mv16("m1", 12, "900")],
        [("transaction_updated", "12", None, 900.0)],
    ),
    (
        "2.0.1 plug-charge-idle-leave",
        SESSION201,
        [
            ("connector_available", None, None, None),
            ("transaction_started", "T-9", None, None),
            ("transaction_updated", "T-9", "EVConnected", None),
            ("transaction_updated", "T-9", "Charging", None),
            ("transaction_updated", "T-9", "Charging", 2500.0),
            ("transaction_updated", "T-9", "Charging", 3500.0),
            ("charging_idle", "T-9", "SuspendedEV", None),
            ("transaction_ended", "T-9", "EVDisconnected", 4000.0),
            ("connector_available", None, None, None),
        ],
    ),
    (
        "2.0.1 SuspendedEVSE, EVConnected after charging, Idle",
        [
            STARTED201,
            te("t1", "Updated", 1, "Charging"),
            te("t2", "Updated", 2, "SuspendedEVSE"),
            te("t3", "Updated", 3, "EVConnected"),
            te("t4", "Updated", 4, "EVConnected"),
            te("t5", "Updated", 5, "Idle"),
        ],
        [
            ("transaction_started", "T-9", None, None),
            ("transaction_updated", "T-9", "EVConnected", None),
            ("transaction_updated", "T-9", "Charging", None),
            ("charging_suspended", "T-9", "SuspendedEVSE", None),
            ("charging_idle", "T-9", "EVConnected", None),
            ("charging_idle", "T-9", "Idle", None),
        ],
    ),
    (
        "2.0.1 answers and CSMS calls carry nothing",
        [
            ok("t0", '{"idTokenInfo":{"status":"Accepted"}}'),
            ("csms", '[2,"g1","GetVariables",{"getVariableData":[]}]'),
            ("cs", '[3,"g1",{"getVariableResult":[]}]'),
        ],
        [],
    ),
]


@pytest.mark.parametrize(("frames", "expected"), [(f, e) for _, f, e in CASES], ids=[c[0] for c in CASES])
def test_recorded_frames(frames: list[tuple[str, str]], expected: list[tuple[Any, ...]]) -> None:
    dec = OcppDecoder()
    assert brief(feed(dec, frames)) == expected
    assert dec.stats.malformed == dec.stats.schema_violations == 0


def test_16_details_token_hashed_and_fields() -> None:
    events = feed(OcppDecoder(), SESSION16)
    started = next(e for e in events if e.kind == "transaction_started")
    assert started.id_token_hash == TAG_HASH == hash_id_token(TAG)
    assert started.meter_start_wh == 1000.0 and started.connector_id == 1
    assert started.at == T0 + timedelta(seconds=6)  # when the request passed; its own stamp is recent
    assert all(e.at.tzinfo is not None and e.at.utcoffset() == timedelta(0) for e in events)
    assert all(TAG not in e.model_dump_json() for e in events)
    assert all(e.charge_point_id == "CP1" for e in events)


def test_201_evse_remembered_from_first_event_and_token_hashed() -> None:
    events = feed(OcppDecoder(), SESSION201)
    tx_events = [e for e in events if getattr(e, "transaction_id", None) == "T-9"]
    assert {(e.evse_id, e.connector_id) for e in tx_events} == {(1, 2)}
    started = tx_events[0]
    assert started.id_token_hash == TAG_HASH and started.meter_start_wh == 1000.0
    assert all(TAG not in e.model_dump_json() for e in events)


def test_id_token_key_gives_keyed_hash() -> None:
    events = feed(OcppDecoder(id_token_key=b"site-secret"), [START16, START16_CONF])
    assert events[0].id_token_hash not in (None, TAG_HASH) and len(events[0].id_token_hash) == 64


def test_201_seq_gaps_and_out_of_order_counted(caplog: pytest.LogCaptureFixture) -> None:
    dec = OcppDecoder()
    frames = [
        STARTED201,
        te("t1", "Updated", 1, "Charging"),
        te("t4", "Updated", 4, None, energy201(1)),
        te("t3", "Updated", 3, None, energy201(2)),
    ]
    with caplog.at_level(logging.WARNING, "ocpp_link.decoder"):
        feed(dec, frames)
    assert dec.stats.seq_gaps == 2 and dec.stats.seq_out_of_order == 1
    assert "seqNo gap" in caplog.text


@pytest.mark.parametrize(
    ("offline", "ts", "expected"),
    [
        ("true", "2025-03-01T10:00:00Z", datetime(2025, 3, 1, 10, 0, tzinfo=UTC)),  # queued offline
        ("false", "2025-03-01T11:59:58Z", T0),  # online: the tap's clock
        ("true", "2025-03-01T13:00:00Z", T0),  # in the future: not trusted
        ("true", "2025-03-01T10:00:00+02:00", datetime(2025, 3, 1, 8, 0, tzinfo=UTC)),  # offset normalised
        ("true", "not a time", T0),
    ],
)
def test_201_event_time(offline: str, ts: str, expected: datetime) -> None:
    frame = te("t0", "Started", 0, "Charging", f',"offline":{offline},"evse":{{"id":1}}', ts=ts)
    events = OcppDecoder().decode("CP1", "cs", frame[1], T0)
    assert [e.at for e in events] == [expected, expected]
    assert all(e.at.tzinfo is UTC for e in events)


def test_16_queued_timestamp_kept_recent_one_replaced() -> None:
    dec = OcppDecoder()
    dec.decode("CP1", "cs", START16[1], T0 + timedelta(hours=2))
    (late,) = dec.decode("CP1", "csms", START16_CONF[1], T0 + timedelta(hours=2))
    assert late.at == datetime(2025, 3, 1, 12, 0, 2, tzinfo=UTC)  # older than max_skew: queued
    dec.decode("CP2", "cs", START16[1], T0)
    (fresh,) = dec.decode("CP2", "csms", START16_CONF[1], T0)
    assert fresh.at == T0


BAD_FRAMES = [
    ("not json", "malformed"),
    ('{"a":1}', "malformed"),
    ("[2]", "malformed"),
    ('[9,"x",{}]', "malformed"),
    ('[2,"x","StatusNotification","nope"]', "schema_violations"),
    ('[2,"x","StatusNotification",{"connectorId":"one","status":"Charging"}]', "schema_violations"),
    ('[2,"x","StatusNotification",{"connectorId":1}]', "schema_violations"),
    (
        '[2,"x","TransactionEvent",{"eventType":"Weird","seqNo":0,"transactionInfo":{"transactionId":"a"}}]',
        "schema_violations",
    ),
    (
        '[2,"x","TransactionEvent",{"eventType":"Started","seqNo":0,"transactionInfo":{}}]',
        "schema_violations",
    ),
    ('[2,"x","StopTransaction",{"transactionId":"abc"}]', "schema_violations"),
    ('[2,"x","FutureAction",{"anything":true}]', "unknown"),
    ('[3,"unknown-id",{"transactionId":3}]', "unknown"),
]


@pytest.mark.parametrize(("raw", "counter"), BAD_FRAMES)
def test_bad_frames_counted_never_raised(raw: str, counter: str) -> None:
    dec = OcppDecoder()
    assert dec.decode("CP1", "cs" if raw.startswith("[2") or not raw.startswith("[") else "csms", raw, T0) == []
    counts = dec.stats.as_dict()
    assert counts[counter] == 1
    assert sum(v for k, v in counts.items() if k not in ("frames", counter)) == 0


def test_bad_start_conf_is_schema_violation() -> None:
    dec = OcppDecoder()
    assert feed(dec, [START16, ok("s1", '{"transactionId":"x"}')]) == []
    assert dec.stats.schema_violations == 1


def test_bytes_and_naive_receive_time_accepted() -> None:
    dec = OcppDecoder()
    (ev,) = dec.decode("CP1", "cs", st16("a", "Available")[1].encode(), datetime(2025, 1, 1))
    assert ev.at.tzinfo is not None


def test_logs_redacted_and_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    dec = OcppDecoder()
    raw = f'[2,"x","StartTransaction",{{"connectorId":"bad","idTag":"{TAG}"}}'  # truncated JSON
    raw201 = f'[2,"y","TransactionEvent",{{"eventType":"Nope","idToken":{{"idToken":"{TAG}","type":"ISO14443"}}}}]'
    with caplog.at_level(logging.WARNING, "ocpp_link.decoder"):
        for _ in range(50):
            dec.decode("CP1", "cs", raw, T0)
        dec.decode("CP1", "cs", raw201, T0)
    assert dec.stats.malformed == 50 and dec.stats.schema_violations == 1
    assert TAG not in caplog.text
    assert caplog.text.count("ocpp malformed") == 10  # the rest are counted, not logged


def test_redact() -> None:
    assert redact('{"idTag": "ABC", "parentIdTag":"P", "idToken":{"idToken":"Z"}}') == (
        '{"idTag": "***", "parentIdTag":"***", "idToken":{"idToken":"***"}}'
    )


def test_state_survives_reconnect_and_charger_isolation() -> None:
    dec = OcppDecoder()
    feed(dec, [START16, START16_CONF])
    dec.connection_closed("CP1")
    dec.connection_opened("CP1", "ocpp1.6")
    assert brief(feed(dec, [st16("c", "Charging")])) == [("transaction_updated", "77", "Charging", None)]
    assert feed(dec, [st16("c", "Charging")], cp="CP2") == []  # CP2 knows no transaction


def test_stats_is_a_dataclass_dict() -> None:
    assert set(DecoderStats().as_dict()) >= {
        "frames",
        "malformed",
        "unknown",
        "schema_violations",
        "seq_gaps",
    }


def test_ocpp_link_imports_no_enforcement_or_api() -> None:
    import ast
    from pathlib import Path

    import ocpp_link

    for path in Path(ocpp_link.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            assert not any(n.split(".")[0] in ("enforcement", "api") for n in names), path
