"""The app factory: builds the engine, context and routes; the lifespan starts and stops every part."""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import HTTPException
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api import limits
from api.deps import LoginRequired
from api.openapi import document_errors
from api.routes import (
    alerts,
    audit,
    auth,
    bays,
    cameras,
    csms,
    dash_admin,
    dash_bays,
    dash_cameras,
    dash_live,
    dash_settings,
    dashboard,
    driver,
    enforcement,
    events,
    evidence,
    health,
    outbox,
    pages,
    reads,
    sources,
    stats,
    tokens,
    users,
)
from api.routes import settings as settings_api  # not `settings`: create_app's parameter is named so
from api.templating import make_templates
from models.base import Clock, IdFactory, new_id, utcnow
from models.settings import Settings
from models.version import VERSION
from service.build import build_context, sync_config
from service.context import Component

log = logging.getLogger(__name__)


# Scripts only from our own files, never inline ones (injected markup cannot run); 'unsafe-eval' because
# htmx evaluates its trigger filters (`every 5s [!document.hidden]`) with Function(). Inline style
# attributes are used by a few templates. Images may be blob:/data: URLs (zone editor snapshots).
CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data: blob:; connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'self'; "
    "form-action 'self'; frame-ancestors 'none'"
)


def create_app(
    settings: Settings,
    *,
    clock: Clock = utcnow,
    ids: IdFactory = new_id,
    components: list[Component] | None = None,
    recognizer: Any = None,
    freeze_heap: bool = False,
) -> FastAPI:
    """Build the app for `settings`. Tests inject the clock, the id factory, the parts to run and
    (for the camera part) a picklable recogniser factory instead of the configured one.

    `freeze_heap` (for a process that runs this one app, as `baywarden run` does): once every part
    has started, move what exists to the collector's permanent generation (`gc.freeze`). Modules,
    schemas, mappers and templates live as long as the process; a full collection walking them (about
    190,000 objects, 140 ms on a 2-core machine) stops the event loop, and with it every relayed OCPP
    frame and HTTP request. Not for tests that build many apps: frozen cycles are never freed."""
    ctx = build_context(settings, clock=clock, ids=ids, components=components, recognizer=recognizer)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            await asyncio.to_thread(sync_config, ctx)
            await ctx.start_components()
            if freeze_heap:
                gc.collect()
                gc.freeze()
            yield
        finally:
            await ctx.stop_components()
            ctx.engine.dispose()

    app = FastAPI(title="Baywarden", version=VERSION, lifespan=lifespan, max_body_size=limits.DEFAULT_BODY)
    app.state.ctx = ctx
    app.state.templates = make_templates()
    app.mount("/static", StaticFiles(directory=str(Path(__file__).parent / "static")), name="static")
    # The intakes first: a request is matched against the routes in this order, and matching each
    # router's routes was a third of an intake request's time when they came after the dashboard's.
    for module in (sources, csms, events, health, auth, users, tokens, audit, alerts, evidence, cameras, enforcement,
                   bays, outbox, driver, pages, stats, dash_admin,
                   reads,
                   settings_api, dash_settings):
        app.include_router(module.router)
    app.include_router(cameras.recognition)
    app.include_router(dashboard.router)
    app.include_router(dash_bays.router)
    app.include_router(dash_cameras.router)
    app.include_router(dash_live.router)

    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, _exc: LoginRequired) -> Response:
        wants_html = "text/html" in request.headers.get("accept", "") and not request.url.path.startswith("/api/")
        if wants_html:
            return RedirectResponse(f"/login?next={request.url.path}", status_code=303)
        return JSONResponse({"detail": "login required"}, status_code=401, headers={"WWW-Authenticate": "Cookie"})

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> Response:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    app.add_middleware(ResponseHeaders, ctx=ctx)
    document_errors(app)
    return app


class ResponseHeaders:
    """Security and caching headers on every answer, and the request metrics: a plain ASGI middleware
    (Starlette's `@app.middleware("http")` runs each request in an extra task with memory streams, a
    cost every intake request paid)."""

    def __init__(self, app: ASGIApp, ctx: Any) -> None:
        self.app = app
        self.ctx = ctx

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        static = scope["path"].startswith("/static/")

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("X-Frame-Options", "DENY")
                headers.setdefault("Referrer-Policy", "same-origin")
                if not static:
                    # Pages and answers carry plates and names: no shared or browser cache keeps them
                    # (evidence images set their own private caching).
                    headers.setdefault("Cache-Control", "no-store")
                if headers.get("content-type", "").startswith("text/html"):
                    headers.setdefault("Content-Security-Policy", CSP)
                # The router has put the matched route into the (shared) scope by now.
                path = getattr(scope.get("route"), "path", "unmatched")
                metrics = self.ctx.metrics
                metrics.http_requests.labels(scope["method"], path, str(message["status"])).inc()
                metrics.http_latency.labels(scope["method"], path).observe(time.perf_counter() - start)
            await send(message)

        await self.app(scope, receive, send_with_headers)
