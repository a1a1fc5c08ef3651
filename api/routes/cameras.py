"""Cameras: configuration (operators edit, viewers read), run-time start/stop of their workers, and
pictures: a snapshot of a configured camera (viewers) and "test connection" of a URL (operators).

Pictures come from `anpr.snapshot.grab_frame` (the workers' own open: FFmpeg, RTSP over TCP) on a
thread of its own, behind a hard deadline, so a camera that hangs never holds the event loop or a
pool thread. A configured camera's snapshot prefers its running worker's newest frame (asked over the
worker's pipe: no second connection to the camera) and is kept for a few seconds per camera.

Test connection and SSRF: an operator can make the server open a URL and see what comes back. That is
no more than adding a camera already allows (the worker opens it), so it needs the operator role,
takes only the camera schemes (rtsp, rtsps, http, https) and writes an audit row with the (redacted)
URL; the answer is a decoded frame or a coarse reason, never the far end's bytes. `file://` is
refused for a URL typed in (it would read files of the server); it is only tested for a camera that
is already configured with that very file. A masked password (`user:***@`, as this API shows URLs)
is filled in from the stored URL only for the same scheme, host and port, so the stored password
cannot be sent to another server.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from anpr.snapshot import GrabError, grab_frame
from api.deps import Ctx, DbSession, Operator, Viewer, client_ip
from models import audit
from models.base import utcnow
from models.logsetup import mask_password, redact_url
from models.settings import BayZone
from models.tables import Camera, CameraBase
from service.camera_control import CameraElsewhere

router = APIRouter(prefix="/api/v1/cameras", tags=["cameras"])

SNAPSHOT_TIMEOUT_S = 8.0  # hard limit for one picture from a stream
WORKER_SNAPSHOT_TIMEOUT_S = 2.5  # how long a running worker may take to hand over its newest frame
MAX_GRABS = 4  # streams opened for pictures at once (a stuck FFmpeg call keeps its thread until it ends)
JPEG_QUALITY = 85
MASK = "***"


def _check_zones(zones: list[dict[str, Any]]) -> list[dict[str, Any]]:
    try:
        return [BayZone.model_validate(z).model_dump(mode="json") for z in zones]
    except ValidationError as exc:
        raise ValueError(f"zones: {exc.errors()[0]['msg']} at {exc.errors()[0]['loc']}") from None


def _check_host(url: str | None) -> str | None:
    """A network stream URL must name a host (`rtsp://` alone would only fail later, as a 502)."""
    if url is None:
        return None
    parts = urlsplit(url)
    if parts.scheme != "file":
        try:
            host = parts.hostname
            parts.port  # noqa: B018 - raises ValueError for a port that is no number or out of range
        except ValueError as exc:
            raise ValueError(f"not a valid stream URL: {exc}") from None
        if not host:
            raise ValueError("the stream URL needs a host, e.g. rtsp://10.0.0.21:554/stream1")
    return url


class CameraCreate(CameraBase):
    @field_validator("zones")
    @classmethod
    def _zones(cls, v: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return _check_zones(v)

    _hosts = field_validator("url", "sub_url")(_check_host)


class CameraUpdate(BaseModel):
    url: str | None = Field(default=None, min_length=8, max_length=1000, pattern=r"^(rtsps?|https?|file)://")
    sub_url: str | None = Field(default=None, max_length=1000, pattern=r"^(rtsps?|https?|file)://")
    enabled: bool | None = None
    fps: float | None = Field(default=None, gt=0, le=30)
    zones: list[dict[str, Any]] | None = None

    @field_validator("zones")
    @classmethod
    def _zones(cls, v: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
        return None if v is None else _check_zones(v)

    _hosts = field_validator("url", "sub_url")(_check_host)

    @model_validator(mode="after")
    def _no_nulls(self) -> CameraUpdate:
        # Leaving a field out keeps it; null would blank a required column (sub_url alone may be removed).
        for key in ("url", "enabled", "fps", "zones"):
            if key in self.model_fields_set and getattr(self, key) is None:
                raise ValueError(f"{key} may not be null; leave it out to keep the current value")
        return self


class CameraTest(BaseModel):
    url: str = Field(min_length=8, max_length=1000, pattern=r"^(rtsps?|https?|file)://",
                     description="Stream URL to open. A masked password (`user:***@`) is taken from `camera`.")
    camera: str | None = Field(None, max_length=64, description="The configured camera this URL belongs to: its "
                               "stored password fills a masked one, and its own file:// URL may be tested.")

    _hosts = field_validator("url")(_check_host)


class CameraPublic(BaseModel):
    id: str
    name: str
    url: str = Field(description="Credentials masked.")
    sub_url: str | None
    enabled: bool
    fps: float
    zones: list[dict[str, Any]]
    source: str
    status: dict[str, Any] | None = Field(None, description="Live worker state when the supervisor runs.")


def public(cam: Camera, status: dict[str, Any] | None = None) -> CameraPublic:
    return CameraPublic(
        id=cam.id, name=cam.name, url=mask_password(cam.url),
        sub_url=mask_password(cam.sub_url) if cam.sub_url else None,
        enabled=cam.enabled, fps=cam.fps, zones=cam.zones, source=cam.source, status=status,
    )


def _netloc_parts(netloc: str) -> tuple[str | None, str | None, str]:
    """`user:pw@host:port` -> ('user', 'pw', 'host:port'), raw (still percent-encoded)."""
    if "@" not in netloc:
        return None, None, netloc
    info, host = netloc.rsplit("@", 1)
    user, sep, password = info.partition(":")
    return user, (password if sep else None), host


def unmask(url: str, *stored: str | None) -> str:
    """Put the stored password back into a URL shown masked (`user:***@`), but only for the stored URL's
    own scheme, host and port: the password must not be sendable to another server."""
    for old in stored:
        if not old:
            continue
        if url in (old, mask_password(old)):
            return old
        new_p, old_p = urlsplit(url), urlsplit(old)
        user, password, host = _netloc_parts(new_p.netloc)
        _, old_password, old_host = _netloc_parts(old_p.netloc)
        if password == MASK and old_password is not None and new_p.scheme.lower() == old_p.scheme.lower() \
                and host.lower() == old_host.lower():
            return urlunsplit(new_p._replace(netloc=f"{user}:{old_password}@{host}"))
    return url


def still_masked(url: str | None) -> bool:
    return url is not None and _netloc_parts(urlsplit(url).netloc)[1] == MASK


MASKED_HINT = "type the password again (the stored one is reused only for the same scheme, host and port)"


def _get(db: Session, name: str) -> Camera:
    cam = db.exec(select(Camera).where(Camera.name == name)).first()
    if cam is None:
        raise HTTPException(404, f"no camera named {name!r}")
    return cam


def _statuses(ctx: Any) -> dict[str, dict[str, Any]]:
    """This instance's workers; in a fleet, each camera's node too (from its lease), and cameras whose
    worker runs on another node show as `remote` instead of `not started`."""
    control = ctx.cameras
    out = {s["name"]: s for s in control.status()} if control is not None else {}
    if ctx.engine.dialect.name != "postgresql":
        return out
    from service.fleet import lease_owners

    me = ctx.leases.owner if ctx.leases is not None else None
    for name, owner in lease_owners(ctx.engine, "camera.").items():
        node = owner.split(":")[0]
        if owner == me and name in out:
            out[name]["node"] = node
        else:
            out[name] = {"name": name, "state": "remote", "detail": f"running on node {node}", "node": node,
                         "fps_in": None, "fps_processed": None, "last_read": None}
    return out


def _control(ctx: Any) -> Any:
    if ctx.cameras is None:
        raise HTTPException(409, "camera recognition is switched off in the configuration (components.cameras)")
    return ctx.cameras


async def _reload(ctx: Any) -> None:
    """Workers pick up URL/zone edits; the engine learns which bays a camera watches."""
    if ctx.cameras is not None:
        await ctx.cameras.reload()
    if ctx.enforcement is not None:
        await ctx.enforcement.reload()


def _snap(cam: Camera) -> dict[str, Any]:
    return public(cam).model_dump(mode="json", exclude={"status"})


@router.get("", response_model=list[CameraPublic])
def list_cameras(ctx: Ctx, db: DbSession, _: Viewer) -> list[CameraPublic]:
    status = _statuses(ctx)
    return [public(c, status.get(c.name)) for c in db.exec(select(Camera).order_by(Camera.name))]


@router.get("/{name}", response_model=CameraPublic)
def get_camera(name: str, ctx: Ctx, db: DbSession, _: Viewer) -> CameraPublic:
    return public(_get(db, name), _statuses(ctx).get(name))


@router.post("", response_model=CameraPublic, status_code=201)
async def add_camera(body: CameraCreate, request: Request, ctx: Ctx, db: DbSession, op: Operator) -> CameraPublic:
    cam = Camera.model_validate(body, update={"created_at": ctx.clock(), "updated_at": ctx.clock()})
    db.add(cam)
    try:
        db.flush()
    except IntegrityError:
        db.rollback()
        raise HTTPException(409, f"a camera named {body.name!r} already exists") from None
    audit.record(db, actor=op.name, action="create", entity="camera", entity_id=cam.name, after=_snap(cam),
                 ip=client_ip(request), at=ctx.clock())
    db.commit()
    await _reload(ctx)
    return public(cam)


@router.patch("/{name}", response_model=CameraPublic)
async def update_camera(
    name: str, body: CameraUpdate, request: Request, ctx: Ctx, db: DbSession, op: Operator
) -> CameraPublic:
    cam = _get(db, name)
    if cam.source == "config":
        raise HTTPException(409, f"camera {name!r} is defined in the config file; change it there")
    before = _snap(cam)
    changes = body.model_dump(exclude_unset=True)
    # A client that read the camera (URLs masked) and writes it back keeps the stored password.
    if changes.get("url"):
        changes["url"] = unmask(changes["url"], cam.url)
    if changes.get("sub_url"):
        changes["sub_url"] = unmask(changes["sub_url"], cam.sub_url, cam.url)
    for key in ("url", "sub_url"):
        if still_masked(changes.get(key)):
            raise HTTPException(422, f"{key}: {MASKED_HINT}")
    for key, value in changes.items():
        setattr(cam, key, value)
    cam.updated_at = ctx.clock()
    db.add(cam)
    audit.record(db, actor=op.name, action="update", entity="camera", entity_id=name, before=before,
                 after=_snap(cam), ip=client_ip(request), at=ctx.clock())
    db.commit()
    await _reload(ctx)
    return public(cam)


@router.delete("/{name}", status_code=204)
async def delete_camera(name: str, request: Request, ctx: Ctx, db: DbSession, op: Operator) -> None:
    cam = _get(db, name)
    if cam.source == "config":
        raise HTTPException(409, f"camera {name!r} is defined in the config file; remove it there")
    audit.record(db, actor=op.name, action="delete", entity="camera", entity_id=name, before=_snap(cam),
                 ip=client_ip(request), at=ctx.clock())
    db.delete(cam)
    db.commit()
    snapshots(request).forget(name)
    await _reload(ctx)


# --- pictures -------------------------------------------------------------------------------------

_STATUS = {"unreachable": 502, "auth": 502, "not_video": 502, "error": 502, "timeout": 504, "busy": 503}


@dataclass
class Shot:
    """One picture (or why there is none) of one stream."""

    url: str
    at: float  # monotonic time it was taken
    jpeg: bytes | None = None
    size: tuple[int, int] | None = None  # width, height of the full frame
    taken_at: datetime | None = None  # when the frame arrived (worker) or was grabbed
    source: str = "stream"  # "worker" (the running worker's newest frame) or "stream" (opened for this)
    error: GrabError | None = None
    thumbs: dict[int, bytes] = field(default_factory=dict)


class SnapshotCache:
    """Per app: the last picture of each camera, a lock per camera so that concurrent requests share
    one grab, and a bound on the streams open at once for pictures."""

    def __init__(self) -> None:
        self.shots: dict[str, Shot] = {}
        self.locks: dict[str, asyncio.Lock] = {}
        self.grabs = threading.BoundedSemaphore(MAX_GRABS)

    def lock(self, name: str) -> asyncio.Lock:
        return self.locks.setdefault(name, asyncio.Lock())

    def fresh(self, name: str, url: str, max_age: float) -> Shot | None:
        shot = self.shots.get(name)
        if shot is None or shot.url != url or time.monotonic() - shot.at > max_age:
            return None
        return shot

    def forget(self, name: str) -> None:
        self.shots.pop(name, None)

    def size(self, cam: Camera) -> tuple[int, int] | None:
        """The frame size of the camera's last picture, if it was of the stream it analyses now."""
        shot = self.shots.get(cam.name)
        return shot.size if shot is not None and shot.url == (cam.sub_url or cam.url) else None


def snapshots(request: Request) -> SnapshotCache:
    cache = getattr(request.app.state, "camera_snapshots", None)
    if cache is None:
        cache = request.app.state.camera_snapshots = SnapshotCache()
    return cache


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a JPEG's start-of-frame marker (no decoding)."""
    i = 2
    while i + 9 < len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        length = struct.unpack(">H", data[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return w, h
        i += 2 + length
    return None


def _encode(image: Any) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise GrabError("error", "the picture could not be encoded")
    return bytes(buf.tobytes())


async def grab_jpeg(url: str, cache: SnapshotCache, timeout_s: float | None = None) -> Shot:
    """Open `url`, take one frame, JPEG it: on a daemon thread of its own, waited for at most `timeout_s`.
    Never raises: a failure is a `Shot` with `error`."""
    limit = SNAPSHOT_TIMEOUT_S if timeout_s is None else timeout_s
    deadline = time.monotonic() + limit
    while not cache.grabs.acquire(blocking=False):  # wait for a free slot within the same deadline
        if deadline - time.monotonic() < min(2.0, limit / 2):
            return Shot(url, time.monotonic(), error=GrabError(
                "busy", "too many pictures are being taken at once; try again in a few seconds"))
        await asyncio.sleep(0.1)
    timeout = deadline - time.monotonic()
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Shot] = loop.create_future()

    def deliver(shot: Shot) -> None:
        if not done.done():
            done.set_result(shot)

    def work() -> None:
        try:
            image = grab_frame(url, timeout)
            shot = Shot(url, time.monotonic(), jpeg=_encode(image), size=(image.shape[1], image.shape[0]),
                        taken_at=utcnow())
        except GrabError as exc:
            shot = Shot(url, time.monotonic(), error=exc)
        except Exception as exc:  # never let a thread die silently
            shot = Shot(url, time.monotonic(), error=GrabError("error", f"{type(exc).__name__}: {exc}"[:200]))
        finally:
            cache.grabs.release()
        with contextlib.suppress(RuntimeError):  # the loop is gone (shutdown): nobody is waiting
            loop.call_soon_threadsafe(deliver, shot)

    try:
        threading.Thread(target=work, name="camera-snapshot", daemon=True).start()
    except RuntimeError as exc:  # no thread to be had
        cache.grabs.release()
        return Shot(url, time.monotonic(), error=GrabError("busy", f"cannot start a thread: {exc}"))
    try:
        return await asyncio.wait_for(done, timeout)
    except TimeoutError:
        msg = f"no picture from {redact_url(url)} within {limit:.0f} s"
        return Shot(url, time.monotonic(), error=GrabError("timeout", msg))


async def camera_shot(request: Request, ctx: Any, cam: Camera, max_age: float) -> Shot:
    """The camera's picture: cached if at most `max_age` s old, else its running worker's newest frame,
    else one grabbed from the stream the worker analyses (the sub-stream when set: zones are in its pixels)."""
    cache = snapshots(request)
    url = cam.sub_url or cam.url
    shot = cache.fresh(cam.name, url, max_age)
    if shot is not None:
        return shot
    async with cache.lock(cam.name):  # concurrent requests for one camera share one grab
        shot = cache.fresh(cam.name, url, max_age)
        if shot is not None:
            return shot
        from_worker = getattr(ctx.cameras, "snapshot", None) if ctx.cameras is not None else None
        got = await from_worker(cam.name, WORKER_SNAPSHOT_TIMEOUT_S) if from_worker is not None else None
        if got is not None:
            jpeg, arrived = got
            shot = Shot(url, time.monotonic(), jpeg=jpeg, size=jpeg_size(jpeg), taken_at=arrived, source="worker")
        else:
            shot = await grab_jpeg(url, cache)
        if shot.error is None or shot.error.kind != "busy":
            cache.shots[cam.name] = shot
        return shot


def _thumb(jpeg: bytes, width: int) -> bytes:
    import cv2
    import numpy as np

    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    h, w = image.shape[:2]
    if width >= w:
        return jpeg
    return _encode(cv2.resize(image, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA))


def shot_error(exc: GrabError) -> HTTPException:
    return HTTPException(_STATUS.get(exc.kind, 502), {"error": exc.kind, "message": exc.message})


def _jpeg_response(shot: Shot, jpeg: bytes, cache_s: int) -> Response:
    headers = {"Cache-Control": f"private, max-age={cache_s}" if cache_s else "no-store",
               "X-Snapshot-Source": shot.source}
    if shot.size:
        headers["X-Frame-Width"], headers["X-Frame-Height"] = str(shot.size[0]), str(shot.size[1])
    if shot.taken_at:
        headers["X-Snapshot-Taken-At"] = shot.taken_at.isoformat()
    return Response(jpeg, media_type="image/jpeg", headers=headers)


_JPEG = {200: {"content": {"image/jpeg": {}}, "description": "A JPEG picture."},
         422: {"description": "Bad URL or scheme."},
         502: {"description": '`{"detail": {"error": "unreachable|auth|not_video|error", "message": ...}}`'},
         503: {"description": '`{"detail": {"error": "busy", ...}}`: too many pictures being taken at once.'},
         504: {"description": '`{"detail": {"error": "timeout", "message": ...}}`'}}


@router.get("/{name}/snapshot", response_class=Response, responses=_JPEG)
async def camera_snapshot(
    name: str, request: Request, ctx: Ctx, db: DbSession, _: Viewer,
    max_age: float = Query(5.0, ge=0, le=300, description="Reuse a picture (or an error) at most this old (s)."),
    width: int | None = Query(None, ge=32, le=4096, description="Scale down to this width (thumbnails)."),
) -> Response:
    """The camera's current picture as JPEG, in the pixels its zones use (the sub-stream when one is set):
    the running worker's newest frame when it has one, else one frame grabbed from the stream (at most 8 s)."""
    cam = _get(db, name)
    db.close()  # nothing more to read: do not hold a connection for the seconds a grab may take
    shot = await camera_shot(request, ctx, cam, max_age)
    if shot.error is not None or shot.jpeg is None:
        raise shot_error(shot.error or GrabError("error", "no picture"))
    jpeg = shot.jpeg
    if width is not None:
        jpeg = shot.thumbs.get(width) or await asyncio.to_thread(_thumb, shot.jpeg, width)
        if len(shot.thumbs) >= 4:  # a few sizes are in use; do not keep one for every width asked
            shot.thumbs.clear()
        shot.thumbs[width] = jpeg
    return _jpeg_response(shot, jpeg, min(int(max_age), 60))


def resolve_test_url(db: Session, url: str, camera: str | None) -> str:
    """The URL to open for a test: a masked password filled in from `camera`; `ValueError` when it may not be
    opened (file:// typed in, password still masked)."""
    configured: set[str] = set()
    if camera:
        cam = _get(db, camera)
        url = unmask(url, cam.url, cam.sub_url)
        configured = {cam.url, *([cam.sub_url] if cam.sub_url else [])}
    if still_masked(url):
        raise ValueError(MASKED_HINT)
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("rtsp", "rtsps", "http", "https", "file"):
        raise ValueError("use rtsp://, rtsps://, http(s):// or file://")
    if scheme == "file" and url not in configured:
        raise ValueError("file:// URLs are tested only for a camera already configured with that file "
                         "(a test must not read the server's own files)")
    return url


async def test_url(url: str, camera: str | None, request: Request, ctx: Any, db: Session, op: Any) -> Shot:
    """Audit, then one picture from the URL (never cached). `ValueError` when the URL may not be opened."""
    target = resolve_test_url(db, url, camera)
    audit.record(db, actor=op.name, action="test_connection", entity="camera", entity_id=camera or "",
                 after={"url": mask_password(target)}, ip=client_ip(request), at=ctx.clock())
    db.commit()
    db.close()
    return await grab_jpeg(target, snapshots(request))


@router.post("/test", response_class=Response, responses=_JPEG)
async def test_connection(body: CameraTest, request: Request, ctx: Ctx, db: DbSession, op: Operator) -> Response:
    """Open a stream URL as a worker would and answer one frame as JPEG (at most 8 s), or why not:
    `unreachable`, `auth`, `not_video`, `timeout` (credentials redacted in every message)."""
    try:
        shot = await test_url(body.url, body.camera, request, ctx, db, op)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    if shot.error is not None or shot.jpeg is None:
        raise shot_error(shot.error or GrabError("error", "no picture"))
    return _jpeg_response(shot, shot.jpeg, 0)


@router.post("/{name}/{action}", response_model=CameraPublic)
async def control_camera(
    name: str, action: str, request: Request, ctx: Ctx, db: DbSession, op: Operator
) -> CameraPublic:
    """`start` or `stop` one camera's worker now (the `enabled` setting is what applies at the next start)."""
    if action not in {"start", "stop"}:
        raise HTTPException(404, "action must be start or stop")
    control = _control(ctx)
    cam = _get(db, name)
    try:
        await (control.start_camera(name) if action == "start" else control.stop_camera(name))
    except KeyError:
        raise HTTPException(409, f"camera {name!r} is not known to the supervisor (is it enabled?)") from None
    except CameraElsewhere as exc:
        raise HTTPException(409, str(exc)) from None
    audit.record(db, actor=op.name, action=action, entity="camera", entity_id=name, ip=client_ip(request),
                 at=ctx.clock())
    db.commit()
    return public(cam, _statuses(ctx).get(name))


recognition = APIRouter(prefix="/api/v1/recognition", tags=["cameras"])


@recognition.post("/{action}", response_model=list[CameraPublic])
async def control_all(action: str, request: Request, ctx: Ctx, db: DbSession, op: Operator) -> list[CameraPublic]:
    """`start` or `stop` every camera (stop = shut down recognition, the parts keep running)."""
    if action not in {"start", "stop"}:
        raise HTTPException(404, "action must be start or stop")
    control = _control(ctx)
    await (control.start_all() if action == "start" else control.stop_all())
    audit.record(db, actor=op.name, action=f"{action}_all", entity="camera", ip=client_ip(request), at=ctx.clock())
    db.commit()
    return list_cameras(ctx, db, op)
