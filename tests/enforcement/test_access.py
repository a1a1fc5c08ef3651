"""Access points: a whitelisted car opens the barrier through a real local HTTP controller; anyone
else is logged as rejected; a controller that fails first is retried."""

import json
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlmodel import Session

from models.db import make_engine
from models.tables import ListEntry, Role
from service.enforcement_control import EnforcementComponent
from tests.foundation.helpers import add_user, client_for, login, make_settings


class Controller:
    def __init__(self, fail_first: int = 0):
        self.calls: list[dict] = []
        self.fail_first = fail_first
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                auth = self.headers.get("Authorization")
                outer.calls.append({"path": self.path, "body": body.decode(), "auth": auth})
                code = 503 if len(outer.calls) <= outer.fail_first else 200
                self.send_response(code)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/relay/1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture
def controller():
    c = Controller(fail_first=1)
    yield c
    c.close()


def test_gate(tmp_path, sqlite_url, clock, controller):
    output = {"url": controller.url, "body": '{{"plate": "{plate}", "bay": "{bay_id}"}}',
              "headers": {"Authorization": "Bearer relay-secret"}, "retries": 2}
    settings = make_settings(
        tmp_path, sqlite_url,
        components={"api": True, "scheduler": False, "cameras": False, "relay": False, "enforcement": False},
        cameras=[{"name": "gatecam", "url": "rtsp://127.0.0.1:1/x",
                  "zones": [{"bay_id": "GATE", "polygon": [[0, 0], [9, 0], [9, 9]]}]}],
        enforcement={"bays": [{"bay_id": "GATE", "kind": "access", "output": output}]},
    )
    client = client_for(settings, clock=clock)
    add_user(settings, "vic", Role.viewer)
    engine = make_engine(settings.db_url)
    with Session(engine) as db:
        db.add(ListEntry(list="white", plate="PERMIT1", owner="Staff", created_at=clock()))
        db.commit()
    engine.dispose()
    with client:
        comp = EnforcementComponent(client.app.state.ctx)
        comp.service = comp._build()
        from models.events import VehicleArrived

        for i, plate in enumerate(["PERMIT1", "STRANGER1", None]):
            comp.service.handle(VehicleArrived(at=clock() + timedelta(seconds=i), presence_id=f"p{i}", camera="gatecam",
                                               bay_id="GATE", plate=plate, confidence=0.9))
        login(client, "vic")
        log = client.get("/api/v1/access-log").json()
    assert [(e["plate"], e["accepted"], e["reason"]) for e in reversed(log)] == [
        ("PERMIT1", True, "whitelisted"),
        ("STRANGER1", False, "not on the whitelist"),
        (None, False, "plate unreadable"),
    ]
    assert len(controller.calls) == 2  # one 503, then the retry that opened the barrier
    assert json.loads(controller.calls[-1]["body"]) == {"plate": "PERMIT1", "bay": "GATE"}
    assert controller.calls[-1]["auth"] == "Bearer relay-secret"
    assert log[-1]["output_status"] == "200" and log[0]["output_status"] is None
