"""Jinja2 templates with autoescaping; pages get the principal and its CSRF token."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

TEMPLATES = Path(__file__).parent / "templates"
log = logging.getLogger(__name__)


def make_templates() -> Jinja2Templates:
    return Jinja2Templates(directory=str(TEMPLATES))


def _site(ctx: Any) -> Any:
    """The site as edited on the settings page; the config file's when the database cannot say (a page
    such as /login must still render while the database is down)."""
    from service import runtime_settings

    try:
        return runtime_settings.effective_site(ctx)
    except Exception:
        log.warning("site settings unreadable, showing the config file's", exc_info=True)
        return runtime_settings.config_site(ctx)


_ZONE_TTL_S = 10.0


def site_zone(ctx: Any) -> ZoneInfo:
    """The site's time zone (`rules.schedule.timezone`, as edited on the rules page), read at most every
    10 s; UTC when the database cannot say."""
    cached = getattr(ctx, "_site_zone", None)
    if cached is not None and time.monotonic() - cached[0] < _ZONE_TTL_S:
        return cached[1]
    from api.routes.stats import site_timezone

    try:
        with ctx.session() as db:
            tz = ZoneInfo(site_timezone(db, ctx.settings))
    except Exception:  # an unreadable rules row or a database outage must not take the pages down
        log.warning("site time zone unreadable, showing UTC", exc_info=True)
        tz = ZoneInfo("UTC")
    ctx._site_zone = (time.monotonic(), tz)
    return tz


def local_formatter(tz: ZoneInfo) -> Any:
    """`local(dt, fmt)` for templates: a stored time shown in the site's zone, with the zone's name."""

    def local(dt: datetime | None, fmt: str = "%Y-%m-%d %H:%M:%S %Z") -> str:
        if dt is None:
            return ""
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)  # stored times are UTC
        return dt.astimezone(tz).strftime(fmt)

    return local


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    principal = getattr(request.state, "principal", None)
    context.setdefault("principal", principal)
    context.setdefault("csrf_token", principal.csrf_token if principal else "")
    if "local" not in context:
        context["local"] = local_formatter(context.get("tz") or site_zone(request.app.state.ctx))
    if "site_name" not in context or "site" not in context:
        site = _site(request.app.state.ctx)
        context.setdefault("site_name", site.name)
        context.setdefault("site", site)
    return request.app.state.templates.TemplateResponse(request, name, context, status_code=status_code)
