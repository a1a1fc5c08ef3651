"""Dashboard pages of the foundation: the overview shell with the service's parts and the user."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse

from api.deps import Ctx, Viewer
from api.templating import render

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, ctx: Ctx, principal: Viewer) -> HTMLResponse:
    parts = [
        {"name": c.name, "running": c in ctx.started} for c in ctx.components
    ]
    return render(request, "overview.html", parts=parts, settings=ctx.settings)
