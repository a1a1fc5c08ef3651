"""Helpers for tests that drive the real app through HTTP."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from sqlmodel import Session

from api.app import create_app
from api.routes.users import create_user
from models.db import make_engine, upgrade
from models.settings import Settings, load_settings
from models.tables import Role, UserCreate

PASSWORD = "correct horse battery"


def make_settings(tmp_path: Path, db_url: str, **overrides: object) -> Settings:
    return load_settings(None, data_dir=str(tmp_path / "data"), database_url=db_url, **overrides)


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


def login(client: TestClient, username: str, password: str = PASSWORD) -> str:
    """Log in through the JSON API; return the CSRF token for unsafe requests."""
    r = client.post("/api/v1/auth/login", json={"username": username, "password": password})
    assert r.status_code == 200, r.text
    return r.json()["csrf_token"]
