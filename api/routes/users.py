"""Operator accounts (admin only): list, create, change role/state/password, delete. All audited."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import Response
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, func, select

from api.deps import Admin, Ctx, DbSession, client_ip
from api.pagination import Offset
from api.security import hash_password
from models import audit
from models.tables import OperatorSession, Role, User, UserCreate, UserPublic, UserUpdate

router = APIRouter(prefix="/api/v1/users", tags=["users"])


def create_user(db: Session, data: UserCreate, *, actor: str, ip: str = "", now=None) -> User:
    """Create an operator account (shared by the API and the CLI); raises ValueError if taken."""
    user = User.model_validate(data, update={"password_hash": hash_password(data.password)})
    if now is not None:
        user.created_at = user.updated_at = now
    db.add(user)
    try:
        db.flush()
    except IntegrityError:
        db.rollback()
        raise ValueError(f"user name {data.username!r} is already taken") from None
    audit.record(db, actor=actor, action="create", entity="user", entity_id=user.id,
                 after=audit.snapshot(UserPublic.model_validate(user)), ip=ip, at=now)
    db.commit()
    db.refresh(user)
    return user


def _admins_left(db: Session, excluding: str) -> int:
    q = select(func.count()).select_from(User).where(
        User.role == Role.admin, User.is_active == True, User.id != excluding  # noqa: E712
    )
    return db.exec(q).one()


@router.get("", response_model=list[UserPublic])
def list_users(db: DbSession, _: Admin, offset: Offset = 0, limit: int = 100) -> list[User]:
    limit = max(1, min(limit, 500))
    return list(db.exec(select(User).order_by(User.username).offset(max(0, offset)).limit(limit)))


@router.post("", response_model=UserPublic, status_code=201)
def add_user(body: UserCreate, request: Request, ctx: Ctx, db: DbSession, admin: Admin) -> User:
    try:
        return create_user(db, body, actor=admin.name, ip=client_ip(request), now=ctx.clock())
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from None


@router.patch("/{user_id}", response_model=UserPublic)
def update_user(user_id: str, body: UserUpdate, request: Request, ctx: Ctx, db: DbSession, admin: Admin) -> User:
    user = db.get(User, user_id)
    if user is None:
        raise HTTPException(404, "no such user")
    before = audit.snapshot(UserPublic.model_validate(user))
    # An explicit null leaves a field as it is (a null role or state would corrupt the row and dodge the
    # last-admin guard below); only the e-mail may be cleared with null.
    changes = {k: v for k, v in body.model_dump(exclude_unset=True).items() if v is not None or k == "email"}
    demoting = changes.get("role", user.role) != Role.admin or changes.get("is_active", True) is False
    if user.role == Role.admin and demoting and _admins_left(db, user.id) == 0:
        raise HTTPException(409, "cannot remove the last active admin")
    password = changes.pop("password", None)
    for key, value in changes.items():
        setattr(user, key, value)
    if password:
        user.password_hash = hash_password(password)
    if password or changes.get("is_active") is False:
        # A new password or a disabled account ends every open session of that user.
        for s in db.exec(select(OperatorSession).where(OperatorSession.user_id == user.id)):
            db.delete(s)
    user.updated_at = ctx.clock()
    db.add(user)
    after = audit.snapshot(UserPublic.model_validate(user))
    if password:
        after["password"] = "changed"
    audit.record(db, actor=admin.name, action="update", entity="user", entity_id=user.id,
                 before=before, after=after, ip=client_ip(request), at=ctx.clock())
    db.commit()
    return user


@router.delete("/{user_id}", status_code=204)
def delete_user(user_id: str, request: Request, ctx: Ctx, db: DbSession, admin: Admin) -> Response:
    user = db.get(User, user_id)
    if user is None:
        raise HTTPException(404, "no such user")
    if admin.user is not None and user.id == admin.user.id:
        raise HTTPException(409, "you cannot delete your own account")
    if user.role == Role.admin and _admins_left(db, user.id) == 0:
        raise HTTPException(409, "cannot remove the last active admin")
    before = audit.snapshot(UserPublic.model_validate(user))
    for s in db.exec(select(OperatorSession).where(OperatorSession.user_id == user.id)):
        db.delete(s)
    db.delete(user)
    audit.record(db, actor=admin.name, action="delete", entity="user", entity_id=user_id, before=before,
                 ip=client_ip(request), at=ctx.clock())
    db.commit()
    return Response(status_code=204)
