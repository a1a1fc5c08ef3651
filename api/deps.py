"""Typed dependencies so routes read like prose: `ctx: Ctx`, `db: DbSession`, `op: Operator`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlmodel import Session

from api.context import AppContext
from api.security import lookup_session, lookup_token, tokens_equal
from models.tables import ApiToken, OperatorSession, Role, User

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
    """Who is asking: an operator with a browser session, or a bearer token (script, edge worker)."""

    name: str
    role: Role
    user: User | None = None
    session: OperatorSession | None = None
    token: ApiToken | None = None

    @property
    def csrf_token(self) -> str:
        return self.session.csrf_token if self.session else ""


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
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        # Bearer tokens are not sent by browsers on their own, so they need no CSRF token.
        token = lookup_token(db, auth[7:].strip(), ctx.clock())
        if token is None:
            raise HTTPException(401, "unknown or revoked token", headers={"WWW-Authenticate": "Bearer"})
        request.state.principal = Principal(name=f"token:{token.name}", role=token.role, token=token)
        return request.state.principal
    found = lookup_session(db, request.cookies.get(SESSION_COOKIE), ctx.clock())
    if found is None:
        raise LoginRequired()
    op_session, user = found
    if request.method not in SAFE_METHODS and not tokens_equal(
        await _csrf_token_from(request), op_session.csrf_token
    ):
        raise HTTPException(status_code=403, detail="CSRF token missing or wrong; reload the page")
    request.state.principal = Principal(name=user.username, role=user.role, user=user, session=op_session)
    return request.state.principal


def require(role: Role) -> Callable[..., Principal]:
    """Dependency: a logged-in operator whose role is at least `role` (admin > operator > viewer)."""

    async def dep(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if not principal.role.allows(role):
            raise HTTPException(status_code=403, detail=f"needs the {role.value} role")
        return principal

    return dep


Viewer = Annotated[Principal, Depends(require(Role.viewer))]
Operator = Annotated[Principal, Depends(require(Role.operator))]
Admin = Annotated[Principal, Depends(require(Role.admin))]
Device = Annotated[Principal, Depends(require(Role.device))]
