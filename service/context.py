"""Everything a request or background part needs, built once by the app factory."""

from __future__ import annotations

import asyncio
import gc
import logging
import re
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy import Engine
from sqlmodel import Session

from models.base import Clock, IdFactory, new_id, utcnow
from models.settings import Settings
from service.login_gate import LoginGate

log = logging.getLogger(__name__)


class Component(Protocol):
    """A background part of the service, started and stopped by the app's lifespan."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.http_requests = Counter(
            "baywarden_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=r
        )
        self.http_latency = Histogram(
            "baywarden_http_request_seconds", "HTTP request latency", ["method", "route"], registry=r
        )
        self.login_failures = Counter("baywarden_login_failures_total", "Failed operator logins", registry=r)
        self.component_up = Gauge("baywarden_component_up", "1 when a part is running", ["component"], registry=r)


_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="([^"]*)"')


def _labelled_gauges(samples: dict[str, int], help_prefix: str) -> Any:
    """Gauge families from `name{label="value"}` -> value samples, one family per name."""
    from prometheus_client.core import GaugeMetricFamily

    families: dict[str, tuple[list[str], list[tuple[list[str], float]]]] = {}
    for sample, value in samples.items():
        m = _SAMPLE.match(sample)
        if m is None:
            continue
        labels = _LABEL.findall(m.group(2) or "")
        names, rows = families.setdefault(m.group(1), ([k for k, _ in labels], []))
        if [k for k, _ in labels] == names:
            rows.append(([v for _, v in labels], float(value)))
    for name, (names, rows) in families.items():
        family = GaugeMetricFamily(name, f"{help_prefix} {name}", labels=names)
        for values, value in rows:
            family.add_metric(values, value)
        yield family


class _PartsCollector:
    """Prometheus samples read from the running parts at scrape time (relay counters, cameras)."""

    def __init__(self, ctx: AppContext):
        self.ctx = ctx

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        for comp in list(self.ctx.started):
            relay_metrics = getattr(comp, "relay_metrics", None)
            if relay_metrics is not None:
                yield from _labelled_gauges(relay_metrics(), "OCPP relay")
                yield GaugeMetricFamily("baywarden_ocpp_events_lost_total", "Charger events not stored",
                                        value=getattr(comp, "lost", 0))
                yield GaugeMetricFamily("baywarden_ocpp_events_stored_total", "Charger events stored",
                                        value=getattr(comp, "stored", 0))
        yield GaugeMetricFamily(
            "baywarden_gc_frozen_objects", "Objects in the collector's permanent generation (frozen after start-up)",
            value=gc.get_freeze_count(),
        )
        cams = self.ctx.cameras
        if cams is not None:
            fps = GaugeMetricFamily("baywarden_camera_fps_processed", "Frames processed per second", labels=["camera"])
            dropped = GaugeMetricFamily("baywarden_camera_frames_dropped", "Frames dropped", labels=["camera"])
            for st in cams.status():
                fps.add_metric([st["name"]], st["fps_processed"])
                dropped.add_metric([st["name"]], st["frames_dropped"])
            yield fps
            yield dropped


@dataclass
class AppContext:
    settings: Settings
    engine: Engine
    clock: Clock = utcnow
    ids: IdFactory = new_id
    metrics: Metrics = field(default_factory=Metrics)
    components: list[Component] = field(default_factory=list)
    started: list[Component] = field(default_factory=list)
    # Run-time control of the camera workers (None when components.cameras is off).
    cameras: Any = None
    # The enforcement engine (None when components.enforcement is off); `reload()` after config edits.
    enforcement: Any = None
    _intake_decoder: Any = None
    _intake: Any = None
    # The outside sources in use, as read by the intakes (service.runtime_settings.effective_sources):
    # (monotonic time read, list); dropped by every edit of this instance.
    sources_cache: tuple[float, list[Any]] | None = None
    # Enqueues notifications inside the caller's transaction (service.notify.Notifier).
    notify: Any = None
    # Hooks other packages register to be told about new domain events (e.g. the SSE hub).
    listeners: list[Callable[[object], Awaitable[None] | None]] = field(default_factory=list)
    login_gate: LoginGate = field(default_factory=LoginGate)
    # Leadership in a fleet (models.leases): PgLeases on PostgreSQL, SoloLeases (holds all) on SQLite.
    leases: Any = None
    # The app's event loop, once its parts started (publish_from_thread schedules onto it).
    loop: asyncio.AbstractEventLoop | None = None
    # Events handed over from threads and not yet published, and whether a drain is already scheduled.
    _handoff: list[object] = field(default_factory=list)
    _handoff_lock: threading.Lock = field(default_factory=threading.Lock)
    _handoff_due: bool = False
    _drains: set[asyncio.Future[None]] = field(default_factory=set)  # running drains (tasks are weakly held)

    def __post_init__(self) -> None:
        self.metrics.registry.register(_PartsCollector(self))  # type: ignore[arg-type]
        if self.leases is None:
            from models.leases import PgLeases, SoloLeases, instance_id

            owner = instance_id(self.settings.ha.node)
            if self.engine.dialect.name == "postgresql":
                # Renewed every ttl/3: a dead owner's lease expires ttl after its last renewal, and a
                # waiting instance tries every ttl/3, so takeover stays under ttl * 4/3 < takeover_s.
                self.leases = PgLeases(self.engine, owner, ttl_s=self.settings.ha.takeover_s * 0.6)
            else:
                self.leases = SoloLeases(owner)

    def intake(self) -> Any:
        """The group-commit writer of outside reads (`service.intake`), started with its first job."""
        if self._intake is None:
            from service.intake import IntakeWriter

            self._intake = IntakeWriter(self)
        return self._intake

    def intake_decoder(self) -> Any:
        """The OCPP decoder for frames posted by CSMSs (its pairing state lives in memory)."""
        if self._intake_decoder is None:
            from ocpp_link.decoder import OcppDecoder

            self._intake_decoder = OcppDecoder()
        return self._intake_decoder

    def publish_from_thread(self, events: list[object]) -> None:
        """From a worker thread (scheduler, MQTT, FTP): hand stored events to the listeners on the app's
        event loop. Without a running loop (a part driven directly, e.g. in a test) nobody is woken: the
        engine reads the inbox by polling anyway, waking it only shortens the wait."""
        loop = self.loop
        if loop is None or loop.is_closed() or not events:
            return
        # Handed over in bulk: each call_soon_threadsafe wakes the loop through its self-pipe, and the MQTT
        # intake hands over one message's events at a time, thousands a second. In order, as stored.
        with self._handoff_lock:
            self._handoff.extend(events)
            if self._handoff_due:
                return
            self._handoff_due = True
        try:
            loop.call_soon_threadsafe(self._drain_handoff)
        except RuntimeError:  # the loop closed meanwhile: nobody is left to tell
            with self._handoff_lock:
                self._handoff.clear()
                self._handoff_due = False

    def _drain_handoff(self) -> None:
        with self._handoff_lock:
            events, self._handoff, self._handoff_due = self._handoff, [], False
        task = asyncio.ensure_future(self._publish_all(events))
        self._drains.add(task)
        task.add_done_callback(self._drains.discard)

    async def _publish_all(self, events: list[object]) -> None:
        for event in events:
            await self.publish(event)

    async def publish(self, event: object) -> None:
        """Tell in-process listeners (enforcement, live dashboard) about a stored event."""
        for listener in list(self.listeners):
            try:
                result = listener(event)
                if result is not None:
                    await result
            except Exception:
                log.exception("event listener failed")

    def session(self) -> Session:
        return Session(self.engine, expire_on_commit=False)

    async def start_components(self) -> None:
        self.loop = asyncio.get_running_loop()
        for comp in self.components:
            log.info("starting %s", comp.name)
            await comp.start()
            self.started.append(comp)
            self.metrics.component_up.labels(comp.name).set(1)

    async def stop_components(self) -> None:
        # Reverse order: the last part started depends on the ones before it.
        while self.started:
            comp = self.started.pop()
            log.info("stopping %s", comp.name)
            try:
                await comp.stop()
            except Exception:
                log.exception("stopping %s failed", comp.name)
            self.metrics.component_up.labels(comp.name).set(0)
