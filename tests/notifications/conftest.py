"""Fixtures for the outbox and channel tests: a database with the outbox tables, TLS material, SMTP servers."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, SQLModel

import models.outbox  # registers the outbox tables in the metadata
import models.tables  # noqa: F401  (and the foundation's)
from models.db import make_engine
from tests.conftest import need
from tests.notifications.servers import SmtpServer


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    eng = make_engine(db_url)
    SQLModel.metadata.create_all(eng)
    yield eng
    eng.dispose()


@pytest.fixture
def factory(engine: Engine) -> Callable[[], Session]:
    return lambda: Session(engine)


@dataclass(frozen=True)
class TlsFiles:
    cert: str
    key: str


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A self-signed certificate valid for 127.0.0.1 and localhost (so verification can stay on)."""
    need(shutil.which("openssl") is not None, "openssl is needed for the TLS tests")
    d = tmp_path_factory.mktemp("tls")
    cert, key = d / "cert.pem", d / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return TlsFiles(str(cert), str(key))


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def evidence_dir(tmp_path: Path) -> Path:
    d = tmp_path / "evidence" / "cam1" / "2026-11-02"
    d.mkdir(parents=True)
    # A real (1x1) JPEG is not needed: the mail only carries the bytes with their type.
    (d / "r1-crop.jpg").write_bytes(b"\xff\xd8\xff\xe0 fake jpeg crop \xff\xd9")
    return tmp_path / "evidence"
