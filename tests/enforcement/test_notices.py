"""From charger and camera events to a driver's inbox: the warning and the notice go out once each
through a real SMTP server, the notice's signed link opens the driver page, and a dispute is taken."""

import re
from datetime import timedelta

import pytest
from sqlmodel import Session, select

from models.db import make_engine
from models.tables import Penalty, Role, Vehicle
from service.enforcement_control import EnforcementComponent
from service.notify import OutboxDispatcher
from tests.foundation.helpers import EDGE_TOKEN, add_user, client_for, login, make_settings
from tests.notifications.servers import SmtpServer


@pytest.fixture
def smtp():
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def env(tmp_path, sqlite_url, clock, smtp):
    yield from _env(tmp_path, sqlite_url, clock, smtp)


def _env(tmp_path, sqlite_url, clock, smtp, **extra):
    settings = make_settings(
        tmp_path, sqlite_url,
        components={"api": True, "scheduler": False, "cameras": False, "relay": False, "enforcement": False},
        cameras=[{"name": "gate", "url": "rtsp://127.0.0.1:1/x", "zones": [{"bay_id": "B1",
                                                                            "polygon": [[0, 0], [9, 0], [9, 9]]}]}],
        enforcement={"rules": {"idle_grace_min": 10, "idle_fee_per_min": "0.40", "idle_fee_cap": "20.00",
                               "schedule": {"timezone": "Europe/Berlin"}},  # the site's zone, not UTC
                     "bays": [{"bay_id": "B1", "charge_point_id": "CP1", "connector_id": 1}]},
        mail={"host": "127.0.0.1", "port": smtp.port, "security": "none", "from_address": "bays@example.org"},
        site_name="Depot <North>",
        **extra,
    )
    client = client_for(settings, clock=clock)
    add_user(settings, "root", Role.admin)
    engine = make_engine(settings.db_url)
    with Session(engine) as db:
        db.add(Vehicle(plate="AB123CD", owner_name="Ann", email="ann@example.org", created_at=clock()))
        db.commit()
    engine.dispose()
    with client:
        csrf = login(client, "root")
        token = client.post("/api/v1/tokens", json=EDGE_TOKEN, headers={"X-CSRF-Token": csrf}).json()["token"]
        ctx = client.app.state.ctx
        comp = EnforcementComponent(ctx, notify=ctx.notify)
        comp.service = comp._build()
        yield settings, client, clock, comp, OutboxDispatcher(ctx), {"Authorization": f"Bearer {token}"}


def ev(eid, kind, at, **kw):
    return {"event_id": f"event-{eid}", "event": {"kind": kind, "at": at.isoformat(), **kw}}


def idle_until_warned(env, smtp):
    """A car arrives, charges and goes idle; 21 minutes later its driver has the grace warning."""
    settings, client, clock, comp, dispatch, auth = env
    t0 = clock()
    tx = {"charge_point_id": "CP1", "transaction_id": "T9", "connector_id": 1}
    events = [ev("a1", "vehicle_arrived", t0, presence_id="p1", camera="gate", bay_id="B1", plate="AB123CD",
                 confidence=0.995),  # above the default review threshold (0.99)
              ev("c1", "transaction_started", t0 + timedelta(minutes=1), **tx),
              ev("c2", "charging_idle", t0 + timedelta(minutes=20), reason="SuspendedEV", **tx)]
    assert client.post("/api/v1/events", json={"events": events}, headers=auth).status_code == 200
    clock.advance(minutes=21)
    comp.drain()
    dispatch()
    (warning,) = smtp.handler.messages
    return t0, warning


def leave_after_an_hour(env, t0):
    """The idle car stays 40 more minutes (the fee runs), then leaves."""
    settings, client, clock, comp, dispatch, auth = env
    clock.advance(minutes=40)
    comp.service.sweep()
    depart = ev("d1", "vehicle_departed", t0 + timedelta(minutes=61), presence_id="p1", camera="gate", bay_id="B1",
                plate="AB123CD", first_seen=t0.isoformat(), last_seen=(t0 + timedelta(minutes=60)).isoformat())
    client.post("/api/v1/events", json={"events": [depart]}, headers=auth)
    comp.drain()


def test_warning_and_notice_each_sent_once_and_driver_page_works(env, smtp):
    settings, client, clock, comp, dispatch, auth = env
    t0, warning = idle_until_warned(env, smtp)
    assert warning.rcpt_tos == ["ann@example.org"] and "AB123CD" in warning.message.get_body(("plain",)).get_content()
    # Times in the site's zone, to the second, no offsets or microseconds; the countdown agrees with them.
    local = r"\d{1,2} [A-Z][a-z]{2} \d{4}, \d\d:\d\d:\d\d CES?T"
    said = warning.message.get_body(("plain",)).get_content()
    assert re.search(rf"It ends at {local} \(in 9 minutes\)\.", said) and "+00:00" not in said
    leave_after_an_hour(env, t0)
    for _ in range(3):  # dispatching again sends nothing twice
        dispatch()
    assert len(smtp.handler.messages) == 2
    notice = smtp.handler.messages[1].message
    text = notice.get_body(("plain",)).get_content()
    assert "12.00" in text and "EUR" in text  # 30 idle minutes after the grace at 0.40
    assert re.search(rf"From:   {local}\r?\n", text) and re.search(rf"To:     {local}\r?\n", text)
    assert re.search(r"Billed: 30 minutes\r?\n", text) and "+00:00" not in text
    html = notice.get_body(("html",)).get_content()
    assert "Depot &lt;North&gt;" in html and "<North>" not in html
    link = re.search(r"https?://\S+/notice/[\w.\-]+", text).group(0)
    path = link.split("://", 1)[1].split("/", 1)[1]
    client.cookies.clear()  # the driver is nobody's operator
    page = client.get(f"/{path}")
    assert page.status_code == 200 and "12.00" in page.text and "AB123CD" in page.text
    assert re.search(local, page.text) and "+00:00</" not in page.text
    # Plain words, not OCPP's: the idle event's SuspendedEV reads as the car having stopped taking power.
    assert "SuspendedEV" not in page.text and "charging finished (the car stopped taking power)" in page.text
    assert client.get(f"/{path}x").status_code == 404  # a forged link
    r = client.post(f"/{path}/dispute", data={"reason": "I was <b>still charging</b>"})
    assert r.status_code == 303
    engine = make_engine(settings.db_url)
    with Session(engine) as db:
        (p,) = db.exec(select(Penalty)).all()
    engine.dispose()
    assert p.state == "disputed" and p.note == "I was <b>still charging</b>"
    shown = client.get(f"/{path}").text
    assert "<b>still" not in shown  # escaped wherever it is shown
    # The link expires with the configured lifetime.
    clock.advance(days=settings.notifications.driver_link_days + 1)
    assert client.get(f"/{path}").status_code == 404


def test_test_email_button(env, smtp):
    settings, client, clock, comp, dispatch, auth = env
    csrf = login(client, "root")
    r = client.post("/api/v1/settings/test-email", json={"to": "ops@example.org"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 202
    dispatch()
    (got,) = smtp.handler.messages
    assert got.rcpt_tos == ["ops@example.org"]
    assert client.get("/api/v1/outbox", params={"state": "sent"}).json()[0]["id"] == r.json()["id"]


def test_notices_in_the_sites_language(tmp_path, sqlite_url, clock, smtp):
    # site.language "de": the e-mails, their subjects and the driver page speak German, times as Germans
    # write them, in the site's zone.
    settings, client, clock, comp, dispatch, auth = next(_env(tmp_path, sqlite_url, clock, smtp,
                                                              site={"language": "de"}))
    env = (settings, client, clock, comp, dispatch, auth)
    t0, warning = idle_until_warned(env, smtp)
    local = r"\d{1,2}\.\d{1,2}\.\d{4}, \d\d:\d\d:\d\d CES?T"
    assert warning.message["Subject"] == "Laden an Stellplatz B1 beendet: bitte fahren Sie Ihr Fahrzeug weg"
    said = warning.message.get_body(("plain",)).get_content()
    assert re.search(rf"Sie endet am {local} \(in 9 Minuten\)\.", said), said
    assert 'lang="de"' in warning.message.get_body(("html",)).get_content()
    leave_after_an_hour(env, t0)
    dispatch()
    notice = smtp.handler.messages[1].message
    assert notice["Subject"].startswith("Gebührenbescheid für AB123CD")
    text = notice.get_body(("plain",)).get_content()
    assert re.search(rf"Von: +{local}\r?\n", text) and re.search(r"Berechnet: 30 Minuten\r?\n", text)
    assert "Standgebühr: das Fahrzeug blieb" in text and "Idle fee" not in text
    link = re.search(r"https?://\S+/notice/[\w.\-]+", text).group(0)
    client.cookies.clear()
    page = client.get("/" + link.split("://", 1)[1].split("/", 1)[1]).text
    assert '<html lang="de">' in page and "Parkhinweis" in page and "Widerspruch senden" in page
    assert "Laden beendet (das Fahrzeug nimmt keinen Strom mehr auf)" in page and re.search(local, page)
    assert "Bescheid ausgestellt" in page
