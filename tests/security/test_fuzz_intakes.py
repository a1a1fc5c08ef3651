"""Hypothesis fuzz of what chargers and CSMSs send: the OCPP decoder never raises and only returns
domain events, whatever the frame; the CSMS intake answers 4xx (never 5xx) to any signed body."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.events import _Event
from ocpp_link.decoder import OcppDecoder

ACTIONS = ["BootNotification", "StartTransaction", "StopTransaction", "StatusNotification", "MeterValues",
           "TransactionEvent", "NotifyEvent", "Authorize", "Heartbeat"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
                    st.floats(allow_nan=False), st.text(max_size=20))
json_values = st.recursive(scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(
    st.sampled_from(["connectorId", "evseId", "transactionId", "status", "idTag", "meterStart", "timestamp",
                     "eventType", "evse", "transactionInfo", "chargingState", "meterValue", "reason", "id", "x"]),
    kids, max_size=6), max_leaves=20)
frames = st.one_of(
    st.tuples(st.sampled_from([2, 3, 4]), st.text(max_size=8), st.sampled_from(ACTIONS), json_values).map(list),
    st.tuples(st.sampled_from([3]), st.text(max_size=8), json_values).map(list),
    json_values,
)
AT = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.lists(st.tuples(st.sampled_from(["cs", "csms"]), frames), max_size=6), st.binary(max_size=64))
def test_decoder_never_raises(msgs, garbage):
    dec = OcppDecoder()
    for direction, frame in msgs:
        out = dec.decode("CP1", direction, json.dumps(frame), AT)
        assert isinstance(out, list) and all(isinstance(e, _Event) for e in out)
    out = dec.decode("CP1", "cs", garbage, AT)  # any bytes, JSON or not: counted, never raised
    assert isinstance(out, list) and all(isinstance(e, _Event) for e in out)


SECRET = "s" * 32


def test_csms_intake_never_answers_5xx(tmp_path, db_url, clock):
    from tests.foundation.helpers import client_for, make_settings

    settings_ = make_settings(tmp_path, db_url,
                              csms_intakes=[{"name": "citrine", "auth": "hmac", "secret": SECRET}])
    client = client_for(settings_, clock=clock)
    bodies = st.one_of(
        st.fixed_dictionaries({"id": st.text(max_size=12), "stationId": st.text(max_size=12),
                               "origin": st.sampled_from(["cs", "csms", "x"]), "message": frames}),
        st.fixed_dictionaries({"event_id": st.text(max_size=12), "type": st.text(max_size=20)},
                              optional={"charge_point_id": scalars, "connector_id": scalars, "at": scalars}),
        json_values,
    )
    seen = []

    with client:

        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(bodies)
        def post(body):
            raw = json.dumps(body).encode()
            clock.advance(seconds=1)
            ts = str(int(clock().timestamp()))
            sig = hmac.new(SECRET.encode(), ts.encode() + b"." + raw, hashlib.sha256).hexdigest()
            r = client.post("/api/v1/csms/events", content=raw, headers={
                "X-Baywarden-CSMS": "citrine", "X-Baywarden-Timestamp": ts, "X-Baywarden-Signature": f"sha256={sig}",
                "Content-Type": "application/json"})
            seen.append(r.status_code)
            assert r.status_code < 500, (body, r.text[:200])

        post()
    assert any(code == 422 for code in seen)


TOKEN = "ocpi-token-0123456789"
times = st.one_of(st.sampled_from(["2026-11-02T09:00:00Z", "2026-11-02T10:00:00+01:00", "9999-12-31T23:59:59Z",
                                   "0001-01-01T00:00:00Z", "2026-11-02T09:00:00", "2026-13-40T99:00:00Z", ""]),
                  scalars)
ocpi_fields = {
    "country_code": st.one_of(st.just("NL"), scalars), "party_id": st.one_of(st.just("ABC"), scalars),
    "id": st.one_of(st.just("S1"), scalars), "start_date_time": times, "end_date_time": times,
    "last_updated": times, "kwh": st.one_of(st.floats(), st.integers(min_value=-(2**70), max_value=2**70), scalars),
    "evse_uid": st.one_of(st.sampled_from(["EVSE-1", "", "é" * 40]), scalars),
    "connector_id": st.one_of(st.sampled_from(["1", "٣", "9" * 30, "-1"]), scalars),
    "status": st.one_of(st.sampled_from(["ACTIVE", "COMPLETED", "INVALID", "PENDING", "active"]), scalars),
    "currency": scalars, "cdr_token": json_values,
}
VALID = {"country_code": "NL", "party_id": "ABC", "id": "S1", "start_date_time": "2026-11-02T09:00:00Z", "kwh": 0,
         "evse_uid": "EVSE-1", "connector_id": "1", "status": "ACTIVE", "last_updated": "2026-11-02T09:00:00Z"}
# A valid Session with some fields replaced (so that most steps get past the first check), or anything at all.
ocpi_bodies = st.one_of(st.fixed_dictionaries({}, optional=ocpi_fields).map(lambda over: {**VALID, **over}),
                        st.fixed_dictionaries({}, optional=ocpi_fields), json_values)
ocpi_ids = st.one_of(st.sampled_from(["S1", "S2"]), st.text(min_size=1, max_size=40).filter(lambda s: "/" not in s))


def test_ocpi_sessions_never_answer_5xx(tmp_path, db_url, clock):
    """PUT and PATCH of OCPI Sessions in any order, with any field values (dates in year 9999, kwh of
    1e308 or NaN, non-ASCII digits, ids of any length): an OCPI envelope with status 1000 or 2001, never 5xx."""
    from urllib.parse import quote

    from tests.foundation.helpers import client_for, make_settings

    settings_ = make_settings(tmp_path, db_url, csms_intakes=[{"name": "hub", "auth": "bearer", "secret": TOKEN}])
    client = client_for(settings_, clock=clock)
    seen: set[int] = set()

    with client:

        @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(st.lists(st.tuples(st.sampled_from(["PUT", "PATCH"]), ocpi_ids, ocpi_bodies), min_size=1, max_size=4))
        def send(steps):
            for method, sid, body in steps:
                clock.advance(seconds=1)
                raw = json.dumps(body).encode()  # NaN and Infinity go out as JSON's extensions, as a sloppy peer sends
                r = client.request(method, f"/ocpi/2.2.1/sessions/NL/ABC/{quote(sid, safe='')}", content=raw,
                                   headers={"Authorization": f"Token {TOKEN}", "Content-Type": "application/json"})
                assert r.status_code < 500, (method, sid, body, r.text[:300])
                if r.status_code in (200, 400):
                    assert r.json()["status_code"] in (1000, 2001), r.text[:300]
                seen.add(r.status_code)

        send()
    assert {200, 400} <= seen


def test_decoder_counts_deep_nesting_and_non_finite_numbers_as_malformed():
    """`json.loads` raised RecursionError on deep nesting (the decoder promised never to raise) and let a
    meterStart of Infinity through to an event PostgreSQL cannot store."""
    dec = OcppDecoder()
    assert dec.decode("CP1", "cs", "[" * 100_000 + "]" * 100_000, AT) == []
    start = '[2, "m1", "StartTransaction", {"connectorId": 1, "idTag": "T", "meterStart": Infinity, ' \
            '"timestamp": "2026-11-02T09:00:00Z"}]'
    assert dec.decode("CP1", "cs", start, AT) == []
    assert dec.stats.malformed == 2
