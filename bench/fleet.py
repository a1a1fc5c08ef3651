"""The sharded engine as a fleet: 1, 2 and 4 engine processes on one PostgreSQL.

    python bench/fleet.py --postgres postgresql+psycopg://postgres@127.0.0.1:55432/postgres \
        [--bays 10000 --sites 200 --shards 8 --instances 1,2,4 --rate 300 --seconds 10 --kills 3]
        [--vehicles 10000 --list-entries 2000]

For each instance count, on a fresh database with `--bays` bays spread over `--sites` sites:
- throughput: one stored arrival per bay, then the engines start; events/s from the first decision to
  the last (every shard's cursor at the head);
- latency: departures stored at `--rate` per second for `--seconds`; p50/p95 from an event being
  stored to its bay's state being written (`received_at` -> `bay_states.updated_at`);
- departures: the other bays' cars leave at once (one commit); events/s as above, each departure
  finalising the penalty its hour-long stay raised (`penalties_finalised` counts them);
- takeover (largest instance count): SIGKILL of the instance leading the most shards, `--kills`
  times; seconds until every shard is led again (target p95 <= ha.takeover_s, 10 s by default).
Each engine process is `baywarden`'s own lease keeper and sharded engine (`service.fleet`,
`service.enforcement_control`), nothing else. The machine's cores are shared by all processes and
PostgreSQL: compare the rows with each other, not with another machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, func, text
from sqlmodel import Session, select

from bench.scratch import scratch_database, scratch_dir
from models.db import upgrade


def bays_config(bays: int, sites: int) -> dict:
    return {
        "rules": {"idle_grace_min": 10, "idle_fee_per_min": "0.50", "warn_before_idle": False},
        "bays": [{"bay_id": f"B{i}", "site": f"site-{i % sites}", "charge_point_id": f"CP{i}", "connector_id": 1}
                 for i in range(bays)],
    }


def worker(url: str, data_dir: str, bays: int, sites: int, shards: int, takeover_s: float) -> None:
    """One engine instance: lease keeper + sharded engine, until SIGTERM/SIGKILL."""
    from models.settings import load_settings
    from service.build import build_context
    from service.enforcement_control import EnforcementComponent
    from service.fleet import LeaseKeeper

    s = load_settings(None, database_url=url, data_dir=data_dir, enforcement=bays_config(bays, sites),
                      ha={"shards": shards, "takeover_s": takeover_s}, log_level="WARNING")
    ctx = build_context(s, components=[])
    keeper = LeaseKeeper(ctx, shards, roles=["enforcement"])
    engine_part = EnforcementComponent(ctx, poll_s=0.1)

    async def main() -> None:
        await keeper.start()
        await engine_part.start()
        print("ready", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await engine_part.stop()
        await keeper.stop()

    asyncio.run(main())


def store(url: str, events: list) -> None:
    from models.events import EventEnvelope
    from models.eventstore import ingest

    eng = create_engine(url)
    with Session(eng) as db:
        for ev in events:
            ingest(db, EventEnvelope(event_id=uuid.uuid4().hex, event=ev), source="bench", now=datetime.now(UTC))
        db.commit()
    eng.dispose()


def seed_lists(url: str, vehicles: int, entries: int) -> None:
    """A site's registry: `vehicles` registered plates and `entries` white/black list entries (plates
    that none of the bench's cars carries, so every read is compared with all of them)."""
    if not vehicles and not entries:
        return
    eng = create_engine(url)
    now = datetime.now(UTC)
    with eng.begin() as conn:
        if vehicles:
            conn.execute(text("INSERT INTO vehicles (plate, owner_name, created_at) VALUES (:p, '', :t)"),
                         [{"p": f"V{i:07d}", "t": now} for i in range(vehicles)])
        if entries:
            conn.execute(text("INSERT INTO list_entries (list, plate, owner, reason, priority, created_by, created_at) "
                              "VALUES (:l, :p, '', '', 5, '', :t)"),
                         [{"l": "white" if i % 2 else "black", "p": f"L{i:07d}", "t": now} for i in range(entries)])
    eng.dispose()


def start_workers(url: str, n: int, args: argparse.Namespace, work: Path) -> list[subprocess.Popen]:
    procs = []
    for _ in range(n):
        data_dir = tempfile.mkdtemp(dir=work)  # inside the run's scratch folder, which goes with it
        p = subprocess.Popen([sys.executable, __file__, "--worker", url, "--data-dir", data_dir, "--bays",
                              str(args.bays), "--sites", str(args.sites), "--shards", str(args.shards),
                              "--takeover", str(args.takeover)],
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready", "engine process did not start"
        procs.append(p)
    return procs


def all_applied(url: str, shards: int) -> bool:
    from models.tables import ConsumerCursor, StoredEvent

    eng = create_engine(url)
    with Session(eng) as db:
        head = db.exec(select(func.max(StoredEvent.seq))).one() or 0
        seqs = [c.seq for c in db.exec(select(ConsumerCursor)) if "of" in c.name or shards == 1]
    eng.dispose()
    return len(seqs) == shards and min(seqs) >= head


def wait_applied(url: str, shards: int, what: str, limit_s: float = 600) -> None:
    deadline = time.monotonic() + limit_s
    while not all_applied(url, shards):
        assert time.monotonic() < deadline, f"the engines did not apply {what} in {limit_s:.0f} s"
        time.sleep(0.5)


def leaders(url: str, shards: int) -> dict[str, str]:
    from models.tables import Lease

    eng = create_engine(url)
    with Session(eng) as db:
        now = datetime.now(UTC)
        rows = {le.name: le.owner for le in db.exec(select(Lease)) if le.expires_at > now}
    eng.dispose()
    return {f"engine.{k}": rows.get(f"engine.{k}", "") for k in range(shards)}


def run(args: argparse.Namespace, n: int, kills: int, url: str, work: Path) -> dict:
    from models.events import VehicleArrived, VehicleDeparted
    from models.tables import BayStateRow, Penalty, StoredEvent

    upgrade(url)
    seed_lists(url, args.vehicles, args.list_entries)
    t0 = datetime.now(UTC) - timedelta(hours=1)
    arrivals = [VehicleArrived(at=t0, presence_id=f"p{i}", camera="cam", bay_id=f"B{i}", plate=f"AB{i:05d}",
                               confidence=0.97) for i in range(args.bays)]
    store(url, arrivals)
    procs = start_workers(url, n, args, work)
    try:
        wait_applied(url, args.shards, "the backlog")
        eng = create_engine(url)
        with Session(eng) as db:
            first, last = db.exec(select(func.min(BayStateRow.updated_at), func.max(BayStateRow.updated_at))).one()
        eng.dispose()
        rate = args.bays / max(1e-6, (last - first).total_seconds())
        # Paced departures: latency from storing to deciding.
        marks: dict[str, datetime] = {}
        total = int(args.rate * args.seconds)
        start = time.monotonic()
        for k in range(total):
            i = k % args.bays
            ev = VehicleDeparted(at=datetime.now(UTC), presence_id=f"p{i}", camera="cam", bay_id=f"B{i}",
                                 plate=f"AB{i:05d}", first_seen=t0, last_seen=datetime.now(UTC))
            store(url, [ev])
            marks[f"B{i}"] = ev.at
            ahead = start + (k + 1) / args.rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        while not all_applied(url, args.shards):
            time.sleep(0.2)
        eng = create_engine(url)
        with Session(eng) as db:
            received = {e.payload["bay_id"]: e.received_at for e in db.exec(
                select(StoredEvent).where(StoredEvent.kind == "vehicle_departed"))}
            decided = {b.bay_id: b.updated_at for b in db.exec(
                select(BayStateRow).where(BayStateRow.bay_id.in_(list(received))))}  # type: ignore[attr-defined]
        eng.dispose()
        lat = sorted((decided[b] - received[b]).total_seconds() for b in received if b in decided)
        # Departures backlog: every other car leaves at once (one commit), each departure finalising the
        # penalty its hour-long stay raised.
        rest = range(min(total, args.bays), args.bays)
        dep_rate = finalised = None
        if len(rest):
            store(url, [VehicleDeparted(at=datetime.now(UTC), presence_id=f"p{i}", camera="cam", bay_id=f"B{i}",
                                        plate=f"AB{i:05d}", first_seen=t0, last_seen=datetime.now(UTC))
                        for i in rest])
            wait_applied(url, args.shards, "the departures")
            eng = create_engine(url)
            with Session(eng) as db:
                first, last = db.exec(select(func.min(BayStateRow.updated_at), func.max(BayStateRow.updated_at))
                                      .where(BayStateRow.bay_id.in_([f"B{i}" for i in rest]))).one()  # type: ignore[attr-defined]
                finalised = db.exec(select(func.count()).select_from(Penalty).where(Penalty.ended_at != None)).one()  # noqa: E711
            eng.dispose()
            dep_rate = round(len(rest) / max(1e-6, (last - first).total_seconds()), 1)
        out = {"instances": n, "shards": args.shards, "bays": args.bays, "sites": args.sites,
               "vehicles": args.vehicles, "list_entries": args.list_entries,
               "backlog_events_per_s": round(rate, 1), "departures_events_per_s": dep_rate,
               "penalties_finalised": finalised,
               "paced_rate": args.rate, "latency_p50_s": round(statistics.median(lat), 3),
               "latency_p95_s": round(lat[int(0.95 * (len(lat) - 1))], 3)}
        takeovers = []
        for _ in range(kills if n > 1 else 0):
            owners = leaders(url, args.shards)
            counts: dict[str, int] = {}
            for o in owners.values():
                counts[o] = counts.get(o, 0) + 1
            victim_owner = max(counts, key=counts.get)  # type: ignore[arg-type]
            victim_pid = int(victim_owner.split(":")[1])
            victim = next(p for p in procs if p.pid == victim_pid)
            killed_at = time.monotonic()
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            procs.remove(victim)
            while True:
                now_owners = leaders(url, args.shards)
                if all(o and o != victim_owner for o in now_owners.values()):
                    break
                assert time.monotonic() - killed_at < 120, "shards were not taken over"
                time.sleep(0.1)
            takeovers.append(time.monotonic() - killed_at)
            procs += start_workers(url, 1, args, work)  # back to n instances
            time.sleep(args.takeover)
        if takeovers:
            out["takeover_s"] = [round(t, 2) for t in takeovers]
        return out
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--postgres", help="admin URL of a PostgreSQL server (a database is created per run)")
    ap.add_argument("--bays", type=int, default=10000)
    ap.add_argument("--sites", type=int, default=200)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--instances", default="1,2,4")
    ap.add_argument("--rate", type=float, default=100.0, help="departures stored per second in the latency run")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--takeover", type=float, default=10.0, help="ha.takeover_s of the engines")
    ap.add_argument("--vehicles", type=int, default=0, help="registered vehicles seeded before the engines start")
    ap.add_argument("--list-entries", type=int, default=0, help="white/black list entries seeded likewise")
    ap.add_argument("--keep", action="store_true", help="keep the scratch databases and folders afterwards")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--data-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.data_dir, args.bays, args.sites, args.shards, args.takeover)
        return
    admin = args.postgres or os.environ.get("BAYWARDEN_TEST_POSTGRES_URL")
    if not admin:
        ap.error("--postgres URL (or BAYWARDEN_TEST_POSTGRES_URL) is needed")
    args.postgres = admin
    counts = [int(x) for x in args.instances.split(",")]
    for n in counts:
        with scratch_database(admin, "bw_fleet", args.keep) as url, scratch_dir("bw-fleet-", args.keep) as work:
            print(json.dumps(run(args, n, args.kills if n == max(counts) else 0, url, work)), flush=True)


if __name__ == "__main__":
    main()
