"""Dashboard pages of the foundation: the overview shell with the service's parts and the user."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from api.deps import Ctx, Viewer
from api.templating import render

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
def home(principal: Viewer) -> RedirectResponse:
    return RedirectResponse("/dash", status_code=303)


@router.get("/status", response_class=HTMLResponse)
def status(request: Request, ctx: Ctx, principal: Viewer) -> HTMLResponse:
    """The service's parts and whether each is running."""
    parts = [{"name": c.name, "running": c in ctx.started} for c in ctx.components]
    return render(request, "overview.html", parts=parts, settings=ctx.settings)
