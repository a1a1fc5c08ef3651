"""Walking the event inbox in sequence order, once per instance rather than once per shard.

Every engine shard walks every sequence number (to see gaps), but the routing columns it walks are the
same for all shards. An instance holding eight shards used to read them eight times per wake-up, a
query each, whether or not the new events were a shard's own; `InboxIndex` reads them once and serves
every shard of the instance that is inside the range it holds. A shard behind that range (after a
takeover or a long stop) walks the database itself, as before.
"""

from __future__ import annotations

import bisect
import threading
import time
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select as sa_select
from sqlmodel import Session

from models.tables import StoredEvent

# A sequence gap younger than this may be a transaction still committing (PostgreSQL): wait for it.
GAP_GRACE = timedelta(seconds=5)
# Rows the index keeps (routing columns only: a few MB); a shard further behind walks the database.
KEEP = 20_000
# Without a wake-up (no NOTIFY, e.g. SQLite or a lost listener) the index reads again at most this often.
MIN_AGE_S = 0.1


def walk_inbox(db: Session, start: int, batch: int, now: datetime) -> tuple[list[Any], bool]:
    """The next inbox rows after `start` that may be applied now (seq, received_at, kind, bay_id,
    charge_point_id; up to `batch`), stopping before a sequence gap younger than GAP_GRACE: a lower
    number may still be committing. Also whether more may follow at once (`batch` rows returned).
    The routing ids come out of the JSON on the server: the payloads stay there."""
    t = StoredEvent.__table__  # type: ignore[attr-defined]
    rows = list(db.execute(
        sa_select(t.c.seq, t.c.received_at, t.c.kind,
                  t.c.payload["bay_id"].as_string().label("bay_id"),
                  t.c.payload["charge_point_id"].as_string().label("charge_point_id"))
        .where(t.c.seq > start).order_by(t.c.seq).limit(batch)))
    ready: list[Any] = []
    last = start
    for row in rows:
        if row.seq != last + 1 and row.received_at > now - GAP_GRACE:
            break
        ready.append(row)
        last = row.seq
    return ready, len(ready) == batch


class InboxIndex:
    """The walked inbox rows after `base`, read for all of an instance's shards (thread-safe).

    The rows held are exactly what `walk_inbox` from `base` would return, read in steps: each step
    starts where the last stopped (at its end, or before a young gap, which the next step looks at
    again). A shard asks for the rows after its position; the index reads the database again when it
    holds nothing after that position and its last read was full (more rows are there at once), or when
    it holds less than the shard's batch and there was a wake-up since its last read (another process or
    thread committed events) or that read is older than MIN_AGE_S. A shard ahead of what is held (a
    shard that walked on its own past it) starts the index again at its position."""

    def __init__(self, keep: int = KEEP) -> None:
        self.keep = keep
        self._lock = threading.Lock()
        self._rows: list[Any] = []
        self._seqs: list[int] = []
        self._base: int | None = None  # rows after this are held; None: nothing read yet
        self._end = 0  # the last row walked (or `base`)
        self._full = False  # the last read was full: more rows may be there at once
        self._gen = 0  # wake-ups seen (`wake`)
        self._read_gen = -1
        self._read_at = 0.0
        self.reads = 0  # database reads (tests, diagnostics)

    def wake(self) -> None:
        """New events were committed somewhere: the next shard to ask reads again."""
        with self._lock:
            self._gen += 1

    def rows_after(self, db: Session, start: int, batch: int, now: datetime) -> tuple[list[Any], bool]:
        """Up to `batch` walked rows after `start`, and whether more may follow at once (see `walk_inbox`)."""
        with self._lock:
            if self._base is None or start > self._end:
                self._reset(start)
            if start >= self._base:  # type: ignore[operator]  # set by _reset
                i = bisect.bisect_right(self._seqs, start)
                held = len(self._rows) - i
                # Read again when this shard has nothing left and the last read was full (more rows are
                # there now), or when it has less than a batch and something was committed since (a
                # wake-up) or the last read is old. Reading on whenever any shard is short of a full
                # batch ran the index far ahead of the slower shards under a backlog, which then fell
                # behind what it keeps and walked on their own (bench/fleet.py departures 566-621 ->
                # 239-398 events/s).
                if (held == 0 and self._full) or (held < batch and not self._fresh()):
                    self._read(db, batch, now)
                    i = bisect.bisect_right(self._seqs, start)
                if start >= self._base:  # type: ignore[operator]  # not trimmed away by that read
                    rows = self._rows[i:i + batch]
                    return rows, len(rows) == batch or (i + len(rows) == len(self._rows) and self._full)
        return walk_inbox(db, start, batch, now)  # behind what is held: this shard walks on its own

    def _fresh(self) -> bool:
        return self._gen == self._read_gen and time.monotonic() - self._read_at < MIN_AGE_S

    def _reset(self, start: int) -> None:
        self._rows, self._seqs = [], []
        self._base = self._end = start
        self._full = False

    def _read(self, db: Session, batch: int, now: datetime) -> None:
        gen = self._gen
        rows, self._full = walk_inbox(db, self._end, batch, now)
        self.reads += 1
        self._read_gen, self._read_at = gen, time.monotonic()
        if rows:
            self._rows.extend(rows)
            self._seqs.extend(r.seq for r in rows)
            self._end = rows[-1].seq
        extra = len(self._rows) - self.keep
        if extra > 0:
            self._base = self._seqs[extra - 1]
            del self._rows[:extra], self._seqs[:extra]

