"""Everything a request or background part needs, built once by the app factory."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from sqlalchemy import Engine
from sqlmodel import Session

from models.base import Clock, IdFactory, new_id, utcnow
from models.settings import Settings

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
    # Hooks other packages register to be told about new domain events (e.g. the SSE hub).
    listeners: list[Callable[[object], Awaitable[None] | None]] = field(default_factory=list)

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
