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


def test_csms_intake_never_answers_5xx(tmp_path, clock):
    from tests.foundation.helpers import client_for, make_settings

    settings_ = make_settings(tmp_path, f"sqlite:///{tmp_path / 'f.db'}",
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
