"""Jinja2 templates with autoescaping; pages get the principal and its CSRF token."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

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


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    principal = getattr(request.state, "principal", None)
    context.setdefault("principal", principal)
    context.setdefault("csrf_token", principal.csrf_token if principal else "")
    if "site_name" not in context or "site" not in context:
        site = _site(request.app.state.ctx)
        context.setdefault("site_name", site.name)
        context.setdefault("site", site)
    return request.app.state.templates.TemplateResponse(request, name, context, status_code=status_code)
