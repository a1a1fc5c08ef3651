"""SQLModel tables of the foundation: operators, their sessions, login throttling and the audit log.

Model families follow the FastAPI template: `XBase` -> `XCreate` / `XUpdate` / `X(table=True)` / `XPublic`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import EmailStr
from sqlalchemy import JSON, Column, Index
from sqlalchemy import Enum as SAEnum
from sqlmodel import Field, SQLModel

from models.base import UTCDateTime, new_id, utcnow


def _ts(**kw: Any) -> Any:
    return Field(default_factory=utcnow, sa_type=UTCDateTime, **kw)


class Role(StrEnum):
    admin = "admin"
    operator = "operator"
    viewer = "viewer"

    @property
    def rank(self) -> int:
        return {"viewer": 0, "operator": 1, "admin": 2}[self.value]

    def allows(self, needed: Role) -> bool:
        return self.rank >= needed.rank


# --- operators -----------------------------------------------------------------------------


class UserBase(SQLModel):
    username: str = Field(min_length=2, max_length=64, regex=r"^[A-Za-z0-9_.@-]+$", unique=True, index=True)
    full_name: str = Field(default="", max_length=200)
    email: EmailStr | None = Field(default=None, max_length=254)
    role: Role = Field(default=Role.viewer)
    is_active: bool = True


class UserCreate(UserBase):
    password: str = Field(min_length=10, max_length=256)


class UserUpdate(SQLModel):
    full_name: str | None = Field(default=None, max_length=200)
    email: EmailStr | None = Field(default=None, max_length=254)
    role: Role | None = None
    is_active: bool | None = None
    password: str | None = Field(default=None, min_length=10, max_length=256)


class User(UserBase, table=True):
    __tablename__ = "users"
    # Stored as a checked string, not a native enum, so new roles need no type migration.
    role: Role = Field(default=Role.viewer, sa_type=SAEnum(Role, native_enum=False, length=16, name="role"))
    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    password_hash: str = Field(max_length=256)
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class UserPublic(UserBase):
    id: str
    created_at: datetime
    updated_at: datetime


class OperatorSession(SQLModel, table=True):
    """Server-side session: the cookie holds a random token, the table its SHA-256 only."""

    __tablename__ = "operator_sessions"
    token_hash: str = Field(primary_key=True, max_length=64)
    user_id: str = Field(foreign_key="users.id", index=True, max_length=32, ondelete="CASCADE")
    csrf_token: str = Field(max_length=64)
    created_at: datetime = _ts()
    expires_at: datetime = Field(sa_type=UTCDateTime)
    ip: str = Field(default="", max_length=64)


class LoginThrottle(SQLModel, table=True):
    """Failed-login counter per key ("user:<name>" or "ip:<addr>"), durable across restarts."""

    __tablename__ = "login_throttle"
    key: str = Field(primary_key=True, max_length=200)
    failures: int = 0
    window_started_at: datetime = _ts()
    locked_until: datetime | None = Field(default=None, sa_type=UTCDateTime)


class AuditLog(SQLModel, table=True):
    """Every change an operator (or the system) makes: who, what, when, before and after."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_entity", "entity", "entity_id"),)
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _ts(index=True)
    actor: str = Field(max_length=64, index=True)
    action: str = Field(max_length=64)
    entity: str = Field(max_length=64)
    entity_id: str = Field(default="", max_length=128)
    before: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    after: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    ip: str = Field(default="", max_length=64)


class AuditLogPublic(SQLModel):
    id: int
    at: datetime
    actor: str
    action: str
    entity: str
    entity_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    ip: str
