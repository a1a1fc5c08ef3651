"""SQLModel tables of the foundation: operators, their sessions, login throttling and the audit log.

Model families follow the FastAPI template: `XBase` -> `XCreate` / `XUpdate` / `X(table=True)` / `XPublic`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Any

from pydantic import EmailStr, field_validator
from sqlalchemy import JSON, Column, Index, text
from sqlalchemy import Enum as SAEnum
from sqlmodel import Field, SQLModel

from models.base import UTCDateTime, new_id, utcnow


def _ts(**kw: Any) -> Any:
    return Field(default_factory=utcnow, sa_type=UTCDateTime, **kw)


class Role(StrEnum):
    admin = "admin"
    operator = "operator"
    viewer = "viewer"
    device = "device"  # edge workers: may only post events and evidence, for the cameras it is issued for


class Permission(StrEnum):
    """What a request may do. Routes name the permission they need; roles are sets of permissions."""

    read = "read"  # dashboards, logs, evidence images, settings (secrets masked)
    operate = "operate"  # act: penalties, lists, cameras, bays, rules, resend mail
    administer = "administer"  # users, API tokens
    post_events = "post_events"  # domain events, limited to the token's scopes
    upload_evidence = "upload_evidence"  # write-once evidence images, limited to the token's camera scopes


# The one table of rights. Not a rank order: a new role gets exactly what is listed here, nothing by
# being "above" another. Devices get no read right (a stolen edge token must not show plates).
ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.viewer: frozenset({Permission.read}),
    Role.operator: frozenset({Permission.read, Permission.operate}),
    Role.admin: frozenset({Permission.read, Permission.operate, Permission.administer}),
    Role.device: frozenset({Permission.post_events, Permission.upload_evidence}),
}

# Roles a person logging in with a password may hold (device is for tokens only).
USER_ROLES = (Role.admin, Role.operator, Role.viewer)


def role_allows(role: Role, permission: Permission) -> bool:
    return permission in ROLE_PERMISSIONS.get(role, frozenset())


SCOPE_PATTERN = r"^(camera|charger):[A-Za-z0-9_.*?-]{1,64}$"


def scopes_allow(scopes: list[str], subject: str | None) -> bool:
    """Whether a token scoped to `scopes` (fnmatch patterns such as `camera:north-*`) covers `subject`."""
    if not subject:
        return False
    kind = subject.split(":", 1)[0] + ":"
    return any(s.startswith(kind) and fnmatchcase(subject, s) for s in scopes)


# --- operators -----------------------------------------------------------------------------


class UserBase(SQLModel):
    username: str = Field(
        min_length=2, max_length=64, schema_extra={"pattern": r"^[A-Za-z0-9_.@-]+$"}, unique=True, index=True
    )
    full_name: str = Field(default="", max_length=200)
    email: EmailStr | None = Field(default=None, max_length=254)
    role: Role = Field(default=Role.viewer)
    is_active: bool = True


def _person_role(role: Role | None) -> Role | None:
    if role is not None and role not in USER_ROLES:
        raise ValueError("a user's role is admin, operator or viewer (device is for API tokens)")
    return role


class UserCreate(UserBase):
    password: str = Field(min_length=10, max_length=256)

    _role = field_validator("role")(_person_role)


class UserUpdate(SQLModel):
    full_name: str | None = Field(default=None, max_length=200)
    email: EmailStr | None = Field(default=None, max_length=254)
    role: Role | None = None
    is_active: bool | None = None
    password: str | None = Field(default=None, min_length=10, max_length=256)

    _role = field_validator("role")(_person_role)


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


class ApiToken(SQLModel, table=True):
    """Bearer tokens for scripts, the CLI and edge workers; only the SHA-256 is stored."""

    __tablename__ = "api_tokens"
    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    name: str = Field(min_length=1, max_length=64, unique=True)
    token_hash: str = Field(max_length=64, unique=True, index=True)
    role: Role = Field(default=Role.device, sa_type=SAEnum(Role, native_enum=False, length=16, name="role"))
    # Device tokens: what they may post for, e.g. ["camera:gate", "camera:north-*", "charger:CP1"]
    # (fnmatch patterns). Empty for other roles.
    scopes: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False, server_default="[]"))
    created_by: str = Field(max_length=64)
    created_at: datetime = _ts()
    last_used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked: bool = False


class ApiTokenPublic(SQLModel):
    id: str
    name: str
    role: Role
    scopes: list[str] = []
    created_by: str
    created_at: datetime
    last_used_at: datetime | None
    revoked: bool


# --- camera side ---------------------------------------------------------------------------


class CameraBase(SQLModel):
    name: str = Field(
        min_length=1, max_length=64, schema_extra={"pattern": r"^[A-Za-z0-9_.-]+$"}, unique=True, index=True
    )
    url: str = Field(min_length=8, max_length=1000, schema_extra={"pattern": r"^(rtsps?|https?|file)://"})
    sub_url: str | None = Field(default=None, max_length=1000, schema_extra={"pattern": r"^(rtsps?|https?|file)://"})
    enabled: bool = True
    fps: float = Field(default=5.0, gt=0, le=30)
    zones: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))


class Camera(CameraBase, table=True):
    __tablename__ = "cameras"
    id: str = Field(default_factory=new_id, primary_key=True, max_length=32)
    source: str = Field(default="api", max_length=16)  # "config" rows are re-synced from YAML at start
    created_at: datetime = _ts()
    updated_at: datetime = _ts()


class StoredEvent(SQLModel, table=True):
    """Durable inbox of every domain event, whichever way it came; `event_id` makes intake idempotent."""

    __tablename__ = "domain_events"
    __table_args__ = (Index("ix_domain_events_kind_at", "kind", "at"),)
    seq: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(max_length=128, unique=True)
    kind: str = Field(max_length=40)
    at: datetime = Field(sa_type=UTCDateTime)
    received_at: datetime = _ts()
    source: str = Field(default="", max_length=64)
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))


class PlateReadRow(SQLModel, table=True):
    """Every plate read, accepted or rejected, with its evidence (the reads log)."""

    __tablename__ = "plate_reads"
    # Every reads-log query is newest first with keyset on (at, id): each index ends in (at, id), so a
    # filtered page is one index range read in order (PostgreSQL does not add the id by itself).
    __table_args__ = (
        Index("ix_plate_reads_at_id", "at", "id"),
        Index("ix_plate_reads_plate_at_id", "plate", "at", "id"),
        Index("ix_plate_reads_camera_at_id", "camera", "at", "id"),
    )
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_type=UTCDateTime)
    camera: str = Field(max_length=64)
    bay_id: str | None = Field(default=None, max_length=64)
    plate: str | None = Field(default=None, max_length=16)
    raw_text: str = Field(default="", max_length=64)
    confidence: float = 0.0
    char_confidences: list[float] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    accepted: bool = True
    reject_reason: str | None = Field(default=None, max_length=200)
    frame_path: str | None = Field(default=None, max_length=300)
    crop_path: str | None = Field(default=None, max_length=300)


class Presence(SQLModel, table=True):
    """One vehicle's stay in one bay as the camera saw it (arrival to departure)."""

    __tablename__ = "presences"
    __table_args__ = (Index("ix_presences_bay_first_seen", "bay_id", "first_seen"),)
    id: str = Field(primary_key=True, max_length=64)
    camera: str = Field(max_length=64)
    bay_id: str = Field(max_length=64)
    plate: str | None = Field(default=None, max_length=16, index=True)
    confidence: float = 0.0
    char_confidences: list[float] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    first_seen: datetime = Field(sa_type=UTCDateTime)
    last_seen: datetime = Field(sa_type=UTCDateTime)
    departed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    frame_path: str | None = Field(default=None, max_length=300)
    crop_path: str | None = Field(default=None, max_length=300)


# --- charger side --------------------------------------------------------------------------


class Charger(SQLModel, table=True):
    __tablename__ = "chargers"
    id: str = Field(primary_key=True, max_length=64)  # the charge point id
    connected: bool = False
    protocol: str | None = Field(default=None, max_length=32)
    last_seen: datetime = Field(sa_type=UTCDateTime)


class ConnectorState(SQLModel, table=True):
    """Last known state of one connector; evse_id/connector_id 0 stand for "not given"."""

    __tablename__ = "connector_states"
    charge_point_id: str = Field(primary_key=True, max_length=64)
    evse_id: int = Field(default=0, primary_key=True)
    connector_id: int = Field(default=0, primary_key=True)
    status: str = Field(max_length=32)
    transaction_id: str | None = Field(default=None, max_length=64)
    updated_at: datetime = Field(sa_type=UTCDateTime)


class Transaction(SQLModel, table=True):
    """A charging transaction, keyed by (charge point, transaction id): ids repeat across chargers."""

    __tablename__ = "transactions"
    __table_args__ = (Index("ix_transactions_active", "ended_at", "charge_point_id"),)
    charge_point_id: str = Field(primary_key=True, max_length=64)
    transaction_id: str = Field(primary_key=True, max_length=64)
    evse_id: int | None = None
    connector_id: int | None = None
    started_at: datetime = Field(sa_type=UTCDateTime)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    charging_state: str | None = Field(default=None, max_length=32)
    idle_since: datetime | None = Field(default=None, sa_type=UTCDateTime)
    energy_wh: float | None = None
    id_token_hash: str | None = Field(default=None, max_length=128)
    end_reason: str = Field(default="", max_length=64)
    updated_at: datetime = Field(sa_type=UTCDateTime)


class IntakeReceipt(SQLModel, table=True):
    """Request-level idempotency and replay protection for CSMS intakes."""

    __tablename__ = "intake_receipts"
    key: str = Field(primary_key=True, max_length=200)  # "<csms>:id:<event id>" or "<csms>:sig:<hash>"
    received_at: datetime = Field(sa_type=UTCDateTime, index=True)


class OcpiSessionRow(SQLModel, table=True):
    """Last merged OCPI Session per (country, party, id), so PATCHes can be applied to it."""

    __tablename__ = "ocpi_sessions"
    key: str = Field(primary_key=True, max_length=120)
    data: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    updated_at: datetime = Field(sa_type=UTCDateTime)


class Alert(SQLModel, table=True):
    """Something an operator must see: a camera failed, a blacklisted vehicle, an upstream down."""

    __tablename__ = "alerts"
    __table_args__ = (Index("ix_alerts_open", "acknowledged_at", "at"),)
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_type=UTCDateTime)
    kind: str = Field(max_length=40)  # camera_failed, blacklist, relay_upstream_down, ...
    severity: str = Field(default="warning", max_length=16)  # info, warning, critical
    title: str = Field(max_length=200)
    detail: str = Field(default="", max_length=2000)
    subject: str = Field(default="", max_length=128)  # camera name, plate, charger id
    acknowledged_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    acknowledged_by: str | None = Field(default=None, max_length=64)


# --- enforcement ---------------------------------------------------------------------------


class BayStateRow(SQLModel, table=True):
    """The enforcement core's state of one bay (JSON of `enforcement.decide.BayState`)."""

    __tablename__ = "bay_states"
    bay_id: str = Field(primary_key=True, max_length=64)
    state: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    version: int = 0
    updated_at: datetime = Field(sa_type=UTCDateTime)


class VisitRow(SQLModel, table=True):
    """One car's visit to one bay: the timeline operators and drivers see (read model)."""

    __tablename__ = "visits"
    __table_args__ = (Index("ix_visits_bay_arrived", "bay_id", "arrived_at"), Index("ix_visits_open", "departed_at"))
    visit_id: str = Field(primary_key=True, max_length=160)
    bay_id: str = Field(max_length=64)
    plate: str | None = Field(default=None, max_length=16, index=True)
    plate_confidence: float = 0.0
    arrived_at: datetime = Field(sa_type=UTCDateTime)
    departed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    close_reason: str | None = Field(default=None, max_length=64)
    charge_point_id: str | None = Field(default=None, max_length=64)
    transaction_id: str | None = Field(default=None, max_length=64)
    exempt: bool = False
    blacklisted: bool = False
    data: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))  # full Visit snapshot
    updated_at: datetime = Field(sa_type=UTCDateTime)


class TimerRow(SQLModel, table=True):
    """Durable dwell timers; the scheduler's sweep feeds due ones back into the core."""

    __tablename__ = "timers"
    __table_args__ = (
        Index("ix_timers_due", "state", "due_at"),
        # the engine's "cancelled timers are done" update looks pending timers up by bay (migration 0014)
        Index("ix_timers_bay_pending", "bay_id", postgresql_where=text("state = 'pending'"),
              sqlite_where=text("state = 'pending'")),
    )
    timer_id: str = Field(primary_key=True, max_length=220)
    bay_id: str = Field(max_length=64)
    visit_id: str = Field(max_length=160)
    kind: str = Field(max_length=32)
    due_at: datetime = Field(sa_type=UTCDateTime)
    state: str = Field(default="pending", max_length=16)  # pending, done


# A settled penalty has nothing left to decide; retention deletes it `retention.penalties_days` later. Until
# then, and while a penalty is open (violation, pending_review, notice_issued, disputed), its visit, presences
# and evidence images are kept (service.retention).
SETTLED_PENALTY_STATES = ("paid", "waived", "no_charge", "voided")


class Penalty(SQLModel, table=True):
    """A violation and its lifecycle: violation -> pending_review -> notice_issued -> paid/waived/disputed."""

    __tablename__ = "penalties"
    __table_args__ = (Index("ix_penalties_state", "state", "updated_at"),)
    violation_id: str = Field(primary_key=True, max_length=200)
    visit_id: str = Field(max_length=160, index=True)
    bay_id: str = Field(max_length=64)
    kind: str = Field(max_length=32)
    plate: str | None = Field(default=None, max_length=16, index=True)
    started_at: datetime = Field(sa_type=UTCDateTime)
    ended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    minutes: int | None = None
    amount: str = Field(default="0", max_length=20)  # Decimal as text: exact on every database
    currency: str = Field(default="EUR", max_length=3)
    state: str = Field(default="violation", max_length=20)
    needs_review: bool = False
    review_reason: str | None = Field(default=None, max_length=200)
    note: str = Field(default="", max_length=2000)  # dispute or waiver reason
    created_at: datetime = Field(sa_type=UTCDateTime)
    updated_at: datetime = Field(sa_type=UTCDateTime)


class ListEntry(SQLModel, table=True):
    """Whitelist (exempt) and blacklist (alert) entries."""

    __tablename__ = "list_entries"
    __table_args__ = (Index("ix_list_entries_list_plate", "list", "plate"),)
    id: int | None = Field(default=None, primary_key=True)
    list: str = Field(max_length=8)  # white, black
    plate: str = Field(max_length=16)
    owner: str = Field(default="", max_length=200)
    reason: str = Field(default="", max_length=500)
    priority: int = Field(default=5, ge=0, le=9)
    valid_from: datetime | None = Field(default=None, sa_type=UTCDateTime)
    valid_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_by: str = Field(default="", max_length=64)
    created_at: datetime = Field(sa_type=UTCDateTime)


class Vehicle(SQLModel, table=True):
    """Registered vehicles: who to notify about a plate."""

    __tablename__ = "vehicles"
    plate: str = Field(primary_key=True, max_length=16)
    owner_name: str = Field(default="", max_length=200)
    email: str | None = Field(default=None, max_length=254)
    created_at: datetime = Field(sa_type=UTCDateTime)


class ListsVersion(SQLModel, table=True):
    """A counter that database triggers bump on every change to `list_entries` or `vehicles` (migration
    0013), whoever writes: the engine keeps the lists in memory and reads them again only when it moved."""

    __tablename__ = "lists_version"
    name: str = Field(primary_key=True, max_length=32)
    version: int = 0


class ConsumerCursor(SQLModel, table=True):
    """How far a consumer of the event inbox has read (the enforcement engine)."""

    __tablename__ = "consumer_cursors"
    name: str = Field(primary_key=True, max_length=64)
    seq: int = 0
    updated_at: datetime = Field(sa_type=UTCDateTime)


class AccessLog(SQLModel, table=True):
    """Access-point decisions: accepted or rejected, and what the barrier output answered."""

    __tablename__ = "access_log"
    __table_args__ = (Index("ix_access_log_at", "at"),)
    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(sa_type=UTCDateTime)
    bay_id: str = Field(max_length=64)
    presence_id: str = Field(max_length=64)
    plate: str | None = Field(default=None, max_length=16)
    accepted: bool
    reason: str = Field(default="", max_length=300)
    output_status: str | None = Field(default=None, max_length=40)  # "200", "failed", None: no output
    output_error: str | None = Field(default=None, max_length=500)


# --- operator-edited configuration ---------------------------------------------------------


class BayRow(SQLModel, table=True):
    """A bay (or access point) as the engine uses it. `source=config` rows mirror the YAML file and are
    re-synced at every start; `source=api` rows are created and edited by operators."""

    __tablename__ = "bays"
    bay_id: str = Field(primary_key=True, max_length=64)
    kind: str = Field(default="bay", max_length=16)
    charge_point_id: str | None = Field(default=None, max_length=64)
    evse_id: int | None = None
    connector_id: int | None = None
    rules: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    output: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))
    source: str = Field(default="api", max_length=16)
    updated_at: datetime = _ts()
    site: str = Field(default="default", max_length=64)  # the engine's work is sharded by site


class RuntimeSetting(SQLModel, table=True):
    """An operator's edit of one settings section (JSON), layered over the config file's values.

    Keys: `site_rules` (enforcement rules of the site), and sections the settings pages edit.
    """

    __tablename__ = "runtime_settings"
    key: str = Field(primary_key=True, max_length=64)
    value: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    updated_at: datetime = _ts()
    updated_by: str = Field(default="", max_length=64)


class Lease(SQLModel, table=True):
    """Who owns a piece of singleton work in a fleet (an engine shard, retention), until when.

    Taken and renewed with the database's clock; `token` grows at every change of owner, and the work's
    transactions check (owner, token, not expired) under a row lock before they commit: fencing, so an
    instance that lost its lease while it hung cannot commit after the new owner started."""

    __tablename__ = "leases"
    name: str = Field(primary_key=True, max_length=128)
    owner: str = Field(max_length=128)
    token: int = 1
    acquired_at: datetime = Field(sa_type=UTCDateTime)
    renewed_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)


class FleetInstance(SQLModel, table=True):
    """One running `baywarden run` process: what it runs and the digest of the settings every instance
    must share (checked at start), with a heartbeat (`baywarden status`)."""

    __tablename__ = "fleet_instances"
    id: str = Field(primary_key=True, max_length=128)
    node: str = Field(max_length=128)
    pid: int = 0
    roles: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    shared_settings: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    started_at: datetime = Field(sa_type=UTCDateTime)
    heartbeat_at: datetime = Field(sa_type=UTCDateTime)
    clock_skew_s: float = 0.0


class IntakeDecoderState(SQLModel, table=True):
    """The CSMS intake's OCPP decoder state of one charger (calls awaiting answers, open transactions):
    kept here, not in one instance's memory, so a call and its answer may reach different instances
    (and survive a restart). Read and written under a row lock in the request's transaction."""

    __tablename__ = "intake_decoder_states"
    charge_point_id: str = Field(primary_key=True, max_length=64)
    state: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    updated_at: datetime = Field(sa_type=UTCDateTime)


class SourcePresence(SQLModel, table=True):
    """The car an outside source last reported in a bay, while it counts as present (sources that send one
    read per car): a later read of it is "still present", another plate or a long silence its departure."""

    __tablename__ = "source_presences"
    bay_id: str = Field(primary_key=True, max_length=64)
    source: str = Field(max_length=64)
    camera: str = Field(max_length=200)
    presence_id: str = Field(max_length=200)
    plate: str | None = Field(default=None, max_length=16)
    confidence: float = 0.0
    first_seen: datetime = Field(sa_type=UTCDateTime)
    last_seen: datetime = Field(sa_type=UTCDateTime, index=True)


class SourceCounter(SQLModel, table=True):
    """What each outside source sent: accepted and rejected requests, the last one and the last reason."""

    __tablename__ = "source_counters"
    source: str = Field(primary_key=True, max_length=64)
    accepted: int = 0
    rejected: int = 0
    last_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_error: str | None = Field(default=None, max_length=500)
