"""Typed dependencies so routes read like prose: `ctx: Ctx`, `db: DbSession`, `op: Operator`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlmodel import Session

from api.context import AppContext
from api.security import lookup_session, tokens_equal
from models.tables import OperatorSession, Role, User

SESSION_COOKIE = "bw_session"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


class LoginRequired(Exception):
    """Raised for an anonymous request; HTML routes redirect to /login, the API answers 401."""


def get_ctx(request: Request) -> AppContext:
    return request.app.state.ctx


Ctx = Annotated[AppContext, Depends(get_ctx)]


def get_db(ctx: Ctx) -> Iterator[Session]:
    with ctx.session() as session:
        yield session


DbSession = Annotated[Session, Depends(get_db)]


@dataclass
class Principal:
    user: User
    session: OperatorSession

    @property
    def name(self) -> str:
        return self.user.username


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


async def _csrf_token_from(request: Request) -> str | None:
    header = request.headers.get("x-csrf-token")
    if header:
        return header
    ctype = request.headers.get("content-type", "")
    if ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        form = await request.form()  # Starlette caches it, so the route can read it again
        value = form.get("csrf_token")
        return value if isinstance(value, str) else None
    return None


async def current_principal(request: Request, ctx: Ctx, db: DbSession) -> Principal:
    found = lookup_session(db, request.cookies.get(SESSION_COOKIE), ctx.clock())
    if found is None:
        raise LoginRequired()
    op_session, user = found
    if request.method not in SAFE_METHODS and not tokens_equal(
        await _csrf_token_from(request), op_session.csrf_token
    ):
        raise HTTPException(status_code=403, detail="CSRF token missing or wrong; reload the page")
    request.state.principal = Principal(user, op_session)
    return request.state.principal


def require(role: Role) -> Callable[..., Principal]:
    """Dependency: a logged-in operator whose role is at least `role` (admin > operator > viewer)."""

    async def dep(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if not principal.user.role.allows(role):
            raise HTTPException(status_code=403, detail=f"needs the {role.value} role")
        return principal

    return dep


Viewer = Annotated[Principal, Depends(require(Role.viewer))]
Operator = Annotated[Principal, Depends(require(Role.operator))]
Admin = Annotated[Principal, Depends(require(Role.admin))]
