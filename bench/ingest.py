"""Outside reads per second, per intake kind, and the time from receipt to the bay's state.

    python bench/ingest.py [--reads 2000] [--threads 16] [--client-procs 1] [--image-kb 200] [--postgres URL]
                           [--mqtt [--messages 5000] [--mqtt-rate R]] [--intakes N [--engine-elsewhere]]

Runs the real service in a child process (uvicorn on 127.0.0.1, the enforcement engine on): `--reads`
Plate Recognizer webhooks, each a multipart form with a `--image-kb` JPEG and a new car at one of
min(reads, 500) cameras (each its own bay) in turn, posted by `--threads` HTTP clients; then (with
`--mqtt` and Debian's mosquitto) `--messages` Frigate MQTT messages without pictures, each a new car at
one of as many cameras in turn (published at QoS 1 as fast as the client can, or `--mqtt-rate` per
second, then counted as stored). Prints reads/s accepted per kind and p50/p95 from receipt
(`domain_events.received_at`) to the bay's state written by the engine (`bay_states.updated_at`), over
each bay's last arrival: under a burst that is the backlog the burst left, so the latency of a load the
service keeps up with is measured paced (`--mqtt-rate`).
Targets (issue 15): >= 500 webhook reads/s with 200 KB pictures, >= 2,000 MQTT messages/s, p95 <= 300 ms.
Compare runs on one machine only.

`--intakes N` (PostgreSQL only) runs the fleet way instead: N intake-only instances (API, no engine,
no scheduler) that the clients share round-robin, and one engine instance (engine and scheduler, no
API), all on the same database, each in its own process. `--engine-elsewhere` (with `--intakes` and
`--mqtt`) stops the engine instance (SIGSTOP) for the Frigate burst and lets it go afterwards: the
intake's rate as if the engine ran on another machine (this machine's two cores are otherwise shared by
intake, engine, broker, client and PostgreSQL); no latency is printed for that burst.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import httpx
import numpy as np
from sqlalchemy import create_engine, text
from sqlmodel import Session, select

from bench.scratch import scratch_database, scratch_dir

SECRET = "bench-secret-0123456789"


def picture(kb: int) -> bytes:
    """A JPEG of about `kb` KiB (noise compresses badly, so the size is easy to reach)."""
    side = 64
    while True:
        rng = np.random.default_rng(side)
        img = rng.integers(0, 255, (side, side * 16 // 9, 3), dtype=np.uint8)
        ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])
        if len(buf) >= kb * 1024 or side > 4000:
            return buf.tobytes()
        side = int(side * 1.25)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def latencies(url: str, source: str) -> list[float]:
    from models.tables import BayStateRow, StoredEvent

    eng = create_engine(url)
    with Session(eng) as db:
        received = {e.payload["bay_id"]: e.received_at for e in db.exec(
            select(StoredEvent).where(StoredEvent.kind == "vehicle_arrived", StoredEvent.source == f"source:{source}"))}
        decided = {b.bay_id: b.updated_at for b in db.exec(select(BayStateRow))}
    eng.dispose()
    return sorted((decided[b] - received[b]).total_seconds() for b in received if b in decided)


def wait_applied(url: str, source: str, n: int, timeout: float = 300) -> None:
    """Until `n` bays have a state written after their last arrival (a bay of several arrivals has a state
    from an earlier one while the engine is behind: a negative difference)."""
    deadline = time.monotonic() + timeout
    while len(lat := latencies(url, source)) < n or lat[0] < 0:
        if time.monotonic() > deadline:
            raise SystemExit(f"the engine applied {len(latencies(url, source))} of {n} arrivals in {timeout} s")
        time.sleep(0.5)


def post_many(job: tuple[list[int], list[str], bytes, int, int]) -> list[int]:
    """One client process: post the Plate Recognizer reads `indices` from `threads` threads; the status codes.
    The multipart body is put together from bytes (httpx's own encoder was the bench's limit: the service sat
    mostly idle at ~100 requests/s)."""
    indices, bases, image, threads, cameras = job
    boundary = "bench-" + uuid.uuid4().hex
    tail = f"\r\n--{boundary}--\r\n".encode()
    head_image = (f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"upload\"; filename=\"p.jpg\"\r\n"
                  "Content-Type: image/jpeg\r\n\r\n").encode()
    headers = {"Authorization": f"Token {SECRET}", "Content-Type": f"multipart/form-data; boundary={boundary}"}
    clients = [httpx.Client(timeout=30) for _ in range(threads)]

    def post(i: int) -> int:
        doc = {"data": {"camera_id": f"c{i % cameras}", "timestamp": datetime.now(UTC).isoformat(),
                        "results": [{"plate": f"ab{i:05d}", "score": 0.9}]}}
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"json\"\r\n\r\n{json.dumps(doc)}"
                .encode() + head_image + image + tail)
        return clients[i % threads].post(bases[i % len(bases)], headers=headers, content=body).status_code

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(post, indices))


def serve(config: Path) -> None:
    """The service under test (a child process): uvicorn with the API, the engine and the scheduler."""
    import uvicorn

    from api.app import create_app
    from models.settings import load_settings

    values = json.loads(config.read_text())
    settings = load_settings(None, **values)
    uvicorn.run(create_app(settings), host="127.0.0.1", port=values["port"], log_config=None, access_log=False)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reads", type=int, default=2000,
                    help="webhooks, each a new car at one of min(reads, 500) cameras in turn (a source maps 500)")
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--image-kb", type=int, default=200)
    ap.add_argument("--postgres", help="admin URL; default: SQLite in a temporary folder")
    ap.add_argument("--mqtt", action="store_true", help="also Frigate messages through a local mosquitto")
    ap.add_argument("--messages", type=int, default=5000,
                    help="Frigate messages with --mqtt, each a new car at one of the --reads cameras in turn")
    ap.add_argument("--mqtt-rate", type=float, default=0.0,
                    help="publish the Frigate messages at this many per second (0: as fast as the client can)")
    ap.add_argument("--client-procs", type=int, default=1, help="client processes sharing --threads")
    ap.add_argument("--intakes", type=int, default=0,
                    help="N intake-only instances plus one engine instance (needs --postgres); 0: one service")
    ap.add_argument("--engine-elsewhere", action="store_true",
                    help="with --mqtt and --intakes: stop the engine instance (SIGSTOP) during the Frigate burst, so "
                         "the intake's rate is measured as if the engine ran on another machine")
    ap.add_argument("--keep", action="store_true", help="keep the scratch database and folder afterwards")
    ap.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve(args.serve)
        return
    if args.intakes and not args.postgres:
        raise SystemExit("--intakes needs --postgres (instances share one PostgreSQL)")
    if args.engine_elsewhere and not (args.mqtt and args.intakes):
        raise SystemExit("--engine-elsewhere needs --mqtt and --intakes N (an engine instance of its own)")

    with ExitStack() as scratch:  # the database and the folder (~2 GB of pictures) go when the bench ends
        work = scratch.enter_context(scratch_dir("bw-ingest-", args.keep))
        url = (scratch.enter_context(scratch_database(args.postgres, "bw_ingest", args.keep)) if args.postgres
               else f"sqlite:///{work / 'ingest.db'}")
        bench(args, work, url)


def bench(args: argparse.Namespace, work: Path, url: str) -> None:
    from models.db import upgrade

    upgrade(url)
    n = min(args.reads, 500)  # cameras (and bays) per source: a source maps at most 500 cameras
    broker = None
    mqtt_port = free_port()
    if args.mqtt:
        if shutil.which("mosquitto") is None:
            raise SystemExit("--mqtt needs Debian's mosquitto")
        conf = work / "mosquitto.conf"
        # No cap on the messages queued for a subscriber that is behind (mosquitto's default is 1,000: a
        # burst longer than that would be dropped by the broker and never reach the service).
        conf.write_text(f"listener {mqtt_port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
                        "max_queued_messages 0\n")
        broker = subprocess.Popen(["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)
    bays = [{"bay_id": f"B{i}", "charge_point_id": f"CP{i}", "connector_id": 1} for i in range(2 * n)]
    sources = [{"name": "pr", "kind": "platerecognizer", "secret": SECRET, "max_per_s": 10000, "burst": 100000,
                "cameras": [{"id": f"c{i}", "bay_id": f"B{i}"} for i in range(n)]}]
    if args.mqtt:
        sources.append({"name": "frigate", "kind": "frigate", "max_per_s": 10000, "burst": 100000,
                        "cameras": [{"id": f"f{i}", "bay_id": f"B{n + i}"} for i in range(n)]})
    base_config = {
        "data_dir": str(work / "data"), "database_url": url, "log_level": "WARNING", "sources": sources,
        "enforcement": {"bays": bays},
    }
    full = {"api": True, "scheduler": True, "enforcement": True, "cameras": False, "relay": False}
    if args.intakes:  # the fleet way: intake-only instances and one engine, sharing the database
        roles = [dict(full, scheduler=False, enforcement=False)] * args.intakes + [dict(full, api=False)]
    else:
        roles = [full]
    servers: list[subprocess.Popen] = []
    ports: list[int] = []
    try:
        for k, components in enumerate(roles):
            port = free_port()
            config = dict(base_config, port=port, components=components,
                          mqtt={"port": mqtt_port, "publish": False} if args.mqtt and components["api"] else None)
            if len(roles) > 1:
                config["data_dir"] = str(work / f"data{k}")  # one database; files (evidence) per instance here
            (work / f"service{k}.json").write_text(json.dumps(config))
            # Each instance runs in its own process, as in production: the clients here do not share its GIL.
            servers.append(subprocess.Popen([sys.executable, __file__, "--serve", str(work / f"service{k}.json")]))
            if components["api"]:
                ports.append(port)
        deadline = time.monotonic() + 60
        for port in ports:
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or any(s.poll() is not None for s in servers):
                    raise SystemExit("the service did not start")
                time.sleep(0.2)
        image = picture(args.image_kb)
        bases = [f"http://127.0.0.1:{port}/api/v1/sources/pr/platerecognizer" for port in ports]

        procs = max(1, args.client_procs)
        with ProcessPoolExecutor(procs) as pool:  # clients in processes of their own: one interpreter was the limit
            list(pool.map(abs, range(procs)))  # the processes started before the clock does
            start = time.perf_counter()
            per_proc = max(1, args.threads // procs)
            parts = pool.map(post_many, [(list(range(k, args.reads, procs)), bases, image, per_proc, n)
                                         for k in range(procs)])
            codes = [code for part in parts for code in part]
            elapsed = time.perf_counter() - start
        ok = codes.count(200)
        wait_applied(url, "pr", min(ok, n))
        lat = latencies(url, "pr")
        print(json.dumps({"kind": "platerecognizer webhook", "image_kb": round(len(image) / 1024), "reads": args.reads,
                          "accepted": ok, "reads_per_s": round(ok / elapsed, 1),
                          "receipt_to_bay_state_p50_s": round(statistics.median(lat), 3),
                          "receipt_to_bay_state_p95_s": round(lat[int(0.95 * (len(lat) - 1))], 3),
                          "database": "postgresql" if args.postgres else "sqlite", "threads": args.threads,
                          "client_procs": args.client_procs, "intake_instances": args.intakes or "one service"}),
              flush=True)

        if args.mqtt:
            import paho.mqtt.client as mqtt

            pub = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
            pub.connect("127.0.0.1", mqtt_port)
            pub.loop_start()
            m = args.messages
            payloads = []
            for i in range(m):  # made before the clock starts: the service is measured, not this loop
                after = {"id": f"{i}.0-x", "camera": f"f{i % n}", "label": "car", "frame_time": time.time(),
                         "recognized_license_plate": f"FR{i:05d}", "recognized_license_plate_score": 0.9}
                payloads.append(json.dumps({"type": "new", "after": after}))
            eng = create_engine(url)
            engine_proc = servers[-1] if args.intakes else None  # the engine-only instance (fleet layout)
            if args.engine_elsewhere:  # stands for an engine on another machine: its CPU is not shared here
                engine_proc.send_signal(signal.SIGSTOP)
            start = time.perf_counter()
            for i, payload in enumerate(payloads):
                if args.mqtt_rate > 0 and i % 10 == 0:  # paced: the latency of a load the service keeps up with
                    ahead = start + i / args.mqtt_rate - time.perf_counter()
                    if ahead > 0:
                        time.sleep(ahead)
                pub.publish("frigate/events", payload, qos=1)
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:  # each message is a new car: one arrival each
                with Session(eng) as db:
                    got = db.exec(text("SELECT count(*) FROM domain_events WHERE source = 'source:frigate' "
                                       "AND kind = 'vehicle_arrived'")).one()[0]
                if got >= m:
                    break
                time.sleep(0.05)
            elapsed = time.perf_counter() - start
            eng.dispose()
            pub.loop_stop()
            if args.engine_elsewhere:
                engine_proc.send_signal(signal.SIGCONT)
            wait_applied(url, "frigate", n)
            lat = latencies(url, "frigate")
            figures = {"kind": "frigate mqtt", "messages": m, "stored": got,
                       "offered_per_s": args.mqtt_rate or "as fast as possible",
                       "messages_per_s": round(got / elapsed, 1)}
            if args.engine_elsewhere:  # the engine was stopped: a latency would measure the pause
                figures["engine"] = "paused during the burst (as if on another machine)"
            else:
                figures["receipt_to_bay_state_p50_s"] = round(statistics.median(lat), 3)
                figures["receipt_to_bay_state_p95_s"] = round(lat[int(0.95 * (len(lat) - 1))], 3)
            print(json.dumps(figures), flush=True)
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            try:
                server.wait(20)
            except subprocess.TimeoutExpired:
                server.kill()
        if broker is not None:
            broker.terminate()


if __name__ == "__main__":
    main()
