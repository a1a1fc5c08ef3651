"""Reads log speed with a realistic table of plate reads, on SQLite and (if given) PostgreSQL.

    python bench/dashboard.py [--reads 1000000] [--requests 50] [--postgres URL] [--reuse] [--only sqlite]

Fills `plate_reads` with N reads (50 cameras, 100,000 distinct plates with a skewed share of the reads,
90 days, 6 % rejected) by bulk insert (executemany on SQLite, COPY on PostgreSQL), then times requests
through the real app in-process (create_app, a logged-in viewer's session cookie, Starlette's TestClient):
the first page (HTML and JSON), next pages by cursor, exact and fuzzy plate searches and a camera +
24 h filter. Prints p50/p95/max per kind and, last, one JSON line. `--reuse` keeps an already filled
database (SQLite file under /tmp, PostgreSQL database `bw_bench_reads`).
"""

from __future__ import annotations

import argparse
import html
import json
import os
import random
import re
import statistics
import string
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import create_engine, func, text
from sqlalchemy.engine import make_url
from sqlmodel import Session, select

from bench.scratch import scratch_dir
from models.db import make_engine, upgrade
from models.tables import PlateReadRow

CAMERAS = 50
PLATES = 100_000
DAYS = 90
COLUMNS = (
    "at",
    "camera",
    "bay_id",
    "plate",
    "raw_text",
    "confidence",
    "char_confidences",
    "accepted",
    "reject_reason",
    "frame_path",
    "crop_path",
)
PG_DB = "bw_bench_reads"
NEXT_LINK = re.compile(r'href="([^"]+)" rel="next"')
END = datetime(2026, 11, 2, 18, 0, tzinfo=UTC)  # the newest read; fixed so --reuse finds the same data


# --- data -----------------------------------------------------------------------------------


def make_plates(rng: random.Random, n: int) -> list[str]:
    """Distinct plates in three common European shapes (FR/IT AB123CD, UK AB12CDE, DE MAB1234)."""
    letters, digits = string.ascii_uppercase, string.digits
    shapes = ["LLDDDLL", "LLDDLLL", "LLLDDDD"]
    out: set[str] = set()
    while len(out) < n:
        shape = rng.choice(shapes)
        out.add("".join(rng.choice(letters if c == "L" else digits) for c in shape))
    return sorted(out)


def plate_draws(rng: random.Random, plates: list[str], n: int) -> list[str]:
    """Every plate once, the rest drawn with weight 1/(rank + 50): a regular car has a few thousand
    reads in 90 days, most cars a handful."""
    ranked = plates[:]
    rng.shuffle(ranked)
    weights = [1.0 / (r + 50) for r in range(len(ranked))]
    draws = ranked[:n] + (rng.choices(ranked, weights=weights, k=n - len(ranked)) if n > len(ranked) else [])
    rng.shuffle(draws)
    return draws


def generate(n: int, seed: int = 7) -> Iterator[tuple[Any, ...]]:
    """Rows in time order (ids grow with time, as they do when cameras insert them)."""
    rng = random.Random(seed)
    plates = make_plates(rng, min(PLATES, n))
    draws = plate_draws(rng, plates, n)
    start = END - timedelta(days=DAYS)
    span_us = DAYS * 86_400 * 1_000_000
    offsets = sorted(rng.randrange(span_us) for _ in range(n))
    for i in range(n):
        at = start + timedelta(microseconds=offsets[i])
        cam = rng.randrange(CAMERAS)
        camera, bay = f"cam-{cam:02d}", f"B{cam:02d}-{rng.randrange(2) + 1}"
        day = at.strftime("%Y-%m-%d")
        if rng.random() < 0.06:
            yield (
                at,
                camera,
                bay,
                None,
                draws[i][: rng.randrange(2, 6)],
                round(rng.uniform(0.2, 0.6), 3),
                "[]",
                False,
                "low confidence",
                f"{camera}/{day}/{i}f.jpg",
                None,
            )
        else:
            conf = round(0.6 + 0.39 * rng.betavariate(5, 1.5), 3)
            yield (
                at,
                camera,
                bay,
                draws[i],
                draws[i],
                conf,
                "[]",
                True,
                None,
                f"{camera}/{day}/{i}f.jpg",
                f"{camera}/{day}/{i}c.jpg",
            )


def fill_sqlite(url: str, n: int) -> None:
    engine = make_engine(url)
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        sql = f"INSERT INTO plate_reads ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
        batch: list[tuple[Any, ...]] = []
        for row in generate(n):
            # The text form SQLAlchemy's SQLite DateTime stores (UTC, no zone), so the app reads it back.
            batch.append((row[0].strftime("%Y-%m-%d %H:%M:%S.%f"), *row[1:]))
            if len(batch) == 50_000:
                cur.executemany(sql, batch)
                batch.clear()
        cur.executemany(sql, batch)
        raw.commit()
    finally:
        raw.close()
        engine.dispose()


def fill_postgres(url: str, n: int) -> None:
    import psycopg

    with psycopg.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)) as conn:
        with conn.cursor() as cur, cur.copy(f"COPY plate_reads ({', '.join(COLUMNS)}) FROM STDIN") as copy:
            for row in generate(n):
                copy.write_row(row)
        conn.commit()
        conn.autocommit = True
        conn.execute("VACUUM ANALYZE plate_reads")  # what autovacuum does soon after a bulk load


def count_reads(url: str) -> int:
    engine = make_engine(url)
    try:
        with Session(engine) as db:
            return int(db.exec(select(func.count()).select_from(PlateReadRow)).one())
    except Exception:
        return -1
    finally:
        engine.dispose()


def prepare(name: str, url: str, n: int, reuse: bool, reset: Callable[[], None]) -> float:
    """Fill the database unless --reuse finds it filled; returns the seconds the fill took (0 if reused)."""
    if reuse and count_reads(url) == n:
        upgrade(url)
        return 0.0
    reset()
    upgrade(url)
    t0 = time.perf_counter()
    (fill_sqlite if name == "sqlite" else fill_postgres)(url, n)
    return time.perf_counter() - t0


def sqlite_target(path: Path) -> tuple[str, Callable[[], None]]:
    def reset() -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)

    return f"sqlite:///{path}", reset


def postgres_target(admin: str) -> tuple[str, Callable[[], None]]:
    def reset() -> None:
        eng = create_engine(admin, isolation_level="AUTOCOMMIT")
        with eng.connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)'))
            c.execute(text(f'CREATE DATABASE "{PG_DB}"'))
        eng.dispose()

    return make_url(admin).set(database=PG_DB).render_as_string(hide_password=False), reset


# --- requests -------------------------------------------------------------------------------


def misread(rng: random.Random, plate: str) -> str:
    """The plate with one character read wrong, as OCR does (look-alikes first)."""
    look = {"0": "O", "O": "0", "1": "I", "I": "1", "8": "B", "B": "8", "5": "S", "S": "5", "2": "Z", "Z": "2"}
    i = rng.randrange(len(plate))
    other = look.get(plate[i]) or rng.choice([c for c in string.ascii_uppercase + string.digits if c != plate[i]])
    return plate[:i] + other + plate[i + 1 :]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def measure(url: str, n: int, requests: int, data_dir: str) -> dict[str, dict[str, float]]:
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.routes.users import create_user
    from models.settings import load_settings
    from models.tables import Camera, Role, User, UserCreate

    settings = load_settings(None, data_dir=data_dir, database_url=url)
    engine = make_engine(url)
    with Session(engine) as db:
        if db.exec(select(User).where(User.username == "bench")).first() is None:
            create_user(db, UserCreate(username="bench", role=Role.viewer, password="bench password 1"), actor="bench")
        if db.exec(select(func.count()).select_from(Camera)).one() == 0:  # the page lists them in its filter
            db.add_all(Camera(name=f"cam-{i:02d}", url=f"rtsp://10.0.0.{i + 10}/stream1") for i in range(CAMERAS))
            db.commit()
        newest = db.exec(select(func.max(PlateReadRow.at))).one()
        top, bottom = db.exec(select(func.max(PlateReadRow.id))).one(), db.exec(select(func.min(PlateReadRow.id))).one()
        rng = random.Random(11)
        # Plates to search: half drawn by reads (regulars come up often), half by distinct plate.
        some_ids = [rng.randint(bottom, top) for _ in range(4 * requests)]
        by_read = [p for p in db.exec(select(PlateReadRow.plate).where(PlateReadRow.id.in_(some_ids))) if p]  # type: ignore[union-attr]
        distinct = make_plates(random.Random(7), min(PLATES, n))  # the same plates generate() used
        by_plate = [p for p in distinct if rng.random() < 4 * requests / len(distinct)]
    engine.dispose()
    plates = by_read[:requests] + by_plate[:requests]
    rng.shuffle(plates)
    plates = plates[:requests]
    assert newest is not None
    client = TestClient(create_app(settings, components=[]), follow_redirects=False)
    timings: dict[str, list[float]] = {}
    misses = 0
    with client:
        r = client.post("/api/v1/auth/login", json={"username": "bench", "password": "bench password 1"})
        assert r.status_code == 200, r.text

        def timed(kind: str, path: str, params: dict[str, Any] | None = None) -> Any:
            t0 = time.perf_counter()
            resp = client.get(path, params=params)
            timings.setdefault(kind, []).append((time.perf_counter() - t0) * 1000)
            assert resp.status_code == 200, (path, params, resp.status_code, resp.text[:300])
            return resp

        # Warm the app and the route (a 422 stops before the database) before anything is timed.
        assert client.get("/api/v1/me").status_code == 200
        assert client.get("/api/v1/reads", params={"limit": 0}).status_code == 422
        # The first fuzzy search after a start loads the distinct plates in the request (timed apart);
        # normally opening the reads log has already started that load in the background.
        timed("fuzzy_cold", "/api/v1/reads", {"plate": misread(rng, plates[0]), "fuzzy": 1})
        for path in ("/dash/reads", "/api/v1/reads"):
            client.get(path)
        cursor = None
        html_next = "/dash/reads"
        for i in range(requests):
            timed("html_first_page", "/dash/reads")
            timed("json_first_page", "/api/v1/reads")
            body = timed("json_next_page", "/api/v1/reads", {"cursor": cursor} if cursor else None).json()
            cursor = body["next"]
            link = NEXT_LINK.search(timed("html_next_page", html_next).text)
            assert link is not None, "the reads page has no next link"
            html_next = html.unescape(link.group(1))
            plate = plates[i % len(plates)]
            found = timed("json_plate_exact", "/api/v1/reads", {"plate": plate}).json()
            assert found["items"] and all(x["plate"] == plate for x in found["items"])
            timed("html_plate_exact", "/dash/reads", {"plate": plate})
            wrong = misread(rng, plate)
            fuzzy = timed("json_plate_fuzzy", "/api/v1/reads", {"plate": wrong, "fuzzy": 1}).json()
            misses += plate not in fuzzy["matched_plates"]
            timed("html_plate_fuzzy", "/dash/reads", {"plate": wrong, "fuzzy": 1})
            until = newest - timedelta(hours=rng.randrange(24 * DAYS))
            window = {
                "camera": f"cam-{rng.randrange(CAMERAS):02d}",
                "since": (until - timedelta(hours=24)).isoformat(),
                "until": until.isoformat(),
            }
            timed("json_camera_24h", "/api/v1/reads", window)
            timed("html_camera_24h", "/dash/reads", window)
    assert misses == 0, f"fuzzy search missed the true plate {misses} times"
    return {
        k: {
            "n": len(v),
            "p50_ms": round(statistics.median(v), 1),
            "p95_ms": round(pct(v, 0.95), 1),
            "max_ms": round(max(v), 1),
        }
        for k, v in timings.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reads", type=int, default=1_000_000)
    ap.add_argument("--requests", type=int, default=50, help="timed requests of each kind")
    ap.add_argument("--sqlite-path", default=str(Path(tempfile.gettempdir()) / "baywarden-bench" / "reads.db"))
    ap.add_argument("--postgres", help="admin URL, e.g. postgresql+psycopg://postgres@127.0.0.1:55432/postgres")
    ap.add_argument("--only", choices=["sqlite", "postgresql"], help="run one database only")
    ap.add_argument("--reuse", action="store_true", help="keep an already filled database with --reads rows")
    args = ap.parse_args()
    targets: list[tuple[str, tuple[str, Callable[[], None]]]] = []
    if args.only != "postgresql":
        Path(args.sqlite_path).parent.mkdir(parents=True, exist_ok=True)
        targets.append(("sqlite", sqlite_target(Path(args.sqlite_path))))
    if args.postgres and args.only != "sqlite":
        targets.append(("postgresql", postgres_target(args.postgres)))
    results: dict[str, Any] = {"reads": args.reads, "requests": args.requests, "cpus": os.cpu_count()}
    for name, (url, reset) in targets:
        fill_s = prepare(name, url, args.reads, args.reuse, reset)
        print(f"{name}: {args.reads:,} reads {'reused' if not fill_s else f'inserted in {fill_s:.0f} s'}", flush=True)
        with scratch_dir("bw-bench-") as data_dir:  # the database stays for --reuse; the folder goes
            figures = measure(url, args.reads, args.requests, str(data_dir))
        print(f"{'kind':<18} {'n':>4} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}")
        for kind, f in figures.items():
            print(f"{kind:<18} {f['n']:>4} {f['p50_ms']:>8.1f} {f['p95_ms']:>8.1f} {f['max_ms']:>8.1f}")
        results[name] = {"fill_s": round(fill_s, 1), **figures}
    print(json.dumps(results))


if __name__ == "__main__":
    main()
