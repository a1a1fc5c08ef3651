"""Sources edited at run time (issue 15): through the API and the Sources page, on SQLite and PostgreSQL.
A source added, changed, disabled, deleted or reset applies to the very next read; only admins change
them; secrets never come back in a response, a page or the audit log."""

from __future__ import annotations

import json
import re

import pytest
from sqlmodel import Session, select

from models.db import make_engine
from models.tables import AuditLog, Role, StoredEvent
from tests.foundation.helpers import add_user, client_for, login, make_settings
from tests.sources.test_intake_http import SECRET, signed

NEW_SECRET = "gate-secret-abcdefghijkl"
FTP_PATTERN = r"^(?P<plate>[A-Z0-9]+)\.jpg$"


@pytest.fixture
def env(tmp_path, db_url, clock):
    settings = make_settings(
        tmp_path, db_url,
        sources=[{"name": "lanes", "kind": "webhook", "secret": SECRET, "cameras": [{"id": "lane1", "bay_id": "B1"}]}],
        enforcement={"bays": [{"bay_id": b} for b in ("B1", "B2", "B3")]},
    )
    client = client_for(settings, clock=clock)
    add_user(settings, "root", Role.admin)
    add_user(settings, "op", Role.operator)
    add_user(settings, "vic", Role.viewer)
    with client:
        yield settings, client, clock


def as_admin(client) -> dict[str, str]:
    client.cookies.clear()
    return {"X-CSRF-Token": login(client, "root")}


def read(client, clock, name: str, read_id: str, camera: str = "cam", secret: str = NEW_SECRET):
    clock.advance(seconds=1)
    body = json.dumps({"id": read_id, "camera": camera, "plate": "AB123CD", "confidence": 0.95,
                       "at": clock().isoformat()}).encode()
    return client.post(f"/api/v1/sources/{name}/reads", content=body, headers=signed(clock, body, name, secret))


def stored(settings) -> list[StoredEvent]:
    engine = make_engine(settings.db_url)
    with Session(engine) as db:
        rows = list(db.exec(select(StoredEvent).order_by(StoredEvent.seq)))
    engine.dispose()
    return rows


def audit_rows(settings) -> list[AuditLog]:
    engine = make_engine(settings.db_url)
    with Session(engine) as db:
        rows = list(db.exec(select(AuditLog).where(AuditLog.entity == "settings").order_by(AuditLog.id)))
    engine.dispose()
    return rows


GATE = {"name": "gate", "kind": "webhook", "secret": NEW_SECRET, "cameras": [{"id": "cam", "bay_id": "B1"}]}


def test_a_source_added_updated_disabled_deleted_and_reset_applies_to_the_next_read(env):
    settings, client, clock = env
    h = as_admin(client)
    assert read(client, clock, "gate", "r0").status_code == 404  # not configured yet
    r = client.post("/api/v1/settings/sources", json=GATE, headers=h)
    assert r.status_code == 201, r.text
    assert r.json()["secret_set"] is True and r.json()["applies"] == "now" and "secret" not in r.json()
    assert read(client, clock, "gate", "r1").status_code == 200
    arrived = [e for e in stored(settings) if e.kind == "vehicle_arrived"]
    assert arrived[-1].payload["bay_id"] == "B1" and arrived[-1].source == "source:gate"

    # The mapping changes, the secret is left empty: the next read goes to B2, signed with the same secret.
    r = client.put("/api/v1/settings/sources/gate", json={"cameras": [{"id": "cam", "bay_id": "B2"}], "secret": ""},
                   headers=h)
    assert r.status_code == 200 and r.json()["cameras"] == [{"id": "cam", "bay_id": "B2"}]
    assert read(client, clock, "gate", "r2").status_code == 200
    assert [e for e in stored(settings) if e.kind == "vehicle_arrived"][-1].payload["bay_id"] == "B2"

    assert client.put("/api/v1/settings/sources/gate", json={"enabled": False}, headers=h).status_code == 200
    assert read(client, clock, "gate", "r3").status_code == 403
    assert client.delete("/api/v1/settings/sources/gate", headers=h).status_code == 204
    assert read(client, clock, "gate", "r4").status_code == 404
    assert client.delete("/api/v1/settings/sources/gate", headers=h).status_code == 404

    # The file's source was kept in the stored list all along; reset brings back exactly the file's list.
    client.post("/api/v1/settings/sources", json=GATE, headers=h)
    assert client.delete("/api/v1/settings/sources/lanes", headers=h).status_code == 204
    assert read(client, clock, "lanes", "r5", camera="lane1", secret=SECRET).status_code == 404
    assert client.get("/api/v1/settings/sources").json()["source"] == "stored"
    assert client.delete("/api/v1/settings/sources", headers=h).status_code == 204
    listed = client.get("/api/v1/settings/sources").json()
    assert listed["source"] == "config" and [s["name"] for s in listed["sources"]] == ["lanes"]
    assert [s["name"] for s in client.get("/api/v1/sources").json()] == ["lanes"]
    assert read(client, clock, "lanes", "r6", camera="lane1", secret=SECRET).status_code == 200
    assert read(client, clock, "gate", "r7").status_code == 404
    actions = [(a.action, a.entity_id, a.actor) for a in audit_rows(settings)]
    assert actions[:3] == [("source_add", "sources:gate", "root"), ("source_update", "sources:gate", "root"),
                           ("source_update", "sources:gate", "root")]
    assert ("source_delete", "sources:lanes", "root") in actions and actions[-1][:2] == ("settings_reset", "sources")


def test_viewers_and_operators_read_only_admins_change_anonymous_401(env):
    settings, client, clock = env
    for who in ("vic", "op"):
        client.cookies.clear()
        h = {"X-CSRF-Token": login(client, who)}
        assert client.get("/api/v1/settings/sources").status_code == 200
        assert client.post("/api/v1/settings/sources", json=GATE, headers=h).status_code == 403
        assert client.put("/api/v1/settings/sources/lanes", json={"enabled": False}, headers=h).status_code == 403
        assert client.delete("/api/v1/settings/sources/lanes", headers=h).status_code == 403
        assert client.delete("/api/v1/settings/sources", headers=h).status_code == 403
        page = client.get("/dash/sources")
        assert page.status_code == 200 and 'action="/dash/sources"' not in page.text and "/delete" not in page.text
        assert client.post("/dash/sources", data={"csrf_token": h["X-CSRF-Token"], **_form()}).status_code == 403
    client.cookies.clear()
    assert client.get("/api/v1/settings/sources").status_code == 401
    assert client.post("/api/v1/settings/sources", json=GATE).status_code == 401
    assert [s["name"] for s in client.get("/api/v1/settings/sources",
                                          headers=as_admin(client)).json()["sources"]] == ["lanes"]
    assert not [a for a in audit_rows(settings) if a.action.startswith("source")]


def test_secrets_never_leave_responses_pages_or_the_audit_log(env):
    settings, client, clock = env
    h = as_admin(client)
    assert client.post("/api/v1/settings/sources", json=GATE, headers=h).status_code == 201
    rotated = "rotated-secret-0123456789"
    assert client.put("/api/v1/settings/sources/gate", json={"secret": rotated}, headers=h).status_code == 200
    assert read(client, clock, "gate", "r1").status_code == 401  # the old secret stopped at once
    assert read(client, clock, "gate", "r2", secret=rotated).status_code == 200
    shown = [client.get(u).text for u in ("/api/v1/settings/sources", "/api/v1/sources", "/dash/sources",
                                          "/dash/sources?edit=gate", "/api/v1/audit")]
    rows = audit_rows(settings)
    dumped = json.dumps([[a.before, a.after] for a in rows])
    for secret in (SECRET, NEW_SECRET, rotated):
        assert all(secret not in text for text in shown)
        assert secret not in dumped
    gate_after = next(s for s in rows[-1].after["sources"] if s["name"] == "gate")
    assert gate_after["secret"] == "*** (changed)"


@pytest.mark.parametrize(("body", "field", "words"), [
    ({**GATE, "secret": "short"}, "secret", "at least 16"),
    ({**GATE, "cameras": [{"id": "cam", "bay_id": "B9"}]}, "cameras", "no bay named B9"),
    ({**GATE, "name": "lanes"}, "name", "already exists"),
    ({**GATE, "name": "Bad Name"}, "name", "lowercase"),
    ({**GATE, "kind": "dahua", "secret": "camera-pw", "cameras": [{"id": "0", "bay_id": "B1"}]}, "device_url",
     "device_url"),
    ({**GATE, "kind": "ftp"}, "file_pattern", "file_pattern"),
    ({**GATE, "presence_timeout_s": 5}, "presence_timeout_s", "greater than or equal"),
    ({**GATE, "colour": "red"}, "colour", "Extra inputs"),
])
def test_invalid_sources_are_422_with_the_field_named(env, body, field, words):
    settings, client, clock = env
    r = client.post("/api/v1/settings/sources", json=body, headers=as_admin(client))
    assert r.status_code == 422, r.text
    errors = {e["loc"][1]: e["msg"] for e in r.json()["detail"]}
    assert field in errors and words in errors[field], errors
    assert [s["name"] for s in client.get("/api/v1/settings/sources").json()["sources"]] == ["lanes"]


def test_update_keeps_the_name_and_refuses_unknown_bays(env):
    settings, client, clock = env
    h = as_admin(client)
    r = client.put("/api/v1/settings/sources/lanes", json={"name": "other"}, headers=h)
    assert r.status_code == 422 and "renamed" in r.text
    r = client.put("/api/v1/settings/sources/lanes", json={"cameras": [{"id": "lane1", "bay_id": "B7"}]}, headers=h)
    assert r.status_code == 422 and "no bay named B7" in r.text
    assert client.put("/api/v1/settings/sources/nope", json={"enabled": False}, headers=h).status_code == 404
    from api.limits import DEFAULT_BODY

    big = client.post("/api/v1/settings/sources", content=b" " * (DEFAULT_BODY + 1),
                      headers={**h, "Content-Type": "application/json"})
    assert big.status_code == 413  # bounded like the other settings routes
    assert client.get("/api/v1/settings/sources").json()["source"] == "config"  # nothing was stored


def _form(**over: str) -> dict[str, str]:
    form = {"name": "dashcam", "kind": "webhook", "secret": NEW_SECRET, "cameras": "cam = B3", "enabled": "on",
            "topic": "frigate", "time_format": "%Y%m%d%H%M%S", "utc_offset_min": "0", "presence_timeout_s": "300",
            "max_skew_s": "300", "max_per_s": "50", "burst": "200"}
    return {**form, **over}


def test_dashboard_form_round_trip_as_admin_with_csrf(env):
    settings, client, clock = env
    csrf = as_admin(client)["X-CSRF-Token"]
    page = client.get("/dash/sources")
    assert 'action="/dash/sources"' in page.text and 'id="set-cameras"' in page.text
    assert client.post("/dash/sources", data=_form()).status_code == 403  # no CSRF token
    r = client.post("/dash/sources", data={"csrf_token": csrf, **_form(cameras="cam = B8", secret="short")})
    assert r.status_code == 422
    assert re.search(r'id="set-cameras-err">[^<]*no bay named B8', r.text)
    assert re.search(r'id="set-secret-err">[^<]*at least 16', r.text)
    assert NEW_SECRET not in r.text and "short" not in re.sub(r"<p class=\"error[^<]*", "", r.text)
    r = client.post("/dash/sources", data={"csrf_token": csrf, **_form()})
    assert r.status_code == 303 and "applies+now" in r.headers["location"]
    assert read(client, clock, "dashcam", "d1").status_code == 200
    assert [e for e in stored(settings) if e.kind == "vehicle_arrived"][-1].payload["bay_id"] == "B3"

    edit = client.get("/dash/sources?edit=dashcam")
    assert 'action="/dash/sources/dashcam/edit"' in edit.text and "cam = B3" in edit.text
    r = client.post("/dash/sources/dashcam/edit", data={"csrf_token": csrf, **_form(cameras="cam = B2", secret="")})
    assert r.status_code == 303, r.text[:500]
    assert read(client, clock, "dashcam", "d2").status_code == 200  # the stored secret was kept
    assert [e for e in stored(settings) if e.kind == "vehicle_arrived"][-1].payload["bay_id"] == "B2"

    # The decode-a-sample form still works on the edited list.
    sample = json.dumps({"id": "x", "camera": "cam", "plate": "ZZ1"})
    r = client.post("/dash/sources/test", data={"csrf_token": csrf, "source": "dashcam", "sample": sample})
    assert r.status_code == 200 and "ZZ1" in r.text and "<td>B2</td>" in r.text

    r = client.post("/dash/sources/dashcam/delete", data={"csrf_token": csrf})
    assert r.status_code == 303
    assert read(client, clock, "dashcam", "d3").status_code == 404
    r = client.post("/dash/sources/reset", data={"csrf_token": csrf})
    assert r.status_code == 303 and "config+file" in r.headers["location"]
    assert [s["name"] for s in client.get("/api/v1/settings/sources").json()["sources"]] == ["lanes"]


# --- parts that hold connections follow edits without a restart ------------------------------------------


def _store_sources(ctx, sources: list[dict]) -> None:
    from models.settings import SourceSettings
    from service import runtime_settings as rs

    with ctx.session() as db:
        rs.save_sources(ctx, db, [SourceSettings.model_validate(s) for s in sources], actor="test")


@pytest.mark.timeout(60)
def test_ftp_logins_follow_the_sources_in_use(tmp_path, sqlite_url):
    import asyncio
    import ftplib
    import io

    from baywarden.demo import free_port
    from models.db import upgrade
    from service.build import build_context
    from service.ftp_intake import FtpIntakeComponent
    from tests.sources.test_ftp_intake import _login
    from tests.sources.test_intake_http import jpeg

    port, passive = free_port(), free_port()
    settings = make_settings(tmp_path, sqlite_url, ftp={"port": port, "passive_ports": f"{passive}-{passive}"})
    upgrade(sqlite_url)
    ctx = build_context(settings, components=[])
    part = FtpIntakeComponent(ctx)
    cam = {"name": "cam2", "kind": "ftp", "secret": NEW_SECRET, "file_pattern": FTP_PATTERN,
           "cameras": [{"id": "lane9", "bay_id": "B1"}]}

    def session() -> None:
        with pytest.raises(ftplib.error_perm, match="530"):
            _login(port, "cam2", NEW_SECRET)  # no such source yet
        _store_sources(ctx, [cam])
        ftp = _login(port, "cam2", NEW_SECRET)
        ftp.storbinary("STOR AB123CD.jpg", io.BytesIO(jpeg()))
        ftp.quit()
        _store_sources(ctx, [{**cam, "enabled": False}])
        with pytest.raises(ftplib.error_perm, match="530"):
            _login(port, "cam2", NEW_SECRET)

    async def main() -> None:
        await part.start()
        try:
            await asyncio.to_thread(session)
        finally:
            await part.stop()

    asyncio.run(main())
    with Session(ctx.engine) as db:
        kinds = [e.kind for e in db.exec(select(StoredEvent).order_by(StoredEvent.seq))]
    ctx.engine.dispose()
    assert kinds == ["plate_read", "vehicle_arrived"]


class FakeMqtt:
    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def subscribe(self, topic: str, qos: int = 0) -> None:
        self.calls.append(("sub", topic))

    def unsubscribe(self, topics: list[str]) -> None:
        self.calls.append(("unsub", tuple(topics)))


def test_frigate_topics_follow_the_sources_in_use(tmp_path, sqlite_url):
    from models.db import upgrade
    from service.build import build_context
    from service.mqtt import MqttComponent

    frigate = {"name": "frig", "kind": "frigate", "topic": "frigate", "cameras": [{"id": "drive", "bay_id": "B1"}]}
    settings = make_settings(tmp_path, sqlite_url, mqtt={"publish": False}, sources=[frigate])
    upgrade(sqlite_url)
    ctx = build_context(settings, components=[])
    part = MqttComponent(ctx)
    part.client = FakeMqtt()
    part._on_connect(part.client, None, None, None)  # a session: the file's topic
    assert part.client.calls == [("sub", "frigate/events"), ("sub", "frigate/tracked_object_update")]
    part.client.calls.clear()
    _store_sources(ctx, [{**frigate, "topic": "garage"}])
    part.refresh_sources()
    assert part.client.calls == [("sub", "garage/events"), ("sub", "garage/tracked_object_update"),
                                 ("unsub", ("frigate/events", "frigate/tracked_object_update"))]
    assert [s.topic for s in part.frigate] == ["garage"]
    part.client.calls.clear()
    part.refresh_sources()  # nothing changed: nothing sent
    _store_sources(ctx, [])
    part.refresh_sources()
    assert part.client.calls == [("unsub", ("garage/events", "garage/tracked_object_update"))] and part.frigate == []
    ctx.engine.dispose()


def test_an_edit_by_another_instance_reaches_this_ones_intake_within_a_second(env, monkeypatch):
    """The intakes use the sources they read within the last SOURCES_TTL_S (not a database read per
    request); another instance's edit (the row written straight into the shared database here) is taken
    up once that has passed, and this instance's own edits apply at once."""
    import time as real_time

    from models.tables import RuntimeSetting
    from service import runtime_settings as rs

    settings, client, clock = env
    headers = as_admin(client)
    assert client.post("/api/v1/settings/sources", json=GATE, headers=headers).status_code in (200, 201)
    assert read(client, clock, "gate", "r1").status_code == 200  # own edit: at once
    ticks = [real_time.monotonic()]
    monkeypatch.setattr(rs.time, "monotonic", lambda: ticks[0])
    assert read(client, clock, "gate", "r2").status_code == 200  # caches the list with gate
    engine = make_engine(settings.db_url)
    with Session(engine) as db:  # another instance deletes every stored source
        row = db.get(RuntimeSetting, rs.SOURCES)
        row.value = {"sources": []}
        db.add(row)
        db.commit()
    engine.dispose()
    assert read(client, clock, "gate", "r3").status_code == 200  # still within the second
    ticks[0] += rs.SOURCES_TTL_S + 0.01
    assert read(client, clock, "gate", "r4").status_code == 404  # the other instance's edit applies
