"""What one engine transaction costs by its size: CPU ms per message and statements per transaction.

    python bench/engine_batches.py --postgres postgresql+psycopg://postgres@127.0.0.1:55432/postgres \
        [--bays 500] [--messages 600] [--sizes 1,5,25,100]

Each message is what a new car at an occupied bay brings the engine (a Frigate or camera read): the
departure of the car before and the arrival of the new one. `EnforcementService.handle_many` applies
`--messages` of them in transactions of each size (the shard's batch: one transaction per wake-up under
light load, up to 50 events under a backlog), on a fresh database made for the run (dropped after).
Prints CPU ms of this process per message (the database's own CPU is not in it) and the statements per
transaction. A transaction's fixed cost is what the small sizes add over the large ones; compare runs on
one machine only, old and new code alternately (`python /path/to/other/checkout/bench/engine_batches.py`).
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import event, make_url, text

from enforcement.service import EnforcementService
from models.db import make_engine, upgrade
from models.events import VehicleArrived, VehicleDeparted
from models.settings import EnforcementSettings

T0 = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--postgres", required=True, help="admin URL; a database is created for the run and dropped")
    ap.add_argument("--bays", type=int, default=500)
    ap.add_argument("--messages", type=int, default=600, help="messages per transaction size")
    ap.add_argument("--sizes", default="1,5,25,100", help="messages per transaction, comma-separated")
    args = ap.parse_args()
    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    name = f"bw_engine_bench_{uuid.uuid4().hex[:8]}"
    admin = make_engine(args.postgres)
    with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(args.postgres).set(database=name).render_as_string(hide_password=False)
    try:
        run(url, args.bays, args.messages, sizes)
    finally:
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def run(url: str, n: int, messages: int, sizes: list[int]) -> None:
    upgrade(url)
    cfg = EnforcementSettings(
        rules={"idle_grace_min": 10, "idle_fee_per_min": "0.50", "warn_before_idle": False},
        bays=[{"bay_id": f"B{i}", "charge_point_id": f"CP{i}", "connector_id": 1} for i in range(n)],
    )
    svc = EnforcementService(make_engine(url), cfg, {"cam": [f"B{i}" for i in range(n)]}, lambda: T0)
    statements: collections.Counter[str] = collections.Counter()

    @event.listens_for(svc.engine, "before_cursor_execute")
    def _count(conn, cursor, statement, params, context, many) -> None:
        statements[statement.split()[0].upper()] += 1

    cars = 0

    def batch(k: int, at: datetime) -> list:
        nonlocal cars
        out = []
        for _ in range(k):
            bay, before = f"B{cars % n}", cars - n
            if before >= 0:
                out.append((VehicleDeparted(at=at, presence_id=f"p{before}", camera="cam", bay_id=bay,
                                            plate=f"P{before:06d}", first_seen=at - timedelta(minutes=5),
                                            last_seen=at), at))
            out.append((VehicleArrived(at=at, presence_id=f"p{cars}", camera="cam", bay_id=bay,
                                       plate=f"P{cars:06d}", confidence=0.97), at))
            cars += 1
        return out

    at = T0
    for _ in range(0, n, 50):  # every bay occupied first, as in a running car park
        svc.handle_many(batch(50, at))
    for size in sizes:
        statements.clear()
        at += timedelta(minutes=1)
        cpu, wall = time.process_time(), time.perf_counter()
        for _ in range(0, messages, size):
            svc.handle_many(batch(size, at))
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        print(f"{size:4d} messages per transaction: {1000 * cpu / messages:.3f} CPU ms per message "
              f"({1000 * wall / messages:.3f} ms wall), {sum(statements.values()) / (messages / size):.1f} "
              f"statements per transaction {dict(statements.most_common())}", flush=True)
    svc.engine.dispose()


if __name__ == "__main__":
    main()
