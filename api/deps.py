"""Typed dependencies so routes read like prose: `ctx: Ctx`, `db: DbSession`, `op: Operator`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from sqlmodel import Session

from api.security import lookup_session, lookup_token, tokens_equal
from models.tables import ApiToken, OperatorSession, Permission, Role, User, role_allows, scopes_allow
from service.context import AppContext

SESSION_COOKIE = "bw_session"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


class LoginRequired(Exception):
    """Raised for an anonymous request; HTML routes redirect to /login, the API answers 401."""


async def get_ctx(request: Request) -> AppContext:
    # async: FastAPI runs a plain def dependency in its thread pool, a thread hop per request for an
    # attribute read (a tenth of the intake's GIL time under a webhook burst)
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

    def can(self, permission: Permission) -> bool:
        return role_allows(self.role, permission)

    def may_post_for(self, subject: str | None) -> bool:
        """Device tokens post only for the cameras/chargers in their scopes; nobody else posts at all."""
        if not self.can(Permission.post_events) or self.token is None:
            return False
        return scopes_allow(list(self.token.scopes or []), subject)


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


def require(permission: Permission) -> Callable[..., Principal]:
    """Dependency: a caller whose role holds `permission` in `models.tables.ROLE_PERMISSIONS`.

    The only place rights are checked; every non-public route declares exactly one of these (a test
    walks all routes for every role against the table).
    """

    async def dep(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if not principal.can(permission):
            detail = f"your role ({principal.role.value}) may not {permission.value}"
            raise HTTPException(status_code=403, detail=detail)
        return principal

    dep.permission = permission  # type: ignore[attr-defined]  # read by the route x role test
    return dep


Viewer = Annotated[Principal, Depends(require(Permission.read))]
Operator = Annotated[Principal, Depends(require(Permission.operate))]
Admin = Annotated[Principal, Depends(require(Permission.administer))]
EventPoster = Annotated[Principal, Depends(require(Permission.post_events))]
EvidenceUploader = Annotated[Principal, Depends(require(Permission.upload_evidence))]
