"""Start-up checks and the `run` command's body: config -> port -> database -> migrations -> serve."""

from __future__ import annotations

import logging
import os
import secrets
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, func, select

from models.db import check_connection, make_engine, redact_db_url, upgrade
from models.settings import Settings
from models.tables import Role, User, UserCreate

log = logging.getLogger("baywarden")


class StartupError(Exception):
    """A problem that stops the service before it starts, phrased as one line for a person.

    `code` is the exit status: 2 for a configuration the service can never start with (as `config
    validate` exits), 1 for the world around it (a port in use, an unreachable database)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def prepare_database(settings: Settings, migrate: bool = True) -> None:
    """Reach the database and bring its schema up to date, or raise StartupError."""
    url = settings.db_url
    engine = make_engine(url)
    try:
        check_connection(engine)
    except (SQLAlchemyError, OSError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        raise StartupError(f"cannot reach the database {redact_db_url(url)}: {reason}") from None
    finally:
        engine.dispose()
    if migrate:
        try:
            with startup_lock(url):
                upgrade(url)
        except SQLAlchemyError as exc:
            raise StartupError(f"database migration failed on {redact_db_url(url)}: {exc}") from None


# pg_advisory_lock key for start-up work (migrations, the first admin): any constant all instances share.
STARTUP_LOCK_KEY = 0x0BA7_5A2D


@contextmanager
def startup_lock(url: str) -> Iterator[None]:
    """On PostgreSQL: one instance at a time migrates and creates the first admin, the others wait and
    then find the work done. The lock lives on its own connection and goes with it if we die."""
    if not url.startswith("postgresql"):
        yield
        return
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": STARTUP_LOCK_KEY})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": STARTUP_LOCK_KEY})
                conn.commit()
    finally:
        engine.dispose()


def check_fleet(settings: Settings) -> None:
    """PostgreSQL: refuse to start beside a live instance configured differently, or with a clock far
    from the database's. SQLite: say that this is a single instance."""
    if not settings.db_url.startswith("postgresql"):
        log.info("database is SQLite: single instance (several instances need PostgreSQL, see README 'Fleet')")
        return
    from models.leases import database_clock_skew
    from service.fleet import check_fleet_agrees

    engine = make_engine(settings.db_url)
    try:
        problem = check_fleet_agrees(engine, settings, settings.ha.takeover_s * 0.6)
        skew = database_clock_skew(engine)
    finally:
        engine.dispose()
    if problem:
        raise StartupError(problem, code=2)
    if abs(skew) > settings.ha.max_clock_skew_s:
        log.error("this machine's clock is %.1f s off the database's (ha.max_clock_skew_s %.1f): this instance "
                  "serves requests but leads no engine shard or job until the clock is fixed",
                  skew, settings.ha.max_clock_skew_s)


def ensure_first_admin(settings: Settings) -> str | None:
    """On an empty database create `admin` with a random password saved to a 0600 file.

    Returns the file path when an account was created, else None.
    """
    from api.routes.users import create_user

    engine = make_engine(settings.db_url)
    try:
        with startup_lock(settings.db_url), Session(engine) as db:
            if db.exec(select(func.count()).select_from(User)).one():
                return None
            password = secrets.token_urlsafe(15)
            create_user(db, UserCreate(username="admin", role=Role.admin, password=password), actor="system")
    finally:
        engine.dispose()
    path = Path(settings.data_dir) / "initial-admin-password.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    return str(path)


def secure_data_dir(settings: Settings) -> None:
    """Plates, evidence images and secrets are personal data: nobody but the service's user (and its
    group, for backups) may read them. New files get 0640 and folders 0750 (umask 027); the data folder
    is 0750, the SQLite database and its journals 0600, whatever they were before."""
    os.umask(0o027)
    data = Path(settings.data_dir)
    data.mkdir(parents=True, exist_ok=True)
    data.chmod(0o750)
    for folder in (settings.evidence_dir,):
        if Path(folder).is_dir():
            Path(folder).chmod(0o750)
    if settings.db_url.startswith("sqlite"):
        db_file = make_url(settings.db_url).database
        if db_file and db_file != ":memory:":
            for suffix in ("", "-wal", "-shm"):
                p = Path(db_file + suffix)
                if p.is_file():
                    p.chmod(0o600)


def proxy_options(settings: Settings) -> dict[str, object]:
    """uvicorn believes X-Forwarded-For from 127.0.0.1 by default, so anyone on the host could choose
    the address the login lockout counts: only the configured `security.trusted_proxies` are believed."""
    trusted = settings.security.trusted_proxies
    return {"proxy_headers": bool(trusted), "forwarded_allow_ips": ",".join(trusted) if trusted else ""}


def serve(settings: Settings, migrate: bool = True) -> None:
    """Run the whole service in this process until interrupted."""
    import uvicorn

    from api.app import create_app
    from enforcement.service import check_rules

    problems = check_rules(settings.enforcement)
    if problems:
        raise StartupError("; ".join(problems), code=2)
    # Every port before anything is created: a refused start leaves no data folder, database or admin.
    check_port_free(settings.host, settings.port)
    if settings.components.relay:
        check_port_free(settings.relay.host, settings.relay.port)
    secure_data_dir(settings)
    prepare_database(settings, migrate=migrate)
    secure_data_dir(settings)  # again: migrating may just have created the database file
    check_fleet(settings)
    created = ensure_first_admin(settings)
    if created:
        log.warning("created user 'admin'; its password is in %s (change it after logging in)", created)
    app = create_app(settings, freeze_heap=True)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_config=None, access_log=False, lifespan="on",
        loop="uvloop" if _has_uvloop() else "asyncio",
        **proxy_options(settings),
    )
    log.info("Baywarden listening on http://%s:%d", settings.host, settings.port)
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        raise StartupError(f"the HTTP server on {settings.host}:{settings.port} did not start (see log above)")


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True
