"""MQTT: Frigate's events in (sources of kind `frigate`), Baywarden's bay states and alerts out.

In: `<topic>/events` and `<topic>/tracked_object_update` of each Frigate source become reads
(`sources.formats.frigate_reads`), stored like every outside read, with the event's snapshot fetched
from Frigate's HTTP API when `frigate_url` is set. In a fleet only the instance holding the intake lease
(`service.fleet.MQTT_INTAKE_LEASE`) subscribes, and another takes over within `ha.takeover_s` when it
dies (messages sent while nobody holds it are not stored: Frigate repeats a tracked car's updates).

Out (`mqtt.publish`): `<prefix>/status` online/offline (last will), `<prefix>/bay/<bay>/state` retained
JSON (`state`: free, occupied, charging, idle, overstaying; plate masked or full; since), new alerts
on `<prefix>/alerts`, and Home Assistant discovery (`<discovery>/sensor/baywarden_<bay>/config`,
retained) so each bay appears as a sensor. Every (re)connection republishes everything retained, so a
broker restart loses no state. paho-mqtt's own thread reconnects with backoff (1 s to 60 s).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from datetime import datetime
from typing import Any

from sqlmodel import select

from models.tables import Alert, BayStateRow
from service.context import AppContext

log = logging.getLogger(__name__)
MAX_BACKLOG = 5000  # messages waiting for the writer before the broker's thread waits with them


def mask(plate: str | None) -> str | None:
    """AB123CD -> AB***CD: enough for staff to tell cars apart, not a full plate on a building bus."""
    if not plate:
        return plate
    return plate if len(plate) <= 3 else plate[:2] + "*" * (len(plate) - 4) + plate[-2:]


def bay_summary(state: dict[str, Any], plates: str = "masked") -> dict[str, Any]:
    """A bay's state as building systems want it, from the engine's stored `BayState`."""
    visit = state.get("visit") or None
    if not visit or visit.get("departed_at"):
        return {"state": "free", "plate": None, "since": state.get("last_departed_at")}
    open_kinds = {v.get("kind") for v in visit.get("violations") or [] if not v.get("ended_at")}
    if "overstay" in open_kinds:
        what = "overstaying"
    elif visit.get("idle_since"):
        what = "idle"
    elif visit.get("charging") or visit.get("plugged"):
        what = "charging"
    else:
        what = "occupied"
    plate = visit.get("plate")
    return {"state": what, "plate": plate if plates == "full" else mask(plate), "since": visit.get("arrived_at")}


class MqttComponent:
    name = "mqtt"

    def __init__(self, ctx: AppContext, publish_every_s: float = 1.0) -> None:
        self.ctx = ctx
        self.cfg = ctx.settings.mqtt
        self.client: Any = None
        self.every = publish_every_s
        self.frigate = [s for s in ctx.settings.sources if s.kind == "frigate" and s.enabled]  # until refreshed
        self._published: dict[str, str] = {}  # bay -> last payload (retained on the broker)
        self._last_alert = 0
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None
        self._connected = threading.Event()
        self._topics: set[str] = set()  # Frigate topic prefixes subscribed in this session
        self._topics_lock = threading.Lock()
        self.received = 0

    # --- connection --------------------------------------------------------------------------------

    def _make_client(self) -> Any:
        import paho.mqtt.client as mqtt

        cfg = self.cfg
        owner = getattr(self.ctx.leases, "owner", "solo").replace(":", "-")
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"{cfg.client_id}-{owner}"[:64])
        if cfg.username:
            client.username_pw_set(cfg.username, cfg.password.get_secret_value() if cfg.password else None)
        if cfg.tls:
            client.tls_set()
        client.will_set(f"{cfg.topic_prefix}/status", "offline", qos=1, retain=True)
        client.reconnect_delay_set(min_delay=1, max_delay=60)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        return client

    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, reason: Any, _props: Any = None) -> None:
        if getattr(reason, "is_failure", False):
            log.warning("MQTT broker refused the connection: %s", reason)
            return
        log.info("MQTT connected to %s:%d", self.cfg.host, self.cfg.port)
        with self._topics_lock:
            self._topics = set()  # a new session (clean start) holds no subscriptions
            self._sync_topics(client)
        if self.cfg.publish:
            client.publish(f"{self.cfg.topic_prefix}/status", "online", qos=1, retain=True)
            self._published.clear()  # a new session: republish every retained state and discovery
        self._connected.set()

    def _on_disconnect(self, *_args: Any) -> None:
        self._connected.clear()
        log.warning("MQTT connection to %s:%d lost; reconnecting", self.cfg.host, self.cfg.port)

    def refresh_sources(self) -> None:
        """Follow the Frigate sources in use now (dashboard edits): subscribe to new topics, leave old ones.
        Called at start and every publish round, so an edit applies within a second, with no restart."""
        from service.fleet import MQTT_INTAKE_LEASE
        from service.runtime_settings import effective_sources

        if self.ctx.leases is not None and self.ctx.leases.holds(MQTT_INTAKE_LEASE) is None:
            wanted = []  # in a fleet one instance subscribes (the holder of the intake lease); see service.fleet
        else:
            try:
                wanted = [s for s in effective_sources(self.ctx) if s.kind == "frigate" and s.enabled]
            except Exception as exc:  # keep the current subscriptions while the database is away
                log.warning("Frigate sources not refreshed: %s", str(exc).splitlines()[0] if str(exc) else exc)
                return
        with self._topics_lock:
            self.frigate = wanted  # one assignment: paho's thread sees the old list or the new one
            if self.client is None or not self._connected.is_set():
                return  # _on_connect subscribes to self.frigate
            self._sync_topics(self.client)

    def _sync_topics(self, client: Any) -> None:
        """Subscribe to the topics of self.frigate not yet subscribed and leave the others (lock held)."""
        new = {s.topic for s in self.frigate}
        for topic in sorted(new - self._topics):
            client.subscribe(f"{topic}/events", qos=1)
            client.subscribe(f"{topic}/tracked_object_update", qos=1)
        for topic in sorted(self._topics - new):
            client.unsubscribe([f"{topic}/events", f"{topic}/tracked_object_update"])
        if new != self._topics:
            log.info("Frigate topics: %s", ", ".join(sorted(new)) or "none")
        self._topics = new

    # --- in: Frigate --------------------------------------------------------------------------------

    def _on_message(self, _client: Any, _userdata: Any, msg: Any) -> None:
        from service.sources import prepare_reads
        from sources.formats import frigate_reads
        from sources.reads import SourceError

        topic = msg.topic  # paho decodes it on every access
        source = next((s for s in self.frigate if topic.startswith(f"{s.topic}/")), None)
        if source is None:
            return
        now = self.ctx.clock()
        from service.sources import LIMITS

        if LIMITS.allow(source):
            self._refused(source.name, now, f"more than {source.max_per_s:g} messages per second: dropped")
            return
        try:
            reads = frigate_reads(topic, msg.payload, source.topic, now)
            if not reads:
                return
            reads = [self._with_snapshot(source, msg.payload, r) for r in reads]
            items = prepare_reads(source, reads, self.ctx.settings.evidence_dir)
            # Stored by the group-commit writer with the messages that came with it; this thread goes on
            # reading the broker meanwhile, and waits only when the writer falls far behind.
            writer = self.ctx.intake()
            stored = writer.submit(source, items, now)
            stored.add_done_callback(lambda f: self._stored(f, source.name, topic, now))
            if writer.backlog() > MAX_BACKLOG:
                stored.exception(timeout=60)
        except SourceError as exc:
            self._refused(source.name, now, f"{msg.topic}: {exc}")
        except Exception:
            log.exception("Frigate message on %s could not be stored", msg.topic)

    def _stored(self, done: Any, name: str, topic: str, now: datetime) -> None:
        exc = done.exception()
        if exc is None:
            self.received += 1
            self.ctx.publish_from_thread(done.result())
            return
        log.error("Frigate message on %s could not be stored: %s", topic, exc)
        self._refused(name, now, f"{topic}: not stored ({type(exc).__name__})")

    def _refused(self, name: str, now: datetime, reason: str) -> None:
        from service.sources import count

        log.info("Frigate message refused: %s", reason)
        try:
            with self.ctx.session() as db:
                count(db, name, now, reason)
                db.commit()
        except Exception:
            log.exception("could not count the refusal")

    def _with_snapshot(self, source: Any, payload: bytes, read: Any) -> Any:
        """The event's snapshot from Frigate's HTTP API (2 s at most); none when it is not reachable."""
        if not source.frigate_url or read.left:
            return read
        import dataclasses

        import httpx

        try:
            event_id = json.loads(payload).get("after", {}).get("id") or json.loads(payload).get("id")
            r = httpx.get(f"{source.frigate_url.rstrip('/')}/api/events/{event_id}/snapshot.jpg",
                          params={"crop": 0}, timeout=2.0)
            if r.status_code == 200 and r.content.startswith(b"\xff\xd8") and len(r.content) <= 8 << 20:
                return dataclasses.replace(read, image=r.content)
        except (httpx.HTTPError, ValueError, AttributeError) as exc:
            log.debug("no Frigate snapshot: %s", exc)
        return read

    # --- out: states, alerts, discovery ----------------------------------------------------------

    def publish_round(self) -> int:
        """Publish what changed since the last round (everything after a reconnect); the count sent."""
        if not self.cfg.publish or self.client is None or not self._connected.is_set():
            return 0
        from service.fleet import RETENTION_LEASE

        if self.ctx.leases is not None and self.ctx.leases.holds(RETENTION_LEASE) is None:
            return 0  # in a fleet one instance publishes (whoever leads the retention job)
        sent = 0
        prefix, disc = self.cfg.topic_prefix, self.cfg.discovery_prefix
        with self.ctx.session() as db:
            rows = list(db.exec(select(BayStateRow)))
            alerts = list(db.exec(select(Alert).where(Alert.id > self._last_alert).order_by(Alert.id).limit(100)))  # type: ignore[operator]
        for row in rows:
            payload = json.dumps(bay_summary(row.state, self.cfg.plates), default=str, sort_keys=True)
            if self._published.get(row.bay_id) == payload:
                continue
            if row.bay_id not in self._published:
                config = {
                    "name": f"Bay {row.bay_id}", "unique_id": f"baywarden_{row.bay_id}",
                    "state_topic": f"{prefix}/bay/{row.bay_id}/state", "value_template": "{{ value_json.state }}",
                    "json_attributes_topic": f"{prefix}/bay/{row.bay_id}/state",
                    "availability_topic": f"{prefix}/status", "icon": "mdi:ev-station",
                    "device": {"identifiers": ["baywarden"], "name": "Baywarden", "manufacturer": "Baywarden"},
                }
                self.client.publish(f"{disc}/sensor/baywarden_{row.bay_id}/config", json.dumps(config), qos=1,
                                    retain=True)
                sent += 1
            self.client.publish(f"{prefix}/bay/{row.bay_id}/state", payload, qos=1, retain=True)
            self._published[row.bay_id] = payload
            sent += 1
        for alert in alerts:
            if alert.id is not None and self._last_alert:
                body = {"id": alert.id, "at": alert.at.isoformat(), "kind": alert.kind, "severity": alert.severity,
                        "title": alert.title, "subject": alert.subject}
                self.client.publish(f"{prefix}/alerts", json.dumps(body), qos=1)
                sent += 1
            self._last_alert = max(self._last_alert, alert.id or 0)
        if not self._last_alert:
            self._last_alert = -1  # started: alerts from now on (older ones are on the dashboard)
        return sent

    def _loop(self) -> None:
        while not self._halt.wait(self.every):
            self.refresh_sources()
            try:
                self.publish_round()
            except Exception:
                log.exception("MQTT publish round failed")

    # --- lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        with self.ctx.session() as db:
            top = db.exec(select(Alert.id).order_by(Alert.id.desc()).limit(1)).first()  # type: ignore[union-attr]
        self._last_alert = top or -1
        self.refresh_sources()
        self.client = self._make_client()
        self.client.connect_async(self.cfg.host, self.cfg.port, keepalive=30)
        self.client.loop_start()
        self._halt.clear()
        self._thread = threading.Thread(target=self._loop, name="mqtt-publish", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        self._halt.set()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5)
        if self.client is not None:
            if self.cfg.publish and self._connected.is_set():
                self.client.publish(f"{self.cfg.topic_prefix}/status", "offline", qos=1, retain=True)
            self.client.disconnect()
            await asyncio.to_thread(self.client.loop_stop)
