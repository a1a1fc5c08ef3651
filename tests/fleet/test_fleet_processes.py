"""Three real `baywarden run` processes on one real PostgreSQL, each through its own TCP proxy.

Two cars idle through a charge, one at a site of each engine shard. Half-way, the instance leading
the first car's shard is killed with SIGKILL and the network of the instance leading the second car's
shard is cut (its proxy stops). The survivor takes both shards over within `ha.takeover_s`, keeps
serving the dashboard, and the tables end with exactly one visit, one warning, one notice and one
penalty of the right amount per car: nothing lost, nothing applied twice. (Slow: about two minutes,
as the idle fee is billed in whole minutes.)"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import yaml
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlmodel import Session, select

from baywarden.demo import free_port
from models.db import upgrade
from models.leases import shard_of
from models.outbox import OutboxMessage
from models.tables import ConsumerCursor, Lease, Penalty, Role, StoredEvent, Vehicle, VisitRow
from tests.notifications.servers import SmtpServer

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(300)]
BAYWARDEN = [sys.executable, "-m", "baywarden.cli"]
TAKEOVER_S = 3.0
SITES = ("north", "mall")  # crc32 puts them in different shards of 2


class TcpProxy:
    """A plain TCP forwarder; `cut()` drops every connection and stops listening (a network cut)."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.port = free_port()
        self._socks: list[socket.socket] = []
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self.is_cut = False
        self.start()

    def start(self) -> None:
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(64)
        self._listener = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def _accept(self, ls: socket.socket) -> None:
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            if self.is_cut:
                client.close()
                return
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.is_cut = True
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the thread blocked in accept()
            self._listener.close()
            self._listener = None
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


def wait_for(cond, timeout: float, what: str, every: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def ev(eid: str, kind: str, at: datetime, **kw: object) -> dict:
    return {"event_id": f"event-{eid}", "event": {"kind": kind, "at": at.isoformat(), **kw}}


def chain(site: str, t0: datetime) -> tuple[list[dict], list[dict]]:
    """Arrival and plug-in minutes ago, idle since 50 s ago: with one minute of grace the warning goes
    out at once and the fee starts 10 s after `t0`. Unplug 75 s after `t0` (posted then), departure at
    80 s: one whole idle minute billed at 0.40."""
    tx = {"charge_point_id": f"CP-{site}", "transaction_id": f"T-{site}", "connector_id": 1}
    plate = f"{site.upper()}1"
    first = [
        ev(f"{site}-a", "vehicle_arrived", t0 - timedelta(minutes=5), presence_id=f"p-{site}", camera="gate",
           bay_id=f"B-{site}", plate=plate, confidence=0.995),
        ev(f"{site}-s", "transaction_started", t0 - timedelta(minutes=4), **tx),
        ev(f"{site}-i", "charging_idle", t0 - timedelta(seconds=50), reason="SuspendedEV", **tx),
    ]
    second = [
        ev(f"{site}-e", "transaction_ended", t0 + timedelta(seconds=75), reason="EVDisconnected", **tx),
        ev(f"{site}-d", "vehicle_departed", t0 + timedelta(seconds=80), presence_id=f"p-{site}", camera="gate",
           bay_id=f"B-{site}", plate=plate, first_seen=(t0 - timedelta(minutes=5)).isoformat(),
           last_seen=(t0 + timedelta(seconds=79)).isoformat()),
    ]
    return first, second


@pytest.fixture
def smtp():
    server = SmtpServer().start()
    yield server
    server.stop()


def instance_config(tmp_path, name: str, db_url: str, port: int, smtp_port: int) -> Path:
    cfg = {
        "data_dir": str(tmp_path / name),
        "database_url": db_url,
        "port": port,
        "components": {"api": True, "scheduler": True, "enforcement": True, "cameras": False, "relay": False},
        "mail": {"host": "127.0.0.1", "port": smtp_port, "security": "none", "from_address": "bays@example.org"},
        "ha": {"shards": 2, "takeover_s": TAKEOVER_S, "node": f"node-{name}"},
        "enforcement": {
            "sweep_every_s": 1,
            "rules": {"idle_grace_min": 1, "idle_fee_per_min": "0.40", "idle_fee_cap": "20.00"},
            "bays": [{"bay_id": f"B-{s}", "site": s, "charge_point_id": f"CP-{s}", "connector_id": 1} for s in SITES],
        },
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def start_instance(tmp_path, name: str, config: Path) -> subprocess.Popen:
    log = open(tmp_path / f"{name}.log", "w")  # noqa: SIM115 - closed with the process
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([*BAYWARDEN, "run", "--config", str(config)], cwd=tmp_path,
                            stdout=log, stderr=subprocess.STDOUT, env=env)


def seed(db_url: str) -> dict[str, str]:
    """Migrated database with the two drivers; returns the edge token's auth header."""
    from api.routes.tokens import create_token

    upgrade(db_url)
    engine = create_engine(db_url)
    with Session(engine) as db:
        for site in SITES:
            db.add(Vehicle(plate=f"{site.upper()}1", owner_name=site, email=f"{site}@example.org",
                           created_at=datetime.now(UTC)))
        db.commit()
    with Session(engine) as db:
        _, token = create_token(db, "edge", Role.device, actor="test", scopes=["camera:*", "charger:*"])
    engine.dispose()
    return {"Authorization": f"Bearer {token}"}


def stop_all(procs: dict[str, subprocess.Popen]) -> None:
    for p in procs.values():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs.values():
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            p.kill()


def final_tables(engine) -> dict:
    with Session(engine) as db:
        return {
            "penalties": sorted((p.plate, p.amount) for p in db.exec(select(Penalty))),
            "visits": sorted(v.plate for v in db.exec(select(VisitRow))),
            "mails": sorted((m.template, m.recipient) for m in db.exec(select(OutboxMessage))),
            "head": max(db.exec(select(StoredEvent.seq))),
            "cursors": {c.name: c.seq for c in db.exec(select(ConsumerCursor))},
        }


EXPECTED_MAILS = sorted([("penalty_warning", f"{s}@example.org") for s in SITES]
                        + [("penalty_notice", f"{s}@example.org") for s in SITES])
EXPECTED_DELIVERED = sorted([(f"{s}@example.org", w) for s in SITES for w in ("Charging", "Penalty")])


def test_a_killed_and_a_cut_off_instance_lose_nothing_and_double_nothing(tmp_path, postgres_url, smtp):
    assert shard_of(SITES[0], 2) != shard_of(SITES[1], 2)
    auth = seed(postgres_url)
    url = make_url(postgres_url)
    engine = create_engine(postgres_url)
    procs: dict[str, subprocess.Popen] = {}
    proxies: dict[str, TcpProxy] = {}
    ports: dict[str, int] = {}
    for name in ("a", "b", "c"):
        proxies[name] = TcpProxy(url.port or 5432)
        ports[name] = free_port()
        via_proxy = url.set(host="127.0.0.1", port=proxies[name].port).render_as_string(hide_password=False)
        procs[name] = start_instance(tmp_path, name, instance_config(tmp_path, name, via_proxy, ports[name], smtp.port))
    owner_of = {}
    try:
        for name in procs:
            wait_for(lambda n=name: _ok(ports[n], "/healthz"), 60, f"instance {name} to serve")

        def owners() -> dict[str, str] | None:
            with Session(engine) as db:
                now = datetime.now(UTC)
                rows = {le.name: le.owner for le in db.exec(select(Lease)) if le.expires_at > now}
            got = {s: rows.get(f"engine.{shard_of(s, 2)}") for s in SITES}
            # Fair share spreads the two shards over two different instances.
            return got if all(got.values()) and len(set(got.values())) == 2 else None

        def settled() -> dict[str, str] | None:  # the same two leaders a lease lifetime apart
            first = owners()
            time.sleep(TAKEOVER_S)
            return first if first and owners() == first else None

        owner_of = wait_for(settled, 40, "both shards led by two different instances")
        t0 = datetime.now(UTC)
        chains = {s: chain(s, t0) for s in SITES}
        r = httpx.post(f"http://127.0.0.1:{ports['a']}/api/v1/events", headers=auth,
                       json={"events": [e for s in SITES for e in chains[s][0]]})
        assert r.status_code == 200, r.text
        wait_for(lambda: _count(engine, OutboxMessage, template="penalty_warning") == 2, 30, "both warnings")

        def instance(owner: str) -> str:
            node = owner.split(":")[0]
            return node.removeprefix("node-")

        killed, cut = instance(owner_of[SITES[0]]), instance(owner_of[SITES[1]])
        survivor = ({"a", "b", "c"} - {killed, cut}).pop()
        # (a) SIGKILL the first shard's leader, (c) cut the second's network, at the same moment.
        started = time.monotonic()
        procs[killed].send_signal(signal.SIGKILL)
        proxies[cut].cut()
        served = {"ok": 0, "bad": 0}
        stop = threading.Event()

        def probe() -> None:  # the dashboard keeps answering on the survivor throughout
            while not stop.is_set():
                served["ok" if _ok(ports[survivor], "/login") else "bad"] += 1
                time.sleep(0.2)

        prober = threading.Thread(target=probe, daemon=True)
        prober.start()

        def taken_over() -> bool:
            with Session(engine) as db:
                now = datetime.now(UTC)
                held = {le.name: le.owner for le in db.exec(select(Lease)) if le.expires_at > now}
            return all(instance(held.get(f"engine.{shard_of(s, 2)}", "x:")) == survivor for s in SITES)

        wait_for(taken_over, 4 * TAKEOVER_S, "the survivor to lead both shards")
        takeover_s = time.monotonic() - started
        # The cars unplug and leave once the first idle minute after the grace is complete.
        time.sleep(max(0.0, (t0 + timedelta(seconds=81) - datetime.now(UTC)).total_seconds()))
        r = httpx.post(f"http://127.0.0.1:{ports[survivor]}/api/v1/events", headers=auth,
                       json={"events": [e for s in SITES for e in chains[s][1]]})
        assert r.status_code == 200, r.text
        wait_for(lambda: _count(engine, Penalty) >= 2 and _count(engine, OutboxMessage, template="penalty_notice") >= 2,
                 60, "both penalties and notices")
        wait_for(lambda: len(smtp.handler.messages) >= 4, 30, "four e-mails")
        time.sleep(3 * TAKEOVER_S)  # anything applied or sent twice would show now
        delivered = sorted((m.rcpt_tos[0], m.message["Subject"].split(" ")[0]) for m in smtp.handler.messages)
        stop.set()
        prober.join(5)
        tables = final_tables(engine)
    finally:
        stop_all(procs)
        for px in proxies.values():
            px.cut()
        engine.dispose()
    logs = {n: (tmp_path / f"{n}.log").read_text()[-3000:] for n in procs}
    assert takeover_s <= TAKEOVER_S + 3, (takeover_s, logs)
    assert tables["penalties"] == [("MALL1", "0.40"), ("NORTH1", "0.40")], logs
    assert tables["visits"] == ["MALL1", "NORTH1"]
    assert tables["mails"] == EXPECTED_MAILS, tables
    assert set(tables["cursors"].values()) == {tables["head"]} and len(tables["cursors"]) == 2, tables
    assert served["bad"] == 0 and served["ok"] > 0, served
    # Three dispatchers, one e-mail each: a warning ("Charging finished ...") and a notice per driver.
    assert delivered == EXPECTED_DELIVERED, delivered


def _ok(port: int, path: str) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _count(engine, table, **where: object) -> int:
    with Session(engine) as db:
        q = select(table)
        for k, v in where.items():
            q = q.where(getattr(table, k) == v)
        return len(list(db.exec(q)))





class PrivateCluster:
    """A PostgreSQL server of our own (Debian's binaries, a throwaway data folder), so that this test
    can stop and start it without touching the suite's shared one. Run as `postgres` when root."""

    def __init__(self) -> None:
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin"))
        self.bin = bins[-1] if bins else None
        # Not under pytest's tmp_path: that is private to root, and the server runs as postgres.
        self.folder = Path(tempfile.mkdtemp(prefix="baywarden-pg-"))
        self.data = self.folder / "pgdata"
        self.port = free_port()

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def _run(self, *args: str) -> None:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:
            cmd = ["su", "postgres", "-c", " ".join(f"'{c}'" for c in cmd)]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)

    def init(self) -> None:
        self.data.mkdir(parents=True)
        if os.geteuid() == 0:
            subprocess.run(["chown", "-R", "postgres:postgres", str(self.data.parent)], check=True)
            self.data.parent.chmod(0o755)
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")

    def start(self) -> None:
        opts = f"-p {self.port} -k /tmp -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.data / "server.log"), "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"


def test_postgres_stopped_for_20_s_loses_nothing_and_doubles_nothing(tmp_path, smtp, postgres_url):
    # postgres_url: only for its skip/fail rule (a machine with PostgreSQL); this test runs its own server.
    cluster = PrivateCluster()
    if cluster.bin is None:
        pytest.skip("Debian's PostgreSQL server binaries are needed")
    cluster.init()
    cluster.start()
    procs: dict[str, subprocess.Popen] = {}
    ports = {name: free_port() for name in ("a", "b")}
    engine = None
    try:
        auth = seed(cluster.url)
        for name in ports:
            procs[name] = start_instance(tmp_path, name, instance_config(tmp_path, name, cluster.url, ports[name],
                                                                         smtp.port))
        for name in ports:
            wait_for(lambda n=name: _ok(ports[n], "/healthz"), 60, f"instance {name} to serve")
        t0 = datetime.now(UTC)
        chains = {s: chain(s, t0) for s in SITES}
        r = httpx.post(f"http://127.0.0.1:{ports['a']}/api/v1/events", headers=auth,
                       json={"events": [e for s in SITES for e in chains[s][0]]})
        assert r.status_code == 200, r.text
        wait_for(lambda: len(smtp.handler.messages) >= 2, 30, "both warnings")
        cluster.stop()
        time.sleep(20)  # the idle minute runs on while the database is away
        assert all(p.poll() is None for p in procs.values()), "an instance died with its database"
        cluster.start()
        time.sleep(max(0.0, (t0 + timedelta(seconds=81) - datetime.now(UTC)).total_seconds()))
        r = wait_for(lambda: _post(ports["b"], auth, [e for s in SITES for e in chains[s][1]]), 30,
                     "the event intake to work again")
        wait_for(lambda: len(smtp.handler.messages) >= 4, 60, "both notices")
        time.sleep(3 * TAKEOVER_S)
        engine = create_engine(cluster.url)
        tables = final_tables(engine)
    finally:
        stop_all(procs)
        if engine is not None:
            engine.dispose()
        with contextlib.suppress(Exception):
            cluster.stop()
        cluster.remove()
    logs = {n: (tmp_path / f"{n}.log").read_text()[-3000:] for n in procs}
    assert tables["penalties"] == [("MALL1", "0.40"), ("NORTH1", "0.40")], logs
    assert tables["visits"] == ["MALL1", "NORTH1"]
    assert tables["mails"] == EXPECTED_MAILS, tables
    assert set(tables["cursors"].values()) == {tables["head"]}, tables
    delivered = sorted((m.rcpt_tos[0], m.message["Subject"].split(" ")[0]) for m in smtp.handler.messages)
    assert delivered == EXPECTED_DELIVERED, delivered


def _post(port: int, auth: dict[str, str], events: list[dict]) -> bool:
    try:
        return httpx.post(f"http://127.0.0.1:{port}/api/v1/events", headers=auth, json={"events": events},
                          timeout=5).status_code == 200
    except httpx.HTTPError:
        return False
