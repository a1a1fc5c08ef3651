"""Jinja2 templates with autoescaping; pages get the principal and its CSRF token."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

TEMPLATES = Path(__file__).parent / "templates"


def make_templates() -> Jinja2Templates:
    return Jinja2Templates(directory=str(TEMPLATES))


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    principal = getattr(request.state, "principal", None)
    context.setdefault("principal", principal)
    context.setdefault("csrf_token", principal.csrf_token if principal else "")
    context.setdefault("site_name", request.app.state.ctx.settings.site_name)
    return request.app.state.templates.TemplateResponse(request, name, context, status_code=status_code)
