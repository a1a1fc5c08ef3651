"""MQTT with a real Mosquitto broker (Debian's, started here on a free port): Frigate's events become
reads with the event's snapshot as evidence, and Baywarden publishes each bay's state retained with
Home Assistant discovery, republished after the broker restarts (it keeps nothing: no persistence)."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlmodel import Session, select

from baywarden.demo import free_port
from models.db import upgrade
from models.tables import SourceCounter, StoredEvent
from service.build import build_context
from service.enforcement_control import EnforcementComponent
from service.mqtt import MqttComponent, bay_summary, mask
from tests.conftest import need
from tests.foundation.helpers import make_settings
from tests.sources.test_intake_http import jpeg

pytestmark = [pytest.mark.timeout(120)]


class Broker:
    def __init__(self, folder) -> None:
        self.port = free_port()
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text(f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> Broker:
        self.proc = subprocess.Popen(["mosquitto", "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        raise RuntimeError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)


@pytest.fixture
def broker(tmp_path):
    need(shutil.which("mosquitto") is not None, "Debian's mosquitto is needed (apt-get install mosquitto)")
    b = Broker(tmp_path).start()
    yield b
    b.stop()


@pytest.fixture
def frigate_http():
    """Frigate's HTTP API, as far as snapshots go."""
    picture = jpeg()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/api/events/1733475600.5-abc/snapshot.jpg"):
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.end_headers()
                self.wfile.write(picture)
            else:
                self.send_response(404)
                self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", picture
    server.shutdown()


def frigate_event(kind: str, **after: object) -> bytes:
    base = {"id": "1733475600.5-abc", "camera": "driveway", "label": "car", "current_zones": ["bay_1"],
            "frame_time": time.time(), "start_time": time.time() - 5, "end_time": None,
            "recognized_license_plate": "AB123CD", "recognized_license_plate_score": 0.91, "has_snapshot": True}
    return json.dumps({"type": kind, "before": base, "after": {**base, **after}}).encode()


class Listener:
    """A plain MQTT client that remembers the last message of each topic."""

    def __init__(self, port: int, topic: str) -> None:
        import paho.mqtt.client as mqtt

        self.messages: dict[str, bytes] = {}
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        self.client.on_message = lambda c, u, m: self.messages.__setitem__(m.topic, m.payload)
        self.client.on_connect = lambda c, u, f, r, p=None: c.subscribe(topic)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes) -> None:
        self.client.publish(topic, payload, qos=1).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


async def until(cond, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def test_frigate_events_in_and_bay_states_out(tmp_path, sqlite_url, broker, frigate_http):
    url, picture = frigate_http
    settings = make_settings(
        tmp_path, sqlite_url, mqtt={"port": broker.port},
        sources=[{"name": "frigate", "kind": "frigate", "frigate_url": url,
                  "cameras": [{"id": "driveway/bay_1", "bay_id": "B1"}]}],
        enforcement={"bays": [{"bay_id": "B1", "charge_point_id": "CP1", "connector_id": 1}]},
    )
    upgrade(sqlite_url)
    ctx = build_context(settings, components=[])
    mqtt_part = MqttComponent(ctx, publish_every_s=0.2)
    engine_part = EnforcementComponent(ctx)

    def events() -> list[StoredEvent]:
        with Session(ctx.engine) as db:
            return list(db.exec(select(StoredEvent).order_by(StoredEvent.seq)))

    async def main() -> None:
        await mqtt_part.start()
        engine_part.service = engine_part._build()
        frigate = Listener(broker.port, "baywarden/#")
        try:
            await until(mqtt_part._connected.is_set, 10, "the MQTT connection")
            frigate.publish("frigate/events", frigate_event("new"))
            frigate.publish("frigate/events", frigate_event("update"))  # the same minute: no second read
            frigate.publish("frigate/events", b"not json")
            await until(lambda: any(e.kind == "vehicle_arrived" for e in events()), 10, "the arrival")
            await asyncio.to_thread(engine_part.drain)
            state_topic = "baywarden/bay/B1/state"
            await until(lambda: state_topic in frigate.messages, 10, "the published bay state")
            assert json.loads(frigate.messages[state_topic])["state"] == "occupied"
            assert json.loads(frigate.messages[state_topic])["plate"] == "AB***CD"
            frigate.close()
            # The broker restarts and forgets everything; Baywarden reconnects and publishes it again.
            broker.stop()
            broker.start()
            await until(mqtt_part._connected.is_set, 15, "the reconnection")
            later = Listener(broker.port, "#")
            try:
                await until(lambda: state_topic in later.messages, 15, "the state republished")
                config = json.loads(later.messages["homeassistant/sensor/baywarden_B1/config"])
                assert config["state_topic"] == state_topic and config["unique_id"] == "baywarden_B1"
                assert later.messages["baywarden/status"] == b"online"
                later.publish("frigate/events", frigate_event("end", end_time=time.time()))
                await until(lambda: any(e.kind == "vehicle_departed" for e in events()), 10, "the departure")
            finally:
                later.close()
        finally:
            await mqtt_part.stop()

    asyncio.run(main())
    kinds = [e.kind for e in events()]
    assert kinds.count("vehicle_arrived") == 1 and kinds.count("vehicle_departed") == 1
    arrived = next(e for e in events() if e.kind == "vehicle_arrived").payload
    assert arrived["plate"] == "AB123CD" and arrived["confidence"] == 0.91
    assert arrived["camera"] == "frigate:driveway/bay_1"
    assert (settings.evidence_dir / arrived["evidence"]["frame_path"]).read_bytes() == picture
    with Session(ctx.engine) as db:
        counter = db.get(SourceCounter, "frigate")
    assert counter.rejected == 1 and "not JSON" in counter.last_error
    ctx.engine.dispose()


def test_bay_summary_and_masking():
    assert mask("AB123CD") == "AB***CD" and mask("AB1") == "AB1" and mask(None) is None
    assert bay_summary({"visit": None})["state"] == "free"
    visit = {"plate": "AB123CD", "arrived_at": "t", "plugged": True, "charging": True, "violations": []}
    assert bay_summary({"visit": visit})["state"] == "charging"
    assert bay_summary({"visit": {**visit, "idle_since": "t2"}})["state"] == "idle"
    overstay = {**visit, "violations": [{"kind": "overstay", "ended_at": None}]}
    assert bay_summary({"visit": overstay}, "full") == {"state": "overstaying", "plate": "AB123CD", "since": "t"}


@pytest.mark.postgres
def test_in_a_fleet_one_instance_takes_the_frigate_messages_and_another_takes_over(tmp_path, postgres_url, broker):
    """Every instance used to subscribe: each message was decoded by all of them and stored by the first
    (the others failed on its id and retried one by one). Now the holder of the intake lease subscribes,
    and when it stops another instance subscribes within a lease round."""
    from service.fleet import MQTT_INTAKE_LEASE, LeaseKeeper

    upgrade(postgres_url)
    n = 6
    settings = make_settings(
        tmp_path, postgres_url, mqtt={"port": broker.port, "publish": False}, ha={"takeover_s": 3},
        sources=[{"name": "frigate", "kind": "frigate", "cameras": [{"id": f"cam{i}", "bay_id": f"B{i}"}
                                                                     for i in range(2 * n)]}],
        enforcement={"bays": [{"bay_id": f"B{i}", "charge_point_id": f"CP{i}", "connector_id": 1}
                              for i in range(2 * n)]},
    )
    instances = []
    for k in range(2):
        ctx = build_context(settings.model_copy(update={"ha": settings.ha.model_copy(update={"node": f"n{k}"})}),
                            components=[])
        instances.append((ctx, LeaseKeeper(ctx, 0, singletons=[MQTT_INTAKE_LEASE], roles=["api"]),
                          MqttComponent(ctx, publish_every_s=0.2)))

    def arrivals() -> list[StoredEvent]:
        with Session(instances[0][0].engine) as db:
            return list(db.exec(select(StoredEvent).where(StoredEvent.kind == "vehicle_arrived")))

    def car(i: int) -> bytes:
        return frigate_event("new", id=f"17334756{i:02d}.5-x", camera=f"cam{i}", current_zones=[],
                             recognized_license_plate=f"FL{i:03d}AB")

    async def main() -> None:
        for _, keeper, part in instances:
            await keeper.start()
            await part.start()
        holders = [k for k, (ctx, _, _) in enumerate(instances) if ctx.leases.holds(MQTT_INTAKE_LEASE)]
        assert len(holders) == 1
        first = holders[0]
        sender = Listener(broker.port, "nothing/here")
        try:
            await until(lambda: all(p._connected.is_set() for _, _, p in instances), 10, "both connections")
            await until(lambda: bool(instances[first][2]._topics), 5, "the holder's subscription")
            assert not instances[1 - first][2]._topics  # the other instance does not subscribe
            for i in range(n):
                sender.publish("frigate/events", car(i))
            await until(lambda: len(arrivals()) == n, 15, "the first cars")
            assert [p.received for _, _, p in instances][first] == n
            assert [p.received for _, _, p in instances][1 - first] == 0
            # The holder stops (its lease is released); the other subscribes and takes the next cars.
            await instances[first][2].stop()
            await instances[first][1].stop()
            other = instances[1 - first]
            await until(lambda: bool(other[2]._topics), 10, "the other instance's subscription")
            for i in range(n, 2 * n):
                sender.publish("frigate/events", car(i))
            await until(lambda: len(arrivals()) == 2 * n, 15, "the next cars")
            assert other[2].received == n
        finally:
            sender.close()
            for ctx, keeper, part in instances:
                await part.stop()
                await keeper.stop()
                ctx.engine.dispose()

    asyncio.run(main())
    assert sorted(e.payload["plate"] for e in arrivals()) == [f"FL{i:03d}AB" for i in range(2 * n)]
