"""Intake of outside plate reads (`sources:` in the config, or as edited in the dashboard; README "Outside
reads"). Each request looks its source up in the list in use now (`service.runtime_settings`), so an
added, changed, disabled or deleted source applies to the next request on every instance.

* `POST /api/v1/sources/{name}/reads`: kind `webhook`, our JSON, signed like the CSMS intake: headers
  `X-Baywarden-Source: <name>`, `X-Baywarden-Timestamp`, `X-Baywarden-Signature: sha256=<hex
  HMAC-SHA256(secret, "<timestamp>." + body)>`; a used signature is refused (409).
* `POST /api/v1/sources/{name}/platerecognizer`: Plate Recognizer's webhook, JSON or multipart
  (`json` field + `upload` picture).
* `POST /api/v1/sources/{name}/hikvision`: a Hikvision camera's ISAPI event push (multipart with the
  `EventNotificationAlert` XML and its pictures, or the XML alone).
The last two authenticate with the source's secret as `Authorization: Token|Bearer <secret>`, as the
password of HTTP Basic, or as `?token=` (for devices that can only be given a URL). A refused request
stores nothing and is counted with its reason (`GET /api/v1/sources`)."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from pydantic import BaseModel, Field
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, select

from api.deps import Ctx, DbSession, Viewer
from api.limits import IMAGE_BODY
from api.routes.evidence import read_limited
from api.security import REPLAYED, check_signed
from models.settings import SourceSettings
from models.tables import SourceCounter
from service.runtime_settings import effective_sources
from service.sources import LIMITS, count, find_source, prepare_reads, store_reads
from sources.formats import _json, hikvision_reads, platerecognizer_reads, webhook_reads
from sources.reads import OutsideRead, SourceError

log = logging.getLogger(__name__)
router = APIRouter(tags=["sources"])
JSON_LIMIT = 256 * 1024


class SourceResult(BaseModel):
    reads: int
    events: int


class SourceOut(BaseModel):
    name: str
    kind: str
    enabled: bool
    cameras: dict[str, str]
    accepted: int
    rejected: int
    last_at: datetime | None
    last_error: str | None
    intake: str = Field("", description="Where the source sends its reads (the URL, FTP login or MQTT topic).")


def intake_of(settings: Any, s: SourceSettings) -> str:
    """What to configure on the camera or system: where its reads go."""
    base = settings.notifications.public_url.rstrip("/")
    if s.kind in ("webhook", "platerecognizer", "hikvision"):
        path = {"webhook": "reads"}.get(s.kind, s.kind)
        return f"POST {base}/api/v1/sources/{s.name}/{path}"
    if s.kind == "ftp":
        ftp = settings.ftp
        return f"FTP user {s.name} at {ftp.host}:{ftp.port}" if ftp is not None else "FTP intake off (no ftp: settings)"
    if s.kind == "frigate":
        return f"MQTT {s.topic}/events and {s.topic}/tracked_object_update"
    return f"Baywarden subscribes to {s.device_url}"


def _refuse(ctx: Any, name: str, status: int, reason: str) -> HTTPException:
    """Count the refusal in its own transaction (the request's is rolled back) and build the error."""
    try:
        with ctx.session() as db:
            if find_source(ctx, name, db) is not None:
                count(db, name, ctx.clock(), reason)
                db.commit()
    except Exception:  # counting must never turn a 4xx into a 500
        pass
    headers = {"WWW-Authenticate": "Basic realm=\"baywarden\""} if status == 401 else None
    return HTTPException(status, reason, headers=headers)


def _source(ctx: Any, name: str, kind: str) -> SourceSettings:
    source = find_source(ctx, name)
    if source is None or source.kind != kind:
        raise HTTPException(404, f"no {kind} source named {name!r} is configured")
    if not source.enabled:
        raise _refuse(ctx, name, 403, "this source is disabled")
    wait = LIMITS.allow(source)
    if wait:
        exc = _refuse(ctx, name, 429, f"more than {source.max_per_s:g} requests per second: slow down")
        exc.headers = {"Retry-After": str(max(1, round(wait)))}
        raise exc
    return source


def _token_ok(request: Request, source: SourceSettings) -> bool:
    if source.secret is None:
        return False
    secret = source.secret.get_secret_value()
    auth = request.headers.get("authorization", "")
    scheme, _, value = auth.partition(" ")
    given = None
    if scheme.lower() in ("token", "bearer"):
        given = value.strip()
    elif scheme.lower() == "basic":
        try:
            given = base64.b64decode(value.strip(), validate=True).decode("utf-8", "replace").partition(":")[2]
        except (binascii.Error, ValueError):
            given = None
    elif "token" in request.query_params:
        given = request.query_params["token"]
    return given is not None and hmac.compare_digest(given.encode(), secret.encode())


def _signature_problem(db: Session, request: Request, body: bytes, source: SourceSettings, now: datetime) -> str | None:
    if request.headers.get("x-baywarden-source") != source.name:
        return "unsigned request: send X-Baywarden-Source, -Timestamp and -Signature"
    if source.secret is None:
        return "this source has no secret"
    return check_signed(db, secret=source.secret.get_secret_value(),
                        timestamp=request.headers.get("x-baywarden-timestamp", ""),
                        signature=request.headers.get("x-baywarden-signature", ""), body=body,
                        max_skew_s=source.max_skew_s, now=now, scope=f"source:{source.name}")


async def _store(ctx: Any, source: SourceSettings, reads: list[OutsideRead], now: datetime) -> SourceResult:
    """Save the pictures in a worker thread, then hand the reads to the group-commit writer
    (`service.intake`): requests that arrive together share one transaction."""
    try:
        items = await asyncio.to_thread(prepare_reads, source, reads, ctx.settings.evidence_dir)
    except SourceError as exc:
        raise _refuse(ctx, source.name, 422, str(exc)) from None
    try:
        envelopes = await ctx.intake().store(source, items, now)
    except SQLAlchemyError:
        log.exception("outside reads of %s could not be stored", source.name)
        raise HTTPException(503, "the database is not reachable: retry later", headers={"Retry-After": "5"}) from None
    for env in envelopes:
        await ctx.publish(env)
    return SourceResult(reads=len(reads), events=len(envelopes))


async def _apply(ctx: Any, db: Session, source: SourceSettings, reads: list[OutsideRead],
                 now: datetime) -> SourceResult:
    try:
        envelopes = store_reads(db, source, reads, now, ctx.settings.evidence_dir)
    except SourceError as exc:
        db.rollback()
        raise _refuse(ctx, source.name, 422, str(exc)) from None
    count(db, source.name, now)
    db.commit()
    for env in envelopes:
        await ctx.publish(env)
    return SourceResult(reads=len(reads), events=len(envelopes))


@router.post("/api/v1/sources/{name}/reads", response_model=SourceResult)
async def webhook(name: str, request: Request, ctx: Ctx, db: DbSession) -> SourceResult:
    """Our signed JSON: `{"id", "camera", "plate", "confidence", "at", "event": "read"|"left"}` or
    `{"reads": [...]}` (at most 100)."""
    source = _source(ctx, name, "webhook")
    now = ctx.clock()
    body = await read_limited(request, JSON_LIMIT, "source reads")
    problem = _signature_problem(db, request, body, source, now)
    if problem == REPLAYED:
        db.rollback()
        raise _refuse(ctx, name, 409, REPLAYED)
    if problem:
        db.rollback()
        raise _refuse(ctx, name, 401, problem)
    try:
        reads = webhook_reads(body, now)
    except SourceError as exc:
        db.rollback()
        raise _refuse(ctx, name, 422, str(exc)) from None
    return await _apply(ctx, db, source, reads, now)


async def _multipart(request: Request) -> list[tuple[str, str, bytes]]:
    """(field name, file name, bytes) of each part; 422 for a broken or oversized form."""
    try:
        form = await request.form(max_files=8, max_fields=16, max_part_size=IMAGE_BODY)
    except Exception as exc:  # python-multipart's errors: truncated, too many parts, too large
        raise SourceError(f"unreadable multipart form: {str(exc)[:200]}") from None
    parts = []
    for key, value in form.multi_items():
        if isinstance(value, str):
            parts.append((key, "", value.encode()))
        else:
            parts.append((key, value.filename or "", await value.read()))
    return parts


async def _token_intake(name: str, kind: str, request: Request, ctx: Any,
                        parse: Callable[[Request, datetime], Awaitable[list[OutsideRead]]]) -> SourceResult:
    """The intakes authenticated by the source's token: the source, its token, its format, the reads."""
    source = _source(ctx, name, kind)
    if not _token_ok(request, source):
        raise _refuse(ctx, name, 401, "missing or wrong token")
    now = ctx.clock()
    try:
        reads = await parse(request, now)
    except SourceError as exc:
        raise _refuse(ctx, name, 422, str(exc)) from None
    return await _store(ctx, source, reads, now)


def _is_multipart(request: Request) -> bool:
    return request.headers.get("content-type", "").startswith("multipart/")


async def _platerecognizer(request: Request, now: datetime) -> list[OutsideRead]:
    if not _is_multipart(request):
        body = await read_limited(request, JSON_LIMIT, "Plate Recognizer webhooks without a picture")
        return platerecognizer_reads(_json(body), now)
    parts = await _multipart(request)
    doc = next((b for k, _, b in parts if k == "json"), None)
    if doc is None:
        raise SourceError("multipart form without a \"json\" field")
    image = next((b for k, f, b in parts if k == "upload" or (f and b.startswith(b"\xff\xd8"))), None)
    return platerecognizer_reads(_json(doc), now, image)


async def _hikvision(request: Request, now: datetime) -> list[OutsideRead]:
    if not _is_multipart(request):
        return hikvision_reads(await read_limited(request, JSON_LIMIT, "event XML"), now)
    parts = await _multipart(request)
    xml = next((b for _, f, b in parts if b.lstrip().startswith(b"<")), None)
    if xml is None:
        raise SourceError("multipart form without an EventNotificationAlert XML part")
    return hikvision_reads(xml, now, [(f"{k} {f}", b) for k, f, b in parts if b.startswith(b"\xff\xd8")])


@router.post("/api/v1/sources/{name}/platerecognizer", response_model=SourceResult, max_body_size=IMAGE_BODY)
async def platerecognizer(name: str, request: Request, ctx: Ctx) -> SourceResult:
    """Plate Recognizer's Snapshot or Stream webhook (JSON, or multipart with `json` and `upload`)."""
    return await _token_intake(name, "platerecognizer", request, ctx, _platerecognizer)


@router.post("/api/v1/sources/{name}/hikvision", response_model=SourceResult, max_body_size=IMAGE_BODY)
async def hikvision(name: str, request: Request, ctx: Ctx) -> SourceResult:
    """A Hikvision ISAPI event push: multipart with the `EventNotificationAlert` XML part and pictures
    (`licensePlatePicture.jpg`, `detectionPicture.jpg`), or the XML alone."""
    return await _token_intake(name, "hikvision", request, ctx, _hikvision)


@router.get("/api/v1/sources", response_model=list[SourceOut])
def list_sources(ctx: Ctx, db: DbSession, _: Viewer) -> list[SourceOut]:
    """The configured sources with what each sent: accepted, rejected, the last time and the last reason."""
    counters = {c.source: c for c in db.exec(select(SourceCounter))}
    out = []
    for s in effective_sources(ctx, db):
        c = counters.get(s.name) or SourceCounter(source=s.name)
        out.append(SourceOut(name=s.name, kind=s.kind, enabled=s.enabled, cameras={m.id: m.bay_id for m in s.cameras},
                             accepted=c.accepted, rejected=c.rejected, last_at=c.last_at, last_error=c.last_error,
                             intake=intake_of(ctx.settings, s)))
    return out
