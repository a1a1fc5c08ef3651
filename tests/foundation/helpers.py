"""Helpers for tests that drive the real app through HTTP."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
from fastapi.testclient import TestClient
from sqlmodel import Session

from api.app import create_app
from api.routes.users import create_user
from baywarden.demo import free_port
from models.db import make_engine, upgrade
from models.settings import Settings, load_settings
from models.tables import Role, UserCreate

PASSWORD = "correct horse battery"

# A device token for every camera and charger, as an edge worker of a test site gets.
EDGE_TOKEN = {"name": "edge", "scopes": ["camera:*", "charger:*"]}


def make_settings(tmp_path: Path, db_url: str, **overrides: object) -> Settings:
    return load_settings(None, data_dir=str(tmp_path / "data"), database_url=db_url, **overrides)


def relay_settings(tmp_path: Path, db_url: str, upstream_url: str, **relay: object) -> Settings:
    """Settings with the API and the OCPP relay parts on, the relay in front of `upstream_url`."""
    return make_settings(
        tmp_path, db_url, port=free_port(),
        components={"api": True, "scheduler": False, "cameras": False, "relay": True},
        relay={"port": free_port(), "upstreams": [{"pattern": "*", "url": upstream_url}], **relay},
    )


def add_user(settings: Settings, username: str, role: Role, password: str = PASSWORD) -> None:
    engine = make_engine(settings.db_url)
    with Session(engine) as db:
        create_user(db, UserCreate(username=username, role=role, password=password), actor="test")
    engine.dispose()


def client_for(settings: Settings, clock=None, components=None) -> TestClient:
    upgrade(settings.db_url)
    kwargs = {"components": components if components is not None else []}
    if clock is not None:
        kwargs["clock"] = clock
    return TestClient(create_app(settings, **kwargs), follow_redirects=False)


@contextlib.contextmanager
def operator_app(settings: Settings, clock=None) -> Iterator[tuple[TestClient, Settings]]:
    """The app over `settings` (migrated) with users `op` (operator) and `view` (viewer), running."""
    client = client_for(settings, clock=clock)
    add_user(settings, "op", Role.operator)
    add_user(settings, "view", Role.viewer)
    with client:
        yield client, settings


def login(client: TestClient, username: str, password: str = PASSWORD) -> str:
    """Log in through the JSON API; return the CSRF token for unsafe requests."""
    r = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return r.json()["csrf_token"]


class LiveServer:
    """The real app on a real port in a thread (for SSE, edge workers and other real clients)."""

    def __init__(self, settings: Settings, **app_kw: object):
        self.settings = settings
        self.app_kw = {"components": [], **app_kw}
        self.server = None
        self.thread = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.settings.port}"

    def start(self) -> LiveServer:
        import threading
        import time

        import uvicorn

        config = uvicorn.Config(create_app(self.settings, **self.app_kw), host="127.0.0.1",
                                port=self.settings.port, log_config=None, lifespan="on")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 15
        while not self.server.started:
            assert time.monotonic() < deadline, "server did not start"
            assert self.thread.is_alive(), "server thread died"
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        if self.server is not None and not self.server.should_exit:
            self.server.should_exit = True
            self.thread.join(15)


def listen_alerts(url: str, want: int, got: list[dict], ready: threading.Event, username: str = "vic") -> None:
    """Follow the alert stream as a logged-in viewer until `want` alerts arrived (run it in a thread);
    `ready` is set once the stream answers."""
    with httpx.Client(base_url=url, timeout=30) as viewer:
        login(viewer, username)
        with viewer.stream("GET", "/api/v1/alerts/stream") as r:
            assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
            event = None
            for line in r.iter_lines():
                ready.set()
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and event == "alert":
                    got.append(json.loads(line[6:]))
                    if len(got) >= want:
                        return
