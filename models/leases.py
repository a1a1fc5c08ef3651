"""Leadership for a fleet of instances on one PostgreSQL: leases with fencing tokens.

Singleton work (each engine shard, retention) belongs to whoever holds its lease, a row in `leases`
taken and renewed with the database's own clock (`clock_timestamp()`), so instances never compare
their clocks with each other. A lease lives `ttl_s` past its last renewal; an instance that is killed,
hangs or loses its network stops renewing, and another takes the work over once it expired.

Fencing: the work's transactions call `fence()` before they commit. It reads the lease row with
`FOR SHARE` and fails unless this instance still holds it with the same token and it has not expired.
The shared row lock is held until that transaction ends, so a rival's takeover (an UPDATE of the
row) waits for the commit; and once the lease expired, the check fails and the transaction rolls
back. Either way an instance that lost its lease never commits work after the new owner started.

SQLite is one process by construction: `SoloLeases` holds everything, and the service says so at start.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
import zlib
from datetime import UTC, datetime
from typing import Protocol

from sqlalchemy import Engine, text
from sqlmodel import Session

log = logging.getLogger(__name__)


class LeaseLost(Exception):
    """This instance no longer holds the lease its work needs; the transaction must not commit."""


def shard_of(site: str, shards: int) -> int:
    """The engine shard of a site: stable across processes, versions and machines (CRC-32, not hash())."""
    return zlib.crc32(site.encode()) % shards if shards > 1 else 0


def instance_id(node: str | None = None) -> str:
    """A name for this process in the fleet: node, pid and a random suffix (a restarted pid is new)."""
    return f"{node or socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"[:128]


class LeaseBook(Protocol):
    owner: str

    def acquire(self, name: str) -> int | None: ...
    def holds(self, name: str) -> int | None: ...
    def release(self, name: str) -> None: ...
    def release_all(self) -> None: ...
    def fence(self, db: Session, name: str, token: int) -> None: ...


class SoloLeases:
    """One instance on SQLite: it holds every lease, fencing has nothing to check."""

    def __init__(self, owner: str | None = None) -> None:
        self.owner = owner or instance_id()

    def acquire(self, name: str) -> int | None:
        return 1

    def holds(self, name: str) -> int | None:
        return 1

    def release(self, name: str) -> None:
        return None

    def release_all(self) -> None:
        return None

    def fence(self, db: Session, name: str, token: int) -> None:
        return None


_ACQUIRE = text(
    """
    INSERT INTO leases (name, owner, token, acquired_at, renewed_at, expires_at)
    VALUES (:name, :owner, 1, clock_timestamp(), clock_timestamp(), clock_timestamp() + make_interval(secs => :ttl))
    ON CONFLICT (name) DO UPDATE SET
        token = CASE WHEN leases.owner = EXCLUDED.owner AND leases.expires_at > clock_timestamp()
                     THEN leases.token ELSE leases.token + 1 END,
        acquired_at = CASE WHEN leases.owner = EXCLUDED.owner AND leases.expires_at > clock_timestamp()
                           THEN leases.acquired_at ELSE clock_timestamp() END,
        owner = EXCLUDED.owner,
        renewed_at = clock_timestamp(),
        expires_at = clock_timestamp() + make_interval(secs => :ttl)
    WHERE leases.owner = EXCLUDED.owner OR leases.expires_at <= clock_timestamp()
    RETURNING token
    """
)
_FENCE = text(
    "SELECT 1 FROM leases WHERE name = :name AND owner = :owner AND token = :token "
    "AND expires_at > clock_timestamp() FOR SHARE"
)


class PgLeases:
    """Leases on PostgreSQL for one instance (`owner`), each valid `ttl_s` past its last renewal.

    `acquire` takes or renews one lease and returns its token (None: someone else holds it). The
    caller renews what it holds at least every ttl/3 (`LeaseKeeper`). `holds` answers from memory:
    a lease counts as held only until its local deadline (monotonic clock, started *before* the
    renewal was sent), so a partitioned instance stops by itself; `fence` is the real guarantee."""

    def __init__(self, engine: Engine, owner: str, ttl_s: float) -> None:
        self.engine = engine
        self.owner = owner
        self.ttl_s = float(ttl_s)
        self._held: dict[str, tuple[int, float]] = {}  # name -> (token, monotonic deadline)
        self._lock = threading.Lock()

    def acquire(self, name: str) -> int | None:
        sent = time.monotonic()
        try:
            with self.engine.begin() as conn:
                row = conn.execute(_ACQUIRE, {"name": name, "owner": self.owner, "ttl": self.ttl_s}).first()
        except Exception as exc:  # the database is away: what we held lapses at its deadline
            log.debug("lease %s not renewed: %s", name, exc)
            return self.holds(name)
        with self._lock:
            if row is None:
                self._held.pop(name, None)
                return None
            token = int(row[0])
            previous = self._held.get(name)
            self._held[name] = (token, sent + self.ttl_s)
        if previous is None or previous[0] != token:
            log.info("lease %s taken (token %d)", name, token)
        return token

    def holds(self, name: str) -> int | None:
        with self._lock:
            held = self._held.get(name)
            if held is None:
                return None
            if time.monotonic() >= held[1]:
                del self._held[name]
                log.warning("lease %s lapsed (not renewed in %.0f s)", name, self.ttl_s)
                return None
            return held[0]

    def release(self, name: str) -> None:
        with self._lock:
            held = self._held.pop(name, None)
        if held is None:
            return
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    text("UPDATE leases SET expires_at = clock_timestamp() "
                         "WHERE name = :n AND owner = :o AND token = :t"),
                    {"n": name, "o": self.owner, "t": held[0]},
                )
        except Exception as exc:
            log.warning("lease %s not released (it expires by itself): %s", name, exc)

    def release_all(self) -> None:
        for name in list(self._held):
            self.release(name)

    def fence(self, db: Session, name: str, token: int) -> None:
        ok = db.execute(_FENCE, {"name": name, "owner": self.owner, "token": token}).first()
        if ok is None:
            with self._lock:
                if self._held.get(name, (None,))[0] == token:
                    del self._held[name]
            raise LeaseLost(f"lease {name} (token {token}) is no longer held by {self.owner}")


def database_clock_skew(engine: Engine) -> float:
    """Seconds this machine's clock is ahead of the database's (negative: behind), round trip halved."""
    before = time.time()
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            db_now = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
        else:
            return 0.0  # SQLite's clock is this machine's
    after = time.time()
    local = datetime.fromtimestamp((before + after) / 2, UTC)
    return (local - db_now).total_seconds()
