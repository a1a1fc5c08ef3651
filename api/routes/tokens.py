"""API tokens (admin): for scripts, the CLI and edge workers. The secret is shown once."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field, model_validator
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from api.deps import Admin, Ctx, DbSession, client_ip
from api.security import new_api_token, token_hash
from models import audit
from models.tables import SCOPE_PATTERN, ApiToken, ApiTokenPublic, Role

router = APIRouter(prefix="/api/v1/tokens", tags=["tokens"])


class TokenCreate(BaseModel):
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    role: Role = Role.device
    scopes: list[Annotated[str, Field(pattern=SCOPE_PATTERN)]] = Field(
        default_factory=list,
        max_length=200,
        description="Device tokens only, at least one: `camera:NAME` / `charger:ID` (fnmatch patterns, "
        "e.g. `camera:north-*`) the token may post events and evidence for.",
    )

    @model_validator(mode="after")
    def _scopes_for_devices(self) -> TokenCreate:
        if self.role == Role.device and not self.scopes:
            raise ValueError("a device token needs scopes: the cameras (camera:NAME) or chargers it posts for")
        if self.role != Role.device and self.scopes:
            raise ValueError("only device tokens have scopes")
        return self


class TokenCreated(ApiTokenPublic):
    token: str


def create_token(
    db: Session,
    name: str,
    role: Role,
    *,
    actor: str,
    ip: str = "",
    now=None,
    scopes: list[str] | None = None,
) -> tuple[ApiToken, str]:
    # Callers in code (CLI, tests) that name no scopes get a device token for every camera and charger.
    scopes = list(scopes) if scopes else (["camera:*", "charger:*"] if role == Role.device else [])
    secret = new_api_token()
    row = ApiToken(name=name, role=role, token_hash=token_hash(secret), created_by=actor, scopes=scopes)
    if now is not None:
        row.created_at = now
    db.add(row)
    try:
        db.flush()
    except IntegrityError:
        db.rollback()
        raise ValueError(f"a token named {name!r} already exists") from None
    audit.record(db, actor=actor, action="create", entity="api_token", entity_id=row.id,
                 after={"name": name, "role": role.value, "scopes": scopes}, ip=ip, at=now)
    db.commit()
    db.refresh(row)
    return row, secret


@router.get("", response_model=list[ApiTokenPublic])
def list_tokens(db: DbSession, _: Admin) -> list[ApiToken]:
    return list(db.exec(select(ApiToken).order_by(ApiToken.created_at)))


@router.post("", response_model=TokenCreated, status_code=201)
def add_token(body: TokenCreate, request: Request, ctx: Ctx, db: DbSession, admin: Admin) -> TokenCreated:
    try:
        row, secret = create_token(
            db, body.name, body.role, actor=admin.name, ip=client_ip(request), now=ctx.clock(), scopes=body.scopes
        )
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from None
    return TokenCreated(**ApiTokenPublic.model_validate(row).model_dump(), token=secret)


@router.post("/{token_id}/revoke", response_model=ApiTokenPublic)
def revoke_token(token_id: str, request: Request, ctx: Ctx, db: DbSession, admin: Admin) -> ApiToken:
    row = db.get(ApiToken, token_id)
    if row is None:
        raise HTTPException(404, "no such token")
    row.revoked = True
    db.add(row)
    audit.record(db, actor=admin.name, action="revoke", entity="api_token", entity_id=row.id,
                 before={"revoked": False}, after={"revoked": True}, ip=client_ip(request), at=ctx.clock())
    db.commit()
    db.refresh(row)
    return row
