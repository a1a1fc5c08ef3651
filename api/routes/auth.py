"""Login and logout, as a form for the dashboard and as JSON for scripts."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field
from sqlmodel import Session

from api.deps import SESSION_COOKIE, Ctx, DbSession, Principal, Viewer, client_ip, current_principal
from api.limits import LOGIN_BODY
from api.security import Throttle, authenticate, open_session, token_hash, tokens_equal
from api.templating import render
from models import audit
from models.tables import OperatorSession, User, UserPublic
from service.context import AppContext
from service.login_gate import Busy

router = APIRouter(tags=["auth"])
LOGIN_CSRF_COOKIE = "bw_login_csrf"


class LoginFailed(Exception):
    def __init__(self, status: int, message: str, retry_after: int = 0):
        self.status, self.message, self.retry_after = status, message, retry_after


BUSY_RETRY_S = 2


def _login(ctx: AppContext, db: Session, username: str, password: str, ip: str) -> str:
    """Check credentials under the throttle; return a new session token or raise LoginFailed."""
    throttle = Throttle(ctx.settings.security)
    keys = [f"user:{username.lower()[:64]}", f"ip:{ip}"]
    try:
        # Check, verify and count under the keys' locks: parallel guesses are counted one by one.
        with ctx.login_gate.keys(keys):
            now = ctx.clock()
            db.expire_all()  # another request may just have counted a failure for these keys
            wait = throttle.locked_for(db, keys, now)
            if wait:
                raise LoginFailed(429, f"Too many failed logins; try again in {wait} s", wait)
            with ctx.login_gate.hashing():
                user = authenticate(db, username, password)
            if user is None:
                throttle.fail(db, keys, now)
                audit.record(db, actor=username[:64] or "-", action="login_failed", entity="user", ip=ip, at=now)
                db.commit()
                ctx.metrics.login_failures.inc()
                raise LoginFailed(401, "Wrong user name or password")
            throttle.succeed(db, keys[:1])
            db.commit()
    except Busy:
        raise LoginFailed(503, "Too many logins at once; try again in a few seconds", BUSY_RETRY_S) from None
    token = open_session(db, user, now, ctx.settings.security, ip)
    audit.record(db, actor=user.username, action="login", entity="user", entity_id=user.id, ip=ip, at=now)
    db.commit()
    return token


def _set_session_cookie(resp: Response, ctx: AppContext, token: str) -> None:
    resp.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=ctx.settings.security.session_max_age_s,
        httponly=True,
        samesite="lax",
        secure=ctx.settings.security.cookie_secure,
    )


def _safe_next(target: str | None) -> str:
    # Only same-site relative paths: never redirect to another host after login.
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/"


def _login_csrf_sign(ctx: AppContext, nonce: str) -> str:
    key = ctx.settings.security.secret_key.get_secret_value().encode()
    return hmac.new(key, b"login-csrf:" + nonce.encode(), hashlib.sha256).hexdigest()[:32]


def _login_csrf_new(ctx: AppContext) -> str:
    nonce = secrets.token_urlsafe(18)
    return f"{nonce}.{_login_csrf_sign(ctx, nonce)}"


def _login_csrf_ok(ctx: AppContext, field: str | None, cookie: str | None) -> bool:
    """The form's token equals the cookie's AND was issued by this server (signed): a pair an attacker
    made up (cookie tossing from a sibling domain) does not pass."""
    if not tokens_equal(field, cookie) or not field or "." not in field:
        return False
    nonce, _, sig = field.rpartition(".")
    return hmac.compare_digest(sig, _login_csrf_sign(ctx, nonce))


@router.get("/login", include_in_schema=False)
def login_page(request: Request, ctx: Ctx, next: str = "/", error: str = "") -> Response:
    csrf = _login_csrf_new(ctx)
    resp = render(request, "login.html", next=_safe_next(next), login_csrf=csrf, error=error)
    resp.set_cookie(LOGIN_CSRF_COOKIE, csrf, httponly=True, samesite="strict", max_age=3600,
                    secure=ctx.settings.security.cookie_secure)
    return resp


@router.post("/login", include_in_schema=False, max_body_size=LOGIN_BODY)
def login_form(
    request: Request,
    ctx: Ctx,
    db: DbSession,
    username: Annotated[str, Form(max_length=64)] = "",
    password: Annotated[str, Form(max_length=256)] = "",
    csrf_token: Annotated[str, Form()] = "",
    next: Annotated[str, Form()] = "/",
) -> Response:
    if not _login_csrf_ok(ctx, csrf_token, request.cookies.get(LOGIN_CSRF_COOKIE)):
        return login_page(request, ctx, next=next, error="Your login form expired; please try again.")
    try:
        token = _login(ctx, db, username, password, client_ip(request))
    except LoginFailed as exc:
        resp = login_page(request, ctx, next=next, error=exc.message)
        resp.status_code = exc.status
        if exc.retry_after:
            resp.headers["Retry-After"] = str(exc.retry_after)
        return resp
    resp = RedirectResponse(_safe_next(next), status_code=303)
    _set_session_cookie(resp, ctx, token)
    resp.delete_cookie(LOGIN_CSRF_COOKIE)
    return resp


def _end_session(ctx: AppContext, db: Session, principal: Principal, ip: str) -> None:
    if principal.session is None or principal.user is None:
        raise HTTPException(400, "a bearer token has no session to log out of")
    row = db.get(OperatorSession, principal.session.token_hash)
    if row is not None:
        db.delete(row)
    audit.record(
        db, actor=principal.name, action="logout", entity="user", entity_id=principal.user.id, ip=ip,
        at=ctx.clock(),
    )
    db.commit()


@router.post("/logout", include_in_schema=False)
def logout_form(
    request: Request, ctx: Ctx, db: DbSession, principal: Annotated[Principal, Depends(current_principal)]
) -> Response:
    _end_session(ctx, db, principal, client_ip(request))
    resp = RedirectResponse("/login", status_code=303)
    resp.delete_cookie(SESSION_COOKIE)
    return resp


class LoginBody(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=256)


class LoginResult(BaseModel):
    user: UserPublic
    csrf_token: str


class Me(BaseModel):
    name: str
    role: str
    user: UserPublic | None
    csrf_token: str


@router.post("/api/v1/auth/login", response_model=LoginResult, max_body_size=LOGIN_BODY)
def api_login(body: LoginBody, request: Request, ctx: Ctx, db: DbSession) -> JSONResponse:
    """Log in; the session cookie is set and the CSRF token to send as `X-CSRF-Token` is returned."""
    try:
        token = _login(ctx, db, body.username, body.password, client_ip(request))
    except LoginFailed as exc:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after else None
        raise HTTPException(exc.status, exc.message, headers=headers) from None
    return _login_result(ctx, db, token)


def _login_result(ctx: AppContext, db: Session, token: str) -> JSONResponse:
    op_session = db.get(OperatorSession, token_hash(token))
    assert op_session is not None
    user = db.get(User, op_session.user_id)
    payload = LoginResult(user=UserPublic.model_validate(user), csrf_token=op_session.csrf_token)
    resp = JSONResponse(payload.model_dump(mode="json"))
    _set_session_cookie(resp, ctx, token)
    return resp


@router.post("/api/v1/auth/logout", status_code=204)
def api_logout(request: Request, ctx: Ctx, db: DbSession, principal: Viewer) -> Response:
    _end_session(ctx, db, principal, client_ip(request))
    resp = Response(status_code=204)
    resp.delete_cookie(SESSION_COOKIE)
    return resp


@router.get("/api/v1/me", response_model=Me)
def me(principal: Annotated[Principal, Depends(current_principal)]) -> Me:
    user = UserPublic.model_validate(principal.user) if principal.user else None
    return Me(name=principal.name, role=principal.role.value, user=user, csrf_token=principal.csrf_token)
