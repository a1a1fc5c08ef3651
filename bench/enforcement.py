"""Enforcement throughput and timeliness, on SQLite and (if given) PostgreSQL.

    python bench/enforcement.py [--bays 1000] [--events 3000] [--postgres URL]

Prints events/s through route + decide + apply (one transaction per event, the real service), and
the delay from a penalty falling due to it being stored by the scheduled sweep (p50/p95), with the
engine thread and the sweep running as in production (sweep every 2 s).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlmodel import Session, select

from bench.scratch import scratch_database, scratch_dir
from enforcement.service import EnforcementService
from models.db import make_engine, upgrade
from models.events import ChargingIdle, TransactionStarted, VehicleArrived, VehicleDeparted
from models.settings import EnforcementSettings
from models.tables import Penalty


def settings(bays: int, grace_min: int = 10) -> EnforcementSettings:
    return EnforcementSettings(
        rules={"idle_grace_min": grace_min, "idle_fee_per_min": "0.50", "warn_before_idle": False},
        bays=[{"bay_id": f"B{i}", "charge_point_id": f"CP{i // 2}", "connector_id": i % 2 + 1} for i in range(bays)],
    )


def visit_events(i: int, t0: datetime) -> list:
    bay, cp, conn = f"B{i}", f"CP{i // 2}", i % 2 + 1
    return [
        VehicleArrived(at=t0, presence_id=f"p{i}", camera="cam", bay_id=bay, plate=f"AB{i:04d}C", confidence=0.97),
        TransactionStarted(at=t0 + timedelta(seconds=30), charge_point_id=cp, transaction_id=f"T{i}",
                           connector_id=conn),
        ChargingIdle(at=t0 + timedelta(minutes=20), charge_point_id=cp, transaction_id=f"T{i}", connector_id=conn),
        VehicleDeparted(at=t0 + timedelta(minutes=50), presence_id=f"p{i}", camera="cam", bay_id=bay,
                        plate=f"AB{i:04d}C", first_seen=t0, last_seen=t0 + timedelta(minutes=49)),
    ]


def throughput(url: str, bays: int, events: int) -> float:
    upgrade(url)
    engine = make_engine(url)
    t0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
    svc = EnforcementService(engine, settings(bays), {"cam": [f"B{i}" for i in range(bays)]}, lambda: t0)
    feed = [ev for i in range(events // 4) for ev in visit_events(i % bays, t0 + timedelta(hours=2 * (i // bays)))]
    start = time.perf_counter()
    for ev in feed:
        svc.handle(ev, now=ev.at + timedelta(seconds=1))
    elapsed = time.perf_counter() - start
    engine.dispose()
    return len(feed) / elapsed


def due_delay(url: str, bays: int, visits: int, data_dir: Path) -> list[float]:
    """Real clock: idle grace ends in the near future; the production sweep must raise each penalty."""
    from models.settings import load_settings
    from service.build import build_context
    from service.enforcement_control import EnforcementComponent

    upgrade(url)
    s = load_settings(None, database_url=url, enforcement=settings(bays, grace_min=1).model_dump(mode="json"),
                      data_dir=str(data_dir))
    ctx = build_context(s, components=[])
    comp = EnforcementComponent(ctx)
    comp.service = comp._build()
    now = datetime.now(UTC)
    # Cars idle from slightly different moments, so penalties fall due spread over ~40 s.
    for i in range(visits):
        t0 = now - timedelta(seconds=60 - (i * 40 / visits))
        for ev in visit_events(i, t0)[:3]:
            shifted = ev.model_copy(update={"at": t0 if ev.kind != "charging_idle" else t0 + timedelta(seconds=1)})
            comp.service.handle(shifted, now=datetime.now(UTC))
    end = time.monotonic() + 50
    while time.monotonic() < end:  # the scheduler's job: a sweep every 2 s
        comp.service.sweep(datetime.now(UTC))
        time.sleep(2)
    with Session(ctx.engine) as db:
        rows = list(db.exec(select(Penalty)))
    ctx.engine.dispose()
    return [(p.created_at - p.started_at).total_seconds() for p in rows]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bays", type=int, default=1000)
    ap.add_argument("--events", type=int, default=3000)
    ap.add_argument("--visits", type=int, default=200, help="penalties falling due in the delay test")
    ap.add_argument("--postgres", help="admin URL, e.g. postgresql+psycopg://postgres@127.0.0.1:55432/postgres")
    args = ap.parse_args()
    targets = ["sqlite"] + (["postgresql"] if args.postgres else [])
    for name in targets:
        with ExitStack() as scratch:  # each run's databases and folder go when it ends
            work = scratch.enter_context(scratch_dir("bw-enforcement-"))
            if name == "sqlite":
                urls = [f"sqlite:///{work / 'throughput.db'}", f"sqlite:///{work / 'due.db'}"]
            else:
                urls = [scratch.enter_context(scratch_database(args.postgres, "bw_bench")) for _ in range(2)]
            rate = throughput(urls[0], args.bays, args.events)
            delays = sorted(due_delay(urls[1], args.bays, args.visits, work))
        p95 = delays[int(0.95 * (len(delays) - 1))] if delays else float("nan")
        print(f"{name:<11} bays={args.bays} events/s={rate:7.1f}  due->stored: n={len(delays)} "
              f"p50={statistics.median(delays) if delays else float('nan'):.2f}s p95={p95:.2f}s")


if __name__ == "__main__":
    main()
